//! The manager's wire protocol: requests and responses, each one
//! length-prefixed postcard frame over the Unix socket.

use super::super::error::{IpcError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Largest frame before authentication (the hello).
pub(super) const HELLO_LIMIT: u32 = 1024;
/// Largest frame after it.
pub(super) const FRAME_LIMIT: u32 = 1 << 30;

#[derive(Serialize, Deserialize, Debug)]
pub(super) enum Request {
    Hello { token: [u8; 32] },
    Map { name: String, tag: u64, op: MapOp },
    List { name: String, tag: u64, op: ListOp },
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) enum MapOp {
    Create,
    Insert(Vec<u8>, Vec<u8>),
    Get(Vec<u8>),
    Remove(Vec<u8>),
    Contains(Vec<u8>),
    Len,
    Items,
    Clear,
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) enum ListOp {
    Create,
    Push(Vec<u8>),
    Extend(Vec<Vec<u8>>),
    Pop,
    Get(u64),
    Set(u64, Vec<u8>),
    Len,
    Items,
    Clear,
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) enum Response {
    Done,
    Value(Option<Vec<u8>>),
    Len(u64),
    Bool(bool),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Items(Vec<Vec<u8>>),
    Refused(String),
    NoSuch { list: bool, name: String },
    WrongType { name: String },
    Index { index: u64, len: u64 },
}

pub(super) fn write_frame(s: &mut UnixStream, msg: &impl Serialize) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&bytes);
    s.write_all(&buf)
}

pub(super) fn read_frame<T: DeserializeOwned>(
    s: &mut UnixStream,
    limit: u32,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > limit {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes over the limit"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    postcard::from_bytes(&buf).map_err(std::io::Error::other)
}

pub(super) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| IpcError::Serialization(e.to_string()))
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| IpcError::Serialization(e.to_string()))
}
