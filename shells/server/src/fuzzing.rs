//! The checks the server's fuzz targets run, shared with the test that replays their corpora, and
//! the encoders that write their seeds. Not part of the stable API.
//!
//! Every input gets a fresh server: an in-memory redb store with two stores (`shop`, with an owner
//! and a cashier token, and `other`), the real router, and, for the hub and the store API, a master
//! device connected to the hub that answers every command. Requests go through the router
//! in-process (`tower::ServiceExt::oneshot`), so they meet the real extractors and handlers; hub
//! messages go through the hub's own decoding (`parse_hello`, `handle`).
//!
//! What every answer must be: a status with a body, never a 500 (the in-memory store does not
//! fail, so a 500 means a request broke the server); a VSS answer a protobuf of the right message,
//! or an `ErrorResponse` whose code gives its status; a JSON error `{"error": "..."}` with a
//! message. The store API may answer 502, 503 or 504: those say the master device failed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use prost::Message as _;
use serde_json::{Value, json};
use till_vss::proto::{
    DeleteObjectResponse, ErrorCode, ErrorResponse, GetObjectResponse, ListKeyVersionsResponse,
    PutObjectResponse,
};
use tower::ServiceExt as _;

use crate::http::App;
use crate::store::redb::RedbStorage;
use crate::store::{
    Invite, InvoiceRecord, InvoiceStatus, LeaseWrite, PutTransaction, Role, Storage, UserId, Write,
};
use crate::{auth, hub, invite};

/// The store every token but [`Auth::OtherStore`] belongs to.
pub const STORE: &str = "shop";
/// Another store, with its own owner token.
pub const OTHER_STORE: &str = "other";
/// The device that holds the store's lease and answers commands (32 hex digits).
pub const MASTER: &str = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d";
/// The follower device the hub target speaks as until a hello names another.
pub const FOLLOWER: &str = "46464646464646464646464646464646";
/// An invitation code of the store that redeems (once).
pub const INVITE_CODE: &str = "1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f";
/// An invoice of the store, new, that an `invoice_update` can mark paid.
pub const INVOICE_ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// The VSS store id the master's lease was written to.
pub const BACKUP_STORE: &str = "backup";
/// Request bodies above this are refused (413); small, so the fuzzer reaches the limit.
pub const MAX_BODY_BYTES: usize = 2048;

