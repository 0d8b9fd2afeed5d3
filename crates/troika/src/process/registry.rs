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
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunk::{ChunkItem, ChunkReader, ChunkWriter, ITEM_ENCODE, ITEM_PANICKED};
use super::codec;
pub(crate) use super::codec::{decode, decode_typed, encode_into, encode_typed};
use super::framebuf::FrameBuf;
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
pub(crate) type Trampoline = fn(input: &[u8], chunk: bool, out: &mut FrameBuf) -> u16;

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
///
/// Both sides look a name up for every call (the parent checks that it is
/// registered, the worker finds what to run), so the index hashes with
/// [`NameHasher`], a word-at-a-time multiplicative hash, instead of SipHash:
/// the names are the program's own (`remote!` in its source), not input an
/// attacker chooses, so flooding is not a concern, and SipHash over a
/// 40-byte module path cost more than the rest of the lookup.
pub(crate) fn lookup(name: &str) -> Option<Trampoline> {
    lookup_entry(name).map(|(_, run)| run)
}

/// [`lookup`], with the registered name (which lives as long as the program).
pub(crate) fn lookup_entry(name: &str) -> Option<(&'static str, Trampoline)> {
    type Index = HashMap<&'static str, Trampoline, BuildHasherDefault<NameHasher>>;
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX
        .get_or_init(|| REMOTE_FNS.iter().map(|r| (r.name, r.run)).collect())
        .get_key_value(name)
        .map(|(name, run)| (*name, *run))
}

/// The registry's hasher: 8 bytes per step, rotate, xor, multiply (the
/// scheme of rustc's `FxHasher`). A name that is not in the index (a
/// worker asked for a function it lacks) still costs one hash and a
/// probe, and is compared byte for byte before it is accepted.
#[derive(Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl NameHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in words.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length tells "ab" from "ab\0".
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Run `f`, turning a panic into its message.
pub(crate) fn unwind<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| crate::futures::panic_message(&*payload))
}

fn trampoline<F: RemoteFn>(input: &[u8], chunk: bool, out: &mut FrameBuf) -> u16 {
    if chunk {
        return run_chunk::<F>(input, out.bytes_mut());
    }
    let mark = out.mark();
    match run_one::<F>(input, out) {
        Ok(()) => wire::OK,
        Err((status, msg)) => {
            out.truncate(mark);
            out.bytes_mut().extend_from_slice(msg.as_bytes());
            status
        }
    }
}

/// Decode the argument, run the function, append the encoded value to `out`.
/// On failure, the reply status and message (and `out` may hold a part of
/// the value). User code — `Deserialize`, the function, `Serialize`, `Drop`
/// — runs under `catch_unwind`: a panic in any of them fails the call as a
/// panic, and the worker lives on.
fn run_one<F: RemoteFn>(input: &[u8], out: &mut FrameBuf) -> Result<(), (u16, String)> {
    // One `catch_unwind` around the three stages (it is cheap, but not free
    // per item of a chunk); a panic in any of them is the call's panic.
    let staged = unwind(|| {
        let arg: F::Arg = decode_typed(input).map_err(|e| {
            (
                wire::ARG_DECODE,
                format!("decoding the argument in the worker: {e}"),
            )
        })?;
        let value = F::run(arg);
        let encoded = encode_typed(&value, out).map_err(|e| {
            (
                wire::RESULT_ENCODE,
                format!("encoding the result in the worker: {e}"),
            )
        });
        // A large byte vector's buffer serves the next call's argument.
        super::spare::recycle(value);
        encoded
    });
    match staged {
        Ok(done) => done,
        Err(panic) => Err((wire::PANICKED, panic)),
    }
}

/// A chunk (see [`ChunkWriter`]): the input holds the arguments, the reply
/// one outcome per item, so that one bad item fails alone.
///
/// The items run in one pass under one `catch_unwind`, each decoded, run,
/// encoded and dropped in turn; a panic fails the item it struck, and the
/// pass goes on from the next item under a new `catch_unwind` (no item runs
/// twice). An argument the parent could not encode arrives failed and is
/// echoed back.
fn run_chunk<F: RemoteFn>(input: &[u8], out: &mut Vec<u8>) -> u16 {
    let Ok(mut items) = ChunkReader::new(input) else {
        out.extend_from_slice(b"malformed chunk: its regions do not fit the frame");
        return wire::BAD_FRAME;
    };
    let mut reply = ChunkWriter::new(out, items.count() as usize);
    loop {
        let pass = unwind(|| {
            // A damaged chunk ends the pass: the parent reports the items
            // missing from the reply.
            while let Ok(Some(item)) = items.next_item() {
                match item {
                    ChunkItem::Value(bytes) => match postcard::from_bytes::<F::Arg>(bytes) {
                        Ok(arg) => {
                            let value = F::run(arg);
                            match reply.write(&value) {
                                Ok(()) => {
                                    drop(value);
                                    reply.commit();
                                }
                                Err(e) => {
                                    let msg = format!(
                                        "encoding the result in the worker: {}",
                                        codec::encode_error(&value, e)
                                    );
                                    drop(value);
                                    reply.fail(ITEM_ENCODE, msg.as_bytes());
                                }
                            }
                        }
                        Err(e) => {
                            let msg = format!(
                                "decoding the argument in the worker: {}",
                                codec::decode_error::<F::Arg>(bytes, e)
                            );
                            reply.fail(ITEM_ENCODE, msg.as_bytes());
                        }
                    },
                    ChunkItem::Failed(tag, msg) => reply.fail(tag, msg),
                }
            }
        });
        match pass {
            Ok(()) => break,
            Err(panic) => reply.fail(ITEM_PANICKED, panic.as_bytes()),
        }
    }
    reply.finish();
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
///     /// Trial division by odd numbers.
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
mod tests {
    use super::*;

    crate::remote! {
        fn registered_here(x: u8) -> u8 { x }
    }

    #[test]
    fn every_registered_name_is_found_and_near_misses_are_not() {
        let name = <registered_here as RemoteFn>::NAME;
        assert!(lookup(name).is_some());
        for r in REMOTE_FNS.iter() {
            assert!(lookup(r.name).is_some_and(|run| std::ptr::fn_addr_eq(run, r.run)));
        }
        // A name cut short, extended, or with a byte changed is unknown.
        let cut = &name[..name.len() - 1];
        let zero = format!("{name}\0");
        let longer = format!("{name}x");
        let mut changed = name.as_bytes().to_vec();
        changed[name.len() / 2] ^= 1;
        let changed = String::from_utf8(changed).unwrap();
        for miss in [cut, &zero, &longer, &changed, "", "x"] {
            assert!(lookup(miss).is_none(), "{miss:?} was found");
        }
    }

    /// The hash tells apart names that differ only in a trailing zero byte
    /// or in length (a tail shorter than a word).
    #[test]
    fn the_name_hash_sees_the_length_of_the_tail() {
        let hash = |bytes: &[u8]| {
            let mut h = NameHasher::default();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(hash(b"ab"), hash(b"ab\0"));
        assert_ne!(hash(b"abcdefgh"), hash(b"abcdefgh\0"));
        assert_ne!(hash(b""), hash(b"\0"));
    }
}
