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

/// Decode a postcard value; the error says why it could not be decoded.
#[inline]
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
struct Append<'a>(&'a mut Vec<u8>);

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

// --- chunks: many values in one message, each able to fail alone -------------

/// A chunk item that is not a value: it panicked (in a `Serialize`,
/// `Deserialize` or the function).
pub(crate) const ITEM_PANICKED: u8 = 1;
/// A chunk item that is not a value: it could not be encoded or decoded.
pub(crate) const ITEM_ENCODE: u8 = 2;

/// The chunk header: item count (`u32`), failed items (`u32`), then the
/// byte lengths of the values (`u64`) and of the length table (`u64`).
const CHUNK_HEADER: usize = 24;

/// Writes a chunk — the arguments of a chunk call, or the outcomes of one —
/// into the end of a frame.
///
/// The layout keeps the common case as cheap as one postcard sequence: the
/// values of the items that succeeded lie back to back after the
/// [header](CHUNK_HEADER), followed by a table of their lengths (LEB128,
/// one byte for most items) and by the failed items, each as its index
/// (`u32`), tag ([`ITEM_PANICKED`] or [`ITEM_ENCODE`]), message length
/// (`u32`) and UTF-8 message. A reader finds every value's end without
/// decoding its neighbours, so one value that cannot be decoded fails alone;
/// a chunk with no failures carries no per-item tags.
///
/// Per item the caller [`write`](ChunkWriter::write)s the value and then
/// [`commit`](ChunkWriter::commit)s it, or [`fail`](ChunkWriter::fail)s it —
/// also after a panic anywhere since the previous item's end, which removes
/// whatever part of the value was written.
pub(crate) struct ChunkWriter<'a> {
    /// One serializer for the whole chunk, appending to the frame.
    ser: postcard::Serializer<Append<'a>>,
    /// Where the chunk header is.
    header_at: usize,
    /// Where the current item's value begins.
    item_at: usize,
    /// Items committed or failed so far (the current item's index).
    done: u32,
    failed: u32,
    lengths: Vec<u8>,
    failures: Vec<u8>,
}

impl<'a> ChunkWriter<'a> {
    /// Start a chunk at the end of `out`, for about `items` items.
    pub(crate) fn new(out: &'a mut Vec<u8>, items: usize) -> ChunkWriter<'a> {
        let header_at = out.len();
        out.resize(header_at + CHUNK_HEADER, 0);
        ChunkWriter {
            item_at: out.len(),
            ser: postcard::Serializer {
                output: Append(out),
            },
            header_at,
            done: 0,
            failed: 0,
            lengths: Vec::with_capacity(items),
            failures: Vec::new(),
        }
    }

    fn out(&mut self) -> &mut Vec<u8> {
        self.ser.output.0
    }

    /// Encode the current item's value. On an error, [`fail`](Self::fail)
    /// the item (it may have left part of the value).
    #[inline]
    pub(crate) fn write<T: Serialize + ?Sized>(&mut self, value: &T) -> postcard::Result<()> {
        value.serialize(&mut self.ser)
    }

    /// The current item is a value: the bytes written since the previous
    /// item ended.
    #[inline]
    pub(crate) fn commit(&mut self) {
        let end = self.ser.output.0.len();
        push_varint(&mut self.lengths, (end - self.item_at) as u64);
        self.item_at = end;
        self.done += 1;
    }

    /// The current item failed with `tag` and a message; any part of its
    /// value is dropped.
    #[cold]
    pub(crate) fn fail(&mut self, tag: u8, msg: &[u8]) {
        let at = self.item_at;
        self.out().truncate(at);
        // A message longer than 4 GiB is cut (it is only for reading).
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        self.failures.extend_from_slice(&self.done.to_le_bytes());
        self.failures.push(tag);
        self.failures.extend_from_slice(&len.to_le_bytes());
        self.failures.extend_from_slice(&msg[..len as usize]);
        self.done += 1;
        self.failed += 1;
    }

    /// Write the header and the tables; the chunk holds the items committed
    /// or failed so far.
    pub(crate) fn finish(self) {
        let out = self.ser.output.0;
        let values = out.len() - self.header_at - CHUNK_HEADER;
        let mut header = [0u8; CHUNK_HEADER];
        header[0..4].copy_from_slice(&self.done.to_le_bytes());
        header[4..8].copy_from_slice(&self.failed.to_le_bytes());
        header[8..16].copy_from_slice(&(values as u64).to_le_bytes());
        header[16..24].copy_from_slice(&(self.lengths.len() as u64).to_le_bytes());
        out[self.header_at..self.header_at + CHUNK_HEADER].copy_from_slice(&header);
        out.extend_from_slice(&self.lengths);
        out.extend_from_slice(&self.failures);
    }
}

/// One item of a chunk, as [`ChunkReader`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkItem<'a> {
    /// An encoded value.
    Value(&'a [u8]),
    /// A failed item: its tag and message.
    Failed(u8, &'a [u8]),
}

/// A chunk that does not hold what its header announces.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Reads a chunk written by [`ChunkWriter`], item by item, without trusting
/// any count or length in it.
#[derive(Debug)]
pub(crate) struct ChunkReader<'a> {
    count: u32,
    /// Failed items not read yet.
    failed: u32,
    /// The next item's index.
    next: u32,
    /// The index of the next item that is not a plain value: the next
    /// failed item, or `count` (the end).
    special: u32,
    values: &'a [u8],
    lengths: &'a [u8],
    failures: &'a [u8],
}

impl<'a> ChunkReader<'a> {
    /// The chunk that fills `bytes`, if its regions fit.
    pub(crate) fn new(bytes: &'a [u8]) -> Result<ChunkReader<'a>, Corrupt> {
        let header = bytes.get(..CHUNK_HEADER).ok_or(Corrupt)?;
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let size = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            usize::try_from(u64::from_le_bytes(b)).map_err(|_| Corrupt)
        };
        let (count, failed) = (word(0), word(4));
        let rest = &bytes[CHUNK_HEADER..];
        let values = rest.get(..size(8)?).ok_or(Corrupt)?;
        let rest = &rest[values.len()..];
        let lengths = rest.get(..size(16)?).ok_or(Corrupt)?;
        let failures = &rest[lengths.len()..];
        if failed > count {
            return Err(Corrupt);
        }
        let mut reader = ChunkReader {
            count,
            failed,
            next: 0,
            special: count,
            values,
            lengths,
            failures,
        };
        reader.find_special();
        Ok(reader)
    }

