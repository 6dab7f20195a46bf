//! The HTTP client for the four VSS calls.

use crate::auth::AuthProvider;
use crate::error::{Error, Operation};
use crate::proto::{
    DeleteObjectRequest, DeleteObjectResponse, ErrorCode, ErrorResponse, GetObjectRequest,
    GetObjectResponse, KeyValue, ListKeyVersionsRequest, ListKeyVersionsResponse, PutObjectRequest,
    PutObjectResponse,
};
use crate::retry::RetryPolicy;
use prost::Message;
use rand::SeedableRng;
use reqwest::header::CONTENT_TYPE;
use std::sync::Arc;
use std::time::Duration;

/// How a [`VssClient`] talks to its server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The whole exchange (connect, send, receive) of one attempt must finish within this.
    pub request_timeout: Duration,
    /// Connecting alone must finish within this.
    pub connect_timeout: Duration,
    /// What to retry, how often and how patiently.
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    /// 30 s per request (a large put on a slow link), 10 s to connect, [`RetryPolicy::default`].
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// A client for one VSS server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct VssClient {
    base_url: String,
    http: reqwest::Client,
    auth: Arc<dyn AuthProvider>,
    config: ClientConfig,
}

impl std::fmt::Debug for VssClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VssClient")
            .field("base_url", &self.base_url)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build the VSS HTTP client: {source}")]
#[non_exhaustive]
pub struct BuildError {
    #[source]
    source: reqwest::Error,
}

/// The most pages [`VssClient::list_all_key_versions`] follows: 10 million keys at the protocol's
/// 100 keys a page, far past any store Till writes.
pub const MAX_LISTING_PAGES: usize = 100_000;

/// The most keys [`VssClient::list_all_key_versions`] collects.
pub const MAX_LISTED_KEYS: usize = 10_000_000;

