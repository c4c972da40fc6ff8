//! The embedded mock Kero server, driven by a plain hyper-util client (no kero-auth layer).
#![cfg(feature = "mock")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use kero_auth::mock::{Counts, Malformed, MockKero};
use serde_json::{json, Value};

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// The Kero error body's `code` and `status`.
    fn error(&self) -> (i64, String) {
        let v = self.json();
        (
            v["code"].as_i64().unwrap(),
            v["status"].as_str().unwrap().to_owned(),
        )
    }

    fn date(&self) -> i64 {
        let date = self.headers["date"].to_str().unwrap();
        unix(httpdate::parse_http_date(date).unwrap())
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn local_now() -> i64 {
    unix(SystemTime::now())
}

async fn call(
    client: &TestClient,
    method: Method,
    url: String,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("accept", "application/json")
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("token", token);
    }
    let res = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn auth_call(kero: &MockKero, c: &TestClient, name: &str, password: &str) -> Answer {
    let body = json!({ "name": name, "password": password }).to_string();
    call(
        c,
        Method::POST,
        format!("{}/us/auth", kero.base_url()),
        None,
        body,
    )
    .await
}

/// Logs in with the right credentials; returns the token response.
async fn login(kero: &MockKero, c: &TestClient) -> Value {
    let (name, password) = kero.credentials();
    let a = auth_call(kero, c, &name, &password).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.json()
}

async fn refresh_call(
    kero: &MockKero,
    c: &TestClient,
    token: Option<&str>,
    refresh: &str,
) -> Answer {
    let body = json!({ "refresh_token": refresh }).to_string();
    call(
        c,
        Method::POST,
        format!("{}/us/refresh", kero.base_url()),
        token,
        body,
    )
    .await
}

async fn refresh_pair(kero: &MockKero, c: &TestClient, pair: &Value) -> Answer {
    refresh_call(
        kero,
        c,
        Some(pair["auth_token"].as_str().unwrap()),
        pair["refresh_token"].as_str().unwrap(),
    )
    .await
}

async fn protected(kero: &MockKero, c: &TestClient, path: &str, token: Option<&str>) -> Answer {
    call(
        c,
        Method::GET,
        format!("{}{path}", kero.base_url()),
        token,
        "",
    )
    .await
}

fn tok(v: &Value) -> &str {
    v["auth_token"].as_str().unwrap()
}

/// The JWT header and payload of `token`.
fn jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 32);
    (decode(parts[0]), decode(parts[1]))
}

fn counts(auth: u64, refresh: u64, ok: u64, rejected: u64, reused: u64) -> Counts {
    let mut c = Counts::default();
    c.auth = auth;
    c.refresh = refresh;
    c.protected = ok + rejected;
    c.protected_ok = ok;
    c.protected_rejected = rejected;
    c.refresh_token_reused = reused;
    c
}

