//! Faults under till-server (issue 9), with real server processes on loopback:
//!
//! - a full disk: the redb data directory on a small tmpfs of the test's own, filled by uploads
//!   until the server refuses; every upload answered 200 survives and stays readable, the refusals
//!   are prompt 5xx errors that name the cause, and once space is freed the same server process
//!   accepts uploads again;
//! - a PostgreSQL restart under load: writers keep uploading while the cluster is stopped and
//!   started again; every upload answered 200 survives, no transaction is torn, the errors during
//!   the outage are prompt 5xx errors that name the cause, and the server reconnects by itself.
//!
//! SIGKILL of the server during uploads is tests/tests/vss_crash.rs.

use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_tests::small_disk::SmallDisk;
use till_vss::proto::{ErrorCode, ErrorResponse, GetObjectRequest, GetObjectResponse};
use till_vss::{KeyValue, PutObjectRequest};

/// No request may take longer than this: a longer one is a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer of the server to a raw VSS request.
#[derive(Debug)]
enum Answer {
    Ok(Vec<u8>),
    Error {
        status: u16,
        code: i32,
        message: String,
    },
}

/// POSTs a protobuf body to `{vss_url}/{path}`; panics on a transport failure or a hang (the
/// server must answer, also when its store fails).
async fn call(
    http: &reqwest::Client,
    vss_url: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> Answer {
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        http.post(format!("{vss_url}/{path}"))
            .bearer_auth(token)
            .body(body)
            .send(),
    )
    .await
    .unwrap_or_else(|_| panic!("{path}: no answer within {REQUEST_TIMEOUT:?} (a hang)"))
    .unwrap_or_else(|e| panic!("{path}: the connection failed (is the server down?): {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap().to_vec();
    if status == 200 {
        return Answer::Ok(bytes);
    }
    let e = ErrorResponse::decode(bytes.as_slice())
        .unwrap_or_else(|_| panic!("{path}: HTTP {status} without an ErrorResponse body"));
    Answer::Error {
        status,
        code: e.error_code,
        message: e.message,
    }
}

async fn put(
    http: &reqwest::Client,
    vss_url: &str,
    token: &str,
    store: &str,
    items: Vec<KeyValue>,
) -> Answer {
    let request = PutObjectRequest {
        store_id: store.to_owned(),
        global_version: None,
        transaction_items: items,
        delete_items: vec![],
    };
    call(http, vss_url, "putObjects", token, request.encode_to_vec()).await
}

/// The object, `None` if missing; panics on any other answer.
async fn get(
    http: &reqwest::Client,
    vss_url: &str,
    token: &str,
    store: &str,
    key: &str,
) -> Option<KeyValue> {
    let request = GetObjectRequest {
        store_id: store.to_owned(),
        key: key.to_owned(),
    };
    match call(http, vss_url, "getObject", token, request.encode_to_vec()).await {
        Answer::Ok(body) => GetObjectResponse::decode(body.as_slice()).unwrap().value,
        Answer::Error { code, .. } if code == ErrorCode::NoSuchKeyException as i32 => None,
        other => panic!("reading {key}: {other:?}"),
    }
}

async fn health(http: &reqwest::Client, server: &TillServer) -> u16 {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        http.get(format!("{}/health", server.url())).send(),
    )
    .await
    .expect("/health answers")
    .unwrap()
    .status()
    .as_u16()
}

// ---------------------------------------------------------------------------------------------
// A full disk.
// ---------------------------------------------------------------------------------------------

fn value_of(i: usize, len: usize) -> Vec<u8> {
    // Incompressible and different for every object, yet reproducible for the check.
    let mut out = Vec::with_capacity(len);
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether a refusal names the full disk as its cause.
fn names_full_disk(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("full") || m.contains("space")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_keeps_every_acknowledged_upload_and_recovers() {
    let Some(fs) = SmallDisk::mount(8 * 1024 * 1024) else {
        return;
    };
    let data = fs.path().join("data");
    let filler = fs.path().join("filler");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let store = StoreArg::DataDir(data.clone());
    let bin = server_binary();
    let token = add_user(&bin, &store, "full");
    let mut server = TillServer::start_logged(&bin, store, &[], &log);
    let vss_url = server.vss_url();
    let http = reqwest::Client::new();
    // Space that can be given back later without touching the server's files.
    std::fs::write(&filler, vec![0x55u8; 2 * 1024 * 1024]).unwrap();
    eprintln!("free before filling: {} bytes", fs.free());

    const VALUE: usize = 32 * 1024;
    const STORE: &str = "disk";
    let mut acked: Vec<usize> = Vec::new();
    let mut refusals: Vec<(u16, i32, String)> = Vec::new();
    let mut counter = 0i64; // the counter's version, moved by every accepted put
    let mut i = 0;
    // Each put creates obj{i} and moves the counter: a torn transaction would show.
    while refusals.len() < 20 {
        assert!(i < 2000, "8 MiB never filled up after {i} uploads");
        let answer = put(
            &http,
            &vss_url,
            &token,
            STORE,
            vec![
                KeyValue::new(format!("obj{i}"), 0, value_of(i, VALUE)),
                KeyValue::new("counter", counter, (i as u64).to_be_bytes().to_vec()),
            ],
        )
        .await;
        match answer {
            Answer::Ok(_) => {
                acked.push(i);
                counter += 1;
            }
            Answer::Error {
                status,
                code,
                message,
            } => {
                assert!(
                    (500..600).contains(&status),
                    "upload {i} on a full disk: HTTP {status} (code {code}): {message}"
                );
                refusals.push((status, code, message));
            }
        }
        i += 1;
    }
    eprintln!(
        "{} uploads accepted, then {} refused; free now: {} bytes; first refusal: {:?}",
        acked.len(),
        refusals.len(),
        fs.free(),
        refusals[0]
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "server log while full (first lines):\n{}",
        text.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(
        acked.len() > 20,
        "the disk filled up before anything landed"
    );
    for (status, code, message) in &refusals {
        assert_eq!(
            *code,
            ErrorCode::InternalServerException as i32,
            "a full disk is the server's failure: {message}"
        );
        assert!(
            names_full_disk(message),
            "the refusal (HTTP {status}) does not name the full disk: {message:?}"
        );
    }
    assert!(server.is_running(), "the server died on a full disk");

    // While full, everything acknowledged can still be read.
    for &k in &acked {
        let kv = get(&http, &vss_url, &token, STORE, &format!("obj{k}"))
            .await
            .unwrap_or_else(|| panic!("acknowledged obj{k} is missing while the disk is full"));
        assert!(kv.value == value_of(k, VALUE), "obj{k} changed");
    }

    // Free space: the same process takes uploads again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    let mut after = 0;
    let mut last_refusal = None;
    while after < 10 {
        assert!(
            freed_at.elapsed() < Duration::from_secs(30),
            "30 s after space was freed the server still refuses: {last_refusal:?}"
        );
        match put(
            &http,
            &vss_url,
            &token,
            STORE,
            vec![
                KeyValue::new(format!("obj{i}"), 0, value_of(i, 4096)),
                KeyValue::new("counter", counter, (i as u64).to_be_bytes().to_vec()),
            ],
        )
        .await
        {
            Answer::Ok(_) => {
                acked.push(i);
                counter += 1;
                after += 1;
                i += 1;
            }
            Answer::Error {
                status,
                code,
                message,
            } => {
                assert!((500..600).contains(&status), "{status} {code} {message}");
                last_refusal = Some(message);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!(
        "accepting again {:?} after space was freed",
        freed_at.elapsed()
    );
    assert_eq!(health(&http, &server).await, 200);

    // Every acknowledged upload survives, whole; also across a restart.
    for round in ["before a restart", "after a restart"] {
        let counter_now = get(&http, &server.vss_url(), &token, STORE, "counter")
            .await
            .unwrap();
        assert_eq!(counter_now.version, counter, "the counter {round}");
        for &k in &acked {
            let kv = get(&http, &server.vss_url(), &token, STORE, &format!("obj{k}"))
                .await
                .unwrap_or_else(|| panic!("acknowledged obj{k} is missing {round}"));
            let len = if kv.value.len() == VALUE { VALUE } else { 4096 };
            assert!(kv.value == value_of(k, len), "obj{k} changed {round}");
        }
        // Nothing refused landed: only acknowledged objects exist.
        for k in (0..i).filter(|k| !acked.contains(k)) {
            assert!(
                get(&http, &server.vss_url(), &token, STORE, &format!("obj{k}"))
                    .await
                    .is_none(),
                "refused obj{k} exists {round}"
            );
        }
        server.restart();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "server log (last lines):\n{}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL restart under load.
// ---------------------------------------------------------------------------------------------

const WRITERS: usize = 6;

#[derive(Default)]
struct WriterLog {
    /// The item numbers whose put was answered 200.
    acked: Vec<i64>,
    /// Puts answered 200 after the database came back.
    acked_after_restart: usize,
    /// (status, code, message) of every failed put.
    errors: Vec<(u16, i32, String)>,
}

/// Puts `w{n}/item{i}` together with `w{n}/counter` at version `i` until `stop`; after a failed
/// put it reads the counter back (a put whose answer was lost may have landed) and goes on from
/// there, as a device re-reads its head.
async fn writer(
    vss_url: String,
    token: String,
    n: usize,
    stop: Arc<AtomicBool>,
    restarted: Arc<AtomicBool>,
    log: Arc<Mutex<WriterLog>>,
) {
    let http = reqwest::Client::new();
    let mut next = 0i64;
    let mut resync = false;
    while !stop.load(Ordering::SeqCst) {
        if resync {
            let request = GetObjectRequest {
                store_id: "pg".into(),
                key: format!("w{n}/counter"),
            };
            match call(
                &http,
                &vss_url,
                "getObject",
                &token,
                request.encode_to_vec(),
            )
            .await
            {
                Answer::Ok(body) => {
                    next = GetObjectResponse::decode(body.as_slice())
                        .unwrap()
                        .value
                        .unwrap()
                        .version;
                    resync = false;
                }
                Answer::Error { code, .. } if code == ErrorCode::NoSuchKeyException as i32 => {
                    next = 0;
                    resync = false;
                }
                Answer::Error { .. } => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let answer = put(
            &http,
            &vss_url,
            &token,
            "pg",
            vec![
                KeyValue::new(format!("w{n}/item{next}"), 0, vec![n as u8; 256]),
                KeyValue::new(format!("w{n}/counter"), next, next.to_be_bytes().to_vec()),
            ],
        )
        .await;
        let failed = {
            let mut log = log.lock().unwrap();
            match answer {
                Answer::Ok(_) => {
                    log.acked.push(next);
                    if restarted.load(Ordering::SeqCst) {
                        log.acked_after_restart += 1;
                    }
                    next += 1;
                    false
                }
                Answer::Error {
                    status,
                    code,
                    message,
                } => {
                    log.errors.push((status, code, message));
                    true
                }
            }
        };
        if failed {
            resync = true;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_acknowledged_upload_and_heals_itself() {
    let Some(cluster) = till_tests::postgres::Cluster::private() else {
        return;
    };
    let url = cluster.fresh_database();
    let logs = tempfile::tempdir().unwrap();
    let log_path: PathBuf = logs.path().join("server.log");
    let store = StoreArg::DatabaseUrl(url);
    let bin = server_binary();
    let token = add_user(&bin, &store, "pg-restart");
    let mut server = TillServer::start_logged(&bin, store, &[], &log_path);
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let logs: Vec<_> = (0..WRITERS)
        .map(|_| Arc::new(Mutex::new(WriterLog::default())))
        .collect();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|n| {
            tokio::spawn(writer(
                server.vss_url(),
                token.clone(),
                n,
                stop.clone(),
                restarted.clone(),
                logs[n].clone(),
            ))
        })
        .collect();
    let acked = |logs: &[Arc<Mutex<WriterLog>>]| -> usize {
        logs.iter().map(|l| l.lock().unwrap().acked.len()).sum()
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_outage = acked(&logs);
    assert!(before_outage > 0, "nothing was uploaded before the outage");
    let stopping = Instant::now();
    cluster.stop();
    eprintln!(
        "PostgreSQL stopped ({:?}) after {before_outage} acknowledged uploads",
        stopping.elapsed()
    );
    // During the outage the server answers, promptly and clearly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = acked(&logs);
    assert_eq!(
        health(&http, &server).await,
        503,
        "/health during the outage"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        acked(&logs),
        during,
        "uploads were acknowledged while PostgreSQL was down"
    );
    let outage_errors: usize = logs.iter().map(|l| l.lock().unwrap().errors.len()).sum();
    assert!(outage_errors > 0, "no writer saw the outage");
    restarted.store(true, Ordering::SeqCst);
    cluster.start_again();
    let back = Instant::now();
    // The server reconnects by itself: every writer gets uploads through again.
    loop {
        let slowest = logs
            .iter()
            .map(|l| l.lock().unwrap().acked_after_restart)
            .min()
            .unwrap();
        if slowest >= 5 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "30 s after PostgreSQL came back a writer has only {slowest} uploads through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "uploads flow again {:?} after PostgreSQL restarted",
        back.elapsed()
    );
    assert_eq!(health(&http, &server).await, 200);
    assert!(server.is_running());
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    // Errors were 5xx, INTERNAL, and named the database.
    let mut kinds: BTreeMap<(u16, i32, String), usize> = BTreeMap::new();
    for l in &logs {
        for e in &l.lock().unwrap().errors {
            *kinds.entry(e.clone()).or_default() += 1;
        }
    }
    eprintln!("errors during the outage: {kinds:#?}");
    for (status, code, message) in kinds.keys() {
        assert!(
            (500..600).contains(status),
            "HTTP {status} during the outage: {message}"
        );
        assert_eq!(
            *code,
            ErrorCode::InternalServerException as i32,
            "{message}"
        );
        assert!(
            message.to_lowercase().contains("database"),
            "the error does not name the database: {message:?}"
        );
    }

    // Every acknowledged upload is there, no transaction is torn, across a server restart too.
    for round in ["live", "after a server restart"] {
        for (n, l) in logs.iter().enumerate() {
            let acked_items = l.lock().unwrap().acked.clone();
            let counter = get(
                &http,
                &server.vss_url(),
                &token,
                "pg",
                &format!("w{n}/counter"),
            )
            .await
            .map_or(0, |kv| kv.version);
            let max_acked = acked_items.iter().max().map_or(0, |m| m + 1);
            assert!(
                counter >= max_acked,
                "writer {n} {round}: counter {counter} below its last acknowledged put {max_acked}"
            );
            for &item in &acked_items {
                let kv = get(
                    &http,
                    &server.vss_url(),
                    &token,
                    "pg",
                    &format!("w{n}/item{item}"),
                )
                .await
                .unwrap_or_else(|| panic!("writer {n}: acknowledged item {item} lost {round}"));
                assert_eq!(kv.value, vec![n as u8; 256]);
            }
            // Items are exactly 0..counter: no half-applied put.
            for item in 0..counter {
                assert!(
                    get(
                        &http,
                        &server.vss_url(),
                        &token,
                        "pg",
                        &format!("w{n}/item{item}")
                    )
                    .await
                    .is_some(),
                    "writer {n} {round}: counter at {counter} but item {item} is missing (torn)"
                );
            }
            assert!(
                get(
                    &http,
                    &server.vss_url(),
                    &token,
                    "pg",
                    &format!("w{n}/item{counter}")
                )
                .await
                .is_none(),
                "writer {n} {round}: an item beyond the counter (torn)"
            );
        }
        server.restart();
    }
    let total = acked(&logs);
    eprintln!("{total} uploads acknowledged in all, every one of them found");
    // Each start scanned the open invoices on PostgreSQL (to set their expiry timers again)
    // without an error.
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !text.contains("restoring the invoice expiry timers"),
        "server log:\n{text}"
    );
}
