//! The store API (JSON, shells/server/openapi.yaml): invoices created through the store's master
//! device and tracked here (new, paid, expired), their status changes as a server-sent event
//! stream, QR codes, and the owner-only commands (pay, refund, balances, payments) that go to the
//! master over the hub.

use crate::http::{App, Caller, JsonError};
use crate::hub::HubError;
use crate::store::{InvoiceRecord, InvoiceStatus, Role, StoreError, UserId};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Default invoice lifetime when `expiry_secs` is not given.
pub(crate) const DEFAULT_EXPIRY_SECS: u64 = 900;
/// Longest invoice lifetime accepted: one week.
const MAX_EXPIRY_SECS: u64 = 7 * 24 * 3600;
/// Largest invoice: 0.1 BTC, far above a till's sale and below any overflow.
const MAX_AMOUNT_SAT: u64 = 10_000_000;
/// Longest description BOLT11 allows in the invoice itself.
const MAX_DESCRIPTION_BYTES: usize = 639;
/// Longest BOLT11 invoice taken from the master: far above one with the longest description, and
/// below what a QR code holds (3391 letters and digits at level M, `lightning:` included), so
/// every stored invoice has its QR code.
const MAX_BOLT11_CHARS: usize = 3000;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An invoice status change, for the event streams.
#[derive(Clone, Debug)]
pub(crate) struct InvoiceEvent {
    pub(crate) user: UserId,
    pub(crate) record: InvoiceRecord,
}

fn invoice_json(record: &InvoiceRecord) -> Value {
    json!({
        "id": record.id,
        "bolt11": record.bolt11,
        "amount_sat": record.amount_sat,
        "description": record.description,
        "status": record.status,
        "created_at_ms": record.created_ms,
        "expires_at_ms": record.expires_ms,
        "paid_at_ms": record.paid_ms,
        "received_msat": record.received_msat,
    })
}

fn hub_error(e: HubError) -> JsonError {
    let status = match &e {
        HubError::NoMaster { .. } => StatusCode::SERVICE_UNAVAILABLE,
        HubError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        HubError::Refused(_) => StatusCode::BAD_GATEWAY,
        HubError::Store(_) => return JsonError::internal_text(&e.to_string()),
    };
    JsonError::new(status, e.to_string())
}

/// Marks the store's invoice with this payment hash paid (if it is still new) and tells the
/// subscribers. Payments of unknown hashes (invoices made on the device itself) are ignored.
pub(crate) async fn paid(
    app: &App,
    user: UserId,
    payment_hash: &str,
    amount_msat: Option<u64>,
) -> Result<(), StoreError> {
    if let Some(record) = app
        .store
        .finish_invoice(
            user,
            payment_hash,
            InvoiceStatus::Paid,
            now_ms(),
            amount_msat,
        )
        .await?
    {
        announce(app, user, record).await;
    }
    Ok(())
}

/// Tells this process's event streams of an invoice's change, and the other server processes of
/// the database, if it is shared (they tell theirs).
async fn announce(app: &App, user: UserId, record: InvoiceRecord) {
    if let Some(share) = app.hub.share() {
        let what = crate::share::What::Invoice {
            id: record.id.clone(),
            record: Some(record.clone()),
        };
        if let Err(e) = share.publish(user, what).await {
            eprintln!("till-server: telling the other server processes of an invoice change: {e}");
        }
    }
    let _ = app.invoice_events.send(InvoiceEvent { user, record });
}

/// Marks the invoice expired if it is still new and past its expiry; returns the current record.
async fn settle_expiry(
    app: &App,
    user: UserId,
    record: InvoiceRecord,
) -> Result<InvoiceRecord, StoreError> {
    if record.status != InvoiceStatus::New || now_ms() < record.expires_ms {
        return Ok(record);
    }
    match app
        .store
        .finish_invoice(user, &record.id, InvoiceStatus::Expired, now_ms(), None)
        .await?
    {
        Some(changed) => {
            announce(app, user, changed.clone()).await;
            Ok(changed)
        }
        // Paid (or expired) meanwhile: read what won.
        None => Ok(app.store.invoice(user, &record.id).await?.unwrap_or(record)),
    }
}

