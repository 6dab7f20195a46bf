//! The VSS conformance suite, written once and run against every server backend and through every
//! client (Till's `till-vss` and ldk-node's `vss-client-ng`). It covers every behaviour the reference
//! server's own suite checks (see `VSS-PROTOCOL.md`) plus user isolation, authentication, body and
//! item limits. Each case takes a fresh [`Env`]: a real `till-server` process with two users.

use crate::server::{StoreArg, TillServer, add_user, server_binary};
use async_trait::async_trait;
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;
use till_vss::proto::{ErrorCode, ErrorResponse};
use till_vss::{KeyValue, ListKeyVersionsRequest, ListKeyVersionsResponse, PutObjectRequest};

/// The body limit the test servers run with, so the 413 case is cheap.
pub const TEST_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A protocol outcome, by error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    Conflict,
    NoSuchKey,
    InvalidRequest,
    Auth,
    Internal,
    Other(String),
}

/// The four calls, whatever client makes them.
#[async_trait]
pub trait VssApi: Send + Sync {
    async fn get(&self, store: &str, key: &str) -> Result<KeyValue, Code>;
    async fn put(&self, request: PutObjectRequest) -> Result<(), Code>;
    async fn delete(&self, store: &str, key_value: KeyValue) -> Result<(), Code>;
    async fn list(&self, request: ListKeyVersionsRequest) -> Result<ListKeyVersionsResponse, Code>;
}

/// Till's own client, with retries off so every answer is the server's first.
pub struct TillVssApi(pub till_vss::VssClient);

impl TillVssApi {
    pub fn new(base_url: &str, token: &str) -> Self {
        let config = till_vss::ClientConfig {
            retry: till_vss::RetryPolicy::never(),
            ..Default::default()
        };
        let auth = till_vss::BearerToken::new(token).expect("token is a valid header");
        TillVssApi(till_vss::VssClient::new(base_url, auth, config).expect("client builds"))
    }
}

fn till_code(e: till_vss::Error) -> Code {
    match e {
        till_vss::Error::Conflict { .. } => Code::Conflict,
        till_vss::Error::NoSuchKey { .. } => Code::NoSuchKey,
        till_vss::Error::InvalidRequest { .. } => Code::InvalidRequest,
        till_vss::Error::Auth { .. } => Code::Auth,
        till_vss::Error::Internal { .. } => Code::Internal,
        other => Code::Other(other.to_string()),
    }
}

#[async_trait]
impl VssApi for TillVssApi {
    async fn get(&self, store: &str, key: &str) -> Result<KeyValue, Code> {
        self.0.get_object(store, key).await.map_err(till_code)
    }
    async fn put(&self, request: PutObjectRequest) -> Result<(), Code> {
        self.0.put_objects(&request).await.map_err(till_code)
    }
    async fn delete(&self, store: &str, kv: KeyValue) -> Result<(), Code> {
        self.0
            .delete_object(store, &kv.key, kv.version)
            .await
            .map_err(till_code)
    }
    async fn list(&self, request: ListKeyVersionsRequest) -> Result<ListKeyVersionsResponse, Code> {
        self.0.list_key_versions(&request).await.map_err(till_code)
    }
}

/// ldk-node's client, `vss-client-ng`, unchanged, with a fixed bearer header.
pub struct VssClientNgApi(
    vss_client_ng::client::VssClient<
        vss_client_ng::util::retry::MaxAttemptsRetryPolicy<
            vss_client_ng::util::retry::ExponentialBackoffRetryPolicy<
                vss_client_ng::error::VssError,
            >,
        >,
    >,
);

impl VssClientNgApi {
    pub fn new(base_url: &str, token: &str) -> Self {
        use vss_client_ng::util::retry::{ExponentialBackoffRetryPolicy, RetryPolicy};
        let policy = ExponentialBackoffRetryPolicy::new(std::time::Duration::from_millis(10))
            .with_max_attempts(1);
        let headers = std::collections::HashMap::from([(
            "Authorization".to_owned(),
            format!("Bearer {token}"),
        )]);
        let provider = Arc::new(vss_client_ng::headers::FixedHeaders::new(headers));
        VssClientNgApi(vss_client_ng::client::VssClient::new_with_headers(
            base_url.to_owned(),
            policy,
            provider,
        ))
    }
}

