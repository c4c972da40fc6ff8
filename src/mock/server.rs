//! The mock server's state, its routing and its answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, DATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::jwt::{Kind, Signer};
use super::{Counts, Malformed};

/// The largest request body /auth and /refresh read; a larger one is a bad request.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// The size of the padding in a [`Malformed::HugeBody`] answer (more than 1 MiB).
const HUGE_PADDING: usize = 1024 * 1024 + 64 * 1024;
/// Latest instant an IMF-fixdate can show (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE: u64 = 253_402_300_799;

/// What the builder fixed.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) region: String,
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) access_lifetime: i64,
    pub(crate) refresh_lifetime: i64,
}

/// A token the server issued.
#[derive(Clone, Copy, Debug)]
struct Issued {
    serial: u64,
    exp: i64,
    /// A refresh token already exchanged while rotation was on.
    used: bool,
}

/// What the controls change, the counts and the issued tokens.
pub(crate) struct State {
    pub(crate) reject_source_ip: bool,
    pub(crate) reject_credentials: bool,
    pub(crate) rotate: bool,
    pub(crate) refuse_refresh: bool,
    pub(crate) latency: Duration,
    pub(crate) fail_next: usize,
    pub(crate) malformed_next: Option<(Malformed, usize)>,
    pub(crate) clock_offset: i64,
    pub(crate) counts: Counts,
    /// Tokens with a serial below this were revoked by `revoke_all`.
    pub(crate) revoked_below: u64,
    next_serial: u64,
    access: HashMap<String, Issued>,
    refresh: HashMap<String, Issued>,
}

impl State {
    pub(crate) fn new(rotate: bool, latency: Duration, clock_offset: i64) -> Self {
        State {
            reject_source_ip: false,
            reject_credentials: false,
            rotate,
            refuse_refresh: false,
            latency,
            fail_next: 0,
            malformed_next: None,
            clock_offset,
            counts: Counts::default(),
            revoked_below: 0,
            next_serial: 0,
            access: HashMap::new(),
            refresh: HashMap::new(),
        }
    }

    /// The serial the next issued token gets.
    pub(crate) fn next_serial(&self) -> u64 {
        self.next_serial
    }

    fn serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    /// An issued, unrevoked access token (expired or not), or `None`.
    fn access_token(&self, headers: &HeaderMap) -> Option<Issued> {
        let token = headers.get("token")?.to_str().ok()?;
        self.access
            .get(token)
            .copied()
            .filter(|t| t.serial >= self.revoked_below)
    }
}

/// Everything the connection tasks share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    signer: Signer,
}

impl Shared {
    pub(crate) fn new(config: Config, state: State) -> Self {
        Shared {
            config,
            state: Mutex::new(state),
            signer: Signer::new(),
        }
    }

    /// The state; a poisoned lock is taken over (no code here panics while holding it).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server's clock: the local clock moved by `offset` seconds.
pub(crate) fn server_clock(offset: i64) -> SystemTime {
    let now = SystemTime::now();
    let d = Duration::from_secs(offset.unsigned_abs());
    let moved = if offset >= 0 {
        now.checked_add(d)
    } else {
        now.checked_sub(d)
    };
    moved.unwrap_or(now)
}

/// Unix seconds (rounded down) of `t`.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// The `Date` header for the server's clock `t`, clamped to what an IMF-fixdate can show.
fn http_date(t: SystemTime) -> Option<HeaderValue> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().min(MAX_HTTP_DATE),
        Err(_) => 0,
    };
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
}

/// Which route a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Auth,
    Refresh,
    Protected,
    /// `/{other region}/auth` or `/{other region}/refresh`.
    NotFound,
}

impl Route {
    fn of(region: &str, path: &str) -> Route {
        let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some(r), Some(last @ ("auth" | "refresh")), None) => {
                if r != region {
                    Route::NotFound
                } else if last == "auth" {
                    Route::Auth
                } else {
                    Route::Refresh
                }
            }
            _ => Route::Protected,
        }
    }
}

/// An answer, before the `Date` header is added.
struct Reply {
    status: StatusCode,
    body: Bytes,
    json: bool,
}

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(value.to_string()),
            json: true,
        }
    }

    fn error(status: StatusCode, code: i64, name: &str, msg: &str) -> Reply {
        Reply::json(
            status,
            &json!({ "code": code, "status": name, "msg": msg, "data": null }),
        )
    }

    fn into_response(self, date: Option<HeaderValue>) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(self.body));
        *res.status_mut() = self.status;
        let content_type = if self.json {
            "application/json"
        } else {
            "text/html; charset=utf-8"
        };
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(date) = date {
            res.headers_mut().insert(DATE, date);
        }
        res
    }
}

fn source_host() -> Reply {
    Reply::json(
        StatusCode::FORBIDDEN,
        &json!({
            "code": 1,
            "status": "INVALID SOURCE HOST",
            "msg": "source IP 127.0.0.1 is not whitelisted",
            "data": "additional data for error response",
        }),
    )
}