/// Restores the expiry timers a restart lost: every invoice still `new` (of any user) expires
/// at its time, or at once if that passed while the server was down, and its subscribers hear
/// of it. Returns how many it found.
pub(crate) async fn resume_expiries(app: &Arc<App>) -> Result<usize, StoreError> {
    let since_ms = now_ms() - (MAX_EXPIRY_SECS * 1000) as i64;
    let open = app.store.open_invoices(since_ms).await?;
    let found = open.len();
    for (user, record) in open {
        schedule_expiry(app.clone(), user, record);
    }
    Ok(found)
}

/// Expires the invoice at its expiry unless it was paid first. The timers live in memory:
/// [`resume_expiries`] sets them again when the server starts, and reads expire overdue invoices
/// too, so the status is never wrong when looked at.
fn schedule_expiry(app: Arc<App>, user: UserId, record: InvoiceRecord) {
    tokio::spawn(async move {
        let wait = (record.expires_ms - now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait + 50)).await;
        if let Err(e) = settle_expiry(&app, user, record).await {
            eprintln!("till-server: expiring an invoice: {e}");
        }
    });
}

fn field_u64(body: &Value, name: &str) -> Result<Option<u64>, JsonError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            JsonError::bad_request(format!("{name} must be a whole number of at least 0"))
        }),
    }
}

