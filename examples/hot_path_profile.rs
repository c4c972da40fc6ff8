//! A harness for profiling the fresh-token hot path with `valgrind --tool=callgrind` or `perf`,
//! where criterion's own machinery would drown the few hundred instructions looked at.
//!
//! ```text
//! cargo build --release --example hot_path_profile
//! # instructions per call: run twice and subtract (set-up is the same in both runs)
//! valgrind --tool=callgrind target/release/examples/hot_path_profile kero 1000
//! valgrind --tool=callgrind target/release/examples/hot_path_profile kero 11000
//! # quick interleaved timing of the three variants
//! target/release/examples/hot_path_profile time 100000
//! # 1 → 2 threads, interleaved round by round: per-call slowdown of each variant
//! target/release/examples/hot_path_profile scale 1000000
//! ```
//!
//! Variants: `floor` (tower-http's `SetRequestHeader`, same 600-byte sensitive value), `wrap`
//! (the floor plus a body wrapper and a status check, the benches' `wrap_body_check_status`), `kero`
//! (the layer, defaults), `bare` (the layer with replay disabled), `time` (all three, interleaved),
//! `scale` (no layer, floor and layer: two clones made and warmed one after the other on the main
//! thread, as a server makes them, then run on one thread and on two, in turn).

#[path = "../benches/support/mod.rs"]
mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use support::*;
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

/// `n` requests with an empty body, one after the other, without a runtime.
#[inline(never)]
fn run<S: Service<Request<Empty<Bytes>>>>(svc: &mut S, n: u32)
where
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        call_now(svc, Request::new(Empty::new()));
    }
}

/// Nanoseconds per request over `n` requests.
fn time<S: Service<Request<Empty<Bytes>>>>(svc: &mut S, n: u32) -> f64
where
    S::Error: std::fmt::Debug,
{
    per_call(svc, u64::from(n))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(which), Some(n)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: hot_path_profile floor|wrap|kero|bare|time|scale <requests>");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A service of the layer, its token fetched and this clone's copy of it made.
    let warmed = |replay: bool| {
        let layer = if replay {
            fresh_layer()
        } else {
            fresh_layer_builder().replay_limit(0).build()
        };
        let mut svc = layer.layer(Noop);
        rt.block_on(svc.clone().oneshot(Request::new(Empty::<Bytes>::new())))
            .unwrap();
        call_now(&mut svc, Request::new(Empty::<Bytes>::new()));
        svc
    };
    let mut floor = SetRequestHeaderLayer::overriding(TOKEN_HEADER, sensitive_value()).layer(Noop);
    match which.as_str() {
        "floor" => run(&mut floor, n),
        "wrap" => run(&mut WrapLayer::new(sensitive_value()).layer(Noop), n),
        "kero" => run(&mut warmed(true), n),
        "kclone" => {
            let svc = warmed(true);
            for _ in 0..n {
                call_now(&mut svc.clone(), Request::new(Empty::<Bytes>::new()));
            }
        }
        "fclone" => {
            for _ in 0..n {
                call_now(&mut floor.clone(), Request::new(Empty::<Bytes>::new()));
            }
        }
        "bare" => run(&mut warmed(false), n),
        "time" => {
            let (mut kero, mut bare) = (warmed(true), warmed(false));
            let mut t = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..31 {
                t[0].push(time(&mut floor, n));
                t[1].push(time(&mut kero, n));
                t[2].push(time(&mut bare, n));
            }
            let m = t.map(median);
            println!(
                "floor {:.1} ns, kero {:.1} ns ({:.3}×), bare {:.1} ns ({:.3}×)",
                m[0],
                m[1],
                m[1] / m[0],
                m[2],
                m[2] / m[0]
            );
        }
        "scale" => {
            let mut floor2 = [floor.clone(), floor.clone()];
            let (a, b) = (warmed(true), warmed(true));
            let mut kero2 = [a.clone(), b.clone()];
            // `a` and `b` made their copies when warmed; their clones make theirs now, in turn.
            for s in kero2.iter_mut() {
                call_now(s, Request::new(Empty::<Bytes>::new()));
            }
            let mut noop2 = [Noop, Noop];
            let mut r = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..21 {
                r[0].push(thread_slowdown(&mut noop2, n.into()));
                r[1].push(thread_slowdown(&mut floor2, n.into()));
                r[2].push(thread_slowdown(&mut kero2, n.into()));
            }
            let m = r.map(median);
            println!(
                "1 → 2 threads, per call: no layer {:.3}×, floor {:.3}×, kero {:.3}×",
                m[0], m[1], m[2]
            );
        }
        other => panic!("unknown variant {other}"),
    }
}
