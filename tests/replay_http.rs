//! Replay after an authentication failure, against a real HTTP server on loopback.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, Request, StatusCode};
use kero_auth::{KeroAuth, KeroAuthLayer};
use support::*;
use tower::{Layer, ServiceExt};

struct Setup {
    server: TestServer,
    source: Arc<support::CountingSource>,
    valid: Arc<Mutex<String>>,
    svc: KeroAuth<TestClient>,
    layer: KeroAuthLayer,
}

/// A server that accepts only the token in `valid` (initially `tok-1`), and a layer in front of
/// `client` whose source issues `tok-1`, `tok-2`, …
async fn setup(
    client: TestClient,
    configure: impl FnOnce(kero_auth::Builder) -> kero_auth::Builder,
) -> Setup {
    let valid = Arc::new(Mutex::new("tok-1".to_owned()));
    let server = TestServer::start(accept_only(valid.clone())).await;
    let source = CountingSource::new(Duration::from_secs(3600));
    let layer = configure(KeroAuthLayer::builder(source.clone())).build();
    let svc = layer.layer(client);
    Setup {
        server,
        source,
        valid,
        svc,
        layer,
    }
}

impl Setup {
    /// Sends one request and returns its status.
    async fn send(&self, req: Request<TestBody>) -> StatusCode {
        self.svc.clone().oneshot(req).await.unwrap().status()
    }

    fn revoke(&self, now_valid: &str) {
        *self.valid.lock().unwrap() = now_valid.to_owned();
    }

    async fn warm_up(&self) {
        let req = Request::get(self.server.url("/warm-up"))
            .body(empty())
            .unwrap();
        assert_eq!(self.send(req).await, StatusCode::OK);
        assert_eq!(self.source.fetches(), 1);
    }

    /// After one rejected request that was not replayed: the 401 still renewed the token, so
    /// the next request carries tok-2 and is accepted; 2 fetches and 3 requests in all.
    async fn assert_renewed_without_replay(&self) {
        let req = Request::get(self.server.url("/next"))
            .body(empty())
            .unwrap();
        assert_eq!(self.send(req).await, StatusCode::OK);
        assert_eq!(self.server.seen().last().unwrap().token(), Some("tok-2"));
        assert_eq!(self.source.fetches(), 2);
        assert_eq!(self.server.count(), 3);
        assert_eq!(self.layer.stats().replays, 0);
    }
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", "abc123".parse().unwrap());
    t
}

/// Sends `body` once on a revoked token; checks one fetch, one replay, and that the server saw
/// the same request twice (but for the token). Returns what the server saw.
async fn assert_replayed(client: TestClient, body: TestBody) -> Vec<Seen> {
    let s = setup(client, |b| b).await;
    s.warm_up().await;
    s.revoke("tok-2");
    let req = Request::builder()
        .method(Method::POST)
        .uri(s.server.url("/v1/orders?dry_run=1"))
        .header("content-type", "application/json")
        .header("x-request-id", "r-42")
        .body(body)
        .unwrap();
    assert_eq!(s.send(req).await, StatusCode::OK);
    assert_eq!(s.source.fetches(), 2, "exactly one fetch for the 401");
    assert_eq!(s.layer.stats().replays, 1);
    let seen = s.server.seen();
    assert_eq!(seen.len(), 3, "warm-up, the rejected request, its replay");
    let (first, replay) = (&seen[1], &seen[2]);
    assert_eq!(first.token(), Some("tok-1"));
    assert_eq!(replay.token(), Some("tok-2"));
    assert_eq!(first.method, Method::POST);
    assert_eq!(replay.method, first.method);
    assert_eq!(first.uri, "/v1/orders?dry_run=1");
    assert_eq!(replay.uri, first.uri);
    assert_eq!(first.headers["x-request-id"], "r-42");
    assert_eq!(
        replay.headers_without_token(),
        first.headers_without_token()
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.trailers, first.trailers);
    seen
}

#[tokio::test]
async fn a_401_replays_an_empty_body() {
    let seen = assert_replayed(http1_client(), empty()).await;
    assert!(seen[2].body.is_empty());
}

