//! [`KeroTokenSource`]: the [`TokenSource`] that speaks the Kero API's `/auth` and `/refresh`.
//!
//! Decisions on what the Kero documentation leaves unsaid (each tested against the mock server):
//! - **Route.** `/refresh` while the refresh token is valid (on the server's clock, with 2 s to
//!   spare); `/auth` when there is no token, when the refresh token has expired, or when `/refresh`
//!   is refused with a 4xx answer (then `/auth` once, never a loop). A 5xx or transport failure
//!   of `/refresh` is returned as is (the server is down; `/auth` would not help).
//! - **Rotation.** `/refresh` may return a new refresh token and invalidate the old one: the source
//!   always keeps the newest pair the server returned, even one the cache then refused.
//! - **Error statuses.** The error body is parsed whatever the HTTP status (an error body with
//!   HTTP 200 is still an error), and a body that is not JSON becomes an error with the HTTP
//!   status. `INVALID SOURCE HOST` is its own kind; a 401/403 from `/auth` is bad credentials.
//! - **Clock skew.** Each answer's `Date` header gives the server's clock; expiries are measured
//!   against it, never against the local wall clock alone.
//! - **Size.** Answers are read up to 64 KiB (configurable); a larger one is an error.

mod error;
mod response;

use std::fmt;
use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, DATE};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use secrecy::{ExposeSecret, SecretString};
use tower_service::Service;

pub use error::{ApiError, KeroError, Malformed, INVALID_SOURCE_HOST};
use response::{read_answer, Route};

use super::{FetchFuture, TokenSource};
use crate::token::unix_seconds;
use crate::{BoxError, Token};

/// The ready-made HTTPS client: hyper-util's pooled client over rustls, with the webpki roots.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A refresh token this close to its expiry is not used: `/auth` is called instead.
const REFRESH_SPARE: i64 = 2;

/// Speaks `POST /{region}/auth` and `POST /{region}/refresh` over any tower HTTP service.
///
/// ```no_run
/// use kero_auth::{source::KeroTokenSource, KeroAuthLayer};
///
/// # fn run() -> Result<(), kero_auth::source::BuildError> {
/// let source = KeroTokenSource::builder("https://api.kero.example", "name", "password")
///     .region("us")
///     .build()?;
/// let layer = KeroAuthLayer::new(source);
/// # Ok(())
/// # }
/// ```
pub struct KeroTokenSource<C = DefaultClient> {
    client: C,
    auth_url: Uri,
    refresh_url: Uri,
    name: String,
    password: SecretString,
    max_body: usize,
    /// The newest pair the server returned.
    newest: Mutex<Option<Token>>,
    /// The server's clock minus the local one, in seconds, from the last `Date` header.
    skew: Mutex<Option<i64>>,
}

#[cfg(feature = "tls")]
type DefaultClient = HttpsClient;
#[cfg(not(feature = "tls"))]
type DefaultClient = NoClient;

/// Without the `tls` feature there is no default client: use [`KeroTokenSourceBuilder::build_with_client`].
#[cfg(not(feature = "tls"))]
#[derive(Clone, Copy, Debug)]
pub struct NoClient;

/// Options of a [`KeroTokenSource`].
pub struct KeroTokenSourceBuilder {
    base_url: String,
    region: String,
    name: String,
    password: SecretString,
    insecure_loopback: bool,
    max_body: usize,
}

/// Why a [`KeroTokenSource`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL does not parse, or has a query or fragment.
    #[error("invalid Kero base URL: {0}")]
    InvalidUrl(String),
    /// The base URL is not `https`, and plain `http` to a loopback address was not allowed.
    #[error("the Kero base URL must use https (plain http is allowed only to a loopback address, with `allow_insecure_loopback`)")]
    InsecureUrl,
    /// The region is empty or is not a plain path segment.
    #[error("invalid Kero region {0:?}")]
    InvalidRegion(String),
}