#[tokio::test]
async fn auth_success_has_the_documented_fields() {
    let kero = MockKero::start().await;
    let c = client();
    assert_eq!(
        kero.base_url(),
        format!("http://127.0.0.1:{}", kero.addr().port())
    );
    assert_eq!(
        kero.credentials(),
        ("kero-user".to_owned(), "kero-password".to_owned())
    );

    let (name, password) = kero.credentials();
    let a = auth_call(&kero, &c, &name, &password).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    assert!((a.date() - local_now()).abs() <= 2);
    let v = a.json();
    let access_exp = v["access_expires_at"].as_i64().unwrap();
    let refresh_exp = v["refresh_expires_at"].as_i64().unwrap();
    let now = local_now();
    assert!((access_exp - (now + 24 * 3600)).abs() <= 2, "{access_exp}");
    assert!(
        (refresh_exp - (now + 180 * 24 * 3600)).abs() <= 2,
        "{refresh_exp}"
    );

    let access = tok(&v);
    let refresh = v["refresh_token"].as_str().unwrap();
    for t in [access, refresh] {
        assert!(t.bytes().all(|b| b.is_ascii_graphic()), "{t}");
    }
    let (header, claims) = jwt(access);
    assert_eq!(header, json!({ "alg": "HS256", "typ": "JWT" }));
    assert_eq!(claims["exp"].as_i64(), Some(access_exp));
    assert_eq!(claims["type"], "ACCESS");
    assert_eq!(claims["username"], "kero-user");
    for claim in [
        "authorized",
        "chat_banned_till",
        "currency",
        "is_banned",
        "is_white_listed",
        "partner_name",
        "system_name",
        "user_id",
        "user_token",
        "user_topic",
        "jti",
    ] {
        assert!(!claims[claim].is_null(), "{claim} missing");
    }
    let (_, refresh_claims) = jwt(refresh);
    assert_eq!(refresh_claims["exp"].as_i64(), Some(refresh_exp));
    assert_eq!(refresh_claims["type"], "REFRESH");

    // Every token differs, and a new /auth leaves the earlier tokens valid.
    let v2 = login(&kero, &c).await;
    assert_ne!(tok(&v2), access);
    assert_ne!(v2["refresh_token"], v["refresh_token"]);
    assert_eq!(protected(&kero, &c, "/x", Some(access)).await.status, 200);
    assert_eq!(kero.counts(), counts(2, 0, 1, 0, 0));
}

#[tokio::test]
async fn bad_credentials_and_bad_bodies() {
    let kero = MockKero::builder()
        .credentials("alice", "s3cret")
        .start()
        .await;
    let c = client();
    assert_eq!(
        kero.credentials(),
        ("alice".to_owned(), "s3cret".to_owned())
    );
    let debug = format!(
        "{kero:?} {:?}",
        MockKero::builder().credentials("a", "hidden-pw")
    );
    assert!(
        !debug.contains("s3cret") && !debug.contains("hidden-pw"),
        "{debug}"
    );

    let a = auth_call(&kero, &c, "alice", "wrong").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.error(), (2, "INVALID CREDENTIALS".to_owned()));
    assert!(a.json().get("msg").is_some() && a.json()["data"].is_null());
    assert_eq!(
        auth_call(&kero, &c, "kero-user", "kero-password")
            .await
            .status,
        401
    );

    kero.reject_credentials(true);
    assert_eq!(auth_call(&kero, &c, "alice", "s3cret").await.status, 401);
    kero.reject_credentials(false);
    assert_eq!(auth_call(&kero, &c, "alice", "s3cret").await.status, 200);

    let url = format!("{}/us/auth", kero.base_url());
    for body in [
        "not json",
        r#"{"name":"alice"}"#,
        r#"{"name":1,"password":2}"#,
        "",
    ] {
        let a = call(&c, Method::POST, url.clone(), None, body).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.error(), (6, "BAD REQUEST".to_owned()));
    }
    let a = call(&c, Method::GET, url, None, "").await;
    assert_eq!(a.status, 405);
    assert_eq!(kero.counts(), counts(9, 0, 0, 0, 0));
}

