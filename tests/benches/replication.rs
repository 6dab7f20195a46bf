//! `cargo bench -p till-tests --bench replication`: replication on loopback
//! against a real till-server (redb backend), side by side:
//!
//! - append-to-durable latency p50/p99 for 1 and 16 concurrent writers, and
//!   uploads per second;
//! - one waited write at a time, taken apart: Till's against the same on a log that never
//!   syncs, our client sending an upload's shape alone, and one put from ldk-node's client;
//! - bytes uploaded per event (ours, sealed and compressed) vs. the raw event;
//! - restore time and events/s for 10,000 and 100,000 events, from
//!   snapshot + tail and from segments alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use till_log::{DeviceId, Durability, Key, Log, LogOptions, Write};
use till_tests::replication::client;
use till_tests::server::{StoreArg, TillServer, add_user, release_server};
use till_tests::vss_conformance::{VssApi, VssClientNgApi};
use till_vss::replica::{
    BackupKeys, Remote, Replica, Replicator, ReplicatorConfig, ReplicatorHandle, restore,
};
use till_vss::{KeyValue, PutObjectRequest, VssClient};

const VALUE_LEN: usize = 256;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

struct Master {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    handle: ReplicatorHandle,
}

async fn master(
    url: &str,
    token: &str,
    secret: [u8; 32],
    config: ReplicatorConfig,
    durability: Durability,
) -> Master {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open_with(
            dir.path().join("till.redb"),
            LogOptions {
                durability,
                ..LogOptions::default()
            },
        )
        .unwrap(),
    );
    let remote = Remote::new(client(url, token), BackupKeys::from_secret(&secret));
    let replica = Replica::new(log.clone(), remote.clone(), DeviceId::random());
    let lease = replica.acquire().await.unwrap();
    let handle = Replicator::start(log.clone(), remote, lease, config);
    Master {
        _dir: dir,
        log,
        handle,
    }
}

fn put(log: &Log, writer: usize, i: usize) -> u64 {
    log.append(vec![Write::put(
        Key::new("bench", format!("w{writer}"), format!("k{}", i % 500)),
        vec![(i % 251) as u8; VALUE_LEN],
    )])
    .unwrap()
    .head_seq
}

