//! Contention: the fresh-token hot path called from several threads and tasks at once, one
//! service clone each, over the same no-op inner service as `hot_path`, with an empty body.
//!
//! - `threads_1`, `threads_2`: OS threads released together by a barrier, each making `iters`
//!   calls; the time is the wall time from the first start to the last end, per call *of one
//!   thread*. With no contention, `threads_2` equals `threads_1` (the machine has 2 cores).
//! - `tasks_8`, `tasks_64`: tasks on a multi-thread tokio runtime (2 workers) sharing `iters`
//!   calls; the time is the wall time per call of *all* tasks (a throughput).
//!
//! The same for `SetRequestHeader` (the floor; its clones share one `HeaderValue`, so one
//! reference count), and for the inner service alone (`no_layer`, which shares nothing: how the
//! machine itself scales from 1 to 2 threads), and for the hand-written `Mutex<String>` layer
//! of `hot_path` (one lock for all clones). Goal: `threads_2 / threads_1` ≤ 1.15 for
//! `kero_auth`.
//!
//! Criterion measures `threads_1` and `threads_2` seconds apart, and this machine drifts between
//! the two by more than the differences looked for; so the slowdown is also measured
//! interleaved (`cargo bench` only): in each round, every service runs 1,000,000 calls on one
//! thread and then on each of two threads at once (two clones, made and warmed one after the
//! other on the main thread, as a server makes them), in turn; the table gives each service's
//! median of its per-round slowdowns.

mod support;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use http::Request;
use http_body_util::Empty;
use support::*;
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

const FUNCTIONS: [&str; 4] = ["threads_1", "threads_2", "tasks_8", "tasks_64"];
const SERVICES: [&str; 4] = [
    "no_layer",
    "set_request_header",
    "mutex_string",
    "kero_auth",
];

type Req = Request<Empty<Bytes>>;

/// `threads` OS threads, one clone each, `iters` calls each; wall time from the barrier.
fn on_threads<S>(clones: &mut [S], iters: u64) -> Duration
where
    S: Service<Req> + Send,
    S::Error: std::fmt::Debug,
{
    let spans = on_threads_each(clones, |svc| {
        let start = Instant::now();
        for _ in 0..iters {
            call_now(svc, Request::new(Empty::new()));
        }
        (start, Instant::now())
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

/// `clones.len()` tasks on `rt` sharing `iters` calls; wall time of the whole.
fn on_tasks<S>(rt: &tokio::runtime::Runtime, clones: &mut Vec<S>, iters: u64) -> Duration
where
    S: Service<Req> + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let n = clones.len() as u64;
    let per_task = iters.div_ceil(n);
    let taken = std::mem::take(clones);
    let (elapsed, back) = rt.block_on(async move {
        let start = Instant::now();
        let handles: Vec<_> = taken
            .into_iter()
            .map(|mut svc| {
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        svc.ready().await.unwrap();
                        let res = svc.call(Request::new(Empty::new())).await.unwrap();
                        drop(std::hint::black_box(res));
                    }
                    svc
                })
            })
            .collect();
        let mut back = Vec::with_capacity(handles.len());
        for h in handles {
            back.push(h.await.unwrap());
        }
        (start.elapsed(), back)
    });
    *clones = back;
    // Per call of `iters` (the tasks made `per_task * n` ≥ `iters` calls).
    elapsed.mul_f64(iters as f64 / (per_task * n) as f64)
}

fn group<S>(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, svc: S)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    // Every clone is made and warmed once, so that no sample pays a clone's first call.
    let warmed = |n: usize| -> Vec<S> {
        (0..n)
            .map(|_| {
                let mut s = svc.clone();
                call_now(&mut s, Request::new(Empty::new()));
                s
            })
            .collect()
    };
    let mut g = c.benchmark_group(format!("contention_{name}"));
    for threads in [1, 2] {
        let mut clones = warmed(threads);
        g.bench_function(format!("threads_{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&mut clones, iters))
        });
    }
    for tasks in [8, 64] {
        let mut clones = warmed(tasks);
        g.bench_function(format!("tasks_{tasks}"), |b| {
            b.iter_custom(|iters| on_tasks(rt, &mut clones, iters))
        });
    }
    g.finish();
}

fn contention(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The machine's own scaling: an inner service alone shares nothing between threads.
    group(c, "no_layer", &rt, Noop);

    let floor = SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop);
    group(c, "set_request_header", &rt, floor);

    // The hand-written layer: one mutex for all clones.
    group(
        c,
        "mutex_string",
        &rt,
        NaiveAuthLayer::new(token("tok-1")).layer(Noop),
    );

    let kero = fresh_layer().layer(Noop);
    rt.block_on(kero.clone().oneshot(Request::new(Empty::<Bytes>::new())))
        .unwrap();
    group(c, "kero_auth", &rt, kero.clone());

    if measuring() {
        scaling_interleaved(&kero);
    }

    assert_eq!(
        kero.stats().fetches,
        1,
        "the token was fetched again during the bench"
    );
}

/// Two clones of `svc`, made and warmed one after the other.
fn pair<S: Service<Req> + Clone>(svc: &S) -> [S; 2]
where
    S::Error: std::fmt::Debug,
{
    let mut pair = [svc.clone(), svc.clone()];
    for s in pair.iter_mut() {
        call_now(s, Request::new(Empty::new()));
    }
    pair
}

/// One service's 1 → 2 threads slowdown, measured once.
type Slowdown<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// The 1 → 2 threads slowdown of every service, interleaved round by round.
fn scaling_interleaved<S>(kero: &S)
where
    S: Service<Req> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    const ROUNDS: usize = 21;
    const CALLS: u64 = 1_000_000;
    let mut noop = pair(&Noop);
    let mut floor =
        pair(&SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop));
    let mut mutex = pair(&NaiveAuthLayer::new(token("tok-1")).layer(Noop));
    let mut kero = pair(kero);
    let mut runs: [(&str, Slowdown<'_>); 4] = [
        ("no_layer", Box::new(|| thread_slowdown(&mut noop, CALLS))),
        (
            "set_request_header",
            Box::new(|| thread_slowdown(&mut floor, CALLS)),
        ),
        (
            "mutex_string",
            Box::new(|| thread_slowdown(&mut mutex, CALLS)),
        ),
        ("kero_auth", Box::new(|| thread_slowdown(&mut kero, CALLS))),
    ];
    let mut ratios = vec![Vec::with_capacity(ROUNDS); runs.len()];
    for round in 0..ROUNDS {
        let n = runs.len();
        for i in (0..n).map(|k| (round + k) % n) {
            ratios[i].push((runs[i].1)());
        }
    }
    println!("\n| 1 → 2 threads, interleaved ({ROUNDS} rounds × {CALLS} calls) | median slowdown | range |");
    println!("|---|---:|---:|");
    for ((name, _), r) in runs.iter().zip(ratios) {
        let (lo, hi) = (
            r.iter().copied().fold(f64::MAX, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        );
        println!("| {name} | {:.3}× | {lo:.2}–{hi:.2}× |", median(r));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    targets = contention
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    for s in SERVICES {
        report(&format!("contention_{s}"), &FUNCTIONS, "threads_1", since);
    }
    report_scaling(
        "kero_auth ÷ set_request_header",
        "contention_kero_auth",
        "contention_set_request_header",
        &FUNCTIONS,
        since,
    );
}
