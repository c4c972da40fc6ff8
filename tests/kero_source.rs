//! `KeroTokenSource` behind the layer, against the embedded mock Kero server over real HTTP.
#![cfg(feature = "mock")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kero_auth::mock::{Malformed, MockKero};
use kero_auth::source::{KeroError, KeroTokenSource};
use kero_auth::{Error, KeroAuth, KeroAuthLayer, ReplayBody};
use tower::{Layer, ServiceExt};

type Client_ = Client<hyper_util::client::legacy::connect::HttpConnector, ReplayBody<Full<Bytes>>>;

struct Kit {
    kero: MockKero,
    layer: KeroAuthLayer,
    svc: KeroAuth<Client_>,
}

/// A layer with a `KeroTokenSource` for `kero`, margins fit for lifetimes of seconds.
fn kit(
    kero: MockKero,
    http2: bool,
    configure: impl FnOnce(kero_auth::Builder) -> kero_auth::Builder,
) -> Kit {
    let (name, password) = kero.credentials();
    let source = KeroTokenSource::builder(kero.base_url(), name, password)
        .allow_insecure_loopback(true)
        .build()
        .unwrap();
    let layer = configure(
        KeroAuthLayer::builder(source)
            .expiry_margin(Duration::from_secs(1))
            .refresh_window(Duration::ZERO)
            .backoff(Duration::from_millis(100), Duration::from_millis(400)),
    )
    .build();
    let mut client = Client::builder(TokioExecutor::new());
    client.http2_only(http2);
    let svc = layer.layer(client.build_http());
    Kit { kero, layer, svc }
}

impl Kit {
    async fn call(&self, path: &str) -> Result<StatusCode, tower::BoxError> {
        let req = Request::post(format!("{}{path}", self.kero.base_url()))
            .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
            .unwrap();
        let res = self.svc.clone().oneshot(req).await?;
        let status = res.status();
        res.into_body().collect().await?;
        Ok(status)
    }

    async fn ok(&self, path: &str) {
        assert_eq!(self.call(path).await.unwrap(), StatusCode::OK, "{path}");
    }
}

fn kero_error(err: &tower::BoxError) -> &KeroError {
    let err = err
        .downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("not a kero_auth::Error: {err}"));
    err.source_as::<KeroError>()
        .unwrap_or_else(|| panic!("not a KeroError: {err:?}"))
}

#[tokio::test]
async fn auth_then_refresh_then_auth_again_when_the_refresh_token_expires() {
    let kero = MockKero::builder()
        .access_lifetime(Duration::from_secs(2))
        .refresh_lifetime(Duration::from_secs(5))
        .start()
        .await;
    let k = kit(kero, false, |b| b);
    k.ok("/v1/me").await;
    assert_eq!((k.kero.counts().auth, k.kero.counts().refresh), (1, 0));

    // Past the access token's lifetime (minus the 1 s margin): one /refresh, no /auth.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    k.ok("/v1/me").await;
    assert_eq!((k.kero.counts().auth, k.kero.counts().refresh), (1, 1));

    // Past the refresh token's lifetime: one /auth.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    k.ok("/v1/me").await;
    let c = k.kero.counts();
    assert_eq!((c.auth, c.refresh), (2, 1));
    assert_eq!(
        c.protected_rejected, 0,
        "no request was sent with an expired token"
    );
}

#[tokio::test]
async fn a_refused_refresh_falls_back_to_auth_once() {
    let kero = MockKero::builder()
        .access_lifetime(Duration::from_secs(2))
        .start()
        .await;
    let k = kit(kero, false, |b| b);
    k.ok("/a").await;
    k.kero.refuse_refresh(true);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    k.ok("/b").await;
    let c = k.kero.counts();
    assert_eq!((c.auth, c.refresh), (2, 1));
    assert_eq!(k.layer.stats().fetches, 2);
}