// ----------------------------------------------------------------------------------------------
// Input encoding: fields front to back; past the end every read gives zeros.

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A u16 LE length and that many bytes, cut at the end of the input.
    fn chunk(&mut self) -> Vec<u8> {
        let n = usize::from(u16::from_le_bytes([self.u8(), self.u8()])).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

#[derive(Default)]
struct Output(Vec<u8>);

impl Output {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn chunk(&mut self, bytes: &[u8]) {
        let n = u16::try_from(bytes.len()).expect("seed fields are below 64 KiB");
        self.0.extend_from_slice(&n.to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

/// The `Authorization` header a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Bearer` and an owner token of [`STORE`].
    Owner,
    /// `Bearer` and a cashier token of [`STORE`].
    Cashier,
    /// `Bearer` and the owner token of [`OTHER_STORE`].
    OtherStore,
    /// No header.
    Missing,
    /// This header value, if it can be one.
    Raw(Vec<u8>),
}

impl Auth {
    fn decode(input: &mut Input<'_>) -> Auth {
        match input.u8() % 5 {
            0 => Auth::Owner,
            1 => Auth::Cashier,
            2 => Auth::OtherStore,
            3 => Auth::Missing,
            _ => Auth::Raw(input.chunk()),
        }
    }

    fn encode(&self, out: &mut Output) {
        match self {
            Auth::Owner => out.u8(0),
            Auth::Cashier => out.u8(1),
            Auth::OtherStore => out.u8(2),
            Auth::Missing => out.u8(3),
            Auth::Raw(bytes) => {
                out.u8(4);
                out.chunk(bytes);
            }
        }
    }
}

/// Percent-encodes every byte but the unreserved ones, for one path segment.
fn segment(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path as given if it is a valid origin-form URI, else percent-encoded under `/`.
fn raw_path(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.starts_with('/') && text.parse::<Uri>().is_ok() => text.to_owned(),
        _ => format!("/{}", segment(bytes)),
    }
}

fn method(b: u8) -> Method {
    match b % 6 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        3 => Method::DELETE,
        4 => Method::HEAD,
        _ => Method::OPTIONS,
    }
}

// ----------------------------------------------------------------------------------------------
// The server under test.

struct Harness {
    app: Arc<App>,
    router: Router,
    user: UserId,
    owner: String,
    cashier: String,
    other: String,
    /// What the master answers to the next commands (JSON text); empty: a plausible default.
    answers: Arc<Mutex<VecDeque<Vec<u8>>>>,
    /// The master's stand-in, whose checks must not have failed (see [`Harness::finish`]).
    master: Option<tokio::task::JoinHandle<()>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
}

impl Harness {
    /// A fresh server. With `master`, the master device holds the store's lease, is connected to
    /// the hub and answers commands.
    async fn new(lease_check: bool, master: bool) -> Harness {
        let store: Arc<dyn Storage> =
            Arc::new(RedbStorage::open_in_memory().expect("an in-memory store opens"));
        let (owner, credential) = auth::issue();
        let user = store
            .create_user(STORE, &credential)
            .await
            .expect("the store is created");
        let (cashier, credential) = auth::issue();
        store
            .add_token(user, &credential, Role::Cashier)
            .await
            .expect("a cashier token is added");
        let (other, credential) = auth::issue();
        store
            .create_user(OTHER_STORE, &credential)
            .await
            .expect("the other store is created");
        store
            .create_invite(
                invite::code_hash(INVITE_CODE),
                Invite {
                    user,
                    expires_ms: crate::invoices::now_ms() + 3_600_000,
                },
            )
            .await
            .expect("the invitation is stored");
        let now = crate::invoices::now_ms();
        store
            .put_invoice(
                user,
                &InvoiceRecord {
                    id: INVOICE_ID.to_owned(),
                    bolt11: "lnbcrt10u1fuzz".to_owned(),
                    amount_sat: 1000,
                    description: "fuzz".to_owned(),
                    status: InvoiceStatus::New,
                    created_ms: now,
                    expires_ms: now + 3_600_000,
                    paid_ms: None,
                    received_msat: None,
                },
            )
            .await
            .expect("the invoice is stored");
        let app = Arc::new(App {
            store: store.clone(),
            max_body_bytes: MAX_BODY_BYTES,
            lease_check,
            hub: hub::Hub::new(
                store.clone(),
                None,
                Some("02fuzz@127.0.0.1:9735".to_owned()),
                crate::DEFAULT_HEARTBEAT,
                Duration::from_secs(5),
            ),
            invoice_events: tokio::sync::broadcast::channel(1024).0,
            public_url: "http://till.invalid/".to_owned(),
        });
        let mut harness = Harness {
            router: crate::http::router(app.clone()),
            app,
            user,
            owner,
            cashier,
            other,
            answers: Arc::default(),
            master: None,
        };
        if master {
            harness.master = Some(harness.connect_master().await);
        }
        harness
    }

    /// Ends the case: a check that failed inside the master's stand-in fails the case too (the
    /// fuzzer aborts on any panic, but a test would not see one in a spawned task).
    async fn finish(self) {
        if let Some(task) = self.master {
            if task.is_finished() {
                task.await
                    .expect("the master's stand-in found nothing wrong");
            } else {
                task.abort();
            }
        }
    }

    /// Gives the master the store's lease and connects it; it answers every command at once.
    async fn connect_master(&self) -> tokio::task::JoinHandle<()> {
        // Epoch 1, held (state code 1).
        let header =
            crate::store::lease_from_fields(&parse_device(MASTER), 1, 1).expect("a valid lease");
        self.app
            .store
            .put(
                self.user,
                PutTransaction {
                    store_id: BACKUP_STORE.to_owned(),
                    global_version: None,
                    writes: vec![Write {
                        key: "head".to_owned(),
                        expected: 0,
                        value: header.encode().to_vec(),
                    }],
                    deletes: Vec::new(),
                    lease: Some(LeaseWrite {
                        header,
                        enforce: true,
                    }),
                },
            )
            .await
            .expect("the master's lease is written");
        let hub = &self.app.hub;
        let (_conn, mut outgoing) = hub.register(self.user, STORE, MASTER);
        hub.refresh_master(self.user)
            .await
            .expect("the master is read from its lease");
        let (app, user, answers) = (self.app.clone(), self.user, self.answers.clone());
        tokio::spawn(async move {
            let mut invoices = 0u64;
            while let Some(text) = outgoing.recv().await {
                let message = check_hub_message(&text);
                if message["type"] != "command" {
                    continue;
                }
                let id = message["id"]
                    .as_str()
                    .expect("a command has an id")
                    .to_owned();
                let programmed = answers.lock().unwrap().pop_front();
                let mut result = match programmed {
                    Some(text) => match serde_json::from_slice::<Value>(&text) {
                        Ok(value) => json!({ "ok": true, "value": value }),
                        Err(_) => json!({ "ok": false, "error": String::from_utf8_lossy(&text) }),
                    },
                    None if message["command"]["kind"] == "create_invoice" => {
                        invoices += 1;
                        json!({ "ok": true, "value": {
                            "payment_hash": format!("{invoices:064x}"),
                            "bolt11": format!("lnbcrt10u1fuzz{invoices}"),
                        }})
                    }
                    None => json!({ "ok": true, "value": {} }),
                };
                result["type"] = "result".into();
                result["v"] = hub::HUB_PROTOCOL_VERSION.into();
                result["id"] = id.into();
                hub::handle(&app, user, STORE, MASTER, &result.to_string())
                    .await
                    .expect("the master's well-formed result is taken");
            }
        })
    }

    fn authorization(&self, auth: &Auth) -> Option<HeaderValue> {
        let bearer = |token: &str| HeaderValue::try_from(format!("Bearer {token}")).ok();
        match auth {
            Auth::Owner => bearer(&self.owner),
            Auth::Cashier => bearer(&self.cashier),
            Auth::OtherStore => bearer(&self.other),
            Auth::Missing => None,
            Auth::Raw(bytes) => HeaderValue::from_bytes(bytes).ok(),
        }
    }

    /// Sends one request through the router; the answer's status, headers and body (not read for
    /// an event stream, which never ends).
    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        extra: &[(header::HeaderName, HeaderValue)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = self.authorization(auth) {
            request = request.header(header::AUTHORIZATION, value);
        }
        for (name, value) in extra {
            request = request.header(name, value);
        }
        let request = request
            .body(Body::from(body))
            .expect("the request is well-formed");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router's service is infallible");
        let (parts, body) = response.into_parts();
        let streaming = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let bytes = if streaming {
            b"(event stream)".to_vec()
        } else {
            axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("an answer's body reads")
                .to_vec()
        };
        (parts.status, parts.headers, bytes)
    }
}

fn parse_device(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a hex device id");
    }
    out
}

/// Every message the hub sends a device is a JSON object with its type and protocol version.
fn check_hub_message(text: &str) -> Value {
    let value: Value = serde_json::from_str(text).expect("the hub sends JSON");
    assert!(
        value["type"].is_string(),
        "a hub message has a type: {text}"
    );
    assert_eq!(value["v"], hub::HUB_PROTOCOL_VERSION, "{text}");
    value
}

/// The properties of every answer; `gateway` allows the statuses of a failed master. Only a VSS
/// success may be empty (`PutObjectResponse` and `DeleteObjectResponse` encode to no bytes).
fn check_answer(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8], gateway: bool) {
    let master_failed = matches!(status.as_u16(), 502..=504);
    assert!(
        !status.is_server_error() || (gateway && master_failed),
        "{what}: answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    // An answer to HEAD has no body by definition (RFC 9110 9.3.2).
    if what.starts_with("HEAD ") {
        assert!(body.is_empty(), "{what}: answered with a body");
        return;
    }
    assert!(
        !body.is_empty() || (protobuf && status == StatusCode::OK),
        "{what}: answered {status} with no body"
    );
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        let value: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{what}: a JSON answer does not parse: {e}"));
        if status.is_client_error() || status.is_server_error() {
            let message = value["error"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty(),
                "{what}: {status} without an error message: {value}"
            );
        }
    }
}

