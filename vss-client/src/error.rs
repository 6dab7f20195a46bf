//! What can go wrong talking to a VSS server.

use std::fmt;
use std::time::Duration;

/// Which protocol call failed; part of every [`Error`] so a message says what was being done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `getObject`
    GetObject,
    /// `putObjects`
    PutObjects,
    /// `deleteObject`
    DeleteObject,
    /// `listKeyVersions`
    ListKeyVersions,
}

impl Operation {
    /// The URL path segment of the call, as in `{base}/getObject`.
    pub fn path(self) -> &'static str {
        match self {
            Operation::GetObject => "getObject",
            Operation::PutObjects => "putObjects",
            Operation::DeleteObject => "deleteObject",
            Operation::ListKeyVersions => "listKeyVersions",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// A failed VSS call. The protocol variants are decided by the response's `error_code`, never by the
/// HTTP status (older servers send every error as 500).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// CONFLICT: a key version, a delete item's version or the global version did not match; the
    /// whole transaction was refused and nothing changed. Never retried: re-read and decide.
    #[error("{op}: version conflict, nothing was written: {message}")]
    Conflict {
        /// The call.
        op: Operation,
        /// The server's explanation.
        message: String,
    },
    /// NO_SUCH_KEY: `getObject` of a key the store does not have.
    #[error("{op}: no key {key:?} in store {store_id:?}: {message}")]
    NoSuchKey {
        /// The call.
        op: Operation,
        /// The store that was asked.
        store_id: String,
        /// The key that is missing.
        key: String,
        /// The server's explanation.
        message: String,
    },
    /// INVALID_REQUEST: the server refused the request as malformed or over a limit (the message
    /// names which). Never retried: the same request would be refused again.
    #[error("{op}: the server refused the request as invalid (HTTP {status}): {message}")]
    InvalidRequest {
        /// The call.
        op: Operation,
        /// The HTTP status (400, or 413 for a body over the server's limit).
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// AUTH: the server did not accept the credentials. Check the token; never retried.
    #[error("{op}: the server refused the credentials: {message}")]
    Auth {
        /// The call.
        op: Operation,
        /// The server's explanation.
        message: String,
    },
    /// INTERNAL_SERVER: the server failed; this was retried with backoff until the attempts ran out.
    #[error("{op}: the server failed after {attempts} attempt(s): {message}")]
    Internal {
        /// The call.
        op: Operation,
        /// How many times the request was sent.
        attempts: u32,
        /// The server's explanation.
        message: String,
    },
    /// An error code this client does not know (or UNKNOWN, 0).
    #[error("{op}: the server answered HTTP {status} with unknown error code {code}: {message}")]
    UnknownErrorCode {
        /// The call.
        op: Operation,
        /// The HTTP status.
        status: u16,
        /// The raw `error_code`.
        code: i32,
        /// The server's explanation.
        message: String,
    },
    /// The response was not what the protocol allows: an error status without a decodable
    /// `ErrorResponse` (a proxy's error page, say), or a success body that does not decode.
    #[error("{op}: unexpected response (HTTP {status}, after {attempts} attempt(s)): {detail}")]
    UnexpectedResponse {
        /// The call.
        op: Operation,
        /// The HTTP status.
        status: u16,
        /// How many times the request was sent.
        attempts: u32,
        /// What was wrong with it.
        detail: String,
    },
    /// No complete answer within the request timeout; retried until the attempts ran out. A put may
    /// or may not have been applied.
    #[error("{op}: no answer from {url} within {timeout:?} after {attempts} attempt(s)")]
    Timeout {
        /// The call.
        op: Operation,
        /// The URL that was called.
        url: String,
        /// The per-request timeout.
        timeout: Duration,
        /// How many times the request was sent.
        attempts: u32,
    },
    /// The server could not be reached or the connection broke; retried until the attempts ran out.
    /// A put may or may not have been applied.
    #[error("{op}: could not talk to {url} after {attempts} attempt(s): {source}")]
    Connection {
        /// The call.
        op: Operation,
        /// The URL that was called.
        url: String,
        /// How many times the request was sent.
        attempts: u32,
        /// The transport's error.
        #[source]
        source: reqwest::Error,
    },
    /// The [`AuthProvider`](crate::AuthProvider) could not produce headers; nothing was sent.
    #[error("{op}: the auth header provider failed: {source}")]
    AuthProvider {
        /// The call.
        op: Operation,
        /// The provider's error.
        #[source]
        source: crate::AuthError,
    },
}

impl Error {
    /// Whether the failure may go away by itself (server failure, connection, timeout, a proxy's
    /// 5xx page) and so is worth retrying. Conflicts, missing keys, invalid requests and auth
    /// failures never are.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Internal { .. } | Error::Timeout { .. } | Error::Connection { .. } => true,
            Error::UnexpectedResponse { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The call that failed.
    pub fn operation(&self) -> Operation {
        match self {
            Error::Conflict { op, .. }
            | Error::NoSuchKey { op, .. }
            | Error::InvalidRequest { op, .. }
            | Error::Auth { op, .. }
            | Error::Internal { op, .. }
            | Error::UnknownErrorCode { op, .. }
            | Error::UnexpectedResponse { op, .. }
            | Error::Timeout { op, .. }
            | Error::Connection { op, .. }
            | Error::AuthProvider { op, .. } => *op,
        }
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            Error::Internal { attempts, .. }
            | Error::UnexpectedResponse { attempts, .. }
            | Error::Timeout { attempts, .. }
            | Error::Connection { attempts, .. } => *attempts = n,
            _ => {}
        }
    }
}
