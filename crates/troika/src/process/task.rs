//! A task on its way to a worker: its encoded call frame and the type-erased
//! sink that turns the worker's reply into a value for its [`Handle`].

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::chunk::{ChunkItem, ChunkReader, ChunkWriter, ITEM_ENCODE, ITEM_PANICKED};
use super::codec;
use super::framebuf::{Frame, FrameBuf};
use super::registry::{self, RemoteFn};
use super::wire;
use crate::futures::{ErrorKind, Executor, Handle, Inner, Promise, Task, TaskError};

/// A registered function and its argument: the task type of
/// [`ProcessPool`](crate::ProcessPool)'s [`Executor`] implementation.
///
/// # Examples
///
/// ```
/// troika::remote! {
///     fn double(x: u32) -> u32 { x * 2 }
/// }
///
/// fn main() {
///     use troika::{Call, Executor, ProcessPool};
///     troika::init();
///     let pool = ProcessPool::new(1).unwrap();
///     let doubled: Vec<u32> = pool
///         .map_tasks((1..=3).map(|x| Call::new(double, x)), 4)
///         .map(Result::unwrap)
///         .collect();
///     assert_eq!(doubled, [2, 4, 6]);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Call<F: RemoteFn> {
    /// The function.
    pub f: F,
    /// Its argument.
    pub arg: F::Arg,
}

impl<F: RemoteFn> Call<F> {
    /// `f(arg)`, to be run by an executor.
    pub fn new(f: F, arg: F::Arg) -> Call<F> {
        Call { f, arg }
    }
}

impl<F: RemoteFn> Task for Call<F> {
    type Output = F::Output;
}

impl<F: RemoteFn> Executor<Call<F>> for super::ProcessPool {
    fn submit(&self, task: Call<F>) -> Handle<F::Output> {
        super::ProcessPool::submit(self, task.f, task.arg)
    }

    fn try_submit(
        &self,
        task: Call<F>,
    ) -> Result<Handle<F::Output>, crate::futures::SubmitError<Call<F>>> {
        super::ProcessPool::try_submit(self, task.f, task.arg)
    }

    fn parallelism(&self) -> usize {
        self.workers()
    }
}

/// What the pool needs from a task's promise without knowing its type.
pub(crate) trait Sink: Send {
    /// Claim the task; false if it was cancelled first.
    fn start(&self) -> bool;
    /// Whether its outcome is decided (cancelled, timed out).
    fn is_done(&self) -> bool;
    /// The worker runs the task now: `cancel()` kills it (the pool finds
    /// the task by [`id`](Self::id), see `Shared::kill_running`).
    fn mark_killable(&self);
    /// Its promise's identity.
    fn id(&self) -> *const ();
    /// Decode the worker's reply and complete the task, calling `count`
    /// with whether it succeeded just before the outcome is published (so
    /// the pool's counters already hold a task whose handle is settled).
    /// True if it succeeded.
    fn finish(&self, status: u16, body: &[u8], count: &dyn Fn(bool)) -> bool;
    /// [`finish`](Self::finish) in two steps, for a body borrowed from
    /// something the caller must let go of before user code runs (the
    /// reader of a worker's large reply): decode the reply now, publish
    /// the outcome later with [`Decoded::publish`].
    fn decode<'a>(&'a self, status: u16, body: &[u8]) -> Decoded<'a>;
    /// Fail the task.
    fn fail(&self, err: TaskError);
}

/// A reply decoded for its task and not yet published (see
/// [`Sink::decode`]).
pub(crate) struct Decoded<'a> {
    /// Whether the task succeeded.
    pub(crate) ok: bool,
    publish: Box<dyn FnOnce() + 'a>,
}

impl Decoded<'_> {
    /// Publish the outcome: the handle settles, its done-callbacks run.
    pub(crate) fn publish(self) {
        (self.publish)();
    }
}

/// Something whose call frame a batch writes: a task's [`Posted`], or the
/// initializer's bare frame.
pub(crate) trait Outgoing: Send + Sync {
    fn frame(&self) -> &Frame;
}

impl Outgoing for Frame {
    fn frame(&self) -> &Frame {
        self
    }
}

/// What the pool keeps of a task: its call frame and its sink.
pub(crate) trait Pending: Outgoing {
    fn sink(&self) -> &dyn Sink;
}

/// A task's call frame and its sink in one allocation, shared by the queue
/// (or the list of calls in flight) and the batch being written: the frame
/// stays until the reply, so that the task can be sent again if its worker
/// died before starting it.
pub(crate) struct Posted<S> {
    pub(crate) frame: Frame,
    pub(crate) sink: S,
}