// ----------------------------------------------------------------------------------------------
// vss_requests

/// Which endpoint a [`VssRequest`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VssCall {
    /// `POST /vss/getObject`.
    GetObject,
    /// `POST /vss/putObjects`.
    PutObjects,
    /// `POST /vss/deleteObject`.
    DeleteObject,
    /// `POST /vss/listKeyVersions`.
    ListKeyVersions,
    /// `GET /api/v1/stores/{path}/lease`.
    Lease,
    /// `GET /health`.
    Health,
    /// The request's method and path as given.
    Raw,
    /// `GET /api/v1/hub` without a WebSocket upgrade.
    HubUpgrade,
}

const VSS_CALLS: [VssCall; 8] = [
    VssCall::GetObject,
    VssCall::PutObjects,
    VssCall::DeleteObject,
    VssCall::ListKeyVersions,
    VssCall::Lease,
    VssCall::Health,
    VssCall::Raw,
    VssCall::HubUpgrade,
];

/// One request of a [`VssCase`].
#[derive(Clone, Debug)]
pub struct VssRequest {
    /// The endpoint.
    pub call: VssCall,
    /// The `Authorization` header.
    pub auth: Auth,
    /// A `Content-Length` header, true or not.
    pub content_length: Option<u64>,
    /// The body (a protobuf message for the VSS calls).
    pub body: Vec<u8>,
    /// The store id of [`VssCall::Lease`]; the path of [`VssCall::Raw`].
    pub path: Vec<u8>,
    /// The method of [`VssCall::Raw`] (GET, POST, PUT, DELETE, HEAD, OPTIONS, modulo 6).
    pub method: u8,
}