#[tokio::test]
async fn a_401_replays_a_full_body() {
    let seen = assert_replayed(http1_client(), full(br#"{"item":"book","qty":2}"#)).await;
    assert_eq!(&seen[2].body[..], br#"{"item":"book","qty":2}"#);
    assert_eq!(seen[2].headers["content-length"], "23");
}

#[tokio::test]
async fn a_401_replays_a_streamed_body_over_http1() {
    let seen = assert_replayed(
        http1_client(),
        streamed(vec![b"part one, ", b"part two, ", b"part three"], None),
    )
    .await;
    assert_eq!(&seen[2].body[..], b"part one, part two, part three");
}

#[tokio::test]
async fn a_401_replays_a_streamed_body_with_trailers_over_http2() {
    let seen = assert_replayed(
        http2_client(),
        streamed(
            vec![b"part one, ", b"part two, ", b"part three"],
            Some(trailers()),
        ),
    )
    .await;
    assert_eq!(&seen[2].body[..], b"part one, part two, part three");
    assert_eq!(seen[1].trailers.as_ref().unwrap()["x-checksum"], "abc123");
    assert_eq!(seen[2].trailers.as_ref().unwrap()["x-checksum"], "abc123");
}

#[tokio::test]
async fn the_rejected_response_is_drained_so_the_connection_is_reused() {
    let s = setup(http1_client(), |b| b).await;
    s.warm_up().await;
    s.revoke("tok-2");
    let req = Request::post(s.server.url("/x"))
        .body(full(b"hello"))
        .unwrap();
    assert_eq!(s.send(req).await, StatusCode::OK);
    assert_eq!(s.server.count(), 3);
    assert_eq!(
        s.server.connections(),
        1,
        "the replay went over the same connection"
    );
}

#[tokio::test]
async fn a_server_that_always_answers_401_sees_two_requests() {
    let s = setup(http1_client(), |b| b).await;
    s.warm_up().await;
    s.revoke("nothing is valid");
    let req = Request::post(s.server.url("/always-401"))
        .body(full(b"payload"))
        .unwrap();
    assert_eq!(s.send(req).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.server.count() - 1,
        2,
        "the request and one replay, never a loop"
    );
    assert_eq!(s.source.fetches(), 2);
    assert_eq!(s.layer.stats().replays, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_401s_on_one_token_fetch_once_and_all_replay() {
    let s = Arc::new(setup(http2_client(), |b| b).await);
    s.warm_up().await;
    s.revoke("tok-2");
    let barrier = Arc::new(tokio::sync::Barrier::new(1_000));
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let s = s.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let req = Request::post(s.server.url(&format!("/item/{i}")))
                    .body(full(b"x"))
                    .unwrap();
                barrier.wait().await;
                s.send(req).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(s.source.fetches(), 2, "one fetch for a thousand 401s");
    let replays = s.layer.stats().replays;
    let seen = s.server.seen();
    let rejected = seen.iter().filter(|r| r.token() == Some("tok-1")).count() - 1;
    assert_eq!(
        replays as usize, rejected,
        "every rejected request was replayed"
    );
    assert_eq!(
        seen.iter().filter(|r| r.token() == Some("tok-2")).count(),
        replays as usize
    );
    assert!(replays > 0);
}

#[tokio::test]
async fn a_401_for_a_superseded_token_does_not_fetch() {
    let s = Arc::new(setup(http1_client(), |b| b).await);
    s.warm_up().await;
    // A: sent with tok-1, answered late (after the token has changed).
    let a = {
        let s = s.clone();
        tokio::spawn(async move {
            let req = Request::post(s.server.url("/slow/a"))
                .body(full(b"a"))
                .unwrap();
            s.send(req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B: rejected at once, renews to tok-2.
    s.revoke("tok-2");
    let req = Request::post(s.server.url("/b")).body(full(b"b")).unwrap();
    assert_eq!(s.send(req).await, StatusCode::OK);
    assert_eq!(s.source.fetches(), 2);
    // A's 401 (for tok-1, already superseded) fetches nothing and replays with tok-2.
    assert_eq!(a.await.unwrap(), StatusCode::OK);
    assert_eq!(s.source.fetches(), 2);
    let seen = s.server.seen();
    let a_seen: Vec<_> = seen
        .iter()
        .filter(|r| r.uri == "/slow/a")
        .map(|r| r.token().unwrap().to_owned())
        .collect();
    assert_eq!(a_seen, ["tok-1", "tok-2"]);
}

#[tokio::test]
async fn a_streamed_body_over_the_cap_is_not_replayed_but_the_token_is_renewed() {
    let s = setup(http1_client(), |b| b.replay_limit(16)).await;
    s.warm_up().await;
    s.revoke("tok-2");
    let req = Request::post(s.server.url("/big"))
        .body(streamed(
            vec![b"0123456789", b"0123456789", b"0123456789"],
            None,
        ))
        .unwrap();
    assert_eq!(
        s.send(req).await,
        StatusCode::UNAUTHORIZED,
        "the 401 goes back as is"
    );
    let seen = s.server.seen();
    assert_eq!(seen.len(), 2, "no replay");
    assert_eq!(seen[1].body.len(), 30, "the whole body was sent");
    s.assert_renewed_without_replay().await;
}

#[tokio::test]
async fn a_full_body_announced_over_the_cap_is_not_replayed() {
    let s = setup(http1_client(), |b| b.replay_limit(4)).await;
    s.warm_up().await;
    s.revoke("tok-2");
    let req = Request::post(s.server.url("/big"))
        .body(full(b"more than four"))
        .unwrap();
    assert_eq!(s.send(req).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.server.count(), 2);
    s.assert_renewed_without_replay().await;
}

#[tokio::test]
async fn replay_can_be_disabled() {
    let s = setup(http1_client(), |b| b.replay_limit(0)).await;
    s.warm_up().await;
    s.revoke("tok-2");
    let req = Request::get(s.server.url("/x")).body(empty()).unwrap();
    assert_eq!(s.send(req).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.server.count(), 2);
    s.assert_renewed_without_replay().await;
}
