//! Behaviour of the log on a real redb file.

use std::sync::Arc;

use till_log::{
    AppendError, ApplyError, DeviceId, Durability, FoldError, Hash, Key, Log, LogOptions,
    ManualClock, OpenError, ReadError, VerifyError, Write, Writer,
};

fn key(k: &str) -> Key {
    Key::new("ns", "sub", k)
}

fn open_with_clock(path: &std::path::Path, clock: Arc<ManualClock>) -> Log {
    Log::open_with(
        path,
        LogOptions {
            clock,
            writer: Writer {
                device: DeviceId([7; 16]),
                epoch: 3,
            },
            ..LogOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn versions_follow_l2_across_delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    let k = key("a");
    assert_eq!(log.put(k.clone(), b"1".to_vec()).unwrap().version, 0);
    assert_eq!(log.put(k.clone(), b"2".to_vec()).unwrap().version, 1);
    assert_eq!(log.delete(k.clone()).unwrap().unwrap().version, 2);
    assert!(log.get(&k).unwrap().is_none());
    assert_eq!(log.entry(&k).unwrap().unwrap().version, 2);
    // Deleting again changes nothing and writes no event.
    assert_eq!(log.delete(k.clone()).unwrap(), None);
    assert_eq!(log.head().unwrap().seq, 3);
    // Re-create continues the count.
    let again = log.put(k.clone(), b"3".to_vec()).unwrap();
    assert_eq!((again.seq, again.version), (4, 3));
    let history = log.history(&k).unwrap();
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Deleting an absent key is a no-op.
    assert_eq!(log.delete(key("never")).unwrap(), None);
    log.verify().unwrap();
}

#[test]
fn batch_is_atomic_and_reports_each_write() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    let out = log
        .append(vec![
            Write::put(key("a"), b"x".to_vec()),
            Write::put(key("a"), b"y".to_vec()),
            Write::delete(key("missing")),
            Write::delete(key("a")),
        ])
        .unwrap();
    let seqs: Vec<_> = out.results.iter().map(|r| r.map(|a| a.seq)).collect();
    assert_eq!(seqs, vec![Some(1), Some(2), None, Some(3)]);
    assert_eq!(out.head_seq, 3);
    // An invalid key refuses the whole batch.
    let err = log
        .append(vec![
            Write::put(key("b"), b"x".to_vec()),
            Write::put(Key::new("ns", "sub", ""), b"x".to_vec()),
        ])
        .unwrap_err();
    assert!(matches!(err, AppendError::InvalidKey(_)), "{err}");
    assert_eq!(log.head().unwrap().seq, 3);
    assert!(log.get(&key("b")).unwrap().is_none());
}

#[test]
fn list_returns_live_keys_of_one_namespace_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    log.put(Key::new("ns", "sub", "b"), b"1".to_vec()).unwrap();
    log.put(Key::new("ns", "sub", "a"), b"1".to_vec()).unwrap();
    log.put(Key::new("ns", "sub", "c"), b"1".to_vec()).unwrap();
    log.put(Key::new("ns", "sub", "c"), b"2".to_vec()).unwrap();
    log.delete(Key::new("ns", "sub", "b")).unwrap();
    log.put(Key::new("ns", "subx", "z"), b"1".to_vec()).unwrap();
    log.put(Key::new("ns", "", "top"), b"1".to_vec()).unwrap();
    log.put(Key::new("nt", "sub", "q"), b"1".to_vec()).unwrap();
    assert_eq!(
        log.list("ns", "sub").unwrap(),
        vec![("a".to_string(), 0), ("c".to_string(), 1)]
    );
    assert_eq!(log.list("ns", "").unwrap(), vec![("top".to_string(), 0)]);
    assert!(log.list("none", "").unwrap().is_empty());
}