/// Each writer appends and waits for its event to be durable, `per` times.
fn latency(m: &Master, writers: usize, per: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (log, handle) = (m.log.clone(), m.handle.clone());
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(per);
                for i in 0..per {
                    let t = Instant::now();
                    let seq = put(&log, w, i);
                    handle
                        .wait_durable_blocking(seq, Some(Duration::from_secs(60)))
                        .unwrap();
                    out.push(t.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    (all, start.elapsed())
}

/// One waited write at a time, as a channel-state write in a till, interleaved four ways:
/// - `till`: Till appends unsynced and waits for the replicator (which syncs the log while the
///   upload travels);
/// - `volatile`: the same on a log that never syncs, to show what the till's own disk costs;
/// - `upload`: our client sending an upload's shape by itself (a new object at version 0 and a
///   200-byte head at its version, in one transaction), to show what the HTTP exchange and the
///   server cost without the replicator around them;
/// - `put`: one put of the same bytes from `vss-client-ng`, the client ldk-node's VSS store uses.
#[derive(Default)]
struct Waited {
    till: Vec<Duration>,
    volatile: Vec<Duration>,
    upload: Vec<Duration>,
    put: Vec<Duration>,
    append: Vec<Duration>,
}

/// Appends `value` unsynced to `m`'s log and waits until it is durable: (the append, the whole).
fn waited_write(m: &Master, i: usize, value: &[u8]) -> (Duration, Duration) {
    let t = Instant::now();
    let seq = m
        .log
        .append_unsynced(vec![Write::put(
            Key::new("bench", "waited", format!("k{}", i % 8)),
            value.to_vec(),
        )])
        .unwrap()
        .head_seq;
    let appended = t.elapsed();
    m.handle
        .wait_durable_blocking(seq, Some(Duration::from_secs(60)))
        .unwrap();
    (appended, t.elapsed())
}

fn one_waited_write(
    till: &Master,
    volatile: &Master,
    ours: &VssClient,
    ng: &VssClientNgApi,
    rt: &tokio::runtime::Handle,
    len: usize,
    n: usize,
) -> Waited {
    let mut w = Waited::default();
    let shape_store = format!("upload-shape-{len}");
    for i in 0..n {
        let value = vec![(i % 251) as u8; len];
        let (appended, whole) = waited_write(till, i, &value);
        w.append.push(appended);
        w.till.push(whole);
        w.volatile.push(waited_write(volatile, i, &value).1);

        let request = PutObjectRequest {
            store_id: shape_store.clone(),
            global_version: None,
            transaction_items: vec![
                KeyValue::new(format!("segment-{i}"), 0, value.clone()),
                KeyValue::new("head", i as i64, vec![7u8; 200]),
            ],
            delete_items: Vec::new(),
        };
        let t = Instant::now();
        rt.block_on(ours.put_objects(&request)).unwrap();
        w.upload.push(t.elapsed());

        let request = PutObjectRequest {
            store_id: "ng-bench".into(),
            global_version: None,
            transaction_items: vec![KeyValue::new(format!("k{}", i % 8), -1, value)],
            delete_items: Vec::new(),
        };
        let t = Instant::now();
        rt.block_on(ng.put(request)).unwrap();
        w.put.push(t.elapsed());
    }
    for v in [
        &mut w.till,
        &mut w.volatile,
        &mut w.upload,
        &mut w.put,
        &mut w.append,
    ] {
        v.sort();
    }
    w
}

async fn restore_time(url: &str, token: &str, secret: [u8; 32]) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("restored.redb")).unwrap();
    let remote = Remote::new(client(url, token), BackupKeys::from_secret(&secret));
    let start = Instant::now();
    let report = restore(&remote, &log, |_| {}).await.unwrap();
    (start.elapsed().as_secs_f64(), report.seq)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let store = StoreArg::DataDir(dir.path().to_path_buf());
    let bin = release_server();
    let token = add_user(&bin, &store, "bench");
    let server = TillServer::start(&bin, store, &[]);
    let url = server.vss_url();

    println!("replication on loopback, till-server on redb, {VALUE_LEN}-byte values");
    println!();
    println!(
        "{:>8} | {:>12} | {:>12} | {:>10} | {:>12} | {:>12}",
        "writers", "p50 ms", "p99 ms", "events", "uploads/s", "events/upload"
    );
    for (writers, per) in [
        (1usize, if quick { 10 } else { 300 }),
        (16, if quick { 2 } else { 60 }),
    ] {
        let m = master(
            &url,
            &token,
            rand::random(),
            ReplicatorConfig::default(),
            Durability::Durable,
        )
        .await;
        let m2 = Arc::new(m);
        let m3 = m2.clone();
        let (lat, elapsed) = tokio::task::spawn_blocking(move || latency(&m3, writers, per))
            .await
            .unwrap();
        let status = m2.handle.status();
        println!(
            "{writers:>8} | {:>12.2} | {:>12.2} | {:>10} | {:>12.0} | {:>12.1}",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.len(),
            status.uploads as f64 / elapsed.as_secs_f64(),
            status.events_shipped as f64 / status.uploads.max(1) as f64
        );
    }

    println!();
    println!(
        "one waited write at a time (ms): till (append unsynced + wait durable), the same on a log that never syncs, \
         our client sending an upload's shape alone, and one put from vss-client-ng (ldk-node's client)"
    );
    println!(
        "{:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>10}",
        "bytes",
        "till p50",
        "volatile",
        "upload",
        "put p50",
        "till/put",
        "till p90",
        "put p90",
        "append p50"
    );
    let ng = Arc::new(VssClientNgApi::new(&url, &token));
    let ours = Arc::new(client(&url, &token));
    for len in [512usize, 8_192] {
        let mut pair = Vec::new();
        for durability in [Durability::Durable, Durability::Volatile] {
            let m = master(
                &url,
                &token,
                rand::random(),
                ReplicatorConfig::default(),
                durability,
            )
            .await;
            pair.push(m);
        }
        let pair = Arc::new(pair);
        let (p2, ours2, ng2, rt) = (
            pair.clone(),
            ours.clone(),
            ng.clone(),
            tokio::runtime::Handle::current(),
        );
        let n = if quick { 10 } else { 400 };
        let w = tokio::task::spawn_blocking(move || {
            one_waited_write(&p2[0], &p2[1], &ours2, &ng2, &rt, len, n)
        })
        .await
        .unwrap();
        println!(
            "{len:>6} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>7.2}x | {:>8.3} | {:>8.3} | {:>10.3}",
            pct(&w.till, 0.5),
            pct(&w.volatile, 0.5),
            pct(&w.upload, 0.5),
            pct(&w.put, 0.5),
            pct(&w.till, 0.5) / pct(&w.put, 0.5),
            pct(&w.till, 0.9),
            pct(&w.put, 0.9),
            pct(&w.append, 0.5)
        );
        for m in pair.iter() {
            m.handle.stop();
        }
    }

    println!();
    println!(
        "{:>10} | {:>10} | {:>16} | {:>14} | {:>14} | {:>12}",
        "events", "source", "restore seconds", "events/s", "bytes/event", "raw/event"
    );
    let sizes: &[u64] = if quick { &[1_000] } else { &[10_000, 100_000] };
    for &n in sizes {
        for with_snapshots in [true, false] {
            let secret: [u8; 32] = rand::random();
            let config = ReplicatorConfig {
                snapshot_every: if with_snapshots { n / 4 } else { 0 },
                ..ReplicatorConfig::default()
            };
            let m = master(&url, &token, secret, config, Durability::Volatile).await;
            let mut raw = 0u64;
            for chunk in 0..(n / 1_000) {
                let writes: Vec<Write> = (0..1_000)
                    .map(|i| {
                        let k = (chunk * 1_000 + i) as usize;
                        Write::put(
                            Key::new("bench", "", format!("k{}", k % 2_000)),
                            vec![(k % 251) as u8; VALUE_LEN],
                        )
                    })
                    .collect();
                m.log.append(writes).unwrap();
                m.handle.notify();
            }
            for e in m.log.events(1, n, usize::MAX).unwrap() {
                raw += e.encode().len() as u64;
            }
            m.handle.wait_durable(n).await.unwrap();
            let status = m.handle.status();
            let (secs, seq) = restore_time(&url, &token, secret).await;
            assert_eq!(seq, n);
            println!(
                "{n:>10} | {:>10} | {secs:>16.3} | {:>14.0} | {:>14.1} | {:>12.1}",
                if with_snapshots {
                    "snap+tail"
                } else {
                    "segments"
                },
                n as f64 / secs,
                status.bytes_uploaded as f64 / n as f64,
                raw as f64 / n as f64
            );
            m.handle.stop();
        }
    }
}