fn ng_code(e: vss_client_ng::error::VssError) -> Code {
    use vss_client_ng::error::VssError as E;
    match e {
        E::ConflictError(_) => Code::Conflict,
        E::NoSuchKeyError(_) => Code::NoSuchKey,
        E::InvalidRequestError(_) => Code::InvalidRequest,
        E::AuthError(_) => Code::Auth,
        E::InternalServerError(_) => Code::Internal,
        other => Code::Other(other.to_string()),
    }
}

fn to_ng(kv: KeyValue) -> vss_client_ng::types::KeyValue {
    vss_client_ng::types::KeyValue {
        key: kv.key,
        version: kv.version,
        value: kv.value,
    }
}

fn from_ng(kv: vss_client_ng::types::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        version: kv.version,
        value: kv.value,
    }
}

#[async_trait]
impl VssApi for VssClientNgApi {
    async fn get(&self, store: &str, key: &str) -> Result<KeyValue, Code> {
        let request = vss_client_ng::types::GetObjectRequest {
            store_id: store.into(),
            key: key.into(),
        };
        let response = self.0.get_object(&request).await.map_err(ng_code)?;
        Ok(from_ng(
            response
                .value
                .expect("vss-client-ng checks the value is present"),
        ))
    }
    async fn put(&self, r: PutObjectRequest) -> Result<(), Code> {
        let request = vss_client_ng::types::PutObjectRequest {
            store_id: r.store_id,
            global_version: r.global_version,
            transaction_items: r.transaction_items.into_iter().map(to_ng).collect(),
            delete_items: r.delete_items.into_iter().map(to_ng).collect(),
        };
        self.0
            .put_object(&request)
            .await
            .map_err(ng_code)
            .map(|_| ())
    }
    async fn delete(&self, store: &str, kv: KeyValue) -> Result<(), Code> {
        let request = vss_client_ng::types::DeleteObjectRequest {
            store_id: store.into(),
            key_value: Some(to_ng(kv)),
        };
        self.0
            .delete_object(&request)
            .await
            .map_err(ng_code)
            .map(|_| ())
    }
    async fn list(&self, r: ListKeyVersionsRequest) -> Result<ListKeyVersionsResponse, Code> {
        let request = vss_client_ng::types::ListKeyVersionsRequest {
            store_id: r.store_id,
            key_prefix: r.key_prefix,
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let response = self.0.list_key_versions(&request).await.map_err(ng_code)?;
        Ok(ListKeyVersionsResponse {
            key_versions: response.key_versions.into_iter().map(from_ng).collect(),
            next_page_token: response.next_page_token,
            global_version: response.global_version,
        })
    }
}

/// Which server backend a run uses.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Redb,
    Postgres,
}

/// Which client a run uses.
#[derive(Clone, Copy, Debug)]
pub enum Client {
    TillVss,
    VssClientNg,
}

