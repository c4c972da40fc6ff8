//! [`ResponseFuture`]: one request's way through the layer.
//!
//! ```text
//!   acquiring ──► sending ──► (auth failure, replayable) ──► renewing ──► readying ──► replaying
//!       │            │                                          │
//!       ▼            └──► response (not an auth failure, or not replayable: returned as is)
//!    failed                                                     └──► error (no new token)
//! ```
//! The future never fetches by itself: it asks the cache, which runs the fetch in a task of its
//! own. Dropping the future at any point cancels nothing but this request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ReplayBody;
use crate::cache::{Acquire, Cache, TokenWait};
use crate::error::Error;
use crate::service::{send, Local, Replay};
use crate::BoxError;

/// How many bytes of a rejected response's body are read (and thrown away) before the replay, so
/// that an HTTP/1 connection can be reused. Past this, the body is dropped.
const DRAIN_LIMIT: usize = 64 * 1024;

pin_project! {
    /// The future of [`KeroAuth`](crate::KeroAuth). A named state machine; nothing is boxed while
    /// the token is fresh.
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReplayBody<ReqB>>>,
    {
        #[pin]
        pub(crate) state: State<S, ReqB, ResB>,
        // The token generation the request was sent with, and the cache it came from.
        pub(crate) local: Option<Arc<Local<S>>>,
        pub(crate) replay: Option<Replay>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<S, ReqB, ResB>
    where
        S: Service<Request<ReplayBody<ReqB>>>,
    {
        // Waiting for a token before the first send. Boxed, as every state off the fresh-token
        // path is: the future stays small, so that making it and moving it cost little.
        Acquiring {
            acquiring: Box<Acquiring<S, ReqB>>,
        },
        // No token could be had.
        Failed {
            error: Option<Error>,
        },
        // The first send.
        Sending {
            #[pin]
            fut: S::Future,
        },
        // Rejected: draining the rejection's body while the new token is fetched.
        Renewing {
            renewal: Pin<Box<Renewal<ReqB, ResB>>>,
        },
        // Waiting for the inner service to be ready for the replay.
        Readying {
            replay: Box<(Option<S>, Option<Request<ReplayBody<ReqB>>>)>,
        },
        // The replay: its response goes back to the caller whatever it is.
        Replaying {
            #[pin]
            fut: S::Future,
        },
    }
}

pin_project! {
    /// A rejected request: the rejection's body being drained, the new token being fetched.
    #[project = RenewalProj]
    struct Renewal<ReqB, ResB> {
        #[pin]
        rejected: Option<ResB>,
        drained: usize,
        token: Option<Acquire>,
        body: Option<ReplayBody<ReqB>>,
    }
}

/// A request waiting for its first token, with the service it was made ready on.
struct Acquiring<S, ReqB> {
    wait: TokenWait,
    svc: Option<S>,
    req: Option<Request<ReqB>>,
    cache: Arc<Cache>,
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>>,
{
    pub(crate) fn acquiring(
        wait: TokenWait,
        svc: S,
        req: Request<ReqB>,
        cache: Arc<Cache>,
    ) -> Self {
        ResponseFuture {
            state: State::Acquiring {
                acquiring: Box::new(Acquiring {
                    wait,
                    svc: Some(svc),
                    req: Some(req),
                    cache,
                }),
            },
            local: None,
            replay: None,
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            local: None,
            replay: None,
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: Body,
    ResB: Body,
{
    type Output = Result<Response<ResB>, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The one state a request with a fresh token sees, kept apart from the others so that it
        // compiles to a small function.
        let this = self.as_mut().project();
        if let StateProj::Sending { fut } = this.state.project() {
            let res = ready!(fut.poll(cx)).map_err(Into::into)?;
            if !is_auth_failure(this.local, &res) {
                return Poll::Ready(Ok(res));
            }
            return self.rejected(res, cx);
        }
        self.drive(cx)
    }
}

/// Whether `res` says the token it was sent with was not accepted.
#[inline]
fn is_auth_failure<S, ResB>(local: &Option<Arc<Local<S>>>, res: &Response<ResB>) -> bool {
    local.as_ref().is_some_and(|local| {
        local
            .cache
            .config
            .classifier
            .is_auth_failure(res.status(), res.headers())
    })
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ReqB: Body,
    ResB: Body,
{
    /// The first send was rejected: renew the token and replay, or give the rejection back.
    #[cold]
    #[inline(never)]
    fn rejected(
        mut self: Pin<&mut Self>,
        res: Response<ResB>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResB>, BoxError>> {
        match self.as_mut().on_rejection(res) {
            Some(done) => done,
            None => self.drive(cx),
        }
    }

    /// Moves to renewing if the request can be replayed (`None`); else the rejection goes back
    /// to the caller as is, and the requests that follow get a new token.
    fn on_rejection(
        self: Pin<&mut Self>,
        res: Response<ResB>,
    ) -> Option<Poll<Result<Response<ResB>, BoxError>>> {
        let mut this = self.project();
        let Some(local) = this.local.as_ref() else {
            return Some(Poll::Ready(Ok(res)));
        };
        let (cache, generation) = (&local.cache, local.generation);
        let Some(body) = this.replay.as_ref().and_then(|r| r.body.take()) else {
            let _ = cache.obtain(generation);
            return Some(Poll::Ready(Ok(res)));
        };
        tracing::debug!(
            generation,
            "kero-auth: request rejected, renewing the token"
        );
        let token = cache.obtain(generation);
        this.state.set(State::Renewing {
            renewal: Box::pin(Renewal {
                rejected: Some(res.into_body()),
                drained: 0,
                token: Some(token),
                body: Some(body),
            }),
        });
        None
    }

    /// Every state but a first send in progress: waiting for a token, renewing, replaying.
    #[inline(never)]
    fn drive(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResB>, BoxError>> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Acquiring { acquiring } => {
                    let Acquiring {
                        wait,
                        svc,
                        req,
                        cache,
                    } = &mut **acquiring;
                    let current = ready!(wait.as_mut().poll(cx))?;
                    let (Some(mut svc), Some(req)) = (svc.take(), req.take()) else {
                        return Poll::Ready(Err(Error::FetchAborted.into()));
                    };
                    let local = Arc::new(Local::new(
                        cache.clone(),
                        current.generation,
                        current.header.clone(),
                        &svc,
                    ));
                    self.set(send(&mut svc, local, req));
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or(Error::FetchAborted);
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Sending { fut } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if !is_auth_failure(this.local, &res) {
                        return Poll::Ready(Ok(res));
                    }
                    if let Some(done) = self.as_mut().on_rejection(res) {
                        return done;
                    }
                }
                StateProj::Renewing { renewal } => {
                    let RenewalProj {
                        mut rejected,
                        drained,
                        token,
                        body,
                    } = renewal.as_mut().project();
                    while let Some(body) = rejected.as_mut().as_pin_mut() {
                        match body.poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                *drained += frame.data_ref().map_or(0, bytes::Buf::remaining);
                                if *drained > DRAIN_LIMIT {
                                    rejected.set(None);
                                }
                            }
                            Poll::Ready(_) => rejected.set(None),
                            Poll::Pending => break,
                        }
                    }
                    let current = match token {
                        Some(Acquire::Ready(current)) => current.clone(),
                        Some(Acquire::Wait(wait)) => ready!(wait.as_mut().poll(cx))?,
                        Some(Acquire::Failed(error)) => {
                            return Poll::Ready(Err(error.clone().into()))
                        }
                        None => return Poll::Ready(Err(Error::FetchAborted.into())),
                    };
                    if rejected.is_some() {
                        // Token in hand; the drain is still pending and will wake us.
                        *token = Some(Acquire::Ready(current));
                        return Poll::Pending;
                    }
                    let (Some(replay), Some(body), Some(local)) =
                        (this.replay.take(), body.take(), this.local.as_ref())
                    else {
                        return Poll::Ready(Err(Error::FetchAborted.into()));
                    };
                    local.cache.counters.replays.fetch_add(1, Ordering::Relaxed);
                    let req = replay.into_request(body, &local.cache, current.header.clone());
                    let svc = local.replayer();
                    this.state.set(State::Readying {
                        replay: Box::new((Some(svc), Some(req))),
                    });
                }
                StateProj::Readying { replay } => {
                    let (svc, req) = &mut **replay;
                    let Some(s) = svc.as_mut() else {
                        return Poll::Ready(Err(Error::FetchAborted.into()));
                    };
                    ready!(s.poll_ready(cx)).map_err(Into::into)?;
                    let (Some(mut s), Some(req)) = (svc.take(), req.take()) else {
                        return Poll::Ready(Err(Error::FetchAborted.into()));
                    };
                    let fut = s.call(req);
                    this.state.set(State::Replaying { fut });
                }
                StateProj::Replaying { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

impl<S, ReqB, ResB> fmt::Debug for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReplayBody<ReqB>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Failed { .. } => "failed",
            State::Sending { .. } => "sending",
            State::Renewing { .. } => "renewing",
            State::Readying { .. } => "readying",
            State::Replaying { .. } => "replaying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("generation", &self.local.as_ref().map(|l| l.generation))
            .finish_non_exhaustive()
    }
}
