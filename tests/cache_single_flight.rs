//! The token cache's promises: one fetch at a time, shared errors with backoff, cancellation
//! safety, timeouts, and nothing running after the layer is gone.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use kero_auth::{source, Error, InvalidToken, KeroAuthLayer, ReplayBody, Token};
use support::{CountingSource, Mode, SourceDown};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

type Req = Request<ReplayBody<Empty<Bytes>>>;

/// An in-process inner service that records the token it saw and whether it was sensitive.
fn recording_inner(
    seen: Arc<Mutex<Vec<(String, bool)>>>,
) -> impl Service<Req, Response = Response<Empty<Bytes>>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |req: Req| {
        let seen = seen.clone();
        async move {
            let v = req.headers().get("token").expect("token header");
            seen.lock()
                .unwrap()
                .push((v.to_str().unwrap().to_owned(), v.is_sensitive()));
            Ok::<_, Infallible>(Response::new(Empty::new()))
        }
    })
}

fn ok_inner(
) -> impl Service<Req, Response = Response<Empty<Bytes>>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(|_req: Req| async { Ok::<_, Infallible>(Response::new(Empty::new())) })
}

fn req() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

fn layer(src: &Arc<CountingSource>) -> KeroAuthLayer {
    KeroAuthLayer::builder(src.clone())
        .fetch_timeout(Duration::from_secs(2))
        .build()
}

#[tokio::test]
async fn first_request_fetches_once_and_sends_a_sensitive_token() {
    let src = CountingSource::new(Duration::from_secs(3600));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = layer(&src).layer(recording_inner(seen.clone()));
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(src.fetches(), 1);
    assert_eq!(*seen.lock().unwrap(), vec![("tok-1".to_owned(), true)]);
    // A second request (on the same clone and on a new clone) uses the cached token.
    let mut svc2 = svc.clone();
    svc2.ready().await.unwrap().call(req()).await.unwrap();
    svc2.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(src.fetches(), 1);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(t, sensitive)| t == "tok-1" && *sensitive));
    assert_eq!(svc.stats().fetches, 1);
}

