//! Replay: a request with a 16 KiB body streamed in 16 chunks is rejected with 401 (its token
//! was revoked); the layer fetches a new token and replays the recorded body once.
//!
//! - `by_hand`: what a caller without the layer does: send the request with the old token, get
//!   the 401, build the request again (a new body of the same chunks) with the new token, send it.
//! - `by_hand_with_fetch`: the same, plus the least a refresh costs: the new token is asked of
//!   the same in-memory source, awaited inline, and made into a header value.
//! - `by_hand_spawned_fetch`: the same, with the fetch made the way a fetch must be made if it is
//!   to survive the caller being dropped (as the layer's does): in a task of its own, under a
//!   timeout, its result awaited through a channel. The least a cancellation-safe refresh costs.
//! - `kero_auth`: one call through the layer: send, 401, fetch (an in-memory source, at once),
//!   replay from the recording, 200.
//!
//! Both against the same in-process inner service, which reads the whole body and answers 401
//! unless the token is the one it currently accepts. Current-thread runtime.
//! Goal: `kero_auth` ≤ 1.1 × `by_hand`.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use futures_util::stream;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use kero_auth::{source, KeroAuthLayer, Token};
use support::*;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const CHUNKS: usize = 16;
const CHUNK: usize = 1024;

type Streamed = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// 16 chunks of 1 KiB, each a slice of one shared buffer (as a client's body usually is).
fn body(data: &Bytes) -> Streamed {
    let frames: Vec<_> = (0..CHUNKS)
        .map(|i| Ok(Frame::data(data.slice(i * CHUNK..(i + 1) * CHUNK))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

/// One request with the 16 KiB body (and `token`, if given) through `svc`, once it is ready.
async fn send<S, R>(svc: &mut S, data: &Bytes, token: Option<&HeaderValue>) -> R
where
    S: Service<Request<Streamed>, Response = R>,
    S::Error: std::fmt::Debug,
{
    let mut req = Request::new(body(data));
    if let Some(token) = token {
        req.headers_mut().insert(TOKEN_HEADER, token.clone());
    }
    svc.ready().await.unwrap().call(req).await.unwrap()
}

/// The token the source issues as its `n`th.
fn nth_token(n: u64) -> HeaderValue {
    let mut v = HeaderValue::from_str(&token(&format!("tok-{n}"))).unwrap();
    v.set_sensitive(true);
    v
}

/// The source's `n`th token, at once (an in-memory source: what is measured is the layer's
/// machinery, not a network round trip).
async fn issue(n: u64) -> Result<Token, Infallible> {
    Ok(day_token(token(&format!("tok-{n}"))))
}

/// An in-process server: reads the whole request body, answers 200 "ok" if the token is the
/// one it accepts, else 401 with the Kero API's error body.
#[derive(Clone)]
struct Server {
    valid: Arc<Mutex<HeaderValue>>,
}

impl<B> Service<Request<B>> for Server
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let valid = self.valid.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let read = body.collect().await.unwrap().to_bytes();
            assert_eq!(read.len(), CHUNKS * CHUNK);
            let ok = parts.headers.get("token") == Some(&*valid.lock().unwrap());
            let mut res = if ok {
                Response::new(Full::new(Bytes::from_static(b"ok")))
            } else {
                Response::new(Full::new(Bytes::from_static(
                    br#"{"code":401,"status":"UNAUTHORIZED","msg":"invalid token"}"#,
                )))
            };
            if !ok {
                *res.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok(res)
        })
    }
}

