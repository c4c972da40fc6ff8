//! An embedded mock Kero server for tests, examples and benches (cargo feature `mock`).
//!
//! [`MockKero`] is a real hyper 1.x HTTP server on `127.0.0.1` (a free port), serving HTTP/1.1
//! and HTTP/2 with prior knowledge, one task per connection. It speaks the Kero authentication
//! API — `POST /{region}/auth` and `POST /{region}/refresh` — issues JWT-shaped tokens (HS256,
//! signed with a key drawn at random for each server), and answers every other path as a
//! "protected" route of the wider Kero API that wants a valid `token` header. Controls on
//! [`MockKero`] switch failures on and off while it runs; [`Counts`] tells what it saw.
//! Dropping the [`MockKero`] shuts the server down.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use kero_auth::mock::MockKero;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kero = MockKero::start().await;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//!
//! // Log in.
//! let (name, password) = kero.credentials();
//! let login = serde_json::json!({ "name": name, "password": password }).to_string();
//! let request = http::Request::post(format!("{}/us/auth", kero.base_url()))
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from(login)))?;
//! let response = client.request(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await?.to_bytes();
//! let token: kero_auth::Token = serde_json::from_slice(&body)?;
//!
//! // Call a protected route with the token, then without.
//! let request = http::Request::get(format!("{}/us/wallet", kero.base_url()))
//!     .header("token", token.auth_token())
//!     .body(Full::new(Bytes::new()))?;
//! assert_eq!(client.request(request).await?.status(), 200);
//! let request = http::Request::get(format!("{}/us/wallet", kero.base_url()))
//!     .body(Full::new(Bytes::new()))?;
//! assert_eq!(client.request(request).await?.status(), 401);
//!
//! let counts = kero.counts();
//! assert_eq!((counts.auth, counts.protected), (1, 2));
//! assert_eq!((counts.protected_ok, counts.protected_rejected), (1, 1));
//! # Ok(())
//! # }
//! ```
//!
//! # Routes and answers
//!
//! Error bodies are Kero error bodies, `{"code", "status", "msg", "data"}`:
//!
//! | HTTP | `code` | `status` | when |
//! |---|---|---|---|
//! | 403 | 1 | `INVALID SOURCE HOST` | [`reject_source_ip`](MockKero::reject_source_ip) is on (every path) |
//! | 401 | 2 | `INVALID CREDENTIALS` | /auth with a wrong name or password, or [`reject_credentials`](MockKero::reject_credentials) |
//! | 401 | 3 | `INVALID REFRESH TOKEN` | /refresh with an unknown, expired or revoked refresh token, or [`refuse_refresh`](MockKero::refuse_refresh) |
//! | 401 | 4 | `REFRESH TOKEN ALREADY USED` | /refresh with a refresh token already exchanged while rotating (counted in [`Counts::refresh_token_reused`]) |
//! | 401 | 5 | `INVALID TOKEN` | a protected route, or /refresh, whose `token` header is missing, unknown or revoked (or, on a protected route, expired) |
//! | 400 | 6 | `BAD REQUEST` | /auth or /refresh with a body that is not the JSON object the route wants (or larger than 64 KiB) |
//! | 503 | 7 | `SERVICE UNAVAILABLE` | [`fail_next`](MockKero::fail_next) |
//! | 404 | 8 | `NOT FOUND` | `/{other region}/auth` or `/{other region}/refresh` |
//! | 405 | 9 | `METHOD NOT ALLOWED` | /auth or /refresh with a method other than `POST` |
//! | 200 | 10 | `INTERNAL ERROR` | [`Malformed::ErrorWith200`] |
//!
//! A protected route (any other path, any method) reads and discards the request body, then
//! answers 200 with `{"ok":true,"path":"/..."}` when the `token` header is an access token this
//! server issued that has neither expired nor been revoked.
//!
//! Every answer has a `Date` header from the server's clock (the local clock moved by the clock
//! offset) and a `content-type`.
//!
//! # Choices where the Kero documentation is silent
//!
//! - Order of the checks: source IP, then route (404), then method (405), then
//!   [`fail_next`](MockKero::fail_next), then [`malformed_next`](MockKero::malformed_next), then
//!   the route's own checks. A call refused for its source IP uses up no pending failure.
//! - /refresh checks, in order: [`refuse_refresh`](MockKero::refuse_refresh), the body, the
//!   `token` header (an access token this server issued and did not revoke; expired is fine),
//!   then the refresh token (known; not already used; not revoked; not expired). The refresh
//!   token need not belong to the same pair as the header token.
//! - A new /auth does not invalidate tokens issued earlier, and a /refresh does not invalidate
//!   the access token it replaces (it stays valid until it expires). With rotation on, the old
//!   refresh token is spent; with rotation off, /refresh returns the same refresh token with its
//!   original expiry.
//! - Lifetimes are whole seconds: `access_expires_at = now + lifetime` in Unix seconds of the
//!   server's clock; a token is valid while `now < exp`.
//! - Malformed answers change no token state, and their tokens are unknown to the server.
//! - Calls are counted on arrival, before the latency, whatever the answer. Calls to 404 paths
//!   are not counted.
//! - The server never logs anything, so never a secret.

