//! Security of till-server (issue 9), with real server processes on loopback, real redb files and
//! the real PostgreSQL of `till_tests::postgres`:
//!
//! - the stores hold no plaintext of what a device backed up: a real replicator ships events whose
//!   keys and values carry random markers, and the raw bytes of the server's redb file and a binary
//!   dump of every PostgreSQL table are searched for them (and, to prove the search works, for the
//!   user name the server legitimately keeps in clear);
//! - object names reveal nothing (opaque 32-hex-digit names only);
//! - tokens are hashed at rest (only the token id and the blake3 of the secret are stored);
//! - one user's token is refused, or confined to its own key space, on every endpoint that touches
//!   another user's store, and that store is unchanged afterwards;
//! - the server's limits hold under abuse (body size, items per put, page size, key and store id
//!   lengths, 500 held connections);
//! - slow, silent, idle and excess connections are closed (header and idle timeouts, the
//!   connection cap) while event streams and the hub stay open;
//! - no token appears in the server's log.
//!
//! No test prints a token: assertion messages name what was searched for, never its value.

use futures_util::{SinkExt, StreamExt};
use prost::Message;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use till_engine::{CommandExecutor, HubClient, HubCommand, HubConfig};
use till_log::{DeviceId, Key, Write};
use till_tests::replication::Device;
use till_tests::server::{StoreArg, TillServer, add_token, add_user, server_binary};
use till_vss::proto::{ErrorCode, ErrorResponse, GetObjectRequest, ListKeyVersionsResponse};
use till_vss::replica::{LeaseHeader, LeaseState, ReplicatorConfig};
use till_vss::{
    BearerToken, ClientConfig, KeyValue, ListKeyVersionsRequest, PutObjectRequest, RetryPolicy,
    VssClient,
};

const WAIT: Duration = Duration::from_secs(30);
/// `till_server::DEFAULT_MAX_BODY_BYTES` (shells/server/src/lib.rs): 64 MiB.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// `MAX_ITEMS` in shells/server/src/http.rs.
const MAX_ITEMS: usize = 1000;
/// `MAX_PAGE_SIZE` in shells/server/src/http.rs.
const MAX_PAGE_SIZE: usize = 100;
/// `MAX_KEY_CHARS` in shells/server/src/http.rs.
const MAX_KEY_CHARS: usize = 600;
/// `MAX_STORE_ID_CHARS` in shells/server/src/http.rs.
const MAX_STORE_ID_CHARS: usize = 120;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random()).collect();
    hex(&bytes)
}