/// By hand: send, 401, (fetch,) build the request again with the new token, send.
fn by_hand<'a>(rt: &'a Runtime, data: &'a Bytes, fetch: bool, spawned: bool) -> Runner<'a> {
    let server = Server {
        valid: Arc::new(Mutex::new(nth_token(1))),
    };
    let mut n = 1;
    let mut current = nth_token(1);
    let mut svc = server.clone();
    Box::new(move |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                // Revoke the current token: the server now accepts only the next one.
                n += 1;
                let revoked = nth_token(n);
                *server.valid.lock().unwrap() = revoked.clone();
                let res = send(&mut svc, data, Some(&current)).await;
                assert_eq!(res.status(), 401);
                res.into_body().collect().await.unwrap();
                current = if fetch {
                    // The least a refresh costs: ask the source (the same as the layer's,
                    // answering at once) and build the header value.
                    let token = if spawned {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tokio::spawn(async move {
                            let t = tokio::time::timeout(Duration::from_secs(30), issue(n));
                            let _ = tx.send(t.await);
                        });
                        rx.await.unwrap().unwrap().unwrap()
                    } else {
                        issue(n).await.unwrap()
                    };
                    let mut v = HeaderValue::from_str(token.auth_token()).unwrap();
                    v.set_sensitive(true);
                    v
                } else {
                    revoked
                };
                let res = send(&mut svc, data, Some(&current)).await;
                assert_eq!(res.status(), 200);
                drop(black_box(res));
            }
            start.elapsed()
        })
    })
}

/// Through the layer: one call; the layer gets the 401, fetches, and replays.
fn kero_auth<'a>(rt: &'a Runtime, data: &'a Bytes) -> Runner<'a> {
    let server = Server {
        valid: Arc::new(Mutex::new(nth_token(1))),
    };
    let issued = Arc::new(AtomicU64::new(0));
    let source = {
        let issued = issued.clone();
        source::from_fn(move |_current: Option<Token>| {
            issue(issued.fetch_add(1, Ordering::Relaxed) + 1)
        })
    };
    let layer = KeroAuthLayer::new(source);
    let mut svc = layer.layer(server.clone());
    // First token, and this clone's copy of it.
    rt.block_on(async {
        for _ in 0..2 {
            let res = send(&mut svc, data, None).await;
            assert_eq!(res.status(), 200);
        }
    });
    Box::new(move |iters| {
        let elapsed = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                // Revoke the current token: the server now accepts only the next one.
                let next = issued.load(Ordering::Relaxed) + 1;
                *server.valid.lock().unwrap() = nth_token(next);
                let res = send(&mut svc, data, None).await;
                assert_eq!(res.status(), 200);
                drop(black_box(res));
            }
            start.elapsed()
        });
        let stats = layer.stats();
        assert_eq!(
            stats.fetches,
            stats.replays + 1,
            "one fetch and one replay per iteration"
        );
        elapsed
    })
}

const NAMES: [&str; 4] = [
    "by_hand",
    "by_hand_with_fetch",
    "by_hand_spawned_fetch",
    "kero_auth",
];

fn runners<'a>(rt: &'a Runtime, data: &'a Bytes) -> Vec<Runner<'a>> {
    vec![
        by_hand(rt, data, false, false),
        by_hand(rt, data, true, false),
        by_hand(rt, data, true, true),
        kero_auth(rt, data),
    ]
}

fn replay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = Bytes::from(vec![b'x'; CHUNKS * CHUNK]);
    let mut g = c.benchmark_group("replay");
    for (name, mut run) in NAMES.into_iter().zip(runners(&rt, &data)) {
        g.bench_function(name, |b| b.iter_custom(&mut run));
    }
    g.finish();

    // The same, interleaved (see `support::interleaved`).
    if measuring() {
        let mut runs = runners(&rt, &data);
        let mut variants: Vec<(&str, &mut Runner<'_>)> = NAMES.into_iter().zip(&mut runs).collect();
        interleaved(
            "replay",
            21,
            2_000,
            &mut variants,
            &["by_hand", "by_hand_spawned_fetch"],
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = replay
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "replay",
        &[
            "by_hand",
            "by_hand_with_fetch",
            "by_hand_spawned_fetch",
            "kero_auth",
        ],
        "by_hand",
        since,
    );
    report(
        "replay",
        &["by_hand_spawned_fetch", "kero_auth"],
        "by_hand_spawned_fetch",
        since,
    );
}