fn field_str<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, JsonError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| JsonError::bad_request(format!("{name} must be a string"))),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, JsonError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| JsonError::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(JsonError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// `POST /api/v1/stores/{store}/invoices` (owner or cashier).
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result: Result<Response, JsonError> = async {
        let caller = app.store_caller(&headers, &store, None).await?;
        let body = parse_body(&body)?;
        let amount_sat = field_u64(&body, "amount_sat")?
            .ok_or_else(|| JsonError::bad_request("amount_sat is required"))?;
        if amount_sat == 0 || amount_sat > MAX_AMOUNT_SAT {
            return Err(JsonError::bad_request(format!(
                "amount_sat must be between 1 and {MAX_AMOUNT_SAT}, not {amount_sat}"
            )));
        }
        let description = field_str(&body, "description")?.unwrap_or("").to_owned();
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(JsonError::bad_request(format!(
                "description is {} bytes long; the limit is {MAX_DESCRIPTION_BYTES}",
                description.len()
            )));
        }
        let expiry_secs = field_u64(&body, "expiry_secs")?.unwrap_or(DEFAULT_EXPIRY_SECS);
        if expiry_secs == 0 || expiry_secs > MAX_EXPIRY_SECS {
            return Err(JsonError::bad_request(format!(
                "expiry_secs must be between 1 and {MAX_EXPIRY_SECS}, not {expiry_secs}"
            )));
        }
        let created_ms = now_ms();
        let answer = app
            .hub
            .execute(
                caller.user,
                &store,
                json!({
                    "kind": "create_invoice",
                    "amount_sat": amount_sat,
                    "description": description,
                    "expiry_secs": expiry_secs,
                }),
            )
            .await
            .map_err(hub_error)?;
        let text = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    JsonError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the master device's answer has no {name}"),
                    )
                })
        };
        let bolt11 = text("bolt11")?;
        if bolt11.is_empty()
            || bolt11.len() > MAX_BOLT11_CHARS
            || !bolt11.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(JsonError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the master device's answer is not a BOLT11 invoice (at most {MAX_BOLT11_CHARS} letters and digits): {} characters",
                    bolt11.chars().count()
                ),
            ));
        }
        let record = InvoiceRecord {
            id: text("payment_hash")?,
            bolt11,
            amount_sat,
            description,
            status: InvoiceStatus::New,
            created_ms,
            expires_ms: created_ms + (expiry_secs * 1000) as i64,
            paid_ms: None,
            received_msat: None,
        };
        app.store
            .put_invoice(caller.user, &record)
            .await
            .map_err(JsonError::internal)?;
        announce(&app, caller.user, record.clone()).await;
        schedule_expiry(app.clone(), caller.user, record.clone());
        Ok((StatusCode::CREATED, Json(invoice_json(&record))).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/stores/{store}/invoices` (owner or cashier): newest first.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, JsonError> = async {
        let caller = app.store_caller(&headers, &store, None).await?;
        let mut out = Vec::new();
        for record in app
            .store
            .invoices(caller.user)
            .await
            .map_err(JsonError::internal)?
        {
            let record = settle_expiry(&app, caller.user, record)
                .await
                .map_err(JsonError::internal)?;
            out.push(invoice_json(&record));
        }
        Ok(Json(Value::Array(out)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn one(
    app: &Arc<App>,
    caller: Caller,
    store: &str,
    id: &str,
) -> Result<InvoiceRecord, JsonError> {
    let record = app
        .store
        .invoice(caller.user, id)
        .await
        .map_err(JsonError::internal)?
        .ok_or_else(|| {
            JsonError::new(
                StatusCode::NOT_FOUND,
                format!("store {store:?} has no invoice {id:?}"),
            )
        })?;
    settle_expiry(app, caller.user, record)
        .await
        .map_err(JsonError::internal)
}

/// `GET /api/v1/stores/{store}/invoices/{id}` (owner or cashier).
pub(crate) async fn get(
    State(app): State<Arc<App>>,
    Path((store, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, JsonError> = async {
        let caller = app.store_caller(&headers, &store, None).await?;
        let record = one(&app, caller, &store, &id).await?;
        Ok(Json(invoice_json(&record)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/stores/{store}/invoices/{id}/qr.svg` (owner or cashier): the BOLT11 invoice as a
/// QR code, uppercased (the alphanumeric mode makes a smaller code) with the `lightning:` scheme.
pub(crate) async fn qr(
    State(app): State<Arc<App>>,
    Path((store, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, JsonError> = async {
        let caller = app.store_caller(&headers, &store, None).await?;
        let record = one(&app, caller, &store, &id).await?;
        let data = format!("lightning:{}", record.bolt11).to_uppercase();
        let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
            .map_err(|e| JsonError::internal_text(&format!("QR encoding failed: {e}")))?;
        let svg = code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .build();
        Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/stores/{store}/invoices/events` (owner or cashier): a server-sent event stream,
/// one `invoice` event (the invoice's JSON) for every invoice created, paid or expired.
pub(crate) async fn events(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match app.store_caller(&headers, &store, None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let rx = app.invoice_events.subscribe();
    let user = caller.user;
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) if event.user == user => {
                    let data = invoice_json(&event.record).to_string();
                    let sse = Event::default().event("invoice").data(data);
                    return Some((Ok::<_, Infallible>(sse), rx));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // A slow reader missed events; tell it to re-read the list.
                    let sse = Event::default().event("lagged").data("{}");
                    return Some((Ok(sse), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Forwards an owner-only command to the master and answers its result.
async fn owner_command(
    app: &Arc<App>,
    headers: &HeaderMap,
    store: &str,
    what: &'static str,
    command: impl FnOnce() -> Result<Value, JsonError>,
) -> Response {
    let result: Result<Response, JsonError> = async {
        let caller = app.store_caller(headers, store, Some(what)).await?;
        let command = command()?;
        let value = app
            .hub
            .execute(caller.user, store, command)
            .await
            .map_err(hub_error)?;
        Ok(Json(value).into_response())
    }
    .await;
    result.unwrap_or_else(|e: JsonError| e.into_response())
}

/// `POST /api/v1/stores/{store}/pay` (owner): `{bolt11, amount_msat?}`.
pub(crate) async fn pay(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    owner_command(&app, &headers, &store, "paying", || {
        let body = parse_body(&body)?;
        let bolt11 = field_str(&body, "bolt11")?
            .ok_or_else(|| JsonError::bad_request("bolt11 is required"))?;
        let amount_msat = field_u64(&body, "amount_msat")?;
        Ok(json!({ "kind": "pay", "bolt11": bolt11, "amount_msat": amount_msat }))
    })
    .await
}

/// `POST /api/v1/stores/{store}/refund` (owner): `{payment_id, bolt11, amount_msat?}`.
pub(crate) async fn refund(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    owner_command(&app, &headers, &store, "refunding", || {
        let body = parse_body(&body)?;
        let payment_id = field_str(&body, "payment_id")?
            .ok_or_else(|| JsonError::bad_request("payment_id is required"))?;
        let bolt11 = field_str(&body, "bolt11")?
            .ok_or_else(|| JsonError::bad_request("bolt11 is required"))?;
        let amount_msat = field_u64(&body, "amount_msat")?;
        Ok(json!({
            "kind": "refund",
            "payment_id": payment_id,
            "bolt11": bolt11,
            "amount_msat": amount_msat,
        }))
    })
    .await
}

/// `GET /api/v1/stores/{store}/balances` (owner).
pub(crate) async fn balances(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Response {
    owner_command(&app, &headers, &store, "reading balances", || {
        Ok(json!({ "kind": "balances" }))
    })
    .await
}

/// `GET /api/v1/stores/{store}/payments` (owner).
pub(crate) async fn payments(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Response {
    owner_command(&app, &headers, &store, "listing payments", || {
        Ok(json!({ "kind": "payments" }))
    })
    .await
}

/// Refuses a cashier token for `what`, naming what it may do instead.
pub(crate) fn refuse_cashier(role: Role, what: &str) -> Result<(), JsonError> {
    match role {
        Role::Owner => Ok(()),
        Role::Cashier => Err(JsonError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a cashier token may only create and view invoices; {what} needs an owner token"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::store::Storage;
    use crate::store::redb::RedbStorage;

    fn record(id: &str, status: InvoiceStatus, created_ms: i64, expires_ms: i64) -> InvoiceRecord {
        InvoiceRecord {
            id: id.to_owned(),
            bolt11: format!("lnbcrt10u1{id}"),
            amount_sat: 1000,
            description: String::new(),
            status,
            created_ms,
            expires_ms,
            paid_ms: None,
            received_msat: None,
        }
    }

    /// A server that starts over a file holding open invoices (as after a restart) expires them
    /// on time and tells the status streams: one overdue while it was down at once, one later at
    /// its expiry; paid and long-gone invoices are left alone.
    #[tokio::test]
    async fn a_started_server_expires_the_invoices_a_restart_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path()).unwrap());
        let (_, credential) = crate::auth::issue();
        let user = store.create_user("shop", &credential).await.unwrap();
        let (_, credential) = crate::auth::issue();
        let other = store.create_user("other", &credential).await.unwrap();
        let now = now_ms();
        let week_ms = (MAX_EXPIRY_SECS * 1000) as i64;
        let records = [
            (
                user,
                record("overdue", InvoiceStatus::New, now - 60_000, now - 1_000),
            ),
            (other, record("later", InvoiceStatus::New, now, now + 700)),
            (user, record("paid", InvoiceStatus::Paid, now, now - 1_000)),
            (
                user,
                record(
                    "ancient",
                    InvoiceStatus::New,
                    now - 2 * week_ms,
                    now - week_ms,
                ),
            ),
        ];
        for (owner, r) in &records {
            store.put_invoice(*owner, r).await.unwrap();
        }
        let app = Arc::new(App {
            store: store.clone(),
            max_body_bytes: 1 << 20,
            lease_check: true,
            hub: Hub::new(
                store.clone(),
                None,
                None,
                crate::DEFAULT_HEARTBEAT,
                Duration::from_secs(5),
            ),
            invoice_events: tokio::sync::broadcast::channel(16).0,
            public_url: "http://till.invalid/".to_owned(),
        });
        let mut events = app.invoice_events.subscribe();

        assert_eq!(resume_expiries(&app).await.unwrap(), 2);
        let mut expired = Vec::new();
        for _ in 0..2 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an expiry within 10 s")
                .unwrap();
            assert_eq!(event.record.status, InvoiceStatus::Expired);
            expired.push((event.user, event.record.id));
        }
        assert_eq!(
            expired,
            [(user, "overdue".to_owned()), (other, "later".to_owned())]
        );
        assert!(now_ms() >= now + 700, "the later one waited for its expiry");
        let paid = store.invoice(user, "paid").await.unwrap().unwrap();
        assert_eq!(paid.status, InvoiceStatus::Paid);
        let stored = store.invoice(other, "later").await.unwrap().unwrap();
        assert_eq!(stored.status, InvoiceStatus::Expired);
        assert!(events.try_recv().is_err(), "nothing else was expired");
    }
}