mod jwt;
mod server;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use self::server::{server_clock, unix_secs, Config, Shared, State};

/// A running mock Kero server on `127.0.0.1`. Dropping it shuts the server down.
///
/// See the [module documentation](self) for the routes and their answers.
pub struct MockKero {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What a call to /auth or /refresh answers instead of a good success, see
/// [`MockKero::malformed_next`]. Every kind is sent with HTTP 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// An HTML page (`content-type: text/html`).
    NotJson,
    /// JSON with `auth_token` and `access_expires_at` only.
    MissingField,
    /// All four fields, with the wrong JSON types (a number, a string, a boolean, an array).
    WrongTypes,
    /// More than 1 MiB of valid JSON: the four fields, then a huge `padding` string.
    HugeBody,
    /// All four fields, with `access_expires_at` (and the token's `exp`) an hour in the past.
    AccessExpired,
    /// All four fields, with an `auth_token` that ends in a space and a non-ASCII character
    /// (`"… é"`): not a visible-ASCII token. (`http::HeaderValue::from_str` still accepts it, as
    /// obs-text; `HeaderValue::to_str` refuses it.)
    TokenNotHeaderSafe,
    /// A Kero error body (`{"code":10,"status":"INTERNAL ERROR",…}`) with HTTP 200.
    ErrorWith200,
}

/// How many calls the server has received, by route. A snapshot from [`MockKero::counts`].
///
/// Every call is counted once, on arrival, whatever it was answered (a refused, failed or
/// malformed answer too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Calls to `/{region}/auth`.
    pub auth: u64,
    /// Calls to `/{region}/refresh`.
    pub refresh: u64,
    /// Calls to protected routes (every other path but 404s): `protected_ok + protected_rejected`
    /// once all have been answered.
    pub protected: u64,
    /// Protected calls answered 200.
    pub protected_ok: u64,
    /// Protected calls refused (401 for the token, or 403 for the source IP).
    pub protected_rejected: u64,
    /// Calls to /refresh with a refresh token already exchanged while rotating.
    pub refresh_token_reused: u64,
}

/// Configures a [`MockKero`] before it starts; from [`MockKero::builder`].
pub struct MockKeroBuilder {
    region: String,
    name: String,
    password: String,
    access_lifetime: Duration,
    refresh_lifetime: Duration,
    clock_offset: i64,
    rotate: bool,
    latency: Duration,
}

impl fmt::Debug for MockKeroBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKeroBuilder")
            .field("region", &self.region)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("access_lifetime", &self.access_lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .field("clock_offset", &self.clock_offset)
            .field("rotate_refresh_tokens", &self.rotate)
            .field("latency", &self.latency)
            .finish()
    }
}

impl Default for MockKeroBuilder {
    fn default() -> Self {
        MockKeroBuilder {
            region: "us".to_owned(),
            name: "kero-user".to_owned(),
            password: "kero-password".to_owned(),
            access_lifetime: Duration::from_secs(24 * 3600),
            refresh_lifetime: Duration::from_secs(180 * 24 * 3600),
            clock_offset: 0,
            rotate: true,
            latency: Duration::ZERO,
        }
    }
}

