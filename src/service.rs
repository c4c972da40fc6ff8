//! [`KeroAuth`]: the service that puts the token on every request.
//!
//! The hot path (token fresh) is: one atomic load (the cache's stamp), one clone each of a header
//! value and a reference to state that this service clone owns, the header insert, a copy of the
//! request head for a possible replay, and the wrapping of the body. No lock, no clock read, no
//! write to memory shared with other clones, no allocation for a request without a body or
//! headers of its own. What it costs, and why, is measured in `benches/` (see the README).

use std::fmt;
use std::mem;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version,
};
use http_body::Body;
use tower_service::Service;

use crate::body::{ReplayBody, Replayable};
use crate::cache::{Acquire, Cache, ColdTail, Current, STALE};
use crate::future::{ResponseFuture, State};
use crate::{BoxError, Stats, DEFAULT_HEADER};

/// The service produced by [`KeroAuthLayer`](crate::KeroAuthLayer): adds the token header to every
/// request, refreshes the token when it expires or when the server rejects it, and replays a
/// rejected request once.
///
/// Every clone shares the layer's token cache. Each clone keeps, per token generation, its own
/// copy of the header value and its own clone of the inner service for replays, so that clones
/// running on different threads write to no shared memory per request. A clone makes that copy on
/// its first request (one allocation, and one clone of the inner service); a service cloned for
/// every request pays it every time, which is still cheaper than a lock.
pub struct KeroAuth<S> {
    inner: S,
    cache: Arc<Cache>,
    local: Option<Arc<Local<S>>>,
}

/// One clone's view of one token generation: what the hot path hands to each request's future.
/// It ends in a [`ColdTail`] (`repr(C)`: fields in this order), so that its reference count,
/// written by every request of this clone, shares no cache line with another clone's state.
#[repr(C)]
pub(crate) struct Local<S> {
    pub(crate) cache: Arc<Cache>,
    pub(crate) generation: u64,
    /// This clone's copy of the header name (see [`own_name`]).
    name: HeaderName,
    header: HeaderValue,
    /// A clone of the inner service, not yet ready, from which replays are made: a replay is rare,
    /// so the inner service is cloned then, not for every request.
    replayer: Mutex<S>,
    _tail: ColdTail,
}

impl<S: Clone> Local<S> {
    pub(crate) fn new(cache: Arc<Cache>, generation: u64, header: HeaderValue, svc: &S) -> Self {
        Local {
            name: own_name(&cache.config.header_name),
            cache,
            generation,
            header,
            replayer: Mutex::new(svc.clone()),
            _tail: ColdTail::new(),
        }
    }

