//! The admin token: read from a file or the environment, never printed, compared in
//! constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AdminError;

/// The name of the session cookie `POST /login` sets.
pub(crate) const COOKIE: &str = "tracewire_admin";

/// The secret every admin route requires. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct Token {
    /// SHA-256 of the token: presented tokens are hashed and compared in constant time,
    /// so neither their content nor their length shows in the timing.
    digest: [u8; 32],
    /// The session cookie value: a digest of the token under another label, so that a
    /// stolen cookie does not reveal the token itself.
    cookie: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text; one trailing newline (`\n` or `\r\n`) is removed.
    ///
    /// # Errors
    /// [`AdminError::EmptyToken`] when nothing is left, or the token has only whitespace.
    pub fn new(secret: &str) -> Result<Self, AdminError> {
        let secret = secret.strip_suffix('\n').map_or(secret, |s| s.strip_suffix('\r').unwrap_or(s));
        if secret.trim().is_empty() {
            return Err(AdminError::EmptyToken);
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut cookie = Sha256::new();
        cookie.update(b"tracewire-admin-cookie\0");
        cookie.update(secret.as_bytes());
        Ok(Self { digest, cookie: tracewire_context::to_hex(&cookie.finalize()) })
    }

    /// Reads a token file (its trailing newline is removed).
    ///
    /// # Errors
    /// [`AdminError::TokenFile`] when it cannot be read; [`AdminError::EmptyToken`] when
    /// it is empty.
    pub fn from_file(path: &Path) -> Result<Self, AdminError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AdminError::TokenFile { path: path.to_path_buf(), source })?;
        Self::new(&text)
    }

    /// Whether `presented` is the token (constant time in its content and length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.digest.ct_eq(&digest))
    }

    pub(crate) fn cookie_value(&self) -> &str {
        &self.cookie
    }

    fn cookie_matches(&self, presented: &[u8]) -> bool {
        bool::from(self.cookie.as_bytes().ct_eq(presented))
    }

    /// Whether a request's headers carry the token: `Authorization: Bearer <token>`, or
    /// the session cookie from `POST /login`.
    pub(crate) fn authorizes(&self, headers: &axum::http::HeaderMap) -> bool {
        let bearer = headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .any(|t| self.matches(t));
        if bearer {
            return true;
        }
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.cookie_matches(v.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_one_newline_and_rejects_empty() {
        let t = Token::new("s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cret\n"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b""));
        assert!(Token::new("s3cret\r\n").unwrap().matches(b"s3cret"));
        assert!(matches!(Token::new("\n"), Err(AdminError::EmptyToken)));
        assert!(matches!(Token::new("  \n"), Err(AdminError::EmptyToken)));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn header_or_cookie() {
        use axum::http::{HeaderMap, HeaderValue, header};
        let t = Token::new("abc").unwrap();
        let mut h = HeaderMap::new();
        assert!(!t.authorizes(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abd"));
        assert!(!t.authorizes(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(!t.authorizes(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(t.authorizes(&h));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE}={}", t.cookie_value())).unwrap());
        assert!(t.authorizes(&h));
        // The raw token is not a valid cookie.
        h.insert(header::COOKIE, HeaderValue::from_static("tracewire_admin=abc"));
        assert!(!t.authorizes(&h));
    }
}
