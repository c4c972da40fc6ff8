//! Shared bench support: in-process inner services, the baselines, a fresh-token layer, polling
//! without a runtime, and the ratio report read back from criterion's own estimates.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Empty;
use kero_auth::{source, KeroAuthLayer, Token};
use tower::{Layer, Service};

/// The header every variant sets.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("token");

/// A 600-byte token of visible ASCII (the size of a Kero JWT with a few claims), `tag` first so
/// that tokens of different generations differ.
pub fn token(tag: &str) -> String {
    let mut t = String::with_capacity(600);
    t.push_str(tag);
    t.push('.');
    while t.len() < 600 {
        t.push_str("eyJhbGciOiJIUzI1NiJ9");
    }
    t.truncate(600);
    t
}

/// A token that lives 24 hours (no refresh can become due during a bench).
pub fn day_token(auth: String) -> Token {
    Token::expiring_in(
        auth,
        Duration::from_secs(24 * 3600),
        "refresh",
        Duration::from_secs(180 * 24 * 3600),
    )
}

/// A layer whose source returns the same 600-byte, 24-hour token at once.
pub fn fresh_layer() -> KeroAuthLayer {
    fresh_layer_builder().build()
}

/// The builder of [`fresh_layer`], for other options.
pub fn fresh_layer_builder() -> kero_auth::Builder {
    KeroAuthLayer::builder(source::from_fn(|_current: Option<Token>| async {
        Ok::<_, Infallible>(day_token(token("tok-1")))
    }))
}

/// The floor's header value: 600 bytes, sensitive, built once.
pub fn sensitive_value() -> HeaderValue {
    let mut v = HeaderValue::from_str(&token("tok-1")).unwrap();
    v.set_sensitive(true);
    v
}

/// The inner service of the hot-path benches: a hand-written `Service` whose future is
/// `std::future::Ready`. It looks at the request (so the header insert is not dead code), drops
/// it, and answers 200 with an empty body.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        std::hint::black_box(&req);
        drop(req);
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Polls `fut` to completion with a no-op waker, without a runtime. Panics if it would wait:
/// on the fresh-token path over `Noop` nothing ever waits.
#[inline]
pub fn poll_now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future waited on the fresh-token path"),
    }
}

/// `poll_ready` (always ready here), `call`, poll to completion, drop the response: one request
/// as a caller makes it, without a runtime.
#[inline]
pub fn call_now<S, R>(svc: &mut S, req: R)
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the service was not ready"),
    }
    let res = poll_now(svc.call(req)).unwrap();
    drop(std::hint::black_box(res));
}