impl KeroTokenSource {
    /// A builder for a source talking to `base_url` (e.g. `https://api.kero.example`) with these
    /// credentials. The password is kept as a secret: never in `Debug`, logs or errors.
    pub fn builder(
        base_url: impl Into<String>,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> KeroTokenSourceBuilder {
        KeroTokenSourceBuilder {
            base_url: base_url.into(),
            region: "us".to_owned(),
            name: name.into(),
            password: SecretString::from(password.into()),
            insecure_loopback: false,
            max_body: 64 * 1024,
        }
    }
}

impl KeroTokenSourceBuilder {
    /// The region path segment. Default: `us`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Allows plain `http` when the base URL's host is a loopback address (`127.0.0.0/8`, `::1`,
    /// `localhost`): for tests against a local server such as the crate's mock. Never anything else.
    pub fn allow_insecure_loopback(mut self, allow: bool) -> Self {
        self.insecure_loopback = allow;
        self
    }

    /// The largest answer body read, in bytes. Default: 64 KiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The source, over the ready-made HTTPS client ([`HttpsClient`]).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn build(self) -> Result<KeroTokenSource<HttpsClient>, BuildError> {
        self.build_with_client(https_client())
    }

    /// The source, over any tower HTTP service: a hyper-util client with your own connector,
    /// a stack with your own middleware, a test double.
    pub fn build_with_client<C>(self, client: C) -> Result<KeroTokenSource<C>, BuildError> {
        let base = self.base_url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| BuildError::InvalidUrl(base.to_owned()))?;
        let host = uri
            .host()
            .ok_or_else(|| BuildError::InvalidUrl(base.to_owned()))?;
        if base.contains(['?', '#']) {
            return Err(BuildError::InvalidUrl(base.to_owned()));
        }
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.insecure_loopback && is_loopback(host) => {}
            Some("http") => return Err(BuildError::InsecureUrl),
            _ => return Err(BuildError::InvalidUrl(base.to_owned())),
        }
        let region = self.region.trim_matches('/');
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BuildError::InvalidRegion(self.region));
        }
        let url = |route: &str| -> Result<Uri, BuildError> {
            format!("{base}/{region}/{route}")
                .parse()
                .map_err(|_| BuildError::InvalidUrl(base.to_owned()))
        };
        Ok(KeroTokenSource {
            client,
            auth_url: url("auth")?,
            refresh_url: url("refresh")?,
            name: self.name,
            password: self.password,
            max_body: self.max_body,
            newest: Mutex::new(None),
            skew: Mutex::new(None),
        })
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The ready-made HTTPS client: HTTP/1.1 and HTTP/2 over rustls, with the webpki roots.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub fn https_client() -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

impl<C> KeroTokenSource<C> {
    /// The newest pair the server returned, if any.
    pub fn newest_token(&self) -> Option<Token> {
        lock(&self.newest).clone()
    }

    /// The server's clock now, as estimated from the last `Date` header (the local clock before
    /// any answer).
    pub fn server_now(&self) -> i64 {
        unix_seconds(SystemTime::now()).saturating_add(lock(&self.skew).unwrap_or(0))
    }

