//! Shared test support: a recording HTTP server on loopback, a counting token source, clients.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kero_auth::{source::FetchFuture, ReplayBody, Token, TokenSource};
use tokio::net::TcpListener;

/// The request body type the test clients send. (Its error is a concrete type: with `BoxError`,
/// rustc cannot prove the spawned futures `Send` — "implementation of `Service` is not general
/// enough", a known compiler limitation with `dyn Error` in async blocks.)
pub type TestBody = BoxBody<Bytes, std::io::Error>;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Seen {
    pub fn token(&self) -> Option<&str> {
        self.headers.get("token").and_then(|v| v.to_str().ok())
    }

    /// The headers without the token, for comparing a request with its replay.
    pub fn headers_without_token(&self) -> HeaderMap {
        let mut h = self.headers.clone();
        h.remove("token");
        h
    }
}

type Rule = dyn Fn(&Seen) -> StatusCode + Send + Sync;

/// A real HTTP server (HTTP/1.1 and HTTP/2 prior knowledge) on 127.0.0.1 that records every request
/// and answers with the status `rule` gives.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(rule: impl Fn(&Seen) -> StatusCode + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let seen2 = seen.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let seen = seen2.clone();
                let rule = rule.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let rule = rule.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            if parts.uri.path().starts_with("/slow") {
                                // Answered late, judged on what is valid by then.
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let collected = body.collect().await.unwrap();
                            let trailers = collected.trailers().cloned();
                            let s = Seen {
                                method: parts.method,
                                uri: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body: collected.to_bytes(),
                                trailers,
                            };
                            let status = rule(&s);
                            seen.lock().unwrap().push(s);
                            let body = if status == StatusCode::UNAUTHORIZED {
                                r#"{"code":401,"status":"UNAUTHORIZED","msg":"invalid token"}"#
                            } else {
                                "ok"
                            };
                            let mut res =
                                Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                            *res.status_mut() = status;
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type TestClient = Client<HttpConnector, ReplayBody<TestBody>>;

/// A hyper-util client speaking HTTP/1.1.
pub fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A hyper-util client speaking HTTP/2 with prior knowledge (one connection for many requests).
pub fn http2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn full(bytes: &'static [u8]) -> TestBody {
    Full::new(Bytes::from_static(bytes))
        .map_err(|e| match e {})
        .boxed()
}

pub fn empty() -> TestBody {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

/// A body that arrives in `chunks` over time, then trailers.
pub fn streamed(chunks: Vec<&'static [u8]>, trailers: Option<HeaderMap>) -> TestBody {
    use futures_util::stream::{self, StreamExt};
    use http_body::Frame;
    let frames = chunks
        .into_iter()
        .map(|c| Frame::data(Bytes::from_static(c)))
        .chain(trailers.map(Frame::trailers));
    let s = stream::iter(frames).then(|f| async move {
        tokio::task::yield_now().await;
        Ok::<_, std::io::Error>(f)
    });
    BodyExt::boxed(http_body_util::StreamBody::new(s))
}

/// What a [`CountingSource`] does on each fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Succeed,
    Fail,
    Hang,
}

/// A token source that issues `tok-1`, `tok-2`, … with a fixed lifetime, counts its fetches, can
/// be slowed down, failed or hung.
pub struct CountingSource {
    pub fetches: AtomicUsize,
    pub lifetime: Duration,
    pub delay: Mutex<Duration>,
    pub mode: Mutex<Mode>,
    pub seen_current: Mutex<Vec<Option<String>>>,
}

impl CountingSource {
    pub fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(CountingSource {
            fetches: AtomicUsize::new(0),
            lifetime,
            delay: Mutex::new(Duration::ZERO),
            mode: Mutex::new(Mode::Succeed),
            seen_current: Mutex::new(Vec::new()),
        })
    }

    pub fn with_delay(self: Arc<Self>, delay: Duration) -> Arc<Self> {
        *self.delay.lock().unwrap() = delay;
        self
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The error a failing [`CountingSource`] returns.
#[derive(Debug, thiserror::Error)]
#[error("source is down (attempt {0})")]
pub struct SourceDown(pub usize);

impl TokenSource for CountingSource {
    fn fetch<'a>(&'a self, current: Option<&'a Token>) -> FetchFuture<'a> {
        Box::pin(async move {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen_current
                .lock()
                .unwrap()
                .push(current.map(|t| t.auth_token().to_owned()));
            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Succeed => Ok(Token::expiring_in(
                    format!("tok-{n}"),
                    self.lifetime,
                    format!("ref-{n}"),
                    self.lifetime * 10,
                )),
                Mode::Fail => Err(SourceDown(n).into()),
                Mode::Hang => std::future::pending().await,
            }
        })
    }
}

/// Accepts only the token the closure says is current.
pub fn accept_only(current: Arc<Mutex<String>>) -> impl Fn(&Seen) -> StatusCode + Send + Sync {
    move |s: &Seen| {
        if s.token() == Some(current.lock().unwrap().as_str()) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
}
