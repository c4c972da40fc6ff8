//! The hot path: one request through the layer while the token is fresh, over an inner service
//! whose future is `std::future::Ready`, polled without a runtime.
//!
//! In each group (one per body kind), against:
//! - `no_layer`: the inner service alone;
//! - `set_request_header`: tower-http's `SetRequestHeader::overriding` with the same 600-byte
//!   sensitive value, built once: the floor (a layer that adds a fixed header can do no less);
//! - `mutex_string`: a hand-written layer that locks a `Mutex<String>` and builds the header value
//!   with `HeaderValue::from_str` on every request;
//! - `wrap_body_check_status`: the floor's fixed header, plus what any layer pays that changes the
//!   body's type and looks at the response (as this one must, to replay): the body moved into a
//!   pass-through wrapper, a future that checks the status. No token work at all.
//!
//! And `kero_auth_no_replay`: the layer with replay disabled (`replay_limit(0)`), which saves no
//! request head and records no body: what the token header alone costs through the layer.
//!
//! The interleaved tables add `set_request_header_cloned` and `kero_auth_cloned`: the service
//! cloned for every request (`svc.clone().oneshot(req)`, a common way to call a shared client),
//! where each clone of this layer makes its per-clone state on its first and only request.
//!
//! Goal: `kero_auth` ≤ 1.05 × `set_request_header`.

mod support;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, BatchSize, Criterion};
use http::Request;
use http_body::Body;
use http_body_util::{Empty, Full};
use support::*;
use tower::{Layer, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

const FUNCTIONS: [&str; 6] = [
    "no_layer",
    "set_request_header",
    "mutex_string",
    "wrap_body_check_status",
    "kero_auth",
    "kero_auth_no_replay",
];

fn group<B>(c: &mut Criterion, name: &str, body: B)
where
    B: Body<Data = Bytes, Error = std::convert::Infallible> + Clone + Send + Unpin + 'static,
{
    let mut g = c.benchmark_group(format!("hot_path_{name}"));
    let input = || Request::new(body.clone());

    g.bench_function("no_layer", |b| {
        let mut svc = Noop;
        b.iter_batched(input, |req| call_now(&mut svc, req), BatchSize::SmallInput)
    });

    g.bench_function("set_request_header", |b| {
        let mut svc =
            SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop);
        b.iter_batched(input, |req| call_now(&mut svc, req), BatchSize::SmallInput)
    });

    g.bench_function("mutex_string", |b| {
        let mut svc = NaiveAuthLayer::new(token("tok-1")).layer(Noop);
        b.iter_batched(input, |req| call_now(&mut svc, req), BatchSize::SmallInput)
    });

    g.bench_function("wrap_body_check_status", |b| {
        let mut svc = WrapLayer::new(sensitive_value()).layer(Noop);
        b.iter_batched(input, |req| call_now(&mut svc, req), BatchSize::SmallInput)
    });

    for (name, replay_limit) in [("kero_auth", None), ("kero_auth_no_replay", Some(0))] {
        g.bench_function(name, |b| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let layer = match replay_limit {
                None => fresh_layer(),
                Some(limit) => fresh_layer_builder().replay_limit(limit).build(),
            };
            let mut svc = layer.layer(Noop);
            // The first call fetches (inside the runtime); the second makes this clone's own
            // copy of the header value. From then on the token is fresh for 24 hours.
            rt.block_on(svc.clone().oneshot(input())).unwrap();
            call_now(&mut svc, input());
            assert_eq!(svc.stats().fetches, 1);
            b.iter_batched(input, |req| call_now(&mut svc, req), BatchSize::SmallInput);
            assert_eq!(
                svc.stats().fetches,
                1,
                "the token was fetched again during the bench"
            );
            drop(rt);
        });
    }

    g.finish();
}

fn hot_path(c: &mut Criterion) {
    group(c, "empty", Empty::<Bytes>::new());
    group(c, "full_1k", Full::new(Bytes::from(vec![b'x'; 1024])));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60);
    targets = hot_path
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    for g in ["hot_path_empty", "hot_path_full_1k"] {
        report(g, &FUNCTIONS, "set_request_header", since);
    }
    if measuring() {
        interleave("hot_path_empty", Empty::<Bytes>::new());
        interleave("hot_path_full_1k", Full::new(Bytes::from(vec![b'x'; 1024])));
    }
}

/// The same comparison, interleaved (see `support::interleaved`): the request is built inside
/// the timed loop here, the same for every variant.
fn interleave<B>(title: &str, body: B)
where
    B: Body<Data = Bytes, Error = std::convert::Infallible> + Clone + Send + Unpin + 'static,
{
    fn runner<'a, S, B>(mut svc: S, body: &'a B) -> Runner<'a>
    where
        S: tower::Service<Request<B>> + 'a,
        S::Error: std::fmt::Debug,
        B: Clone,
    {
        Box::new(move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                call_now(&mut svc, Request::new(body.clone()));
            }
            start.elapsed()
        })
    }
    /// A clone of `svc` for every request.
    fn cloned<'a, S, B>(svc: S, body: &'a B) -> Runner<'a>
    where
        S: tower::Service<Request<B>> + Clone + 'a,
        S::Error: std::fmt::Debug,
        B: Clone,
    {
        Box::new(move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                call_now(&mut svc.clone(), Request::new(body.clone()));
            }
            start.elapsed()
        })
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warmed = |layer: kero_auth::KeroAuthLayer| {
        let mut svc = layer.layer(Noop);
        rt.block_on(svc.clone().oneshot(Request::new(body.clone())))
            .unwrap();
        call_now(&mut svc, Request::new(body.clone()));
        svc
    };
    let mut runs = vec![
        runner(Noop, &body),
        runner(
            SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop),
            &body,
        ),
        runner(NaiveAuthLayer::new(token("tok-1")).layer(Noop), &body),
        runner(WrapLayer::new(sensitive_value()).layer(Noop), &body),
        runner(warmed(fresh_layer()), &body),
        runner(warmed(fresh_layer_builder().replay_limit(0).build()), &body),
        cloned(
            SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop),
            &body,
        ),
        cloned(warmed(fresh_layer()), &body),
    ];
    let names = FUNCTIONS
        .into_iter()
        .chain(["set_request_header_cloned", "kero_auth_cloned"]);
    let mut variants: Vec<(&str, &mut Runner<'_>)> = names.zip(&mut runs).collect();
    interleaved(
        title,
        21,
        200_000,
        &mut variants,
        &["set_request_header", "wrap_body_check_status"],
    );
}