#[tokio::test]
async fn invalid_source_host_on_every_route() {
    let kero = MockKero::start().await;
    let c = client();
    let pair = login(&kero, &c).await;
    kero.reject_source_ip(true);
    let expected = json!({
        "code": 1,
        "status": "INVALID SOURCE HOST",
        "msg": "source IP 127.0.0.1 is not whitelisted",
        "data": "additional data for error response",
    });
    let (name, password) = kero.credentials();
    let answers = [
        auth_call(&kero, &c, &name, &password).await,
        refresh_pair(&kero, &c, &pair).await,
        protected(&kero, &c, "/us/wallet", Some(tok(&pair))).await,
        call(
            &c,
            Method::DELETE,
            format!("{}/", kero.base_url()),
            None,
            "x",
        )
        .await,
        call(
            &c,
            Method::POST,
            format!("{}/eu/auth", kero.base_url()),
            None,
            "",
        )
        .await,
    ];
    for a in answers {
        assert_eq!(a.status, 403);
        assert_eq!(a.json(), expected);
        assert!(a.headers.contains_key("date"));
    }
    kero.reject_source_ip(false);
    assert_eq!(refresh_pair(&kero, &c, &pair).await.status, 200);
    assert_eq!(kero.counts(), counts(2, 2, 0, 2, 0));
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    let kero = MockKero::start().await;
    let c = client();
    let p1 = login(&kero, &c).await;
    let a = refresh_pair(&kero, &c, &p1).await;
    assert_eq!(a.status, 200);
    let p2 = a.json();
    assert_ne!(tok(&p2), tok(&p1));
    assert_ne!(p2["refresh_token"], p1["refresh_token"]);
    let (_, claims) = jwt(tok(&p2));
    assert_eq!(claims["exp"], p2["access_expires_at"]);
    let (_, claims) = jwt(p2["refresh_token"].as_str().unwrap());
    assert_eq!(claims["exp"], p2["refresh_expires_at"]);
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p2))).await.status, 200);
    // The replaced access token stays valid until it expires.
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p1))).await.status, 200);

    // The spent refresh token is refused as reused, with either access token.
    let a = refresh_pair(&kero, &c, &p1).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.error(), (4, "REFRESH TOKEN ALREADY USED".to_owned()));
    let a = refresh_call(
        &kero,
        &c,
        Some(tok(&p2)),
        p1["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(a.error().0, 4);
    assert_eq!(kero.counts().refresh_token_reused, 2);

    // The new one works once.
    let p3 = refresh_pair(&kero, &c, &p2).await.json();
    assert_eq!(refresh_pair(&kero, &c, &p2).await.error().0, 4);

    // Header token: missing, unknown, malformed.
    let r3 = p3["refresh_token"].as_str().unwrap();
    for header in [None, Some("nope"), Some("a.b.c")] {
        let a = refresh_call(&kero, &c, header, r3).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.error(), (5, "INVALID TOKEN".to_owned()));
    }
    // Unknown refresh token, a refresh token in the header's place, an access token as refresh.
    for refresh in ["unknown", tok(&p3)] {
        let a = refresh_call(&kero, &c, Some(tok(&p3)), refresh).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.error(), (3, "INVALID REFRESH TOKEN".to_owned()));
    }
    assert_eq!(refresh_call(&kero, &c, Some(r3), r3).await.error().0, 5);
    // Bad body.
    let a = call(
        &c,
        Method::POST,
        format!("{}/us/refresh", kero.base_url()),
        Some(tok(&p3)),
        "{}",
    )
    .await;
    assert_eq!(a.status, 400);
    // p3 is still unspent.
    assert_eq!(refresh_pair(&kero, &c, &p3).await.status, 200);
    assert_eq!(kero.counts(), counts(1, 13, 2, 0, 3));
}

#[tokio::test]
async fn refresh_without_rotation() {
    let kero = MockKero::builder()
        .rotate_refresh_tokens(false)
        .start()
        .await;
    let c = client();
    let p1 = login(&kero, &c).await;
    let p2 = refresh_pair(&kero, &c, &p1).await.json();
    assert_ne!(tok(&p2), tok(&p1));
    assert_eq!(p2["refresh_token"], p1["refresh_token"]);
    assert_eq!(p2["refresh_expires_at"], p1["refresh_expires_at"]);
    let p3 = refresh_pair(&kero, &c, &p2).await.json();
    assert_eq!(p3["refresh_token"], p1["refresh_token"]);
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p3))).await.status, 200);

    // Switched on while running: the next refresh rotates.
    kero.rotate_refresh_tokens(true);
    let p4 = refresh_pair(&kero, &c, &p3).await.json();
    assert_ne!(p4["refresh_token"], p1["refresh_token"]);
    assert_eq!(refresh_pair(&kero, &c, &p3).await.error().0, 4);
    assert_eq!(kero.counts(), counts(1, 4, 1, 0, 1));
}

