//! Replays the committed corpora of the backup-format, VSS client and server fuzz targets
//! (`fuzz/corpus/<target>/`) through the same checks the targets run, as ordinary tests; checks that
//! every fuzz target's corpus is replayed somewhere; and writes the seeds:
//!
//! ```text
//! cargo test -p till-server --test fuzz_corpus -- --ignored write_seeds
//! ```
//!
//! The till-log targets' corpora are replayed by `log/tests/fuzz_corpus.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use till_log::{DeviceId, Hash, Key, Log};
use till_server::fuzzing::{
    self, ApiCall, ApiCase, ApiRequest, Auth, HubCase, HubFrom, HubMessage, VssCall, VssCase,
    VssRequest,
};
use till_vss::fuzzing::{self as vss_fuzzing, PlanCase};
use till_vss::proto::{
    DeleteObjectRequest, GetObjectRequest, KeyValue, ListKeyVersionsRequest, PutObjectRequest,
};
use till_vss::replica::object_names as names;
use till_vss::replica::{LeaseState, Manifest, SnapshotRef, Target};

/// Targets whose corpora `log/tests/fuzz_corpus.rs` replays.
const LOG_TARGETS: [&str; 3] = ["decode_event", "open_segment", "segment_payload"];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay<T>(target: &str, check: impl Fn(&[u8]) -> T) -> usize {
    let dir = corpus_dir(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&data);
        }));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "the corpus of {target} is empty");
    n
}

#[test]
fn open_head_corpus() {
    replay("open_head", vss_fuzzing::open_head);
}

#[test]
fn manifest_corpus() {
    replay("manifest", vss_fuzzing::manifest);
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", vss_fuzzing::snapshot);
}

#[test]
fn restore_plan_corpus() {
    replay("restore_plan", vss_fuzzing::restore_plan);
}

#[test]
fn vss_responses_corpus() {
    replay("vss_responses", vss_fuzzing::vss_response);
}

#[test]
fn vss_requests_corpus() {
    replay("vss_requests", fuzzing::vss_requests);
}

#[test]
fn hub_messages_corpus() {
    replay("hub_messages", fuzzing::hub_messages);
}

#[test]
fn store_api_corpus() {
    replay("store_api", fuzzing::store_api);
}

/// Every target in `fuzz/fuzz_targets/` has a corpus that one of the two replay tests replays.
#[test]
fn every_fuzz_target_is_replayed() {
    let replayed: Vec<&str> = LOG_TARGETS
        .into_iter()
        .chain(SERVER_TARGETS.iter().copied())
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let target = path.file_stem().unwrap().to_str().unwrap().to_owned();
        assert!(
            replayed.contains(&target.as_str()),
            "fuzz target {target} has no corpus replay; add it to a fuzz_corpus test"
        );
        assert!(
            std::fs::read_dir(corpus_dir(&target)).is_ok_and(|mut d| d.next().is_some()),
            "fuzz target {target} has no seed corpus"
        );
        found += 1;
    }
    assert_eq!(
        found,
        replayed.len(),
        "a replayed target has no fuzz target"
    );
}

/// Regression: an unknown path or method was answered with an empty body (axum's own fallbacks);
/// every answer now says what went wrong as `{"error"}` (checked inside `vss_requests`).
#[test]
fn unknown_paths_and_methods_answer_with_a_reason() {
    let case = VssCase {
        lease_check: true,
        requests: vec![
            raw(VssCall::Raw, 0, "/nope"),
            raw(VssCall::Raw, 0, "/vss/getObject"),
            raw(VssCall::Raw, 3, "/health"),
        ],
    };
    assert_eq!(fuzzing::vss_requests(&case.encode()), vec![404, 405, 405]);
}

const SERVER_TARGETS: [&str; 8] = [
    "open_head",
    "manifest",
    "snapshot",
    "restore_plan",
    "vss_responses",
    "vss_requests",
    "hub_messages",
    "store_api",
];

// ----------------------------------------------------------------------------------------------
// Seeds: built with the real encoders.

fn device(b: u8) -> DeviceId {
    DeviceId([b; 16])
}

