//! End to end: a hyper-util client against a hyper server on loopback (HTTP/1.1, keep-alive),
//! 64 requests in flight, both in this process on one multi-thread runtime (2 workers).
//!
//! - `no_layer`: the client alone (its requests carry no token: 600 bytes fewer on the wire);
//! - `set_request_header`: the client behind tower-http's `SetRequestHeader` with the same
//!   600-byte token (the floor: same bytes on the wire as `kero_auth`);
//! - `kero_auth`: the client behind the layer, token fresh;
//! - `kero_auth_no_replay` (interleaved run only): the same with replay disabled, which saves
//!   no request head: what the replay machinery costs end to end.
//!
//! The time is per request (wall time of a run ÷ its requests); throughput is its inverse.
//! Goal: throughput of `kero_auth` ≥ 0.98 × that of `no_layer` (time ratio ≤ 1/0.98 ≈ 1.020).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

const IN_FLIGHT: usize = 64;

/// A hyper HTTP/1.1 server on 127.0.0.1 answering every request with 200 "ok".
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    // Read the request to its end, as a real server does.
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// `total` requests, `IN_FLIGHT` at a time, one task per clone in `clones` (kept from run to
/// run, as a connection-per-task client keeps its service clones).
async fn run<S, B>(clones: &mut Vec<S>, uri: &Uri, total: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = std::mem::take(clones)
        .into_iter()
        .map(|mut svc| {
            let next = next.clone();
            let uri = uri.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                    let res = svc.ready().await.unwrap().call(req).await.unwrap();
                    assert_eq!(res.status(), 200);
                    res.into_body().collect().await.unwrap();
                }
                svc
            })
        })
        .collect();
    for t in tasks {
        clones.push(t.await.unwrap());
    }
    start.elapsed()
}

/// One variant under test: its service clones, kept from run to run.
struct Variant<S> {
    clones: Vec<S>,
}

impl<S> Variant<S>
where
    S: Service<Request<Empty<Bytes>>> + Clone,
{
    fn new(svc: S) -> Self {
        Variant {
            clones: (0..IN_FLIGHT).map(|_| svc.clone()).collect(),
        }
    }
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(server());
    let uri: Uri = format!("http://{addr}/v1/ping").parse().unwrap();

    let client = |_: ()| {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_max_idle_per_host(IN_FLIGHT);
        b
    };
    let mut plain = Variant::new(client(()).build_http::<Empty<Bytes>>());
    let mut floor = Variant::new(
        SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value())
            .layer(client(()).build_http::<Empty<Bytes>>()),
    );
    let layer = fresh_layer();
    let mut kero = Variant::new(layer.layer(client(()).build_http()));
    let bare_layer = fresh_layer_builder().replay_limit(0).build();
    let mut bare = Variant::new(bare_layer.layer(client(()).build_http()));

    // Opens the connections, gets the token, and makes each clone's first call.
    rt.block_on(async {
        run(&mut plain.clones, &uri, 4 * IN_FLIGHT as u64).await;
        run(&mut floor.clones, &uri, 4 * IN_FLIGHT as u64).await;
        run(&mut kero.clones, &uri, 4 * IN_FLIGHT as u64).await;
        run(&mut bare.clones, &uri, 4 * IN_FLIGHT as u64).await;
    });

    let mut g = c.benchmark_group("end_to_end");
    g.throughput(Throughput::Elements(1));
    g.bench_function("no_layer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&mut plain.clones, &uri, iters)))
    });
    g.bench_function("set_request_header", |b| {
        b.iter_custom(|iters| rt.block_on(run(&mut floor.clones, &uri, iters)))
    });
    g.bench_function("kero_auth", |b| {
        b.iter_custom(|iters| rt.block_on(run(&mut kero.clones, &uri, iters)))
    });
    g.finish();

    // The same comparison interleaved (see `support::interleaved`), in short rounds: the time
    // ratio `r` of a variant to `no_layer` is a throughput ratio of `1 / r`.
    if measuring() {
        let (rt, uri) = (&rt, &uri);
        let mut runs: Vec<Runner<'_>> = vec![
            Box::new(|iters| rt.block_on(run(&mut plain.clones, uri, iters))),
            Box::new(|iters| rt.block_on(run(&mut floor.clones, uri, iters))),
            Box::new(|iters| rt.block_on(run(&mut kero.clones, uri, iters))),
            Box::new(|iters| rt.block_on(run(&mut bare.clones, uri, iters))),
        ];
        let mut variants: Vec<(&str, &mut Runner<'_>)> = [
            "no_layer",
            "set_request_header",
            "kero_auth",
            "kero_auth_no_replay",
        ]
        .into_iter()
        .zip(&mut runs)
        .collect();
        interleaved(
            "end_to_end",
            41,
            5_000,
            &mut variants,
            &["no_layer", "set_request_header"],
        );
    }
    assert_eq!(layer.stats().fetches, 1);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    targets = end_to_end
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    let functions = ["no_layer", "set_request_header", "kero_auth"];
    report("end_to_end", &functions, "no_layer", since);
    report("end_to_end", &functions, "set_request_header", since);
    if let (Some(base), Some(kero)) = (
        median_ns("end_to_end", "no_layer", since),
        median_ns("end_to_end", "kero_auth", since),
    ) {
        println!(
            "\nthroughput: no_layer {:.0} req/s, kero_auth {:.0} req/s, ratio {:.3}",
            1e9 / base,
            1e9 / kero,
            base / kero
        );
    }
}