#[tokio::test]
async fn a_custom_header_name_carries_the_token_and_its_replay() {
    // A name made at run time, as from configuration; and a standard one.
    for name in [
        http::HeaderName::from_bytes(b"X-Kero-Token").unwrap(),
        http::header::AUTHORIZATION,
    ] {
        let src = CountingSource::new(Duration::from_secs(3600));
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Rejects the first token it sees, accepts every other.
        let inner = {
            let (seen, name) = (seen.clone(), name.clone());
            service_fn(move |req: Req| {
                let seen = seen.clone();
                let v = req.headers().get(&name).expect("the header").clone();
                assert!(req.headers().get("token").is_none() || name == "token");
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((v.to_str().unwrap().to_owned(), v.is_sensitive()));
                    let mut res = Response::new(Empty::<Bytes>::new());
                    if seen.len() == 1 {
                        *res.status_mut() = http::StatusCode::UNAUTHORIZED;
                    }
                    Ok::<_, Infallible>(res)
                }
            })
        };
        let svc = KeroAuthLayer::builder(src.clone())
            .header_name(name.clone())
            .build()
            .layer(inner);
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("tok-1".to_owned(), true), ("tok-2".to_owned(), true)],
            "{name}"
        );
        assert_eq!(src.fetches(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_on_an_empty_cache_fetch_once() {
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_millis(50));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = layer(&src).layer(recording_inner(seen.clone()));
    let barrier = Arc::new(tokio::sync::Barrier::new(10_000));
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                svc.oneshot(req()).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        t.await.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    assert_eq!(src.fetches(), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10_000);
    assert!(seen.iter().all(|(t, s)| t == "tok-1" && *s));
}

#[tokio::test(start_paused = true)]
async fn the_request_that_started_a_fetch_can_be_dropped() {
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_secs(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = layer(&src).layer(recording_inner(seen.clone()));

    // The first request starts the fetch and is cancelled by its own timeout, mid-fetch.
    let first = tokio::time::timeout(Duration::from_millis(100), svc.clone().oneshot(req())).await;
    assert!(first.is_err(), "the first request was cut by its timeout");
    assert_eq!(src.fetches(), 1);

    // Others that join the same fetch get the token it produces.
    let waiters: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(req())))
        .collect();
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(src.fetches(), 1, "exactly one fetch in all");
    assert_eq!(seen.lock().unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_gives_every_waiter_a_typed_error() {
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_millis(10));
    src.set_mode(Mode::Fail);
    let svc = layer(&src).layer(ok_inner());
    let waiters: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot(req())))
        .collect();
    for w in waiters {
        let err: BoxError = w.await.unwrap().unwrap_err();
        let err = err.downcast_ref::<Error>().expect("a kero_auth::Error");
        assert!(matches!(err, Error::Source(_)), "{err:?}");
        assert_eq!(err.source_as::<SourceDown>().map(|e| e.0), Some(1));
        assert!(err.to_string().contains("source is down"), "{err}");
    }
    assert_eq!(
        src.fetches(),
        1,
        "one failed fetch, shared by all 100 waiters"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_source_sees_a_trickle_and_the_cache_heals() {
    let src = CountingSource::new(Duration::from_secs(3600));
    src.set_mode(Mode::Fail);
    let svc = layer(&src).layer(ok_inner());
    // 1,000 requests spread over 1 s.
    let mut failures = 0;
    for _ in 0..1_000 {
        if svc.clone().oneshot(req()).await.is_err() {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(failures, 1_000);
    let attempts = src.fetches();
    assert!(
        (2..=10).contains(&attempts),
        "{attempts} fetch attempts in 1 s"
    );

    // The source recovers: after the backoff, requests succeed, with no restart.
    src.set_mode(Mode::Succeed);
    tokio::time::sleep(Duration::from_secs(31)).await;
    svc.clone().oneshot(req()).await.expect("healed");
    assert_eq!(src.fetches(), attempts + 1);
    assert_eq!(svc.stats().failures as usize, attempts);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_source_is_cut_by_the_fetch_timeout() {
    let src = CountingSource::new(Duration::from_secs(3600));
    src.set_mode(Mode::Hang);
    let svc = layer(&src).layer(ok_inner());
    let started = tokio::time::Instant::now();
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let err = err.downcast_ref::<Error>().unwrap();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(src.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn unusable_tokens_are_refused_with_backoff_and_never_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let layer = KeroAuthLayer::new(source::from_fn(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(match n {
                0 => Token::expiring_in(
                    "has space",
                    Duration::from_secs(3600),
                    "r",
                    Duration::from_secs(7200),
                ),
                1 => Token::expiring_in(
                    "caf\u{e9}",
                    Duration::from_secs(3600),
                    "r",
                    Duration::from_secs(7200),
                ),
                2 => Token::expiring_in(
                    "expiring-soon",
                    Duration::from_secs(10),
                    "r",
                    Duration::from_secs(7200),
                ),
                3 => Token::new("long-expired", 1_000, "r", 2_000),
                _ => Token::expiring_in(
                    "good",
                    Duration::from_secs(3600),
                    "r",
                    Duration::from_secs(7200),
                ),
            })
        }
    }));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(recording_inner(seen.clone()));
    let expect = [
        InvalidToken::NotHeaderSafe,
        InvalidToken::NotHeaderSafe,
        InvalidToken::Expired,
        InvalidToken::Expired,
    ];
    for want in expect {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let got = err.downcast_ref::<Error>().unwrap();
        assert!(
            matches!(got, Error::InvalidToken(k) if *k == want),
            "{got:?}"
        );
        // A request during the backoff fails at once, without another fetch.
        let before = calls.load(Ordering::SeqCst);
        svc.clone().oneshot(req()).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), before);
        tokio::time::sleep(Duration::from_secs(31)).await;
    }
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(*seen.lock().unwrap(), vec![("good".to_owned(), true)]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_does_not_wedge_the_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let layer = KeroAuthLayer::new(source::from_fn(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                panic!("source bug");
            }
            Ok::<_, Infallible>(Token::expiring_in(
                "t",
                Duration::from_secs(3600),
                "r",
                Duration::from_secs(7200),
            ))
        }
    }));
    let svc = layer.layer(ok_inner());
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::FetchAborted)),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn nothing_keeps_running_after_the_last_service_is_dropped() {
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_secs(5));
    let layer = layer(&src);
    let svc = layer.layer(ok_inner());
    let weak_probe = Arc::downgrade(&src);
    // Start a fetch, then drop everything while it runs.
    let fut = svc.clone().oneshot(req());
    let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
    assert_eq!(src.fetches(), 1);
    drop(svc);
    drop(layer);
    drop(src);
    // The fetch task was aborted: it held the last reference to the source, now released.
    tokio::task::yield_now().await;
    assert!(
        weak_probe.upgrade().is_none(),
        "the fetch task still holds the source"
    );
}

