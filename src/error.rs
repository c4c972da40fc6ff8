//! The errors the layer itself can fail with.
//!
//! They reach callers through `tower::BoxError` (the service's error type) and can be downcast to
//! [`Error`]. Every variant is `Clone`, because one failed fetch is delivered to every request that
//! was waiting for it. No variant ever carries a token or a password.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, as `tower` uses.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why the layer could not produce a token for a request.
///
/// Reaches callers as a `tower::BoxError`:
///
/// ```
/// # fn check(err: kero_auth::BoxError) {
/// if let Some(err) = err.downcast_ref::<kero_auth::Error>() {
///     match err {
///         kero_auth::Error::Source(_) => eprintln!("the token source failed: {err}"),
///         kero_auth::Error::FetchTimeout(after) => eprintln!("no token within {after:?}"),
///         _ => eprintln!("{err}"),
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The [`TokenSource`](crate::TokenSource) returned an error. The cause is kept as is, so it
    /// can be downcast with [`Error::source_as`] (for example to a Kero API error).
    Source(SourceError),
    /// The token source did not answer within the configured fetch timeout.
    FetchTimeout(Duration),
    /// The token source returned a token the layer refuses to use.
    InvalidToken(InvalidToken),
    /// The fetch task ended without a result: the token source panicked, or the runtime that ran
    /// the fetch shut down.
    FetchAborted,
    /// A fetch was needed, but the request was not running inside a tokio runtime.
    NoRuntime,
}

impl Error {
    /// The token source's error, downcast to `E`, if this error came from the source and is an `E`.
    pub fn source_as<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Error::Source(e) => e.get().downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Whether this was a fetch timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::FetchTimeout(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Source(e) => write!(f, "kero-auth: token unavailable: {}", e.get()),
            Error::FetchTimeout(after) => {
                write!(f, "kero-auth: token unavailable: the token source did not answer within {after:?}")
            }
            Error::InvalidToken(why) => write!(f, "kero-auth: token unavailable: {why}"),
            Error::FetchAborted => f.write_str(
                "kero-auth: token unavailable: the fetch ended without a result (the token source panicked or the runtime shut down)",
            ),
            Error::NoRuntime => {
                f.write_str("kero-auth: token unavailable: a fetch needs a tokio runtime, and none is running")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Source(e) => Some(e.get()),
            Error::InvalidToken(e) => Some(e),
            _ => None,
        }
    }
}

/// A token source's error, shared by every request that waited for the failed fetch.
#[derive(Clone)]
pub struct SourceError(Arc<dyn StdError + Send + Sync + 'static>);

impl SourceError {
    pub(crate) fn new(e: BoxError) -> Self {
        SourceError(Arc::from(e))
    }

    /// The error the token source returned.
    pub fn get(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Why a token from the source was refused. It is never cached: the failure counts like any other,
/// with backoff, so a source that keeps returning a bad token cannot make the cache spin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// `auth_token` is empty or has a character that is not visible ASCII.
    #[error("the auth token is empty or is not a valid header value (visible ASCII only)")]
    NotHeaderSafe,
    /// `access_expires_at` is already past, or inside the expiry margin.
    #[error("the auth token is already expired, or expires within the expiry margin")]
    Expired,
}
