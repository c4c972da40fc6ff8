//! [`ReplayBody`]: the request body the inner service receives, recorded so that the request can
//! be replayed once after an authentication failure.
//!
//! The body is teed while it streams: each data chunk is handed on and a clone of its `Bytes`
//! (a reference count, not a copy of the bytes) is kept, up to the replay limit. Past the limit
//! the recording is dropped and the request cannot be replayed; it is never buffered whole before
//! it is sent. Trailers are recorded and replayed. The recording is published only when the body
//! has been sent to its end: a body the inner service dropped half-way (say, because the response
//! came first) is never replayed, since nobody knows what the server read of it.
//!
//! The recording lives in one allocation shared by the body, which writes it chunk by chunk under
//! a lock that is rarely contended (only by a rejection that comes while the body still
//! streams), and the response future, which takes it once, for the replay. Keeping it out of the body keeps the body small (`B` and a pointer): it
//! travels with every request, and every move copies it. A body without data (`Empty`) needs no
//! recording at all.

use std::collections::VecDeque;
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The body the inner service receives: the caller's body, teed for a possible replay, or the
    /// replay of a recorded body. `Data = Bytes` (as tonic's `Body::new` wants); `Unpin` whenever
    /// the caller's body is (as hyper-util's client wants).
    pub struct ReplayBody<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        // The caller's body, streaming; recorded on the tape while there is one.
        Streaming {
            #[pin]
            inner: B,
            tape: Option<Tape>,
        },
        // A recorded body being sent again (boxed: replays are rare, and the body travels with
        // every request).
        Replay {
            recorded: Box<Recorded>,
        },
    }
}

/// What was recorded of a body that was sent to its end.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// The first chunk, kept inline: a body of one chunk (a `Full` body, most bodies) costs no
    /// allocation for its recording beyond the slot it is published in.
    first: Option<Bytes>,
    /// The chunks after the first.
    chunks: VecDeque<Bytes>,
    /// Boxed: trailers are rare.
    trailers: Option<Box<HeaderMap>>,
    remaining: u64,
    /// Whether the original body announced its exact length: the replay announces the same kind
    /// of length, so the server sees the same framing (`content-length` or chunked) both times.
    exact: bool,
}

impl Recorded {
    /// The body of a replay.
    pub(crate) fn into_body<B>(self) -> ReplayBody<B> {
        ReplayBody {
            state: State::Replay {
                recorded: Box::new(self),
            },
        }
    }
}

/// The recording, shared by the body (which records) and the response future (which takes it
/// for a replay). It lives in the one allocation a recorded body needs, so that the body itself
/// stays small (`B` and a pointer): every request carries it, and every move copies it.
pub(crate) type Tape = Arc<Mutex<Recorder>>;

/// A recording in progress, or finished.
#[derive(Debug)]
pub(crate) struct Recorder {
    recorded: Recorded,
    limit: u64,
    /// The body's announced length (its size hint's lower bound), to size the recording.
    hint: u64,
    /// Whether the body was sent to its end: only then can it be replayed.
    complete: bool,
}

/// The recorder behind `tape`; a poisoned lock is still consistent (nothing under it panics
/// half-way through an update).
fn lock(tape: &Tape) -> std::sync::MutexGuard<'_, Recorder> {
    tape.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most chunk slots reserved up front: a body of more chunks grows its recording by doubling.
const CHUNKS_RESERVED: u64 = 16;

/// How a request's body can be replayed.
#[derive(Debug)]
pub(crate) enum Replayable {
    /// The body was empty: replay an empty body.
    Empty,
    /// The body is being recorded; the recording appears on this tape once it has been sent whole.
    Recording(Tape),
}