#[test]
fn events_carry_writer_time_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let log = open_with_clock(&dir.path().join("log.redb"), clock.clone());
    log.put(key("a"), b"1".to_vec()).unwrap();
    clock.set(500); // the clock goes back: the log's time does not
    log.put(key("b"), b"1".to_vec()).unwrap();
    log.set_writer(Writer {
        device: DeviceId([8; 16]),
        epoch: 4,
    });
    clock.set(2_000);
    log.put(key("c"), b"1".to_vec()).unwrap();
    let events = log.events(1, 10, 100).unwrap();
    assert_eq!(
        events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![1_000, 1_000, 2_000]
    );
    assert_eq!(events[0].prev_hash, Hash::GENESIS);
    assert_eq!(events[1].prev_hash, events[0].hash());
    assert_eq!(events[2].prev_hash, events[1].hash());
    assert_eq!((events[1].device, events[1].epoch), (DeviceId([7; 16]), 3));
    assert_eq!((events[2].device, events[2].epoch), (DeviceId([8; 16]), 4));
    assert_eq!(log.head().unwrap().hash, events[2].hash());
}

#[test]
fn replay_to_seq_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(100));
    let log = open_with_clock(&dir.path().join("log.redb"), clock.clone());
    log.put(key("a"), b"1".to_vec()).unwrap(); // seq 1 @100
    clock.set(200);
    log.put(key("a"), b"2".to_vec()).unwrap(); // seq 2 @200
    clock.set(300);
    log.delete(key("a")).unwrap(); // seq 3 @300
    log.put(key("b"), b"x".to_vec()).unwrap(); // seq 4 @300

    assert_eq!(log.replay(0).unwrap().live_len(), 0);
    assert_eq!(log.replay(1).unwrap().get(&key("a")), Some(&b"1"[..]));
    assert_eq!(log.replay(2).unwrap().get(&key("a")), Some(&b"2"[..]));
    let s3 = log.replay(3).unwrap();
    assert_eq!(s3.get(&key("a")), None);
    assert_eq!(s3.entry(&key("a")).unwrap().version, 2);
    assert_eq!(log.replay(4).unwrap(), log.state().unwrap());
    let err = log.replay(5).unwrap_err();
    assert!(
        matches!(
            err,
            ReadError::BeyondHead {
                requested: 5,
                head: 4
            }
        ),
        "{err}"
    );

    assert_eq!(log.seq_at(99).unwrap(), 0);
    assert_eq!(log.seq_at(100).unwrap(), 1);
    assert_eq!(log.seq_at(250).unwrap(), 2);
    assert_eq!(log.seq_at(300).unwrap(), 4);
    assert_eq!(log.seq_at(u64::MAX).unwrap(), 4);
    assert_eq!(log.replay_at(250).unwrap().get(&key("a")), Some(&b"2"[..]));
    assert_eq!(log.replay_at(250).unwrap().seq(), 2);
}