fn client(url: &str, token: &str) -> VssClient {
    let config = ClientConfig {
        retry: RetryPolicy::never(),
        request_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    VssClient::new(url, BearerToken::new(token).unwrap(), config).unwrap()
}

/// Where a test's server keeps its objects, and how to read them raw.
struct Backend {
    dir: tempfile::TempDir,
    store: StoreArg,
    /// The PostgreSQL URL, for the PostgreSQL backend.
    pg: Option<String>,
}

impl Backend {
    fn redb() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreArg::DataDir(dir.path().join("data"));
        Backend {
            dir,
            store,
            pg: None,
        }
    }

    /// `None` when PostgreSQL is not available (outside CI; in CI that fails).
    fn postgres() -> Option<Backend> {
        let url = till_tests::postgres::fresh_database()?;
        Some(Backend {
            dir: tempfile::tempdir().unwrap(),
            store: StoreArg::DatabaseUrl(url.clone()),
            pg: Some(url),
        })
    }

    fn get(postgres: bool) -> Option<Backend> {
        if postgres {
            Backend::postgres()
        } else {
            Some(Backend::redb())
        }
    }

    fn name(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "redb"
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Every byte the server stores: the redb file as it is on disk, or each PostgreSQL table
    /// dumped whole in binary (bytea as stored, text as UTF-8); by where it came from.
    fn raw(&self) -> Vec<(String, Vec<u8>)> {
        match &self.pg {
            Some(url) => till_tests::postgres::dump_tables(url),
            None => {
                let path = self.dir.path().join("data").join("till-server.redb");
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    bytes.len() > 4096,
                    "the redb file is {} bytes only",
                    bytes.len()
                );
                vec![(path.display().to_string(), bytes)]
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The places (files or tables) whose raw bytes contain `needle`.
fn found_in(raw: &[(String, Vec<u8>)], needle: &[u8]) -> Vec<String> {
    raw.iter()
        .filter(|(_, bytes)| contains(bytes, needle))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Asserts that no token, and no token's secret (as text or raw bytes), is in `text`;
/// `what` names the text in the failure, never the token.
fn assert_no_token(what: &str, text: &[u8], tokens: &[(&str, &str)]) {
    for (name, token) in tokens {
        let secret_hex = &token["till_".len() + 32..];
        assert!(
            !contains(text, token.as_bytes()),
            "{what} contains {name}'s token"
        );
        assert!(
            !contains(text, secret_hex.as_bytes()),
            "{what} contains the secret part of {name}'s token"
        );
    }
}

/// The secret of a `till_` token (32 bytes) and its token id (16 bytes).
fn token_parts(token: &str) -> ([u8; 16], [u8; 32]) {
    let digits = token.strip_prefix("till_").expect("a till_ token");
    assert_eq!(digits.len(), 96);
    let bytes: Vec<u8> = (0..48)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    (
        bytes[..16].try_into().unwrap(),
        bytes[16..].try_into().unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// No plaintext, opaque names, hashed tokens.
// ---------------------------------------------------------------------------------------------

async fn stores_hold_no_plaintext(postgres: bool) {
    let Some(backend) = Backend::get(postgres) else {
        return;
    };
    let bin = server_binary();
    let run = random_hex(8);
    // What the server legitimately keeps in clear: the user (store) name. It proves the search.
    let user_name = format!("merchant-{run}");
    let token = add_user(&bin, &backend.store, &user_name);
    let cashier = add_token(&bin, &backend.store, &user_name, "cashier");
    let server = TillServer::start_logged(&bin, backend.store.clone(), &[], &backend.log_path());

    // What the device backs up: keys and values carrying random markers.
    let value_marker = format!("VALUE-MARKER-{}", random_hex(16));
    let ns_marker = format!("nsmarker{}", random_hex(8));
    let sub_marker = format!("submarker{}", random_hex(8));
    let key_marker = format!("keymarker{}", random_hex(8));
    let secret: [u8; 32] = rand::random();
    let mut device = Device::new(&server.vss_url(), &token, secret);
    let config = ReplicatorConfig {
        max_segment_events: 40,
        // Uncompressed, so that a segment shipped in clear would show its markers verbatim, and
        // with snapshots, whose chunks hold every key and value too.
        compress: false,
        snapshot_every: 100,
        backoff_max: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    };
    device.acquire(config).await.unwrap();
    let mut last = 0;
    for i in 0..300 {
        let key = Key::new(&ns_marker, &sub_marker, format!("{key_marker}-{}", i % 13));
        let value = format!("{value_marker} event {i} {value_marker}").into_bytes();
        last = device
            .log
            .append(vec![Write::put(key, value)])
            .unwrap()
            .head_seq;
        if i % 25 == 0 {
            device.replicator().notify();
        }
    }
    device.replicator().notify();
    tokio::time::timeout(WAIT, device.replicator().wait_durable(last))
        .await
        .expect("everything shipped in time")
        .unwrap();
    device.replicator().release().await.unwrap();

    // The data really is on the server: another device with the same secret pulls it back.
    let other = Device::new(&server.vss_url(), &token, secret);
    let report = other.replica.sync().await.unwrap();
    assert_eq!(report.seq, last, "the follower pulled every event");
    let back = other
        .log
        .get(&Key::new(
            &ns_marker,
            &sub_marker,
            format!("{key_marker}-0"),
        ))
        .unwrap()
        .expect("the key came back");
    assert!(contains(&back.value, value_marker.as_bytes()));

    let store_id = device.replica.remote().store_id().to_owned();
    let raw = backend.raw();
    let name = backend.name();

    // The search works: the user name and the store id are stored in clear.
    assert!(
        !found_in(&raw, user_name.as_bytes()).is_empty(),
        "{name}: the user name is not in the raw store, so the search cannot be trusted"
    );
    assert!(
        !found_in(&raw, store_id.as_bytes()).is_empty(),
        "{name}: the VSS store id is not in the raw store"
    );
    // The device's plaintext is not.
    for (what, marker) in [
        ("the value marker", &value_marker),
        ("the namespace marker", &ns_marker),
        ("the sub-namespace marker", &sub_marker),
        ("the key marker", &key_marker),
    ] {
        let places = found_in(&raw, marker.as_bytes());
        assert!(
            places.is_empty(),
            "{name}: {what} is stored in plaintext in {places:?}"
        );
    }
    eprintln!(
        "{name}: searched {} bytes in {} places; no plaintext marker found",
        raw.iter().map(|(_, b)| b.len()).sum::<usize>(),
        raw.len()
    );

    // Object names reveal nothing: every key is 32 lowercase hex digits, none a logical name.
    let vss = client(&server.vss_url(), &token);
    let (keys, _) = vss.list_all_key_versions(&store_id, None).await.unwrap();
    assert!(keys.len() > 8, "segments, snapshot chunks and the head");
    for kv in &keys {
        assert!(
            kv.key.len() == 32
                && kv
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{name}: object name {:?} is not an opaque 32-hex-digit name",
            kv.key
        );
        for word in [&ns_marker, &sub_marker, &key_marker, &value_marker] {
            assert!(!kv.key.contains(word.as_str()));
        }
    }
    for logical in ["head", "segment", "snapshot", "segment/0", "snapshot/"] {
        assert!(
            found_in(&raw, logical.as_bytes())
                .iter()
                .all(|place| !place.contains("objects")),
            "{name}: the logical name {logical:?} appears in an objects table"
        );
    }
    if let Some(url) = &backend.pg {
        // The key column itself, as PostgreSQL has it.
        let names = till_tests::postgres::query(url, "SELECT key FROM till_objects");
        let names: Vec<&str> = names.lines().collect();
        assert_eq!(names.len(), keys.len());
        for n in names {
            assert!(n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    // Tokens are hashed at rest: the token id is there (it finds the credential), the blake3 of
    // the secret is there, the token and its secret are not.
    for (who, t) in [("the owner", &token), ("the cashier", &cashier)] {
        let (id, secret) = token_parts(t);
        assert!(
            !found_in(&raw, &id).is_empty(),
            "{name}: {who}'s token id is not stored (the search must find it)"
        );
        assert!(
            !found_in(&raw, blake3::hash(&secret).as_bytes()).is_empty(),
            "{name}: the blake3 hash of {who}'s secret is not stored"
        );
        assert!(
            found_in(&raw, &secret).is_empty(),
            "{name}: {who}'s raw secret is stored"
        );
    }
    for (_, bytes) in &raw {
        assert_no_token(
            &format!("{name}'s raw store"),
            bytes,
            &[("the owner", &token), ("the cashier", &cashier)],
        );
    }
    drop(server);
    let log = std::fs::read(backend.log_path()).unwrap_or_default();
    assert_no_token(
        &format!("{name}'s server log"),
        &log,
        &[("the owner", &token), ("the cashier", &cashier)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_hold_no_plaintext_opaque_names_and_hashed_tokens_redb() {
    stores_hold_no_plaintext(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_hold_no_plaintext_opaque_names_and_hashed_tokens_postgres() {
    stores_hold_no_plaintext(true).await;
}

// ---------------------------------------------------------------------------------------------
// Confinement.
// ---------------------------------------------------------------------------------------------

/// A master device's node stand-in: answers invoices, records every command it ran.
#[derive(Default)]
struct Recorder {
    ran: Mutex<Vec<HubCommand>>,
}

impl CommandExecutor for Recorder {
    fn execute(&self, command: &HubCommand) -> Result<Value, String> {
        self.ran.lock().unwrap().push(command.clone());
        match command {
            HubCommand::CreateInvoice { amount_sat, .. } => Ok(json!({
                "bolt11": format!("lnbcrt{amount_sat}n1fake{}", random_hex(4)),
                "payment_hash": random_hex(32),
            })),
            HubCommand::Balances => Ok(json!({ "lightning_sats": 1 })),
            HubCommand::Payments => Ok(json!([])),
            _ => Err("not in this test".to_owned()),
        }
    }
}

/// A POST of raw protobuf to a VSS endpoint: (status, body).
async fn vss_post(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new().post(url).body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

fn error_of(body: &[u8]) -> ErrorResponse {
    ErrorResponse::decode(body).expect("an ErrorResponse body")
}

/// A JSON request: (status, body as JSON or Null).
async fn json_call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut request = match method {
        "POST" => http.post(url),
        _ => http.get(url),
    };
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Everything of user A's the server holds that B could touch: every object of A's VSS store
/// (key, version, value), its global version, its lease, and A's invoices.
async fn snapshot_of_a(server: &TillServer, token: &str, vss_store: &str, shop: &str) -> Value {
    let vss = client(&server.vss_url(), token);
    let (keys, global) = vss.list_all_key_versions(vss_store, None).await.unwrap();
    let mut objects = Vec::new();
    for k in keys {
        let kv = vss.get_object(vss_store, &k.key).await.unwrap();
        objects.push(json!([kv.key, kv.version, hex(&kv.value)]));
    }
    let (_, lease) = json_call(
        "GET",
        &format!("{}/api/v1/stores/{vss_store}/lease", server.url()),
        Some(token),
        None,
    )
    .await;
    let (_, invoices) = json_call(
        "GET",
        &format!("{}/api/v1/stores/{shop}/invoices", server.url()),
        Some(token),
        None,
    )
    .await;
    json!({ "objects": objects, "global": global, "lease": lease, "invoices": invoices })
}

/// The hub, connected with `token`, says hello for `store`: the server's answer (its first text
/// message) and whether it closed the connection after it. `(Null, true)` when the upgrade itself
/// is refused.
async fn hub_hello(server: &TillServer, token: &str, store: &str) -> (Value, bool) {
    use tokio_tungstenite::tungstenite::protocol::Message as Ws;
    let request = till_tests::shop::hub_request(server, token);
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
        return (Value::Null, true);
    };
    let hello = json!({ "type": "hello", "v": 1, "store": store, "device_id": "b2".repeat(16) });
    socket.send(Ws::text(hello.to_string())).await.unwrap();
    let mut answer = Value::Null;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Ws::Text(text)))) if answer.is_null() => {
                answer = serde_json::from_str(&text).unwrap();
            }
            Ok(Some(Ok(Ws::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => break,
        }
    }
    (answer, closed)
}

/// The status of a hub upgrade attempt that the server refuses before upgrading.
async fn hub_upgrade_status(server: &TillServer, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .get(format!("{}/api/v1/hub", server.url()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn users_are_confined(postgres: bool) {
    let Some(backend) = Backend::get(postgres) else {
        return;
    };
    let name = backend.name();
    let bin = server_binary();
    let shop_a = "alice-shop";
    let shop_b = "bob-shop";
    let a = add_user(&bin, &backend.store, shop_a);
    let b = add_user(&bin, &backend.store, shop_b);
    let b_cashier = add_token(&bin, &backend.store, shop_b, "cashier");
    let server = TillServer::start_logged(
        &bin,
        backend.store.clone(),
        &["--command-timeout-secs", "5"],
        &backend.log_path(),
    );
    let base = server.url();
    let vss_url = server.vss_url();
    // A's VSS store id; B will aim at the very same id.
    let vss_store = format!("store-of-alice-{}", random_hex(4));
    let master = DeviceId([0xa1; 16]);

    // A's data: objects, a global version, a head (so a lease), and an invoice via its master.
    let va = client(&vss_url, &a);
    let mut head = LeaseHeader {
        device: master,
        epoch: 1,
        state: LeaseState::Held,
    }
    .encode()
    .to_vec();
    head.extend_from_slice(b"sealed manifest of alice");
    va.put_objects(&PutObjectRequest {
        store_id: vss_store.clone(),
        global_version: Some(0),
        transaction_items: vec![
            KeyValue::new("k1", 0, b"alice's first".to_vec()),
            KeyValue::new("k2", 0, b"alice's second".to_vec()),
            KeyValue::new("head", 0, head),
        ],
        delete_items: vec![],
    })
    .await
    .unwrap();
    va.put_objects(&PutObjectRequest {
        store_id: vss_store.clone(),
        global_version: Some(1),
        transaction_items: vec![KeyValue::new("k1", 1, b"alice's first, v2".to_vec())],
        delete_items: vec![],
    })
    .await
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut hub_config = HubConfig::new(
        base.clone(),
        a.as_str(),
        shop_a,
        master,
        Some(recorder.clone() as Arc<dyn CommandExecutor>),
    );
    hub_config.max_backoff = Duration::from_millis(300);
    let hub = HubClient::start(hub_config);
    hub.wait_for(WAIT, |s| {
        s.connected && s.master.as_ref().map(|m| m.device.clone()) == Some(master.to_string())
    })
    .await
    .unwrap_or_else(|s| panic!("{name}: A's device never became the connected master: {s:?}"));
    let (status, invoice) = json_call(
        "POST",
        &format!("{base}/api/v1/stores/{shop_a}/invoices"),
        Some(&a),
        Some(json!({ "amount_sat": 1234, "description": "alice's sale" })),
    )
    .await;
    assert_eq!(status, 201, "{name}: A creates an invoice: {invoice}");
    let invoice_id = invoice["id"].as_str().unwrap().to_owned();
    let commands_before = recorder.ran.lock().unwrap().len();
    let before = snapshot_of_a(&server, &a, &vss_store, shop_a).await;
    assert_eq!(before["objects"].as_array().unwrap().len(), 3);
    assert_eq!(before["global"], 2);
    assert_eq!(before["lease"]["device"], master.to_string());
    assert_eq!(before["invoices"].as_array().unwrap().len(), 1);

    // --- The VSS endpoints: B's token reaches only B's own key space, whatever store id it
    // sends. The reference server scopes the same way; there is nothing to refuse, only nothing
    // of A's to see or change.
    let get = |key: &str| {
        GetObjectRequest {
            store_id: vss_store.clone(),
            key: key.to_owned(),
        }
        .encode_to_vec()
    };
    for key in ["k1", "k2", "head"] {
        let (status, body) = vss_post(&format!("{vss_url}/getObject"), Some(&b), get(key)).await;
        assert_eq!(status, 404, "{name}: B's getObject of A's {key}");
        assert_eq!(
            error_of(&body).error_code,
            ErrorCode::NoSuchKeyException as i32
        );
    }
    let vb = client(&vss_url, &b);
    let global = vb
        .get_object(&vss_store, "vss_global_version")
        .await
        .unwrap();
    assert_eq!(global.version, 0, "{name}: B sees its own global version");
    let listing = ListKeyVersionsRequest {
        store_id: vss_store.clone(),
        key_prefix: None,
        page_size: None,
        page_token: None,
    };
    let (status, body) = vss_post(
        &format!("{vss_url}/listKeyVersions"),
        Some(&b),
        listing.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{name}: B's listing");
    let page = ListKeyVersionsResponse::decode(body.as_slice()).unwrap();
    assert!(
        page.key_versions.is_empty(),
        "{name}: B lists none of A's keys"
    );
    assert_eq!(page.global_version, Some(0));
    // The lease API: A's store id has no lease for B.
    let (status, lease) = json_call(
        "GET",
        &format!("{base}/api/v1/stores/{vss_store}/lease"),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(status, 404, "{name}: B reads A's lease: {lease}");
    assert!(lease["error"].as_str().unwrap().contains("has no lease"));
    // Conditional writes at A's versions conflict (B has no such keys)...
    for (key, version) in [("k1", 2), ("k2", 1), ("head", 1)] {
        let put = PutObjectRequest {
            store_id: vss_store.clone(),
            global_version: None,
            transaction_items: vec![KeyValue::new(key, version, b"bob was here".to_vec())],
            delete_items: vec![],
        };
        let (status, body) = vss_post(
            &format!("{vss_url}/putObjects"),
            Some(&b),
            put.encode_to_vec(),
        )
        .await;
        assert_eq!(status, 409, "{name}: B's put of A's {key} at A's version");
        assert_eq!(
            error_of(&body).error_code,
            ErrorCode::ConflictException as i32
        );
    }
    // ... a global version at A's conflicts, a delete item of A's key conflicts ...
    let put = PutObjectRequest {
        store_id: vss_store.clone(),
        global_version: Some(2),
        transaction_items: vec![KeyValue::new("bob", -1, b"x".to_vec())],
        delete_items: vec![KeyValue::new("k2", 1, vec![])],
    };
    let (status, _) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&b),
        put.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 409, "{name}: B's put at A's global version");
    // ... unconditional writes, deletes and a head land in B's own space only.
    let mut b_head = LeaseHeader {
        device: DeviceId([0xb2; 16]),
        epoch: 1,
        state: LeaseState::Held,
    }
    .encode()
    .to_vec();
    b_head.extend_from_slice(b"bob's head");
    vb.put_objects(&PutObjectRequest {
        store_id: vss_store.clone(),
        global_version: None,
        transaction_items: vec![
            KeyValue::new("k1", -1, b"bob overwrites".to_vec()),
            KeyValue::new("head", -1, b_head),
        ],
        delete_items: vec![],
    })
    .await
    .unwrap();
    for key in ["k1", "k2", "head", "nothing"] {
        vb.delete_object(&vss_store, key, -1).await.unwrap();
    }
    let (keys, _) = vb.list_all_key_versions(&vss_store, None).await.unwrap();
    assert!(keys.is_empty(), "{name}: B deleted its own keys only");

    // --- No token, a malformed one, a well-formed unknown one: 401 on every VSS endpoint.
    let forged = format!("till_{}", random_hex(48));
    for path in ["getObject", "putObjects", "deleteObject", "listKeyVersions"] {
        for token in [None, Some("not-a-token"), Some(forged.as_str())] {
            let (status, body) = vss_post(&format!("{vss_url}/{path}"), token, get("k1")).await;
            assert_eq!(status, 401, "{name}: {path} without a valid token");
            assert_eq!(error_of(&body).error_code, ErrorCode::AuthException as i32);
        }
        // B's cashier token is no owner token: 403.
        let (status, _) = vss_post(&format!("{vss_url}/{path}"), Some(&b_cashier), get("k1")).await;
        assert_eq!(status, 403, "{name}: {path} with a cashier token");
    }

    // --- The hub: B's token is refused for A's store after its hello, and closed.
    let (answer, closed) = hub_hello(&server, &b, shop_a).await;
    assert_eq!(answer["type"], "error", "{name}: {answer}");
    assert_eq!(
        answer["message"],
        format!(
            "refused: this token does not belong to store {shop_a:?}; use a token of that store"
        )
    );
    assert!(closed, "{name}: the server closes a refused hub connection");
    // Without a token, or with a cashier token, nothing is upgraded.
    assert_eq!(hub_upgrade_status(&server, None).await, 401);
    assert_eq!(hub_upgrade_status(&server, Some(&forged)).await, 401);
    assert_eq!(hub_upgrade_status(&server, Some(&b_cashier)).await, 403);
    // B's own store still works on the hub (the refusal is about the store, not the token).
    let (welcome, _) = hub_hello(&server, &b, shop_b).await;
    assert_eq!(welcome["type"], "welcome", "{name}: {welcome}");

    // --- The store API: every endpoint of A's store refuses B's tokens with 403.
    let store_api = format!("{base}/api/v1/stores/{shop_a}");
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            format!("{store_api}/invoices"),
            Some(json!({ "amount_sat": 1, "description": "bob's" })),
        ),
        ("GET", format!("{store_api}/invoices"), None),
        ("GET", format!("{store_api}/invoices/{invoice_id}"), None),
        (
            "GET",
            format!("{store_api}/invoices/{invoice_id}/qr.svg"),
            None,
        ),
        ("GET", format!("{store_api}/invoices/events"), None),
        (
            "POST",
            format!("{store_api}/pay"),
            Some(json!({ "bolt11": "lnbcrt1fake" })),
        ),
        (
            "POST",
            format!("{store_api}/refund"),
            Some(json!({ "payment_id": "00".repeat(32), "bolt11": "lnbcrt1fake" })),
        ),
        ("GET", format!("{store_api}/balances"), None),
        ("GET", format!("{store_api}/payments"), None),
    ];
    for (method, url, body) in &endpoints {
        for (who, token) in [("B's owner token", &b), ("B's cashier token", &b_cashier)] {
            let (status, answer) = json_call(method, url, Some(token), body.clone()).await;
            assert_eq!(status, 403, "{name}: {method} {url} with {who}: {answer}");
            assert_eq!(
                answer["error"],
                format!("this token does not belong to store {shop_a:?}"),
                "{name}: {method} {url} with {who}"
            );
        }
        for token in [None, Some(forged.as_str())] {
            let (status, _) = json_call(method, url, token, body.clone()).await;
            assert_eq!(status, 401, "{name}: {method} {url} without a valid token");
        }
    }
    // The POS page and its assets are static: they carry no store data, whoever asks.
    let page = reqwest::get(format!("{base}/pos/{shop_a}")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(!html.contains(&invoice_id) && !html.contains("alice's sale"));

    // --- Nothing of A's changed, and A's master ran no command for B.
    let after = snapshot_of_a(&server, &a, &vss_store, shop_a).await;
    assert_eq!(before, after, "{name}: A's store changed");
    assert_eq!(
        recorder.ran.lock().unwrap().len(),
        commands_before,
        "{name}: A's master ran a command for B"
    );
    hub.stop().await;
    drop(server);
    let log = std::fs::read(backend.log_path()).unwrap_or_default();
    assert_no_token(
        &format!("{name}'s server log"),
        &log,
        &[("A", &a), ("B", &b), ("B's cashier", &b_cashier)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_is_confined_to_its_own_stores_redb() {
    users_are_confined(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_is_confined_to_its_own_stores_postgres() {
    users_are_confined(true).await;
}

// ---------------------------------------------------------------------------------------------
// Limits.
// ---------------------------------------------------------------------------------------------

/// Sends a chunked body of `chunks` chunks of `chunk` bytes (no Content-Length) to `path` and
/// returns the response's status line and body.
async fn chunked_post(addr: &str, path: &str, token: &str, chunk: usize, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let data = vec![0x42u8; chunk];
    for _ in 0..chunks {
        let frame = format!("{chunk:x}\r\n");
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&data).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer to the chunked body")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn put_request(store: &str, items: Vec<KeyValue>) -> PutObjectRequest {
    PutObjectRequest {
        store_id: store.to_owned(),
        global_version: None,
        transaction_items: items,
        delete_items: vec![],
    }
}

/// The number of open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The soft limit on open files of a process.
fn fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

async fn limits_hold(postgres: bool) {
    let Some(backend) = Backend::get(postgres) else {
        return;
    };
    let name = backend.name();
    let bin = server_binary();
    let token = add_user(&bin, &backend.store, "limits");
    let mut server =
        TillServer::start_logged(&bin, backend.store.clone(), &[], &backend.log_path());
    let vss_url = server.vss_url();
    let vss = client(&vss_url, &token);
    let store = "limits-store";

    // --- Body size: the default limit, declared and streamed.
    let (status, body) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&token),
        vec![0u8; DEFAULT_MAX_BODY_BYTES + 1],
    )
    .await;
    assert_eq!(status, 413, "{name}: a declared body of 64 MiB + 1");
    let e = error_of(&body);
    assert_eq!(e.error_code, ErrorCode::InvalidRequestException as i32);
    assert!(
        e.message.contains(&DEFAULT_MAX_BODY_BYTES.to_string())
            && e.message.contains("--max-body-bytes"),
        "{name}: the 413 names the limit: {}",
        e.message
    );
    let answer = chunked_post(
        server.addr(),
        "/vss/putObjects",
        &token,
        1024 * 1024,
        DEFAULT_MAX_BODY_BYTES / (1024 * 1024) + 1,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{name}: a chunked body over the limit: {}",
        answer.lines().next().unwrap_or("")
    );

    // --- Items per put: 1000 are fine, 1001 are refused and nothing is written.
    let items = |n: usize, tag: &str| -> Vec<KeyValue> {
        (0..n)
            .map(|i| KeyValue::new(format!("{tag}{i:04}"), 0, vec![1u8; 8]))
            .collect()
    };
    vss.put_objects(&put_request(store, items(MAX_ITEMS, "item")))
        .await
        .unwrap();
    let (status, body) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&token),
        put_request(store, items(MAX_ITEMS + 1, "over")).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{name}: 1001 items");
    let e = error_of(&body);
    assert_eq!(e.error_code, ErrorCode::InvalidRequestException as i32);
    assert!(e.message.contains("too many items"), "{}", e.message);
    let mut mixed = put_request(store, items(MAX_ITEMS / 2 + 1, "mix"));
    mixed.delete_items = items(MAX_ITEMS / 2, "item");
    let (status, _) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&token),
        mixed.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{name}: 501 writes + 500 deletes");
    let (all, _) = vss.list_all_key_versions(store, None).await.unwrap();
    assert_eq!(
        all.len(),
        MAX_ITEMS,
        "{name}: nothing of a refused put landed"
    );

    // --- Page size: capped at 100, whatever is asked; 0 gives only the global version;
    // negative and foreign page tokens are refused.
    for asked in [None, Some(101), Some(1000), Some(i32::MAX)] {
        let page = vss
            .list_key_versions(&ListKeyVersionsRequest {
                store_id: store.into(),
                key_prefix: None,
                page_size: asked,
                page_token: None,
            })
            .await
            .unwrap();
        assert_eq!(
            page.key_versions.len(),
            MAX_PAGE_SIZE,
            "{name}: page_size {asked:?}"
        );
        assert!(
            page.next_page_token
                .as_deref()
                .is_some_and(|t| !t.is_empty())
        );
    }
    let page = vss
        .list_key_versions(&ListKeyVersionsRequest {
            store_id: store.into(),
            key_prefix: None,
            page_size: Some(0),
            page_token: None,
        })
        .await
        .unwrap();
    assert!(page.key_versions.is_empty());
    assert_eq!(page.global_version, Some(0));
    for (size, token_text) in [(Some(-1), None), (None, Some("abc")), (None, Some("-5"))] {
        let request = ListKeyVersionsRequest {
            store_id: store.into(),
            key_prefix: None,
            page_size: size,
            page_token: token_text.map(str::to_owned),
        };
        let (status, body) = vss_post(
            &format!("{vss_url}/listKeyVersions"),
            Some(&token),
            request.encode_to_vec(),
        )
        .await;
        assert_eq!(
            status, 400,
            "{name}: page_size {size:?} token {token_text:?}"
        );
        assert_eq!(
            error_of(&body).error_code,
            ErrorCode::InvalidRequestException as i32
        );
    }

    // --- Key and store id lengths (characters, not bytes).
    let long_key = "é".repeat(MAX_KEY_CHARS);
    vss.put_objects(&put_request(
        store,
        vec![KeyValue::new(long_key.clone(), 0, b"v".to_vec())],
    ))
    .await
    .unwrap();
    let long_store = "s".repeat(MAX_STORE_ID_CHARS);
    vss.put_objects(&put_request(
        &long_store,
        vec![KeyValue::new("k", 0, b"v".to_vec())],
    ))
    .await
    .unwrap();
    for request in [
        put_request(
            store,
            vec![KeyValue::new(format!("{long_key}x"), 0, b"v".to_vec())],
        ),
        put_request(
            &format!("{long_store}s"),
            vec![KeyValue::new("k", 0, b"v".to_vec())],
        ),
        put_request(
            store,
            vec![KeyValue::new("vss_global_version", -1, b"v".to_vec())],
        ),
    ] {
        let (status, body) = vss_post(
            &format!("{vss_url}/putObjects"),
            Some(&token),
            request.encode_to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{name}: an over-long or reserved name");
        assert_eq!(
            error_of(&body).error_code,
            ErrorCode::InvalidRequestException as i32
        );
    }
    let (status, _) = vss_post(
        &format!("{vss_url}/getObject"),
        Some(&token),
        b"\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{name}: an undecodable body");

    // --- 500 connections opened and held: half idle, half stuck in the middle of a request.
    let pid = server.pid().unwrap();
    let fds_before = open_fds(pid);
    let limit = fd_limit(pid);
    let mut held = Vec::new();
    for i in 0..500 {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("{name}: connection {i} refused: {e}"));
        if i % 2 == 1 {
            let partial = format!(
                "POST /vss/getObject HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n",
                server.addr()
            );
            s.write_all(partial.as_bytes()).await.unwrap();
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_held = open_fds(pid);
    eprintln!(
        "{name}: server fds: {fds_before} before, {fds_held} with 500 connections held (limit {limit})"
    );
    assert!(
        fds_held >= fds_before + 490,
        "{name}: the server accepted the 500 connections"
    );
    assert!((fds_held as u64) < limit, "{name}: within the fd limit");
    // Normal requests are still answered, promptly.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let kv = tokio::time::timeout(
            Duration::from_secs(5),
            vss.get_object(store, &format!("item{:04}", i * 7)),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: request {i} not answered within 5 s"))
        .unwrap();
        assert_eq!(kv.version, 1);
        slowest = slowest.max(started.elapsed());
    }
    vss.put_objects(&put_request(
        store,
        vec![KeyValue::new("during-flood", 0, b"ok".to_vec())],
    ))
    .await
    .unwrap();
    eprintln!("{name}: slowest of 50 reads while 500 connections were held: {slowest:?}");
    assert!(server.is_running(), "{name}: the server survived");
    // Closed by the clients, the connections are released.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > fds_before + 10 {
        assert!(
            Instant::now() < deadline,
            "{name}: the server still holds {} fds after the clients closed (was {fds_before})",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = reqwest::get(format!("{}/health", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // --- An exact body limit, at a configured size: a put of exactly the limit is taken, one
    // byte more is refused.
    drop(vss);
    server.kill();
    let limit_bytes = 65_536;
    let limit_text = limit_bytes.to_string();
    let server = TillServer::start_logged(
        &bin,
        backend.store.clone(),
        &["--max-body-bytes", &limit_text],
        &backend.log_path(),
    );
    let vss_url = server.vss_url();
    let sized = |len: usize, key: &str| -> Vec<u8> {
        let mut n = len;
        loop {
            let request = put_request(store, vec![KeyValue::new(key, 0, vec![7u8; n])]);
            match request.encoded_len().cmp(&len) {
                std::cmp::Ordering::Equal => return request.encode_to_vec(),
                std::cmp::Ordering::Greater => n -= 1,
                std::cmp::Ordering::Less => panic!("no put of exactly {len} bytes"),
            }
        }
    };
    let (status, _) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&token),
        sized(limit_bytes, "exact"),
    )
    .await;
    assert_eq!(status, 200, "{name}: a body of exactly the limit");
    let (status, body) = vss_post(
        &format!("{vss_url}/putObjects"),
        Some(&token),
        sized(limit_bytes + 1, "over"),
    )
    .await;
    assert_eq!(status, 413, "{name}: one byte over the limit");
    assert!(error_of(&body).message.contains(&limit_text));
    let vss = client(&vss_url, &token);
    assert_eq!(vss.get_object(store, "exact").await.unwrap().version, 1);
    assert!(matches!(
        vss.get_object(store, "over").await,
        Err(till_vss::Error::NoSuchKey { .. })
    ));
    drop(server);
    let log = std::fs::read(backend.log_path()).unwrap_or_default();
    assert_no_token(
        &format!("{name}'s server log"),
        &log,
        &[("the user", &token)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_abuse_redb() {
    limits_hold(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_abuse_postgres() {
    limits_hold(true).await;
}

// ---------------------------------------------------------------------------------------------
// Logs.
// ---------------------------------------------------------------------------------------------

/// The server's log, with every error path it has been driven through (bad tokens, refused
/// hub hellos, conflicts, a store outage for PostgreSQL), holds no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_any_log() {
    let Some(cluster) = till_tests::postgres::Cluster::private() else {
        return;
    };
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let store = StoreArg::DatabaseUrl(url);
    let bin = server_binary();
    let owner = add_user(&bin, &store, "logged");
    let cashier = add_token(&bin, &store, "logged", "cashier");
    let other = add_user(&bin, &store, "other");
    let server = TillServer::start_logged(&bin, store, &[], &log);
    let vss_url = server.vss_url();
    let tokens = [
        ("the owner", owner.as_str()),
        ("the cashier", cashier.as_str()),
        ("the other user", other.as_str()),
    ];
    // Every token, used right and wrong, on every kind of endpoint.
    for (_, token) in tokens {
        let vss = client(&vss_url, token);
        let _ = vss
            .put_objects(&put_request("s", vec![KeyValue::new("k", -1, vec![1])]))
            .await;
        let _ = vss
            .put_objects(&put_request("s", vec![KeyValue::new("k", 5, vec![1])]))
            .await;
        let _ = vss.get_object("s", "missing").await;
        // The token with a flipped secret digit, as a forged one.
        let mut forged = token.to_owned();
        let last = if forged.ends_with('0') { "1" } else { "0" };
        forged.replace_range(forged.len() - 1.., last);
        let _ = client(&vss_url, &forged).get_object("s", "k").await;
        let _ = json_call(
            "GET",
            &format!("{}/api/v1/stores/logged/invoices", server.url()),
            Some(token),
            None,
        )
        .await;
        let _ = json_call(
            "GET",
            &format!("{}/api/v1/stores/logged/balances", server.url()),
            Some(token),
            None,
        )
        .await;
        let _ = hub_hello(&server, token, "logged").await;
        let _ = hub_hello(&server, token, "nobody's").await;
    }
    // A store outage makes the server log its store errors.
    cluster.stop();
    let vss = client(&vss_url, &owner);
    let _ = vss.get_object("s", "k").await;
    let _ = vss
        .put_objects(&put_request("s", vec![KeyValue::new("k2", -1, vec![1])]))
        .await;
    let _ = reqwest::get(format!("{}/health", server.url())).await;
    cluster.start_again();
    drop(server);
    let text = std::fs::read(&log).unwrap();
    assert!(
        !text.is_empty(),
        "the server logged nothing, so the search proves nothing"
    );
    assert!(
        contains(&text, b"till-server"),
        "the log is the server's own"
    );
    assert_no_token("the server log", &text, &tokens);
    let pg_log = std::fs::read(cluster.log_path()).unwrap_or_default();
    assert_no_token("PostgreSQL's log", &pg_log, &tokens);
    eprintln!(
        "searched {} bytes of server log and {} bytes of PostgreSQL log: no token",
        text.len(),
        pg_log.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Connection limits: header and idle timeouts, the connection cap.
// ---------------------------------------------------------------------------------------------

/// Reads `stream` until the server closes it (end of file, or an error such as a reset) and
/// returns how long after `since` that was, and what was read; panics if it is still open `bound`
/// after `since`.
async fn wait_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    since: Instant,
    bound: Duration,
    what: &str,
) -> (Duration, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(left) = bound.checked_sub(since.elapsed()) else {
            panic!("{what}: still open {bound:?} later");
        };
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open {bound:?} later"),
            Ok(Ok(0)) | Ok(Err(_)) => return (since.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET /health`, kept alive, on a raw connection.
fn health_request(addr: &str) -> String {
    format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

/// Reads one HTTP response (head and `Content-Length` body) and returns it; `None` if the server
/// closed the connection first or said nothing within 10 s.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// Opens a connection, sends `GET /health` kept alive and returns it after the 200; `None` if the
/// server closed it without answering.
async fn served_connection(addr: &str) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(health_request(addr).as_bytes())
        .await
        .ok()?;
    let answer = read_response(&mut stream).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Some(stream)
}

async fn health_status(server: &TillServer) -> Result<u16, reqwest::Error> {
    let response = reqwest::Client::new()
        .get(format!("{}/health", server.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Slowloris: a client that connects and sends nothing, one that sends part of a head and stalls,
/// and one that sends its head a byte every 100 ms without end are each closed within the header
/// timeout (1 s here) of connecting, never answered, while a normal client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_silent_request_head_is_closed_within_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::redb();
    let bin = server_binary();
    let header_timeout = Duration::from_secs(1);
    let server = TillServer::start(&bin, backend.store.clone(), &["--header-timeout-secs", "1"]);
    let addr = server.addr().to_owned();
    // The timeout, plus room for a loaded machine.
    let bound = header_timeout + Duration::from_secs(3);

    let silent_since = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let stalled_since = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let trickle_since = Instant::now();
    let (mut trickle_read, mut trickle_write) = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap()
        .into_split();
    let trickler = tokio::spawn(async move {
        let head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let mut sent = 0usize;
        for byte in head.bytes().chain(std::iter::repeat(b'a')) {
            if trickle_write.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sent > 200 {
                break;
            }
        }
        sent
    });

    // Meanwhile, a normal client is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health_status(&server).await.unwrap(), 200);

    for (stream, since, what) in [
        (&mut silent, silent_since, "a connection that sends nothing"),
        (&mut stalled, stalled_since, "a connection stalled mid-head"),
    ] {
        let (after, got) = wait_closed(stream, since, bound, what).await;
        eprintln!("{what}: closed by the server after {after:?}");
        assert!(
            after >= header_timeout,
            "{what}: closed after {after:?}, before the header timeout"
        );
        assert!(
            got.is_empty(),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let (after, got) = wait_closed(
        &mut trickle_read,
        trickle_since,
        bound,
        "a connection sending a byte every 100 ms",
    )
    .await;
    let sent = trickler.await.unwrap();
    eprintln!("a byte every 100 ms: closed after {after:?}, {sent} bytes accepted");
    assert!(after >= header_timeout && got.is_empty());
    assert!(
        sent < 60,
        "the trickle kept going ({sent} bytes): a slow head is not extended by its bytes"
    );

    // The server still serves, a raw kept-alive connection as well as a client library.
    assert_eq!(health_status(&server).await.unwrap(), 200);
    assert!(served_connection(&addr).await.is_some());
}

/// With `--max-connections 8`: eight kept-alive connections are served; more are closed as soon as
/// they open, never answered, while the eight are still served; once the eight close, the server
/// serves eight new connections at once (no slot is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_the_server_serves_again_once_they_close() {
    use tokio::io::AsyncWriteExt;
    const MAX: usize = 8;
    let backend = Backend::redb();
    let bin = server_binary();
    let server = TillServer::start(
        &bin,
        backend.store.clone(),
        &["--max-connections", &MAX.to_string()],
    );
    let addr = server.addr().to_owned();

    let mut held = Vec::new();
    for i in 0..MAX {
        held.push(
            served_connection(&addr)
                .await
                .unwrap_or_else(|| panic!("connection {i} of {MAX} was not served")),
        );
    }

    for i in 0..4 {
        let since = Instant::now();
        let mut excess = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // The write may already fail: the server closed it.
        let _ = excess.write_all(health_request(&addr).as_bytes()).await;
        let what = format!("connection {} over the limit", i + 1);
        let (after, got) = wait_closed(&mut excess, since, Duration::from_secs(3), &what).await;
        eprintln!("{what}: closed after {after:?}");
        assert!(
            got.is_empty(),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(after < Duration::from_secs(2), "{what}: closed promptly");
    }
    assert!(
        health_status(&server).await.is_err(),
        "a client library is refused too while the server is full"
    );

    // The eight are still served.
    for (i, stream) in held.iter_mut().enumerate() {
        stream
            .write_all(health_request(&addr).as_bytes())
            .await
            .unwrap();
        let answer = read_response(stream)
            .await
            .unwrap_or_else(|| panic!("held connection {i} is no longer served"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    // Their clients close them: the server serves new connections again, all eight at once.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = Vec::new();
    while again.len() < MAX {
        match served_connection(&addr).await {
            Some(stream) => again.push(stream),
            None => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {MAX} new connections served 10 s after the old ones closed",
                    again.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let since = Instant::now();
    let mut ninth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = ninth.write_all(health_request(&addr).as_bytes()).await;
    let (_, got) = wait_closed(&mut ninth, since, Duration::from_secs(3), "a ninth again").await;
    assert!(got.is_empty(), "the limit still holds");
}

/// With `--idle-timeout-secs 1`: a kept-alive connection left idle after an answer is closed within
/// about a second; one that keeps asking (every 300 ms for 3 s) is not; an event stream with
/// nothing to say for 3 s (a request in progress) and the hub's WebSocket, quiet for 3 s, stay
/// open and working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_but_busy_ones_streams_and_the_hub_stay_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Message as Ws;
    let backend = Backend::redb();
    let bin = server_binary();
    let token = add_user(&bin, &backend.store, "idler");
    let idle_timeout = Duration::from_secs(1);
    let server = TillServer::start(
        &bin,
        backend.store.clone(),
        &["--idle-timeout-secs", "1", "--header-timeout-secs", "30"],
    );
    let addr = server.addr().to_owned();

    // An event stream and the hub, opened first, checked after everything else.
    let mut events = tokio::net::TcpStream::connect(&addr).await.unwrap();
    events
        .write_all(
            format!(
                "GET /api/v1/stores/idler/invoices/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, events.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let request = till_tests::shop::hub_request(&server, &token);
    let (mut hub, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = json!({ "type": "hello", "v": 1, "store": "idler", "device_id": "c3".repeat(16) });
    hub.send(Ws::text(hello.to_string())).await.unwrap();
    let answer = tokio::time::timeout(WAIT, hub.next()).await.unwrap();
    assert!(
        matches!(answer, Some(Ok(Ws::Text(_)))),
        "the hub answers the hello: {answer:?}"
    );

    // Idle after an answer: closed.
    let mut idle = served_connection(&addr).await.unwrap();
    let since = Instant::now();
    let (after, got) = wait_closed(
        &mut idle,
        since,
        idle_timeout + Duration::from_secs(3),
        "an idle kept-alive connection",
    )
    .await;
    eprintln!("an idle kept-alive connection: closed {after:?} after its answer");
    assert!(got.is_empty());
    assert!(
        after >= idle_timeout - Duration::from_millis(200),
        "closed after {after:?}, well before the idle timeout"
    );

    // Busy for three idle timeouts: kept open and served.
    let mut busy = served_connection(&addr).await.unwrap();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        busy.write_all(health_request(&addr).as_bytes())
            .await
            .unwrap();
        let answer = read_response(&mut busy)
            .await
            .unwrap_or_else(|| panic!("a busy connection was closed at request {i}"));
        assert!(answer.starts_with("HTTP/1.1 200"));
    }

    // The event stream, silent all this time (more than 3 s), is still open: a read waits.
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_millis(500), events.read(&mut buf)).await {
        Err(_) => {}
        Ok(result) => panic!("the event stream ended or spoke: {result:?}"),
    }
    // The hub's WebSocket, quiet as long, answers a ping.
    hub.send(Ws::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the hub answers the ping within 5 s");
        match tokio::time::timeout(left, hub.next()).await {
            Ok(Some(Ok(Ws::Pong(payload)))) => {
                assert_eq!(&payload[..], b"still there?");
                break;
            }
            Ok(Some(Ok(Ws::Text(_)))) | Ok(Some(Ok(Ws::Ping(_)))) => {}
            other => panic!("the hub's WebSocket was closed: {other:?}"),
        }
    }
}
