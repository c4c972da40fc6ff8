//! Expiry on paused tokio time: a fetch when the token goes stale (expiry minus margin), and one
//! background refresh nobody waits for inside the soft window.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use kero_auth::{source, KeroAuthLayer, ReplayBody, Token};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = Request<ReplayBody<Empty<Bytes>>>;

const LIFETIME: u64 = 3600;
const MARGIN: Duration = Duration::from_secs(30);
const FETCH_TAKES: Duration = Duration::from_secs(1);

/// A source whose tokens live exactly `LIFETIME` s on the server's clock, taking 1 s to fetch.
fn slow_source(fetches: Arc<AtomicUsize>) -> impl kero_auth::TokenSource {
    source::from_fn(move |_current| {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(FETCH_TAKES).await;
            let server_now = 1_700_000_000;
            Ok::<_, Infallible>(
                Token::new(
                    format!("tok-{n}"),
                    server_now + LIFETIME as i64,
                    format!("ref-{n}"),
                    server_now + 86_400,
                )
                .with_server_time(UNIX_EPOCH + Duration::from_secs(server_now as u64)),
            )
        }
    })
}

fn inner(
    seen: Arc<Mutex<Vec<String>>>,
) -> impl Service<Req, Response = Response<Empty<Bytes>>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |req: Req| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push(req.headers()["token"].to_str().unwrap().to_owned());
            Ok::<_, Infallible>(Response::new(Empty::new()))
        }
    })
}

async fn send<S>(svc: &S) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>, Error = tower::BoxError>
        + Clone,
{
    let started = Instant::now();
    svc.clone()
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap();
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_request_after_expiry_minus_the_margin_fetches_exactly_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = KeroAuthLayer::builder(slow_source(fetches.clone()))
        .expiry_margin(MARGIN)
        .refresh_window(Duration::ZERO)
        .build();
    let svc = layer.layer(inner(seen.clone()));

    assert_eq!(
        send(&svc).await,
        FETCH_TAKES,
        "the first request waits for the first fetch"
    );
    let installed = Instant::now();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Just before expiry minus margin: still fresh, no fetch, no wait.
    tokio::time::sleep_until(
        installed + Duration::from_secs(LIFETIME) - MARGIN - Duration::from_millis(1),
    )
    .await;
    assert_eq!(send(&svc).await, Duration::ZERO);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // At expiry minus margin: 100 concurrent requests, exactly one fetch, all wait for it.
    tokio::time::sleep_until(installed + Duration::from_secs(LIFETIME) - MARGIN).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), FETCH_TAKES);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[..2], ["tok-1", "tok-1"]);
    assert!(
        seen[2..].iter().all(|t| t == "tok-2"),
        "no request used the stale token"
    );
}