fn bad_request(msg: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, 6, "BAD REQUEST", msg)
}

fn invalid_token() -> Reply {
    Reply::error(
        StatusCode::UNAUTHORIZED,
        5,
        "INVALID TOKEN",
        "missing, unknown or expired token",
    )
}

fn invalid_refresh(msg: &str) -> Reply {
    Reply::error(StatusCode::UNAUTHORIZED, 3, "INVALID REFRESH TOKEN", msg)
}

#[derive(Deserialize)]
struct AuthRequest {
    name: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// Accepts connections until the task is aborted; every connection is a task of a [`JoinSet`]
/// owned here, so aborting this task (dropping the set) ends them all.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(4096);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        let accepted = poll_fn(|cx| {
            // Reap finished connection tasks so the set does not grow without bound.
            while let Poll::Ready(Some(_)) = connections.poll_join_next(cx) {}
            listener.poll_accept(cx)
        })
        .await;
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = Route::of(&shared.config.region, req.uri().path());
    let latency = {
        let mut st = shared.lock();
        match route {
            Route::Auth => st.counts.auth += 1,
            Route::Refresh => st.counts.refresh += 1,
            Route::Protected => st.counts.protected += 1,
            Route::NotFound => {}
        }
        st.latency
    };
    let (parts, body) = req.into_parts();
    let body = match route {
        Route::Auth | Route::Refresh => Limited::new(body, MAX_REQUEST_BODY)
            .collect()
            .await
            .ok()
            .map(|c| c.to_bytes()),
        Route::Protected | Route::NotFound => {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            None
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut st = shared.lock();
    let clock = server_clock(st.clock_offset);
    let now = unix_secs(clock);
    let reply = decide(
        &shared,
        &mut st,
        now,
        route,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        body,
    );
    drop(st);
    Ok(reply.into_response(http_date(clock)))
}

#[allow(clippy::too_many_arguments)]
fn decide(
    shared: &Shared,
    st: &mut State,
    now: i64,
    route: Route,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Reply {
    if st.reject_source_ip {
        if route == Route::Protected {
            st.counts.protected_rejected += 1;
        }
        return source_host();
    }
    match route {
        Route::NotFound => Reply::error(StatusCode::NOT_FOUND, 8, "NOT FOUND", "no such route"),
        Route::Protected => {
            if st.access_token(headers).is_some_and(|t| now < t.exp) {
                st.counts.protected_ok += 1;
                Reply::json(StatusCode::OK, &json!({ "ok": true, "path": path }))
            } else {
                st.counts.protected_rejected += 1;
                invalid_token()
            }
        }
        Route::Auth | Route::Refresh if method != Method::POST => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            9,
            "METHOD NOT ALLOWED",
            "use POST",
        ),
        Route::Auth | Route::Refresh => {
            if st.fail_next > 0 {
                st.fail_next -= 1;
                return Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    7,
                    "SERVICE UNAVAILABLE",
                    "the service is temporarily unavailable, try again later",
                );
            }
            if let Some((kind, n)) = st.malformed_next {
                st.malformed_next = (n > 1).then_some((kind, n - 1));
                return malformed(shared, st, now, kind);
            }
            if route == Route::Auth {
                auth(shared, st, now, body)
            } else {
                refresh(shared, st, now, headers, body)
            }
        }
    }
}

fn auth(shared: &Shared, st: &mut State, now: i64, body: Option<Bytes>) -> Reply {
    let Some(req) = body.and_then(|b| serde_json::from_slice::<AuthRequest>(&b).ok()) else {
        return bad_request("the body must be a JSON object with string fields name and password");
    };
    let cfg = &shared.config;
    if st.reject_credentials || req.name != cfg.name || req.password != cfg.password {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            2,
            "INVALID CREDENTIALS",
            "wrong name or password",
        );
    }
    let (auth_token, access_expires_at) = issue(shared, st, now, Kind::Access);
    let (refresh_token, refresh_expires_at) = issue(shared, st, now, Kind::Refresh);
    pair(
        &auth_token,
        access_expires_at,
        &refresh_token,
        refresh_expires_at,
    )
}

fn refresh(
    shared: &Shared,
    st: &mut State,
    now: i64,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Reply {
    if st.refuse_refresh {
        return invalid_refresh("refresh refused");
    }
    let Some(req) = body.and_then(|b| serde_json::from_slice::<RefreshRequest>(&b).ok()) else {
        return bad_request("the body must be a JSON object with a string field refresh_token");
    };
    // The header token must be one this server issued and did not revoke; expired is fine.
    if st.access_token(headers).is_none() {
        return invalid_token();
    }
    let Some(old) = st.refresh.get(&req.refresh_token).copied() else {
        return invalid_refresh("unknown refresh token");
    };
    if old.used {
        st.counts.refresh_token_reused += 1;
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            4,
            "REFRESH TOKEN ALREADY USED",
            "this refresh token was already exchanged",
        );
    }
    if old.serial < st.revoked_below {
        return invalid_refresh("revoked refresh token");
    }
    if now >= old.exp {
        return invalid_refresh("expired refresh token");
    }
    let (auth_token, access_expires_at) = issue(shared, st, now, Kind::Access);
    if st.rotate {
        if let Some(t) = st.refresh.get_mut(&req.refresh_token) {
            t.used = true;
        }
        let (refresh_token, refresh_expires_at) = issue(shared, st, now, Kind::Refresh);
        pair(
            &auth_token,
            access_expires_at,
            &refresh_token,
            refresh_expires_at,
        )
    } else {
        pair(&auth_token, access_expires_at, &req.refresh_token, old.exp)
    }
}

