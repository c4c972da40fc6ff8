//! [`TokenSource`]: where tokens come from.
//!
//! The cache calls a source when it needs a token, at most once at a time, in a task of its own,
//! under its own timeout. A source only fetches: it never caches, retries or backs off (the cache
//! does all three), and it never sees the request that needed the token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{BoxError, Token};

mod kero;
#[cfg(not(feature = "tls"))]
pub use kero::NoClient;
#[cfg(feature = "tls")]
pub use kero::{https_client, HttpsClient};
pub use kero::{
    ApiError, BuildError, KeroError, KeroTokenSource, KeroTokenSourceBuilder, Malformed,
    INVALID_SOURCE_HOST,
};

/// The future a [`TokenSource`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send + 'a>>;

/// A pluggable credential fetch.
///
/// `fetch` is told the token it is replacing, if any, so a source can use its refresh token.
/// The trait is object safe: use a source as a generic parameter or as `Arc<dyn TokenSource>`.
///
/// ```
/// use kero_auth::{source::FetchFuture, Token, TokenSource};
/// use std::time::Duration;
///
/// struct Vault;
///
/// impl TokenSource for Vault {
///     fn fetch<'a>(&'a self, _current: Option<&'a Token>) -> FetchFuture<'a> {
///         Box::pin(async move {
///             // ... ask the vault ...
///             Ok(Token::expiring_in("access", Duration::from_secs(3600), "refresh", Duration::from_secs(86400)))
///         })
///     }
/// }
///
/// let layer = kero_auth::KeroAuthLayer::new(Vault);
/// let shared: std::sync::Arc<dyn TokenSource> = std::sync::Arc::new(Vault);
/// let layer2 = kero_auth::KeroAuthLayer::new(shared);
/// ```
///
/// What the returned token must satisfy (else the fetch counts as failed and is retried with
/// backoff): `auth_token` is visible ASCII, and it expires later than the layer's expiry margin.
pub trait TokenSource: Send + Sync + 'static {
    /// Fetch a new token. `current` is the token being replaced (which may be expired or rejected
    /// by the server), or `None` on first use.
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a> {
        (**self).fetch(current)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a> {
        (**self).fetch(current)
    }
}

/// A [`TokenSource`] from an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnSource<F> {
    f: F,
}

/// A [`TokenSource`] backed by a closure that receives the current token (cloned) and returns a
/// future of the new one. The quickest way to plug in a vault lookup, or a fixed token in tests.
///
/// ```
/// use kero_auth::{source, KeroAuthLayer, Token};
/// use std::time::Duration;
///
/// let layer = KeroAuthLayer::new(source::from_fn(|_current: Option<Token>| async {
///     Ok::<_, std::io::Error>(Token::expiring_in(
///         "access",
///         Duration::from_secs(3600),
///         "refresh",
///         Duration::from_secs(86400),
///     ))
/// }));
/// ```
pub fn from_fn<F, Fut, E>(f: F) -> FnSource<F>
where
    F: Fn(Option<Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnSource { f }
}

impl<F, Fut, E> TokenSource for FnSource<F>
where
    F: Fn(Option<Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a> {
        let fut = (self.f)(current.cloned());
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}