impl Replayable {
    /// The body to replay, if it was recorded in full. Takes the recording: at most one replay.
    pub(crate) fn take<B>(&self) -> Option<ReplayBody<B>> {
        match self {
            Replayable::Empty => Some(
                Recorded {
                    exact: true,
                    ..Recorded::default()
                }
                .into_body(),
            ),
            Replayable::Recording(tape) => {
                let mut recorder = lock(tape);
                if !recorder.complete {
                    return None;
                }
                recorder.complete = false;
                Some(mem::take(&mut recorder.recorded).into_body())
            }
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, recording up to `limit` bytes. Returns how the request could be replayed, or
    /// `None` when it cannot be (replay disabled, or the body announces more than `limit`).
    #[cfg(test)]
    pub(crate) fn new(body: B, limit: usize) -> (Self, Option<Replayable>) {
        let (tape, replayable) = Self::plan(&body, limit);
        (Self::streaming(body, tape), replayable)
    }

    /// `body`, streaming, recorded on `tape` if there is one (see [`plan`](Self::plan)).
    #[inline(always)]
    pub(crate) fn streaming(inner: B, tape: Option<Tape>) -> Self {
        ReplayBody {
            state: State::Streaming { inner, tape },
        }
    }

    /// How `body` is to be recorded, up to `limit` bytes: the tape to record it on (if it has
    /// data), and how the request could be replayed, or `None` when it cannot be (replay
    /// disabled, or the body announces more than `limit`).
    #[inline(always)]
    pub(crate) fn plan(body: &B, limit: usize) -> (Option<Tape>, Option<Replayable>) {
        let limit = limit as u64;
        if limit == 0 {
            return (None, None);
        }
        if body.is_end_stream() {
            return (None, Some(Replayable::Empty));
        }
        if body.size_hint().lower() > limit {
            return (None, None);
        }
        let hint = body.size_hint();
        let tape = Arc::new(Mutex::new(Recorder {
            recorded: Recorded {
                exact: hint.exact().is_some(),
                ..Recorded::default()
            },
            limit,
            hint: hint.lower(),
            complete: false,
        }));
        (Some(tape.clone()), Some(Replayable::Recording(tape)))
    }
}

impl Recorder {
    /// Records a chunk; returns false when the limit is passed (the recording is then worthless).
    fn data(&mut self, chunk: &Bytes) -> bool {
        let len = chunk.len() as u64;
        if self.recorded.remaining + len > self.limit {
            return false;
        }
        self.recorded.remaining += len;
        if !chunk.is_empty() {
            if self.recorded.first.is_none() {
                self.recorded.first = Some(chunk.clone());
                return true;
            }
            let chunks = &mut self.recorded.chunks;
            if chunks.capacity() == 0 {
                // Sized once, at the second chunk: as many slots as the rest of the announced
                // length takes in chunks of this size, or (length unknown) a few, rather than
                // grown by doubling (a reallocation and a copy each time).
                let expected = match self.hint {
                    0 => CHUNKS_RESERVED,
                    hint => (hint.saturating_sub(self.recorded.remaining - len))
                        .div_ceil(len)
                        .clamp(1, CHUNKS_RESERVED),
                };
                chunks.reserve_exact(expected as usize);
            }
            chunks.push_back(chunk.clone());
        }
        true
    }

    /// Gives up: the recording cannot be replayed; its chunks are let go at once.
    fn abandon(&mut self) {
        self.recorded = Recorded::default();
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().state.project() {
            StateProj::Streaming { mut inner, tape } => {
                let frame = match ready!(inner.as_mut().poll_frame(cx)) {
                    None => {
                        if let Some(tape) = tape.take() {
                            lock(&tape).complete = true;
                        }
                        return Poll::Ready(None);
                    }
                    Some(Err(e)) => {
                        if let Some(tape) = tape.take() {
                            lock(&tape).abandon();
                        }
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Some(Ok(frame)) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
                };
                if let Some(t) = tape.as_ref() {
                    let mut r = lock(t);
                    let keep = match frame.data_ref() {
                        Some(chunk) => r.data(chunk),
                        None => match frame.trailers_ref() {
                            Some(t) => {
                                r.recorded.trailers = Some(Box::new(t.clone()));
                                true
                            }
                            None => false,
                        },
                    };
                    let end = keep && (frame.is_trailers() || inner.is_end_stream());
                    if !keep {
                        r.abandon();
                    } else if end {
                        // Trailers are the last frame, and clients stop polling once the body
                        // says it has ended: either way the recording is complete.
                        r.complete = true;
                    }
                    drop(r);
                    if !keep || end {
                        *tape = None;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            StateProj::Replay { recorded } => {
                if let Some(chunk) = recorded
                    .first
                    .take()
                    .or_else(|| recorded.chunks.pop_front())
                {
                    recorded.remaining -= chunk.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(recorded.trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Streaming { inner, .. } => inner.is_end_stream(),
            State::Replay { recorded } => {
                recorded.first.is_none()
                    && recorded.chunks.is_empty()
                    && recorded.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Streaming { inner, .. } => inner.size_hint(),
            State::Replay { recorded } if recorded.exact => {
                SizeHint::with_exact(recorded.remaining)
            }
            State::Replay { .. } => SizeHint::default(),
        }
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Streaming { tape, .. } => f
                .debug_struct("ReplayBody")
                .field("recording", &tape.is_some())
                .finish_non_exhaustive(),
            State::Replay { recorded } => f
                .debug_struct("ReplayBody")
                .field("replaying", &recorded.remaining)
                .finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::task::Waker;

    /// A body that yields a scripted sequence: `Some(frame)` is a frame, `None` is one `Pending`.
    struct Script {
        steps: VecDeque<Option<Frame<Bytes>>>,
        hint: SizeHint,
    }

    impl Script {
        fn new(steps: Vec<Option<Frame<Bytes>>>) -> Self {
            Script {
                steps: steps.into(),
                hint: SizeHint::default(),
            }
        }
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.steps.pop_front() {
                Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(None) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
        fn size_hint(&self) -> SizeHint {
            self.hint
        }
    }

    fn data(s: &'static str) -> Option<Frame<Bytes>> {
        Some(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

    fn poll<B: Body + Unpin>(body: &mut B) -> Polled<B> {
        Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    fn chunk(p: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> Bytes {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_data().unwrap(),
            _ => panic!("expected a data frame"),
        }
    }

    async fn collect<B: Body<Data = Bytes, Error = BoxError>>(b: B) -> (Bytes, Option<HeaderMap>) {
        let c = b.collect().await.unwrap();
        let t = c.trailers().cloned();
        (c.to_bytes(), t)
    }

    #[tokio::test]
    async fn chunks_pass_through_as_they_arrive_and_replay_whole_with_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "9".parse().unwrap());
        let script = Script::new(vec![
            data("one "),
            None,
            data("two "),
            None,
            data("three"),
            Some(Frame::trailers(trailers.clone())),
        ]);
        let (mut body, replay) = ReplayBody::new(script, 1024);
        let replay = replay.unwrap();
        // Each chunk is handed on as soon as it arrives: nothing waits for the whole body.
        assert_eq!(chunk(poll(&mut body)), "one ");
        assert!(poll(&mut body).is_pending());
        assert!(
            replay.take::<Script>().is_none(),
            "not replayable before the end"
        );
        assert_eq!(chunk(poll(&mut body)), "two ");
        assert!(poll(&mut body).is_pending());
        assert_eq!(chunk(poll(&mut body)), "three");
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(f))) if f.is_trailers()));
        // Published at the trailers, even if the client never polls for the end.
        let again = replay.take::<Script>().expect("replayable");
        assert!(
            again.size_hint().exact().is_none(),
            "same framing as the original (unknown length)"
        );
        assert_eq!(
            collect(again).await,
            (Bytes::from_static(b"one two three"), Some(trailers))
        );
        assert!(replay.take::<Script>().is_none(), "at most one replay");
    }

    #[tokio::test]
    async fn an_exact_length_body_replays_with_its_length() {
        let (mut body, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"0123456789")), 64);
        assert_eq!(chunk(poll(&mut body)), "0123456789");
        // `Full` says it has ended after its one chunk; clients then stop polling.
        assert!(body.is_end_stream());
        let again = replay.unwrap().take::<Full<Bytes>>().expect("replayable");
        assert_eq!(again.size_hint().exact(), Some(10));
        assert_eq!(collect(again).await.0, "0123456789");
    }

    #[test]
    fn past_the_limit_the_recording_is_dropped() {
        let owned = Some(Frame::data(Bytes::from(b"0123".to_vec())));
        let script = Script::new(vec![owned, data("4567"), data("89")]);
        let (mut body, replay) = ReplayBody::new(script, 9);
        let replay = replay.unwrap();
        let first = chunk(poll(&mut body));
        assert_eq!(chunk(poll(&mut body)), "4567");
        assert_eq!(chunk(poll(&mut body)), "89");
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert!(replay.take::<Script>().is_none());
        // The recorder let go of its clones: the consumer holds the only reference.
        assert!(first.is_unique());
    }

    #[test]
    fn a_body_announced_over_the_limit_is_not_recorded_at_all() {
        let (_, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"0123456789")), 9);
        assert!(replay.is_none());
        let (_, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"0123456789")), 0);
        assert!(replay.is_none(), "limit 0 disables replay");
    }

    #[test]
    fn a_body_dropped_half_way_is_not_replayable() {
        let script = Script::new(vec![data("0123"), data("4567")]);
        let (mut body, replay) = ReplayBody::new(script, 64);
        chunk(poll(&mut body));
        drop(body);
        assert!(replay.unwrap().take::<Script>().is_none());
    }

    #[test]
    fn an_empty_body_is_replayed_as_empty() {
        let (body, replay) = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 64);
        assert!(body.is_end_stream());
        let again = replay.unwrap().take::<Script>().unwrap();
        assert!(again.is_end_stream());
        assert_eq!(again.size_hint().exact(), Some(0));
    }

    #[test]
    fn data_of_any_buf_type_becomes_bytes() {
        let (mut body, _) = ReplayBody::new(Full::new(&b"static slice"[..]), 64);
        assert_eq!(chunk(poll(&mut body)), "static slice");
    }

    proptest::proptest! {
        /// Any sequence of chunks (empty ones included), with or without trailers, with or
        /// without an announced length, under any limit: what passes through is what came in;
        /// the body is replayable exactly when it was sent whole within the limit, and then the
        /// replay has the same bytes, trailers and framing, once.
        #[test]
        fn any_body_passes_through_and_replays_exactly(
            sizes in proptest::collection::vec(0usize..3000, 0..24),
            with_trailers in proptest::bool::ANY,
            announce in proptest::bool::ANY,
            limit in 0usize..40_000,
        ) {
            let mut all = Vec::new();
            let mut steps = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let c: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
                all.extend_from_slice(&c);
                steps.push(Some(Frame::data(Bytes::from(c))));
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("x-n", sizes.len().to_string().parse().unwrap());
            if with_trailers {
                steps.push(Some(Frame::trailers(trailers.clone())));
            }
            let total = all.len() as u64;
            let mut script = Script::new(steps);
            if announce {
                script.hint = SizeHint::with_exact(total);
            }
            let (mut body, replayable) = ReplayBody::new(script, limit);
            // Through: the same bytes and trailers, in order.
            let mut seen = Vec::new();
            let mut seen_trailers = None;
            loop {
                match poll(&mut body) {
                    Poll::Ready(Some(Ok(f))) => match f.into_data() {
                        Ok(d) => seen.extend_from_slice(&d),
                        Err(f) => seen_trailers = f.into_trailers().ok(),
                    },
                    Poll::Ready(None) => break,
                    other => panic!("unexpected {:?}", other.map(|o| o.map(|r| r.is_ok()))),
                }
            }
            proptest::prop_assert_eq!(&seen, &all);
            proptest::prop_assert_eq!(seen_trailers.is_some(), with_trailers);
            // Recorded unless replay is off or the body announced more than the limit; replayable
            // exactly when recorded whole within the limit. (A `Script` never says it has ended
            // before it is polled, so even no chunks is recorded; the path of a body that is
            // empty from the start is tested over HTTP in tests/replay_http.rs.)
            let fits = limit > 0 && total <= limit as u64;
            let recorded = limit > 0 && (!announce || fits);
            proptest::prop_assert_eq!(replayable.is_some(), recorded);
            let Some(replayable) = replayable else { return Ok(()) };
            let again = replayable.take::<Script>();
            proptest::prop_assert_eq!(again.is_some(), fits);
            let Some(mut again) = again else { return Ok(()) };
            proptest::prop_assert_eq!(again.size_hint().exact(), announce.then_some(total));
            let mut replayed = Vec::new();
            let mut replayed_trailers = None;
            while let Poll::Ready(Some(Ok(f))) = poll(&mut again) {
                match f.into_data() {
                    Ok(d) => replayed.extend_from_slice(&d),
                    Err(f) => replayed_trailers = f.into_trailers().ok(),
                }
            }
            proptest::prop_assert!(again.is_end_stream());
            proptest::prop_assert_eq!(&replayed, &all);
            proptest::prop_assert_eq!(replayed_trailers, with_trailers.then_some(trailers));
            proptest::prop_assert!(replayable.take::<Script>().is_none(), "one replay, ever");
        }
    }
}
