//! Handles inside the argument of `Process::spawn` and of a process pool's
//! `submit`: a pipe end moves to the child only if the spawn or the submit
//! really happened. (Apart from the other `ipc_*`
//! tests because `Process` children do not run under valgrind, which
//! `tests/valgrind.sh` runs those under.)

mod ipc_support;

use ipc_support::{Unserializable, guarded};
use std::time::Duration;
use troika::ipc::{GetError, Pipe};
use troika::{Process, ProcessPool};

troika::remote! {
    /// Sends 42 on the end it was given, then drops it.
    fn answer_on(end: Pipe<u32, ()>) -> () {
        end.send(&42).unwrap();
    }

    /// Never runs: its argument cannot be encoded.
    fn never_runs(end: Pipe<u32, ()>, bad: Unserializable) -> () {
        let _ = (end, bad);
    }
}

/// Regression: a pipe end handed to `Process::spawn` stayed marked as sent
/// when the argument failed to serialize, so dropping it did not close the
/// pipe and the peer's `recv` waited for ever.
#[test]
fn a_pipe_end_whose_spawn_failed_still_closes_its_pipe() {
    guarded(
        "a_pipe_end_whose_spawn_failed_still_closes_its_pipe",
        Duration::from_secs(60),
        || {
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            let err = Process::spawn(never_runs, (there, Unserializable)).unwrap_err();
            assert!(err.is_serialization(), "{err}");
            // `spawn` dropped the argument: the end never left, so that
            // closed the pipe.
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));
        },
    );
}

#[test]
fn a_pipe_end_handed_to_a_spawned_process_moves_there() {
    guarded(
        "a_pipe_end_handed_to_a_spawned_process_moves_there",
        Duration::from_secs(60),
        || {
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            let p = Process::spawn(answer_on, there).unwrap();
            assert_eq!(here.recv().unwrap(), 42);
            p.join().unwrap();
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));
        },
    );
}

/// The same for a process pool: a submit whose argument fails to encode, or
/// that a shut-down pool refuses, leaves the pipe end here, so dropping the
/// argument closes the pipe. A submit that went through moves it.
#[test]
fn a_pipe_end_whose_submit_failed_still_closes_its_pipe() {
    guarded(
        "a_pipe_end_whose_submit_failed_still_closes_its_pipe",
        Duration::from_secs(60),
        || {
            let pool = ProcessPool::new(1).unwrap();
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            let err = pool
                .submit(never_runs, (there, Unserializable))
                .result()
                .unwrap_err();
            assert!(err.is_serialization(), "{err}");
            assert!(
                err.to_string().contains("refuses to be serialized"),
                "serde's own message is kept: {err}"
            );
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));

            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            pool.submit(answer_on, there).result().unwrap();
            assert_eq!(here.recv().unwrap(), 42);

            pool.shutdown(true, false);
            let (here, there) = Pipe::<(), u32>::pair().unwrap();
            assert!(pool.submit(answer_on, there).result().is_err());
            assert!(matches!(here.recv(), Err(GetError::Disconnected)));
        },
    );
}