impl VssRequest {
    /// A VSS call with a protobuf body and the owner's token.
    pub fn vss(call: VssCall, message: &impl prost::Message) -> VssRequest {
        VssRequest {
            call,
            auth: Auth::Owner,
            content_length: None,
            body: message.encode_to_vec(),
            path: Vec::new(),
            method: 0,
        }
    }
}

/// A `vss_requests` input: requests sent one after another to one fresh server.
#[derive(Clone, Debug)]
pub struct VssCase {
    /// Whether head writes must respect the store's lease.
    pub lease_check: bool,
    /// The requests.
    pub requests: Vec<VssRequest>,
}

impl VssCase {
    /// Decodes a case: a flags byte (bit 0: lease check off), then requests, each a call byte, an
    /// auth byte (and a chunk for a raw header), a byte saying whether a `Content-Length` (u64 LE)
    /// follows, the body and the path as chunks (u16 LE length, bytes) and a method byte.
    pub fn decode(data: &[u8]) -> VssCase {
        let mut input = Input(data);
        let lease_check = input.u8() & 1 == 0;
        let mut requests = Vec::new();
        while !input.is_empty() && requests.len() < 64 {
            let call = VSS_CALLS[usize::from(input.u8()) % VSS_CALLS.len()];
            let auth = Auth::decode(&mut input);
            let content_length = (input.u8() & 1 == 1).then(|| input.u64());
            requests.push(VssRequest {
                call,
                auth,
                content_length,
                body: input.chunk(),
                path: input.chunk(),
                method: input.u8(),
            });
        }
        VssCase {
            lease_check,
            requests,
        }
    }

    /// Encodes a case that [`VssCase::decode`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Output::default();
        out.u8(u8::from(!self.lease_check));
        for r in &self.requests {
            out.u8(VSS_CALLS.iter().position(|c| *c == r.call).unwrap() as u8);
            r.auth.encode(&mut out);
            match r.content_length {
                Some(n) => {
                    out.u8(1);
                    out.0.extend_from_slice(&n.to_le_bytes());
                }
                None => out.u8(0),
            }
            out.chunk(&r.body);
            out.chunk(&r.path);
            out.u8(r.method);
        }
        out.0
    }
}

/// A VSS answer: the right message on 200, else an `ErrorResponse` whose code gives the status.
fn check_vss_answer(call: VssCall, status: StatusCode, body: &[u8]) {
    if status == StatusCode::OK {
        let decoded = match call {
            VssCall::GetObject => GetObjectResponse::decode(body).map(|_| ()),
            VssCall::PutObjects => PutObjectResponse::decode(body).map(|_| ()),
            VssCall::DeleteObject => DeleteObjectResponse::decode(body).map(|_| ()),
            _ => ListKeyVersionsResponse::decode(body).map(|_| ()),
        };
        decoded.unwrap_or_else(|e| panic!("{call:?}: a 200 answer does not decode: {e}"));
        return;
    }
    let error = ErrorResponse::decode(body)
        .unwrap_or_else(|e| panic!("{call:?}: an error answer does not decode: {e}"));
    assert!(
        !error.message.is_empty(),
        "{call:?}: {status} without a message"
    );
    let code = ErrorCode::from_i32(error.error_code)
        .unwrap_or_else(|| panic!("{call:?}: unknown error code {}", error.error_code));
    let expected = match status.as_u16() {
        // Over the body limit: INVALID_REQUEST with 413; a cashier token: AUTH with 403.
        413 => ErrorCode::InvalidRequestException,
        403 => ErrorCode::AuthException,
        _ => code,
    };
    assert_eq!(code, expected, "{call:?}: {status} with {code:?}");
    if !matches!(status.as_u16(), 413 | 403) {
        assert_eq!(code.http_status(), status.as_u16(), "{call:?}: {code:?}");
    }
}