impl<S: Sink + Sync> Outgoing for Posted<S> {
    fn frame(&self) -> &Frame {
        &self.frame
    }
}

impl<S: Sink + Sync> Pending for Posted<S> {
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }
}

/// A queued or running task.
pub(crate) struct Job {
    pub(crate) id: u64,
    /// Its call frame's length, kept beside the id: dispatch sums the
    /// lengths of the calls in flight, which must not touch each task's
    /// allocation (a cache miss per call).
    pub(crate) len: usize,
    /// Its whole call frame and its sink.
    pub(crate) task: Arc<dyn Pending>,
    /// Whether `sink().start()` already claimed it.
    pub(crate) started: bool,
}

impl Job {
    pub(crate) fn new<S: Sink + Sync + 'static>(id: u64, frame: Frame, sink: S) -> Job {
        Job {
            id,
            len: frame.len(),
            task: Arc::new(Posted { frame, sink }),
            started: false,
        }
    }

    pub(crate) fn sink(&self) -> &dyn Sink {
        self.task.sink()
    }
}

/// Call frames up to this length live in the task's handle allocation (see
/// [`Job::call`]); longer ones are freed as soon as the reply is in.
const FRAME_IN_HANDLE_MAX: usize = 4096;

impl Job {
    /// The job of one call, `f(arg)` encoded in `frame`, and its handle.
    ///
    /// A small frame lives in the tail of the handle's own allocation,
    /// which the thread that drops the last of the handle and the job frees:
    /// normally the submitting thread, which made it, after `result()`. So
    /// the call costs one allocation fewer, and the pool's I/O thread frees
    /// nothing of it (a block freed by another thread than the one that
    /// allocated it takes the allocator's slower, shared path: measured
    /// with mimalloc, about a tenth of a burst's CPU). A larger frame, or
    /// one whose body is in shared memory, goes in its own allocation,
    /// freed with the reply, so that handles kept after their results do
    /// not keep their arguments.
    pub(crate) fn call<R>(id: u64, frame: Frame, owner: usize) -> (Job, Handle<R>)
    where
        R: DeserializeOwned + Send + 'static,
    {
        let len = frame.len();
        if len > FRAME_IN_HANDLE_MAX || frame.in_memory().is_none() {
            let (promise, handle) = crate::futures::pair(owner);
            return (Job::new(id, frame, One { promise }), handle);
        }
        let task = Arc::new(Inner::new(owner, CallTail { frame }));
        let job = Job {
            id,
            len,
            task: Arc::clone(&task) as Arc<dyn Pending>,
            started: false,
        };
        (job, Handle::from_inner(task))
    }
}

/// A small call's frame, kept in its handle's allocation (see [`Job::call`]).
pub(crate) struct CallTail {
    frame: Frame,
}

impl<R> Outgoing for Inner<R, CallTail>
where
    R: DeserializeOwned + Send + 'static,
{
    fn frame(&self) -> &Frame {
        &self.tail.frame
    }
}

impl<R> Pending for Inner<R, CallTail>
where
    R: DeserializeOwned + Send + 'static,
{
    fn sink(&self) -> &dyn Sink {
        self
    }
}

/// The same sink as [`One`]'s, on the task's state itself.
impl<R> Sink for Inner<R, CallTail>
where
    R: DeserializeOwned + Send + 'static,
{
    fn start(&self) -> bool {
        Inner::start(self)
    }

    fn is_done(&self) -> bool {
        Inner::is_done(self)
    }

    fn mark_killable(&self) {
        Inner::mark_killable(self);
    }

    fn id(&self) -> *const () {
        (self as *const Self).cast()
    }

    fn finish(&self, status: u16, body: &[u8], count: &dyn Fn(bool)) -> bool {
        finish_one(status, body, count, |outcome| {
            Inner::complete(self, outcome);
        })
    }

    fn decode<'a>(&'a self, status: u16, body: &[u8]) -> Decoded<'a> {
        decoded(status, body, decode_result::<R>, move |outcome| {
            Inner::complete(self, outcome);
        })
    }

    fn fail(&self, err: TaskError) {
        Inner::complete(self, Err(err));
    }
}

/// Decode a single call's reply, count it, and complete the call.
fn finish_one<R: DeserializeOwned + Send + 'static>(
    status: u16,
    body: &[u8],
    count: &dyn Fn(bool),
    complete: impl FnOnce(Result<R, TaskError>),
) -> bool {
    finish_with(status, body, count, decode_result, complete)
}