    /// How many items the header announces.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The next item; `None` after the last one, once every byte of the
    /// chunk was accounted for. After an error, every call fails.
    #[inline]
    pub(crate) fn next_item(&mut self) -> Result<Option<ChunkItem<'a>>, Corrupt> {
        if self.next == self.special {
            return self.next_special();
        }
        self.next += 1;
        // Most values are shorter than 128 bytes: a one-byte length.
        if let Some(&len) = self.lengths.first()
            && len < 0x80
            && usize::from(len) <= self.values.len()
        {
            let (value, rest) = self.values.split_at(usize::from(len));
            self.values = rest;
            self.lengths = &self.lengths[1..];
            return Ok(Some(ChunkItem::Value(value)));
        }
        self.long_value()
    }

    /// A value whose length takes more than a byte.
    #[cold]
    fn long_value(&mut self) -> Result<Option<ChunkItem<'a>>, Corrupt> {
        let len = take_varint(&mut self.lengths).and_then(|len| usize::try_from(len).ok());
        match len {
            Some(len) if len <= self.values.len() => {
                let (value, rest) = self.values.split_at(len);
                self.values = rest;
                Ok(Some(ChunkItem::Value(value)))
            }
            _ => Err(self.stop()),
        }
    }

    /// The end of the chunk, or a failed item.
    #[cold]
    fn next_special(&mut self) -> Result<Option<ChunkItem<'a>>, Corrupt> {
        if self.next == self.count {
            // Nothing may be left over.
            let whole = self.values.is_empty()
                && self.lengths.is_empty()
                && self.failures.is_empty()
                && self.failed == 0;
            return if whole { Ok(None) } else { Err(self.stop()) };
        }
        // `failures` starts with this item's index (`find_special`).
        let entry = &self.failures[4..];
        let parsed = entry.split_first().and_then(|(&tag, entry)| {
            let len = entry.get(..4)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let msg = entry[4..].get(..len)?;
            Some((tag, msg, &entry[4 + len..]))
        });
        match parsed {
            Some((tag, msg, rest))
                if (tag == ITEM_PANICKED || tag == ITEM_ENCODE) && self.failed > 0 =>
            {
                self.failed -= 1;
                self.failures = rest;
                self.next += 1;
                self.find_special();
                Ok(Some(ChunkItem::Failed(tag, msg)))
            }
            _ => Err(self.stop()),
        }
    }

    /// Where the next failed item is (the end if none is left, or if the
    /// next failure's index is not ahead: then the end finds it left over).
    fn find_special(&mut self) {
        self.special = match self.failures.get(..4) {
            Some(at) => {
                let index = u32::from_le_bytes([at[0], at[1], at[2], at[3]]);
                if index >= self.next && index < self.count {
                    index
                } else {
                    self.count
                }
            }
            None => self.count,
        };
    }

    /// Refuse the rest of the chunk.
    #[cold]
    fn stop(&mut self) -> Corrupt {
        self.next = self.count;
        self.special = self.count;
        self.failed = u32::MAX;
        Corrupt
    }
}

