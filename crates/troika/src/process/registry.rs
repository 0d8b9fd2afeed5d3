//! Naming functions to a child process: the [`RemoteFn`] trait, the
//! [`remote!`](crate::remote) macro that implements it, and the link-time
//! registry the worker looks names up in.
//!
//! A closure cannot cross into another process, and a function pointer means
//! nothing there (procspawn ships an offset from a base symbol and transmutes
//! it back). troika names a function by a string instead: `remote!` defines a
//! zero-sized type per function, whose [`RemoteFn::NAME`] is the function's
//! module path, and places a `(name, trampoline)` entry in a [`linkme`]
//! distributed slice. The slice is assembled by the linker, so it is complete
//! before any code runs — the worker can look names up even from the
//! constructor that turns a re-executed child into a worker (see
//! [`init`](crate::process::init)). The same names would serve a worker on
//! another machine.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use super::codec::{decode, encode_into};
use super::wire;

/// A function that can run in a child process.
///
/// Do not implement it by hand: define the function with
/// [`remote!`](crate::remote), which also registers it so that a worker can
/// find it by [`NAME`](RemoteFn::NAME). The implementing type is a zero-sized
/// handle named like the function, passed by value to
/// [`ProcessPool::submit`](crate::ProcessPool::submit) and friends.
///
/// # Examples
///
/// ```
/// troika::remote! {
///     /// Add two numbers (in whichever process runs it).
///     pub fn add(a: u64, b: u64) -> u64 {
///         a + b
///     }
/// }
///
/// use troika::RemoteFn;
/// assert_eq!(add::call(2, 3), 5); // a plain local call
/// assert!(<add as RemoteFn>::NAME.ends_with("::add"));
/// ```
pub trait RemoteFn: Copy + Send + Sync + 'static {
    /// The argument: the single parameter's type, or a tuple of the
    /// parameters' types (`()` for none).
    type Arg: Serialize + DeserializeOwned + Send + 'static;
    /// The return type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name: the defining module's path and the function name.
    const NAME: &'static str;
    /// Run the function here, in this process.
    fn run(arg: Self::Arg) -> Self::Output;
}

/// Run a request for function `F`: decode the input, call, encode the reply
/// body into `out`. Returns the reply status.
type Trampoline = fn(input: &[u8], chunk: bool, out: &mut Vec<u8>) -> u16;

/// One entry of the registry. Public only for [`remote!`](crate::remote).
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration {
    name: &'static str,
    run: Trampoline,
}

impl Registration {
    /// The entry for `F`.
    pub const fn of<F: RemoteFn>() -> Registration {
        Registration {
            name: F::NAME,
            run: trampoline::<F>,
        }
    }
}

/// Every function defined with `remote!` in the program, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static REMOTE_FNS: [Registration];

/// Find a registered function by name.
pub(crate) fn lookup(name: &str) -> Option<Trampoline> {
    static INDEX: OnceLock<HashMap<&'static str, Trampoline>> = OnceLock::new();
    INDEX
        .get_or_init(|| REMOTE_FNS.iter().map(|r| (r.name, r.run)).collect())
        .get(name)
        .copied()
}

/// Per-item tags inside a chunk call or reply: the item's bytes are a
/// postcard value ([`ITEM_OK`]) or a UTF-8 message saying why there is none.
pub(crate) const ITEM_OK: u8 = 0;
/// Panicked (in the parent's `Serialize`, or in the worker).
pub(crate) const ITEM_PANICKED: u8 = 1;
/// Could not be encoded or decoded.
pub(crate) const ITEM_ENCODE: u8 = 2;

/// Bytes reserved before an item's body: its tag and one byte of its
/// length, a LEB128 varint (most items are short; a longer length moves the
/// body up by the extra bytes).
const ITEM_HEADER: usize = 2;

/// Start an item with `tag` in `out`; returns where it begins, for
/// [`finish_item`].
#[inline]
pub(crate) fn begin_item(out: &mut Vec<u8>, tag: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[tag, 0]);
    at
}

/// Write the length of the item begun at `at`. An item too long for a
/// `u32` length is replaced by an [`ITEM_ENCODE`] message.
#[inline]
pub(crate) fn finish_item(out: &mut Vec<u8>, at: usize) {
    let body = at + ITEM_HEADER;
    let len = out.len() - body;
    if len < 0x80 {
        out[at + 1] = len as u8;
        return;
    }
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(at);
        push_message(
            out,
            ITEM_ENCODE,
            &format!("one item of a chunk encodes to {len} bytes; an item may have at most 4 GiB"),
        );
        return;
    };
    let mut varint = [0u8; 5];
    let mut n = 0;
    let mut v = len32;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            varint[n] = byte;
            n += 1;
            break;
        }
        varint[n] = byte | 0x80;
        n += 1;
    }
    // Make room for the length's extra bytes, then write it.
    let end = out.len();
    out.resize(end + n - 1, 0);
    out.copy_within(body..end, body + n - 1);
    out[at + 1..at + 1 + n].copy_from_slice(&varint[..n]);
}