/// Decode a reply with `decode` (or its error status), count it, then
/// complete with it: whoever sees the outcome finds it counted.
fn finish_with<T>(
    status: u16,
    body: &[u8],
    count: &dyn Fn(bool),
    decode: impl FnOnce(&[u8]) -> Result<T, TaskError>,
    complete: impl FnOnce(Result<T, TaskError>),
) -> bool {
    let outcome = outcome_of(status, body, decode);
    let ok = outcome.is_ok();
    count(ok);
    complete(outcome);
    ok
}

/// [`finish_with`]'s first step (see [`Sink::decode`]).
fn decoded<'a, T: 'a>(
    status: u16,
    body: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, TaskError>,
    complete: impl FnOnce(Result<T, TaskError>) + 'a,
) -> Decoded<'a> {
    let outcome = outcome_of(status, body, decode);
    Decoded {
        ok: outcome.is_ok(),
        publish: Box::new(move || complete(outcome)),
    }
}

/// The outcome a reply with `status` and `body` carries.
fn outcome_of<T>(
    status: u16,
    body: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, TaskError>,
) -> Result<T, TaskError> {
    if status == wire::OK {
        decode(body)
    } else {
        Err(status_error(status, body))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The frame of a call to `F`, up to its argument.
fn begin_call<F: RemoteFn>(id: u64, kind: u16, capacity: usize) -> Result<FrameBuf, TaskError> {
    thread_local! {
        /// The name this thread last found registered: a burst of calls to
        /// one function looks it up once.
        static KNOWN: std::cell::Cell<(*const u8, usize)> =
            const { std::cell::Cell::new((std::ptr::null(), 0)) };
    }
    let key = (F::NAME.as_ptr(), F::NAME.len());
    if KNOWN.get() != key {
        if registry::lookup(F::NAME).is_none() {
            return Err(TaskError::new(ErrorKind::Failed(format!(
                "no function named `{}` is registered (define it with troika::remote!)",
                F::NAME
            ))));
        }
        KNOWN.set(key);
    }
    let name = F::NAME.as_bytes();
    let mut frame = FrameBuf::frame(name.len() + capacity);
    let aux = u32::try_from(name.len()).unwrap_or(u32::MAX);
    wire::begin_frame(frame.bytes_mut(), kind, 0, aux, id);
    frame.bytes_mut().extend_from_slice(name);
    Ok(frame)
}

/// Encode a call frame for `F` with argument `arg`; a large argument is
/// encoded straight into the sealed memfd that carries it (see
/// [`FrameBuf`]).
///
/// The argument's `Serialize` runs under `catch_unwind`: a panic in it is a
/// [`Panicked`](ErrorKind::Panicked) error, an error it returns a
/// [`Serialization`](ErrorKind::Serialization) error with its message.
/// Either way the memfd it was being written to, if any, is closed.
pub(crate) fn encode_call<F: RemoteFn>(id: u64, arg: &F::Arg) -> Result<Frame, TaskError> {
    let mut frame = begin_call::<F>(id, wire::CALL, 16)?;
    match registry::unwind(|| registry::encode_typed(arg, &mut frame)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(TaskError::new(ErrorKind::Serialization(format!(
                "encoding the argument in the parent: {e}"
            ))));
        }
        Err(panic) => return Err(TaskError::new(ErrorKind::Panicked(panic))),
    }
    frame.finish_frame();
    frame.into_frame().map_err(|e| {
        TaskError::new(ErrorKind::Failed(format!(
            "sealing the argument's shared memory: {e}"
        )))
    })
}

/// Encode a chunk call frame for `F`: one item per argument (see
/// [`ChunkWriter`]). An argument that cannot be encoded (or whose
/// `Serialize` panics) travels as a failed item, which the worker echoes
/// back, so that it fails alone.
pub(crate) fn encode_chunk<F: RemoteFn>(id: u64, args: &[F::Arg]) -> Result<Frame, TaskError> {
    if u32::try_from(args.len()).is_err() {
        return Err(TaskError::new(ErrorKind::Failed(format!(
            "a chunk of {} items is too long (at most {})",
            args.len(),
            u32::MAX
        ))));
    }
    let mut frame = begin_call::<F>(id, wire::CALL_CHUNK, 32 + args.len() * 8)?.into_plain();
    let mut chunk = ChunkWriter::new(&mut frame, args.len());
    // One `catch_unwind` for a run of items, not one per item: a panic in a
    // `Serialize` fails the item it was encoding, and the run goes on from
    // the next one (nothing is encoded twice).
    let mut rest = args.iter();
    loop {
        let run = registry::unwind(|| {
            for arg in rest.by_ref() {
                match chunk.write(arg) {
                    Ok(()) => chunk.commit(),
                    Err(e) => {
                        let msg = format!(
                            "encoding the argument in the parent: {}",
                            codec::encode_error(arg, e)
                        );
                        chunk.fail(ITEM_ENCODE, msg.as_bytes());
                    }
                }
            }
        });
        match run {
            Ok(()) => break,
            Err(panic) => chunk.fail(ITEM_PANICKED, panic.as_bytes()),
        }
    }
    chunk.finish();
    wire::finish_frame(&mut frame, 0);
    Ok(Frame::from(frame))
}

/// The error a non-OK reply status stands for.
fn status_error(status: u16, body: &[u8]) -> TaskError {
    if status == wire::TOO_LARGE
        && let Some((size, limit)) = wire::decode_too_large(body)
    {
        return TaskError::new(ErrorKind::FrameTooLarge { size, limit });
    }
    let msg = String::from_utf8_lossy(body).into_owned();
    TaskError::new(match status {
        wire::PANICKED => ErrorKind::Panicked(msg),
        wire::ARG_DECODE | wire::RESULT_ENCODE => ErrorKind::Serialization(msg),
        _ => ErrorKind::Failed(msg),
    })
}

/// Decode a result in the parent. The type's `Deserialize` runs under
/// `catch_unwind`: a panic in it fails this result alone, as a panic.
fn decode_result<R: DeserializeOwned + 'static>(body: &[u8]) -> Result<R, TaskError> {
    match registry::unwind(|| registry::decode_typed(body)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(TaskError::new(ErrorKind::Serialization(format!(
            "decoding the result in the parent: {e}"
        )))),
        Err(panic) => Err(TaskError::new(ErrorKind::Panicked(panic))),
    }
}