/// `vss_requests`: sends a [`VssCase`]'s requests to a fresh server and checks every answer.
/// Returns the answers' statuses.
pub fn vss_requests(data: &[u8]) -> Vec<u16> {
    let case = VssCase::decode(data);
    runtime().block_on(async {
        let h = Harness::new(case.lease_check, false).await;
        let mut statuses = Vec::new();
        for r in &case.requests {
            let (method, path) = match r.call {
                VssCall::GetObject => (Method::POST, "/vss/getObject".to_owned()),
                VssCall::PutObjects => (Method::POST, "/vss/putObjects".to_owned()),
                VssCall::DeleteObject => (Method::POST, "/vss/deleteObject".to_owned()),
                VssCall::ListKeyVersions => (Method::POST, "/vss/listKeyVersions".to_owned()),
                VssCall::Lease => (
                    Method::GET,
                    format!("/api/v1/stores/{}/lease", segment(&r.path)),
                ),
                VssCall::Health => (Method::GET, "/health".to_owned()),
                VssCall::Raw => (method(r.method), raw_path(&r.path)),
                VssCall::HubUpgrade => (Method::GET, "/api/v1/hub".to_owned()),
            };
            let extra: Vec<_> = r
                .content_length
                .map(|n| (header::CONTENT_LENGTH, HeaderValue::from(n)))
                .into_iter()
                .collect();
            let (status, headers, body) = h
                .send(method.clone(), &path, &r.auth, &extra, r.body.clone())
                .await;
            let what = format!("{method} {path}");
            check_answer(&what, status, &headers, &body, false);
            statuses.push(status.as_u16());
            if matches!(
                r.call,
                VssCall::GetObject
                    | VssCall::PutObjects
                    | VssCall::DeleteObject
                    | VssCall::ListKeyVersions
            ) {
                check_vss_answer(r.call, status, &body);
            }
        }
        h.finish().await;
        statuses
    })
}

// ----------------------------------------------------------------------------------------------
// hub_messages

/// Who sends a [`HubMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubFrom {
    /// A connecting device: the text is its first message, read as a hello. A hello the server
    /// accepts for [`STORE`] connects that device as the follower.
    Hello,
    /// The connected follower ([`FOLLOWER`] until a hello names another).
    Follower,
    /// The master device ([`MASTER`]).
    Master,
    /// A device of the store that never connected.
    Stranger,
    /// Not a message: the master's answer (JSON text) to the next command it receives.
    MasterAnswer,
}

const HUB_FROM: [HubFrom; 5] = [
    HubFrom::Hello,
    HubFrom::Follower,
    HubFrom::Master,
    HubFrom::Stranger,
    HubFrom::MasterAnswer,
];

/// One message of a [`HubCase`].
#[derive(Clone, Debug)]
pub struct HubMessage {
    /// Its sender.
    pub from: HubFrom,
    /// The text frame.
    pub text: Vec<u8>,
}

/// A `hub_messages` input: a sender byte and a text chunk per message.
#[derive(Clone, Debug)]
pub struct HubCase {
    /// The messages, in order.
    pub messages: Vec<HubMessage>,
}

impl HubCase {
    /// Decodes a case: per message, a sender byte and the text as a chunk (u16 LE length, bytes).
    pub fn decode(data: &[u8]) -> HubCase {
        let mut input = Input(data);
        let mut messages = Vec::new();
        while !input.is_empty() && messages.len() < 64 {
            messages.push(HubMessage {
                from: HUB_FROM[usize::from(input.u8()) % HUB_FROM.len()],
                text: input.chunk(),
            });
        }
        HubCase { messages }
    }

    /// Encodes a case that [`HubCase::decode`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Output::default();
        for m in &self.messages {
            out.u8(HUB_FROM.iter().position(|f| *f == m.from).unwrap() as u8);
            out.chunk(&m.text);
        }
        out.0
    }
}