#[tokio::test]
async fn a_revocation_is_renewed_and_the_request_replayed() {
    let kero = MockKero::start().await;
    let k = kit(kero, false, |b| b);
    k.ok("/a").await;
    k.kero.revoke_all();
    k.ok("/b").await;
    let c = k.kero.counts();
    assert_eq!(
        (c.protected, c.protected_ok, c.protected_rejected),
        (3, 2, 1)
    );
    // The revoked refresh token is refused; /auth follows.
    assert_eq!((c.auth, c.refresh), (2, 1));
    assert_eq!(k.layer.stats().replays, 1);
    assert_eq!(k.layer.stats().fetches, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refresh_tokens_under_load_are_never_reused() {
    let kero = MockKero::builder()
        .access_lifetime(Duration::from_secs(2))
        .rotate_refresh_tokens(true)
        .start()
        .await;
    let k = Arc::new(kit(kero, true, |b| {
        b.refresh_window(Duration::from_millis(400))
    }));
    // Waves of 1,000 concurrent requests across three token lifetimes.
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(3_600) {
        let wave: Vec<_> = (0..1_000)
            .map(|i| {
                let k = k.clone();
                tokio::spawn(async move { k.call(&format!("/w/{i}")).await })
            })
            .collect();
        for t in wave {
            assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let c = k.kero.counts();
    assert_eq!(c.refresh_token_reused, 0, "a refresh token was used twice");
    assert_eq!(c.auth, 1);
    assert!(c.refresh >= 2, "{c:?}");
    assert_eq!(c.protected_ok, sent);
    assert_eq!(c.protected_ok + c.protected_rejected, c.protected);
    assert_eq!(k.layer.stats().replays, c.protected_rejected);
}

#[tokio::test]
async fn an_unlisted_ip_is_a_typed_error_that_says_what_to_do_and_is_not_hammered() {
    let kero = MockKero::start().await;
    kero.reject_source_ip(true);
    let k = kit(kero, false, |b| b);
    let started = tokio::time::Instant::now();
    let mut errors = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let err = k.call("/a").await.unwrap_err();
        let kero_err = kero_error(&err);
        assert!(
            matches!(kero_err, KeroError::InvalidSourceHost(_)),
            "{kero_err:?}"
        );
        assert!(!kero_err.is_retryable());
        assert!(err.to_string().contains("whitelist"), "{err}");
        errors += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors > 50);
    // Backoff 100 ms doubling to 400 ms (jittered down to half): at most 6 attempts in 1 s.
    let auth = k.kero.counts().auth;
    assert!((2..=6).contains(&auth), "{auth} /auth calls in 1 s");
    // A person fixes the whitelist: the layer heals without a restart.
    k.kero.reject_source_ip(false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    k.ok("/a").await;
}

#[tokio::test]
async fn bad_credentials_are_a_typed_error() {
    let kero = MockKero::start().await;
    kero.reject_credentials(true);
    let k = kit(kero, false, |b| b);
    let err = k.call("/a").await.unwrap_err();
    let kero_err = kero_error(&err);
    let KeroError::InvalidCredentials(api) = kero_err else {
        panic!("{kero_err:?}")
    };
    assert_eq!(api.http_status, StatusCode::UNAUTHORIZED);
    assert!(
        !err.to_string().contains(&k.kero.credentials().1),
        "the password leaked: {err}"
    );
    assert!(!format!("{err:?}").contains(&k.kero.credentials().1));
    assert_eq!(k.kero.counts().auth, 1);
}

#[tokio::test]
async fn each_malformed_answer_is_a_clear_error_and_the_next_good_one_heals() {
    let cases = [
        (Malformed::NotJson, "not valid JSON"),
        (Malformed::MissingField, "missing field"),
        (Malformed::WrongTypes, "wrong type"),
        (Malformed::HugeBody, "larger than"),
        (Malformed::AccessExpired, "already past"),
        (Malformed::TokenNotHeaderSafe, "not a valid header value"),
        (Malformed::ErrorWith200, "Kero API error"),
    ];
    for (kind, want) in cases {
        let kero = MockKero::start().await;
        kero.malformed_next(kind, 1);
        let k = kit(kero, false, |b| b);
        let err = k.call("/a").await.unwrap_err();
        let kero_err = kero_error(&err);
        assert!(err.to_string().contains(want), "{kind:?}: {err}");
        assert!(
            matches!(kero_err, KeroError::Malformed(_) | KeroError::Api(_)),
            "{kind:?}: {kero_err:?}"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        k.ok("/a").await;
        let c = k.kero.counts();
        assert_eq!(c.auth, 2, "{kind:?}");
        assert_eq!(c.protected_ok, 1, "{kind:?}: the bad token was never used");
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_heal() {
    let kero = MockKero::start().await;
    kero.fail_next(2);
    let k = kit(kero, false, |b| b);
    let err = k.call("/a").await.unwrap_err();
    assert!(kero_error(&err).is_retryable());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(k.call("/a").await.is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    k.ok("/a").await;
    assert_eq!(k.kero.counts().auth, 3);
}

#[tokio::test]
async fn a_server_clock_ten_minutes_off_changes_nothing() {
    for offset in [600, -600] {
        let kero = MockKero::builder()
            .access_lifetime(Duration::from_secs(3))
            .clock_offset(offset)
            .start()
            .await;
        let k = kit(kero, false, |b| b);
        k.ok("/a").await;
        k.ok("/b").await;
        assert_eq!(
            k.kero.counts().auth,
            1,
            "offset {offset}: no premature expiry"
        );
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        k.ok("/c").await;
        let c = k.kero.counts();
        assert_eq!((c.auth, c.refresh), (1, 1), "offset {offset}");
        assert_eq!(
            c.protected_rejected, 0,
            "offset {offset}: an expired token was used"
        );
    }
}

#[tokio::test]
async fn the_source_runs_over_any_tower_http_service() {
    // A plain hyper-util client with a tower timeout in front: the source only needs a Service.
    let kero = MockKero::start().await;
    let (name, password) = kero.credentials();
    let client = tower::ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let source = KeroTokenSource::builder(kero.base_url(), name, password)
        .allow_insecure_loopback(true)
        .build_with_client(client)
        .unwrap();
    let layer = KeroAuthLayer::new(source);
    let svc =
        layer.layer(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>());
    let req = Request::get(format!("{}/v1/me", kero.base_url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(kero.counts().auth, 1);
}
