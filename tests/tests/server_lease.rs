//! The server-side lease of till-server (DESIGN.md R4, issue 4's "Server side"), on redb and on
//! PostgreSQL: a real server process on loopback, head writes carrying a plaintext lease header.
//!
//! The server reads only the 32-byte lease header in front of a head, so the heads here are a raw
//! `LeaseHeader::encode()` followed by filler bytes; segments are values starting with `TILL`.

use std::sync::Arc;
use std::time::Duration;
use till_log::DeviceId;
use till_tests::server::{StoreArg, TillServer, add_user, server_binary};
use till_vss::replica::{LeaseHeader, LeaseState};
use till_vss::{BearerToken, ClientConfig, KeyValue, PutObjectRequest, RetryPolicy, VssClient};

const STORE: &str = "shop";
const HEAD: &str = "head";

const A: DeviceId = DeviceId([0xa1; 16]);
const B: DeviceId = DeviceId([0xb2; 16]);
const C: DeviceId = DeviceId([0xc3; 16]);

fn client(url: &str, token: &str) -> VssClient {
    let config = ClientConfig {
        retry: RetryPolicy::never(),
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    VssClient::new(url, BearerToken::new(token).unwrap(), config).unwrap()
}

/// A head value: the lease header, then bytes standing in for the sealed manifest.
fn head(device: DeviceId, epoch: u64, state: LeaseState) -> Vec<u8> {
    let mut value = LeaseHeader {
        device,
        epoch,
        state,
    }
    .encode()
    .to_vec();
    value.extend_from_slice(b"sealed manifest stand-in");
    value
}

/// A segment value: the envelope magic, then filler.
fn segment(tag: &str) -> Vec<u8> {
    [b"TILL".as_slice(), tag.as_bytes()].concat()
}

async fn put(client: &VssClient, items: Vec<KeyValue>) -> Result<(), till_vss::Error> {
    client
        .put_objects(&PutObjectRequest {
            store_id: STORE.into(),
            global_version: None,
            transaction_items: items,
            delete_items: vec![],
        })
        .await
}

async fn head_version(client: &VssClient) -> i64 {
    client.get_object(STORE, HEAD).await.unwrap().version
}

async fn missing(client: &VssClient, key: &str) -> bool {
    matches!(
        client.get_object(STORE, key).await,
        Err(till_vss::Error::NoSuchKey { .. })
    )
}

fn conflict_message(result: Result<(), till_vss::Error>) -> String {
    match result {
        Err(till_vss::Error::Conflict { message, .. }) => message,
        other => panic!("expected a CONFLICT, got {other:?}"),
    }
}

/// `GET /api/v1/stores/{store}/lease` with `token` (none: no Authorization header).
async fn get_lease(addr: &str, store: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request =
        reqwest::Client::new().get(format!("http://{addr}/api/v1/stores/{store}/lease"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    (status, body)
}

fn lease_json(device: DeviceId, epoch: u64, state: &str) -> serde_json::Value {
    serde_json::json!({
        "store_id": STORE,
        "device": device.to_string(),
        "epoch": epoch,
        "state": state,
    })
}

/// Where a scenario's server keeps its objects; `None` when PostgreSQL is unavailable (outside CI).
fn backend(postgres: bool, dir: &tempfile::TempDir) -> Option<StoreArg> {
    if postgres {
        Some(StoreArg::DatabaseUrl(
            till_tests::postgres::fresh_database()?
        ))
    } else {
        Some(StoreArg::DataDir(dir.path().join("data")))
    }
}

/// Acquire, refusal naming the holder, release and acquire at epoch+1, a stale epoch, bad headers,
/// SIGKILL and restart, the lease API, and the switch that turns the check off.
async fn lease_is_enforced_and_durable(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = backend(postgres, &dir) else {
        return;
    };
    let bin = server_binary();
    let alice = add_user(&bin, &store, "alice");
    let bob = add_user(&bin, &store, "bob");
    let mut server = TillServer::start(&bin, store.clone(), &[]);
    let url = server.vss_url();
    let vss = client(&url, &alice);

    // No head yet: no lease.
    let (status, body) = get_lease(server.addr(), STORE, Some(&alice)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains(STORE), "{body}");

    // A acquires: the store's first head, with A's first segment.
    put(
        &vss,
        vec![
            KeyValue::new("seg/0", 0, segment("a0")),
            KeyValue::new(HEAD, 0, head(A, 1, LeaseState::Held)),
        ],
    )
    .await
    .unwrap();
    let (status, body) = get_lease(server.addr(), STORE, Some(&alice)).await;
    assert_eq!((status, body), (200, lease_json(A, 1, "held")));

    // B, at A's epoch and the head's current version: refused, the holder named, nothing stored
    // (neither B's segment nor its head).
    let message = conflict_message(
        put(
            &vss,
            vec![
                KeyValue::new("seg/1", 0, segment("b1")),
                KeyValue::new(HEAD, 1, head(B, 1, LeaseState::Held)),
            ],
        )
        .await,
    );
    assert!(message.contains(&A.to_string()), "{message}");
    assert!(message.contains(&B.to_string()), "{message}");
    assert!(message.contains(&format!("store {STORE:?}")), "{message}");
    assert!(missing(&vss, "seg/1").await);
    let stored = vss.get_object(STORE, HEAD).await.unwrap();
    assert_eq!(
        (stored.version, stored.value),
        (1, head(A, 1, LeaseState::Held))
    );
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&alice)).await,
        (200, lease_json(A, 1, "held"))
    );

    // The holder's own writes pass; so does its release.
    put(
        &vss,
        vec![
            KeyValue::new("seg/1", 0, segment("a1")),
            KeyValue::new(HEAD, 1, head(A, 1, LeaseState::Held)),
        ],
    )
    .await
    .unwrap();
    put(
        &vss,
        vec![KeyValue::new(HEAD, 2, head(A, 1, LeaseState::Released))],
    )
    .await
    .unwrap();
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&alice)).await,
        (200, lease_json(A, 1, "released"))
    );

    // After the release, B still may not write under A's epoch; it acquires at epoch 2.
    let message = conflict_message(
        put(
            &vss,
            vec![KeyValue::new(HEAD, 3, head(B, 1, LeaseState::Held))],
        )
        .await,
    );
    assert!(message.contains(&A.to_string()), "{message}");
    put(
        &vss,
        vec![
            KeyValue::new("seg/2", 0, segment("b2")),
            KeyValue::new(HEAD, 3, head(B, 2, LeaseState::Held)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&alice)).await,
        (200, lease_json(B, 2, "held"))
    );

    // A, fenced, writes under its old epoch at the current version: refused, naming B.
    let message = conflict_message(
        put(
            &vss,
            vec![
                KeyValue::new("seg/3", 0, segment("a3")),
                KeyValue::new(HEAD, 4, head(A, 1, LeaseState::Held)),
            ],
        )
        .await,
    );
    assert!(message.contains(&B.to_string()), "{message}");
    assert!(message.contains("epoch 2"), "{message}");
    assert!(missing(&vss, "seg/3").await);
    assert_eq!(head_version(&vss).await, 4);

    // A head whose header does not decode is refused as invalid, naming what is wrong.
    for (bad, what) in [
        (
            {
                let mut v = head(B, 2, LeaseState::Held);
                v[4] = 9;
                v
            },
            "version 9",
        ),
        (
            {
                let mut v = head(B, 2, LeaseState::Held);
                v[5] = 7;
                v
            },
            "lease state",
        ),
        (b"TLSE\x01\x01".to_vec(), "truncated"),
    ] {
        let result = put(
            &vss,
            vec![
                KeyValue::new("seg/3", 0, segment("b3")),
                KeyValue::new(HEAD, 4, bad),
            ],
        )
        .await;
        match result {
            Err(till_vss::Error::InvalidRequest {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(message.contains(what), "{message}");
                assert!(message.contains(HEAD), "{message}");
            }
            other => panic!("expected INVALID_REQUEST for {what}, got {other:?}"),
        }
        assert!(missing(&vss, "seg/3").await);
    }
    // Values that do not start with the lease magic are ordinary objects.
    put(
        &vss,
        vec![KeyValue::new("notes", -1, b"TLS is not TLSE".to_vec())],
    )
    .await
    .unwrap();

    // The lease survives a SIGKILL and a restart, and is still enforced.
    let before = get_lease(server.addr(), STORE, Some(&alice)).await;
    server.kill();
    server.restart();
    let vss = client(&server.vss_url(), &alice);
    assert_eq!(get_lease(server.addr(), STORE, Some(&alice)).await, before);
    let message = conflict_message(
        put(
            &vss,
            vec![KeyValue::new(HEAD, 4, head(C, 2, LeaseState::Held))],
        )
        .await,
    );
    assert!(message.contains(&B.to_string()), "{message}");

    // The lease API: 401 without a valid token; scoped by user.
    let (status, body) = get_lease(server.addr(), STORE, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let forged = format!("till_{}", "0".repeat(96));
    assert_eq!(get_lease(server.addr(), STORE, Some(&forged)).await.0, 401);
    let (status, body) = get_lease(server.addr(), STORE, Some(&bob)).await;
    assert_eq!(status, 404, "bob must not see alice's lease: {body}");
    assert_eq!(
        get_lease(server.addr(), "no-such-store", Some(&alice))
            .await
            .0,
        404
    );
    // Bob's store of the same id has its own lease: C acquires it at epoch 1.
    let bob_vss = client(&server.vss_url(), &bob);
    put(
        &bob_vss,
        vec![KeyValue::new(HEAD, 0, head(C, 1, LeaseState::Held))],
    )
    .await
    .unwrap();
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&bob)).await,
        (200, lease_json(C, 1, "held"))
    );
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&alice)).await,
        (200, lease_json(B, 2, "held"))
    );

    // With --no-lease-check the server is a stock VSS server: C writes under B's epoch at the
    // current version and is accepted (versions still decide); the lease is still recorded.
    server.kill();
    let unchecked = TillServer::start(&bin, store, &["--no-lease-check"]);
    let vss = client(&unchecked.vss_url(), &alice);
    put(
        &vss,
        vec![
            KeyValue::new("seg/3", 0, segment("c3")),
            KeyValue::new(HEAD, 4, head(C, 2, LeaseState::Held)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get_lease(unchecked.addr(), STORE, Some(&alice)).await,
        (200, lease_json(C, 2, "held"))
    );
    let message = conflict_message(
        put(
            &vss,
            vec![KeyValue::new(HEAD, 4, head(A, 1, LeaseState::Held))],
        )
        .await,
    );
    assert!(message.contains("version"), "{message}");
}

/// Many devices race to acquire a fresh store at the same epoch, each under its own head key (so
/// object versions cannot decide): exactly one wins, and the stored lease is the winner's. On
/// PostgreSQL the racers go through two server processes sharing the database.
async fn one_winner_among_racing_acquires(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = backend(postgres, &dir) else {
        return;
    };
    let bin = server_binary();
    let token = add_user(&bin, &store, "alice");
    let mut servers = vec![TillServer::start(&bin, store.clone(), &[])];
    if postgres {
        servers.push(TillServer::start(&bin, store, &[]));
    }
    let clients: Vec<Arc<VssClient>> = servers
        .iter()
        .map(|s| Arc::new(client(&s.vss_url(), &token)))
        .collect();
    let racers: Vec<_> = (0..16u8)
        .map(|i| {
            let vss = clients[usize::from(i) % clients.len()].clone();
            tokio::spawn(async move {
                let device = DeviceId([i; 16]);
                let result = put(
                    &vss,
                    vec![KeyValue::new(
                        format!("head-{i}"),
                        0,
                        head(device, 1, LeaseState::Held),
                    )],
                )
                .await;
                (device, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (device, result) = racer.await.unwrap();
        match result {
            Ok(()) => winners.push(device),
            Err(till_vss::Error::Conflict { .. }) => {}
            Err(e) => panic!("device {device}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (status, body) = get_lease(servers[0].addr(), STORE, Some(&token)).await;
    assert_eq!((status, body), (200, lease_json(winners[0], 1, "held")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_lease_is_enforced_and_durable() {
    lease_is_enforced_and_durable(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lease_is_enforced_and_durable() {
    lease_is_enforced_and_durable(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_one_winner_among_racing_acquires() {
    one_winner_among_racing_acquires(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_winner_among_racing_acquires() {
    one_winner_among_racing_acquires(true).await;
}

/// A database of schema 1 (before the lease table) is upgraded on start and keeps its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schema_1_is_upgraded() {
    let Some(url) = till_tests::postgres::fresh_database() else {
        return;
    };
    let store = StoreArg::DatabaseUrl(url.clone());
    let bin = server_binary();
    let token = add_user(&bin, &store, "alice");
    let mut server = TillServer::start(&bin, store, &[]);
    let vss = client(&server.vss_url(), &token);
    put(&vss, vec![KeyValue::new("old", 0, b"kept".to_vec())])
        .await
        .unwrap();
    server.kill();
    let output = std::process::Command::new("psql")
        .args([&url, "-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg("DROP TABLE till_leases; UPDATE till_schema SET version = 1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    server.restart();
    let vss = client(&server.vss_url(), &token);
    assert_eq!(vss.get_object(STORE, "old").await.unwrap().value, b"kept");
    put(
        &vss,
        vec![KeyValue::new(HEAD, 0, head(A, 1, LeaseState::Held))],
    )
    .await
    .unwrap();
    assert_eq!(
        get_lease(server.addr(), STORE, Some(&token)).await,
        (200, lease_json(A, 1, "held"))
    );
    let message = conflict_message(
        put(
            &vss,
            vec![KeyValue::new(HEAD, 1, head(B, 1, LeaseState::Held))],
        )
        .await,
    );
    assert!(message.contains(&A.to_string()), "{message}");
}