#[test]
fn outbox_tracks_shipping() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    for i in 0..5 {
        log.put(key(&i.to_string()), vec![i]).unwrap();
    }
    assert_eq!(
        log.pending(100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(log.pending(2).unwrap().len(), 2);
    log.mark_shipped(3).unwrap();
    assert_eq!(log.shipped().unwrap(), 3);
    assert_eq!(
        log.pending(100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    // Marking an older prefix again does not move the watermark back.
    log.mark_shipped(1).unwrap();
    assert_eq!(log.shipped().unwrap(), 3);
    assert!(log.mark_shipped(6).is_err());
    log.mark_shipped(5).unwrap();
    assert!(log.pending(100).unwrap().is_empty());
}

#[test]
fn apply_accepts_only_a_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let source = Log::open(dir.path().join("source.redb")).unwrap();
    for i in 0..6u8 {
        source.put(key(&(i % 3).to_string()), vec![i]).unwrap();
    }
    source.delete(key("0")).unwrap();
    let events = source.events(1, 100, 100).unwrap();

    let replica = Log::open(dir.path().join("replica.redb")).unwrap();
    // Starting in the middle is refused and applies nothing.
    let err = replica.apply(&events[2..]).unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::DoesNotContinue(FoldError::Seq {
                expected: 1,
                found: 3
            })
        ),
        "{err}"
    );
    assert_eq!(replica.head().unwrap().seq, 0);

    replica.apply(&events[..3]).unwrap();
    // An altered event (its version) is refused, nothing of the batch applied.
    let mut bad = events[3..].to_vec();
    bad[1].version += 1;
    let err = replica.apply(&bad).unwrap_err();
    assert!(
        matches!(err, ApplyError::DoesNotContinue(FoldError::Version { .. })),
        "{err}"
    );
    assert_eq!(replica.head().unwrap().seq, 3);
    // A broken link is refused.
    let mut bad = events[3..].to_vec();
    bad[0].prev_hash = Hash([1; 32]);
    assert!(matches!(
        replica.apply(&bad).unwrap_err(),
        ApplyError::DoesNotContinue(FoldError::Chain { seq: 4, .. })
    ));

    replica.apply(&events[3..]).unwrap();
    assert_eq!(replica.head().unwrap(), source.head().unwrap());
    assert_eq!(replica.state().unwrap(), source.state().unwrap());
    assert_eq!(replica.shipped().unwrap(), 7);
    replica.verify().unwrap();

    // A log with unshipped local events refuses remote events (it would fork).
    let local = Log::open(dir.path().join("local.redb")).unwrap();
    local.put(key("x"), b"1".to_vec()).unwrap();
    assert!(matches!(
        local.apply(&events).unwrap_err(),
        ApplyError::UnshippedLocal {
            shipped: 0,
            pending: 1
        }
    ));
}

#[test]
fn snapshot_base_then_tail() {
    let dir = tempfile::tempdir().unwrap();
    let source = Log::open(dir.path().join("source.redb")).unwrap();
    for i in 0..10u8 {
        source.put(key(&(i % 4).to_string()), vec![i]).unwrap();
    }
    let snap = source.replay(6).unwrap();
    let tail = source.events(7, 100, 100).unwrap();
    let replica = Log::open(dir.path().join("replica.redb")).unwrap();
    replica.install_snapshot(&snap).unwrap();
    replica.apply(&tail).unwrap();
    assert_eq!(replica.state().unwrap(), source.state().unwrap());
    assert_eq!(replica.replay(8).unwrap(), source.replay(8).unwrap());
    assert!(replica.replay(5).is_err());
    let report = replica.verify().unwrap();
    assert_eq!((report.first_seq, report.events), (7, 4));
    // A key's history holds the events after the snapshot, linked from it.
    for k in ["0", "1", "2", "3"] {
        let after: Vec<_> = source
            .history(&key(k))
            .unwrap()
            .into_iter()
            .filter(|e| e.seq > 6)
            .collect();
        assert_eq!(replica.history(&key(k)).unwrap(), after, "history of {k}");
    }
    assert_eq!(replica.history(&key("0")).unwrap().len(), 1);
    // A second snapshot on a non-empty log is refused.
    assert!(replica.install_snapshot(&snap).is_err());
}

#[test]
fn read_only_replica_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path().join("log.redb"),
        LogOptions {
            read_only: true,
            ..LogOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        log.put(key("a"), b"1".to_vec()).unwrap_err(),
        AppendError::ReadOnly
    ));
}

