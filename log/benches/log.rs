//! `cargo bench -p till-log`: the event log side by side with bare redb.
//!
//! 1. Durable appends per second for 1, 4 and 16 concurrent writers, against
//!    bare redb doing one insert-and-commit per write at the same durability
//!    (fsync on every commit), with the ratio ours/bare.
//! 2. Replay speed in events per second.
//! 3. Segment seal and open throughput in MB/s, plain and compressed.
//!
//! `TILL_BENCH_SCALE` (default 1) multiplies the amount of work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use till_log::segment::{Binding, SealKey, open_segment, seal_segment};
use till_log::{Durability, Key, Log, LogOptions, Write};

const VALUE_LEN: usize = 256;
const BARE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("bare");

fn scale() -> usize {
    std::env::var("TILL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Appends `per_writer` single-put batches from each of `writers` threads;
/// returns the time taken and the batches per commit.
fn ours(writers: usize, per_writer: usize) -> (Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("bench.redb")).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    let key = Key::new("bench", format!("w{t}"), format!("k{}", i % 64));
                    log.append(vec![Write::put(key, vec![i as u8; VALUE_LEN])])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(
        log.head().unwrap().seq as usize,
        writers * per_writer,
        "every append landed"
    );
    let stats = log.commit_stats();
    (elapsed, stats.batches as f64 / stats.commits as f64)
}

/// The baseline: each write is its own redb transaction with an fsync.
fn bare(writers: usize, per_writer: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("bare.redb")).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    let txn = db.begin_write().unwrap();
                    {
                        let mut table = txn.open_table(BARE).unwrap();
                        let k = (t * per_writer + i) as u64;
                        table.insert(k, [i as u8; VALUE_LEN].as_slice()).unwrap();
                    }
                    txn.commit().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

const REPS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and
    // only wants to know it runs, so keep that pass tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let s = if quick { 0 } else { scale() };
    let total = if quick { 32 } else { 800 * s };

    println!(
        "till-log benchmark (value {VALUE_LEN} B, durable commits, {total} appends per run, median of {REPS} interleaved repetitions)"
    );
    println!();
    println!(
        "{:>8} | {:>14} | {:>14} | {:>10} | {:>12} | {:>14}",
        "writers", "ours appends/s", "bare commits/s", "ours/bare", "vs 1 writer", "appends/commit"
    );
    // Each repetition runs every writer count, ours and bare in turn, so a
    // burst of load on the machine hits them alike; the figures are medians
    // over the repetitions, the "vs 1 writer" ratio the median of each
    // repetition's own ratio.
    let counts = [1usize, 4, 16];
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); counts.len()];
    for _ in 0..REPS {
        for (c, &writers) in counts.iter().enumerate() {
            let per = total / writers;
            let n = per * writers;
            let (t, group) = ours(writers, per);
            runs[c].push((rate(n, t), rate(n, bare(writers, per)), group));
        }
    }
    for (c, &writers) in counts.iter().enumerate() {
        let ours_rate = median(runs[c].iter().map(|r| r.0).collect());
        let bare_rate = median(runs[c].iter().map(|r| r.1).collect());
        let group = median(runs[c].iter().map(|r| r.2).collect());
        let vs_single = median(
            runs[c]
                .iter()
                .zip(&runs[0])
                .map(|(r, one)| r.0 / one.0)
                .collect(),
        );
        println!(
            "{writers:>8} | {ours_rate:>14.0} | {bare_rate:>14.0} | {:>10.2} | {vs_single:>11.2}x | {group:>14.1}",
            ours_rate / bare_rate,
        );
    }

    // Replay: fold every event from the start.
    let events = if quick { 1_000 } else { 100_000 * s };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path().join("replay.redb"),
        LogOptions {
            durability: Durability::Volatile,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for chunk in 0..events / 1_000 {
        let writes = (0..1_000)
            .map(|i| {
                Write::put(
                    Key::new("replay", "", format!("k{}", (chunk * 1_000 + i) % 5_000)),
                    vec![i as u8; VALUE_LEN],
                )
            })
            .collect();
        log.append(writes).unwrap();
    }
    let head = log.head().unwrap().seq;
    let start = Instant::now();
    let state = log.replay(head).unwrap();
    let replay = start.elapsed();
    assert_eq!(state.seq(), head);
    let start = Instant::now();
    log.verify().unwrap();
    let verify = start.elapsed();
    println!();
    println!(
        "replay: {head} events in {:.3} s = {:.0} events/s; verify: {:.0} events/s",
        replay.as_secs_f64(),
        rate(head as usize, replay),
        rate(head as usize, verify)
    );

    // Seal and open: segments of 1,000 events.
    let batch = log.events(1, 1_000, 1_000).unwrap();
    let raw: usize = batch.iter().map(|e| e.encode().len()).sum();
    let key = SealKey::from_bytes([7; 32]);
    let binding = Binding::new("bench-store", "seg-1");
    let rounds = if quick { 2 } else { 50 * s };
    println!();
    println!(
        "{:>10} | {:>12} | {:>12} | {:>14}",
        "segments", "seal MB/s", "open MB/s", "bytes/event"
    );
    for compress in [false, true] {
        let start = Instant::now();
        let mut sealed = Vec::new();
        for _ in 0..rounds {
            sealed = seal_segment(&batch, &key, &binding, compress).unwrap();
        }
        let seal_t = start.elapsed();
        let start = Instant::now();
        for _ in 0..rounds {
            assert_eq!(open_segment(&sealed, &key, &binding).unwrap().len(), 1_000);
        }
        let open_t = start.elapsed();
        let mb = (raw * rounds) as f64 / 1e6;
        println!(
            "{:>10} | {:>12.1} | {:>12.1} | {:>8.1} (raw {:.1})",
            if compress { "zstd" } else { "plain" },
            mb / seal_t.as_secs_f64(),
            mb / open_t.as_secs_f64(),
            sealed.len() as f64 / 1_000.0,
            raw as f64 / 1_000.0
        );
    }
}