fn held_manifest() -> Manifest {
    Manifest {
        state: LeaseState::Held,
        epoch: 3,
        last_seq: 42,
        last_hash: Hash([9; 32]),
        last_at_ms: 1_700_000_000_000,
        segments: 6,
        first_segment: 2,
        snapshots: vec![
            SnapshotRef {
                seq: 10,
                hash: Hash([1; 32]),
                at_ms: 1_699_999_000_000,
                chunks: 1,
                next_segment: 2,
            },
            SnapshotRef {
                seq: 30,
                hash: Hash([3; 32]),
                at_ms: 1_699_999_900_000,
                chunks: 3,
                next_segment: 4,
            },
        ],
        writes: 9,
        ..Manifest::new(device(0xa1))
    }
}

/// A state with live keys, a tombstone and a key in a sub-namespace.
fn sample_state() -> till_log::State {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("till.redb")).unwrap();
    log.put(Key::new("till", "payments", "p1"), b"pending".to_vec())
        .unwrap();
    log.put(Key::new("till", "payments", "p1"), b"paid".to_vec())
        .unwrap();
    log.put(Key::new("", "", "channel_manager"), vec![7; 300])
        .unwrap();
    log.put(Key::new("monitors", "", "m1"), vec![1; 120])
        .unwrap();
    log.delete(Key::new("monitors", "", "m1")).unwrap();
    log.put(Key::new("bdk", "", "changeset"), vec![2; 200])
        .unwrap();
    log.state().unwrap()
}

fn with_header(mut manifest_seed: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut manifest_seed[..32]);
    manifest_seed
}

fn plan_case(
    manifest: Manifest,
    target: Target,
    edit: impl FnOnce(&mut HashMap<String, i64>),
) -> Vec<u8> {
    let mut listing: HashMap<String, i64> = HashMap::new();
    listing.insert(names::HEAD.to_owned(), manifest.writes as i64);
    for o in manifest.first_segment..manifest.segments {
        listing.insert(names::segment(o), 1);
    }
    for s in &manifest.snapshots {
        for c in 0..s.chunks {
            listing.insert(names::snapshot(s.seq, c), 1);
        }
    }
    edit(&mut listing);
    PlanCase {
        manifest,
        listing,
        target,
    }
    .encode()
}

const STORE_ID: &str = "fuzz-store";

fn head_value(device_byte: u8, epoch: u64, state: LeaseState, writes: u64) -> Vec<u8> {
    let manifest = Manifest {
        state,
        epoch,
        writes,
        ..Manifest::new(device(device_byte))
    };
    vss_fuzzing::seal_head(&manifest)
}

fn put(items: Vec<KeyValue>, deletes: Vec<KeyValue>, global_version: Option<i64>) -> VssRequest {
    VssRequest::vss(
        VssCall::PutObjects,
        &PutObjectRequest {
            store_id: STORE_ID.into(),
            global_version,
            transaction_items: items,
            delete_items: deletes,
        },
    )
}

fn get(key: &str) -> VssRequest {
    VssRequest::vss(
        VssCall::GetObject,
        &GetObjectRequest {
            store_id: STORE_ID.into(),
            key: key.into(),
        },
    )
}

fn list(page_size: Option<i32>, page_token: Option<&str>) -> VssRequest {
    VssRequest::vss(
        VssCall::ListKeyVersions,
        &ListKeyVersionsRequest {
            store_id: STORE_ID.into(),
            key_prefix: None,
            page_size,
            page_token: page_token.map(Into::into),
        },
    )
}

fn raw(call: VssCall, method: u8, path: &str) -> VssRequest {
    VssRequest {
        call,
        auth: Auth::Owner,
        content_length: None,
        body: Vec::new(),
        path: path.as_bytes().to_vec(),
        method,
    }
}

fn with_auth(mut r: VssRequest, auth: Auth) -> VssRequest {
    r.auth = auth;
    r
}

