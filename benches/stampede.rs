//! Stampede: 10,000 concurrent requests arrive while the cache has no token, and the source
//! takes 50 ms. Exactly one fetch must run, and every request must go out as soon as it returns.
//!
//! - `empty_cache`: a new layer per iteration (no token yet), 10,000 requests spawned at once
//!   on a multi-thread runtime (2 workers), each through its own clone of the service (as
//!   `svc.clone().oneshot(req)` does), over an in-process inner service; timed until all have
//!   their response.
//! - `sleep_then_fresh`: the ideal: one 50 ms sleep, then the same 10,000 requests through a
//!   layer that already holds a fresh token.
//!
//! Goal: `empty_cache` ≤ 1.2 × `sleep_then_fresh`.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, SamplingMode};
use http::Request;
use http_body_util::Empty;
use kero_auth::{source, KeroAuth, KeroAuthLayer, Token};
use support::*;
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt};

const REQUESTS: usize = 10_000;
const FETCH: Duration = Duration::from_millis(50);

/// A layer whose source takes 50 ms, counting its fetches.
fn slow_layer(fetches: Arc<AtomicU64>) -> KeroAuthLayer {
    KeroAuthLayer::new(source::from_fn(move |_current: Option<Token>| {
        fetches.fetch_add(1, Ordering::Relaxed);
        async {
            tokio::time::sleep(FETCH).await;
            Ok::<_, Infallible>(day_token(token("tok-1")))
        }
    }))
}

/// Spawns `REQUESTS` requests at once, each on its own clone, and waits for all of them.
async fn burst(svc: &KeroAuth<Noop>) {
    let handles: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(Request::new(Empty::<Bytes>::new())).await })
        })
        .collect();
    for h in handles {
        let res = h.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// The ideal: one 50 ms sleep, then the burst through a layer that already holds a fresh token.
fn sleep_then_fresh(rt: &Runtime) -> Runner<'_> {
    let fetches = Arc::new(AtomicU64::new(0));
    let svc = slow_layer(fetches.clone()).layer(Noop);
    rt.block_on(svc.clone().oneshot(Request::new(Empty::<Bytes>::new())))
        .unwrap();
    Box::new(move |iters| {
        let elapsed = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                tokio::time::sleep(FETCH).await;
                burst(&svc).await;
            }
            start.elapsed()
        });
        assert_eq!(fetches.load(Ordering::Relaxed), 1, "the token stayed fresh");
        elapsed
    })
}

/// The stampede: a new layer (no token) per iteration, the burst timed until all have answers.
fn empty_cache(rt: &Runtime) -> Runner<'_> {
    Box::new(move |iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let fetches = Arc::new(AtomicU64::new(0));
                let svc = slow_layer(fetches.clone()).layer(Noop);
                let start = Instant::now();
                burst(&svc).await;
                total += start.elapsed();
                assert_eq!(
                    fetches.load(Ordering::Relaxed),
                    1,
                    "one fetch for the stampede"
                );
            }
            total
        })
    })
}

const NAMES: [&str; 2] = ["sleep_then_fresh", "empty_cache"];

fn runners(rt: &Runtime) -> Vec<Runner<'_>> {
    vec![sleep_then_fresh(rt), empty_cache(rt)]
}

fn stampede(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("stampede");
    g.sampling_mode(SamplingMode::Flat);
    for (name, mut run) in NAMES.into_iter().zip(runners(&rt)) {
        g.bench_function(name, |b| b.iter_custom(&mut run));
    }
    g.finish();

    // The same, interleaved (see `support::interleaved`).
    if measuring() {
        let mut runs = runners(&rt);
        let mut variants: Vec<(&str, &mut Runner<'_>)> = NAMES.into_iter().zip(&mut runs).collect();
        interleaved("stampede", 15, 2, &mut variants, &["sleep_then_fresh"]);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(15);
    targets = stampede
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report("stampede", &NAMES, "sleep_then_fresh", since);
}
