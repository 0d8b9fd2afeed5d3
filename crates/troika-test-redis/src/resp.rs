//! Just enough RESP2 to drive a test server: commands go out as arrays of
//! bulk strings, replies come back as [`Reply`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one command may take before [`Connection::command`] gives up
/// with a timeout error: generous, it is a failure path only.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Nesting deeper than this in a reply is treated as garbage, so a hostile
/// peer cannot overflow the stack.
const MAX_DEPTH: usize = 32;

/// Redis's own limit on one bulk string (`proto-max-bulk-len`).
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// One RESP2 reply.
///
/// # Examples
///
/// ```
/// use troika_test_redis::Reply;
///
/// let pong = Reply::Simple("PONG".into());
/// assert_eq!(pong.as_str(), Some("PONG"));
/// assert!(!pong.is_error());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status line.
    Simple(String),
    /// `-ERR ...`: an error line, without the leading `-`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`; `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` is the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is an error reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::Reply;
    ///
    /// assert!(Reply::Error("NOAUTH Authentication required.".into()).is_error());
    /// ```
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The text of a status, error or UTF-8 bulk reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::Reply;
    ///
    /// assert_eq!(Reply::Bulk(Some(b"v".to_vec())).as_str(), Some("v"));
    /// assert_eq!(Reply::Bulk(None).as_str(), None);
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Error(s) => Some(s),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A plain RESP connection: no authentication of its own, no reconnects.
///
/// [`RedisServer::command`](crate::RedisServer::command) opens one per call;
/// open one yourself to speak to a server through a [`TcpProxy`](crate::TcpProxy),
/// to send a wrong password, or to keep one connection across commands.
///
/// # Examples
///
/// ```
/// use troika_test_redis::{Connection, RedisServer, Reply};
///
/// let server = RedisServer::start();
/// let mut conn = Connection::tcp(server.addr().unwrap()).unwrap();
/// assert_eq!(conn.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
/// ```
pub struct Connection {
    reader: BufReader<Stream>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.reader.get_ref() {
            Stream::Tcp(_) => "tcp",
            Stream::Unix(_) => "unix",
        };
        f.debug_struct("Connection").field("kind", &kind).finish()
    }
}

impl Connection {
    /// Connects over TCP (connect and every read and write time out after 30 s).
    ///
    /// # Errors
    ///
    /// The connect error, e.g. `ConnectionRefused`.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer};
    ///
    /// let server = RedisServer::start();
    /// assert!(Connection::tcp(server.addr().unwrap()).is_ok());
    /// ```
    pub fn tcp(addr: SocketAddr) -> io::Result<Connection> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::new(Stream::Tcp(s)),
        })
    }

    /// Connects to a Unix socket (reads and writes time out after 30 s).
    ///
    /// # Errors
    ///
    /// The connect error, e.g. `NotFound`.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer};
    ///
    /// let server = RedisServer::builder().unix_socket(true).start();
    /// assert!(Connection::unix(server.socket_path().unwrap()).is_ok());
    /// ```
    pub fn unix(path: &Path) -> io::Result<Connection> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::new(Stream::Unix(s)),
        })
    }

    /// Sends one command and reads its reply. An error *reply* is `Ok(Reply::Error(..))`;
    /// `Err` means the connection failed (closed, timed out, or garbage).
    ///
    /// # Errors
    ///
    /// I/O errors; `UnexpectedEof` when the server closed the connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer, Reply};
    ///
    /// let server = RedisServer::start();
    /// let mut conn = Connection::tcp(server.addr().unwrap()).unwrap();
    /// assert_eq!(conn.command(&["SET", "k", "v"]).unwrap(), Reply::Simple("OK".into()));
    /// ```
    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// [`command`](Self::command) with binary arguments (e.g. garbage for a stream entry).
    ///
    /// # Errors
    ///
    /// As for [`command`](Self::command).
    ///
    /// # Examples
    ///
    /// ```
    /// use troika_test_redis::{Connection, RedisServer, Reply};
    ///
    /// let server = RedisServer::start();
    /// let mut conn = Connection::tcp(server.addr().unwrap()).unwrap();
    /// conn.command_bytes(&[b"SET", b"k", &[0xff, 0x00]]).unwrap();
    /// assert_eq!(conn.command(&["GET", "k"]).unwrap(), Reply::Bulk(Some(vec![0xff, 0x00])));
    /// ```
    pub fn command_bytes(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let stream = self.reader.get_mut();
        stream.write_all(&out)?;
        stream.flush()?;
        read_reply(&mut self.reader, 0)
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("RESP line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| invalid("RESP line is not UTF-8"))
}

fn parse_len(s: &str) -> io::Result<i64> {
    s.parse::<i64>()
        .map_err(|_| invalid(format!("bad RESP length {s:?}")))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(invalid("RESP reply nested too deep"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| invalid("empty RESP line"))?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(parse_len(rest)?)),
        "$" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            if len > MAX_BULK {
                return Err(invalid(format!("bulk length {len} over redis's 512 MiB")));
            }
            let len = len as usize; // 0 <= len <= 512 MiB
            // Grows as bytes arrive: a lying length cannot allocate up front.
            let mut buf = Vec::new();
            r.take(len as u64 + 2).read_to_end(&mut buf)?;
            if buf.len() < len + 2 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "redis closed the connection inside a bulk string",
                ));
            }
            if !buf.ends_with(b"\r\n") {
                return Err(invalid("bulk string not terminated by CRLF"));
            }
            buf.truncate(len);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(invalid(format!("unknown RESP type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut io::Cursor::new(bytes), 0)
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-ERR x\r\n").unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(parse(b":-7\r\n").unwrap(), Reply::Integer(-7));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
        assert_eq!(
            parse(b"*2\r\n:1\r\n*0\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Array(Some(vec![]))]))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\r\n",
            b"?x\r\n",
            b"+OK\n",
            b":x\r\n",
            b"$5\r\nab\r\n",
            b"$9223372036854775807\r\n",
            b"*1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