/// `hub_messages`: hands a [`HubCase`]'s messages to the hub as a connection would (a text frame is
/// UTF-8; the hub sees what the WebSocket layer lets through). A message the hub refuses gets a
/// reason; everything the hub sends devices is a well-formed message. Returns, per message but
/// the master's answers, `None` if the hub took it, else its reason.
pub fn hub_messages(data: &[u8]) -> Vec<Option<String>> {
    let case = HubCase::decode(data);
    runtime().block_on(async {
        let mut outcomes = Vec::new();
        let h = Harness::new(true, true).await;
        let hub = &h.app.hub;
        let mut follower = FOLLOWER.to_owned();
        let (_conn, mut inbox) = hub.register(h.user, STORE, &follower);
        for m in &case.messages {
            // The WebSocket layer delivers only UTF-8 text frames.
            let Ok(text) = std::str::from_utf8(&m.text) else {
                outcomes.push(Some("not a text frame".to_owned()));
                continue;
            };
            let device = match m.from {
                HubFrom::Hello => {
                    match hub::parse_hello(text) {
                        Ok((store, device)) => {
                            assert_eq!(device.len(), 32, "{device:?}");
                            assert!(
                                device
                                    .bytes()
                                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                            );
                            if store == STORE {
                                follower = device;
                                inbox = hub.register(h.user, STORE, &follower).1;
                            }
                            outcomes.push(None);
                        }
                        Err(e) => {
                            assert!(!e.is_empty());
                            outcomes.push(Some(e));
                        }
                    }
                    continue;
                }
                HubFrom::MasterAnswer => {
                    h.answers.lock().unwrap().push_back(m.text.clone());
                    continue;
                }
                HubFrom::Follower => follower.clone(),
                HubFrom::Master => MASTER.to_owned(),
                HubFrom::Stranger => "53535353535353535353535353535353".to_owned(),
            };
            let outcome = hub::handle(&h.app, h.user, STORE, &device, text).await;
            if let Err(e) = &outcome {
                assert!(!e.is_empty(), "a refused message gets a reason");
            }
            outcomes.push(outcome.err());
            while let Ok(sent) = inbox.try_recv() {
                check_hub_message(&sent);
            }
        }
        // Let commands in flight come back, then check what the follower was sent.
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
        while let Ok(sent) = inbox.try_recv() {
            check_hub_message(&sent);
        }
        h.finish().await;
        outcomes
    })
}

// ----------------------------------------------------------------------------------------------
// store_api

/// Which endpoint an [`ApiRequest`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiCall {
    /// `POST /api/v1/stores/{store}/invoices`.
    CreateInvoice,
    /// `GET /api/v1/stores/{store}/invoices`.
    ListInvoices,
    /// `GET /api/v1/stores/{store}/invoices/{id}`.
    GetInvoice,
    /// `GET /api/v1/stores/{store}/invoices/{id}/qr.svg`.
    Qr,
    /// `GET /api/v1/stores/{store}/invoices/events` (only the answer's head is read).
    Events,
    /// `POST /api/v1/stores/{store}/pay`.
    Pay,
    /// `POST /api/v1/stores/{store}/refund`.
    Refund,
    /// `GET /api/v1/stores/{store}/balances`.
    Balances,
    /// `GET /api/v1/stores/{store}/payments`.
    Payments,
    /// `POST /api/v1/invites/redeem`.
    Redeem,
    /// The request's method, and its store bytes as the path.
    Raw,
}

const API_CALLS: [ApiCall; 11] = [
    ApiCall::CreateInvoice,
    ApiCall::ListInvoices,
    ApiCall::GetInvoice,
    ApiCall::Qr,
    ApiCall::Events,
    ApiCall::Pay,
    ApiCall::Refund,
    ApiCall::Balances,
    ApiCall::Payments,
    ApiCall::Redeem,
    ApiCall::Raw,
];

/// One request of an [`ApiCase`].
#[derive(Clone, Debug)]
pub struct ApiRequest {
    /// The endpoint.
    pub call: ApiCall,
    /// The `Authorization` header.
    pub auth: Auth,
    /// The store name in the path (percent-encoded); the whole path for [`ApiCall::Raw`].
    pub store: Vec<u8>,
    /// The invoice id in the path; empty: the last invoice created, or [`INVOICE_ID`].
    pub id: Vec<u8>,
    /// The body (JSON for the POST calls).
    pub body: Vec<u8>,
    /// The master's answer to the command this request sends it, as JSON text (not JSON: it
    /// refuses with this text); empty: a plausible answer.
    pub answer: Vec<u8>,
    /// The method of [`ApiCall::Raw`].
    pub method: u8,
}

