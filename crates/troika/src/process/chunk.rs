//! A chunk: many values in one message, each able to fail alone.
//!
//! [`ProcessPool::imap`](crate::ProcessPool::imap) and friends send a
//! worker many arguments in one `CALL_CHUNK` frame and get their outcomes
//! back in one reply. Both bodies have the layout [`ChunkWriter`] writes and
//! [`ChunkReader`] reads.

use serde::Serialize;

use super::codec::Append;

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
mod tests {
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
