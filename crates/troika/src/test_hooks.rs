//! Test hooks: code a unit test runs at a chosen instant, on the thread
//! that reaches it. Compiled into unit-test builds only.

use std::cell::RefCell;
use std::thread::LocalKey;

type Hook = RefCell<Option<Box<dyn FnMut()>>>;

thread_local! {
    static BEFORE_COMPLETE: Hook = const { RefCell::new(None) };
    static HANDOFF_WAIT_STEP: Hook = const { RefCell::new(None) };
}

/// Run `f` whenever a task run on this thread is about to decide its
/// outcome (after its code ended, before the outcome is claimed).
pub(crate) fn set_before_complete(f: Option<Box<dyn FnMut()>>) {
    set(&BEFORE_COMPLETE, f);
}

pub(crate) fn before_complete() {
    run(&BEFORE_COMPLETE);
}

/// Run `f` whenever a thread-pool worker on this thread found the queue
/// empty: before it enters the hand-off mailbox, and again once in it.
pub(crate) fn set_handoff_wait_step(f: Option<Box<dyn FnMut()>>) {
    set(&HANDOFF_WAIT_STEP, f);
}

pub(crate) fn handoff_wait_step() {
    run(&HANDOFF_WAIT_STEP);
}

fn set(hook: &'static LocalKey<Hook>, f: Option<Box<dyn FnMut()>>) {
    hook.with(|hook| *hook.borrow_mut() = f);
}

fn run(hook: &'static LocalKey<Hook>) {
    // Taken out while it runs, so that it may set another hook.
    let taken = hook.with(|hook| hook.borrow_mut().take());
    if let Some(mut f) = taken {
        f();
        hook.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                *slot = Some(f);
            }
        });
    }
}
