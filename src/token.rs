//! [`Token`]: the four fields of a Kero token response.
//!
//! This module owns the shape of a token and the arithmetic that turns its wall-clock expiry
//! (`access_expires_at`, Unix seconds on the *server's* clock) into a remaining lifetime. It never
//! prints a secret: `Debug` shows expiry times only.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A Kero token pair, as returned by `POST /{region}/auth` and `POST /{region}/refresh`.
///
/// The tokens are opaque strings (they happen to be JWTs; this crate never decodes them).
/// `Debug` shows the expiry times and never the tokens themselves.
///
/// ```
/// let json = r#"{"auth_token":"a.b.c","access_expires_at":1700000000,
///                "refresh_token":"d.e.f","refresh_expires_at":1710000000}"#;
/// let token: kero_auth::Token = serde_json::from_str(json).unwrap();
/// assert_eq!(token.access_expires_at(), 1_700_000_000);
/// assert!(!format!("{token:?}").contains("a.b.c"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    auth_token: String,
    access_expires_at: i64,
    refresh_token: String,
    refresh_expires_at: i64,
    /// The server's clock when it issued this token (from the response's `Date` header), if known.
    #[serde(skip)]
    server_time: Option<SystemTime>,
}

impl Token {
    /// A token from its four fields. Expiry times are Unix seconds.
    pub fn new(
        auth_token: impl Into<String>,
        access_expires_at: i64,
        refresh_token: impl Into<String>,
        refresh_expires_at: i64,
    ) -> Self {
        Token {
            auth_token: auth_token.into(),
            access_expires_at,
            refresh_token: refresh_token.into(),
            refresh_expires_at,
            server_time: None,
        }
    }

    /// A token that expires `lifetime` from now (local clock), with a refresh token that lives
    /// `refresh_lifetime`. Handy for custom sources and tests.
    pub fn expiring_in(
        auth_token: impl Into<String>,
        lifetime: Duration,
        refresh_token: impl Into<String>,
        refresh_lifetime: Duration,
    ) -> Self {
        let now = unix_seconds(SystemTime::now());
        Token::new(
            auth_token,
            now.saturating_add(secs_i64(lifetime)),
            refresh_token,
            now.saturating_add(secs_i64(refresh_lifetime)),
        )
    }

    /// Records the server's clock at the time it issued this token (typically the response's
    /// HTTP `Date` header). Lifetimes are then measured against it, so a local wall clock that is
    /// off by minutes neither expires a valid token early nor keeps an expired one.
    pub fn with_server_time(mut self, server_time: SystemTime) -> Self {
        self.server_time = Some(server_time);
        self
    }

    /// The token to send, as header `token`, on every call of the Kero API. A secret.
    pub fn auth_token(&self) -> &str {
        &self.auth_token
    }

    /// When `auth_token` expires, in Unix seconds on the server's clock.
    pub fn access_expires_at(&self) -> i64 {
        self.access_expires_at
    }

    /// The token for `/refresh`. A secret.
    pub fn refresh_token(&self) -> &str {
        &self.refresh_token
    }

    /// When `refresh_token` expires, in Unix seconds on the server's clock.
    pub fn refresh_expires_at(&self) -> i64 {
        self.refresh_expires_at
    }

    /// The server's clock when it issued this token, if the source recorded it.
    pub fn server_time(&self) -> Option<SystemTime> {
        self.server_time
    }

    /// How long `auth_token` remains valid, measured from the server's clock when known, otherwise
    /// from the local clock. `None` when it has already expired.
    pub fn access_remaining(&self) -> Option<Duration> {
        remaining(self.access_expires_at, self.reference_now())
    }

    /// How long `refresh_token` remains valid, measured like [`Token::access_remaining`].
    pub fn refresh_remaining(&self) -> Option<Duration> {
        remaining(self.refresh_expires_at, self.reference_now())
    }

    /// "Now" as the token's issuer saw it: the server's `Date` when recorded, else the local
    /// clock. The cache turns the remaining lifetime into a monotonic deadline on arrival.
    fn reference_now(&self) -> SystemTime {
        self.server_time.unwrap_or_else(SystemTime::now)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("auth_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &"<redacted>")
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("server_time", &self.server_time.map(unix_seconds))
            .finish()
    }
}

/// Whether `value` can be sent as a token header: one or more visible ASCII characters
/// (0x21–0x7E), as JWTs use. `http::HeaderValue` alone would also accept bytes 0x80–0xFF.
pub(crate) fn is_header_safe(value: &str) -> bool {
    // Without an early exit, so that it compiles to a vector loop: a token is checked once per
    // fetch, and a Kero token is hundreds of bytes.
    !value.is_empty()
        && value
            .bytes()
            .fold(true, |ok, b| ok & (b.wrapping_sub(0x21) < 0x5e))
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => secs_i64(d),
        Err(e) => secs_i64(e.duration()).saturating_neg(),
    }
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Time left until `expires_at` (Unix seconds) as seen from `now`; `None` if already past.
pub(crate) fn remaining(expires_at: i64, now: SystemTime) -> Option<Duration> {
    let expiry = if expires_at >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(expires_at as u64))?
    } else {
        return None;
    };
    expiry.duration_since(now).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let t = Token::new("secret-access", 10, "secret-refresh", 20);
        let s = format!("{t:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("access_expires_at: 10"), "{s}");
    }

    #[test]
    fn header_safety() {
        assert!(is_header_safe("eyJ.abc-_+/="));
        assert!(!is_header_safe(""));
        assert!(!is_header_safe("has space"));
        assert!(!is_header_safe("tab\t"));
        assert!(!is_header_safe("caf\u{e9}"));
        assert!(!is_header_safe("nl\n"));
        // The edges of the range, and every byte outside it.
        assert!(is_header_safe("!~"));
        for b in (0u8..0x21).chain(0x7f..=0x7f) {
            let s = format!("abc{}", char::from(b));
            assert!(!is_header_safe(&s), "byte {b:#x} accepted");
        }
    }

    #[test]
    fn remaining_uses_server_time() {
        let server_now = UNIX_EPOCH + Duration::from_secs(1_000);
        let t = Token::new("a", 1_600, "r", 2_000).with_server_time(server_now);
        assert_eq!(t.access_remaining(), Some(Duration::from_secs(600)));
        assert_eq!(t.refresh_remaining(), Some(Duration::from_secs(1_000)));
        let expired = Token::new("a", 999, "r", 1_000).with_server_time(server_now);
        assert_eq!(expired.access_remaining(), None);
        assert_eq!(expired.refresh_remaining(), None);
        assert_eq!(Token::new("a", -5, "r", -5).access_remaining(), None);
        assert_eq!(
            Token::new("a", i64::MAX, "r", 0)
                .with_server_time(server_now)
                .refresh_remaining(),
            None
        );
    }
}