/// One case's world: a fresh server with users alice and bob.
pub struct Env {
    pub server: TillServer,
    pub alice_token: String,
    pub alice: Box<dyn VssApi>,
    pub bob: Box<dyn VssApi>,
    /// The store id the cases use (the reference suite uses random, possibly empty ones).
    pub store: String,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `None` only when PostgreSQL is unavailable outside CI.
    pub async fn start(backend: Backend, client: Client) -> Option<Env> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = match backend {
            Backend::Redb => StoreArg::DataDir(dir.path().join("data")),
            Backend::Postgres => StoreArg::DatabaseUrl(crate::postgres::fresh_database()?),
        };
        let bin = server_binary();
        let alice_token = add_user(&bin, &store, "alice");
        let bob_token = add_user(&bin, &store, "bob");
        let max = TEST_MAX_BODY_BYTES.to_string();
        let server = TillServer::start(&bin, store, &["--max-body-bytes", &max]);
        let make = |token: &str| -> Box<dyn VssApi> {
            match client {
                Client::TillVss => Box::new(TillVssApi::new(&server.vss_url(), token)),
                Client::VssClientNg => Box::new(VssClientNgApi::new(&server.vss_url(), token)),
            }
        };
        let (alice, bob) = (make(&alice_token), make(&bob_token));
        let store = format!("s{}", rand::random::<u16>() % 3).replace("s0", "");
        Some(Env {
            server,
            alice_token,
            alice,
            bob,
            store,
            _dir: dir,
        })
    }

    async fn put(&self, global: Option<i64>, items: Vec<KeyValue>) -> Result<(), Code> {
        self.put_delete(global, items, vec![]).await
    }

    async fn put_delete(
        &self,
        global: Option<i64>,
        items: Vec<KeyValue>,
        deletes: Vec<KeyValue>,
    ) -> Result<(), Code> {
        self.alice
            .put(PutObjectRequest {
                store_id: self.store.clone(),
                global_version: global,
                transaction_items: items,
                delete_items: deletes,
            })
            .await
    }

    async fn get(&self, key: &str) -> Result<KeyValue, Code> {
        self.alice.get(&self.store, key).await
    }

    async fn list(
        &self,
        token: Option<String>,
        size: Option<i32>,
        prefix: Option<&str>,
    ) -> ListKeyVersionsResponse {
        self.alice
            .list(ListKeyVersionsRequest {
                store_id: self.store.clone(),
                key_prefix: prefix.map(str::to_owned),
                page_size: size,
                page_token: token,
            })
            .await
            .expect("list succeeds")
    }

    /// Follows every page; asserts the global version is on the first page only.
    async fn list_all(&self, size: Option<i32>, prefix: Option<&str>) -> (Vec<KeyValue>, i64) {
        let mut token = None;
        let mut all = Vec::new();
        let mut global = None;
        loop {
            let first = token.is_none();
            let page = self.list(token.take(), size, prefix).await;
            if first {
                global = Some(
                    page.global_version
                        .expect("the first page carries the global version"),
                );
            } else {
                assert_eq!(
                    page.global_version, None,
                    "only the first page carries the global version"
                );
            }
            if let Some(size) = size {
                assert!(page.key_versions.len() <= size as usize);
            }
            assert!(page.key_versions.len() <= 100, "page size is capped at 100");
            all.extend(page.key_versions);
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        (all, global.unwrap_or(0))
    }

    /// A raw POST with an optional Authorization value: (status, decoded error).
    pub async fn raw(
        &self,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Option<ErrorResponse>) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/{path}", self.server.vss_url()))
            .body(body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body read");
        (
            status,
            if status == 200 {
                None
            } else {
                ErrorResponse::decode(&bytes[..]).ok()
            },
        )
    }
}

pub fn kv(key: &str, value: &str, version: i64) -> KeyValue {
    KeyValue::new(key, version, value.as_bytes().to_vec())
}

fn assert_kv(found: &KeyValue, key: &str, version: i64, value: &str) {
    assert_eq!(
        (found.key.as_str(), found.version, found.value.as_slice()),
        (key, version, value.as_bytes())
    );
}

async fn global(env: &Env) -> i64 {
    env.get("vss_global_version")
        .await
        .expect("global version readable")
        .version
}

// ---- the reference server's cases ----

pub async fn put_single_object(env: &Env) {
    env.put(Some(0), vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.put(Some(1), vec![kv("k1", "k1v2", 1)]).await.unwrap();
    env.put(Some(2), vec![kv("k2", "k2v1", -1)]).await.unwrap();
    env.put(Some(3), vec![kv("k2", "k2v2", -1)]).await.unwrap();
    env.put(Some(4), vec![kv("k2", "k2v3", -1)]).await.unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 2, "k1v2");
    assert_kv(&env.get("k2").await.unwrap(), "k2", 1, "k2v3");
    assert_eq!(global(env).await, 5);
}

pub async fn put_multi_object(env: &Env) {
    env.put(Some(0), vec![kv("k1", "k1v1", 0), kv("k2", "k2v1", 0)])
        .await
        .unwrap();
    env.put(Some(1), vec![kv("k1", "k1v2", 1), kv("k2", "k2v2", 1)])
        .await
        .unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 2, "k1v2");
    assert_kv(&env.get("k2").await.unwrap(), "k2", 2, "k2v2");
    assert_eq!(global(env).await, 2);
}

pub async fn put_conflict_on_stale_key_version(env: &Env) {
    env.put(Some(0), vec![kv("k1", "k1v1", 0)]).await.unwrap();
    assert_eq!(
        env.put(Some(1), vec![kv("k1", "k1v2", 0)]).await,
        Err(Code::Conflict)
    );
    assert_kv(&env.get("k1").await.unwrap(), "k1", 1, "k1v1");
    assert_eq!(
        global(env).await,
        1,
        "a refused put leaves the global version alone"
    );
    // Updating a missing key at N > 0 is a conflict too.
    assert_eq!(
        env.put(None, vec![kv("nope", "v", 3)]).await,
        Err(Code::Conflict)
    );
    assert_eq!(env.get("nope").await, Err(Code::NoSuchKey));
}

