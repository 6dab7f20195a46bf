//! The VSS protocol's protobuf messages (proto3), written out by hand with prost's derive so that no
//! `protoc` is needed at build time. Field numbers and types follow the reference `vss.proto`
//! exactly; see `VSS-PROTOCOL.md` for what each field means.

/// Fetches one key's current value and version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetObjectRequest {
    /// The store (key space) to read from; may be empty.
    #[prost(string, tag = "1")]
    pub store_id: String,
    /// The key to read.
    #[prost(string, tag = "2")]
    pub key: String,
}

/// The answer to [`GetObjectRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetObjectResponse {
    /// The key, its current version and value. Always present in a success response.
    #[prost(message, optional, tag = "2")]
    pub value: Option<KeyValue>,
}

/// Writes and deletes several keys in one all-or-nothing transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutObjectRequest {
    /// The store (key space) to write to; may be empty.
    #[prost(string, tag = "1")]
    pub store_id: String,
    /// Expected store-wide version, checked and bumped in the same transaction; `None` leaves it alone.
    #[prost(int64, optional, tag = "2")]
    pub global_version: Option<i64>,
    /// Keys to write: version 0 creates, N updates at N, -1 writes unconditionally.
    #[prost(message, repeated, tag = "3")]
    pub transaction_items: Vec<KeyValue>,
    /// Keys to delete: at the given version, or -1 for whatever version is stored.
    #[prost(message, repeated, tag = "4")]
    pub delete_items: Vec<KeyValue>,
}

/// The (empty) answer to [`PutObjectRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutObjectResponse {}

/// Deletes one key, idempotently.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteObjectRequest {
    /// The store (key space) to delete from; may be empty.
    #[prost(string, tag = "1")]
    pub store_id: String,
    /// The key and the version to delete it at (-1: any version). The value is ignored.
    #[prost(message, optional, tag = "2")]
    pub key_value: Option<KeyValue>,
}

/// The (empty) answer to [`DeleteObjectRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteObjectResponse {}

/// Lists keys and their current versions, newest first, one page at a time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListKeyVersionsRequest {
    /// The store (key space) to list; may be empty.
    #[prost(string, tag = "1")]
    pub store_id: String,
    /// Only keys starting with this literal prefix.
    #[prost(string, optional, tag = "2")]
    pub key_prefix: Option<String>,
    /// At most this many keys (servers cap it, the reference at 100).
    #[prost(int32, optional, tag = "3")]
    pub page_size: Option<i32>,
    /// The `next_page_token` of the previous page; `None` for the first page.
    #[prost(string, optional, tag = "4")]
    pub page_token: Option<String>,
}

/// One page of a listing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListKeyVersionsResponse {
    /// Keys with their current versions; values are empty.
    #[prost(message, repeated, tag = "1")]
    pub key_versions: Vec<KeyValue>,
    /// Token for the next page; empty (or absent) on the last page.
    #[prost(string, optional, tag = "2")]
    pub next_page_token: Option<String>,
    /// The store's global version, on the first page only.
    #[prost(int64, optional, tag = "3")]
    pub global_version: Option<i64>,
}

/// A key with its version and value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// In requests the expected version, in responses the stored one.
    #[prost(int64, tag = "2")]
    pub version: i64,
    /// The value (empty in listings and delete requests).
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

/// The body of every error response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    /// What kind of error; clients decide by this, never by the HTTP status.
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub error_code: i32,
    /// A message for people.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The protocol's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// Never sent on purpose; an old or broken server.
    Unknown = 0,
    /// A key or the global version did not match (HTTP 409).
    ConflictException = 1,
    /// The request was malformed or broke a limit (HTTP 400, or 413 for the body size).
    InvalidRequestException = 2,
    /// The server failed; retrying may help (HTTP 500).
    InternalServerException = 3,
    /// `GetObject` of a key that does not exist (HTTP 404).
    NoSuchKeyException = 4,
    /// Missing or wrong credentials (HTTP 401).
    AuthException = 5,
}

impl ErrorCode {
    /// The HTTP status the reference server sends with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ConflictException => 409,
            ErrorCode::InvalidRequestException => 400,
            ErrorCode::NoSuchKeyException => 404,
            ErrorCode::AuthException => 401,
            ErrorCode::Unknown | ErrorCode::InternalServerException => 500,
        }
    }
}

impl KeyValue {
    /// A key at a version with a value.
    pub fn new(key: impl Into<String>, version: i64, value: impl Into<Vec<u8>>) -> Self {
        KeyValue {
            key: key.into(),
            version,
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn put_request_round_trips_and_keeps_absent_global_version_absent() {
        let request = PutObjectRequest {
            store_id: "s".into(),
            global_version: None,
            transaction_items: vec![KeyValue::new("k", 0, b"v".to_vec())],
            delete_items: vec![KeyValue::new("d", -1, Vec::new())],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(PutObjectRequest::decode(&bytes[..]).unwrap(), request);

        let with_zero = PutObjectRequest {
            global_version: Some(0),
            ..request
        };
        let decoded = PutObjectRequest::decode(&with_zero.encode_to_vec()[..]).unwrap();
        assert_eq!(
            decoded.global_version,
            Some(0),
            "an explicit 0 must survive the wire"
        );
    }

    #[test]
    fn error_response_wire_layout_matches_proto3() {
        // field 1 varint 1 (CONFLICT), field 2 string "x"
        let bytes = [0x08, 0x01, 0x12, 0x01, b'x'];
        let decoded = ErrorResponse::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.error_code(), ErrorCode::ConflictException);
        assert_eq!(decoded.message, "x");
    }
}