#[test]
fn reopen_keeps_everything_and_refuses_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let log = Log::open(&path).unwrap();
        log.put(key("a"), b"1".to_vec()).unwrap();
        log.put(key("a"), b"2".to_vec()).unwrap();
        log.mark_shipped(1).unwrap();
    }
    let log = Log::open(&path).unwrap();
    assert_eq!(log.head().unwrap().seq, 2);
    assert_eq!(log.shipped().unwrap(), 1);
    assert_eq!(log.get(&key("a")).unwrap().unwrap().value, b"2");
    drop(log);

    // Rewrite the format marker as a future version.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("format", [9u8].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Log::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::UnknownFormat {
                found: 9,
                supported: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn a_creation_cut_short_leaves_no_log_and_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    // What a crash while creating the file leaves: a half-written file beside it.
    let temp = dir.path().join("log.redb.creating");
    std::fs::write(&temp, b"not yet a database").unwrap();
    assert!(!path.exists());

    let log = Log::open(&path).unwrap();
    assert!(path.exists());
    assert!(!temp.exists(), "the half-written file is cleared");
    assert_eq!(log.head().unwrap().seq, 0);
    log.put(key("a"), b"1".to_vec()).unwrap();
    drop(log);
    let log = Log::open(&path).unwrap();
    assert_eq!(log.get(&key("a")).unwrap().unwrap().value, b"1");
}

type EventsTable<'t> = redb::Table<'t, u64, &'static [u8]>;

#[test]
fn verify_names_the_first_bad_seq() {
    use redb::ReadableTable;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let log = Log::open(&path).unwrap();
        for i in 0..10u8 {
            log.put(key(&(i % 3).to_string()), vec![i]).unwrap();
        }
        assert_eq!(log.verify().unwrap().events, 10);
    }
    let events_table = redb::TableDefinition::<u64, &[u8]>::new("events");
    let edit = |f: &dyn Fn(&mut EventsTable<'_>)| {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(events_table).unwrap();
            f(&mut t);
        }
        txn.commit().unwrap();
    };
    // A stored event is its record, then the seq of its key's previous event
    // (docs/FORMAT.md).
    let stored5 = std::cell::RefCell::new(Vec::new());
    edit(&|t| *stored5.borrow_mut() = t.get(5).unwrap().unwrap().value().to_vec());
    let stored5 = stored5.into_inner();
    let (record5, link5) = stored5.split_at(stored5.len() - 8);
    assert_eq!(
        u64::from_le_bytes(link5.try_into().unwrap()),
        2,
        "key 1 was last written at seq 2"
    );
    // Alter the value inside event 5: the chain breaks at seq 6.
    let mut altered = till_log::Event::decode(record5).unwrap();
    altered.op = till_log::Op::Put(b"forged".to_vec());
    edit(&|t| {
        t.insert(5, [altered.encode().as_slice(), link5].concat().as_slice())
            .unwrap();
    });
    let err = Log::open(&path).unwrap().verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::ChainBroken { at_seq: 6, .. }),
        "{err}"
    );
    // A wrong link to the key's previous event is named too, and history
    // refuses to follow it.
    edit(&|t| {
        t.insert(
            5,
            [record5, 3u64.to_le_bytes().as_slice()].concat().as_slice(),
        )
        .unwrap();
    });
    let err = Log::open(&path).unwrap().verify().unwrap_err();
    assert!(matches!(err, VerifyError::Corrupt { seq: 5, .. }), "{err}");
    assert!(err.to_string().contains("links to seq 3"), "{err}");
    let err = Log::open(&path).unwrap().history(&key("1")).unwrap_err();
    assert!(err.to_string().contains("seq 3"), "{err}");
    // Restore it, then remove event 4: a gap at 4.
    edit(&|t| {
        t.insert(5, stored5.as_slice()).unwrap();
    });
    Log::open(&path).unwrap().verify().unwrap();
    edit(&|t| {
        t.remove(4).unwrap();
    });
    let err = Log::open(&path).unwrap().verify().unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Gap {
                expected: 4,
                found: 5
            }
        ),
        "{err}"
    );
    // Garbage bytes at seq 4.
    edit(&|t| {
        t.insert(4, [1u8, 0xff, 0xff].as_slice()).unwrap();
    });
    let err = Log::open(&path).unwrap().verify().unwrap_err();
    assert!(matches!(err, VerifyError::Corrupt { seq: 4, .. }), "{err}");
}

