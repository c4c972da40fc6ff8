//! The layer composes with tower's own middleware (timeout, retry, concurrency limit), around it
//! and inside it, in front of hyper-util's client talking to a real server on loopback.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kero_auth::{KeroAuthLayer, ReplayBody};
use support::{CountingSource, TestServer};
use tower::retry::Policy;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Retries 5xx answers and transport errors, twice at most; requests are cloned (a `Full` body is).
#[derive(Clone)]
struct RetryServerErrors(usize);

impl<B> Policy<Request<Full<Bytes>>, Response<B>, BoxError> for RetryServerErrors {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let again = match result {
            Ok(res) => res.status().is_server_error(),
            Err(e) => e.downcast_ref::<kero_auth::Error>().is_none(),
        };
        (again && self.0 > 0).then(|| {
            self.0 -= 1;
            std::future::ready(())
        })
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_composes_with_timeout_retry_and_concurrency_limit() {
    let valid = Arc::new(Mutex::new("tok-1".to_owned()));
    let flaky = Arc::new(AtomicUsize::new(0));
    let v = valid.clone();
    let f = flaky.clone();
    let server = TestServer::start(move |seen| {
        if seen.uri.starts_with("/flaky") && f.fetch_add(1, Ordering::SeqCst) == 0 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if seen.token() == Some(v.lock().unwrap().as_str()) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    })
    .await;
    let source = CountingSource::new(Duration::from_secs(3600));
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .concurrency_limit(32)
        .timeout(Duration::from_secs(10))
        .retry(RetryServerErrors(2))
        .layer(KeroAuthLayer::new(source.clone()))
        .timeout(Duration::from_secs(5))
        .concurrency_limit(8)
        .service(client);

    let send = |path: &str| {
        let svc = svc.clone();
        let req = Request::post(server.url(path))
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        async move { svc.oneshot(req).await.map(|r| r.status()) }
    };

    // 100 concurrent requests through the limits: one fetch.
    let tasks: Vec<_> = (0..100)
        .map(|i| tokio::spawn(send(&format!("/a/{i}"))))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(source.fetches(), 1);

    // A 503 is retried by the retry layer outside us; the retry carries the token.
    assert_eq!(send("/flaky").await.unwrap(), StatusCode::OK);
    assert_eq!(flaky.load(Ordering::SeqCst), 2);

    // A revocation: the 401 is handled inside the retry layer (one fetch, one replay).
    *valid.lock().unwrap() = "tok-2".to_owned();
    assert_eq!(send("/after-revocation").await.unwrap(), StatusCode::OK);
    assert_eq!(source.fetches(), 2);
    let seen: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.uri == "/after-revocation")
        .map(|s| s.token().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["tok-1", "tok-2"]);
}

#[tokio::test]
async fn a_timeout_outside_cuts_the_wait_but_not_the_fetch() {
    let server = TestServer::start(|_| StatusCode::OK).await;
    let source =
        CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_millis(300));
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .layer(KeroAuthLayer::new(source.clone()))
        .service(client);
    let req = || {
        Request::get(server.url("/x"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let err = svc.ready().await.unwrap().call(req()).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(server.count(), 0);
    // The fetch went on without the request that started it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(req())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(source.fetches(), 1);
    assert_eq!(server.seen()[0].token(), Some("tok-1"));
}

#[tokio::test]
async fn a_timeout_inside_cuts_the_send_and_the_error_reaches_the_caller() {
    let server = TestServer::start(|_| StatusCode::OK).await;
    let source = CountingSource::new(Duration::from_secs(3600));
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .layer(KeroAuthLayer::new(source.clone()))
        .timeout(Duration::from_millis(100))
        .service(client);
    let req = Request::get(server.url("/slow"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(source.fetches(), 1);
}
