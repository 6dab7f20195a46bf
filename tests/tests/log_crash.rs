//! Crash test with real processes: a child appends from four threads and is
//! killed with SIGKILL at random moments, 60 times, ten times on each of six
//! files. The first kill on each file comes within 2 ms of the child starting
//! to open it, while it is creating the file. After each kill the reopened log
//! verifies (chain, versions, head, state = fold), and no append that the
//! child saw acknowledged is missing or different.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use till_log::{Hash, Key, Log, LogOptions, Op, Write};
use till_tests::power_cut::Disk;
use till_tests::small_disk::SmallDisk;

const ROUNDS: u32 = 60;

#[test]
fn sigkill_during_appends_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut total_acked = 0usize;
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("crash-{}.redb", round / 10));
        let mut child = Command::new(env!("CARGO_BIN_EXE_log-crash-writer"))
            .arg(&path)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().unwrap();
        let (opening_tx, opening) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "opening" {
                    let _ = opening_tx.send(());
                }
                if let Some(rest) = line.strip_prefix("ack ") {
                    let mut parts = rest.splitn(3, ' ');
                    let seq: u64 = parts.next().unwrap().parse().unwrap();
                    let key = parts.next().unwrap().to_string();
                    let value = parts.next().unwrap().to_string();
                    acks.push((seq, key, value));
                }
            }
            acks
        });
        if round % 10 == 0 {
            opening
                .recv_timeout(Duration::from_secs(30))
                .expect("the writer starts opening the log");
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(10..250)));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        let acks = reader.join().unwrap();

        let log = Log::open(&path).expect("reopen after SIGKILL");
        let report = log
            .verify()
            .unwrap_or_else(|e| panic!("round {round}: log does not verify: {e}"));
        assert_eq!(
            log.replay(report.head.seq).unwrap(),
            log.state().unwrap(),
            "round {round}: state differs from the fold of the events"
        );
        for (seq, key, value) in &acks {
            let event = log
                .event(*seq)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is missing"));
            assert_eq!(
                &event.key.key, key,
                "round {round}: seq {seq} has another key"
            );
            assert_eq!(
                event.op,
                Op::Put(value.clone().into_bytes()),
                "round {round}: seq {seq} has another value"
            );
            assert_eq!(event.key.namespace, "crash");
        }
        total_acked += acks.len();
        // Close it so the next writer can open the file.
        drop(log);
    }
    eprintln!("{ROUNDS} kills, {total_acked} acknowledged appends checked");
    assert!(total_acked > 0, "the writer never acknowledged an append");
}

/// A power cut, unlike a SIGKILL, loses what was written but not synced, in any order
/// ([`Disk`]). A writer appends synced and unsynced batches, syncs now and then, and moves the
/// shipped watermark in unsynced commits as the replicator does; the power goes before a random
/// write or sync of the disk, often inside a commit. The log each cut leaves opens and
/// verifies, its state is the fold of its events, it holds every append acknowledged as
/// durable before the cut (appended synced, or synced after), each event it holds is the one
/// appended at that seq, and its watermark is not past its head.
#[test]
fn a_power_cut_anywhere_loses_no_durable_append() {
    let rounds: u64 = till_tests::env_or("TILL_POWER_CUTS", 150);
    let first_seed: u64 = rand::random();
    let (mut durable_checked, mut unsynced_kept) = (0u64, 0u64);
    for round in 0..rounds {
        let seed = first_seed.wrapping_add(round);
        let mut rng = StdRng::seed_from_u64(seed);
        let disk = Disk::new(seed);
        let log = Log::open_on(disk.clone(), LogOptions::default()).unwrap();
        disk.cut_after(rng.gen_range(1..400));
        let mut appended: HashMap<u64, Hash> = HashMap::new();
        let mut durable = 0u64;
        let mut in_flight: Vec<Write> = Vec::new();
        for i in 0u64.. {
            let writes: Vec<Write> = (0..rng.gen_range(1..4))
                .map(|j| {
                    let key = Key::new("cut", "", format!("k{}", (i + j) % 11));
                    if rng.gen_bool(0.1) {
                        Write::delete(key)
                    } else {
                        Write::put(key, vec![i as u8; rng.gen_range(1..3000)])
                    }
                })
                .collect();
            // A call the cut interrupted may still have reached the disk.
            in_flight = writes.clone();
            // Any failure is the cut: the disk fails every call from then on.
            let step: Result<u64, ()> = match rng.gen_range(0..10) {
                0..4 => log.append(writes).map_err(drop).map(|o| {
                    durable = o.head_seq;
                    o.head_seq
                }),
                4..8 => log
                    .append_unsynced(writes)
                    .map_err(drop)
                    .map(|o| o.head_seq),
                8 => log
                    .sync()
                    .map_err(drop)
                    .inspect(|&seq| durable = durable.max(seq)),
                _ => log.head().map_err(drop).and_then(|h| {
                    log.mark_shipped_unsynced(rng.gen_range(0..=h.seq), &[("cut.local", b"x")])
                        .map_err(drop)
                        .map(|()| h.seq)
                }),
            };
            let Ok(head) = step else { break };
            let Ok(events) = log.events(1, head, usize::MAX) else {
                break;
            };
            for e in events {
                appended.insert(e.seq, e.hash());
            }
        }
        drop(log);
        let image = disk.image().expect("the power was cut");
        let log = Log::open_on(Disk::with_image(image, seed), LogOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}: the log a cut left does not open: {e}"));
        let report = log
            .verify()
            .unwrap_or_else(|e| panic!("seed {seed}: the log a cut left does not verify: {e}"));
        let head = report.head.seq;
        assert!(
            head >= durable,
            "seed {seed}: seq {durable} was acknowledged durable, the log a cut left ends at {head}"
        );
        assert_eq!(
            log.replay(head).unwrap(),
            log.state().unwrap(),
            "seed {seed}: state differs from the fold of the events"
        );
        // Each event is the one appended at its seq, or one of the interrupted call's writes
        // after the last event it answered for.
        let answered = appended.keys().max().copied().unwrap_or(0);
        for e in log.events(1, head, usize::MAX).unwrap() {
            match appended.get(&e.seq) {
                Some(hash) => assert_eq!(
                    hash,
                    &e.hash(),
                    "seed {seed}: seq {} is not the event appended there",
                    e.seq
                ),
                None => assert!(
                    e.seq > answered && in_flight.iter().any(|w| w.key == e.key && w.op == e.op),
                    "seed {seed}: seq {} ({:?}) was never appended",
                    e.seq,
                    e.key
                ),
            }
        }
        assert!(log.shipped().unwrap() <= head, "seed {seed}");
        durable_checked += durable;
        unsynced_kept += head - durable;
    }
    eprintln!(
        "{rounds} power cuts (seeds from {first_seed}): {durable_checked} durable events checked, \
         {unsynced_kept} unsynced ones kept by the cut"
    );
    assert!(
        durable_checked > 0,
        "no append was ever acknowledged durable"
    );
}