impl ApiRequest {
    /// A call on [`STORE`] with the owner's token and this JSON body.
    pub fn new(call: ApiCall, body: Value) -> ApiRequest {
        ApiRequest {
            call,
            auth: Auth::Owner,
            store: STORE.as_bytes().to_vec(),
            id: Vec::new(),
            body: if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            },
            answer: Vec::new(),
            method: 0,
        }
    }
}

/// A `store_api` input: requests sent one after another to one fresh server with a master.
#[derive(Clone, Debug)]
pub struct ApiCase {
    /// The requests.
    pub requests: Vec<ApiRequest>,
}

impl ApiCase {
    /// Decodes a case: per request, a call byte, an auth byte (and a chunk for a raw header), the
    /// store, id, body and answer as chunks (u16 LE length, bytes) and a method byte.
    pub fn decode(data: &[u8]) -> ApiCase {
        let mut input = Input(data);
        let mut requests = Vec::new();
        while !input.is_empty() && requests.len() < 32 {
            requests.push(ApiRequest {
                call: API_CALLS[usize::from(input.u8()) % API_CALLS.len()],
                auth: Auth::decode(&mut input),
                store: input.chunk(),
                id: input.chunk(),
                body: input.chunk(),
                answer: input.chunk(),
                method: input.u8(),
            });
        }
        ApiCase { requests }
    }

    /// Encodes a case that [`ApiCase::decode`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Output::default();
        for r in &self.requests {
            out.u8(API_CALLS.iter().position(|c| *c == r.call).unwrap() as u8);
            r.auth.encode(&mut out);
            out.chunk(&r.store);
            out.chunk(&r.id);
            out.chunk(&r.body);
            out.chunk(&r.answer);
            out.u8(r.method);
        }
        out.0
    }
}

/// `store_api`: sends an [`ApiCase`]'s requests to a fresh server whose master answers commands as
/// the case says, and checks every answer. Returns the answers' statuses.
pub fn store_api(data: &[u8]) -> Vec<u16> {
    let case = ApiCase::decode(data);
    runtime().block_on(async {
        let h = Harness::new(true, true).await;
        let mut statuses = Vec::new();
        let mut latest = INVOICE_ID.to_owned();
        for r in &case.requests {
            let store = segment(&r.store);
            let id = if r.id.is_empty() {
                segment(latest.as_bytes())
            } else {
                segment(&r.id)
            };
            let base = format!("/api/v1/stores/{store}");
            let (method, path) = match r.call {
                ApiCall::CreateInvoice => (Method::POST, format!("{base}/invoices")),
                ApiCall::ListInvoices => (Method::GET, format!("{base}/invoices")),
                ApiCall::GetInvoice => (Method::GET, format!("{base}/invoices/{id}")),
                ApiCall::Qr => (Method::GET, format!("{base}/invoices/{id}/qr.svg")),
                ApiCall::Events => (Method::GET, format!("{base}/invoices/events")),
                ApiCall::Pay => (Method::POST, format!("{base}/pay")),
                ApiCall::Refund => (Method::POST, format!("{base}/refund")),
                ApiCall::Balances => (Method::GET, format!("{base}/balances")),
                ApiCall::Payments => (Method::GET, format!("{base}/payments")),
                ApiCall::Redeem => (Method::POST, "/api/v1/invites/redeem".to_owned()),
                ApiCall::Raw => (method(r.method), raw_path(&r.store)),
            };
            h.answers.lock().unwrap().clear();
            if !r.answer.is_empty() {
                h.answers.lock().unwrap().push_back(r.answer.clone());
            }
            let json = [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )];
            let (status, headers, body) = h
                .send(method.clone(), &path, &r.auth, &json, r.body.clone())
                .await;
            let what = format!("{method} {path}");
            check_answer(&what, status, &headers, &body, true);
            statuses.push(status.as_u16());
            if r.call == ApiCall::CreateInvoice && status == StatusCode::CREATED {
                let invoice: Value = serde_json::from_slice(&body).expect("checked above");
                assert_eq!(invoice["status"], "new", "{invoice}");
                latest = invoice["id"]
                    .as_str()
                    .expect("a created invoice has an id")
                    .to_owned();
            }
        }
        h.finish().await;
        statuses
    })
}