    /// Of the token the cache holds and the newest one this source saw, the one to refresh with.
    fn pair_to_refresh(&self, current: Option<&Token>) -> Option<Token> {
        let newest = lock(&self.newest);
        match (current, newest.as_ref()) {
            (Some(c), Some(n)) if n.refresh_expires_at() > c.refresh_expires_at() => {
                Some(n.clone())
            }
            (Some(c), _) => Some(c.clone()),
            (None, n) => n.cloned(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C, B> KeroTokenSource<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn get(&self, current: Option<&Token>) -> Result<Token, KeroError> {
        let pair = self.pair_to_refresh(current);
        let refreshable = pair
            .as_ref()
            .filter(|p| p.refresh_expires_at() > self.server_now().saturating_add(REFRESH_SPARE));
        let token = match refreshable {
            Some(pair) => match self.refresh(pair).await {
                Err(KeroError::Api(api))
                    if api.http_status.is_client_error() && api.http_status != 429 =>
                {
                    tracing::info!(status = %api, "kero-auth: /refresh refused, authenticating again");
                    self.auth().await?
                }
                other => other?,
            },
            None => self.auth().await?,
        };
        *lock(&self.newest) = Some(token.clone());
        Ok(token)
    }

    async fn auth(&self) -> Result<Token, KeroError> {
        let body =
            serde_json::json!({ "name": self.name, "password": self.password.expose_secret() });
        self.post(Route::Auth, None, body).await
    }

    async fn refresh(&self, pair: &Token) -> Result<Token, KeroError> {
        let body = serde_json::json!({ "refresh_token": pair.refresh_token() });
        self.post(Route::Refresh, Some(pair.auth_token()), body)
            .await
    }

    async fn post(
        &self,
        route: Route,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> Result<Token, KeroError> {
        let url = match route {
            Route::Auth => &self.auth_url,
            Route::Refresh => &self.refresh_url,
        };
        let mut req = Request::post(url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| KeroError::Transport(e.into()))?;
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token)
                .map_err(|_| KeroError::Malformed(Malformed::NotHeaderSafe("auth_token")))?;
            value.set_sensitive(true);
            req.headers_mut().insert(crate::DEFAULT_HEADER, value);
        }
        let mut client = self.client.clone();
        poll_fn(|cx| client.poll_ready(cx))
            .await
            .map_err(|e| KeroError::Transport(e.into()))?;
        let res = client
            .call(req)
            .await
            .map_err(|e| KeroError::Transport(e.into()))?;
        let (parts, body) = res.into_parts();
        let server_time = parts
            .headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        if let Some(t) = server_time {
            *lock(&self.skew) = Some(unix_seconds(t) - unix_seconds(SystemTime::now()));
        }
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(KeroError::Malformed(Malformed::TooLarge {
                    limit: self.max_body,
                }))
            }
            Err(e) => return Err(KeroError::Malformed(Malformed::Body(e.to_string()))),
        };
        read_answer(route, parts.status, server_time, &bytes)
    }
}

impl<C, B> TokenSource for KeroTokenSource<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a> {
        Box::pin(async move { self.get(current).await.map_err(Into::into) })
    }
}

impl<C> fmt::Debug for KeroTokenSource<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeroTokenSource")
            .field("auth_url", &self.auth_url)
            .field("refresh_url", &self.refresh_url)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("newest", &*lock(&self.newest))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeroTokenSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeroTokenSourceBuilder")
            .field("base_url", &self.base_url)
            .field("region", &self.region)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("allow_insecure_loopback", &self.insecure_loopback)
            .field("max_response_bytes", &self.max_body)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(url: &str) -> KeroTokenSourceBuilder {
        KeroTokenSource::builder(url, "n", "hunter2")
    }

    #[test]
    fn https_is_required_and_http_only_to_loopback_by_opt_in() {
        assert!(b("https://api.kero.example").build_with_client(()).is_ok());
        assert!(matches!(
            b("http://api.kero.example").build_with_client(()),
            Err(BuildError::InsecureUrl)
        ));
        assert!(matches!(
            b("http://127.0.0.1:8080").build_with_client(()),
            Err(BuildError::InsecureUrl)
        ));
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(
                b(ok)
                    .allow_insecure_loopback(true)
                    .build_with_client(())
                    .is_ok(),
                "{ok}"
            );
        }
        for bad in ["http://10.0.0.1", "http://api.kero.example"] {
            assert!(
                b(bad)
                    .allow_insecure_loopback(true)
                    .build_with_client(())
                    .is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            b("not a url").build_with_client(()),
            Err(BuildError::InvalidUrl(_))
        ));
        assert!(matches!(
            b("ftp://x").build_with_client(()),
            Err(BuildError::InvalidUrl(_))
        ));
        assert!(matches!(
            b("https://x").region("a/b").build_with_client(()),
            Err(BuildError::InvalidRegion(_))
        ));
    }

    #[test]
    fn routes_are_built_from_base_and_region() {
        let s = b("https://api.kero.example/")
            .region("eu")
            .build_with_client(())
            .unwrap();
        assert_eq!(s.auth_url, "https://api.kero.example/eu/auth");
        assert_eq!(s.refresh_url, "https://api.kero.example/eu/refresh");
    }

    #[test]
    fn the_password_never_shows() {
        let builder = b("https://x");
        assert!(!format!("{builder:?}").contains("hunter2"));
        let s = builder.build_with_client(()).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