/// 8 threads append 50 one-write batches each at once (durably, or unsynced); returns the
/// seqs they were given.
fn append_from_8_threads(log: &Arc<Log>, durable: bool) -> Vec<u64> {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let k = Key::new("t", t.to_string(), i.to_string());
                    let batch = vec![Write::put(k, vec![t as u8; 10])];
                    let outcome = if durable {
                        log.append(batch)
                    } else {
                        log.append_unsynced(batch)
                    };
                    seqs.push(outcome.unwrap().results[0].unwrap().seq);
                }
                seqs
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn group_commit_from_many_threads_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open_with(
            dir.path().join("log.redb"),
            LogOptions {
                durability: Durability::Durable,
                ..LogOptions::default()
            },
        )
        .unwrap(),
    );
    let mut all = append_from_8_threads(&log, true);
    all.sort();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let report = log.verify().unwrap();
    assert_eq!((report.events, report.keys), (400, 400));
    // Appends shared commits (L5): eight appenders at once fill most commits.
    let stats = log.commit_stats();
    assert_eq!(stats.batches, 400);
    assert!(
        stats.commits * 2 < stats.batches,
        "{} commits for {} appends",
        stats.commits,
        stats.batches
    );
}

/// A leader holds a durable commit back for the appenders of its last one (they share its
/// fsync); an unsynced commit (channel state on its way to the server, whose latency every
/// payment pays) is never held back, though concurrent unsynced appends still share commits.
#[test]
fn only_durable_commits_wait_for_appenders() {
    for durable in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path().join("log.redb")).unwrap());
        append_from_8_threads(&log, durable);
        let stats = log.commit_stats();
        assert_eq!(stats.batches, 400);
        assert!(stats.commits < stats.batches, "appends shared commits");
        if durable {
            assert!(stats.gathers > 0, "durable leaders waited: {stats:?}");
        } else {
            assert_eq!(stats.gathers, 0, "no unsynced leader waited: {stats:?}");
        }
        assert_eq!(log.verify().unwrap().events, 400);
    }
}

#[test]
fn local_records_are_not_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let log = Log::open(&path).unwrap();
        assert_eq!(log.local_get("device").unwrap(), None);
        log.local_put("device", b"abc").unwrap();
        assert_eq!(log.head().unwrap().seq, 0);
    }
    let log = Log::open(&path).unwrap();
    assert_eq!(
        log.local_get("device").unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert!(log.pending(10).unwrap().is_empty());
}

