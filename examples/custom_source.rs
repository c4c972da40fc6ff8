//! Bring your own token source: a closure-backed `TokenSource` in front of hyper-util's client,
//! talking to a small hyper server on loopback that accepts only the newest token it handed out.
//!
//! ```text
//! cargo run --example custom_source
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kero_auth::{source, KeroAuthLayer, ReplayBody, Token};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    // The "issuer": hands out tok-1, tok-2, … and remembers the newest as the only valid one.
    let valid = Arc::new(Mutex::new(String::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let (v, n) = (valid.clone(), issued.clone());
    let source = source::from_fn(move |_current: Option<Token>| {
        let id = n.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("tok-{id}");
        *v.lock().unwrap() = token.clone();
        async move {
            Ok::<_, Infallible>(Token::expiring_in(
                token,
                Duration::from_secs(3600),
                "refresh",
                Duration::from_secs(86_400),
            ))
        }
    });

    // The API server: 200 for the valid token, 401 otherwise.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let v = valid.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let v = v.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let ok = req
                        .headers()
                        .get("token")
                        .is_some_and(|t| t == v.lock().unwrap().as_str());
                    async move {
                        let status = if ok {
                            StatusCode::OK
                        } else {
                            StatusCode::UNAUTHORIZED
                        };
                        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *res.status_mut() = status;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let layer = KeroAuthLayer::new(source);
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(5))
        .service(client);

    let mut ok = 0;
    for round in 0..3 {
        if round == 2 {
            // Someone else took a new token: ours is revoked. The layer renews and replays.
            *valid.lock().unwrap() = "revoked-for-us".into();
        }
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let req = Request::post(format!("http://{addr}/orders/{i}"))
                    .body(Full::new(Bytes::from(format!("{{\"round\":{round}}}"))))
                    .unwrap();
                tokio::spawn(svc.clone().oneshot(req))
            })
            .collect();
        for t in tasks {
            let res = t.await??;
            if res.status() == StatusCode::OK {
                ok += 1;
            }
            let _ = res.into_body().collect().await;
        }
    }
    let stats = layer.stats();
    println!("requests: 150, succeeded: {ok}");
    println!(
        "token fetches: {}, replays after 401: {}",
        stats.fetches, stats.replays
    );
    Ok(())
}
