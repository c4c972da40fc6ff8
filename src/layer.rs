//! [`KeroAuthLayer`] and its [`Builder`]: the options, their defaults, and the shared cache.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use crate::cache::{Cache, Config};
use crate::{AuthFailureClassifier, KeroAuth, Token, TokenSource};

/// A `tower` layer that keeps the wrapped service's requests authenticated with a Kero token.
///
/// Every service the layer produces (and every clone of those) shares one token cache: one fetch
/// at a time, whatever the number of services and requests.
///
/// ```no_run
/// use kero_auth::{source, KeroAuthLayer, Token};
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), tower::BoxError> {
/// let source = source::from_fn(|_current: Option<Token>| async {
///     Ok::<_, std::io::Error>(Token::expiring_in("access", Duration::from_secs(3600), "refresh", Duration::from_secs(86400)))
/// });
/// let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
///     .build_http::<kero_auth::ReplayBody<http_body_util::Empty<bytes::Bytes>>>();
/// let mut svc = ServiceBuilder::new()
///     .layer(KeroAuthLayer::new(source))
///     .service(client);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KeroAuthLayer {
    cache: Arc<Cache>,
}

impl KeroAuthLayer {
    /// A layer with the default options, fetching tokens from `source`.
    pub fn new(source: impl TokenSource) -> Self {
        Self::builder(source).build()
    }

    /// A builder to set options, fetching tokens from `source`.
    pub fn builder(source: impl TokenSource) -> Builder {
        Builder::new(Arc::new(source))
    }

    /// Counters of the layer's token cache.
    pub fn stats(&self) -> Stats {
        Stats::of(&self.cache)
    }

    /// The newest token the cache holds, if any (usable or not). For stores and diagnostics.
    pub fn current_token(&self) -> Option<Token> {
        self.cache.current_token().map(|t| (*t).clone())
    }
}

impl<S> Layer<S> for KeroAuthLayer {
    type Service = KeroAuth<S>;

    fn layer(&self, inner: S) -> KeroAuth<S> {
        KeroAuth::new(inner, self.cache.clone())
    }
}

impl fmt::Debug for KeroAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeroAuthLayer")
            .field("cache", &self.cache)
            .finish()
    }
}

/// Counters of a token cache, shared by a layer and all its services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Fetches started (first tokens, refreshes, renewals after a rejection).
    pub fetches: u64,
    /// Fetches that failed (errors, timeouts, unusable tokens).
    pub failures: u64,
    /// Requests replayed after an authentication failure.
    pub replays: u64,
}

impl Stats {
    pub(crate) fn of(cache: &Cache) -> Self {
        let c = &cache.counters;
        Stats {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
        }
    }
}

/// Options of a [`KeroAuthLayer`]. Every option has a default fit for the Kero API, where access
/// tokens live 24 hours.
#[derive(Clone)]
pub struct Builder {
    source: Arc<dyn TokenSource>,
    config: Config,
}

/// The Kero API's header for the auth token.
pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("token");

impl Builder {
    fn new(source: Arc<dyn TokenSource>) -> Self {
        Builder {
            source,
            config: Config {
                header_name: DEFAULT_HEADER,
                expiry_margin: Duration::from_secs(30),
                refresh_window: Duration::from_secs(5 * 60),
                replay_limit: 64 * 1024,
                classifier: AuthFailureClassifier::default(),
                fetch_timeout: Duration::from_secs(30),
                backoff_initial: Duration::from_millis(250),
                backoff_max: Duration::from_secs(30),
            },
        }
    }

    /// The request header that carries the token. Default: `token`, as the Kero API wants.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.config.header_name = name;
        self
    }

    /// How long before its expiry a token stops being used. Covers the trip to the server and
    /// small clock errors. A token that arrives with less lifetime than this is refused (the fetch
    /// counts as failed). Default: 30 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.config.expiry_margin = margin;
        self
    }

    /// How long before the token stops being used a background refresh may start. Requests in
    /// this window go on at once with the current token while one background refresh runs; the
    /// start is jittered over the window's second half, so a fleet does not refresh in step. Capped
    /// at half the token's usable lifetime. `Duration::ZERO` disables background refresh.
    /// Default: 5 min.
    pub fn refresh_window(mut self, window: Duration) -> Self {
        self.config.refresh_window = window;
        self
    }

    /// How many bytes of a request body are kept to replay it after an authentication failure.
    /// A request whose body is larger is sent without being buffered whole and is not replayed (its
    /// rejection goes back to the caller; the token is still renewed for the requests that follow).
    /// `0` disables replay. Default: 64 KiB.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.config.replay_limit = bytes;
        self
    }

    /// What counts as an authentication failure. Default: HTTP 401.
    pub fn classifier(mut self, classifier: AuthFailureClassifier) -> Self {
        self.config.classifier = classifier;
        self
    }

    /// How long one fetch may take before it is abandoned and counted as failed. The fetch runs
    /// in its own task: a caller's own deadline never cuts it. Default: 30 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// The backoff after failed fetches: the first retry waits about `initial`, each further one
    /// twice as long, up to `max`; each delay is jittered between half and all of its value.
    /// While backing off, a request that needs a new token fails at once with the last error, and
    /// a still-valid token keeps being used. Default: 250 ms up to 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max.max(initial);
        self
    }

    /// The layer.
    pub fn build(self) -> KeroAuthLayer {
        KeroAuthLayer {
            cache: Arc::new(Cache::new(self.source, self.config)),
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