#[tokio::test]
async fn refuse_refresh_and_revoke_all() {
    let kero = MockKero::start().await;
    let c = client();
    let p1 = login(&kero, &c).await;

    kero.refuse_refresh(true);
    for header in [Some(tok(&p1)), None] {
        let a = refresh_call(&kero, &c, header, p1["refresh_token"].as_str().unwrap()).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.error(), (3, "INVALID REFRESH TOKEN".to_owned()));
    }
    kero.refuse_refresh(false);
    let p2 = refresh_pair(&kero, &c, &p1).await.json();

    kero.revoke_all();
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p1))).await.status, 401);
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p2))).await.status, 401);
    assert_eq!(refresh_pair(&kero, &c, &p2).await.status, 401);
    // Only with a fresh access token does the revoked refresh token show as such.
    let p3 = login(&kero, &c).await;
    let a = refresh_call(
        &kero,
        &c,
        Some(tok(&p3)),
        p2["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(a.error(), (3, "INVALID REFRESH TOKEN".to_owned()));
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p3))).await.status, 200);
    assert_eq!(refresh_pair(&kero, &c, &p3).await.status, 200);
    assert_eq!(kero.counts(), counts(2, 6, 1, 2, 0));
}

#[tokio::test]
async fn protected_routes_want_a_valid_unexpired_token() {
    let kero = MockKero::builder()
        .access_lifetime(Duration::from_millis(2900)) // whole seconds: 2 s
        .refresh_lifetime(Duration::from_secs(60))
        .start()
        .await;
    let c = client();
    let p = login(&kero, &c).await;
    let exp = p["access_expires_at"].as_i64().unwrap();
    assert_eq!(exp - p["refresh_expires_at"].as_i64().unwrap(), 2 - 60);

    let a = protected(&kero, &c, "/us/wallet?x=1", Some(tok(&p))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({ "ok": true, "path": "/us/wallet" }));
    let a = call(
        &c,
        Method::PUT,
        format!("{}/v2/bets", kero.base_url()),
        Some(tok(&p)),
        vec![b'x'; 300_000],
    )
    .await;
    assert_eq!(a.status, 200);

    let invalid = json!({
        "code": 5,
        "status": "INVALID TOKEN",
        "msg": "missing, unknown or expired token",
        "data": null,
    });
    for token in [
        None,
        Some("unknown"),
        Some(p["refresh_token"].as_str().unwrap()),
    ] {
        let a = protected(&kero, &c, "/us/wallet", token).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json(), invalid);
    }

    // Wait until the server's clock reaches `exp`.
    let wait_ms = (exp * 1000) as u128
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
        + 20;
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    assert!(kero.now() >= exp);
    let a = protected(&kero, &c, "/us/wallet", Some(tok(&p))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json(), invalid);

    // An expired access token still authorizes /refresh.
    let p2 = refresh_pair(&kero, &c, &p).await.json();
    assert_eq!(
        protected(&kero, &c, "/us/wallet", Some(tok(&p2)))
            .await
            .status,
        200
    );
    assert_eq!(kero.counts(), counts(1, 1, 3, 4, 0));
}

#[tokio::test]
async fn expired_refresh_token_is_refused() {
    let kero = MockKero::builder()
        .refresh_lifetime(Duration::from_secs(100))
        .start()
        .await;
    let c = client();
    let p = login(&kero, &c).await;
    kero.set_clock_offset(101);
    let a = refresh_pair(&kero, &c, &p).await;
    assert_eq!(a.error(), (3, "INVALID REFRESH TOKEN".to_owned()));
}

#[tokio::test]
async fn fail_next_answers_503_then_succeeds() {
    let kero = MockKero::start().await;
    let c = client();
    let (name, password) = kero.credentials();
    kero.fail_next(2);
    for _ in 0..2 {
        let a = auth_call(&kero, &c, &name, &password).await;
        assert_eq!(a.status, 503);
        assert_eq!(a.error(), (7, "SERVICE UNAVAILABLE".to_owned()));
    }
    let p = login(&kero, &c).await;

    // /refresh consumes them too; protected routes do not.
    kero.fail_next(1);
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p))).await.status, 200);
    assert_eq!(refresh_pair(&kero, &c, &p).await.status, 503);
    assert_eq!(refresh_pair(&kero, &c, &p).await.status, 200);

    // fail_next(0) cancels.
    kero.fail_next(5);
    kero.fail_next(0);
    assert_eq!(auth_call(&kero, &c, &name, &password).await.status, 200);
    assert_eq!(kero.counts(), counts(4, 2, 1, 0, 0));
}