#[tokio::test(start_paused = true)]
async fn no_task_of_ours_outlives_the_layer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let src = CountingSource::new(Duration::from_secs(3600));
    let layer = layer(&src);
    let svc = layer.layer(ok_inner());
    // Two generations, one after the other: each token's timer is the task that fetched it; the
    // first's has run its course (the token went stale) when the second is fetched.
    svc.clone().oneshot(req()).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(src.fetches(), 2);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        before + 1,
        "one timer task (the current token's) while the layer lives, and nothing else"
    );
    drop(svc);
    drop(layer);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "a task outlived the layer"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<KeroAuthLayer>();
    send_sync::<kero_auth::KeroAuth<support::TestClient>>();
    send_sync::<Error>();
    send_sync::<Token>();
    send::<ReplayBody<support::TestBody>>();
    send::<kero_auth::ResponseFuture<support::TestClient, support::TestBody, hyper::body::Incoming>>(
    );
    fn unpin<T: Unpin>() {}
    unpin::<ReplayBody<support::TestBody>>();
    // What tonic's `Body::new` asks of a body: `Data = Bytes`, an error that converts to BoxError.
    fn tonic_compatible<B>()
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
    }
    tonic_compatible::<ReplayBody<support::TestBody>>();
    tonic_compatible::<ReplayBody<http_body_util::Full<bytes::Bytes>>>();
}

#[test]
fn a_runtime_shut_down_mid_fetch_does_not_wedge_the_cache() {
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_secs(3600));
    let svc = layer(&src).layer(ok_inner());
    // A first runtime starts a fetch and is shut down while it runs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(20), svc.clone().oneshot(req())).await;
        assert!(r.is_err());
    });
    drop(rt);
    // A second runtime: the dead fetch is forgotten, a new one starts and succeeds.
    *src.delay.lock().unwrap() = Duration::ZERO;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        svc.clone().oneshot(req()).await.unwrap();
    });
    assert_eq!(src.fetches(), 2);
}

/// Waits for the runtime's other tasks to run (paused time: nothing else advances).
async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_replaces_the_old_tokens_timer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let src = CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_millis(100));
    let layer = KeroAuthLayer::builder(src.clone())
        .refresh_window(Duration::from_secs(300))
        .build();
    let svc = layer.layer(ok_inner());
    svc.clone().oneshot(req()).await.unwrap();
    settle().await;
    assert_eq!(metrics.num_alive_tasks(), before + 1, "the token's timer");
    // Inside the refresh window, long before the token goes stale: the request is served at once
    // and starts a background refresh.
    tokio::time::advance(Duration::from_secs(3600 - 60)).await;
    settle().await;
    svc.clone().oneshot(req()).await.unwrap();
    settle().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        before + 2,
        "old timer + the refresh"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(src.fetches(), 2);
    assert_eq!(
        metrics.num_alive_tasks(),
        before + 1,
        "the old token's timer aborted; the refresh's task is the new token's timer"
    );
    drop(svc);
    drop(layer);
    settle().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "a task outlived the layer"
    );
}

#[test]
fn a_timer_on_an_idle_runtime_does_not_hold_the_source() {
    let src = CountingSource::new(Duration::from_secs(3600));
    let probe = Arc::downgrade(&src);
    let layer = layer(&src);
    let svc = layer.layer(ok_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { svc.clone().oneshot(req()).await.unwrap() });
    // The runtime is not driven again: the token's timer task is alive but never polled, so
    // the layer's drop aborts it without it being dropped yet.
    drop((svc, layer, src));
    assert!(
        probe.upgrade().is_none(),
        "the timer task keeps the source alive"
    );
    drop(rt);
}

#[test]
fn a_fetch_dropped_before_it_ran_wakes_its_waiters() {
    let src = CountingSource::new(Duration::from_secs(3600));
    let svc = layer(&src).layer(ok_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One poll: the request waits for the fetch it started, whose task has not run yet.
    let mut waiting = Box::pin(svc.clone().oneshot(req()));
    rt.block_on(async { assert!(futures_util::poll!(waiting.as_mut()).is_pending()) });
    drop(rt); // drops the fetch task without running it
    assert_eq!(src.fetches(), 0, "the fetch never ran");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = tokio::time::timeout(Duration::from_secs(5), waiting.as_mut())
            .await
            .expect("the waiter hung")
            .unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::FetchAborted)),
            "{err:?}"
        );
        // The dead fetch is forgotten: the next request fetches anew.
        svc.clone().oneshot(req()).await.unwrap();
    });
    assert_eq!(src.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_backoff_beyond_any_clock_is_not_a_panic() {
    let src = CountingSource::new(Duration::from_secs(3600));
    src.set_mode(Mode::Fail);
    let svc = KeroAuthLayer::builder(src.clone())
        .backoff(Duration::MAX, Duration::MAX)
        .build()
        .layer(ok_inner());
    for _ in 0..3 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::Source(_))),
            "{err:?}"
        );
    }
    assert_eq!(src.fetches(), 1, "backing off: one fetch, then its error");
}