/// Append an item holding a message.
pub(crate) fn push_message(out: &mut Vec<u8>, tag: u8, msg: &str) {
    let at = begin_item(out, tag);
    out.extend_from_slice(msg.as_bytes());
    finish_item(out, at);
}

/// Split the first item off `bytes`: its tag, its body and the rest. `None`
/// if `bytes` is too short for the item its header announces, or its length
/// is not a varint of at most 5 bytes that fits a `u32`.
#[inline]
pub(crate) fn split_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, mut rest) = bytes.split_first()?;
    let mut len: u64 = 0;
    for shift in (0..35).step_by(7) {
        let (&byte, after) = rest.split_first()?;
        rest = after;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let len = usize::try_from(u32::try_from(len).ok()?).ok()?;
            return (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]));
        }
    }
    None
}

/// Split a chunk's leading `u32` item count off `bytes`.
pub(crate) fn split_count(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    Some((count, &bytes[4..]))
}

/// Run `f`, turning a panic into its message.
pub(crate) fn unwind<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| crate::futures::panic_message(&*payload))
}

fn trampoline<F: RemoteFn>(input: &[u8], chunk: bool, out: &mut Vec<u8>) -> u16 {
    if chunk {
        return run_chunk::<F>(input, out);
    }
    let mark = out.len();
    match run_one::<F>(input, out) {
        Ok(()) => wire::OK,
        Err((status, msg)) => {
            out.truncate(mark);
            out.extend_from_slice(msg.as_bytes());
            status
        }
    }
}

/// Decode the argument, run the function, append the encoded value to `out`.
/// On failure, the reply status and message (and `out` may hold a part of
/// the value). User code — `Deserialize`, the function, `Serialize`, `Drop`
/// — runs under `catch_unwind`: a panic in any of them fails the call as a
/// panic, and the worker lives on.
fn run_one<F: RemoteFn>(input: &[u8], out: &mut Vec<u8>) -> Result<(), (u16, String)> {
    // One `catch_unwind` around the three stages (it is cheap, but not free
    // per item of a chunk); a panic in any of them is the call's panic.
    let staged = unwind(|| {
        let arg: F::Arg = decode(input).map_err(|e| {
            (
                wire::ARG_DECODE,
                format!("decoding the argument in the worker: {e}"),
            )
        })?;
        let value = F::run(arg);
        encode_into(&value, out).map_err(|e| {
            (
                wire::RESULT_ENCODE,
                format!("encoding the result in the worker: {e}"),
            )
        })
    });
    match staged {
        Ok(done) => done,
        Err(panic) => Err((wire::PANICKED, panic)),
    }
}

/// A chunk: the input is a `u32` count and one item per argument (see
/// [`begin_item`]); the reply is a `u32` count and one item per outcome, so
/// that one bad item fails alone.
fn run_chunk<F: RemoteFn>(input: &[u8], out: &mut Vec<u8>) -> u16 {
    let Some((count, mut rest)) = split_count(input) else {
        out.extend_from_slice(b"malformed chunk: no item count");
        return wire::BAD_FRAME;
    };
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut done: u32 = 0;
    while done < count {
        // A truncated chunk: the parent reports the missing items.
        let Some((tag, body, after)) = split_item(rest) else {
            break;
        };
        rest = after;
        if tag == ITEM_OK {
            let at = begin_item(out, ITEM_OK);
            match run_one::<F>(body, out) {
                Ok(()) => finish_item(out, at),
                Err((status, msg)) => {
                    out.truncate(at);
                    let tag = if status == wire::PANICKED {
                        ITEM_PANICKED
                    } else {
                        ITEM_ENCODE
                    };
                    push_message(out, tag, &msg);
                }
            }
        } else {
            // The parent could not encode this argument: echo its message.
            let at = begin_item(out, tag);
            out.extend_from_slice(body);
            finish_item(out, at);
        }
        done += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&done.to_le_bytes());
    wire::OK
}