pub async fn put_conflict_on_one_stale_key_of_many(env: &Env) {
    env.put(None, vec![kv("k1", "k1v1", 0), kv("k2", "k2v1", 0)])
        .await
        .unwrap();
    assert_eq!(
        env.put(None, vec![kv("k1", "k1v2", 0), kv("k2", "k2v2", 1)])
            .await,
        Err(Code::Conflict)
    );
    assert_kv(&env.get("k1").await.unwrap(), "k1", 1, "k1v1");
    assert_kv(&env.get("k2").await.unwrap(), "k2", 1, "k2v1");
    // The stale item last: the earlier, valid ones must not land either.
    assert_eq!(
        env.put(
            None,
            vec![
                kv("k3", "k3v1", 0),
                kv("k2", "k2v2", 1),
                kv("k1", "k1v2", 7)
            ]
        )
        .await,
        Err(Code::Conflict)
    );
    assert_eq!(env.get("k3").await, Err(Code::NoSuchKey));
    assert_kv(&env.get("k2").await.unwrap(), "k2", 1, "k2v1");
}

pub async fn put_conflict_on_stale_global_version(env: &Env) {
    env.put(Some(0), vec![kv("k1", "k1v1", 0)]).await.unwrap();
    assert_eq!(
        env.put(Some(0), vec![kv("k1", "k1v2", 1)]).await,
        Err(Code::Conflict)
    );
    assert_kv(&env.get("k1").await.unwrap(), "k1", 1, "k1v1");
    assert_eq!(
        env.put(Some(5), vec![kv("k1", "k1v2", 1)]).await,
        Err(Code::Conflict)
    );
    assert_eq!(global(env).await, 1);
}

pub async fn put_without_global_version(env: &Env) {
    env.put(None, vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.put(None, vec![kv("k1", "k1v2", 1)]).await.unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 2, "k1v2");
    assert_eq!(global(env).await, 0);
}