#[tokio::test(start_paused = true)]
async fn inside_the_soft_window_nobody_waits_and_one_background_refresh_runs() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let window = Duration::from_secs(300);
    let layer = KeroAuthLayer::builder(slow_source(fetches.clone()))
        .expiry_margin(MARGIN)
        .refresh_window(window)
        .build();
    let svc = layer.layer(inner(seen.clone()));

    send(&svc).await;
    let installed = Instant::now();
    let stale_at = installed + Duration::from_secs(LIFETIME) - MARGIN;

    // Before the window: nothing happens.
    tokio::time::sleep_until(stale_at - window - Duration::from_secs(1)).await;
    assert_eq!(send(&svc).await, Duration::ZERO);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Inside the window (the refresh starts somewhere in its second half, jittered): requests go
    // on at once with the current token, and exactly one background refresh starts.
    tokio::time::sleep_until(stale_at - window / 4).await;
    for _ in 0..50 {
        assert_eq!(
            send(&svc).await,
            Duration::ZERO,
            "a 1 s refresh added no latency"
        );
    }
    let concurrent: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc).await })
        })
        .collect();
    for t in concurrent {
        assert_eq!(t.await.unwrap(), Duration::ZERO);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "exactly one background refresh"
    );
    assert!(seen.lock().unwrap().iter().all(|t| t == "tok-1"));

    // Once it lands, requests use the new token; the old one was never let go stale.
    tokio::time::sleep(FETCH_TAKES + Duration::from_millis(1)).await;
    assert_eq!(send(&svc).await, Duration::ZERO);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "tok-2");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(layer.stats().fetches, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_keeps_the_valid_token() {
    // The source works once, then fails: the token keeps being used until it goes stale.
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let layer = KeroAuthLayer::builder(source::from_fn(move |_| {
        let n = f.fetch_add(1, Ordering::SeqCst);
        async move {
            if n > 0 {
                return Err("refresh failed");
            }
            Ok(Token::expiring_in(
                "tok-1",
                Duration::from_secs(LIFETIME),
                "r",
                Duration::from_secs(86_400),
            ))
        }
    }))
    .expiry_margin(MARGIN)
    .refresh_window(Duration::from_secs(600))
    .backoff(Duration::from_secs(10), Duration::from_secs(60))
    .build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(inner(seen.clone()));
    send(&svc).await;
    let installed = Instant::now();
    // Walk through the soft window one request every 10 s: every request succeeds with tok-1, and
    // the failed refreshes are backed off (10 s, 20 s, 40 s, 60 s, ... jittered down to half).
    let mut t = installed + Duration::from_secs(LIFETIME - 600);
    while t < installed + Duration::from_secs(LIFETIME) - MARGIN - Duration::from_secs(2) {
        tokio::time::sleep_until(t).await;
        assert_eq!(send(&svc).await, Duration::ZERO);
        t += Duration::from_secs(10);
    }
    assert!(seen.lock().unwrap().iter().all(|s| s == "tok-1"));
    let attempts = fetches.load(Ordering::SeqCst) - 1;
    assert!(
        (3..=20).contains(&attempts),
        "{attempts} background attempts over ~5 min"
    );
    // Past expiry minus margin, with the source still down: a clear error, not the stale token.
    tokio::time::sleep_until(
        installed + Duration::from_secs(LIFETIME) - MARGIN + Duration::from_secs(61),
    )
    .await;
    let err = svc
        .clone()
        .oneshot(Request::new(Empty::<Bytes>::new()))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<kero_auth::Error>().is_some(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_source_is_told_the_token_it_replaces() {
    let seen_current = Arc::new(Mutex::new(Vec::new()));
    let sc = seen_current.clone();
    let n = Arc::new(AtomicUsize::new(0));
    let layer = KeroAuthLayer::builder(source::from_fn(move |current: Option<Token>| {
        sc.lock()
            .unwrap()
            .push(current.map(|t| t.refresh_token().to_owned()));
        let k = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, Infallible>(Token::expiring_in(
                format!("a{k}"),
                Duration::from_secs(100),
                format!("r{k}"),
                Duration::from_secs(1000),
            ))
        }
    }))
    .expiry_margin(Duration::from_secs(10))
    .refresh_window(Duration::ZERO)
    .build();
    let svc = layer.layer(inner(Arc::default()));
    send(&svc).await;
    tokio::time::sleep(Duration::from_secs(95)).await;
    send(&svc).await;
    assert_eq!(
        *seen_current.lock().unwrap(),
        vec![None, Some("r1".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn layers_started_together_refresh_at_different_instants() {
    // 40 layers (40 processes, say) get the same token at the same instant. Each refreshes in
    // the second half of its refresh window, at its own jittered instant, so that a fleet
    // started together does not hit the server together.
    const LAYERS: usize = 40;
    let window = Duration::from_secs(300);
    let start = Instant::now();
    let refreshed_at = Arc::new(Mutex::new(Vec::new()));
    let mut services = Vec::new();
    for _ in 0..LAYERS {
        let fetched = Arc::new(AtomicUsize::new(0));
        let refreshed_at = refreshed_at.clone();
        let layer = KeroAuthLayer::builder(source::from_fn(move |_current| {
            if fetched.fetch_add(1, Ordering::SeqCst) == 1 {
                refreshed_at.lock().unwrap().push(Instant::now());
            }
            let server_now = 1_700_000_000;
            async move {
                Ok::<_, Infallible>(
                    Token::new(
                        "tok",
                        server_now + LIFETIME as i64,
                        "ref",
                        server_now + 86_400,
                    )
                    .with_server_time(UNIX_EPOCH + Duration::from_secs(server_now as u64)),
                )
            }
        }))
        .expiry_margin(MARGIN)
        .refresh_window(window)
        .build();
        let svc = layer.layer(inner(Arc::new(Mutex::new(Vec::new()))));
        send(&svc).await;
        services.push(svc);
    }
    let stale_at = start + Duration::from_secs(LIFETIME) - MARGIN;
    // A request through every layer every second, from before the window to its end.
    tokio::time::sleep_until(stale_at - window - Duration::from_secs(2)).await;
    while Instant::now() < stale_at {
        for svc in &services {
            send(svc).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut at: Vec<u64> = refreshed_at
        .lock()
        .unwrap()
        .iter()
        .map(|t| (stale_at - *t).as_secs())
        .collect();
    assert_eq!(
        at.len(),
        LAYERS,
        "every layer refreshed once, before going stale"
    );
    // Seconds before staleness: within the window's second half (150..=300 s before)...
    assert!(
        at.iter().all(|&s| (150..=300).contains(&s)),
        "refreshes outside the second half of the window: {at:?}"
    );
    // ...and spread over it: 40 draws over 150 one-second slots leave few collisions, and the
    // earliest and latest are far apart.
    at.sort_unstable();
    at.dedup();
    assert!(at.len() >= 25, "refreshes bunched together: {at:?}");
    assert!(
        at[at.len() - 1] - at[0] >= 75,
        "refreshes bunched together: {at:?}"
    );
}

/// An expiry at the edge of what clocks hold (a server answering `i64::MAX` seconds, with its
/// own clock at 1970, or a year far past 9999) is a token like any other: used, fetched once,
/// never a panic.
#[tokio::test(start_paused = true)]
async fn an_expiry_beyond_any_clock_is_used_without_panicking() {
    for (expires_at, server_now) in [
        (i64::MAX, UNIX_EPOCH),
        (i64::MAX, UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        (
            253_402_300_800 * 1000,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ),
    ] {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let layer = KeroAuthLayer::new(source::from_fn(move |_current| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(
                    Token::new(
                        "tok-far".to_owned(),
                        expires_at,
                        "ref".to_owned(),
                        expires_at,
                    )
                    .with_server_time(server_now),
                )
            }
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let svc = layer.layer(inner(seen.clone()));
        for _ in 0..3 {
            send(&svc).await;
        }
        assert_eq!(
            *seen.lock().unwrap(),
            ["tok-far"; 3],
            "expires_at {expires_at}"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "expires_at {expires_at}");
    }
}
