//! Heap allocations on the fresh-token hot path, counted by a global allocator.
//!
//! What is promised: a request without a body or headers of its own costs the layer no heap
//! allocation beyond what any header-adding layer needs (tower-http's `SetRequestHeader`, which
//! allocates the request's header map on the first insert). A request with a body pays for its
//! recording (so that it can be replayed after a 401), and that cost is a fixed number of
//! allocations for a given number of chunks, never one that grows with the number of requests.
//!
//! Only the measuring thread counts (a thread-local switch), so the other tests of this binary,
//! which run on other threads, do not disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{Empty, Full, StreamBody};
use kero_auth::{source, KeroAuthLayer, Token};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator is also called while thread-locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    /// A growth counts as an allocation: it is one (or a copy into one).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap allocations (and reallocations) made by this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const CALLS: u64 = 1_000;
const TOKEN_HEADER: HeaderName = HeaderName::from_static("token");

fn token() -> String {
    "eyJhbGciOiJIUzI1NiJ9.".repeat(30)[..600].to_owned()
}

/// The inner service: reads the request body to its end at once (every body here is ready),
/// as a client sending it would, and answers 200 with an empty body. Its future is `Ready`.
#[derive(Clone, Copy)]
struct Drain;

impl<B: Body + Unpin> Service<Request<B>> for Drain {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut body = req.into_body();
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => drop(frame),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(_))) => panic!("body error"),
                Poll::Pending => panic!("the body was not ready"),
            }
        }
        ready(Ok(Response::new(Empty::new())))
    }
}

/// `poll_ready`, `call`, and the future polled to completion without a runtime.
fn call_now<S, R>(svc: &mut S, req: R)
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(res) => drop(res.unwrap()),
        Poll::Pending => panic!("the future waited on the fresh-token path"),
    }
}

/// Allocations per call over `CALLS` calls (requests built beforehand, not counted); panics
/// unless every call made the same number.
fn per_call<S, B>(svc: &mut S, body: impl Fn() -> B) -> u64
where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..10 {
        call_now(svc, Request::new(body()));
    }
    let mut counts = Vec::with_capacity(CALLS as usize);
    let requests: Vec<_> = (0..CALLS).map(|_| Request::new(body())).collect();
    for req in requests {
        counts.push(allocations(|| call_now(svc, req)));
    }
    let first = counts[0];
    assert!(
        counts.iter().all(|&n| n == first),
        "allocations per call vary: {:?}",
        &counts[..20]
    );
    first
}

/// Allocations per call through the layer and through `SetRequestHeader` (the floor), both over
/// `Drain`, with the token fresh.
fn layer_and_floor<B>(body: impl Fn() -> B) -> (u64, u64)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<kero_auth::BoxError>,
{
    let mut value = HeaderValue::from_str(&token()).unwrap();
    value.set_sensitive(true);
    let mut floor = SetRequestHeaderLayer::overriding(TOKEN_HEADER, value).layer(Drain);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = KeroAuthLayer::new(source::from_fn(|_current: Option<Token>| async {
        Ok::<_, Infallible>(Token::expiring_in(
            token(),
            Duration::from_secs(24 * 3600),
            "refresh",
            Duration::from_secs(180 * 24 * 3600),
        ))
    }));
    let mut kero = layer.layer(Drain);
    // The first call fetches, inside the runtime; the rest run without one.
    rt.block_on(kero.clone().oneshot(Request::new(Empty::<Bytes>::new())))
        .unwrap();

    let floor_n = per_call(&mut floor, &body);
    let kero_n = per_call(&mut kero, &body);
    assert_eq!(layer.stats().fetches, 1, "the token stayed fresh");
    (kero_n, floor_n)
}

type Streamed = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A body of `chunks` chunks of 256 bytes, slices of one static buffer: cloning them allocates
/// nothing, so what is counted is the recording's own bookkeeping.
fn streamed(chunks: usize) -> impl Fn() -> Streamed {
    static DATA: [u8; 256 * 64] = [b'x'; 256 * 64];
    move || {
        let data = Bytes::from_static(&DATA);
        let frames: Vec<_> = (0..chunks)
            .map(|i| Ok(Frame::data(data.slice(i * 256..(i + 1) * 256))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }
}

#[test]
fn an_empty_request_costs_no_allocation_beyond_set_request_header() {
    let (kero, floor) = layer_and_floor(Empty::<Bytes>::new);
    println!("empty body: kero_auth {kero} allocations per call, SetRequestHeader {floor}");
    // The floor's allocations are the header map's (its index and its entries), made on the
    // first insert into a request without headers; the layer needs exactly those.
    assert_eq!(kero, floor);
}

#[test]
fn a_full_body_costs_its_recording_and_no_more() {
    let data = Bytes::from(vec![b'x'; 1024]);
    let (kero, floor) = layer_and_floor(|| Full::new(data.clone()));
    println!(
        "Full 1 KiB: kero_auth {kero} allocations per call, SetRequestHeader {floor}, extra {}",
        kero - floor
    );
    // One: the slot where the finished recording is published for the response future (an
    // `Arc<Mutex<Option<Recorded>>>`, made when the body is wrapped). The one chunk is kept
    // inline in the recording, and it is a clone of a shared `Bytes`: a reference count, no
    // allocation.
    assert_eq!(kero - floor, 1);
}

#[test]
fn a_streamed_body_costs_a_bounded_recording() {
    let mut extra = Vec::new();
    for chunks in [1, 4, 5, 16, 64] {
        let (kero, floor) = layer_and_floor(streamed(chunks));
        println!(
            "streamed, {chunks} chunks: kero_auth {kero} allocations per call, SetRequestHeader \
             {floor}, extra {}",
            kero - floor
        );
        extra.push((chunks, kero - floor));
    }
    // The slot (1). The first chunk is kept inline; the others go to a `VecDeque`, sized at the
    // second chunk: these bodies announce no length, so 16 slots are reserved (1). Up to 17
    // chunks, then, 2 allocations; past that the deque grows by doubling (32, 64: one more
    // each). The count depends on the number of chunks, never on the bytes (chunks are shared,
    // not copied), and is capped by the replay limit (64 KiB), past which the recording is
    // dropped.
    assert_eq!(extra, [(1, 1), (4, 2), (5, 2), (16, 2), (64, 4)]);
}

#[test]
fn owned_chunks_cost_one_more_allocation_each() {
    // Chunks made from a `Vec<u8>` (`Bytes::from(vec)`) are not yet shared: the first clone of
    // each (the recorder's) turns it into a shared buffer, which allocates its reference count.
    // That is `bytes`'s design, not the layer's, but it is what a caller sees.
    let body = || {
        let frames: Vec<_> = (0..16)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 256]))))
            .collect::<Vec<Result<_, Infallible>>>();
        StreamBody::new(stream::iter(frames))
    };
    let (kero, floor) = layer_and_floor(body);
    println!(
        "streamed, 16 owned chunks: kero_auth {kero} allocations per call, SetRequestHeader \
         {floor}, extra {}",
        kero - floor
    );
    // As for 16 shared chunks (2), plus one per chunk (16).
    assert_eq!(kero - floor, 2 + 16);
}
