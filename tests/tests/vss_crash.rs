//! Crash safety of till-server: SIGKILL the server process in the middle of a stream of puts,
//! restart it, and check that every put answered 200 is there and that no put is half-applied.
//!
//! Each writer's put number `i` is one transaction of two items: it creates `w{n}/item{i}` and moves
//! `w{n}/counter` from version `i` to `i + 1`. After a restart, a counter at version `V` must come
//! with exactly the items `0..V`: an item without its counter bump (or the reverse) is a torn
//! transaction. `V` must cover every acknowledged put and exceed it by at most the one put that was
//! in flight when the server died.
//!
//! A SIGKILL loses nothing the server wrote: the kernel still writes it out. The power-cut test
//! runs the server in this process on a [`Disk`] that loses what redb wrote but did not sync, as
//! a power cut would, and checks the same of the store the cut leaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use till_server::{Backend, ServeConfig, Server};
use till_tests::power_cut::Disk;
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::{BearerToken, ClientConfig, KeyValue, PutObjectRequest, RetryPolicy, VssClient};

const WRITERS: u64 = 8;
const ROUNDS: usize = 6;
const STORE: &str = "crash";

fn client(url: &str, token: &str) -> VssClient {
    let config = ClientConfig {
        retry: RetryPolicy::never(),
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    VssClient::new(url, BearerToken::new(token).unwrap(), config).unwrap()
}

/// Puts until the server dies; returns how many of its puts were answered 200.
async fn writer(client: VssClient, n: u64, mut next: i64, acked: Arc<AtomicU64>) {
    loop {
        let request = PutObjectRequest {
            store_id: STORE.into(),
            global_version: None,
            transaction_items: vec![
                KeyValue::new(format!("w{n}/item{next}"), 0, vec![n as u8; 512]),
                KeyValue::new(format!("w{n}/counter"), next, next.to_be_bytes().to_vec()),
            ],
            delete_items: vec![],
        };
        match client.put_objects(&request).await {
            Ok(()) => {
                acked.store(next as u64 + 1, Ordering::SeqCst);
                next += 1;
            }
            Err(e) => {
                assert!(
                    e.is_transient() || matches!(e, till_vss::Error::UnexpectedResponse { .. }),
                    "writer {n}: only transport failures are expected while the server dies, got {e}"
                );
                return;
            }
        }
    }
}

/// The counter version of writer `n` after a restart, checking its items match it exactly.
async fn verify(client: &VssClient, n: u64, acked: u64) -> i64 {
    let counter = match client.get_object(STORE, &format!("w{n}/counter")).await {
        Ok(kv) => kv.version,
        Err(till_vss::Error::NoSuchKey { .. }) => 0,
        Err(e) => panic!("reading writer {n}'s counter: {e}"),
    };
    assert!(
        counter as u64 >= acked,
        "writer {n}: {acked} puts were acknowledged but the counter is at {counter}"
    );
    assert!(
        counter as u64 <= acked + 1,
        "writer {n}: counter {counter} is ahead of {acked} acknowledged puts + 1 in flight"
    );
    let (keys, _) = client
        .list_all_key_versions(STORE, Some(&format!("w{n}/item")))
        .await
        .unwrap();
    let mut items: Vec<i64> = keys
        .iter()
        .map(|k| k.key.rsplit("item").next().unwrap().parse().unwrap())
        .collect();
    items.sort();
    let expected: Vec<i64> = (0..counter).collect();
    assert_eq!(
        items, expected,
        "writer {n}: items must be exactly 0..{counter} (a torn transaction otherwise)"
    );
    if counter > 0 {
        let last = client
            .get_object(STORE, &format!("w{n}/item{}", counter - 1))
            .await
            .unwrap();
        assert_eq!(last.value, vec![n as u8; 512]);
    }
    counter
}

/// Starts one writer per entry of `next`, each at its next put: how far each got acknowledged,
/// and the tasks, which end when the server stops answering.
fn start_writers(
    client: &VssClient,
    next: &[i64],
) -> (Vec<Arc<AtomicU64>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Vec<_> = next
        .iter()
        .map(|&v| Arc::new(AtomicU64::new(v as u64)))
        .collect();
    let tasks = next
        .iter()
        .zip(&acked)
        .enumerate()
        .map(|(n, (&from, acked))| {
            tokio::spawn(writer(client.clone(), n as u64, from, acked.clone()))
        })
        .collect();
    (acked, tasks)
}

/// [`verify`]s every writer of a round that started at `next`, moving `next` on to each
/// counter: the puts acknowledged in the round, and those in flight that were kept.
async fn verify_writers(
    client: &VssClient,
    next: &mut [i64],
    acked: &[Arc<AtomicU64>],
) -> (u64, u64) {
    let (mut acknowledged, mut kept) = (0, 0);
    for (n, acked_n) in acked.iter().enumerate() {
        let acked_n = acked_n.load(Ordering::SeqCst);
        acknowledged += acked_n - next[n] as u64;
        let counter = verify(client, n as u64, acked_n).await;
        kept += counter as u64 - acked_n;
        next[n] = counter;
    }
    (acknowledged, kept)
}

async fn crash_loop(store: StoreArg) {
    let bin = server_binary();
    let token = add_user(&bin, &store, "crash");
    let mut server = TillServer::start(&bin, store, &[]);
    let mut next = vec![0i64; WRITERS as usize];
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let c = client(&server.vss_url(), &token);
        let (acked, tasks) = start_writers(&c, &next);
        let delay = 150 + rand::random::<u64>() % 400;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for t in tasks {
            t.await.unwrap();
        }
        server.restart();
        let c = client(&server.vss_url(), &token);
        total_acked += verify_writers(&c, &mut next, &acked).await.0;
        eprintln!("round {round}: killed after {delay} ms; counters {next:?}");
    }
    assert!(
        total_acked > 0,
        "the server must have acknowledged some puts before being killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_puts_loses_no_acknowledged_put_redb() {
    let dir = tempfile::tempdir().unwrap();
    crash_loop(StoreArg::DataDir(dir.path().join("data"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_puts_loses_no_acknowledged_put_postgres() {
    let Some(url) = till_tests::postgres::fresh_database() else {
        return;
    };
    crash_loop(StoreArg::DatabaseUrl(url)).await;
}

/// A till-server on loopback in this process, its redb store on `disk`: its VSS URL and what
/// stops it.
async fn serve_on(
    disk: Disk,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listen = "127.0.0.1:0".parse().unwrap();
    // The backend named here is not used: the store is the disk's.
    let config = ServeConfig::new(
        listen,
        Backend::Redb {
            data_dir: "(unused)".into(),
        },
    );
    let server = Server::bind_on(config, disk).await.unwrap();
    let url = format!("http://{}/vss", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop, task)
}

/// The same stream of puts, cut by a power cut instead of a SIGKILL: at a random write or sync
/// of the server's disk, which keeps what redb synced and each later write at random. Every put
/// answered 200 must be in the store the cut leaves, and none half-applied. `TILL_SERVER_POWER_CUTS`
/// cuts (default 20), one server after another on what the last cut left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_puts_loses_no_acknowledged_put_redb() {
    let cuts: u64 = till_tests::env_or("TILL_SERVER_POWER_CUTS", 20);
    // The store starts as a real server's file with the user in it.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let token = till_server::add_user(
        &Backend::Redb {
            data_dir: data_dir.clone(),
        },
        STORE,
    )
    .await
    .unwrap();
    let mut image = std::fs::read(data_dir.join("till-server.redb")).unwrap();
    let first_seed: u64 = rand::random();
    let mut next = vec![0i64; WRITERS as usize];
    let mut acked: Vec<Arc<AtomicU64>> = Vec::new();
    let mut total_acked = 0;
    let mut unacked_kept = 0;
    for round in 0..=cuts {
        let seed = first_seed.wrapping_add(round);
        let disk = Disk::with_image(image, seed);
        let (url, stop, task) = serve_on(disk.clone()).await;
        let c = client(&url, &token);
        // The server answers, on what the last cut left, with every put it acknowledged.
        let (acknowledged, kept) = verify_writers(&c, &mut next, &acked).await;
        total_acked += acknowledged;
        unacked_kept += kept;
        if round == cuts {
            let _ = stop.send(());
            task.await.unwrap();
            break;
        }
        // About 14 writes and syncs per commit: the cut falls anywhere in the first few hundred
        // commits, often inside one.
        let calls = StdRng::seed_from_u64(seed).gen_range(1..3000);
        disk.cut_after(calls);
        let tasks;
        (acked, tasks) = start_writers(&c, &next);
        for t in tasks {
            t.await.unwrap();
        }
        let _ = stop.send(());
        task.await.unwrap();
        image = disk
            .image()
            .unwrap_or_else(|| panic!("seed {seed}: the writers stopped but the power is on"));
        eprintln!("cut {round} (seed {seed}) after {calls} disk calls; counters {next:?}");
    }
    eprintln!(
        "{cuts} power cuts: {total_acked} acknowledged puts all kept, {unacked_kept} puts in flight at the cut kept"
    );
    assert!(
        total_acked > 0,
        "the server must have acknowledged some puts before the power went"
    );
}
