//! Postcard encoding that keeps serde's own error messages.
//!
//! postcard turns every custom error — `S::Error::custom("bad value 666")`
//! in a user's `Serialize`, a derive's "invalid length 3, expected …" — into
//! a bare `SerdeSerCustom`/`SerdeDeCustom` and drops the text. The fast path
//! is plain postcard; only when it fails with such an error is the value run
//! again through a twin whose error type keeps the message:
//!
//! - encoding: a [`Probe`] serializer that walks the value, writes nothing
//!   and stops at the first error, with its message;
//! - decoding: the same postcard deserializer wrapped in `Capture`, which
//!   hands the user's `Deserialize` an error type that keeps messages (and
//!   wraps every visitor, seed and access on the way down, so that nested
//!   types get it too).
//!
//! A twin that does not fail the same way (a `Serialize` that is not
//! deterministic) leaves postcard's own message.

use std::cell::RefCell;
use std::fmt::{self, Display};

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

use super::framebuf::{Encoder, FrameBuf};

/// Append the postcard encoding of `value` to `out`. On failure `out` is left
/// as it was and the error says why.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mark = out.len();
    match postcard::serialize_with_flavor(value, Append(out)) {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(mark);
            Err(encode_error(value, e))
        }
    }
}

/// Why `value` could not be encoded, given the error postcard returned: the
/// message of the value's own error where postcard dropped it.
#[cold]
pub(crate) fn encode_error<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> String {
    if e == postcard::Error::SerdeSerCustom
        && let Err(Message(msg)) = value.serialize(Probe)
    {
        return msg;
    }
    e.to_string()
}

/// [`encode_into`] for a value of a known type, into a [`FrameBuf`] (whose
/// body moves to shared memory when it grows large). On failure the buffer
/// is left as it was and the error says why.
///
/// A `Vec<u8>` is written in one copy: postcard encodes it as a sequence of
/// bytes, one call per byte; the encoding is the same (the length as a
/// varint, then the bytes), which [`decode_typed`] reads back the same way.
pub(crate) fn encode_typed<T: Serialize + 'static>(
    value: &T,
    out: &mut FrameBuf,
) -> Result<(), String> {
    let mark = out.mark();
    let done = match (value as &dyn std::any::Any).downcast_ref::<Vec<u8>>() {
        Some(bytes) => {
            encode_byte_vec(bytes, out).map_err(|e| format!("writing to shared memory: {e}"))
        }
        None => postcard::serialize_with_flavor(value, Encoder(out)).map_err(|e| {
            match out.take_failure() {
                Some(io) => format!("writing to shared memory: {io}"),
                None => encode_error(value, e),
            }
        }),
    };
    if done.is_err() {
        out.truncate(mark);
    }
    done
}

/// Postcard's encoding of a byte vector: its length as a varint, then the
/// bytes.
fn encode_byte_vec(bytes: &[u8], out: &mut FrameBuf) -> std::io::Result<()> {
    let mut varint = [0u8; 10];
    let mut used = 0;
    let mut len = bytes.len() as u64;
    while len >= 0x80 {
        varint[used] = (len as u8) | 0x80;
        used += 1;
        len >>= 7;
    }
    varint[used] = len as u8;
    out.extend(&varint[..=used])?;
    out.extend(bytes)
}

/// [`decode`] for a value of a known type: a `Vec<u8>` is read in one copy
/// (see [`encode_typed`]). Input it cannot read goes to postcard, for its
/// error message.
pub(crate) fn decode_typed<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, String> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Vec<u8>>()
        && let Some(vec) = byte_vec(bytes)
    {
        let boxed: Box<dyn std::any::Any> = Box::new(vec);
        if let Ok(value) = boxed.downcast::<T>() {
            return Ok(*value);
        }
    }
    decode(bytes)
}

/// A postcard sequence of bytes: a varint length (at most 10 bytes) and as
/// many bytes. Trailing bytes are ignored, as postcard does.
fn byte_vec(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut len: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = usize::try_from(len).ok()?;
            return bytes.get(i + 1..)?.get(..len).map(copy_to_vec);
        }
    }
    None
}

