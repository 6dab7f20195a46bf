//! Child process for the log crash test: appends from several threads until it
//! is killed, printing `ack SEQ KEY VALUE` after each append returns (for the
//! thread that appends unsynced, after its sync returns).
//!
//! Usage: `log-crash-writer PATH ROUND`

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use till_log::{Key, Log, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: log-crash-writer PATH ROUND");
    let round: u32 = args
        .next()
        .expect("ROUND")
        .parse()
        .expect("ROUND is a number");
    // The test times its creation-round kills from this line.
    println!("opening");
    std::io::stdout().flush().expect("stdout");
    let log = Arc::new(Log::open(&path).expect("open log"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    println!("ready");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let key = Key::new("crash", format!("t{t}"), format!("k{}", i % 17));
                    let value = format!("r{round}-t{t}-i{i}");
                    // Every third append is a two-write batch with a delete.
                    let mut writes = vec![Write::put(key.clone(), value.clone().into_bytes())];
                    if i.is_multiple_of(3) {
                        writes.push(Write::delete(Key::new(
                            "crash",
                            format!("t{t}"),
                            format!("k{}", (i + 5) % 17),
                        )));
                    }
                    // Thread 3 appends unsynced and syncs before it acknowledges, as the
                    // replicator does for channel state; its commits interleave with the
                    // others' durable ones.
                    let outcome = if t == 3 {
                        let outcome = log.append_unsynced(writes).expect("append unsynced");
                        let synced = log.sync().expect("sync");
                        assert!(synced >= outcome.head_seq, "sync covers the append");
                        outcome
                    } else {
                        log.append(writes).expect("append")
                    };
                    let seq = outcome.results[0].expect("put appends").seq;
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {seq} {} {value}", key.key).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
