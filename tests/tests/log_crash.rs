//! Crash test with real processes: a child appends from four threads and is
//! killed with SIGKILL at random moments, 60 times, ten times on each of six
//! files. The first kill on each file comes within 2 ms of the child starting
//! to open it, while it is creating the file. After each kill the reopened log
//! verifies (chain, versions, head, state = fold), and no append that the
//! child saw acknowledged is missing or different.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use till_log::{Log, Op};

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
