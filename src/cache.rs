//! The single-flight token cache: the one place that decides when to fetch.
//!
//! What it promises (the README's "What we promise" says it for users):
//! - At most one fetch in flight. Requests that need a token while it runs wait on it; a request
//!   that was rejected with generation `g` asks for a token *newer than `g`*, so N rejections of
//!   the same token cause one fetch, and a rejection of a token already superseded causes none.
//! - The fetch runs in a task of its own under its own timeout: dropping the request that started
//!   it cancels nothing. The task holds only a weak reference to the cache, and the cache aborts
//!   its tasks when the last layer or service is dropped, so nothing outlives the layer.
//! - A request waits for a fetch at most the fetch timeout and a second: a fetch that has not
//!   ended by then is not running (its runtime is no longer driven), and is forgotten, so that
//!   the next request fetches on a runtime that runs.
//! - A failure is delivered to every waiter and then backed off (exponential, jittered); during
//!   the backoff a request that needs a fetch fails at once with the last error. A failure never
//!   evicts a token that is still valid.
//! - Deadlines are monotonic `tokio::time::Instant`s, computed from the token's lifetime as the
//!   server's clock measured it.
//!
//! The request path never takes the lock while the token is fresh: it loads one atomic word, the
//! *stamp* (`generation << 2 | phase`), which is only written when the token or its phase changes.
//! Phases move forward on timers (fresh → soft → stale), so no request reads a clock.
//! The lock guards the slow path only and is never held across an `.await`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::{Error, InvalidToken, SourceError};
use crate::{AuthFailureClassifier, Token, TokenSource};

/// The token may be used; nothing to do.
pub(crate) const FRESH: u64 = 0;
/// The token may be used, and a background refresh is due: the first request to see it starts one.
pub(crate) const SOFT: u64 = 1;
/// The token may be used; a background refresh is running or backing off.
pub(crate) const REFRESHING: u64 = 2;
/// There is no usable token: requests must go through the slow path.
pub(crate) const STALE: u64 = 3;
const PHASE: u64 = 3;

/// The longest a token is used, or a backoff lasts, from now: ten years. A server's expiry may be
/// anything up to `i64::MAX` seconds, which no `Instant` can hold.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);

/// How much longer than the fetch timeout a request waits for a fetch before it takes the
/// fetch's task for not running (see `Cache::wait`).
const WAIT_GRACE: Duration = Duration::from_secs(1);

/// Everything the layer was configured with.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) header_name: HeaderName,
    pub(crate) expiry_margin: Duration,
    pub(crate) refresh_window: Duration,
    pub(crate) replay_limit: usize,
    pub(crate) classifier: AuthFailureClassifier,
    pub(crate) fetch_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

/// A token the cache has accepted, with what the request path needs of it.
pub(crate) struct Current {
    pub(crate) generation: u64,
    pub(crate) token: Arc<Token>,
    /// The header value, built once, marked sensitive.
    pub(crate) header: HeaderValue,
    /// The token's bytes, from which each service clone makes a header value of its own (so that
    /// clones on different threads never write to one shared reference count).
    bytes: Arc<[u8]>,
    /// When a background refresh becomes due (jittered).
    soft_at: Instant,
    /// When the token stops being used (its expiry minus the margin).
    pub(crate) stale_at: Instant,
}

impl Current {
    fn accept(token: Token, generation: u64, now: Instant, config: &Config) -> Result<Self, Error> {
        if !crate::token::is_header_safe(token.auth_token()) {
            return Err(Error::InvalidToken(InvalidToken::NotHeaderSafe));
        }
        let usable = token
            .access_remaining()
            .and_then(|left| left.checked_sub(config.expiry_margin))
            .filter(|d| !d.is_zero())
            .ok_or(Error::InvalidToken(InvalidToken::Expired))?
            // An expiry beyond any clock (the server's answer is bad input) is not a panic.
            .min(LONGEST);
        let mut header = HeaderValue::from_str(token.auth_token())
            .map_err(|_| Error::InvalidToken(InvalidToken::NotHeaderSafe))?;
        header.set_sensitive(true);
        let stale_at = now + usable;
        // The refresh starts somewhere in the second half of the window before staleness, so that
        // many processes started together do not refresh together.
        let window = config.refresh_window.min(usable / 2);
        let soft_at = stale_at - window.mul_f64(1.0 - fastrand::f64() * 0.5);
        Ok(Current {
            generation,
            bytes: Arc::from(token.auth_token().as_bytes()),
            token: Arc::new(token),
            header,
            soft_at,
            stale_at,
        })
    }

