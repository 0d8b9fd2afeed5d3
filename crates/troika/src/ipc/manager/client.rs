//! The client side of a proxy: one connection to the manager, opened
//! lazily, authenticated, and dropped after any error.

use super::super::error::{IpcError, Result};
use super::ManagerAddress;
use super::protocol::{FRAME_LIMIT, Request, Response, read_frame, write_frame};
use parking_lot::Mutex;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a client waits for an answer (or to hand over a request) before
/// it gives up (a live but stuck manager; a dead one is noticed at once, by
/// end-of-file).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// One client connection, opened lazily and dropped after any error.
pub(super) struct Client {
    pub(super) addr: ManagerAddress,
    conn: Mutex<Option<UnixStream>>,
}

fn gone(e: impl std::fmt::Display) -> IpcError {
    IpcError::ManagerGone(e.to_string())
}

impl Client {
    pub(super) fn new(addr: ManagerAddress) -> Client {
        Client {
            addr,
            conn: Mutex::new(None),
        }
    }

    fn connect(&self) -> Result<UnixStream> {
        let mut s = UnixStream::connect(&self.addr.path).map_err(gone)?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(gone)?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(gone)?;
        let uid = rustix::process::geteuid().as_raw();
        match rustix::net::sockopt::socket_peercred(&s) {
            Ok(c) if c.uid.as_raw() == uid => {}
            _ => {
                return Err(IpcError::AuthFailed(
                    "the manager runs as another user".into(),
                ));
            }
        }
        write_frame(
            &mut s,
            &Request::Hello {
                token: self.addr.token,
            },
        )
        .map_err(gone)?;
        match read_frame::<Response>(&mut s, FRAME_LIMIT).map_err(gone)? {
            Response::Done => Ok(s),
            Response::Refused(why) => Err(IpcError::AuthFailed(why)),
            other => Err(gone(format!("unexpected answer {other:?}"))),
        }
    }

    pub(super) fn call(&self, req: &Request) -> Result<Response> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let Some(s) = guard.as_mut() else {
            return Err(gone("no connection"));
        };
        let res = write_frame(s, req).and_then(|()| read_frame::<Response>(s, FRAME_LIMIT));
        match res {
            Ok(Response::Refused(why)) => {
                *guard = None;
                Err(IpcError::AuthFailed(why))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                *guard = None;
                Err(gone(e))
            }
        }
    }
}

pub(super) fn unexpected(r: Response, kind: &'static str) -> IpcError {
    match r {
        Response::NoSuch { name, .. } => IpcError::NoSuchObject { kind, name },
        Response::WrongType { name } => {
            IpcError::InvalidHandle(format!("the {kind} {name:?} holds other types"))
        }
        Response::Index { index, len } => IpcError::IndexOutOfRange {
            index: index as usize,
            len: len as usize,
        },
        other => IpcError::ManagerGone(format!("unexpected answer {other:?}")),
    }
}