/// Nanoseconds per call of `n` calls of `svc`, one after the other, without a runtime.
pub fn per_call<S: Service<Request<Empty<Bytes>>>>(svc: &mut S, n: u64) -> f64
where
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..n {
        call_now(svc, Request::new(Empty::new()));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The per-call slowdown from one thread to two: `n` calls on clone 0 alone, then `n` calls on
/// each of clones 0 and 1 on two threads at once (the slower of the two).
pub fn thread_slowdown<S>(clones: &mut [S; 2], n: u64) -> f64
where
    S: Service<Request<Empty<Bytes>>> + Send,
    S::Error: std::fmt::Debug,
{
    let one = per_call(&mut clones[0], n);
    let two = on_threads_each(clones, |svc| per_call(svc, n));
    two.iter().copied().fold(0.0, f64::max) / one
}

/// Runs `f` on every clone, each on a thread of its own, released together by a barrier;
/// returns what each returned.
pub fn on_threads_each<S, T>(clones: &mut [S], f: impl Fn(&mut S) -> T + Sync) -> Vec<T>
where
    S: Send,
    T: Send,
{
    let barrier = std::sync::Barrier::new(clones.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = clones
            .iter_mut()
            .map(|svc| {
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    f(svc)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Baseline (c): what one writes without thinking about the hot path: the token behind a mutex,
/// a header value built from it on every request.
#[derive(Clone, Debug)]
pub struct NaiveAuthLayer {
    token: Arc<Mutex<String>>,
}

impl NaiveAuthLayer {
    pub fn new(token: String) -> Self {
        NaiveAuthLayer {
            token: Arc::new(Mutex::new(token)),
        }
    }
}

impl<S> Layer<S> for NaiveAuthLayer {
    type Service = NaiveAuth<S>;
    fn layer(&self, inner: S) -> NaiveAuth<S> {
        NaiveAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct NaiveAuth<S> {
    inner: S,
    token: Arc<Mutex<String>>,
}

impl<S, B> Service<Request<B>> for NaiveAuth<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let mut value = HeaderValue::from_str(&self.token.lock().unwrap()).unwrap();
        value.set_sensitive(true);
        req.headers_mut().insert(TOKEN_HEADER, value);
        self.inner.call(req)
    }
}

/// Whether this run measures (`cargo bench`), rather than checks that every benchmark runs
/// (`cargo test --benches`, where criterion runs each function once and the interleaved
/// comparisons are skipped, as they are under `--profile-time`, for profilers).
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a == "--profile-time")
}

/// Where criterion writes its estimates: `$CRITERION_HOME`, else `<target>/criterion` (the bench
/// binary lives in `<target>/<profile>/deps/`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median (ns per iteration) criterion measured for `group/function` in this process's run.
pub fn median_ns(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()?
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None; // from an earlier run (this one filtered it out or only tested it)
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints one markdown table row per function of `group`, with its median and its ratio to
/// `baseline` (and to `extra_baseline` if given), for BENCHMARKS.md.
pub fn report(group: &str, functions: &[&str], baseline: &str, since: SystemTime) {
    if !measuring() {
        return;
    }
    let Some(base) = median_ns(group, baseline, since) else {
        return;
    };
    println!("\n| {group} | median | ÷ {baseline} |");
    println!("|---|---:|---:|");
    for f in functions {
        if let Some(m) = median_ns(group, f, since) {
            println!("| {f} | {} | {:.3}× |", human(m), m / base);
        }
    }
}

/// Prints the ratio of two groups' medians function by function (e.g. 2 threads ÷ 1 thread).
pub fn report_scaling(title: &str, num: &str, den: &str, functions: &[&str], since: SystemTime) {
    if !measuring() {
        return;
    }
    let mut rows = Vec::new();
    for f in functions {
        if let (Some(n), Some(d)) = (median_ns(num, f, since), median_ns(den, f, since)) {
            rows.push(format!(
                "| {f} | {} | {} | {:.3}× |",
                human(d),
                human(n),
                n / d
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    println!("\n| {title} | {den} | {num} | ratio |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}

/// A duration in ns, µs or ms as fits.
pub fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// One variant of an interleaved comparison: runs the given number of iterations, returns the
/// time they took.
pub type Runner<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Runs every variant `rounds` times in turn, `iters` iterations each time, and prints the
/// median time per iteration of each, and its ratio to each of `baselines`: the median of the
/// per-round ratios (each round's variants ran back to back, under the same conditions).
///
/// Criterion measures one function after the other; on a shared 2-core machine the drift
/// between two measurements can be larger than the differences looked for. Interleaving puts
/// every variant under the same conditions, round by round.
pub fn interleaved(
    title: &str,
    rounds: usize,
    iters: u64,
    variants: &mut [(&str, &mut Runner<'_>)],
    baselines: &[&str],
) {
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for (_, run) in variants.iter_mut() {
        run(iters.div_ceil(10)); // warm-up
    }
    let n = variants.len();
    for round in 0..rounds {
        // Each round starts with the next variant, so that none is always first (or last).
        for i in (0..n).map(|k| (round + k) % n) {
            let t = (variants[i].1)(iters).as_nanos() as f64 / iters as f64;
            times[i].push(t);
        }
    }
    let base: Vec<(&str, usize)> = baselines
        .iter()
        .filter_map(|b| Some((*b, variants.iter().position(|(n, _)| n == b)?)))
        .collect();
    print!("\n| {title}, interleaved ({rounds} rounds × {iters}) | median |");
    for (b, _) in &base {
        print!(" ÷ {b} |");
    }
    println!("\n|---|---:|{}", "---:|".repeat(base.len()));
    for (i, (name, _)) in variants.iter().enumerate() {
        print!("| {name} | {} |", human(median(times[i].clone())));
        for (_, b) in &base {
            let ratios = times[i]
                .iter()
                .zip(&times[*b])
                .map(|(t, b)| t / b)
                .collect();
            print!(" {:.3}× |", median(ratios));
        }
        println!();
    }
}

/// Baseline (d): what any layer pays that, like this one, changes the request's body type and
/// looks at the response, with none of the token work: the fixed header of the floor, the body
/// moved into a pass-through wrapper (so the request is rebuilt), and a future that checks the
/// response's status. The difference between it and `kero_auth_no_replay` is what the token
/// cache costs; the difference between it and the floor is what wrapping costs.
#[derive(Clone, Debug)]
pub struct WrapLayer {
    value: HeaderValue,
}

impl WrapLayer {
    pub fn new(value: HeaderValue) -> Self {
        WrapLayer { value }
    }
}

impl<S> Layer<S> for WrapLayer {
    type Service = Wrap<S>;
    fn layer(&self, inner: S) -> Wrap<S> {
        Wrap {
            inner,
            value: self.value.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Wrap<S> {
    inner: S,
    value: HeaderValue,
}

pin_project_lite::pin_project! {
    /// A body passed through unchanged, under another type.
    pub struct PassBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body> http_body::Body for PassBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The inner future, its response's status looked at.
    pub struct CheckStatus<F> {
        #[pin]
        fut: F,
    }
}

impl<F, R, E> Future for CheckStatus<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let res = std::task::ready!(self.project().fut.poll(cx));
        if let Ok(res) = &res {
            std::hint::black_box(res.status() == http::StatusCode::UNAUTHORIZED);
        }
        Poll::Ready(res)
    }
}

impl<S, B, R> Service<Request<B>> for Wrap<S>
where
    S: Service<Request<PassBody<B>>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = CheckStatus<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(TOKEN_HEADER, self.value.clone());
        CheckStatus {
            fut: self
                .inner
                .call(Request::from_parts(parts, PassBody { inner: body })),
        }
    }
}