/// The sink of a single call.
pub(crate) struct One<R> {
    pub(crate) promise: Promise<R>,
}

impl<R: DeserializeOwned + Send + 'static> Sink for One<R> {
    fn start(&self) -> bool {
        self.promise.start()
    }

    fn is_done(&self) -> bool {
        self.promise.is_done()
    }

    fn mark_killable(&self) {
        self.promise.mark_killable();
    }

    fn id(&self) -> *const () {
        self.promise.id()
    }

    fn finish(&self, status: u16, body: &[u8], count: &dyn Fn(bool)) -> bool {
        finish_one(status, body, count, |outcome| {
            self.promise.complete(outcome);
        })
    }

    fn decode<'a>(&'a self, status: u16, body: &[u8]) -> Decoded<'a> {
        decoded(status, body, decode_result::<R>, move |outcome| {
            self.promise.complete(outcome);
        })
    }

    fn fail(&self, err: TaskError) {
        self.promise.complete(Err(err));
    }
}

/// The outcomes of a chunk, one per item.
pub(crate) type ChunkOutcome<R> = Vec<Result<R, TaskError>>;

/// The sink of a chunk of calls that travel as one message.
pub(crate) struct Chunk<R> {
    pub(crate) promise: Promise<ChunkOutcome<R>>,
}

impl<R: DeserializeOwned + Send + 'static> Sink for Chunk<R> {
    fn start(&self) -> bool {
        self.promise.start()
    }

    fn is_done(&self) -> bool {
        self.promise.is_done()
    }

    fn mark_killable(&self) {
        self.promise.mark_killable();
    }

    fn id(&self) -> *const () {
        self.promise.id()
    }

    fn finish(&self, status: u16, body: &[u8], count: &dyn Fn(bool)) -> bool {
        finish_with(status, body, count, decode_chunk, |outcome| {
            self.promise.complete(outcome);
        })
    }

    fn decode<'a>(&'a self, status: u16, body: &[u8]) -> Decoded<'a> {
        decoded(status, body, decode_chunk::<R>, move |outcome| {
            self.promise.complete(outcome);
        })
    }

    fn fail(&self, err: TaskError) {
        self.promise.complete(Err(err));
    }
}