/// A copy of `bytes` in a `Vec`: for a large one, a spare buffer of this
/// process if one fits (`spare.rs`), else a new one that asks the kernel
/// for transparent huge pages first: its pages are fresh, and faulting them in
/// 4 KiB at a time cost several times the copy itself (see
/// `benchmarks/fresh_pages.c`). Where huge pages are off, the advice is
/// ignored.
pub(crate) fn copy_to_vec(bytes: &[u8]) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    if bytes.len() < 2 * HUGE {
        return bytes.to_vec();
    }
    // A buffer this process dropped, whose pages are in memory: the copy
    // alone (see `spare.rs`).
    if let Some(mut vec) = super::spare::take(bytes.len()) {
        vec.extend_from_slice(bytes);
        return vec;
    }
    let mut vec = Vec::with_capacity(bytes.len());
    let start = vec.as_mut_ptr() as usize;
    let begin = start.next_multiple_of(HUGE);
    let end = (start + bytes.len()) / HUGE * HUGE;
    if end > begin {
        // SAFETY: `begin..end` lies inside the allocation `vec` owns (it is
        // rounded inwards to whole huge pages), nothing else refers to it,
        // and `MADV_HUGEPAGE` only changes how the kernel backs those pages,
        // never their contents or addresses.
        let _ = unsafe {
            rustix::mm::madvise(
                begin as *mut std::ffi::c_void,
                end - begin,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
    vec.extend_from_slice(bytes);
    vec
}

/// Decode a postcard value; the error says why it could not be decoded.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| decode_error::<T>(bytes, e))
}

/// Why `bytes` could not be decoded as a `T`, given the error postcard
/// returned: the message of the type's own error where postcard dropped it.
#[cold]
pub(crate) fn decode_error<T: DeserializeOwned>(bytes: &[u8], e: postcard::Error) -> String {
    if e != postcard::Error::SerdeDeCustom {
        return e.to_string();
    }
    STASH.with(|s| s.borrow_mut().take());
    let mut de = postcard::Deserializer::from_bytes(bytes);
    match T::deserialize(Capture(&mut de)) {
        Err(Message(msg)) => msg,
        Ok(_) => e.to_string(),
    }
}

/// A postcard output that appends to a borrowed `Vec`, so a failed encoding
/// leaves the bytes before it (a frame header) intact.
pub(crate) struct Append<'a>(pub(crate) &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // postcard hands over every varint as a short slice. A copy of a
        // known size compiles to a few moves; a call to `memcpy` for a
        // handful of bytes dominated the encoding of a chunk of integers.
        match *data {
            [a] => self.0.push(a),
            [a, b] => self.0.extend_from_slice(&[a, b]),
            [a, b, c] => self.0.extend_from_slice(&[a, b, c]),
            [a, b, c, d] => self.0.extend_from_slice(&[a, b, c, d]),
            _ if data.len() <= 16 => {
                for &byte in data {
                    self.0.push(byte);
                }
            }
            _ => self.0.extend_from_slice(data),
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// An error that keeps its message.
#[derive(Debug)]
struct Message(String);

impl Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ser::Error for Message {
    fn custom<T: Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

impl de::Error for Message {
    fn custom<T: Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

// --- encoding: a serializer that only looks for the error ---------------------

/// Walks a value like postcard's serializer (not human-readable), writes
/// nothing, and fails with the first error the value raises.
struct Probe;

macro_rules! probe_scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Message> { Ok(()) })*
    };
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Message;
    type SerializeSeq = Probe;
    type SerializeTuple = Probe;
    type SerializeTupleStruct = Probe;
    type SerializeTupleVariant = Probe;
    type SerializeMap = Probe;
    type SerializeStruct = Probe;
    type SerializeStructVariant = Probe;

    probe_scalars!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<(), Message> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Message> {
        value.serialize(Probe)
    }

    fn serialize_unit(self) -> Result<(), Message> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Message> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        value.serialize(Probe)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        value.serialize(Probe)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_tuple(self, _: usize) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Message> {
        Ok(Probe)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! probe_compound {
    ($($trait:ident :: $method:ident($($key:ty)?)),* $(,)?) => {
        $(
            impl ser::$trait for Probe {
                type Ok = ();
                type Error = Message;

                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $(_: $key,)?
                    value: &T,
                ) -> Result<(), Message> {
                    value.serialize(Probe)
                }

                fn end(self) -> Result<(), Message> {
                    Ok(())
                }
            }
        )*
    };
}

probe_compound!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Probe {
    type Ok = ();
    type Error = Message;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Message> {
        key.serialize(Probe)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Message> {
        value.serialize(Probe)
    }

    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

// --- decoding: postcard's deserializer with an error type that keeps messages --

thread_local! {
    /// The message of a [`Message`] that had to cross postcard's error type
    /// (which drops it) on its way up: postcard calls our visitors and seeds
    /// with its own error type.
    static STASH: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Into postcard's error, keeping the message aside.
fn down<E: de::Error>(err: Message) -> E {
    let inner = E::custom(&err.0);
    STASH.with(|s| *s.borrow_mut() = Some(err.0));
    inner
}

/// A visitor (or seed, or access) of the user's, given to postcard.
struct Wrap<X>(X);

macro_rules! wrap_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.0.$method::<Message>(v).map_err(down)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    wrap_visits!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none::<Message>().map_err(down)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit::<Message>().map_err(down)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Capture(d)).map_err(down)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Capture(d)).map_err(down)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Wrap(seq)).map_err(down)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Wrap(map)).map_err(down)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Wrap(data)).map_err(down)
    }
}