pub async fn put_and_delete_are_atomic(env: &Env) {
    env.put(None, vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.put_delete(None, vec![kv("k2", "k2v1", 0)], vec![kv("k1", "", 1)])
        .await
        .unwrap();
    assert_kv(&env.get("k2").await.unwrap(), "k2", 1, "k2v1");
    assert_eq!(env.get("k1").await, Err(Code::NoSuchKey));
    // A delete at the wrong version fails the put with it.
    assert_eq!(
        env.put_delete(None, vec![kv("k3", "k3v1", 0)], vec![kv("k2", "", 3)])
            .await,
        Err(Code::Conflict)
    );
    assert_eq!(env.get("k3").await, Err(Code::NoSuchKey));
    env.get("k2").await.unwrap();
    // A delete of a missing key fails it too.
    assert_eq!(
        env.put_delete(None, vec![kv("k3", "k3v1", 0)], vec![kv("gone", "", -1)])
            .await,
        Err(Code::Conflict)
    );
    assert_eq!(env.get("k3").await, Err(Code::NoSuchKey));
    // A bad put item fails the delete with it.
    assert_eq!(
        env.put_delete(None, vec![kv("k3", "k3v1", 1)], vec![kv("k2", "", 1)])
            .await,
        Err(Code::Conflict)
    );
    env.get("k2").await.unwrap();
    // A bad global version fails both.
    assert_eq!(
        env.put_delete(Some(2), vec![kv("k3", "k3v1", 0)], vec![kv("k2", "", 1)])
            .await,
        Err(Code::Conflict)
    );
    assert_eq!(env.get("k3").await, Err(Code::NoSuchKey));
    env.get("k2").await.unwrap();
    assert_eq!(global(env).await, 0);
}

pub async fn delete_existing_key(env: &Env) {
    env.put(None, vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.alice.delete(&env.store, kv("k1", "", 1)).await.unwrap();
    assert_eq!(env.get("k1").await, Err(Code::NoSuchKey));
    env.put(None, vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.put(None, vec![kv("k1", "k1v2", 1)]).await.unwrap();
    // At another version: succeeds, deletes nothing.
    env.alice.delete(&env.store, kv("k1", "", 1)).await.unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 2, "k1v2");
    env.alice
        .delete(&env.store, kv("k1", "", -1))
        .await
        .unwrap();
    assert_eq!(env.get("k1").await, Err(Code::NoSuchKey));
    // Re-created after a delete, a key starts at version 1 again.
    env.put(None, vec![kv("k1", "again", 0)]).await.unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 1, "again");
}

pub async fn delete_missing_key(env: &Env) {
    env.alice
        .delete(&env.store, kv("non_existent_key", "", 0))
        .await
        .unwrap();
    env.alice
        .delete(&env.store, kv("non_existent_key", "", -1))
        .await
        .unwrap();
}

pub async fn delete_is_idempotent(env: &Env) {
    env.put(None, vec![kv("k1", "k1v1", 0)]).await.unwrap();
    env.alice.delete(&env.store, kv("k1", "", 1)).await.unwrap();
    env.alice.delete(&env.store, kv("k1", "", 1)).await.unwrap();
    assert_eq!(env.get("k1").await, Err(Code::NoSuchKey));
}

pub async fn get_missing_key_is_no_such_key(env: &Env) {
    assert_eq!(env.get("non_existent_key").await, Err(Code::NoSuchKey));
    let (status, error) = env
        .raw(
            "getObject",
            Some(&format!("Bearer {}", env.alice_token)),
            till_vss::GetObjectRequest {
                store_id: env.store.clone(),
                key: "x".into(),
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(error.unwrap().error_code(), ErrorCode::NoSuchKeyException);
}

pub async fn get_returns_values_and_versions(env: &Env) {
    env.put(Some(0), vec![kv("k1", "k1v1", 0)]).await.unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 1, "k1v1");
    env.put(Some(1), vec![kv("k1", "k1v2", 1), kv("k2", "k2v1", 0)])
        .await
        .unwrap();
    assert_kv(&env.get("k1").await.unwrap(), "k1", 2, "k1v2");
    assert_kv(&env.get("k2").await.unwrap(), "k2", 1, "k2v1");
    env.put(Some(2), vec![kv("k2", "k2v2", 1), kv("k3", "k3v1", 0)])
        .await
        .unwrap();
    assert_kv(&env.get("k2").await.unwrap(), "k2", 2, "k2v2");
    assert_kv(&env.get("k3").await.unwrap(), "k3", 1, "k3v1");
    // Binary values survive unchanged.
    let bytes: Vec<u8> = (0..=255).collect();
    env.put(None, vec![KeyValue::new("bin", 0, bytes.clone())])
        .await
        .unwrap();
    assert_eq!(env.get("bin").await.unwrap().value, bytes);
}

pub async fn list_paginates_with_global_version_on_first_page(env: &Env) {
    for i in 0..1000 {
        env.put(Some(i), vec![kv(&format!("k{i}"), "k1v1", 0)])
            .await
            .unwrap();
    }
    env.put(Some(1000), vec![kv("k1", "k1v2", 1)])
        .await
        .unwrap();
    env.put(Some(1001), vec![kv("k2", "k2v2", 1)])
        .await
        .unwrap();
    env.put(Some(1002), vec![kv("k2", "k2v3", 2)])
        .await
        .unwrap();
    let (all, global) = env.list_all(None, None).await;
    assert_eq!(global, 1003);
    let k1 = all.iter().find(|k| k.key == "k1").unwrap();
    assert_eq!(
        (k1.version, k1.value.len()),
        (2, 0),
        "current version, empty value"
    );
    let k2 = all.iter().find(|k| k.key == "k2").unwrap();
    assert_eq!((k2.version, k2.value.len()), (3, 0));
    let unique: HashSet<_> = all.iter().map(|k| k.key.clone()).collect();
    assert_eq!(
        (unique.len(), all.len()),
        (1000, 1000),
        "every key exactly once"
    );
    assert!(!unique.contains("vss_global_version"));
}

pub async fn list_honours_page_size_and_prefix(env: &Env) {
    for i in 0..20 {
        env.put(Some(i), vec![kv(&format!("{i}k"), "k1v1", 0)])
            .await
            .unwrap();
    }
    let (all, _) = env.list_all(Some(5), Some("1")).await;
    let keys: HashSet<_> = all.into_iter().map(|k| k.key).collect();
    let expected: HashSet<String> = [
        "1k", "10k", "11k", "12k", "13k", "14k", "15k", "16k", "17k", "18k", "19k",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys, expected);
}

pub async fn list_prefix_is_literal(env: &Env) {
    let stored = [
        "percent%older",
        "percent-false-match",
        "percent%newer",
        "underscore_older",
        "underscoreXfalse-match",
        "underscore_newer",
        "backslash\\older",
        "backslash%",
        "backslash\\newer",
    ];
    env.put(Some(0), stored.iter().map(|k| kv(k, "v1", 0)).collect())
        .await
        .unwrap();
    for (prefix, expected) in [
        ("percent%", ["percent%newer", "percent%older"]),
        ("underscore_", ["underscore_newer", "underscore_older"]),
        ("backslash\\", ["backslash\\newer", "backslash\\older"]),
    ] {
        for size in [100, 1] {
            let (all, _) = env.list_all(Some(size), Some(prefix)).await;
            let mut keys: Vec<_> = all.into_iter().map(|k| k.key).collect();
            keys.sort();
            assert_eq!(keys, expected, "prefix {prefix:?}, page size {size}");
        }
    }
}

pub async fn list_zero_global_version_when_never_used(env: &Env) {
    for chunk in 0..10 {
        let items = (0..100)
            .map(|i| kv(&format!("k{}", chunk * 100 + i), "v", 0))
            .collect();
        env.put(None, items).await.unwrap();
    }
    let (all, global) = env.list_all(None, None).await;
    assert_eq!(global, 0);
    assert_eq!(all.len(), 1000);
}

pub async fn list_caps_page_size(env: &Env) {
    for chunk in 0..10 {
        let items = (0..1000)
            .map(|i| kv(&format!("k{}", chunk * 1000 + i), "v", 0))
            .collect();
        env.put(None, items).await.unwrap();
    }
    let first = env.list(None, Some(3000), None).await;
    assert_eq!(
        first.key_versions.len(),
        100,
        "a page holds at most 100 keys"
    );
    let (all, _) = env.list_all(None, None).await;
    assert_eq!(all.len(), 10_000);
    let unique: HashSet<_> = all.iter().map(|k| &k.key).collect();
    assert_eq!(unique.len(), 10_000);
}

pub async fn list_newest_first(env: &Env) {
    env.put(Some(0), vec![kv("z_first", "v1", 0)])
        .await
        .unwrap();
    env.put(Some(1), vec![kv("a_third", "v1", 0)])
        .await
        .unwrap();
    env.put(Some(2), vec![kv("m_second", "v1", 0)])
        .await
        .unwrap();
    // Updating a key does not move it: the order is by creation.
    env.put(Some(3), vec![kv("z_first", "v2", 1)])
        .await
        .unwrap();
    env.put(Some(4), vec![kv("a_third", "v2", -1)])
        .await
        .unwrap();
    let page = env.list(None, None, None).await;
    assert_eq!(page.global_version, Some(5));
    let keys: Vec<_> = page.key_versions.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["m_second", "a_third", "z_first"]);
    assert_eq!(
        page.next_page_token.as_deref().unwrap_or(""),
        "",
        "the last page has an empty token"
    );
}

pub async fn list_newest_first_across_pages_with_prefix(env: &Env) {
    env.put(Some(0), vec![kv("pfx_z", "v1", 0)]).await.unwrap();
    env.put(Some(1), vec![kv("pfx_a", "v1", 0)]).await.unwrap();
    env.put(Some(2), vec![kv("other", "v1", 0)]).await.unwrap();
    env.put(Some(3), vec![kv("pfx_m", "v1", 0)]).await.unwrap();
    let (all, global) = env.list_all(Some(1), Some("pfx_")).await;
    assert_eq!(global, 4);
    let keys: Vec<_> = all.into_iter().map(|k| k.key).collect();
    assert_eq!(keys, ["pfx_m", "pfx_a", "pfx_z"]);
}

pub async fn list_page_size_zero_gives_only_global_version(env: &Env) {
    env.put(Some(0), vec![kv("a", "v", 0), kv("b", "v", 0)])
        .await
        .unwrap();
    let page = env.list(None, Some(0), None).await;
    assert!(page.key_versions.is_empty());
    assert_eq!(page.global_version, Some(1));
    assert_eq!(page.next_page_token.as_deref().unwrap_or(""), "");
}

// ---- Till's additions: isolation, auth, limits ----

pub async fn users_are_isolated(env: &Env) {
    let store = env.store.clone();
    env.put(Some(0), vec![kv("secret", "alice's", 0)])
        .await
        .unwrap();
    // Bob sends the same store id and key: he sees, lists and changes nothing of Alice's.
    assert_eq!(env.bob.get(&store, "secret").await, Err(Code::NoSuchKey));
    let page = env
        .bob
        .list(ListKeyVersionsRequest {
            store_id: store.clone(),
            key_prefix: None,
            page_size: None,
            page_token: None,
        })
        .await
        .unwrap();
    assert!(page.key_versions.is_empty());
    assert_eq!(
        page.global_version,
        Some(0),
        "bob's global version is his own"
    );
    env.bob.delete(&store, kv("secret", "", -1)).await.unwrap();
    let bob_put = |version| PutObjectRequest {
        store_id: store.clone(),
        global_version: None,
        transaction_items: vec![kv("secret", "bob's", version)],
        delete_items: vec![],
    };
    assert_eq!(
        env.bob.put(bob_put(1)).await,
        Err(Code::Conflict),
        "bob cannot update alice's key"
    );
    env.bob.put(bob_put(0)).await.unwrap();
    assert_kv(&env.get("secret").await.unwrap(), "secret", 1, "alice's");
    assert_kv(
        &env.bob.get(&store, "secret").await.unwrap(),
        "secret",
        1,
        "bob's",
    );
    // Alice's page token does not open bob's listing either.
    env.put(None, (0..3).map(|i| kv(&format!("p{i}"), "v", 0)).collect())
        .await
        .unwrap();
    let page = env.list(None, Some(1), None).await;
    let token = page.next_page_token.unwrap();
    let bob_page = env
        .bob
        .list(ListKeyVersionsRequest {
            store_id: store,
            key_prefix: None,
            page_size: None,
            page_token: Some(token),
        })
        .await
        .unwrap();
    assert!(bob_page.key_versions.iter().all(|k| k.key == "secret"));
}

pub async fn missing_or_wrong_token_is_auth_401(env: &Env) {
    let body = till_vss::GetObjectRequest {
        store_id: env.store.clone(),
        key: "k".into(),
    }
    .encode_to_vec();
    // Alice's token with its last hex digit changed: the right id, a wrong secret.
    let (head, last) = env.alice_token.split_at(env.alice_token.len() - 1);
    let wrong_secret = format!("Bearer {head}{}", if last == "0" { "1" } else { "0" });
    assert_ne!(wrong_secret, format!("Bearer {}", env.alice_token));
    let other_token = format!("Bearer till_{}", "ab".repeat(48));
    for (label, auth) in [
        ("no header", None),
        ("a malformed bearer", Some("Bearer nonsense")),
        ("basic auth", Some("Basic dXNlcjpwYXNz")),
        ("an unknown token", Some(other_token.as_str())),
        ("a wrong secret", Some(wrong_secret.as_str())),
    ] {
        for path in ["getObject", "putObjects", "deleteObject", "listKeyVersions"] {
            let (status, error) = env.raw(path, auth, body.clone()).await;
            // The label, never the token, goes into the message.
            assert_eq!(status, 401, "{path} with {label}");
            let error = error.expect("an ErrorResponse body");
            assert_eq!(error.error_code(), ErrorCode::AuthException);
            assert!(
                !error.message.contains(&env.alice_token[5..]),
                "the token never appears in errors"
            );
        }
    }
    let bad = TillVssApi::new(&env.server.vss_url(), &format!("till_{}", "cd".repeat(48)));
    assert_eq!(bad.get(&env.store, "k").await, Err(Code::Auth));
    // The right token still works.
    assert_eq!(env.get("k").await, Err(Code::NoSuchKey));
}

pub async fn undecodable_body_is_400(env: &Env) {
    let auth = format!("Bearer {}", env.alice_token);
    for path in ["getObject", "putObjects", "deleteObject", "listKeyVersions"] {
        let (status, error) = env
            .raw(path, Some(&auth), vec![0xff, 0xff, 0xff, 0x0f, 0x12])
            .await;
        assert_eq!(status, 400, "{path}");
        let error = error.expect("an ErrorResponse body");
        assert_eq!(error.error_code(), ErrorCode::InvalidRequestException);
        assert!(error.message.contains("protobuf"), "{}", error.message);
    }
}

pub async fn oversized_body_is_413(env: &Env) {
    let value = vec![7u8; TEST_MAX_BODY_BYTES + 1];
    let body = PutObjectRequest {
        store_id: env.store.clone(),
        global_version: None,
        transaction_items: vec![KeyValue::new("big", 0, value)],
        delete_items: vec![],
    }
    .encode_to_vec();
    let (status, error) = env
        .raw(
            "putObjects",
            Some(&format!("Bearer {}", env.alice_token)),
            body,
        )
        .await;
    assert_eq!(status, 413);
    let error = error.expect("an ErrorResponse body");
    assert_eq!(error.error_code(), ErrorCode::InvalidRequestException);
    assert!(
        error.message.contains(&TEST_MAX_BODY_BYTES.to_string()),
        "names the limit: {}",
        error.message
    );
    assert_eq!(
        env.put(
            None,
            vec![KeyValue::new("big", 0, vec![7u8; TEST_MAX_BODY_BYTES + 1])]
        )
        .await,
        Err(Code::InvalidRequest)
    );
    assert_eq!(env.get("big").await, Err(Code::NoSuchKey));
    // Just under the limit is fine.
    env.put(
        None,
        vec![KeyValue::new(
            "big",
            0,
            vec![7u8; TEST_MAX_BODY_BYTES - 1024],
        )],
    )
    .await
    .unwrap();
}

pub async fn too_many_items_is_invalid_request(env: &Env) {
    let items: Vec<_> = (0..1001).map(|i| kv(&format!("k{i}"), "v", 0)).collect();
    assert_eq!(env.put(None, items).await, Err(Code::InvalidRequest));
    let items: Vec<_> = (0..600).map(|i| kv(&format!("k{i}"), "v", 0)).collect();
    let deletes: Vec<_> = (0..401).map(|i| kv(&format!("d{i}"), "", -1)).collect();
    assert_eq!(
        env.put_delete(None, items, deletes).await,
        Err(Code::InvalidRequest),
        "writes and deletes count together"
    );
    assert_eq!(env.get("k0").await, Err(Code::NoSuchKey));
    let items: Vec<_> = (0..1000).map(|i| kv(&format!("k{i}"), "v", 0)).collect();
    env.put(None, items).await.unwrap();
    let body = PutObjectRequest {
        store_id: env.store.clone(),
        global_version: None,
        transaction_items: (0..1001).map(|i| kv(&format!("x{i}"), "v", 0)).collect(),
        delete_items: vec![],
    }
    .encode_to_vec();
    let (status, error) = env
        .raw(
            "putObjects",
            Some(&format!("Bearer {}", env.alice_token)),
            body,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error.unwrap().message.contains("1000"),
        "the message names the limit"
    );
}

pub async fn key_and_store_id_lengths_are_limited(env: &Env) {
    let long_key = "k".repeat(600);
    env.put(None, vec![kv(&long_key, "v", 0)]).await.unwrap();
    assert_eq!(env.get(&long_key).await.unwrap().version, 1);
    assert_eq!(
        env.put(None, vec![kv(&"k".repeat(601), "v", 0)]).await,
        Err(Code::InvalidRequest)
    );
    let put = |store: String| PutObjectRequest {
        store_id: store,
        global_version: None,
        transaction_items: vec![kv("k", "v", 0)],
        delete_items: vec![],
    };
    env.alice.put(put("s".repeat(120))).await.unwrap();
    assert_eq!(
        env.alice.put(put("s".repeat(121))).await,
        Err(Code::InvalidRequest)
    );
    // Empty store ids are allowed, as in the reference server, and are a store of their own.
    env.alice.put(put(String::new())).await.unwrap();
    assert_eq!(env.alice.get("", "k").await.unwrap().version, 1);
    // The global version's key is not an ordinary key.
    assert_eq!(
        env.put(None, vec![kv("vss_global_version", "v", 0)]).await,
        Err(Code::InvalidRequest)
    );
}

/// Calls `$m!(name)` for every case, so each runner lists them once.
#[macro_export]
macro_rules! vss_conformance_cases {
    ($m:ident) => {
        $m!(put_single_object);
        $m!(put_multi_object);
        $m!(put_conflict_on_stale_key_version);
        $m!(put_conflict_on_one_stale_key_of_many);
        $m!(put_conflict_on_stale_global_version);
        $m!(put_without_global_version);
        $m!(put_and_delete_are_atomic);
        $m!(delete_existing_key);
        $m!(delete_missing_key);
        $m!(delete_is_idempotent);
        $m!(get_missing_key_is_no_such_key);
        $m!(get_returns_values_and_versions);
        $m!(list_paginates_with_global_version_on_first_page);
        $m!(list_honours_page_size_and_prefix);
        $m!(list_prefix_is_literal);
        $m!(list_zero_global_version_when_never_used);
        $m!(list_caps_page_size);
        $m!(list_newest_first);
        $m!(list_newest_first_across_pages_with_prefix);
        $m!(list_page_size_zero_gives_only_global_version);
        $m!(users_are_isolated);
        $m!(missing_or_wrong_token_is_auth_401);
        $m!(undecodable_body_is_400);
        $m!(oversized_body_is_413);
        $m!(too_many_items_is_invalid_request);
        $m!(key_and_store_id_lengths_are_limited);
    };
}