    /// A header value with its own reference count, for one service clone. The count's
    /// allocation ends in a [`ColdTail`].
    pub(crate) fn own_header(&self) -> HeaderValue {
        let owner = Tailed {
            bytes: self.bytes.clone(),
            _tail: ColdTail::new(),
        };
        let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(owner))
            .unwrap_or_else(|_| self.header.clone());
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current")
            .field("generation", &self.generation)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// 128 bytes that nothing reads or writes, at the end of each allocation a service clone writes
/// on every request (its state, `Local`, and its header value's owner: both begin with the
/// reference count the request path increments).
///
/// Clones are often made one after the other on one thread (as a server makes them) and then
/// run on different threads; their allocations sit side by side, and without this one clone's
/// count would share a cache line (or the pair of lines fetched together) with the last fields
/// of the other's state, which that one reads on every request: false sharing. With it, what
/// follows an allocation of ours is 128 cold bytes away from anything we touch. (Aligning the
/// allocations to 128 bytes does the same, but an aligned allocation costs ~600 instructions
/// more in glibc, paid again by every service clone's first request.)
#[derive(Clone, Copy)]
pub(crate) struct ColdTail {
    _cold: std::mem::MaybeUninit<[u8; 128]>,
}

impl ColdTail {
    pub(crate) const fn new() -> Self {
        ColdTail {
            _cold: std::mem::MaybeUninit::uninit(),
        }
    }
}

/// A header value's owner: the token's bytes, then a [`ColdTail`] (`repr(C)`: in that order).
#[repr(C)]
struct Tailed {
    bytes: Arc<[u8]>,
    _tail: ColdTail,
}

impl AsRef<[u8]> for Tailed {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

type Outcome = Result<Arc<Current>, Error>;

/// Counters, for tests, demos and metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fetches: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) replays: AtomicU64,
}

pub(crate) struct Cache {
    stamp: AtomicU64,
    state: Mutex<State>,
    source: Arc<dyn TokenSource>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
}

#[derive(Default)]
struct State {
    current: Option<Arc<Current>>,
    generation: u64,
    flight: Option<Flight>,
    failure: Option<Failure>,
    timer: Option<AbortHandle>,
    next_flight: u64,
    /// The newest generation the server rejected.
    rejected: u64,
}

struct Flight {
    id: u64,
    slot: Arc<Slot>,
    task: AbortHandle,
}

impl State {
    /// The fetch in flight, if its task is still alive. A task the runtime dropped without running
    /// it to the end (shutdown) never completes: forget it, so that the next request fetches anew.
    fn live_flight(&mut self) -> Option<&Flight> {
        if self.flight.as_ref().is_some_and(|f| f.task.is_finished()) {
            self.flight = None;
        }
        self.flight.as_ref()
    }
}

struct Failure {
    error: Error,
    attempts: u32,
    retry_at: Instant,
}

/// What a request gets when it asks for a token on the slow path.
pub(crate) enum Acquire {
    /// A usable token, at once.
    Ready(Arc<Current>),
    /// A fetch is running; wait for it.
    Wait(TokenWait),
    /// No token, and no fetch may start now (backing off after this error).
    Failed(Error),
}

/// Waiting for the fetch in flight.
pub(crate) type TokenWait = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl Cache {
    pub(crate) fn new(source: Arc<dyn TokenSource>, config: Config) -> Self {
        Cache {
            stamp: AtomicU64::new(STALE),
            state: Mutex::default(),
            source,
            config,
            counters: Counters::default(),
        }
    }

    /// The stamp: `generation << 2 | phase`. One atomic load, the whole of the hot path's check.
    #[inline]
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn phase(stamp: u64) -> u64 {
        stamp & PHASE
    }

    #[inline]
    pub(crate) fn generation(stamp: u64) -> u64 {
        stamp >> 2
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that runs under the lock can panic halfway through an update; a poisoned lock
        // is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current token, usable or not (for `Debug` and stats).
    pub(crate) fn current_token(&self) -> Option<Arc<Token>> {
        self.lock().current.as_ref().map(|c| c.token.clone())
    }

    /// A usable token newer than generation `after`, fetching one if needed.
    ///
    /// `after == 0` asks for any usable token. `after == g > 0` says the server rejected
    /// generation `g`: if `g` is still the current token, it is marked rejected (so requests that
    /// follow wait for its successor rather than be rejected in turn) and one fetch starts; if a
    /// newer token exists already, it is returned and nothing is fetched.
    pub(crate) fn obtain(self: &Arc<Self>, after: u64) -> Acquire {
        let now = Instant::now();
        let mut st = self.lock();
        let backing_off = st.failure.as_ref().is_some_and(|f| now < f.retry_at);
        let in_flight = st.live_flight().is_some();
        if let Some(cur) = st.current.clone() {
            if after > 0 && cur.generation == after && st.rejected < after {
                st.rejected = after;
                self.step(after, Step::Rejected);
            }
            if cur.generation > after && now < cur.stale_at {
                // A rejected token is still served while no successor can be had: the rejection
                // may have been the server's mistake, and it is all there is.
                if cur.generation > st.rejected || (!in_flight && backing_off) {
                    return Acquire::Ready(cur);
                }
            }
        }
        if let Some(flight) = st.flight.as_ref() {
            return Acquire::Wait(self.wait(flight.id, flight.slot.clone()));
        }
        if backing_off {
            if let Some(failure) = st.failure.as_ref() {
                return Acquire::Failed(failure.error.clone());
            }
        }
        match self.start_fetch(&mut st) {
            Ok((id, slot)) => Acquire::Wait(self.wait(id, slot)),
            Err(e) => Acquire::Failed(e),
        }
    }

    /// Called by the one request that moved the phase from soft to refreshing: start the
    /// background refresh, unless a fetch is already running or the cache is backing off.
    pub(crate) fn refresh_in_background(self: &Arc<Self>) {
        let now = Instant::now();
        let mut st = self.lock();
        if st.live_flight().is_some() {
            return; // its completion moves the phase on
        }
        if let Some(retry_at) = st.failure.as_ref().map(|f| f.retry_at).filter(|&t| now < t) {
            self.schedule_retry(&mut st, retry_at);
            return;
        }
        // Without a runtime there is nothing to run it on; the token is still usable, and
        // the request that finds it stale will report the error.
        let _ = self.start_fetch(&mut st);
    }

    /// Starts the background refresh if `stamp` (read by this request) says it is due and no
    /// other request has claimed it.
    #[inline]
    pub(crate) fn refresh_if_due(self: &Arc<Self>, stamp: u64) {
        if Self::phase(stamp) == SOFT && self.claim_refresh(stamp) {
            self.refresh_in_background();
        }
    }

    /// Moves the phase from soft to refreshing; true for the one caller that wins.
    #[inline]
    fn claim_refresh(&self, stamp: u64) -> bool {
        self.stamp
            .compare_exchange(
                stamp,
                stamp - SOFT + REFRESHING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn start_fetch(self: &Arc<Self>, st: &mut State) -> Result<(u64, Arc<Slot>), Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let slot = Arc::new(Slot::default());
        let tx = Publisher(slot.clone());
        st.next_flight += 1;
        let id = st.next_flight;
        let previous = st.current.as_ref().map(|c| c.token.clone());
        let source = self.source.clone();
        let timeout = self.config.fetch_timeout;
        let weak = Arc::downgrade(self);
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            flight = id,
            refresh = previous.is_some(),
            "kero-auth: fetching a token"
        );
        // The guard is made inside the task: a runtime that is shutting down drops a new task
        // at once, on this thread, while the lock is held; there must be nothing to complete then.
        // (The `Publisher` the task holds is dropped then, under the lock: it takes no lock of
        // the cache's, and the slot has no waiters yet.) Once the token is in, the same task
        // stays on as the token's timer (one task per token, not two: see `set_timer`).
        let task = handle.spawn(async move {
            let guard = FlightGuard {
                cache: weak.clone(),
                id,
                tx: Some(tx),
            };
            let fetched = tokio::time::timeout(timeout, source.fetch(previous.as_deref())).await;
            // Not kept while the task serves as the timer.
            drop((source, previous));
            let result = match fetched {
                Ok(Ok(token)) => Ok(token),
                Ok(Err(e)) => Err(Error::Source(SourceError::new(e))),
                Err(_) => Err(Error::FetchTimeout(timeout)),
            };
            if let Some((generation, events)) = guard.complete(result) {
                run_timer(weak, generation, events).await;
            }
        });
        st.flight = Some(Flight {
            id,
            slot: slot.clone(),
            task: task.abort_handle(),
        });
        Ok((id, slot))
    }

    /// Takes in the outcome of fetch `id`. For a new token, also returns the timed steps of its
    /// phases, for the fetch's task to run: the task is now the token's timer.
    fn complete(
        self: &Arc<Self>,
        id: u64,
        result: Result<Token, Error>,
    ) -> (Outcome, Option<(u64, Events)>) {
        let now = Instant::now();
        let mut st = self.lock();
        let flight = st.flight.take_if(|f| f.id == id);
        let generation = st.generation + 1;
        match result.and_then(|token| Current::accept(token, generation, now, &self.config)) {
            Ok(current) => {
                let current = Arc::new(current);
                st.generation = generation;
                st.current = Some(current.clone());
                st.failure = None;
                self.stamp.store(generation << 2 | FRESH, Ordering::Release);
                let events = [
                    Some((current.soft_at, Step::Soft)),
                    Some((current.stale_at, Step::Stale)),
                ];
                if let Some(old) = st.timer.take() {
                    old.abort();
                }
                let timer = match flight {
                    // The fetch's own task runs the timer (this runs in that task).
                    Some(flight) => {
                        st.timer = Some(flight.task);
                        Some((generation, events))
                    }
                    // Not reached (nothing forgets a flight while its task runs); kept so that
                    // a token never goes without a timer.
                    None => {
                        self.set_timer(&mut st, generation, events);
                        None
                    }
                };
                drop(st);
                tracing::debug!(generation, "kero-auth: new token");
                (Ok(current), timer)
            }
            Err(error) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let attempts = st
                    .failure
                    .as_ref()
                    .map_or(0, |f| f.attempts)
                    .saturating_add(1);
                let retry_at = now + self.backoff(attempts).min(LONGEST);
                st.failure = Some(Failure {
                    error: error.clone(),
                    attempts,
                    retry_at,
                });
                if Self::phase(self.stamp()) == REFRESHING {
                    self.schedule_retry(&mut st, retry_at);
                }
                drop(st);
                tracing::warn!(attempts, error = %error, "kero-auth: token fetch failed");
                (Err(error), None)
            }
        }
    }

    /// Waits for the outcome of fetch `id`, published in `slot`.
    ///
    /// A fetch ends by its own timeout; one that has not ended well past it is not running: its
    /// task sits on a runtime that is no longer driven (alive but idle, or blocked). The waiter
    /// then gives up with a timeout error and forgets the fetch, so that the next request
    /// fetches anew, on a runtime that runs.
    fn wait(self: &Arc<Self>, id: u64, slot: Arc<Slot>) -> TokenWait {
        let cache = Arc::downgrade(self);
        let limit = self.config.fetch_timeout.saturating_add(WAIT_GRACE);
        Box::pin(async move {
            // Registered before the outcome is looked at: a publication after the look wakes us.
            let mut notified = std::pin::pin!(slot.notify.notified());
            notified.as_mut().enable();
            if let Some(outcome) = slot.outcome.get() {
                return outcome.clone();
            }
            // A deadline needs a tokio timer; a request polled outside tokio waits as long as
            // it takes.
            if tokio::runtime::Handle::try_current().is_ok() {
                if tokio::time::timeout(limit, notified).await.is_err() {
                    if let Some(cache) = cache.upgrade() {
                        cache.forsake(id);
                    }
                    return Err(Error::FetchTimeout(limit));
                }
            } else {
                notified.await;
            }
            slot.outcome
                .get()
                .cloned()
                .unwrap_or(Err(Error::FetchAborted))
        })
    }

    /// Forgets fetch `id`, which is not running (see `wait`), and cancels its task for when its
    /// runtime runs again. Not a failure of the source: no backoff.
    fn forsake(&self, id: u64) {
        let flight = self.lock().flight.take_if(|f| f.id == id);
        if let Some(flight) = flight {
            tracing::warn!(
                flight = id,
                "kero-auth: a token fetch did not end by its own timeout (its runtime is not \
                 running); the next request fetches anew"
            );
            flight.task.abort();
        }
    }

    /// Forgets a fetch whose task was cancelled before it finished.
    fn abandon(&self, id: u64) {
        let mut st = self.lock();
        if st.flight.as_ref().is_some_and(|f| f.id == id) {
            st.flight = None;
        }
    }

    /// After a failed background refresh: back to soft when the backoff ends, stale at expiry.
    fn schedule_retry(self: &Arc<Self>, st: &mut State, retry_at: Instant) {
        let Some(cur) = st.current.clone() else {
            return;
        };
        let retry = (retry_at < cur.stale_at).then_some((retry_at, Step::Retry));
        self.set_timer(
            st,
            cur.generation,
            [retry, Some((cur.stale_at, Step::Stale))],
        );
    }

    /// Replaces the timer with a new task, on the current runtime, that moves `generation`'s
    /// phase at the given instants, in order. A fetched token's timer is the task that fetched
    /// it (see `complete`); this one serves the rest (the retry after a failed refresh).
    ///
    /// One timer per token, not one per cache: a long-lived task would stay on the first
    /// runtime that made it, which may be idle or on another clock while the layer is used
    /// elsewhere.
    fn set_timer(self: &Arc<Self>, st: &mut State, generation: u64, events: Events) {
        if let Some(old) = st.timer.take() {
            old.abort();
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = handle.spawn(run_timer(Arc::downgrade(self), generation, events));
        st.timer = Some(task.abort_handle());
    }

    fn step(&self, generation: u64, step: Step) {
        let _ = self
            .stamp
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |stamp| {
                if Self::generation(stamp) != generation {
                    return None;
                }
                let to = match (Self::phase(stamp), step) {
                    (FRESH, Step::Soft) | (REFRESHING, Step::Retry) => SOFT,
                    (FRESH | SOFT | REFRESHING, Step::Stale | Step::Rejected) => STALE,
                    _ => return None,
                };
                Some(generation << 2 | to)
            });
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let base = self
            .config
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.config.backoff_max);
        // "Equal jitter": between half and all of the exponential delay.
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = st.flight.take() {
            flight.task.abort();
        }
        if let Some(timer) = st.timer.take() {
            timer.abort();
        }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stamp = self.stamp();
        f.debug_struct("Cache")
            .field("generation", &Self::generation(stamp))
            .field("phase", &Self::phase(stamp))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The refresh window opens.
    Soft,
    /// The backoff after a failed background refresh ends.
    Retry,
    /// The token reaches its expiry minus the margin.
    Stale,
    /// The server rejected the token: requests go to the slow path.
    Rejected,
}

/// Up to two timed steps, in order.
type Events = [Option<(Instant, Step)>; 2];

/// A token's timer: moves `generation`'s phase at the given instants, in order, and ends after
/// the last. It is aborted sooner when the token is replaced, when a failed refresh reschedules
/// the phases (`schedule_retry`), or when the cache is dropped; it holds only a weak reference.
async fn run_timer(cache: Weak<Cache>, generation: u64, events: Events) {
    for (at, step) in events.into_iter().flatten() {
        tokio::time::sleep_until(at).await;
        let Some(cache) = cache.upgrade() else { return };
        cache.step(generation, step);
    }
}

/// Where a fetch's outcome is published, once, for every request waiting for it.
#[derive(Default)]
struct Slot {
    outcome: OnceLock<Outcome>,
    notify: Notify,
}

/// The fetch's end of its slot. Dropped without having published (the task was dropped before
/// it finished, the cache is gone), it publishes `FetchAborted`: no waiter ever hangs.
struct Publisher(Arc<Slot>);

impl Publisher {
    fn publish(self, outcome: Outcome) {
        let _ = self.0.outcome.set(outcome);
        // Dropped here: the waiters are woken.
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.outcome.set(Err(Error::FetchAborted));
        self.0.notify.notify_waiters();
    }
}

/// Owned by the fetch task. Hands the outcome to the cache and publishes it to the waiters. If
/// the task ends without an outcome: the source panicked, and that is a failure like any other
/// (backed off); or the task was cancelled (the runtime is shutting down), and the flight is
/// forgotten so that the next request fetches anew. Either way the waiters are woken, with
/// `FetchAborted` (by the slot's `Publisher`, when it is dropped unpublished).
struct FlightGuard {
    cache: Weak<Cache>,
    id: u64,
    tx: Option<Publisher>,
}

impl FlightGuard {
    /// Delivers the outcome; for a new token, returns the timer the task is to run.
    fn complete(mut self, result: Result<Token, Error>) -> Option<(u64, Events)> {
        self.finish(result)
    }

    fn finish(&mut self, result: Result<Token, Error>) -> Option<(u64, Events)> {
        let tx = self.tx.take()?;
        let (outcome, timer) = self.cache.upgrade()?.complete(self.id, result);
        tx.publish(outcome);
        timer
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.tx.is_none() {
            return;
        }
        if std::thread::panicking() {
            // The source panicked: a failure like any other, backed off.
            self.finish(Err(Error::FetchAborted));
        } else if let Some(cache) = self.cache.upgrade() {
            // Cancelled (the runtime is shutting down): not the source's fault, so no backoff;
            // the waiters learn it, and the next request fetches anew.
            cache.abandon(self.id);
        }
    }
}
