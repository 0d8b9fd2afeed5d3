//! The one function a worker's local process pool runs: a registered
//! function looked up by name, with the task's encoded argument.

use crate::wire::WireError;

troika::remote! {
    /// Run the registered function `name` on its encoded argument, in a
    /// process of the worker's pool. Not public API.
    pub(crate) fn run_by_name(name: String, arg: Vec<u8>) -> Result<Vec<u8>, WireError> {
        troika::process::call_encoded(&name, &arg).map_err(|e| WireError::from_task_error(&e))
    }
}
