//! What the Kero API (or the way to it) said when it did not give a token.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;

use crate::BoxError;

/// Why [`KeroTokenSource`](super::KeroTokenSource) could not get a token.
///
/// Reaches callers of the layer inside [`crate::Error::Source`]; get it back with
/// `err.source_as::<KeroError>()`. [`KeroError::is_retryable`] says whether waiting can help:
/// the layer's backoff retries every failure, but one that needs a person (an IP to whitelist,
/// credentials to fix) is retried at the slowest pace at once.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeroError {
    /// Kero refused this machine's source IP (`INVALID SOURCE HOST`). No token, refresh or retry can
    /// fix it: Kero must whitelist the IP.
    InvalidSourceHost(ApiError),
    /// `/auth` refused the name and password.
    InvalidCredentials(ApiError),
    /// Any other error answer of the Kero API. Retryable when its HTTP status is 5xx or 429.
    Api(ApiError),
    /// The answer looked like success but cannot be used: not JSON, a missing field, a wrong type,
    /// too large, a token that is not a valid header value, an expiry already past.
    Malformed(Malformed),
    /// The request did not get an answer: connection refused or reset, TLS failure, timeout.
    Transport(BoxError),
}

impl KeroError {
    /// Whether trying again later may succeed: 5xx and 429 answers, transport failures and
    /// malformed answers are; a refused source IP or refused credentials are not (a person must
    /// act), nor are other 4xx answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            KeroError::InvalidSourceHost(_) | KeroError::InvalidCredentials(_) => false,
            KeroError::Api(e) => {
                e.http_status.is_server_error() || e.http_status == StatusCode::TOO_MANY_REQUESTS
            }
            KeroError::Malformed(_) | KeroError::Transport(_) => true,
        }
    }

    /// The Kero API's error answer, if this error is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            KeroError::InvalidSourceHost(e)
            | KeroError::InvalidCredentials(e)
            | KeroError::Api(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for KeroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeroError::InvalidSourceHost(e) => write!(
                f,
                "Kero refused this machine's IP address ({e}): Kero must whitelist this machine's source IP before any call can succeed; contact your Kero representative"
            ),
            KeroError::InvalidCredentials(e) => {
                write!(f, "Kero refused the credentials ({e}): check the name and password")
            }
            KeroError::Api(e) => write!(f, "Kero API error: {e}"),
            KeroError::Malformed(m) => write!(f, "unusable answer from the Kero API: {m}"),
            KeroError::Transport(e) => write!(f, "no answer from the Kero API: {e}"),
        }
    }
}

impl std::error::Error for KeroError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeroError::Transport(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An error answer of the Kero API: its HTTP status and the body's `code`, `status`, `msg`,
/// `data`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status of the answer (an error body may arrive with 200).
    pub http_status: StatusCode,
    /// The body's `code`, if any.
    pub code: Option<i64>,
    /// The body's `status`, e.g. `INVALID SOURCE HOST`. When the body was not a Kero error body,
    /// the HTTP status's reason.
    pub status: String,
    /// The body's `msg`, if any.
    pub msg: Option<String>,
    /// The body's `data`, if any (any JSON).
    pub data: Option<serde_json::Value>,
}

/// The `status` of the answer for a caller whose IP is not whitelisted.
pub const INVALID_SOURCE_HOST: &str = "INVALID SOURCE HOST";

impl ApiError {
    /// Whether this is the `INVALID SOURCE HOST` answer.
    pub fn is_invalid_source_host(&self) -> bool {
        self.status.trim().eq_ignore_ascii_case(INVALID_SOURCE_HOST)
    }

    /// Reads a Kero error body. `None` if the body is not one (not JSON, or no string `status`).
    pub(crate) fn from_body(http_status: StatusCode, body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Body {
            code: Option<i64>,
            status: String,
            msg: Option<String>,
            data: Option<serde_json::Value>,
        }
        let b: Body = serde_json::from_slice(body).ok()?;
        Some(ApiError {
            http_status,
            code: b.code,
            status: b.status,
            msg: b.msg,
            data: b.data,
        })
    }

    /// An error answer whose body is not a Kero error body.
    pub(crate) fn bare(http_status: StatusCode) -> Self {
        ApiError {
            http_status,
            code: None,
            status: http_status
                .canonical_reason()
                .unwrap_or("unknown status")
                .to_owned(),
            msg: None,
            data: None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP {}, status {:?}",
            self.http_status.as_u16(),
            self.status
        )?;
        if let Some(code) = self.code {
            write!(f, ", code {code}")?;
        }
        if let Some(msg) = &self.msg {
            write!(f, ": {msg}")?;
        }
        Ok(())
    }
}

/// What was wrong with an answer that looked like success.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The body is larger than the source's limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not the JSON of a token response (not JSON, a missing field, a wrong type).
    /// The reason never quotes the body.
    Json(String),
    /// A token is empty or has a character that is not visible ASCII.
    NotHeaderSafe(&'static str),
    /// `access_expires_at` is not later than the server's own clock.
    AlreadyExpired,
    /// The body could not be read.
    Body(String),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            Malformed::Json(why) => write!(f, "the body is not a token response: {why}"),
            Malformed::NotHeaderSafe(field) => {
                write!(
                    f,
                    "`{field}` is empty or is not a valid header value (visible ASCII only)"
                )
            }
            Malformed::AlreadyExpired => {
                f.write_str("`access_expires_at` is already past on the server's own clock")
            }
            Malformed::Body(why) => write!(f, "the body could not be read: {why}"),
        }
    }
}