/// The outcomes of a chunk reply, one per item (see [`ChunkWriter`]): an
/// item whose value cannot be decoded fails alone. A reply that does not
/// hold what it announces is a corrupt stream.
///
/// One `catch_unwind` for a run of items, not one per item: a panic in a
/// `Deserialize` fails the item it was decoding, and the run goes on from
/// the next one.
fn decode_chunk<R: DeserializeOwned>(body: &[u8]) -> Result<ChunkOutcome<R>, TaskError> {
    let corrupt = |_| {
        TaskError::new(ErrorKind::Serialization(
            "decoding the chunk's results in the parent: damaged or truncated reply".into(),
        ))
    };
    let mut items = ChunkReader::new(body).map_err(corrupt)?;
    // Each item takes at least a byte: do not trust the count further.
    let mut outcomes = Vec::with_capacity((items.count() as usize).min(body.len()));
    loop {
        let run = registry::unwind(|| -> Result<(), TaskError> {
            while let Some(item) = items.next_item().map_err(corrupt)? {
                outcomes.push(match item {
                    ChunkItem::Value(bytes) => postcard::from_bytes(bytes).map_err(|e| {
                        TaskError::new(ErrorKind::Serialization(format!(
                            "decoding the result in the parent: {}",
                            codec::decode_error::<R>(bytes, e)
                        )))
                    }),
                    ChunkItem::Failed(tag, msg) => {
                        let msg = String::from_utf8_lossy(msg).into_owned();
                        Err(TaskError::new(if tag == ITEM_PANICKED {
                            ErrorKind::Panicked(msg)
                        } else {
                            ErrorKind::Serialization(msg)
                        }))
                    }
                });
            }
            Ok(())
        });
        match run {
            Ok(done) => return done.map(|()| outcomes),
            Err(panic) => outcomes.push(Err(TaskError::new(ErrorKind::Panicked(panic)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the worker builds it: per item a value or a failure.
    fn reply(items: &[Result<String, (u8, String)>]) -> Vec<u8> {
        let mut out = vec![9, 9];
        let mut chunk = ChunkWriter::new(&mut out, items.len());
        for item in items {
            match item {
                Ok(value) => {
                    chunk.write(value).unwrap();
                    chunk.commit();
                }
                Err((tag, msg)) => chunk.fail(*tag, msg.as_bytes()),
            }
        }
        chunk.finish();
        out.split_off(2)
    }

    /// A small deterministic generator (no dependency needed).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    fn random_items(rng: &mut Lcg) -> Vec<Result<String, (u8, String)>> {
        (0..rng.next(8))
            .map(|i| match rng.next(4) {
                0 => Err((ITEM_PANICKED, format!("boom {i}"))),
                1 => Err((ITEM_ENCODE, format!("bad {i}"))),
                _ => Ok("x".repeat(rng.next(300) as usize)),
            })
            .collect()
    }

    #[test]
    fn chunk_replies_round_trip_item_by_item() {
        let mut rng = Lcg(7);
        for _ in 0..2000 {
            let items = random_items(&mut rng);
            let decoded = decode_chunk::<String>(&reply(&items)).unwrap();
            assert_eq!(decoded.len(), items.len());
            for (got, want) in decoded.iter().zip(&items) {
                match (got, want) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b),
                    (Err(e), Err((tag, msg))) => {
                        assert_eq!(e.is_panic(), *tag == ITEM_PANICKED);
                        assert!(e.to_string().contains(msg.as_str()), "{e}");
                    }
                    _ => panic!("{got:?} for {want:?}"),
                }
            }
        }
    }

    /// A reply cut anywhere, or with any byte changed, never panics and never
    /// yields more items than it announces.
    #[test]
    fn damaged_chunk_replies_fail_cleanly() {
        let mut rng = Lcg(11);
        for _ in 0..300 {
            let items = random_items(&mut rng);
            let whole = reply(&items);
            for cut in 0..whole.len() {
                let outcome = decode_chunk::<String>(&whole[..cut]);
                assert!(outcome.is_err(), "a reply cut at {cut} was accepted");
            }
            for at in 0..whole.len() {
                let mut damaged = whole.clone();
                damaged[at] ^= 1 << rng.next(8);
                if let Ok(decoded) = decode_chunk::<String>(&damaged) {
                    assert!(decoded.len() <= u32::MAX as usize);
                }
            }
        }
    }

    /// One item whose bytes are not a value of the type fails alone.
    #[test]
    fn an_undecodable_item_fails_alone() {
        let mut out = Vec::new();
        let mut chunk = ChunkWriter::new(&mut out, 3);
        // Arrays encode as their bytes: "a", something that is no string, "c".
        chunk.write(&[1u8, b'a']).unwrap();
        chunk.commit();
        chunk.write(&[0xffu8, 0xff, 0xff]).unwrap();
        chunk.commit();
        chunk.write(&[1u8, b'c']).unwrap();
        chunk.commit();
        chunk.finish();
        let decoded = decode_chunk::<String>(&out).unwrap();
        assert_eq!(decoded[0].as_deref().unwrap(), "a");
        assert!(decoded[1].as_ref().unwrap_err().is_serialization());
        assert_eq!(decoded[2].as_deref().unwrap(), "c");
    }
}
