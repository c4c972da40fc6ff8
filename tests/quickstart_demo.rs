//! The quickstart example's logic, run as a test: its summary must match the server's counts.
#![cfg(feature = "mock")]

#[path = "../examples/quickstart.rs"]
mod quickstart;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_summary_matches_the_servers_counts() {
    let plan = quickstart::Plan {
        access_lifetime: Duration::from_secs(2),
        run_for: Duration::from_millis(4_500),
        revoke_at: Duration::from_millis(2_500),
        workers: 16,
    };
    let s = quickstart::run(plan).await.unwrap();
    assert!(s.sent > 100, "{s:?}");
    assert_eq!(s.succeeded, s.sent, "every request succeeded: {s:?}");
    assert_eq!(s.server.protected_ok, s.sent, "{s:?}");
    assert_eq!(s.server.protected, s.sent + s.layer.replays, "{s:?}");
    assert_eq!(s.layer.replays, s.server.protected_rejected, "{s:?}");
    assert!(s.layer.replays >= 1, "the revocation caused replays: {s:?}");
    // One /auth at the start, one after the revocation (the revoked refresh token is refused);
    // a /refresh per lifetime crossed (and the refused one).
    assert_eq!(s.server.auth, 2, "{s:?}");
    assert!(s.server.refresh >= 2, "{s:?}");
    assert_eq!(
        s.layer.fetches,
        s.server.auth + s.server.refresh - 1,
        "{s:?}"
    );
}
