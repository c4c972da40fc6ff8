//! [`KeroAuth`]: the service that puts the token on every request.
//!
//! The hot path (token fresh) is: one atomic load, one clone of a header value this service clone
//! owns, the header insert, and the wrapping of the body for a possible replay. No lock, no clock
//! read, no allocation for a request without a body or headers of its own.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use tower_service::Service;

use crate::body::{ReplayBody, Replayable};
use crate::cache::{Acquire, Cache, SOFT, STALE};
use crate::future::ResponseFuture;
use crate::{BoxError, Stats};

/// The service produced by [`KeroAuthLayer`](crate::KeroAuthLayer): adds the token header to every
/// request, refreshes the token when it expires or when the server rejects it, and replays a
/// rejected request once.
///
/// Every clone shares the layer's token cache. Each clone keeps its own copy of the header value,
/// renewed when the token changes, so clones running on different threads do not contend.
pub struct KeroAuth<S> {
    inner: S,
    cache: Arc<Cache>,
    /// This clone's copy of the token header, and the generation it belongs to (0: none).
    local: Option<(u64, HeaderValue)>,
}

impl<S> KeroAuth<S> {
    pub(crate) fn new(inner: S, cache: Arc<Cache>) -> Self {
        KeroAuth { inner, cache, local: None }
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

    /// This clone's header for `generation`, made from the cache's current token if needed.
    #[inline]
    fn header_for(&mut self, generation: u64) -> Option<(u64, HeaderValue)> {
        match &self.local {
            Some((g, value)) if *g == generation => Some((*g, value.clone())),
            _ => {
                let current = self.cache.usable()?;
                let value = current.own_header();
                self.local = Some((current.generation, value.clone()));
                Some((current.generation, value))
            }
        }
    }
}

impl<S: Clone> Clone for KeroAuth<S> {
    fn clone(&self) -> Self {
        // The clone makes its own header copy on first use: see the type's docs.
        KeroAuth { inner: self.inner.clone(), cache: self.cache.clone(), local: None }
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

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let stamp = self.cache.stamp();
        let phase = Cache::phase(stamp);
        if phase != STALE {
            if let Some((generation, header)) = self.header_for(Cache::generation(stamp)) {
                if phase == SOFT && self.cache.claim_refresh(stamp) {
                    self.cache.refresh_in_background();
                }
                let (req, replay) = prepare(req, &self.cache, header, &self.inner);
                let fut = self.inner.call(req);
                return ResponseFuture::sending(fut, self.cache.clone(), generation, replay);
            }
        }
        match self.cache.obtain(0) {
            Acquire::Ready(current) => {
                let header = current.own_header();
                self.local = Some((current.generation, header.clone()));
                let (req, replay) = prepare(req, &self.cache, header, &self.inner);
                let fut = self.inner.call(req);
                ResponseFuture::sending(fut, self.cache.clone(), current.generation, replay)
            }
            Acquire::Wait(wait) => {
                // The inner service was made ready by `poll_ready`; take it into the future and
                // leave a clone in its place (see tower_service::Service's docs: "Be careful when
                // cloning inner services").
                let clone = self.inner.clone();
                let ready = mem::replace(&mut self.inner, clone);
                ResponseFuture::acquiring(wait, ready, req, self.cache.clone())
            }
            Acquire::Failed(error) => ResponseFuture::failed(error, self.cache.clone()),
        }
    }
}

/// What a replay needs: the request head as the caller sent it, the body, and a service to send
/// it with.
pub(crate) struct Replay<S> {
    head: Head,
    pub(crate) body: Replayable,
    pub(crate) svc: S,
}

/// The request head, saved before the token was added (a request without headers of its own
/// costs no allocation to save).
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl<S> Replay<S> {
    /// The request to replay, with the new token.
    pub(crate) fn into_request<B>(
        self,
        body: ReplayBody<B>,
        cache: &Cache,
        header: HeaderValue,
    ) -> (S, Request<ReplayBody<B>>) {
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method;
        *req.uri_mut() = self.head.uri;
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers;
        *req.extensions_mut() = self.head.extensions;
        req.headers_mut().insert(cache.config.header_name.clone(), header);
        (self.svc, req)
    }
}

/// Adds the token header, wraps the body, and saves what a replay would need.
pub(crate) fn prepare<S: Clone, B: Body>(
    req: Request<B>,
    cache: &Cache,
    header: HeaderValue,
    svc: &S,
) -> (Request<ReplayBody<B>>, Option<Replay<S>>) {
    let (mut parts, body) = req.into_parts();
    let (body, replayable) = ReplayBody::new(body, cache.config.replay_limit);
    let replay = replayable.map(|body| Replay {
        head: Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        },
        body,
        svc: svc.clone(),
    });
    parts.headers.insert(cache.config.header_name.clone(), header);
    (Request::from_parts(parts, body), replay)
}