/// A format 1 file (each event stored as its bare record, a `history` index
/// table) opens as format 2 with the same events, state and histories.
#[test]
fn a_format_1_log_is_upgraded_on_open() {
    use redb::{ReadableDatabase, ReadableTable, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let keys = ["a", "b", "c"];
    let (histories, head) = {
        let log = Log::open(&path).unwrap();
        for i in 0..12u8 {
            let k = key(keys[usize::from(i) % 3]);
            if i == 7 {
                log.delete(k).unwrap();
            } else {
                log.put(k, vec![i]).unwrap();
            }
        }
        // More events than the upgrade rewrites per chunk (1024).
        for batch in 0..5u32 {
            let writes = (0..500u32)
                .map(|i| {
                    till_log::Write::put(
                        key(keys[(i % 3) as usize]),
                        (batch * 500 + i).to_le_bytes().to_vec(),
                    )
                })
                .collect();
            log.append(writes).unwrap();
        }
        let histories: Vec<_> = keys.iter().map(|k| log.history(&key(k)).unwrap()).collect();
        (histories, log.head().unwrap())
    };
    // Rewrite the file as format 1 wrote it.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("events"))
                .unwrap();
            let mut index = txn
                .open_table(redb::TableDefinition::<(&str, &str, &str, u64), u64>::new(
                    "history",
                ))
                .unwrap();
            for seq in 1..=head.seq {
                let stored = events.get(seq).unwrap().unwrap().value().to_vec();
                let record = &stored[..stored.len() - 8];
                let event = till_log::Event::decode(record).unwrap();
                let k = &event.key;
                index
                    .insert(
                        (
                            k.namespace.as_str(),
                            k.sub_namespace.as_str(),
                            k.key.as_str(),
                            event.version,
                        ),
                        seq,
                    )
                    .unwrap();
                events.insert(seq, record).unwrap();
            }
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("format", [1u8].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let log = Log::open(&path).unwrap();
    assert_eq!(log.verify().unwrap().head, head);
    for (k, history) in keys.iter().zip(&histories) {
        assert_eq!(&log.history(&key(k)).unwrap(), history, "history of {k}");
    }
    // It goes on as a format 2 log.
    log.put(key("a"), b"after".to_vec()).unwrap();
    assert_eq!(
        log.history(&key("a")).unwrap().len(),
        histories[0].len() + 1
    );
    assert_eq!(log.verify().unwrap().events, head.seq + 1);
    drop(log);
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
        .unwrap();
    assert_eq!(
        meta.get("format").unwrap().unwrap().value(),
        [2u8].as_slice()
    );
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!tables.contains(&"history".to_string()), "{tables:?}");
}

#[test]
fn replay_reports_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path().join("log.redb"),
        LogOptions {
            durability: Durability::Volatile,
            ..LogOptions::default()
        },
    )
    .unwrap();
    for chunk in 0..10u32 {
        let writes = (0..1000u32)
            .map(|i| till_log::Write::put(key(&((chunk * 1000 + i) % 50).to_string()), vec![1]))
            .collect();
        log.append(writes).unwrap();
    }
    let mut calls = Vec::new();
    let state = log
        .replay_with_progress(9000, &mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(state, log.replay(9000).unwrap());
    let step = till_log::REPLAY_PROGRESS_STEP;
    assert_eq!(calls, vec![(step, 9000), (2 * step, 9000), (9000, 9000)]);
}

#[test]
fn unsynced_appends_are_visible_at_once_and_synced_by_the_next_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    let key = |k: &str| Key::new("ns", "", k);
    log.put(key("a"), b"1".to_vec()).unwrap();
    assert_eq!(log.synced_seq(), 1);

    // Unsynced: readable at once, not counted as on disk.
    let outcome = log
        .append_unsynced(vec![Write::put(key("b"), b"2".to_vec())])
        .unwrap();
    assert_eq!(outcome.head_seq, 2);
    assert_eq!(log.get(&key("b")).unwrap().unwrap().value, b"2".to_vec());
    assert_eq!(log.synced_seq(), 1);

    // sync() makes it durable; a second sync has nothing to do.
    assert_eq!(log.sync().unwrap(), 2);
    let commits = log.commit_stats().commits;
    assert_eq!(log.sync().unwrap(), 2);
    assert_eq!(log.commit_stats().commits, commits, "nothing left to sync");

    // A durable append syncs the unsynced ones before it.
    log.append_unsynced(vec![Write::put(key("c"), b"3".to_vec())])
        .unwrap();
    log.put(key("d"), b"4".to_vec()).unwrap();
    assert_eq!(log.synced_seq(), 4);
    log.verify().unwrap();

    // Reopened, the log counts what it holds as synced.
    drop(log);
    let log = Log::open(dir.path().join("log.redb")).unwrap();
    assert_eq!(log.synced_seq(), 4);
}

#[test]
fn a_log_knows_its_file_and_a_backend_log_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.redb");
    let log = Log::open(&path).unwrap();
    assert_eq!(log.path(), Some(path.as_path()));
    let in_memory = Log::open_on(
        redb::backends::InMemoryBackend::new(),
        till_log::LogOptions::default(),
    )
    .unwrap();
    assert_eq!(in_memory.path(), None);
}
