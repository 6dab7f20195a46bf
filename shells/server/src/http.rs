//! The VSS endpoints over HTTP: authentication, limits, protobuf in and out, protocol errors; the
//! read-only lease API (JSON); and the routes of the hub, the store API, invitations and the POS
//! page, whose handlers live in their own modules.

use crate::auth;
use crate::hub::Hub;
use crate::invoices::{self, InvoiceEvent};
use crate::store::{
    Delete, LeaseWrite, PutError, PutTransaction, Role, Storage, StoreError, UserId, Write,
};
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use std::sync::Arc;
use till_vss::proto::{
    DeleteObjectRequest, DeleteObjectResponse, ErrorCode, ErrorResponse, GetObjectRequest,
    GetObjectResponse, KeyValue, ListKeyVersionsRequest, ListKeyVersionsResponse, PutObjectRequest,
    PutObjectResponse,
};
use till_vss::replica::{LEASE_MAGIC, LeaseHeader, LeaseState};

/// Items (writes plus deletes) allowed in one `putObjects`, as in the reference server.
pub(crate) const MAX_ITEMS: usize = 1000;
/// Keys a listing page holds at most, whatever `page_size` asks for.
pub(crate) const MAX_PAGE_SIZE: i32 = 100;
/// Longest key, in characters, as in the reference server's schema.
pub(crate) const MAX_KEY_CHARS: usize = 600;
/// Longest store id, in characters, as in the reference server's schema.
pub(crate) const MAX_STORE_ID_CHARS: usize = 120;
/// `getObject` of this key answers the store's global version, as the reference server does;
/// writing it as an ordinary key is refused so the two can never be confused.
pub(crate) const GLOBAL_VERSION_KEY: &str = "vss_global_version";

pub(crate) struct App {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) max_body_bytes: usize,
    /// Whether head writes must respect the stored lease (off: `--no-lease-check`).
    pub(crate) lease_check: bool,
    /// The device hub: connections, masters, commands in flight.
    pub(crate) hub: Hub,
    /// Every invoice status change, for the event streams (each filters its own store).
    pub(crate) invoice_events: tokio::sync::broadcast::Sender<InvoiceEvent>,
    /// The URL devices and browsers reach this server at (invitation answers).
    pub(crate) public_url: String,
}

/// Who is calling the store API: the token's user (store) and role.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    pub(crate) user: UserId,
    pub(crate) role: Role,
}

/// An error answer of the JSON APIs: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct JsonError {
    status: StatusCode,
    message: String,
}

impl JsonError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        JsonError {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        JsonError::new(StatusCode::BAD_REQUEST, message)
    }
    /// The detail goes to the server's log once; the client gets the cause, no internals.
    pub(crate) fn internal(e: StoreError) -> Self {
        eprintln!("till-server: {e}");
        let (status, message) = e.for_client();
        JsonError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        )
    }
    pub(crate) fn internal_text(detail: &str) -> Self {
        eprintln!("till-server: {detail}");
        JsonError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed; retry later",
        )
    }
}

impl From<ApiError> for JsonError {
    fn from(e: ApiError) -> Self {
        JsonError::new(e.status, e.message)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/vss/getObject", post(get_object))
        .route("/vss/putObjects", post(put_objects))
        .route("/vss/deleteObject", post(delete_object))
        .route("/vss/listKeyVersions", post(list_key_versions))
        .route("/health", get(health))
        .route("/api/v1/stores/{store_id}/lease", get(get_lease))
        .route("/api/v1/hub", get(hub_upgrade))
        .route(
            "/api/v1/stores/{store_id}/invoices",
            post(invoices::create).get(invoices::list),
        )
        .route(
            "/api/v1/stores/{store_id}/invoices/events",
            get(invoices::events),
        )
        .route(
            "/api/v1/stores/{store_id}/invoices/{id}",
            get(invoices::get),
        )
        .route(
            "/api/v1/stores/{store_id}/invoices/{id}/qr.svg",
            get(invoices::qr),
        )
        .route("/api/v1/stores/{store_id}/pay", post(invoices::pay))
        .route("/api/v1/stores/{store_id}/refund", post(invoices::refund))
        .route(
            "/api/v1/stores/{store_id}/balances",
            get(invoices::balances),
        )
        .route(
            "/api/v1/stores/{store_id}/payments",
            get(invoices::payments),
        )
        .route("/api/v1/invites/redeem", post(crate::invite::redeem))
        .route("/invite/{code}", get(crate::pos::invite_page))
        .route("/pos/{store_id}", get(crate::pos::page))
        .route("/pos/assets/{file}", get(crate::pos::asset))
        // Every answer says what went wrong, an unknown path or method included (axum's own
        // answers to these have an empty body).
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        // The body limit is enforced by `read_body`, which answers with a protocol error.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// Any path no route serves: 404 `{"error"}` naming it.
async fn no_such_endpoint(method: Method, uri: Uri) -> Response {
    JsonError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; the VSS calls are under /vss, the store API under /api/v1 (shells/server/openapi.yaml)",
            uri.path()
        ),
    )
    .into_response()
}

