//! Pluggable authentication: whatever headers a server wants, computed per request.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use std::fmt;

/// Supplies the authentication headers of each request. Called once per attempt, so a provider can
/// refresh an expiring token or sign the body.
#[async_trait]
pub trait AuthProvider: Send + Sync {
    /// The headers to send with a request whose protobuf body is `body`.
    async fn headers(&self, body: &[u8]) -> Result<HeaderMap, AuthError>;
}

/// An [`AuthProvider`] could not produce headers.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct AuthError {
    /// What went wrong (never containing the secret itself).
    pub message: String,
}

impl AuthError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
        }
    }
}

/// `Authorization: Bearer TOKEN`, the scheme Till's server issues tokens for.
#[derive(Clone)]
pub struct BearerToken {
    value: HeaderValue,
}

impl BearerToken {
    /// A provider sending this token. Refuses a token that cannot be an HTTP header value.
    pub fn new(token: &str) -> Result<Self, AuthError> {
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            AuthError::new("the bearer token contains characters not allowed in an HTTP header")
        })?;
        value.set_sensitive(true);
        Ok(BearerToken { value })
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[async_trait]
impl AuthProvider for BearerToken {
    async fn headers(&self, _body: &[u8]) -> Result<HeaderMap, AuthError> {
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, self.value.clone());
        Ok(map)
    }
}

/// A fixed set of headers, for servers with static credentials (or none).
#[derive(Clone, Default)]
pub struct FixedHeaders {
    headers: HeaderMap,
}

impl FixedHeaders {
    /// No headers at all.
    pub fn none() -> Self {
        FixedHeaders::default()
    }

    /// These headers on every request. Refuses names or values that are not valid HTTP.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, AuthError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::try_from(name)
                .map_err(|_| AuthError::new(format!("{name:?} is not a valid HTTP header name")))?;
            let mut value = HeaderValue::try_from(value).map_err(|_| {
                AuthError::new(format!(
                    "the value of header {name} is not a valid HTTP header value"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(FixedHeaders { headers })
    }
}

impl fmt::Debug for FixedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.headers.keys()).finish()
    }
}

#[async_trait]
impl AuthProvider for FixedHeaders {
    async fn headers(&self, _body: &[u8]) -> Result<HeaderMap, AuthError> {
        Ok(self.headers.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_debug_never_shows_the_token() {
        let token = BearerToken::new("s3cret").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(BearerToken::new("bad\ntoken").is_err());
    }
}
