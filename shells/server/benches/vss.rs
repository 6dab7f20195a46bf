//! `cargo bench -p till-server`: PutObjects and GetObject per second and p50/p99 latency of a real
//! till-server process over loopback HTTP, with 1 and 64 concurrent clients, on redb and on
//! PostgreSQL side by side. `TILL_BENCH_SECS` sets the seconds per measurement (default 3).

// The same process helpers the tests use, included by path so the benchmark does not pull in the
// tests crate's heavy dependencies.
#[path = "../../../tests/src/postgres.rs"]
#[allow(dead_code)]
mod postgres;
#[path = "../../../tests/src/server.rs"]
#[allow(dead_code)]
mod server;

use server::{StoreArg, TillServer, add_user};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use till_vss::{BearerToken, ClientConfig, KeyValue, PutObjectRequest, RetryPolicy, VssClient};

const VALUE_BYTES: usize = 1024;

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    client: &VssClient,
    op: Op,
    clients: usize,
    secs: f64,
    keys_per_task: &[u64],
) -> (Figures, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let client = client.clone();
            let written = keys_per_task.get(t).copied().unwrap_or(0);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    match op {
                        Op::Put => {
                            let request = PutObjectRequest {
                                store_id: "bench".into(),
                                global_version: None,
                                transaction_items: vec![KeyValue::new(
                                    format!("c{clients}/t{t}/{i}"),
                                    0,
                                    vec![0x5a; VALUE_BYTES],
                                )],
                                delete_items: vec![],
                            };
                            client.put_objects(&request).await.expect("put");
                        }
                        Op::Get => {
                            let key = format!("c{clients}/t{t}/{}", i % written.max(1));
                            client.get_object("bench", &key).await.expect("get");
                        }
                    }
                    latencies.push(began.elapsed());
                    i += 1;
                }
                (latencies, i)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for task in tasks {
        let (latencies, n) = task.await.expect("bench task");
        all.extend(latencies);
        counts.push(n);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (
        Figures {
            per_second: all.len() as f64 / elapsed,
            p50: at(0.50),
            p99: at(0.99),
        },
        counts,
    )
}

async fn bench_backend(name: &str, store: StoreArg, secs: f64) -> Vec<(String, Figures)> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_till-server"));
    let token = add_user(&bin, &store, "bench");
    let server = TillServer::start(&bin, store, &[]);
    let config = ClientConfig {
        retry: RetryPolicy::never(),
        ..Default::default()
    };
    let client =
        VssClient::new(server.vss_url(), BearerToken::new(&token).unwrap(), config).unwrap();
    let mut rows = Vec::new();
    for clients in [1, 64] {
        eprintln!("  {name}: PutObjects x{clients}");
        let (put, written) = measure(&client, Op::Put, clients, secs, &[]).await;
        eprintln!("  {name}: GetObject x{clients}");
        let (get, _) = measure(&client, Op::Get, clients, secs, &written).await;
        rows.push((format!("PutObjects  {clients:>3}"), put));
        rows.push((format!("GetObject   {clients:>3}"), get));
    }
    rows
}

fn cell(f: &Figures) -> String {
    format!(
        "{:>9.0} {:>8.2} {:>8.2}",
        f.per_second,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    )
}

fn main() {
    let secs: f64 = std::env::var("TILL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        eprintln!("benchmarking till-server on redb");
        let redb = bench_backend("redb", StoreArg::DataDir(dir.path().join("data")), secs).await;
        let pg = match postgres::fresh_database() {
            Some(url) => {
                eprintln!("benchmarking till-server on PostgreSQL");
                Some(bench_backend("postgres", StoreArg::DatabaseUrl(url), secs).await)
            }
            None => None,
        };
        println!(
            "till-server VSS over loopback HTTP, {VALUE_BYTES}-byte values, one key per request, {secs} s per figure"
        );
        println!("{:<17}| {:^27} | {:^27}", "", "redb", "PostgreSQL");
        println!(
            "{:<17}| {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8}",
            "op       clients", "ops/s", "p50 ms", "p99 ms", "ops/s", "p50 ms", "p99 ms"
        );
        for (i, (label, figures)) in redb.iter().enumerate() {
            let other = pg.as_ref().map_or_else(|| format!("{:>27}", "(no PostgreSQL)"), |pg| cell(&pg[i].1));
            println!("{label:<17}| {} | {other}", cell(figures));
        }
    });
}