/// A served path called with another method: 405 `{"error"}` (axum adds the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    JsonError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}; see the Allow header",
            uri.path()
        ),
    )
    .into_response()
}

/// A protocol error: the code decides, the status follows the reference server.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequestException, message)
    }
    fn auth(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::AuthException, message)
    }
    /// The detail goes to the server's log once; the client gets the cause (a full disk, an
    /// unreachable database: 503), no internals. The code stays INTERNAL_SERVER, which clients
    /// retry.
    fn internal(e: StoreError) -> Self {
        eprintln!("till-server: store error: {e}");
        let (status, message) = e.for_client();
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: ErrorCode::InternalServerException,
            message: message.to_owned(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

fn respond<M: Message>(result: Result<M, ApiError>) -> Response {
    let (status, body) = match result {
        Ok(message) => (StatusCode::OK, message.encode_to_vec()),
        Err(e) => (
            e.status,
            ErrorResponse {
                error_code: e.code as i32,
                message: e.message,
            }
            .encode_to_vec(),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

impl App {
    /// The user of the request's bearer token, which must be an owner token: a cashier token is
    /// refused with 403 (the VSS, lease and hub endpoints are the merchant's devices' own).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<UserId, ApiError> {
        let caller = self.caller(headers).await?;
        if caller.role == Role::Cashier {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: ErrorCode::AuthException,
                message: "a cashier token may only create and view invoices; backups, leases and the hub need an owner token".to_owned(),
            });
        }
        Ok(caller.user)
    }

    /// The caller of the store API for `store` (a store name): its token must belong to that
    /// store, and, when `owner_only` names the action, be an owner token.
    pub(crate) async fn store_caller(
        &self,
        headers: &HeaderMap,
        store: &str,
        owner_only: Option<&str>,
    ) -> Result<Caller, JsonError> {
        let caller = self.caller(headers).await?;
        let owner = self
            .store
            .user_by_name(store, false)
            .await
            .map_err(JsonError::internal)?;
        if owner != Some(caller.user) {
            return Err(JsonError::new(
                StatusCode::FORBIDDEN,
                format!("this token does not belong to store {store:?}"),
            ));
        }
        if let Some(what) = owner_only {
            invoices::refuse_cashier(caller.role, what)?;
        }
        Ok(caller)
    }

    /// The user and role of the request's bearer token. Every failure is AUTH with a message
    /// that never repeats the token.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::auth("missing Authorization header; expected `Bearer TOKEN`")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::auth("the Authorization header is not `Bearer TOKEN`"))?;
        let invalid = || ApiError::auth("invalid bearer token");
        let (token_id, presented) = auth::parse(token.trim()).ok_or_else(invalid)?;
        let stored = self.store.credential(token_id).await?.ok_or_else(invalid)?;
        let user =
            auth::matches(&presented, &stored.secret_hash, stored.user).ok_or_else(invalid)?;
        Ok(Caller {
            user,
            role: stored.role,
        })
    }

    /// Reads at most `max_body_bytes` and decodes it: 413 over the limit, 400 if it does not decode.
    async fn read<M: Message + Default>(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<M, ApiError> {
        let too_large = || ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: ErrorCode::InvalidRequestException,
            message: format!(
                "request body is larger than this server's limit of {} bytes (--max-body-bytes)",
                self.max_body_bytes
            ),
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            drain(body, self.max_body_bytes).await;
            return Err(too_large());
        }
        let mut body = body;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::invalid(format!("could not read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > self.max_body_bytes {
                    drain(body, self.max_body_bytes).await;
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        M::decode(bytes.as_slice()).map_err(|e| {
            ApiError::invalid(format!(
                "request body is not a valid {} protobuf message: {e}",
                std::any::type_name::<M>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("request")
            ))
        })
    }
}

/// Reads and discards up to `4 * limit` more bytes of a refused body, so that the client, still
/// sending, reads our 413 instead of a reset connection; past that the connection is dropped.
async fn drain(body: Body, limit: usize) {
    let mut body = Limited::new(body, limit.saturating_mul(4));
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = &mut deadline => return,
        }
    }
}

fn check_store_id(store_id: &str) -> Result<(), ApiError> {
    let n = store_id.chars().count();
    if n > MAX_STORE_ID_CHARS {
        return Err(ApiError::invalid(format!(
            "store_id is {n} characters long; the limit is {MAX_STORE_ID_CHARS}"
        )));
    }
    Ok(())
}

fn check_key(key: &str, writable: bool) -> Result<(), ApiError> {
    let n = key.chars().count();
    if n > MAX_KEY_CHARS {
        return Err(ApiError::invalid(format!(
            "key is {n} characters long; the limit is {MAX_KEY_CHARS}"
        )));
    }
    if writable && key == GLOBAL_VERSION_KEY {
        return Err(ApiError::invalid(format!(
            "key {GLOBAL_VERSION_KEY:?} is reserved for the store's global version; use global_version"
        )));
    }
    Ok(())
}

/// The lease header that the transaction items carrying one agree on, if any carries one.
///
/// A value that starts with the lease magic is a head write and must carry a valid header: one
/// that does not decode is refused rather than stored unchecked. The epoch must fit PostgreSQL's
/// BIGINT; no client comes near that (every acquire adds 1). Two heads with different headers in
/// one request are refused, as no client sends them and the lease could not be both.
fn lease_of(items: &[KeyValue]) -> Result<Option<LeaseHeader>, ApiError> {
    let mut found: Option<(&str, LeaseHeader)> = None;
    for kv in items {
        if !kv.value.starts_with(&LEASE_MAGIC) {
            continue;
        }
        let header = LeaseHeader::decode(&kv.value).map_err(|e| {
            ApiError::invalid(format!(
                "transaction item {:?} starts with the lease magic \"TLSE\" but is not a valid head: {e}",
                kv.key
            ))
        })?;
        if i64::try_from(header.epoch).is_err() {
            return Err(ApiError::invalid(format!(
                "transaction item {:?} carries lease epoch {}, above this server's limit of {}",
                kv.key,
                header.epoch,
                i64::MAX
            )));
        }
        match found {
            Some((first, other)) if other != header => {
                return Err(ApiError::invalid(format!(
                    "transaction items {first:?} and {:?} carry different lease headers; a put may carry one lease",
                    kv.key
                )));
            }
            Some(_) => {}
            None => found = Some((&kv.key, header)),
        }
    }
    Ok(found.map(|(_, header)| header))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.store.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            eprintln!("till-server: health check failed: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response()
        }
    }
}