/// Append `n` as a LEB128 varint.
#[inline]
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Take a LEB128 varint of at most 10 bytes that fits a `u64` off `bytes`.
#[inline]
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        n |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    /// Writes a chunk of raw values (`Ok`) and failures (`Err`).
    fn chunk(items: &[Result<Vec<u8>, (u8, &str)>]) -> Vec<u8> {
        let mut out = vec![7, 7, 7];
        let mut writer = ChunkWriter::new(&mut out, items.len());
        for item in items {
            match item {
                Ok(bytes) => {
                    writer.out().extend_from_slice(bytes);
                    writer.commit();
                }
                Err((tag, msg)) => {
                    // A half-written value is dropped by the failure.
                    writer.out().extend_from_slice(b"partial");
                    writer.fail(*tag, msg.as_bytes());
                }
            }
        }
        writer.finish();
        out.split_off(3)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<ChunkItem<'_>>, Corrupt> {
        let mut reader = ChunkReader::new(bytes)?;
        let mut items = Vec::new();
        while let Some(item) = reader.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    /// Values of every length class (a length of one to four LEB128 bytes),
    /// with failures first, between and last, come back in order.
    #[test]
    fn items_of_every_length_round_trip() {
        let lens = [0usize, 1, 127, 128, 129, 16_383, 16_384, 100_000, 2_100_000];
        let mut items: Vec<Result<Vec<u8>, (u8, &str)>> = vec![Err((ITEM_PANICKED, "first"))];
        for (i, &len) in lens.iter().enumerate() {
            items.push(Ok((0..len).map(|b| (b % 251) as u8).collect()));
            if i % 3 == 0 {
                items.push(Err((ITEM_ENCODE, "between")));
            }
        }
        items.push(Err((ITEM_ENCODE, "last")));
        let bytes = chunk(&items);
        let read = read_all(&bytes).expect("a whole chunk");
        assert_eq!(read.len(), items.len());
        for (got, want) in read.iter().zip(&items) {
            match want {
                Ok(value) => assert_eq!(got, &ChunkItem::Value(value)),
                Err((tag, msg)) => assert_eq!(got, &ChunkItem::Failed(*tag, msg.as_bytes())),
            }
        }
    }

    #[test]
    fn a_chunk_of_only_failures_or_nothing_round_trips() {
        let failures = [Err((ITEM_PANICKED, "a")), Err((ITEM_ENCODE, ""))];
        assert_eq!(read_all(&chunk(&failures)).unwrap().len(), 2);
        assert!(read_all(&chunk(&[])).unwrap().is_empty());
    }

    /// A cut chunk, any changed byte, an over-long varint, an unknown tag or
    /// a failure out of order is refused or read within bounds, never read
    /// past and never a panic.
    #[test]
    fn damaged_chunks_are_refused() {
        let whole = chunk(&[
            Ok(vec![1, 2, 3]),
            Err((ITEM_ENCODE, "bad")),
            Ok(vec![4; 200]),
            Err((ITEM_PANICKED, "boom")),
        ]);
        for cut in 0..whole.len() {
            assert!(read_all(&whole[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
        for at in 0..whole.len() {
            for bit in 0..8 {
                let mut damaged = whole.clone();
                damaged[at] ^= 1 << bit;
                if let Ok(items) = read_all(&damaged) {
                    assert!(items.len() <= 4);
                }
            }
        }
        let mut wrong_tag = chunk(&[Err((ITEM_ENCODE, "x"))]);
        wrong_tag[CHUNK_HEADER + 4] = 9;
        assert_eq!(read_all(&wrong_tag), Err(Corrupt));
        let mut bad = &[0x80u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02][..];
        assert_eq!(take_varint(&mut bad), None);
        let mut max = &[0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..];
        assert_eq!(take_varint(&mut max), Some(u64::MAX));
        let mut endless = &[0x80u8; 11][..];
        assert_eq!(take_varint(&mut endless), None);
    }

    #[test]
    fn varints_round_trip() {
        for n in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, n);
            let mut rest = &out[..];
            assert_eq!(take_varint(&mut rest), Some(n));
            assert!(rest.is_empty());
        }
    }
}
