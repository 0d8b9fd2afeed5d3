//! Registered functions called by name with encoded bytes: what a worker
//! that receives calls from elsewhere (another machine, a queue) needs.
//!
//! The name is a [`RemoteFn::NAME`](super::RemoteFn::NAME); the argument and
//! the result are the function's values in troika's wire encoding (postcard),
//! produced and read with [`encode_value`] and [`decode_value`]. Only
//! functions defined with [`remote!`](crate::remote) in this program can be
//! called: a name is looked up, never code taken from the caller.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::framebuf::FrameBuf;
use super::registry::{self, unwind};
use super::wire;
use crate::futures::{ErrorKind, TaskError};

/// Whether a function of this name is registered in this program.
///
/// # Examples
///
/// ```
/// troika::remote! {
///     fn triple(x: u32) -> u32 { x * 3 }
/// }
///
/// use troika::RemoteFn;
/// assert!(troika::process::is_registered(<triple as RemoteFn>::NAME));
/// assert!(!troika::process::is_registered("no::such::function"));
/// ```
pub fn is_registered(name: &str) -> bool {
    registry::lookup(name).is_some()
}

/// Call the registered function `name` here, in this thread, with its
/// encoded argument; returns its encoded result.
///
/// An unknown name, an argument that does not decode, a panic (caught) and a
/// result that cannot be encoded are errors, never a panic of the caller.
/// To run the call in a child process, call this from inside a
/// [`remote!`](crate::remote) function submitted to a
/// [`ProcessPool`](crate::ProcessPool).
///
/// # Examples
///
/// ```
/// troika::remote! {
///     fn add(a: u64, b: u64) -> u64 { a + b }
/// }
///
/// use troika::RemoteFn;
/// use troika::process::{call_encoded, decode_value, encode_value};
///
/// let arg = encode_value(&(2u64, 3u64)).unwrap();
/// let out = call_encoded(<add as RemoteFn>::NAME, &arg).unwrap();
/// assert_eq!(decode_value::<u64>(&out).unwrap(), 5);
/// assert!(call_encoded("no::such", &arg).is_err());
/// assert!(call_encoded(<add as RemoteFn>::NAME, &[0xff]).unwrap_err().is_serialization());
/// ```
pub fn call_encoded(name: &str, arg: &[u8]) -> Result<Vec<u8>, TaskError> {
    let Some(run) = registry::lookup(name) else {
        return Err(TaskError::new(ErrorKind::Failed(format!(
            "no function named `{name}` is registered (define it with troika::remote!)"
        ))));
    };
    let mut out = FrameBuf::plain();
    let status = run(arg, false, &mut out);
    let out = out.into_plain();
    if status == wire::OK {
        return Ok(out);
    }
    let msg = String::from_utf8_lossy(&out).into_owned();
    Err(TaskError::new(match status {
        wire::PANICKED => ErrorKind::Panicked(msg),
        wire::ARG_DECODE | wire::RESULT_ENCODE => ErrorKind::Serialization(msg),
        _ => ErrorKind::Failed(msg),
    }))
}

/// Encode a value as [`call_encoded`] expects an argument (and returns a
/// result). A panic in the value's `Serialize` is caught and reported.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, TaskError> {
    let mut out = Vec::new();
    match unwind(|| registry::encode_into(value, &mut out)) {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(TaskError::new(ErrorKind::Serialization(format!(
            "encoding a value: {e}"
        )))),
        Err(panic) => Err(TaskError::new(ErrorKind::Panicked(panic))),
    }
}

/// Decode a value encoded by [`encode_value`] or returned by
/// [`call_encoded`]. A panic in the type's `Deserialize` is caught and
/// reported.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    match unwind(|| registry::decode(bytes)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(TaskError::new(ErrorKind::Serialization(format!(
            "decoding a value: {e}"
        )))),
        Err(panic) => Err(TaskError::new(ErrorKind::Panicked(panic))),
    }
}
