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

/// Per-item tags inside a chunk reply.
pub(crate) const ITEM_OK: u8 = 0;
pub(crate) const ITEM_PANICKED: u8 = 1;
pub(crate) const ITEM_ENCODE: u8 = 2;

fn trampoline<F: RemoteFn>(input: &[u8], chunk: bool, out: &mut Vec<u8>) -> u16 {
    if chunk {
        return run_chunk::<F>(input, out);
    }
    let arg: F::Arg = match postcard::from_bytes(input) {
        Ok(arg) => arg,
        Err(e) => {
            out.extend_from_slice(format!("decoding the argument in the worker: {e}").as_bytes());
            return wire::ARG_DECODE;
        }
    };
    let value = match catch_unwind(AssertUnwindSafe(|| F::run(arg))) {
        Ok(value) => value,
        Err(payload) => {
            out.extend_from_slice(crate::futures::panic_message(&*payload).as_bytes());
            return wire::PANICKED;
        }
    };
    if let Err(e) = encode_into(&value, out) {
        out.extend_from_slice(format!("encoding the result in the worker: {e}").as_bytes());
        return wire::RESULT_ENCODE;
    }
    wire::OK
}

/// A chunk: the input is a postcard `Vec<Arg>`; the reply is a `u32` count and
/// per item a tag byte and the value (or a postcard string message).
fn run_chunk<F: RemoteFn>(input: &[u8], out: &mut Vec<u8>) -> u16 {
    let args: Vec<F::Arg> = match postcard::from_bytes(input) {
        Ok(args) => args,
        Err(e) => {
            out.extend_from_slice(
                format!("decoding the chunk's arguments in the worker: {e}").as_bytes(),
            );
            return wire::ARG_DECODE;
        }
    };
    let count = u32::try_from(args.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for arg in args.into_iter().take(count as usize) {
        let mark = out.len();
        match catch_unwind(AssertUnwindSafe(|| F::run(arg))) {
            Ok(value) => {
                out.push(ITEM_OK);
                if let Err(e) = encode_into(&value, out) {
                    out.truncate(mark);
                    push_message(out, ITEM_ENCODE, &format!("encoding the result: {e}"));
                }
            }
            Err(payload) => {
                let msg = crate::futures::panic_message(&*payload);
                push_message(out, ITEM_PANICKED, &msg);
            }
        }
    }
    wire::OK
}

fn push_message(out: &mut Vec<u8>, tag: u8, msg: &str) {
    out.push(tag);
    // A string always encodes.
    let _ = encode_into(msg, out);
}

/// Append the postcard encoding of `value` to `out`. On failure `out` is left
/// as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    let mark = out.len();
    let result = postcard::serialize_with_flavor(value, Append(out));
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

/// A postcard output that appends to a borrowed `Vec`, so a failed encoding
/// leaves the bytes before it (a frame header) intact.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
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
