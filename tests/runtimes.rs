//! A layer used from more than one tokio runtime (a test runtime next to the application's, a
//! runtime per thread): each token's timer runs on the runtime that fetched the token, so its
//! phases move on that runtime's clock, whatever became of the runtime that fetched the first
//! token. (A long-lived timer task per layer once broke this: it stayed on the first runtime.)
//! And a fetch left on a runtime that is no longer driven is given up, not waited for forever.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use kero_auth::{KeroAuthLayer, ReplayBody};
use support::CountingSource;
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = Request<ReplayBody<Empty<Bytes>>>;

const LIFETIME: Duration = Duration::from_secs(3600);

/// Records the token of every request; answers 401 to the token in `reject`, 200 to others.
fn inner(
    seen: Arc<Mutex<Vec<String>>>,
    reject: Arc<Mutex<Option<String>>>,
) -> impl Service<Req, Response = Response<Empty<Bytes>>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |req: Req| {
        let seen = seen.clone();
        let token = req.headers()["token"].to_str().unwrap().to_owned();
        let rejected = reject.lock().unwrap().as_deref() == Some(token.as_str());
        async move {
            seen.lock().unwrap().push(token);
            let mut res = Response::new(Empty::new());
            if rejected {
                *res.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok::<_, Infallible>(res)
        }
    })
}

fn req() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

/// Token 1 on `first` (which then stays alive); on a second, paused runtime: token 1 rejected,
/// token 2 fetched there, then the second runtime's clock passes token 2's expiry minus margin.
/// The next request must fetch token 3.
fn a_token_fetched_on_a_second_runtime_goes_stale_on_its_clock(first: Runtime) {
    let src = CountingSource::new(LIFETIME);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reject = Arc::new(Mutex::new(None));
    let layer = KeroAuthLayer::builder(src.clone())
        .refresh_window(Duration::ZERO)
        .build();
    let svc = layer.layer(inner(seen.clone(), reject.clone()));

    // Runtime A: the first token; its phases are scheduled on A.
    let res = first.block_on(svc.clone().oneshot(req())).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(src.fetches(), 1);

    let second = Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        // The server rejects tok-1: renewed on B (tok-2 is fetched here) and replayed.
        *reject.lock().unwrap() = Some("tok-1".to_owned());
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(src.fetches(), 2);
        assert_eq!(*seen.lock().unwrap(), ["tok-1", "tok-1", "tok-2"]);

        // One service clone, as a client keeps it: its first request here makes its view of
        // tok-2 (a new clone would read the clock in `renew_local`, hiding the stuck phase).
        let mut client = svc.clone();
        let res = client.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(src.fetches(), 2);

        // On B's clock, tok-2 reaches its expiry (and so its expiry minus margin).
        tokio::time::sleep(LIFETIME).await;
        let res = client.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            *seen.lock().unwrap(),
            ["tok-1", "tok-1", "tok-2", "tok-2", "tok-3"],
            "a request after tok-2's expiry was sent with tok-2: its phases never moved"
        );
        assert_eq!(src.fetches(), 3);
    });
    drop(svc);
    drop(layer);
    drop(second);
    drop(first);
}

/// The first runtime is alive but idle (a current-thread runtime outside `block_on`).
#[test]
fn the_first_runtime_idle() {
    let first = Builder::new_current_thread().enable_all().build().unwrap();
    a_token_fetched_on_a_second_runtime_goes_stale_on_its_clock(first);
}

/// The first runtime is alive and running, on the real clock, while the second runs on paused
/// time: tok-2's timer must run on the second runtime's clock.
#[test]
fn the_first_runtime_running_on_another_clock() {
    let first = Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    a_token_fetched_on_a_second_runtime_goes_stale_on_its_clock(first);
}

/// A background refresh starts on a runtime that is then no longer driven (alive, idle): its
/// fetch never runs, not even its timeout. A request on another runtime that needs a new token
/// waits for that fetch no longer than the fetch timeout and a grace second, gets a timeout
/// error, and the fetch is forgotten: the next request fetches on its own runtime.
#[test]
fn a_fetch_stuck_on_an_idle_runtime_is_given_up_and_made_anew() {
    let src = CountingSource::new(LIFETIME);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reject = Arc::new(Mutex::new(None));
    let layer = KeroAuthLayer::builder(src.clone())
        .refresh_window(Duration::from_secs(600))
        .fetch_timeout(Duration::from_secs(5))
        .build();
    let svc = layer.layer(inner(seen.clone(), reject.clone()));

    let idle = Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    idle.block_on(async {
        svc.clone().oneshot(req()).await.unwrap();
        // Inside the refresh window: this request is served with token 1 and starts the
        // background refresh, as a task of this runtime.
        tokio::time::sleep(LIFETIME - Duration::from_secs(200)).await;
        svc.clone().oneshot(req()).await.unwrap();
    });
    assert_eq!(src.fetches(), 1, "the refresh has not run");

    let other = Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    other.block_on(async {
        *reject.lock().unwrap() = Some("tok-1".to_owned());
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(60), svc.clone().oneshot(req()))
            .await
            .expect("the request waited for a fetch that never runs")
            .unwrap_err();
        let err = err
            .downcast_ref::<kero_auth::Error>()
            .expect("a kero_auth::Error");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(6),
            "fetch timeout + 1 s"
        );
        let res = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    });
    assert_eq!(
        src.fetches(),
        2,
        "one fetch made anew, on the runtime that runs"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["tok-1", "tok-1", "tok-1", "tok-2"],
        "token 1 twice on the idle runtime, rejected once, then token 2"
    );
    drop(idle);
}
