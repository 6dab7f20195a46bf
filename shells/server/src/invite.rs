//! Invitations: an operator creates a single-use, expiring link for a store (creating the store if
//! it is new); a device redeems it once and gets an owner token, its store and the server's
//! details. Only the blake3 hash of an invitation code is stored.

use crate::http::{App, JsonError};
use crate::store::{Invite, RedeemError, Storage};
use crate::{Backend, Error, auth, open};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An invitation's lifetime unless the operator says otherwise: one day.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Invitation codes: 24 random bytes, as 48 hex digits.
const CODE_BYTES: usize = 24;

/// A created invitation.
#[derive(Debug)]
#[non_exhaustive]
pub struct Invitation {
    /// The link to give the merchant: `{public_url}/invite/{code}`.
    pub link: String,
    /// The store it pairs a device with.
    pub store: String,
    /// Unix milliseconds after which it no longer redeems.
    pub expires_at_ms: i64,
}

pub(crate) fn code_hash(code: &str) -> [u8; 32] {
    *blake3::hash(code.as_bytes()).as_bytes()
}

/// Trims a trailing slash so links and URLs join cleanly.
pub(crate) fn base_url(public_url: &str) -> String {
    public_url.trim_end_matches('/').to_owned()
}

/// The public URL links are built from when neither the caller nor a running server gives one.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// Creates a single-use invitation to store `store` (created if new) valid for `ttl`, as a link
/// under `public_url`.
///
/// On redb, when a server runs on the data directory (which holds the store's file locked), the
/// invitation is created by that server, through its admin socket (`<data-dir>/admin.sock`), and
/// `public_url` defaults to the server's own; otherwise the store is opened here and `public_url`
/// defaults to [`DEFAULT_PUBLIC_URL`].
pub async fn create_invite(
    backend: &Backend,
    store: &str,
    public_url: Option<&str>,
    ttl: Duration,
) -> Result<Invitation, Error> {
    crate::check_store_name(store)?;
    if let Backend::Redb { data_dir } = backend
        && let Some(answer) = crate::admin::request_invite(data_dir, store, public_url, ttl).await
    {
        return answer;
    }
    let storage = open(backend).await?;
    create_in(
        storage.as_ref(),
        store,
        public_url.unwrap_or(DEFAULT_PUBLIC_URL),
        ttl,
    )
    .await
}

/// Creates the invitation in an open store.
pub(crate) async fn create_in(
    storage: &dyn Storage,
    store: &str,
    public_url: &str,
    ttl: Duration,
) -> Result<Invitation, Error> {
    crate::check_store_name(store)?;
    let user = storage
        .user_by_name(store, true)
        .await?
        .ok_or_else(|| Error::NoSuchStore {
            name: store.to_owned(),
        })?;
    let mut bytes = [0u8; CODE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let code = auth::hex(&bytes);
    // An absurd lifetime means "never", not an overflow into the past.
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = crate::invoices::now_ms().saturating_add(ttl_ms);
    storage
        .create_invite(
            code_hash(&code),
            Invite {
                user,
                expires_ms: expires_at_ms,
            },
        )
        .await?;
    Ok(Invitation {
        link: format!("{}/invite/{code}", base_url(public_url)),
        store: store.to_owned(),
        expires_at_ms,
    })
}

/// `POST /api/v1/invites/redeem` `{code, device_id}`: pairs the device, answering its owner token,
/// store and the server's URLs (and Lightning node, if configured). A code works once.
pub(crate) async fn redeem(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let result = async {
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| JsonError::bad_request(format!("the body is not JSON: {e}")))?;
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonError::bad_request("code is required"))?;
        // A whole link is accepted too.
        let code = code.rsplit('/').next().unwrap_or(code).trim();
        let device = body
            .get("device_id")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonError::bad_request("device_id is required"))?;
        if device.len() != 32 || !device.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JsonError::bad_request(
                "device_id must be 32 hex digits (the device's id)",
            ));
        }
        let (token, credential) = auth::issue();
        let now = crate::invoices::now_ms();
        let user = match app.store.redeem_invite(code_hash(code), now, &credential).await {
            Ok(user) => user,
            Err(RedeemError::Unknown) => {
                return Err(JsonError::new(
                    StatusCode::NOT_FOUND,
                    "this invitation code is not known to this server; check the link",
                ));
            }
            Err(RedeemError::Used { .. }) => {
                return Err(JsonError::new(
                    StatusCode::GONE,
                    "this invitation was already used; invitations work once, ask the operator for a new one",
                ));
            }
            Err(RedeemError::Expired { .. }) => {
                return Err(JsonError::new(
                    StatusCode::GONE,
                    "this invitation has expired; ask the operator for a new one",
                ));
            }
            Err(RedeemError::Store(e)) => return Err(JsonError::internal(e)),
        };
        let store = app
            .store
            .user_name(user)
            .await
            .map_err(JsonError::internal)?;
        eprintln!("till-server: device {device} paired with store {store:?} by invitation");
        let base = base_url(&app.public_url);
        let ws = base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        Ok(Json(json!({
            "token": token,
            "role": "owner",
            "store": store,
            "device_id": device,
            "server_url": base,
            "vss_url": format!("{base}/vss"),
            "hub_url": format!("{ws}/api/v1/hub"),
            "pos_url": format!("{base}/pos/{store}"),
            "node_address": app.hub.node_address,
        }))
        .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