/// A real disk fills up under the log: a 16 MiB tmpfs ([`SmallDisk`]), filled by another file
/// until 256 KiB are left. Appends go on until one fails; it fails with the kernel's
/// "No space left on device", every append acknowledged before it is still there once space is
/// freed and the log reopened (the chain verifies, the state is the fold of the events), and the
/// log takes appends again.
#[test]
fn a_real_full_disk_fails_appends_with_its_reason_and_loses_none() {
    let Some(disk) = SmallDisk::mount(16 * 1024 * 1024) else {
        return;
    };
    let path = disk.path().join("till.redb");
    let log = Log::open(&path).unwrap();
    let value = |i: u64| vec![(i % 251) as u8; 3000];
    let key = |i: u64| Key::new("disk", "", format!("k{}", i % 40));
    for i in 0..50 {
        log.append(vec![Write::put(key(i), value(i))]).unwrap();
    }
    // A little room is left: some appends still fit, then the kernel refuses.
    disk.fill_to(256 * 1024);
    let mut acknowledged = log.head().unwrap().seq;
    let mut failure = None;
    for i in 50..100_000 {
        let write = vec![Write::put(key(i), value(i))];
        let outcome = if i % 3 == 0 {
            log.append_unsynced(write).and_then(|_| log.sync())
        } else {
            log.append(write).map(|o| o.head_seq)
        };
        match outcome {
            Ok(seq) => acknowledged = seq,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let failure = failure.expect("a full disk never failed an append");
    assert!(
        failure.contains("No space left on device"),
        "the append failed without saying the disk is full: {failure}"
    );
    drop(log);

    disk.free_filler();
    let log = Log::open(&path).unwrap_or_else(|e| panic!("the log does not open again: {e}"));
    let report = log.verify().unwrap();
    assert!(
        report.head.seq >= acknowledged,
        "seq {acknowledged} was acknowledged, the log ends at {}",
        report.head.seq
    );
    assert_eq!(
        log.replay(report.head.seq).unwrap(),
        log.state().unwrap(),
        "state differs from the fold of the events"
    );
    for e in log.events(1, acknowledged, usize::MAX).unwrap() {
        assert_eq!(e.key, key(e.seq - 1), "seq {} holds another key", e.seq);
        assert_eq!(
            e.op,
            Op::Put(value(e.seq - 1)),
            "seq {} holds another value",
            e.seq
        );
    }
    let next = log.append(vec![Write::put(key(0), b"again".to_vec())]);
    assert!(
        next.is_ok(),
        "the log takes no append after space is freed: {next:?}"
    );
    eprintln!(
        "a full 16 MiB disk: {acknowledged} appends acknowledged, all kept; the next failed with: {failure}"
    );
}