async fn get_object(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            let user = app.authenticate(&headers).await?;
            let request: GetObjectRequest = app.read(&headers, body).await?;
            check_store_id(&request.store_id)?;
            check_key(&request.key, false)?;
            if request.key == GLOBAL_VERSION_KEY {
                let version = app.store.global_version(user, &request.store_id).await?;
                let value = KeyValue {
                    key: request.key,
                    version,
                    value: Vec::new(),
                };
                return Ok(GetObjectResponse { value: Some(value) });
            }
            match app.store.get(user, &request.store_id, &request.key).await? {
                Some(object) => Ok(GetObjectResponse {
                    value: Some(KeyValue {
                        key: request.key,
                        version: object.version,
                        value: object.value,
                    }),
                }),
                None => Err(ApiError::new(
                    ErrorCode::NoSuchKeyException,
                    format!("no key {:?} in store {:?}", request.key, request.store_id),
                )),
            }
        }
        .await,
    )
}

async fn put_objects(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            let user = app.authenticate(&headers).await?;
            let request: PutObjectRequest = app.read(&headers, body).await?;
            check_store_id(&request.store_id)?;
            let items = request.transaction_items.len() + request.delete_items.len();
            if items > MAX_ITEMS {
                return Err(ApiError::invalid(format!(
                    "too many items: {items} transaction_items and delete_items together; the limit is {MAX_ITEMS} per request"
                )));
            }
            for kv in request.transaction_items.iter().chain(&request.delete_items) {
                check_key(&kv.key, true)?;
            }
            let lease = lease_of(&request.transaction_items)?.map(|header| LeaseWrite {
                header,
                enforce: app.lease_check,
            });
            let tx = PutTransaction {
                store_id: request.store_id,
                global_version: request.global_version,
                writes: request
                    .transaction_items
                    .into_iter()
                    .map(|kv| Write { key: kv.key, expected: kv.version, value: kv.value })
                    .collect(),
                deletes: request
                    .delete_items
                    .into_iter()
                    .map(|kv| Delete { key: kv.key, expected: kv.version })
                    .collect(),
                lease,
            };
            let header = tx.lease.as_ref().map(|l| l.header);
            match app.store.put(user, tx).await {
                Ok(()) => {
                    if let Some(header) = header
                        && let Err(e) = app.hub.head_written(user, &header).await
                    {
                        eprintln!("till-server: hub: re-reading the lease: {e}");
                    }
                    Ok(PutObjectResponse {})
                }
                Err(PutError::Conflict(c)) => Err(ApiError::new(
                    ErrorCode::ConflictException,
                    format!("nothing was written: {c}"),
                )),
                Err(PutError::Store(e)) => Err(ApiError::internal(e)),
            }
        }
        .await,
    )
}