fn whole_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl MockKeroBuilder {
    /// The region in the paths (`/{region}/auth`); default `"us"`. The auth routes of any other
    /// region answer 404.
    pub fn region(mut self, r: &str) -> Self {
        self.region = r.to_owned();
        self
    }

    /// The credentials /auth accepts; default `("kero-user", "kero-password")`.
    pub fn credentials(mut self, name: &str, password: &str) -> Self {
        self.name = name.to_owned();
        self.password = password.to_owned();
        self
    }

    /// How long issued access tokens live, in whole seconds (the fraction is dropped);
    /// default 24 hours.
    pub fn access_lifetime(mut self, d: Duration) -> Self {
        self.access_lifetime = d;
        self
    }

    /// How long issued refresh tokens live, in whole seconds (the fraction is dropped);
    /// default 180 days.
    pub fn refresh_lifetime(mut self, d: Duration) -> Self {
        self.refresh_lifetime = d;
        self
    }

    /// The server's clock is the local clock plus `secs`; default 0. See
    /// [`MockKero::set_clock_offset`].
    pub fn clock_offset(mut self, secs: i64) -> Self {
        self.clock_offset = secs;
        self
    }

    /// Whether /refresh issues a new refresh token and spends the old one; default `true`. See
    /// [`MockKero::rotate_refresh_tokens`].
    pub fn rotate_refresh_tokens(mut self, on: bool) -> Self {
        self.rotate = on;
        self
    }

    /// A delay added before answering any call; default zero.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback socket can be bound, or outside a tokio runtime.
    pub async fn start(self) -> MockKero {
        let socket = TcpSocket::new_v4().expect("kero mock: cannot create a TCP socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("kero mock: cannot bind 127.0.0.1");
        let listener = socket
            .listen(4096)
            .expect("kero mock: cannot listen on 127.0.0.1");
        let addr = listener.local_addr().expect("kero mock: no local address");
        let config = Config {
            region: self.region,
            name: self.name,
            password: self.password,
            access_lifetime: whole_secs(self.access_lifetime),
            refresh_lifetime: whole_secs(self.refresh_lifetime),
        };
        let state = State::new(self.rotate, self.latency, self.clock_offset);
        let shared = Arc::new(Shared::new(config, state));
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        MockKero { addr, shared, task }
    }
}

impl fmt::Debug for MockKero {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKero")
            .field("addr", &self.addr)
            .field("region", &self.shared.config.region)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Drop for MockKero {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockKero {
    /// Starts a server with the defaults of [`MockKeroBuilder`].
    ///
    /// # Panics
    ///
    /// As [`MockKeroBuilder::start`].
    pub async fn start() -> MockKero {
        MockKero::builder().start().await
    }

    /// A builder for a server with other settings.
    pub fn builder() -> MockKeroBuilder {
        MockKeroBuilder::default()
    }

    /// `"http://127.0.0.1:PORT"`, with no trailing slash and no region.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many calls the server has received so far, by route.
    pub fn counts(&self) -> Counts {
        self.shared.lock().counts
    }

    /// The `(name, password)` that /auth accepts.
    pub fn credentials(&self) -> (String, String) {
        let c = &self.shared.config;
        (c.name.clone(), c.password.clone())
    }

    /// While on, every path answers 403 `INVALID SOURCE HOST`, as Kero does for a caller whose
    /// IP is not whitelisted.
    pub fn reject_source_ip(&self, on: bool) {
        self.shared.lock().reject_source_ip = on;
    }

    /// While on, /auth answers 401 `INVALID CREDENTIALS` even to the right credentials.
    pub fn reject_credentials(&self, on: bool) {
        self.shared.lock().reject_credentials = on;
    }

    /// While on (the default), /refresh issues a new refresh token and spends the one it was
    /// given: presenting that one again answers 401 `REFRESH TOKEN ALREADY USED` and counts in
    /// [`Counts::refresh_token_reused`]. While off, /refresh returns the refresh token it was
    /// given, with its original expiry, and a new access token.
    pub fn rotate_refresh_tokens(&self, on: bool) {
        self.shared.lock().rotate = on;
    }

    /// While on, /refresh answers 401 `INVALID REFRESH TOKEN` whatever it is sent.
    pub fn refuse_refresh(&self, on: bool) {
        self.shared.lock().refuse_refresh = on;
    }

    /// Revokes every access and refresh token issued so far. Tokens issued later are valid.
    pub fn revoke_all(&self) {
        let mut st = self.shared.lock();
        st.revoked_below = st.next_serial();
    }

    /// A delay added before answering any call (after its body is read), from now on.
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().latency = d;
    }

    /// The next `n` calls to /auth or /refresh answer 503 `SERVICE UNAVAILABLE`. Replaces any
    /// count still pending (`fail_next(0)` cancels). Takes precedence over
    /// [`malformed_next`](MockKero::malformed_next).
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// The next `n` calls to /auth or /refresh answer a malformed success of `kind`, whatever
    /// they sent. Replaces any malformed answers still pending (`n == 0` cancels).
    pub fn malformed_next(&self, kind: Malformed, n: usize) {
        self.shared.lock().malformed_next = (n > 0).then_some((kind, n));
    }

    /// The server's clock becomes the local clock plus `secs`, from now on. It sets the expiry
    /// of the tokens issued next, decides which tokens have expired, and dates every answer.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.lock().clock_offset = secs;
    }

    /// The server's clock, in Unix seconds (rounded down).
    pub fn now(&self) -> i64 {
        let offset = self.shared.lock().clock_offset;
        unix_secs(server_clock(offset))
    }
}
