//! The `Service` contract: `poll_ready` before every `call`, on the original service and on the
//! clones the layer takes for waiting and replaying. tower-test's mock panics on a call to a
//! service that was not made ready, and its clones start not ready.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use kero_auth::{KeroAuthLayer, ReplayBody};
use support::CountingSource;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Req = Request<ReplayBody<Empty<Bytes>>>;

fn respond(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut res = Response::new(Empty::new());
    *res.status_mut() = status;
    res
}

#[tokio::test]
async fn waiting_for_a_token_and_replaying_respect_poll_ready() {
    let source =
        CountingSource::new(Duration::from_secs(3600)).with_delay(Duration::from_millis(20));
    let (inner, mut handle) = mock::pair::<Req, Response<Empty<Bytes>>>();
    let mut svc = KeroAuthLayer::new(source.clone()).layer(inner);

    // Readiness passes through: the layer is not ready while the inner service is not.
    handle.allow(0);
    assert!(futures_util::poll!(std::future::poll_fn(|cx| svc.poll_ready(cx))).is_pending());
    handle.allow(10);

    // First call: no token yet, so the ready service goes into the future (clone-and-swap); the
    // reply is a 401, so the future readies a clone and replays on it.
    let call = tokio::spawn(svc.ready().await.unwrap().call(Request::new(Empty::new())));
    let (first, reply) = handle.next_request().await.unwrap();
    assert_eq!(first.headers()["token"], "tok-1");
    reply.send_response(respond(StatusCode::UNAUTHORIZED));
    let (replay, reply) = handle.next_request().await.unwrap();
    assert_eq!(replay.headers()["token"], "tok-2");
    reply.send_response(respond(StatusCode::OK));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(source.fetches(), 2);

    // The service left behind after the swap is a fresh clone: it must be made ready again.
    let call = tokio::spawn(svc.ready().await.unwrap().call(Request::new(Empty::new())));
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()["token"], "tok-2");
    reply.send_response(respond(StatusCode::OK));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn inner_errors_pass_through_untouched() {
    let source = CountingSource::new(Duration::from_secs(3600));
    let (inner, mut handle) = mock::pair::<Req, Response<Empty<Bytes>>>();
    let svc = KeroAuthLayer::new(source).layer(inner);
    handle.allow(1);
    let call = tokio::spawn(svc.oneshot(Request::new(Empty::new())));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
}