/// Define functions that can run in a child process.
///
/// Each `fn` becomes a zero-sized type of the same name implementing
/// [`RemoteFn`], registered under its module path so that a worker process —
/// the same binary, re-executed — can find it. Pass that type to
/// [`ProcessPool::submit`](crate::ProcessPool::submit),
/// [`Process::spawn`](crate::Process::spawn) and the map calls; call it
/// locally with `name::call(args…)`.
///
/// The parameters and the return type must implement serde's `Serialize` and
/// `DeserializeOwned`: they cross the process boundary encoded with postcard.
/// A function with one parameter takes that type as its argument; with
/// several, a tuple of them; with none, `()`.
///
/// # Examples
///
/// ```
/// troika::remote! {
///     /// The seed's trial division.
///     pub fn is_prime(n: u64) -> bool {
///         n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
///     }
///
///     fn greet(name: String, times: usize) -> String {
///         format!("hello {name}! ").repeat(times)
///     }
/// }
///
/// fn main() {
///     troika::init();
///     let pool = troika::ProcessPool::new(1).unwrap();
///     assert!(pool.submit(is_prime, 97).result().unwrap());
///     let hello = pool.submit(greet, ("troika".to_string(), 2)).result().unwrap();
///     assert_eq!(hello, "hello troika! hello troika! ");
/// }
/// ```
#[macro_export]
macro_rules! remote {
    () => {};
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $arg:ident : $ty:ty $(,)? ) -> $out:ty $body:block
        $($rest:tt)*
    ) => {
        $crate::__remote_define! {
            [$(#[$meta])*] $vis $name, $out, $body,
            arg_ty = $ty,
            pattern = $arg,
            params = ($arg : $ty),
            args = ($arg)
        }
        $crate::remote! { $($rest)* }
    };
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $out:ty $body:block
        $($rest:tt)*
    ) => {
        $crate::__remote_define! {
            [$(#[$meta])*] $vis $name, $out, $body,
            arg_ty = ($($ty,)*),
            pattern = ($($arg,)*),
            params = ($($arg : $ty),*),
            args = (($($arg,)*))
        }
        $crate::remote! { $($rest)* }
    };
}

/// The body of [`remote!`]; not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __remote_define {
    (
        [$(#[$meta:meta])*] $vis:vis $name:ident, $out:ty, $body:block,
        arg_ty = $arg_ty:ty,
        pattern = $pattern:pat,
        params = ($($params:tt)*),
        args = ($args:expr)
    ) => {
        $(#[$meta])*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $name {
            /// Run the function here, in this process.
            #[allow(dead_code)]
            $vis fn call($($params)*) -> $out {
                <$name as $crate::RemoteFn>::run($args)
            }
        }

        impl $crate::RemoteFn for $name {
            type Arg = $arg_ty;
            type Output = $out;
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));
            #[allow(unused_parens)]
            fn run($pattern: $arg_ty) -> $out $body
        }

        const _: () = {
            #[$crate::process::__linkme::distributed_slice($crate::process::__registry::REMOTE_FNS)]
            #[linkme(crate = $crate::process::__linkme)]
            static REGISTRATION: $crate::process::__registry::Registration =
                $crate::process::__registry::Registration::of::<$name>();
        };
    };
}

#[cfg(test)]
mod item_tests {
    use super::{ITEM_OK, ITEM_PANICKED, begin_item, finish_item, split_item};

    /// Items of every length class round-trip, back to back: a length that
    /// needs more than the reserved byte moves its body up correctly.
    #[test]
    fn items_of_every_length_round_trip() {
        let lens = [0usize, 1, 127, 128, 129, 16_383, 16_384, 100_000, 2_100_000];
        let mut out = vec![9, 9];
        for (i, &len) in lens.iter().enumerate() {
            let at = begin_item(&mut out, if i % 2 == 0 { ITEM_OK } else { ITEM_PANICKED });
            out.extend((0..len).map(|b| (b % 251) as u8));
            finish_item(&mut out, at);
        }
        let mut rest = &out[2..];
        for (i, &len) in lens.iter().enumerate() {
            let (tag, body, after) = split_item(rest).expect("a whole item");
            assert_eq!(tag, if i % 2 == 0 { ITEM_OK } else { ITEM_PANICKED });
            assert_eq!(body.len(), len);
            assert!(body.iter().enumerate().all(|(b, &v)| v == (b % 251) as u8));
            rest = after;
        }
        assert!(rest.is_empty());
    }

    /// A cut item or an over-long length varint is refused, never read past.
    #[test]
    fn damaged_items_are_refused() {
        assert!(split_item(&[]).is_none());
        assert!(split_item(&[ITEM_OK]).is_none());
        assert!(split_item(&[ITEM_OK, 5, 1, 2]).is_none());
        assert!(split_item(&[ITEM_OK, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_none());
        assert!(split_item(&[ITEM_OK, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_none());
    }
}