/// Issues and records a token; returns it with its expiry.
fn issue(shared: &Shared, st: &mut State, now: i64, kind: Kind) -> (String, i64) {
    let lifetime = match kind {
        Kind::Access => shared.config.access_lifetime,
        Kind::Refresh => shared.config.refresh_lifetime,
    };
    let exp = now.saturating_add(lifetime);
    let serial = st.serial();
    let token = shared
        .signer
        .token(kind, serial, now, exp, &shared.config.name);
    let issued = Issued {
        serial,
        exp,
        used: false,
    };
    match kind {
        Kind::Access => st.access.insert(token.clone(), issued),
        Kind::Refresh => st.refresh.insert(token.clone(), issued),
    };
    (token, exp)
}

/// A token the server does not record (for malformed answers).
fn unrecorded(shared: &Shared, st: &mut State, now: i64, kind: Kind, exp: i64) -> String {
    let serial = st.serial();
    shared
        .signer
        .token(kind, serial, now, exp, &shared.config.name)
}

fn pair(
    auth_token: &str,
    access_expires_at: i64,
    refresh_token: &str,
    refresh_expires_at: i64,
) -> Reply {
    Reply::json(
        StatusCode::OK,
        &json!({
            "auth_token": auth_token,
            "access_expires_at": access_expires_at,
            "refresh_token": refresh_token,
            "refresh_expires_at": refresh_expires_at,
        }),
    )
}

/// A malformed success. Its tokens are not recorded: the server does not accept them later.
fn malformed(shared: &Shared, st: &mut State, now: i64, kind: Malformed) -> Reply {
    let access_exp = now.saturating_add(shared.config.access_lifetime);
    let refresh_exp = now.saturating_add(shared.config.refresh_lifetime);
    let access = unrecorded(shared, st, now, Kind::Access, access_exp);
    let refresh = unrecorded(shared, st, now, Kind::Refresh, refresh_exp);
    match kind {
        Malformed::NotJson => Reply {
            status: StatusCode::OK,
            body: Bytes::from_static(
                b"<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>\n",
            ),
            json: false,
        },
        Malformed::MissingField => Reply::json(
            StatusCode::OK,
            &json!({ "auth_token": access, "access_expires_at": access_exp }),
        ),
        Malformed::WrongTypes => Reply::json(
            StatusCode::OK,
            &json!({
                "auth_token": 12345,
                "access_expires_at": access_exp.to_string(),
                "refresh_token": true,
                "refresh_expires_at": [refresh_exp],
            }),
        ),
        Malformed::HugeBody => {
            let head = json!({
                "auth_token": access,
                "access_expires_at": access_exp,
                "refresh_token": refresh,
                "refresh_expires_at": refresh_exp,
            })
            .to_string();
            let mut body = String::with_capacity(head.len() + HUGE_PADDING + 16);
            body.push_str(head.strip_suffix('}').unwrap_or(&head));
            body.push_str(",\"padding\":\"");
            body.extend(std::iter::repeat_n('A', HUGE_PADDING));
            body.push_str("\"}");
            Reply {
                status: StatusCode::OK,
                body: Bytes::from(body),
                json: true,
            }
        }
        Malformed::AccessExpired => {
            let past = now.saturating_sub(3600);
            let access = unrecorded(shared, st, now, Kind::Access, past);
            pair(&access, past, &refresh, refresh_exp)
        }
        Malformed::TokenNotHeaderSafe => {
            pair(&format!("{access} \u{e9}"), access_exp, &refresh, refresh_exp)
        }
        Malformed::ErrorWith200 => Reply::error(
            StatusCode::OK,
            10,
            "INTERNAL ERROR",
            "an internal error occurred",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::of("us", "/us/auth"), Route::Auth);
        assert_eq!(Route::of("us", "/us/refresh"), Route::Refresh);
        assert_eq!(Route::of("us", "/eu/auth"), Route::NotFound);
        assert_eq!(Route::of("us", "/us/auth/x"), Route::Protected);
        assert_eq!(Route::of("us", "/auth"), Route::Protected);
        assert_eq!(Route::of("us", "/"), Route::Protected);
        assert_eq!(Route::of("us", "/us/things"), Route::Protected);
    }
}