impl VssClient {
    /// A client for the server whose VSS endpoints live under `base_url` (for Till's server and the
    /// reference server, `http://host:port/vss`), sending `auth`'s headers with every request.
    pub fn new(
        base_url: impl Into<String>,
        auth: impl AuthProvider + 'static,
        config: ClientConfig,
    ) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|source| BuildError { source })?;
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Ok(VssClient {
            base_url,
            http,
            auth: Arc::new(auth),
            config,
        })
    }

    /// The base URL the calls go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The current value and version of `key` in `store_id`. A missing key is
    /// [`Error::NoSuchKey`].
    pub async fn get_object(&self, store_id: &str, key: &str) -> Result<KeyValue, Error> {
        let request = GetObjectRequest {
            store_id: store_id.to_owned(),
            key: key.to_owned(),
        };
        let response: GetObjectResponse =
            self.call(Operation::GetObject, &request)
                .await
                .map_err(|e| match e {
                    Error::NoSuchKey { op, message, .. } => Error::NoSuchKey {
                        op,
                        store_id: store_id.to_owned(),
                        key: key.to_owned(),
                        message,
                    },
                    e => e,
                })?;
        response.value.ok_or_else(|| Error::UnexpectedResponse {
            op: Operation::GetObject,
            status: 200,
            attempts: 1,
            detail: "success response without a value".into(),
        })
    }

    /// Writes and deletes in one all-or-nothing transaction. A version mismatch anywhere is
    /// [`Error::Conflict`] and changes nothing.
    ///
    /// A put that timed out or lost its connection is retried; if the first attempt did land, the
    /// retry then answers [`Error::Conflict`] for conditional items. Callers that need to tell
    /// "already applied" from "someone else wrote" must re-read and compare.
    pub async fn put_objects(&self, request: &PutObjectRequest) -> Result<(), Error> {
        let _: PutObjectResponse = self.call(Operation::PutObjects, request).await?;
        Ok(())
    }

    /// Deletes `key` at `version` (-1: whatever version). Deleting a missing key, or at another
    /// version, succeeds and changes nothing.
    pub async fn delete_object(
        &self,
        store_id: &str,
        key: &str,
        version: i64,
    ) -> Result<(), Error> {
        let request = DeleteObjectRequest {
            store_id: store_id.to_owned(),
            key_value: Some(KeyValue::new(key, version, Vec::new())),
        };
        let _: DeleteObjectResponse = self.call(Operation::DeleteObject, &request).await?;
        Ok(())
    }

    /// One page of keys and versions, newest first.
    pub async fn list_key_versions(
        &self,
        request: &ListKeyVersionsRequest,
    ) -> Result<ListKeyVersionsResponse, Error> {
        self.call(Operation::ListKeyVersions, request).await
    }

    /// Every key (with `prefix`, if given) and its version, following the pages to the end, with
    /// the global version from the first page.
    ///
    /// A server whose listing does not end is refused with [`Error::UnexpectedResponse`]: a page
    /// that hands back the token it was asked with, more than [`MAX_LISTING_PAGES`] pages or more
    /// than [`MAX_LISTED_KEYS`] keys.
    pub async fn list_all_key_versions(
        &self,
        store_id: &str,
        prefix: Option<&str>,
    ) -> Result<(Vec<KeyValue>, i64), Error> {
        self.list_all_with_limits(store_id, prefix, MAX_LISTING_PAGES, MAX_LISTED_KEYS)
            .await
    }

    async fn list_all_with_limits(
        &self,
        store_id: &str,
        prefix: Option<&str>,
        max_pages: usize,
        max_keys: usize,
    ) -> Result<(Vec<KeyValue>, i64), Error> {
        let endless = |detail: String| Error::UnexpectedResponse {
            op: Operation::ListKeyVersions,
            status: 200,
            attempts: 1,
            detail,
        };
        let mut keys = Vec::new();
        let mut global_version = 0;
        let mut page_token = None;
        let mut pages = 0;
        loop {
            if pages == max_pages {
                return Err(endless(format!(
                    "the listing does not end: more than {max_pages} pages"
                )));
            }
            pages += 1;
            let request = ListKeyVersionsRequest {
                store_id: store_id.to_owned(),
                key_prefix: prefix.map(str::to_owned),
                page_size: None,
                page_token: page_token.take(),
            };
            let page = self.list_key_versions(&request).await?;
            if request.page_token.is_none() {
                global_version = page.global_version.unwrap_or(0);
            }
            keys.extend(page.key_versions);
            if keys.len() > max_keys {
                return Err(endless(format!(
                    "the listing does not end: more than {max_keys} keys"
                )));
            }
            match page.next_page_token {
                // The same token again would ask for the same page forever.
                Some(token) if request.page_token.as_ref() == Some(&token) => {
                    return Err(endless(
                        "the listing does not end: a page gave back the token it was asked with"
                            .to_owned(),
                    ));
                }
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => return Ok((keys, global_version)),
            }
        }
    }

    async fn call<Rq: Message, Rs: Message + Default>(
        &self,
        op: Operation,
        request: &Rq,
    ) -> Result<Rs, Error> {
        let body = request.encode_to_vec();
        let url = format!("{}/{}", self.base_url, op.path());
        let mut attempt = 1;
        let mut rng = rand::rngs::StdRng::from_entropy();
        loop {
            match self.attempt(op, &url, &body).await {
                Ok(response) => return Ok(response),
                Err(mut error) => {
                    error.set_attempts(attempt);
                    if !error.is_transient() || attempt >= self.config.retry.max_attempts {
                        return Err(error);
                    }
                    tokio::time::sleep(self.config.retry.backoff(attempt, &mut rng)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt<Rs: Message + Default>(
        &self,
        op: Operation,
        url: &str,
        body: &[u8],
    ) -> Result<Rs, Error> {
        let headers = self
            .auth
            .headers(body)
            .await
            .map_err(|source| Error::AuthProvider { op, source })?;
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                Error::Timeout {
                    op,
                    url: url.to_owned(),
                    timeout: self.config.request_timeout,
                    attempts: 1,
                }
            } else {
                Error::Connection {
                    op,
                    url: url.to_owned(),
                    attempts: 1,
                    source,
                }
            }
        };
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let payload = response.bytes().await.map_err(transport)?;
        decode_response(op, status, &payload)
    }
}

/// What one answer of the server means: a 2xx body decoded as the call's response message, or the
/// error its body names. Everything the client makes of a response's bytes happens here, so the
/// fuzz target `vss_responses` checks exactly this (through [`crate::fuzzing::vss_response`]).
///
/// A 2xx body that does not decode is [`Error::UnexpectedResponse`]; any other status is an error,
/// mapped by [`error_from_response`]. Errors count one attempt; the caller sets the real count.
pub(crate) fn decode_response<Rs: Message + Default>(
    op: Operation,
    status: u16,
    payload: &[u8],
) -> Result<Rs, Error> {
    if (200..300).contains(&status) {
        return Rs::decode(payload).map_err(|e| Error::UnexpectedResponse {
            op,
            status,
            attempts: 1,
            detail: format!("success body does not decode as the response message: {e}"),
        });
    }
    Err(error_from_response(op, status, payload))
}

/// The most of an error response's `message` an [`Error`] keeps, in bytes (after escaping).
/// The message comes from the server, which Till does not trust (it seals what it stores there),
/// and ends up in logs and on terminals: Till's own server's messages are a line, so this keeps
/// every real one whole and stops a broken or hostile server from filling a log with one error.
pub(crate) const MESSAGE_LIMIT: usize = 1024;

/// The server's `message` as an [`Error`] carries it: control characters (escape sequences, line
/// breaks) escaped as `\u{..}` so an error stays one inert line, and cut at [`MESSAGE_LIMIT`]
/// bytes, saying how long it was. A message that has neither comes back unchanged.
fn server_message(raw: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(raw.len().min(MESSAGE_LIMIT));
    for c in raw.chars() {
        let before = out.len();
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
        if out.len() > MESSAGE_LIMIT {
            out.truncate(before);
            let _ = write!(out, "... (cut; {} bytes in all)", raw.len());
            break;
        }
    }
    out
}

/// Maps an error response by its `error_code` (never by the status alone). An empty body or one
/// that is no `ErrorResponse` (a proxy's error page) is [`Error::UnexpectedResponse`], transient
/// for a 5xx or 429: an empty body would decode as code UNKNOWN, which is never retried, and proxies
/// answer 502 or 503 with an empty body while the server is restarting.
fn error_from_response(op: Operation, status: u16, payload: &[u8]) -> Error {
    let unexpected = |detail: String| Error::UnexpectedResponse {
        op,
        status,
        attempts: 1,
        detail,
    };
    if payload.is_empty() {
        return unexpected("empty error body, not a VSS ErrorResponse".to_owned());
    }
    let Ok(response) = ErrorResponse::decode(payload) else {
        return unexpected(format!(
            "error body ({} bytes) is not a VSS ErrorResponse",
            payload.len()
        ));
    };
    let message = server_message(&response.message);
    match ErrorCode::from_i32(response.error_code).ok_or(()) {
        Ok(ErrorCode::ConflictException) => Error::Conflict { op, message },
        Ok(ErrorCode::NoSuchKeyException) => Error::NoSuchKey {
            op,
            store_id: String::new(),
            key: String::new(),
            message,
        },
        Ok(ErrorCode::InvalidRequestException) => Error::InvalidRequest {
            op,
            status,
            message,
        },
        Ok(ErrorCode::AuthException) => Error::Auth { op, message },
        Ok(ErrorCode::InternalServerException) => Error::Internal {
            op,
            attempts: 1,
            message,
        },
        Ok(ErrorCode::Unknown) | Err(_) => Error::UnknownErrorCode {
            op,
            status,
            code: response.error_code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(code: ErrorCode) -> Vec<u8> {
        ErrorResponse {
            error_code: code as i32,
            message: "m".into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn errors_are_decided_by_code_not_status() {
        // An old server sends every error as 500: the code still decides.
        let e = error_from_response(
            Operation::PutObjects,
            500,
            &encoded(ErrorCode::ConflictException),
        );
        assert!(matches!(e, Error::Conflict { .. }));
        assert!(!e.is_transient());
        let e = error_from_response(
            Operation::GetObject,
            500,
            &encoded(ErrorCode::NoSuchKeyException),
        );
        assert!(matches!(e, Error::NoSuchKey { .. }));
        let e = error_from_response(
            Operation::GetObject,
            500,
            &encoded(ErrorCode::AuthException),
        );
        assert!(matches!(e, Error::Auth { .. }) && !e.is_transient());
        let e = error_from_response(
            Operation::GetObject,
            409,
            &encoded(ErrorCode::InternalServerException),
        );
        assert!(matches!(e, Error::Internal { .. }) && e.is_transient());
    }

    /// A one-trick HTTP server on loopback: answers every request with `status` and `body` (or never
    /// answers, when `status` is 0) and counts the requests.
    async fn fixed_server(
        status: u16,
        body: Vec<u8>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        answering_server(status, move |_| body.clone()).await
    }

    /// A loopback server answering request number n (from 0) with `body(n)`.
    async fn answering_server(
        status: u16,
        body: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = Arc::new(body);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut read = Vec::new();
                    loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        read.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&read).to_lowercase();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if read.len() < end + 4 + length {
                            continue;
                        }
                        read.drain(..end + 4 + length);
                        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = body(n);
                        if status == 0 {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.write_all(&body).await;
                    }
                });
            }
        });
        (format!("http://{addr}/vss"), count)
    }

    fn client(url: &str, attempts: u32, timeout: Duration) -> VssClient {
        let config = ClientConfig {
            request_timeout: timeout,
            connect_timeout: timeout,
            retry: RetryPolicy {
                max_attempts: attempts,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
            },
        };
        VssClient::new(url, crate::FixedHeaders::none(), config).unwrap()
    }

    #[tokio::test]
    async fn internal_errors_are_retried_until_attempts_run_out() {
        let (url, count) = fixed_server(500, encoded(ErrorCode::InternalServerException)).await;
        let e = client(&url, 4, Duration::from_secs(5))
            .get_object("s", "k")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Internal { attempts: 4, .. }), "{e}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// A server whose pages never end (every page hands back the token it was asked with) is
    /// refused after the second page instead of being asked forever.
    #[tokio::test]
    async fn a_listing_that_repeats_its_page_token_is_refused() {
        let page = ListKeyVersionsResponse {
            key_versions: vec![KeyValue::new("k", 1, Vec::new())],
            next_page_token: Some("t".into()),
            global_version: Some(3),
        }
        .encode_to_vec();
        let (url, count) = fixed_server(200, page).await;
        let e = client(&url, 1, Duration::from_secs(5))
            .list_all_key_versions("s", None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::UnexpectedResponse { .. }) && e.to_string().contains("does not end"),
            "{e}"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_listing_that_never_ends_is_cut_off() {
        // Every page a new token: followed up to the page limit, then refused.
        let (url, count) = answering_server(200, |n| {
            ListKeyVersionsResponse {
                key_versions: vec![KeyValue::new(format!("k{n}"), 1, Vec::new())],
                next_page_token: Some(format!("t{n}")),
                global_version: Some(3),
            }
            .encode_to_vec()
        })
        .await;
        let c = client(&url, 1, Duration::from_secs(5));
        let e = c
            .list_all_with_limits("s", None, 20, usize::MAX)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::UnexpectedResponse { .. })
                && e.to_string().contains("more than 20 pages"),
            "{e}"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 20);
        // Pages of many keys: refused past the key limit.
        let (url, _) = answering_server(200, |n| {
            ListKeyVersionsResponse {
                key_versions: (0..100)
                    .map(|i| KeyValue::new(format!("k{n}/{i}"), 1, Vec::new()))
                    .collect(),
                next_page_token: Some(format!("t{n}")),
                global_version: Some(3),
            }
            .encode_to_vec()
        })
        .await;
        let e = client(&url, 1, Duration::from_secs(5))
            .list_all_with_limits("s", None, usize::MAX, 450)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("more than 450 keys"), "{e}");
    }

    #[tokio::test]
    async fn conflicts_and_auth_failures_are_never_retried() {
        for code in [
            ErrorCode::ConflictException,
            ErrorCode::AuthException,
            ErrorCode::InvalidRequestException,
        ] {
            let (url, count) = fixed_server(500, encoded(code)).await;
            let request = PutObjectRequest {
                store_id: "s".into(),
                ..Default::default()
            };
            let e = client(&url, 5, Duration::from_secs(5))
                .put_objects(&request)
                .await
                .unwrap_err();
            assert!(!e.is_transient(), "{e}");
            assert_eq!(
                count.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{code:?} must not be retried"
            );
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_is_retried() {
        let (url, count) = fixed_server(0, Vec::new()).await;
        let e = client(&url, 2, Duration::from_millis(200))
            .get_object("s", "k")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { attempts: 2, .. }), "{e}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error_after_retries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/vss", listener.local_addr().unwrap());
        drop(listener);
        let e = client(&url, 3, Duration::from_secs(2))
            .get_object("s", "k")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Connection { attempts: 3, .. }), "{e}");
    }

    #[test]
    fn undecodable_error_bodies_are_transient_only_for_5xx() {
        let e = error_from_response(Operation::GetObject, 502, b"<html>bad gateway</html>");
        assert!(matches!(e, Error::UnexpectedResponse { status: 502, .. }) && e.is_transient());
        let e = error_from_response(Operation::GetObject, 404, b"<html>not found</html>");
        assert!(!e.is_transient());
    }

    /// An empty body decodes as an ErrorResponse with code UNKNOWN, which is never retried; a
    /// proxy's empty 502 or 503 while the server restarts must be retried like its error page.
    #[test]
    fn an_empty_error_body_is_unexpected_and_transient_only_for_5xx_and_429() {
        for (status, transient) in [(502, true), (503, true), (429, true), (404, false)] {
            let e = error_from_response(Operation::PutObjects, status, b"");
            assert!(
                matches!(e, Error::UnexpectedResponse { status: s, .. } if s == status),
                "{e}"
            );
            assert_eq!(e.is_transient(), transient, "{e}");
        }
        // A message alone (code UNKNOWN, so absent on the wire) is still an ErrorResponse.
        let body = ErrorResponse {
            error_code: 0,
            message: "m".into(),
        }
        .encode_to_vec();
        let e = error_from_response(Operation::PutObjects, 500, &body);
        assert!(matches!(e, Error::UnknownErrorCode { code: 0, .. }), "{e}");
    }

    #[test]
    fn a_success_body_decodes_or_is_unexpected_and_never_retried() {
        let value = KeyValue::new("k", 3, b"v".to_vec());
        let body = GetObjectResponse {
            value: Some(value.clone()),
        }
        .encode_to_vec();
        let got: GetObjectResponse = decode_response(Operation::GetObject, 200, &body).unwrap();
        assert_eq!(got.value, Some(value));
        let e = decode_response::<GetObjectResponse>(Operation::GetObject, 200, &body[..4])
            .unwrap_err();
        assert!(matches!(e, Error::UnexpectedResponse { status: 200, .. }) && !e.is_transient());
        // A non-2xx is an error even when its body decodes as the response message.
        let e = decode_response::<PutObjectResponse>(
            Operation::PutObjects,
            409,
            &encoded(ErrorCode::ConflictException),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
    }

    #[test]
    fn server_messages_are_kept_whole_unless_long_or_with_control_characters() {
        let plain = "version conflict on \"head\" (expected 3, found 4) ✓";
        assert_eq!(server_message(plain), plain);
        assert_eq!(
            server_message("a\u{1b}[2Jb\nc"),
            "a\\u{1b}[2Jb\\u{a}c",
            "escape sequences and line breaks are escaped"
        );
        let long = "é".repeat(3000);
        let cut = server_message(&long);
        assert!(cut.len() <= MESSAGE_LIMIT + 40, "{}", cut.len());
        assert!(cut.starts_with(&"é".repeat(MESSAGE_LIMIT / 2)));
        assert!(cut.ends_with("... (cut; 6000 bytes in all)"), "{cut}");
        let e = error_from_response(
            Operation::GetObject,
            409,
            &ErrorResponse {
                error_code: ErrorCode::ConflictException as i32,
                message: "\u{7}".repeat(100_000),
            }
            .encode_to_vec(),
        );
        assert!(e.to_string().len() <= MESSAGE_LIMIT + 100, "{e}");
    }
}