/// Back from postcard's error: the kept message if the inner
/// error stands for one (its own message otherwise).
fn up_any<E: Display>(err: E) -> Message {
    let text = err.to_string();
    if text == postcard::Error::SerdeDeCustom.to_string()
        && let Some(msg) = STASH.with(|s| s.borrow_mut().take())
    {
        return Message(msg);
    }
    Message(text)
}

/// A deserializer (postcard's, at the top or handed to a visitor or seed)
/// whose error type, for the user's `Deserialize`, is [`Message`].
struct Capture<D>(D);

macro_rules! capture_methods {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Message> {
                self.0.$method($($arg,)* Wrap(visitor)).map_err(up_any)
            }
        )*
    };
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Capture<D> {
    type Error = Message;

    capture_methods!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Capture(d)).map_err(down)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Wrap<A> {
    type Error = Message;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Message> {
        self.0.next_element_seed(Wrap(seed)).map_err(up_any)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Wrap<A> {
    type Error = Message;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Message> {
        self.0.next_key_seed(Wrap(seed)).map_err(up_any)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Message> {
        self.0.next_value_seed(Wrap(seed)).map_err(up_any)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<A> {
    type Error = Message;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Wrap<A::Variant>), Message> {
        self.0
            .variant_seed(Wrap(seed))
            .map(|(value, variant)| (value, Wrap(variant)))
            .map_err(up_any)
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<A> {
    type Error = Message;

    fn unit_variant(self) -> Result<(), Message> {
        self.0.unit_variant().map_err(up_any)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Message> {
        self.0.newtype_variant_seed(Wrap(seed)).map_err(up_any)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Message> {
        self.0.tuple_variant(len, Wrap(visitor)).map_err(up_any)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.0.struct_variant(fields, Wrap(visitor)).map_err(up_any)
    }
}

#[cfg(test)]
mod tests {
    /// The one-copy path for `Vec<u8>` writes and reads postcard's own
    /// encoding of it, both ways.
    #[test]
    fn byte_vectors_take_the_one_copy_path_with_postcard_s_encoding() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = super::FrameBuf::plain();
            super::encode_typed(&value, &mut buf).unwrap();
            let fast = buf.into_plain();
            assert_eq!(fast, postcard::to_stdvec(&value).unwrap());
            let back: Vec<u8> = super::decode_typed(&fast).unwrap();
            assert_eq!(back, value);
            let slow: Vec<u8> = super::decode(&fast).unwrap();
            assert_eq!(slow, value);
        }
        assert!(super::decode_typed::<Vec<u8>>(&[5, 1, 2]).is_err());
        assert!(super::decode_typed::<Vec<u8>>(&[0xff; 11]).is_err());
    }

    /// Copies of every size around the huge-page threshold are exact (the
    /// advice covers only whole huge pages inside the allocation).
    #[test]
    fn large_copies_are_exact() {
        for len in [
            0,
            1,
            (4 << 20) - 1,
            4 << 20,
            (4 << 20) + 1,
            (6 << 20) + 4097,
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
                .collect();
            assert!(super::copy_to_vec(&bytes) == bytes, "a copy of {len} bytes");
        }
    }
}
