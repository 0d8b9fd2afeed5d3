//! Test hooks: code a unit test runs at a chosen instant of a task's life,
//! on the thread that runs the task. Compiled into unit-test builds only.

use std::cell::RefCell;

thread_local! {
    static BEFORE_COMPLETE: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
}

/// Run `f` whenever a task run on this thread is about to decide its
/// outcome (after its code ended, before the outcome is claimed).
pub(crate) fn set_before_complete(f: Option<Box<dyn FnMut()>>) {
    BEFORE_COMPLETE.with(|hook| *hook.borrow_mut() = f);
}

pub(crate) fn before_complete() {
    // Taken out while it runs, so that it may set another hook.
    let hook = BEFORE_COMPLETE.with(|hook| hook.borrow_mut().take());
    if let Some(mut f) = hook {
        f();
        BEFORE_COMPLETE.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                *slot = Some(f);
            }
        });
    }
}