#[tokio::test]
async fn each_malformed_kind() {
    let kero = MockKero::start().await;
    let c = client();
    let (name, password) = kero.credentials();
    let kinds = [
        Malformed::NotJson,
        Malformed::MissingField,
        Malformed::WrongTypes,
        Malformed::HugeBody,
        Malformed::AccessExpired,
        Malformed::TokenNotHeaderSafe,
        Malformed::ErrorWith200,
    ];
    for kind in kinds {
        kero.malformed_next(kind, 1);
        let a = auth_call(&kero, &c, &name, &password).await;
        assert_eq!(a.status, 200, "{kind:?}");
        assert!(a.headers.contains_key("date"));
        match kind {
            Malformed::NotJson => {
                assert!(serde_json::from_slice::<Value>(&a.body).is_err());
                assert!(a.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"));
            }
            Malformed::MissingField => {
                let v = a.json();
                assert!(v["auth_token"].is_string());
                assert!(v.get("refresh_token").is_none());
                assert!(v.get("refresh_expires_at").is_none());
            }
            Malformed::WrongTypes => {
                let v = a.json();
                assert!(!v["auth_token"].is_string());
                assert!(v["access_expires_at"].is_string());
                assert!(!v["refresh_token"].is_string());
                assert!(!v["refresh_expires_at"].is_i64());
            }
            Malformed::HugeBody => {
                assert!(a.body.len() > 1024 * 1024, "{}", a.body.len());
                let v = a.json();
                assert!(v["auth_token"].is_string() && v["refresh_expires_at"].is_i64());
            }
            Malformed::AccessExpired => {
                let v = a.json();
                let exp = v["access_expires_at"].as_i64().unwrap();
                assert!(exp < local_now());
                assert_eq!(jwt(tok(&v)).1["exp"].as_i64(), Some(exp));
                assert!(v["refresh_token"].is_string());
            }
            Malformed::TokenNotHeaderSafe => {
                let v = a.json();
                let t = tok(&v);
                assert!(t.contains(' ') && !t.is_ascii());
                // Note: `HeaderValue::from_str` accepts both (a space and obs-text bytes are legal
                // in a field value); only `to_str` refuses it. A client must check for itself.
                assert!(!t.bytes().all(|b| b.is_ascii_graphic()));
                assert!(http::HeaderValue::from_str(t).unwrap().to_str().is_err());
                assert!(v["refresh_token"].is_string());
            }
            Malformed::ErrorWith200 => {
                let v = a.json();
                assert!(v["status"].is_string() && v.get("auth_token").is_none());
                assert_eq!(a.error().1, "INTERNAL ERROR");
            }
            _ => unreachable!(),
        }
        // Only the next one.
        assert_eq!(auth_call(&kero, &c, &name, &password).await.status, 200);
    }

    // On /refresh too, n at a time, and the malformed answer spends nothing.
    let p = login(&kero, &c).await;
    kero.malformed_next(Malformed::NotJson, 2);
    for _ in 0..2 {
        let a = refresh_pair(&kero, &c, &p).await;
        assert_eq!(a.status, 200);
        assert!(serde_json::from_slice::<Value>(&a.body).is_err());
    }
    assert_eq!(refresh_pair(&kero, &c, &p).await.status, 200);
    assert_eq!(kero.counts(), counts(15, 3, 0, 0, 0));
}

#[tokio::test]
async fn clock_offset_moves_date_and_expiries() {
    let kero = MockKero::builder()
        .clock_offset(-7200)
        .access_lifetime(Duration::from_secs(3600))
        .start()
        .await;
    let c = client();
    assert!((kero.now() - (local_now() - 7200)).abs() <= 1);
    let (name, password) = kero.credentials();
    let a = auth_call(&kero, &c, &name, &password).await;
    assert!(
        (a.date() - (local_now() - 7200)).abs() <= 2,
        "{:?}",
        a.headers["date"]
    );
    let p = a.json();
    let exp = p["access_expires_at"].as_i64().unwrap();
    assert!((exp - (local_now() - 7200 + 3600)).abs() <= 2);
    // Expired by the local clock, not by the server's: still valid.
    assert!(exp < local_now());
    assert_eq!(protected(&kero, &c, "/a", Some(tok(&p))).await.status, 200);

    kero.set_clock_offset(3 * 3600);
    assert!((kero.now() - (local_now() + 3 * 3600)).abs() <= 1);
    let a = protected(&kero, &c, "/a", Some(tok(&p))).await;
    assert_eq!(a.status, 401);
    assert!((a.date() - (local_now() + 3 * 3600)).abs() <= 2);
    // Over HTTP/2 too.
    let a = protected(&kero, &h2_client(), "/a", Some(tok(&p))).await;
    assert_eq!(a.status, 401);
    assert!((a.date() - (local_now() + 3 * 3600)).abs() <= 2);
    let p2 = refresh_pair(&kero, &c, &p).await.json();
    let exp2 = p2["access_expires_at"].as_i64().unwrap();
    assert!((exp2 - (local_now() + 4 * 3600)).abs() <= 2);
}

#[tokio::test]
async fn other_regions_answer_404() {
    let kero = MockKero::start().await;
    let c = client();
    let (name, password) = kero.credentials();
    let login_body = json!({ "name": name, "password": password }).to_string();
    for path in ["/eu/auth", "/eu/refresh"] {
        let a = call(
            &c,
            Method::POST,
            format!("{}{path}", kero.base_url()),
            None,
            login_body.clone(),
        )
        .await;
        assert_eq!(a.status, 404);
        assert_eq!(a.error(), (8, "NOT FOUND".to_owned()));
    }
    assert_eq!(kero.counts(), Counts::default());

    let eu = MockKero::builder().region("eu").start().await;
    let url = |p: &str| format!("{}{p}", eu.base_url());
    let a = call(&c, Method::POST, url("/eu/auth"), None, login_body.clone()).await;
    assert_eq!(a.status, 200);
    let a = call(&c, Method::POST, url("/us/auth"), None, login_body).await;
    assert_eq!(a.status, 404);
    assert_eq!(eu.counts(), counts(1, 0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_over_http2_and_http1() {
    let kero = MockKero::builder()
        .latency(Duration::from_millis(20))
        .start()
        .await;
    let h2 = h2_client();
    let p = login(&kero, &h2).await;
    let token = tok(&p).to_owned();
    let base = kero.base_url();

    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (c, token, base) = (h2.clone(), token.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let t = (i % 10 != 0).then_some(token.as_str());
            let a = call(&c, Method::GET, format!("{base}/p/{i}"), t, "").await;
            (i, a.status)
        }));
    }
    for t in tasks {
        let (i, status) = t.await.unwrap();
        assert_eq!(status, if i % 10 != 0 { 200 } else { 401 });
    }
    assert_eq!(kero.counts(), counts(1, 0, 900, 100, 0));

    // HTTP/1.1: one connection per request in flight (400, so client and server stay under
    // 1,024 file descriptors together).
    kero.set_latency(Duration::from_millis(50));
    let h1 = client();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (c, token, base) = (h1.clone(), token.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &c,
                Method::POST,
                format!("{base}/p/{i}"),
                Some(&token),
                "{}",
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(kero.counts(), counts(1, 0, 1300, 100, 0));
}

#[tokio::test]
async fn dropping_shuts_the_server_down() {
    let kero = MockKero::start().await;
    let addr = kero.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(kero);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "still accepting after drop");
}