    /// A service to replay on (to be made ready first).
    pub(crate) fn replayer(&self) -> S {
        self.replayer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<S> KeroAuth<S> {
    pub(crate) fn new(inner: S, cache: Arc<Cache>) -> Self {
        KeroAuth {
            inner,
            cache,
            local: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Counters of the shared token cache.
    pub fn stats(&self) -> Stats {
        Stats::of(&self.cache)
    }
}

impl<S: Clone> KeroAuth<S> {
    /// Makes and keeps this clone's view of `current`.
    fn install(&mut self, current: &Current) -> Arc<Local<S>> {
        let local = Arc::new(Local::new(
            self.cache.clone(),
            current.generation,
            current.own_header(),
            &self.inner,
        ));
        self.local = Some(local.clone());
        local
    }
}

impl<S: Clone> Clone for KeroAuth<S> {
    fn clone(&self) -> Self {
        // The clone makes its own `Local` on first use: see the type's docs.
        KeroAuth {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            local: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for KeroAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeroAuth")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for KeroAuth<S>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: Body,
    ResB: Body,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let stamp = self.cache.stamp();
        if Cache::phase(stamp) != STALE {
            if let Some(local) = &self.local {
                if local.generation == Cache::generation(stamp) {
                    let local = local.clone();
                    self.cache.refresh_if_due(stamp);
                    return send(&mut self.inner, local, req);
                }
            }
        }
        self.call_slow(req, stamp)
    }
}

impl<S: Clone> KeroAuth<S> {
    /// `call` when this clone has no view of a usable token (its first request, a new
    /// generation, or the token is stale): ask the cache, and wait for a fetch if needed.
    #[inline(never)]
    fn call_slow<ReqB, ResB>(
        &mut self,
        req: Request<ReqB>,
        stamp: u64,
    ) -> ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
        ReqB: Body,
    {
        match self.cache.obtain(0) {
            Acquire::Ready(current) => {
                // A clone's first request may be the one to see the refresh window open (with a
                // clone per request, it always is).
                self.cache.refresh_if_due(stamp);
                let local = self.install(&current);
                send(&mut self.inner, local, req)
            }
            Acquire::Wait(wait) => {
                // The inner service was made ready by `poll_ready`; take it into the future and
                // leave a clone in its place (see tower_service::Service's docs: "Be careful when
                // cloning inner services").
                let clone = self.inner.clone();
                let ready = mem::replace(&mut self.inner, clone);
                ResponseFuture::acquiring(wait, ready, req, self.cache.clone())
            }
            Acquire::Failed(error) => ResponseFuture::failed(error),
        }
    }
}

/// A copy of `name` with no reference count shared with other copies.
///
/// A custom header name made at run time (`HeaderName::from_bytes`, `parse`) holds its bytes in
/// a shared buffer: every clone, on every request, would write that buffer's reference count, one
/// cache line for all threads. A static name (the default) and a standard one (`authorization`)
/// have no count and are kept as they are.
fn own_name(name: &HeaderName) -> HeaderName {
    if *name == DEFAULT_HEADER {
        return DEFAULT_HEADER;
    }
    HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone())
}

/// What a replay needs: the request head as the caller sent it, and the body.
pub(crate) struct Replay {
    head: Head,
    pub(crate) body: Replayable,
}

/// The request head, saved before the token was added (a request without headers of its own
/// costs no allocation to save).
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    /// `None` for a request without headers of its own: nothing to make, nothing to drop.
    headers: Option<HeaderMap>,
    extensions: Extensions,
}

impl Head {
    #[inline(always)]
    fn of<B>(req: &Request<B>) -> Self {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: (!req.headers().is_empty()).then(|| req.headers().clone()),
            extensions: req.extensions().clone(),
        }
    }
}

impl Replay {
    /// The request to replay, with the new token.
    pub(crate) fn into_request<B>(
        self,
        body: ReplayBody<B>,
        cache: &Cache,
        header: HeaderValue,
    ) -> Request<ReplayBody<B>> {
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method;
        *req.uri_mut() = self.head.uri;
        *req.version_mut() = self.head.version;
        if let Some(headers) = self.head.headers {
            *req.headers_mut() = headers;
        }
        *req.extensions_mut() = self.head.extensions;
        req.headers_mut()
            .insert(cache.config.header_name.clone(), header);
        req
    }
}

/// Sends a request with `local`'s token on `svc` (made ready): saves the head if the body can be
/// replayed, adds the token header, wraps the body, calls. The one way a request is first sent.
///
/// The future is built in one expression, field by field in this order, so that the saved head
/// and the inner future are written where they stay (the request and the future are over 200
/// bytes each; every move is a `memcpy`).
#[inline(always)]
pub(crate) fn send<S, ReqB, ResB>(
    svc: &mut S,
    local: Arc<Local<S>>,
    mut req: Request<ReqB>,
) -> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body,
{
    let header = local.header.clone();
    let name = local.name.clone();
    let (tape, replayable) = ReplayBody::plan(req.body(), local.cache.config.replay_limit);
    ResponseFuture {
        replay: replayable.map(|body| Replay {
            head: Head::of(&req),
            body,
        }),
        local: Some(local),
        state: State::Sending {
            fut: {
                req.headers_mut().insert(name, header);
                svc.call(req.map(|body| ReplayBody::streaming(body, tape)))
            },
        },
    }
}