async fn delete_object(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    respond(
        async {
            let user = app.authenticate(&headers).await?;
            let request: DeleteObjectRequest = app.read(&headers, body).await?;
            check_store_id(&request.store_id)?;
            let kv = request
                .key_value
                .ok_or_else(|| ApiError::invalid("DeleteObjectRequest has no key_value"))?;
            check_key(&kv.key, true)?;
            app.store
                .delete(user, &request.store_id, &kv.key, kv.version)
                .await?;
            Ok(DeleteObjectResponse {})
        }
        .await,
    )
}

async fn list_key_versions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let user = app.authenticate(&headers).await?;
            let request: ListKeyVersionsRequest = app.read(&headers, body).await?;
            check_store_id(&request.store_id)?;
            let page_size = request.page_size.unwrap_or(MAX_PAGE_SIZE);
            if page_size < 0 {
                return Err(ApiError::invalid(format!(
                    "page_size is {page_size}; it must not be negative"
                )));
            }
            let page_token = request.page_token.filter(|t| !t.is_empty());
            let before = match &page_token {
                None => None,
                Some(t) => Some(t.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    ApiError::invalid(
                        "page_token is not one this server issued; start again without it",
                    )
                })?),
            };
            // Read the global version before the keys, so every listed version is at least as new.
            let global_version = match before {
                None => Some(app.store.global_version(user, &request.store_id).await?),
                Some(_) => None,
            };
            if page_size == 0 {
                return Ok(ListKeyVersionsResponse {
                    key_versions: Vec::new(),
                    next_page_token: Some(String::new()),
                    global_version,
                });
            }
            let limit = page_size.min(MAX_PAGE_SIZE) as usize;
            let prefix = request.key_prefix.unwrap_or_default();
            let mut rows = app
                .store
                .list(user, &request.store_id, &prefix, before, limit + 1)
                .await?;
            let next_page_token = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|r| r.created.to_string())
            } else {
                Some(String::new())
            };
            Ok(ListKeyVersionsResponse {
                key_versions: rows
                    .into_iter()
                    .map(|r| KeyValue {
                        key: r.key,
                        version: r.version,
                        value: Vec::new(),
                    })
                    .collect(),
                next_page_token,
                global_version,
            })
        }
        .await,
    )
}

/// A JSON error answer of the lease API: the status of the protocol error, `{"error": message}`.
fn json_error(e: ApiError) -> Response {
    (e.status, Json(serde_json::json!({ "error": e.message }))).into_response()
}

/// `GET /api/v1/stores/{store_id}/lease`: the lease the store's last accepted head write left, for
/// the bearer token's user only (another user's store id reads as having none).
async fn get_lease(
    State(app): State<Arc<App>>,
    Path(store_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let user = app.authenticate(&headers).await?;
        check_store_id(&store_id)?;
        Ok(app.store.lease(user, &store_id).await?)
    }
    .await;
    match result {
        Ok(Some(lease)) => {
            let state = match lease.state {
                LeaseState::Held => "held",
                LeaseState::Released => "released",
            };
            Json(serde_json::json!({
                "store_id": store_id,
                "device": lease.device.to_string(),
                "epoch": lease.epoch,
                "state": state,
            }))
            .into_response()
        }
        Ok(None) => json_error(ApiError::new(
            ErrorCode::NoSuchKeyException,
            format!("store {store_id:?} has no lease: no head was ever written to it"),
        )),
        Err(e) => json_error(e),
    }
}

/// `GET /api/v1/hub`: upgrades an owner's connection to the device hub (see `hub`).
async fn hub_upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match app.authenticate(&headers).await {
        Ok(user) => ws.on_upgrade(move |socket| crate::hub::serve(app, user, socket)),
        Err(e) => json_error(e),
    }
}