/// The VSS seeds and the statuses they must get.
fn vss_seeds() -> Vec<(&'static str, VssCase, Vec<u16>)> {
    let held = |d, e, w| head_value(d, e, LeaseState::Held, w);
    let round = VssCase {
        lease_check: true,
        requests: vec![
            put(
                vec![
                    KeyValue::new("head", 0, held(0xa1, 1, 1)),
                    KeyValue::new("seg0", 0, vec![0x54, 0x49, 0x4c, 0x4c, 1, 1, 0, 0]),
                ],
                vec![],
                None,
            ),
            get("head"),
            list(Some(1), None),
            list(Some(1), Some("2")),
            get("vss_global_version"),
            put(
                vec![KeyValue::new("head", 1, held(0xa1, 1, 2))],
                vec![],
                Some(0),
            ),
            VssRequest::vss(
                VssCall::DeleteObject,
                &DeleteObjectRequest {
                    store_id: STORE_ID.into(),
                    key_value: Some(KeyValue::new("seg0", 1, Vec::new())),
                },
            ),
            get("seg0"),
            raw(VssCall::Lease, 0, STORE_ID),
        ],
    };
    let lease = VssCase {
        lease_check: true,
        requests: vec![
            put(
                vec![KeyValue::new("head", 0, held(0xa1, 1, 1))],
                vec![],
                None,
            ),
            // Another device at the same epoch.
            put(
                vec![KeyValue::new("head", 1, held(0xb2, 1, 2))],
                vec![],
                None,
            ),
            // Two heads with different leases in one put.
            put(
                vec![
                    KeyValue::new("h1", 0, held(0xa1, 2, 1)),
                    KeyValue::new("h2", 0, held(0xb2, 2, 1)),
                ],
                vec![],
                None,
            ),
            // An epoch above i64::MAX.
            put(
                vec![KeyValue::new("head", 1, held(0xa1, u64::MAX, 2))],
                vec![],
                None,
            ),
            // The lease magic in front of something that is not a header.
            put(
                vec![KeyValue::new("x", 0, b"TLSE not a header".to_vec())],
                vec![],
                None,
            ),
            // A released lease, then another device acquires at a higher epoch.
            put(
                vec![KeyValue::new(
                    "head",
                    1,
                    head_value(0xa1, 1, LeaseState::Released, 2),
                )],
                vec![],
                None,
            ),
            put(
                vec![KeyValue::new("head", 2, held(0xb2, 2, 3))],
                vec![],
                None,
            ),
            raw(VssCall::Lease, 0, STORE_ID),
        ],
    };
    let mut no_lease_check = lease.clone();
    no_lease_check.lease_check = false;
    let long_key = "k".repeat(601);
    let refusals = VssCase {
        lease_check: true,
        requests: vec![
            with_auth(get("head"), Auth::Missing),
            with_auth(get("head"), Auth::Cashier),
            with_auth(get("head"), Auth::Raw(b"Bearer till_zz".to_vec())),
            with_auth(get("head"), Auth::Raw(b"Basic dXNlcjpwYXNz".to_vec())),
            with_auth(get("head"), Auth::OtherStore),
            VssRequest {
                body: b"\xff\xff\xff not protobuf".to_vec(),
                ..get("head")
            },
            VssRequest {
                content_length: Some(1 << 30),
                ..get("head")
            },
            VssRequest {
                body: vec![0x0a; 3000],
                ..get("head")
            },
            put(
                vec![KeyValue::new("vss_global_version", 0, vec![])],
                vec![],
                None,
            ),
            put(vec![KeyValue::new(long_key, 0, vec![])], vec![], None),
            list(Some(-1), None),
            list(None, Some("x")),
            VssRequest::vss(
                VssCall::DeleteObject,
                &DeleteObjectRequest {
                    store_id: STORE_ID.into(),
                    key_value: None,
                },
            ),
            VssRequest::vss(
                VssCall::GetObject,
                &GetObjectRequest {
                    store_id: "s".repeat(121),
                    key: "k".into(),
                },
            ),
            put(vec![KeyValue::new("k", 0, vec![1])], vec![], Some(5)),
            put(vec![KeyValue::new("k", 3, vec![1])], vec![], None),
        ],
    };
    let routes = VssCase {
        lease_check: true,
        requests: vec![
            raw(VssCall::Health, 0, ""),
            raw(VssCall::HubUpgrade, 0, ""),
            raw(VssCall::Raw, 0, "/nope"),
            raw(VssCall::Raw, 0, "/vss/getObject"),
            raw(VssCall::Raw, 0, "/pos/shop"),
            raw(VssCall::Raw, 0, "/pos/assets/nope.js"),
            raw(VssCall::Raw, 0, "/api/v1/stores/%FF%FE/lease"),
            raw(VssCall::Lease, 0, "no-such-store"),
        ],
    };
    vec![
        (
            "seed-backup-round",
            round,
            vec![200, 200, 200, 200, 200, 200, 200, 404, 200],
        ),
        (
            "seed-lease",
            lease,
            vec![200, 409, 400, 400, 400, 200, 200, 200],
        ),
        (
            "seed-lease-unchecked",
            no_lease_check,
            // B's head is taken, so the release written at A's version conflicts.
            vec![200, 200, 400, 400, 400, 409, 200, 200],
        ),
        (
            "seed-refusals",
            refusals,
            vec![
                401, 403, 401, 401, 404, 400, 413, 413, 400, 400, 400, 400, 400, 400, 409, 409,
            ],
        ),
        (
            "seed-routes",
            routes,
            vec![200, 400, 404, 405, 200, 404, 400, 404],
        ),
    ]
}

