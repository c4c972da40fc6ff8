//! The main demo: the embedded mock Kero server on loopback, a hyper-util client with
//! `KeroAuthLayer` and a timeout layer, concurrent requests across several token lifetimes and one
//! revocation, and a summary checked against the server's own counts.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kero_auth::mock::{Counts, MockKero};
use kero_auth::source::KeroTokenSource;
use kero_auth::{KeroAuthLayer, ReplayBody, Stats};
use tower::{ServiceBuilder, ServiceExt};

/// How long the demo runs and how hard it pushes.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Lifetime of an access token on the mock server.
    pub access_lifetime: Duration,
    /// How long requests are sent for.
    pub run_for: Duration,
    /// When (from the start) the server revokes every token.
    pub revoke_at: Duration,
    /// Concurrent workers, each sending one request after another.
    pub workers: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            access_lifetime: Duration::from_secs(3),
            run_for: Duration::from_secs(8),
            revoke_at: Duration::from_secs(4),
            workers: 32,
        }
    }
}

/// What the demo saw, and what the server counted.
#[derive(Debug)]
pub struct Summary {
    /// Requests sent through the layer.
    pub sent: u64,
    /// Requests that ended with HTTP 200.
    pub succeeded: u64,
    /// The layer's own counters.
    pub layer: Stats,
    /// The mock server's counters.
    pub server: Counts,
}

/// Runs the demo and returns its summary.
pub async fn run(plan: Plan) -> Result<Summary, tower::BoxError> {
    // 1. A Kero API on loopback, with short token lifetimes so the demo crosses several.
    let kero = MockKero::builder()
        .access_lifetime(plan.access_lifetime)
        .start()
        .await;
    let (name, password) = kero.credentials();

    // 2. The source that speaks /auth and /refresh, and the layer. Margins are scaled to
    //    lifetimes of seconds (the defaults suit Kero's 24 hours).
    let source = KeroTokenSource::builder(kero.base_url(), name, password)
        .region("us")
        .allow_insecure_loopback(true)
        .build()?;
    let layer = KeroAuthLayer::builder(source)
        .expiry_margin(Duration::from_secs(1))
        .refresh_window(plan.access_lifetime / 4)
        .build();

    // 3. A hyper-util client with the layer and a timeout: the only change to a plain client.
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .timeout(Duration::from_secs(10))
        .service(client);

    // 4. Workers send requests until the end; the server revokes every token half-way.
    let sent = Arc::new(AtomicU64::new(0));
    let succeeded = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..plan.workers)
        .map(|w| {
            let (svc, base) = (svc.clone(), kero.base_url());
            let (sent, succeeded) = (sent.clone(), succeeded.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while started.elapsed() < plan.run_for {
                    let req = Request::post(format!("{base}/us/orders/{w}-{i}"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(format!(
                            r#"{{"worker":{w},"n":{i}}}"#
                        ))))
                        .expect("a valid request");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Ok(res) = svc.clone().oneshot(req).await {
                        let ok = res.status() == StatusCode::OK;
                        if res.into_body().collect().await.is_ok() && ok {
                            succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep_until(started + plan.revoke_at).await;
    kero.revoke_all();
    for w in workers {
        w.await?;
    }
    Ok(Summary {
        sent: sent.load(Ordering::Relaxed),
        succeeded: succeeded.load(Ordering::Relaxed),
        layer: layer.stats(),
        server: kero.counts(),
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let plan = Plan::default();
    println!(
        "kero-auth quickstart: {} workers for {:?}, tokens living {:?}, every token revoked at {:?}",
        plan.workers, plan.run_for, plan.access_lifetime, plan.revoke_at
    );
    let s = run(plan).await?;
    println!("requests sent:        {}", s.sent);
    println!("requests succeeded:   {}", s.succeeded);
    println!("/auth calls:          {}", s.server.auth);
    println!("/refresh calls:       {}", s.server.refresh);
    println!("replays after 401:    {}", s.layer.replays);
    println!(
        "server saw:           {} protected calls, {} accepted, {} rejected (each rejection replayed once)",
        s.server.protected, s.server.protected_ok, s.server.protected_rejected
    );
    if s.succeeded != s.sent || s.layer.replays != s.server.protected_rejected {
        return Err("the summary does not match the server's counts".into());
    }
    Ok(())
}