fn hub(from: HubFrom, text: &str) -> HubMessage {
    HubMessage {
        from,
        text: text.as_bytes().to_vec(),
    }
}

/// The hub seeds and which of their messages the hub takes (`true`) or refuses.
fn hub_seeds() -> Vec<(&'static str, HubCase, Vec<bool>)> {
    let hello = json!({"type": "hello", "v": 1, "store": "shop", "device_id": "f2".repeat(16)});
    let session = HubCase {
        messages: vec![
            hub(HubFrom::Hello, &hello.to_string()),
            hub(
                HubFrom::MasterAnswer,
                r#"{"onchain_sat": 100000, "lightning_sat": 5000}"#,
            ),
            hub(
                HubFrom::Follower,
                r#"{"type":"command","v":1,"id":"c1","command":{"kind":"balances"}}"#,
            ),
            hub(
                HubFrom::Master,
                &json!({"type": "invoice_update", "v": 1, "id": "u1", "payment_hash": fuzzing::INVOICE_ID, "status": "paid", "amount_msat": 1_000_000}).to_string(),
            ),
            hub(
                HubFrom::Master,
                r#"{"type":"result","v":1,"id":"srv-unknown","ok":true,"value":{}}"#,
            ),
            hub(
                HubFrom::Master,
                r#"{"type":"result","v":1,"id":"srv-unknown","ok":false,"error":"no"}"#,
            ),
            hub(HubFrom::Follower, r#"{"type":"ping","v":1}"#),
            hub(
                HubFrom::Stranger,
                r#"{"type":"command","v":1,"id":"c2","command":{"kind":"payments"}}"#,
            ),
        ],
    };
    let refusals = HubCase {
        messages: vec![
            hub(HubFrom::Hello, r#"{"type":"command","v":1}"#),
            hub(HubFrom::Hello, r#"{"type":"hello","v":2,"store":"shop"}"#),
            hub(
                HubFrom::Hello,
                r#"{"type":"hello","v":1,"store":"shop","device_id":"F2F2F2F2F2F2F2F2F2F2F2F2F2F2F2F2"}"#,
            ),
            hub(HubFrom::Hello, r#"{"type":"hello","v":1,"store":"shop"}"#),
            hub(HubFrom::Follower, "not json"),
            hub(HubFrom::Follower, r#"{"v":1}"#),
            hub(HubFrom::Follower, r#"{"type":"hello","v":1}"#),
            hub(
                HubFrom::Follower,
                r#"{"type":"command","v":1,"command":{}}"#,
            ),
            hub(HubFrom::Follower, r#"{"type":"command","v":1,"id":"c3"}"#),
            hub(HubFrom::Master, r#"{"type":"result","v":1,"ok":true}"#),
            hub(
                HubFrom::Master,
                r#"{"type":"invoice_update","v":1,"id":"u2"}"#,
            ),
            hub(HubFrom::Master, r#"{"type":"result","v":"1","id":"x"}"#),
            hub(HubFrom::Master, r#"[1,2,3]"#),
        ],
    };
    vec![
        (
            "seed-session",
            session,
            vec![true, true, true, true, true, true, true],
        ),
        ("seed-refusals", refusals, vec![false; 13]),
    ]
}

fn api(call: ApiCall, body: serde_json::Value) -> ApiRequest {
    ApiRequest::new(call, body)
}

/// Invoices whose BOLT11 the master gave too long for a QR code, or not letters and digits, then
/// one that is fine.
fn master_answers() -> ApiCase {
    let create = |hash: &str, bolt11: &str| ApiRequest {
        answer: json!({"payment_hash": hash, "bolt11": bolt11})
            .to_string()
            .into_bytes(),
        ..api(ApiCall::CreateInvoice, json!({"amount_sat": 5}))
    };
    let qr = |hash: &str| ApiRequest {
        id: hash.as_bytes().to_vec(),
        ..api(ApiCall::Qr, serde_json::Value::Null)
    };
    let (a, b, c) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
    ApiCase {
        requests: vec![
            create(&a, &format!("lnbcrt{}", "q".repeat(4000))),
            qr(&a),
            create(&b, "lnbcrt 10u1 fake"),
            create(&c, &format!("lnbcrt{}", "q".repeat(2000))),
            qr(&c),
        ],
    }
}

/// Regression: a master device's BOLT11 too long for a QR code was stored and its `qr.svg`
/// answered 500; the master's answer is now refused with 502 and nothing is stored.
#[test]
fn a_bolt11_too_long_for_a_qr_code_is_refused() {
    assert_eq!(
        fuzzing::store_api(&master_answers().encode()),
        vec![502, 404, 502, 201, 200]
    );
}

/// The store API seeds and the statuses they must get.
fn api_seeds() -> Vec<(&'static str, ApiCase, Vec<u16>)> {
    let null = serde_json::Value::Null;
    let invoices = ApiCase {
        requests: vec![
            api(
                ApiCall::CreateInvoice,
                json!({"amount_sat": 1000, "description": "coffee", "expiry_secs": 600}),
            ),
            api(ApiCall::GetInvoice, null.clone()),
            api(ApiCall::Qr, null.clone()),
            api(ApiCall::ListInvoices, null.clone()),
            api(ApiCall::Events, null.clone()),
            ApiRequest {
                auth: Auth::Cashier,
                ..api(ApiCall::CreateInvoice, json!({"amount_sat": 21}))
            },
            ApiRequest {
                auth: Auth::Cashier,
                ..api(ApiCall::ListInvoices, null.clone())
            },
        ],
    };
    let commands = ApiCase {
        requests: vec![
            api(ApiCall::Pay, json!({"bolt11": "lnbcrt1fuzz"})),
            api(
                ApiCall::Refund,
                json!({"payment_id": fuzzing::INVOICE_ID, "bolt11": "lnbcrt1fuzz", "amount_msat": 1000}),
            ),
            ApiRequest {
                answer: br#"{"onchain_sat": 1, "lightning_sat": 2}"#.to_vec(),
                ..api(ApiCall::Balances, null.clone())
            },
            api(ApiCall::Payments, null.clone()),
            ApiRequest {
                auth: Auth::Cashier,
                ..api(ApiCall::Pay, json!({"bolt11": "lnbcrt1fuzz"}))
            },
            ApiRequest {
                auth: Auth::Missing,
                ..api(
                    ApiCall::Redeem,
                    json!({"code": fuzzing::INVITE_CODE, "device_id": "ab".repeat(16)}),
                )
            },
            ApiRequest {
                auth: Auth::Missing,
                ..api(
                    ApiCall::Redeem,
                    json!({"code": format!("http://till.invalid/invite/{}", fuzzing::INVITE_CODE), "device_id": "ab".repeat(16)}),
                )
            },
        ],
    };
    let refusals = ApiCase {
        requests: vec![
            api(ApiCall::CreateInvoice, json!({"amount_sat": 0})),
            ApiRequest {
                body: b"{not json".to_vec(),
                ..api(ApiCall::CreateInvoice, null.clone())
            },
            api(ApiCall::CreateInvoice, json!([1, 2])),
            api(ApiCall::CreateInvoice, json!({"amount_sat": "1000"})),
            api(
                ApiCall::CreateInvoice,
                json!({"amount_sat": 1, "description": "d".repeat(640)}),
            ),
            api(
                ApiCall::CreateInvoice,
                json!({"amount_sat": 1, "expiry_secs": 0}),
            ),
            ApiRequest {
                answer: br#"{"payment_hash": "00"}"#.to_vec(),
                ..api(ApiCall::CreateInvoice, json!({"amount_sat": 1}))
            },
            ApiRequest {
                answer: b"the node is not running".to_vec(),
                ..api(ApiCall::CreateInvoice, json!({"amount_sat": 1}))
            },
            ApiRequest {
                id: b"no-such-invoice".to_vec(),
                ..api(ApiCall::GetInvoice, null.clone())
            },
            ApiRequest {
                auth: Auth::OtherStore,
                ..api(ApiCall::ListInvoices, null.clone())
            },
            ApiRequest {
                auth: Auth::Missing,
                ..api(ApiCall::ListInvoices, null.clone())
            },
            ApiRequest {
                store: b"nope".to_vec(),
                ..api(ApiCall::Balances, null.clone())
            },
            ApiRequest {
                auth: Auth::Missing,
                ..api(
                    ApiCall::Redeem,
                    json!({"code": "unknown", "device_id": "ab".repeat(16)}),
                )
            },
            ApiRequest {
                auth: Auth::Missing,
                ..api(
                    ApiCall::Redeem,
                    json!({"code": fuzzing::INVITE_CODE, "device_id": "xyz"}),
                )
            },
            api(ApiCall::Pay, json!({"amount_msat": 5})),
            api(ApiCall::Refund, json!({"bolt11": "lnbcrt1fuzz"})),
            ApiRequest {
                store: b"/api/v1/stores/shop/nothing".to_vec(),
                ..api(ApiCall::Raw, null.clone())
            },
        ],
    };
    vec![
        (
            "seed-master-answers",
            master_answers(),
            vec![502, 404, 502, 201, 200],
        ),
        (
            "seed-invoices",
            invoices,
            vec![201, 200, 200, 200, 200, 201, 200],
        ),
        (
            "seed-commands",
            commands,
            vec![200, 200, 200, 200, 403, 200, 410],
        ),
        (
            "seed-refusals",
            refusals,
            vec![
                400, 400, 400, 400, 400, 400, 502, 502, 404, 403, 401, 403, 404, 400, 400, 400, 404,
            ],
        ),
    ]
}

/// Every seed of the backup-format targets: (target, file name, bytes).
fn format_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let held = held_manifest();
    let new = Manifest::new(device(0x11));
    let released = Manifest {
        state: LeaseState::Released,
        epoch: 7,
        writes: 12,
        ..held.clone()
    };
    let head = vss_fuzzing::seal_head(&held);
    let mut flipped = head.clone();
    let at = flipped.len() - 5;
    flipped[at] ^= 0x40;
    let state = sample_state();
    let snapshot = vss_fuzzing::snapshot_seed(&state, 1 << 16);
    let mut wrong_seq = snapshot.clone();
    wrong_seq[1] ^= 1;
    let mut manifest_v2 = vss_fuzzing::manifest_seed(&held);
    manifest_v2[32] = 2;
    let big = u64::MAX - 3;
    vec![
        ("open_head", "seed-head-new", vss_fuzzing::seal_head(&new)),
        ("open_head", "seed-head-held", head.clone()),
        (
            "open_head",
            "seed-head-released",
            vss_fuzzing::seal_head(&released),
        ),
        ("open_head", "seed-head-truncated", head[..80].to_vec()),
        ("open_head", "seed-head-flipped", flipped),
        ("open_head", "seed-head-only-header", head[..32].to_vec()),
        (
            "manifest",
            "seed-manifest-new",
            vss_fuzzing::manifest_seed(&new),
        ),
        (
            "manifest",
            "seed-manifest-held",
            vss_fuzzing::manifest_seed(&held),
        ),
        (
            "manifest",
            "seed-manifest-header-disagrees",
            with_header(vss_fuzzing::manifest_seed(&held), |h| h[24] ^= 1),
        ),
        (
            "manifest",
            "seed-manifest-bad-state",
            with_header(vss_fuzzing::manifest_seed(&held), |h| h[5] = 3),
        ),
        ("manifest", "seed-manifest-format-2", manifest_v2),
        (
            "manifest",
            "seed-manifest-truncated",
            vss_fuzzing::manifest_seed(&held)[..60].to_vec(),
        ),
        ("snapshot", "seed-snapshot-one-chunk", snapshot.clone()),
        (
            "snapshot",
            "seed-snapshot-three-chunks",
            vss_fuzzing::snapshot_seed(&state, 300),
        ),
        (
            "snapshot",
            "seed-snapshot-plain",
            vss_fuzzing::snapshot_plain_seed(&state, 300),
        ),
        ("snapshot", "seed-snapshot-wrong-seq", wrong_seq),
        (
            "snapshot",
            "seed-snapshot-truncated",
            snapshot[..snapshot.len() - 9].to_vec(),
        ),
        (
            "restore_plan",
            "seed-plan-latest",
            plan_case(held.clone(), Target::Latest, |_| {}),
        ),
        (
            "restore_plan",
            "seed-plan-seq",
            plan_case(held.clone(), Target::Seq(35), |_| {}),
        ),
        (
            "restore_plan",
            "seed-plan-time",
            plan_case(held.clone(), Target::Time(1_699_999_500_000), |_| {}),
        ),
        (
            "restore_plan",
            "seed-plan-gap",
            plan_case(held.clone(), Target::Latest, |l| {
                l.remove(&names::segment(4));
            }),
        ),
        (
            "restore_plan",
            "seed-plan-beyond-head",
            plan_case(held.clone(), Target::Latest, |l| {
                l.insert(names::segment(7), 1);
            }),
        ),
        (
            "restore_plan",
            "seed-plan-overwritten",
            plan_case(held.clone(), Target::Latest, |l| {
                l.insert(names::snapshot(30, 1), 2);
            }),
        ),
        (
            "restore_plan",
            "seed-plan-rolled-back",
            plan_case(held.clone(), Target::Latest, |l| {
                l.insert(names::HEAD.to_owned(), 8);
            }),
        ),
        (
            "restore_plan",
            "seed-plan-no-snapshot",
            plan_case(
                Manifest {
                    first_segment: 0,
                    snapshots: Vec::new(),
                    ..held.clone()
                },
                Target::Seq(5),
                |l| {
                    l.insert(names::segment(0), 1);
                    l.insert(names::segment(1), 1);
                },
            ),
        ),
        (
            "restore_plan",
            "seed-plan-segments-at-the-limit",
            plan_case(
                Manifest {
                    segments: big,
                    first_segment: big - 1,
                    snapshots: vec![SnapshotRef {
                        seq: 5,
                        hash: Hash::GENESIS,
                        at_ms: 0,
                        chunks: 0,
                        next_segment: big - 1,
                    }],
                    ..held.clone()
                },
                Target::Latest,
                |_| {},
            ),
        ),
    ]
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = format_seeds()
        .into_iter()
        .map(|(t, n, b)| (t, n.to_owned(), b))
        .collect();
    for (name, bytes) in vss_fuzzing::vss_response_seeds() {
        out.push(("vss_responses", name, bytes));
    }
    for (name, case, _) in vss_seeds() {
        out.push(("vss_requests", name.to_owned(), case.encode()));
    }
    for (name, case, _) in hub_seeds() {
        out.push(("hub_messages", name.to_owned(), case.encode()));
    }
    for (name, case, _) in api_seeds() {
        out.push(("store_api", name.to_owned(), case.encode()));
    }
    out
}

/// Writes the seeds missing from `fuzz/corpus/<target>/` (heads and snapshots are sealed with a
/// random nonce, so rewriting an existing seed would only churn it; delete one to rewrite it).
#[test]
#[ignore = "writes the seed corpora; run with --ignored write_seeds"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
}

/// The seeds reach what they are named for (checked on fresh seeds, as heads are sealed with a
/// random nonce), and the committed ones decode as the fresh ones do.
#[test]
fn seeds_are_genuine() {
    let (keys, store) = {
        let r = vss_fuzzing::fuzz_remote();
        (r.keys().clone(), r.store_id().to_owned())
    };
    let head_name = vss_fuzzing::fuzz_remote().name(names::HEAD);
    let committed = |target: &str, name: &str| {
        std::fs::read(corpus_dir(target).join(name))
            .unwrap_or_else(|e| panic!("{target}/{name}: {e}"))
    };
    let opened = Manifest::open(
        &committed("open_head", "seed-head-held"),
        keys.seal_key(),
        &store,
        &head_name,
    )
    .unwrap();
    assert_eq!(opened, held_manifest());
    for bad in [
        "seed-head-truncated",
        "seed-head-flipped",
        "seed-head-only-header",
    ] {
        assert!(
            Manifest::open(
                &committed("open_head", bad),
                keys.seal_key(),
                &store,
                &head_name
            )
            .is_err(),
            "{bad}"
        );
    }
    // Plans: the genuine ones plan, the broken ones are refused.
    for (name, ok) in [
        ("seed-plan-latest", true),
        ("seed-plan-seq", true),
        ("seed-plan-time", true),
        ("seed-plan-no-snapshot", true),
        ("seed-plan-gap", false),
        ("seed-plan-beyond-head", false),
        ("seed-plan-overwritten", false),
        ("seed-plan-rolled-back", false),
    ] {
        let case = PlanCase::decode(&committed("restore_plan", name));
        let planned = till_vss::replica::plan(
            &case.manifest,
            &case.listing,
            |n: &str| n.to_owned(),
            case.target,
        );
        assert_eq!(planned.is_ok(), ok, "{name}: {planned:?}");
    }
    // Client answers: the committed seeds are the fresh ones, and each decodes as its name says.
    for (name, bytes) in vss_fuzzing::vss_response_seeds() {
        assert_eq!(committed("vss_responses", &name), bytes, "committed {name}");
    }
    let answer = |name: &str| vss_fuzzing::vss_response(&committed("vss_responses", name));
    for ok in [
        "get-object",
        "get-object-no-value",
        "put-objects",
        "list-page",
        "list-as-put",
    ] {
        assert!(answer(&format!("seed-{ok}")).is_ok(), "{ok}");
    }
    for (name, transient) in [
        ("seed-get-object-truncated", false),
        ("seed-proxy-empty-502", true),
        ("seed-proxy-html-503", true),
        ("seed-proxy-html-404", false),
    ] {
        let e = answer(name).unwrap_err();
        assert!(
            matches!(e, till_vss::Error::UnexpectedResponse { .. })
                && e.is_transient() == transient,
            "{name}: {e}"
        );
    }
    for status in [409, 500, 403, 413] {
        let e = answer(&format!("seed-error-conflict-{status}")).unwrap_err();
        assert!(matches!(e, till_vss::Error::Conflict { .. }), "{e}");
    }
    for status in [500, 403, 413] {
        let e = answer(&format!("seed-error-internal-{status}")).unwrap_err();
        assert!(
            matches!(e, till_vss::Error::Internal { .. }) && e.is_transient(),
            "{e}"
        );
        let e = answer(&format!("seed-error-unknown-{status}")).unwrap_err();
        assert!(
            matches!(e, till_vss::Error::UnknownErrorCode { code: 0, .. }),
            "{e}"
        );
    }
    let e = answer("seed-error-code-42-418").unwrap_err();
    assert!(
        matches!(e, till_vss::Error::UnknownErrorCode { code: 42, .. }),
        "{e}"
    );
    let e = answer("seed-error-long-message").unwrap_err().to_string();
    assert!(e.contains("(cut; 3400 bytes in all)"), "{e}");
    let e = answer("seed-error-escape-sequences")
        .unwrap_err()
        .to_string();
    assert!(e.ends_with(r"bad\u{1b}[2J\u{d}\u{a}key"), "{e}");
    for (name, case, statuses) in vss_seeds() {
        assert_eq!(
            fuzzing::vss_requests(&case.encode()),
            statuses,
            "vss {name}"
        );
        assert_eq!(
            fuzzing::vss_requests(&committed("vss_requests", name)),
            statuses,
            "committed vss {name}"
        );
    }
    for (name, case, taken) in hub_seeds() {
        let outcomes = fuzzing::hub_messages(&case.encode());
        let got: Vec<bool> = outcomes.iter().map(Option::is_none).collect();
        assert_eq!(got, taken, "hub {name}: {outcomes:?}");
    }
    for (name, case, statuses) in api_seeds() {
        assert_eq!(
            fuzzing::store_api(&case.encode()),
            statuses,
            "store api {name}"
        );
        assert_eq!(
            fuzzing::store_api(&committed("store_api", name)),
            statuses,
            "committed store api {name}"
        );
    }
}
