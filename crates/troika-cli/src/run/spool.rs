//! A job's captured output in bounded memory: held in memory up to
//! [`IN_MEMORY`] bytes, then spooled to an unnamed temporary file (as GNU
//! parallel spools to files), and copied out whole when the job is printed.
//!
//! A finished job that waits to be printed (`--keep-order`, behind a slow
//! job) is *parked*: its output moves into one file shared by every waiting
//! job, each at its own offset, so thousands of waiting jobs hold neither
//! memory nor a file descriptor each. The shared file is emptied whenever no
//! parked output is left in it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// What one stream of one job may hold in memory before it spools.
pub(crate) const IN_MEMORY: usize = 256 * 1024;

/// The one file that parked output moves into.
#[derive(Debug, Default)]
pub(crate) struct ParkFile {
    file: Option<Arc<File>>,
    /// Where the next parked output goes.
    end: u64,
}

/// Where a stream's bytes are.
#[derive(Debug)]
enum Store {
    Memory(Vec<u8>),
    /// Its own temporary file, holding everything written.
    File(File),
    /// `len` bytes of the shared [`ParkFile`] from `offset`.
    Parked {
        file: Arc<File>,
        offset: u64,
    },
}

impl Default for Store {
    fn default() -> Store {
        Store::Memory(Vec::new())
    }
}

/// One stream (stdout or stderr) of one job.
#[derive(Debug, Default)]
pub(crate) struct Spool {
    store: Store,
    len: u64,
}

impl Spool {
    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the output is in a temporary file of its own (it holds a
    /// file descriptor).
    pub(crate) fn on_disk(&self) -> bool {
        matches!(self.store, Store::File(_))
    }

    /// Move the output into `park` (a finished job that waits long to be
    /// printed then holds no memory and no file descriptor of its own).
    /// Nothing may be written to a parked spool.
    pub(crate) fn park(&mut self, park: &mut ParkFile) -> io::Result<()> {
        if self.len == 0 || matches!(self.store, Store::Parked { .. }) {
            return Ok(());
        }
        let shared = match &mut park.file {
            // Nothing parked is left in it: start again from its beginning.
            Some(file) if Arc::strong_count(file) == 1 && park.end > 0 => {
                file.set_len(0)?;
                park.end = 0;
                Arc::clone(file)
            }
            Some(file) => Arc::clone(file),
            None => Arc::clone(park.file.insert(Arc::new(temp_file()?))),
        };
        let offset = park.end;
        match &mut self.store {
            Store::Memory(bytes) => shared.write_all_at(bytes, offset)?,
            Store::File(own) => {
                own.seek(SeekFrom::Start(0))?;
                let mut to = &*shared;
                to.seek(SeekFrom::Start(offset))?;
                let copied = io::copy(own, &mut to)?;
                if copied != self.len {
                    return Err(io::Error::other(format!(
                        "parking a job's output copied {copied} of {} bytes",
                        self.len
                    )));
                }
            }
            Store::Parked { .. } => unreachable!("returned above"),
        }
        park.end = offset + self.len;
        self.store = Store::Parked {
            file: shared,
            offset,
        };
        Ok(())
    }

    /// Copy everything written to `to`, in order.
    pub(crate) fn copy_to(&mut self, to: &mut dyn Write) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        match &mut self.store {
            Store::Memory(bytes) => to.write_all(bytes),
            Store::File(file) => {
                file.seek(SeekFrom::Start(0))?;
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => to.write_all(&buf[..n])?,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Store::Parked { file, offset } => {
                let mut at = *offset;
                let end = *offset + self.len;
                while at < end {
                    let want = buf
                        .len()
                        .min(usize::try_from(end - at).unwrap_or(usize::MAX));
                    match file.read_at(&mut buf[..want], at) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "a parked job's output is shorter than written",
                            ));
                        }
                        Ok(n) => {
                            to.write_all(&buf[..n])?;
                            at += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Store::Memory(memory) = &mut self.store
            && memory.len() + buf.len() > IN_MEMORY
        {
            let mut file = temp_file()?;
            file.write_all(memory)?;
            self.store = Store::File(file);
        }
        match &mut self.store {
            Store::Memory(memory) => memory.extend_from_slice(buf),
            Store::File(file) => file.write_all(buf)?,
            Store::Parked { .. } => {
                return Err(io::Error::other("a parked job's output is final"));
            }
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An unnamed file in the temporary directory (`O_TMPFILE`), or, where the
/// file system lacks it, a named one removed at once.
fn temp_file() -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let dir = std::env::temp_dir();
    let mode = Mode::from_raw_mode(0o600);
    match rustix::fs::open(&dir, OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC, mode) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => {}
        Err(e) => {
            return Err(io::Error::from(e)).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot spool to {}: {e}", dir.display()))
            });
        }
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        ".troika-run-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(spool: &mut Spool) -> Vec<u8> {
        let mut out = Vec::new();
        spool.copy_to(&mut out).unwrap();
        out
    }

    #[test]
    fn small_output_stays_in_memory_and_big_output_spools_in_order() {
        let mut small = Spool::default();
        small.write_all(b"abc").unwrap();
        assert!(matches!(small.store, Store::Memory(_)));
        let mut big = Spool::default();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        for _ in 0..5 {
            big.write_all(&chunk).unwrap();
        }
        assert!(matches!(big.store, Store::File(_)));
        assert_eq!(big.len(), 500_000);
        assert_eq!(contents(&mut big), chunk.repeat(5));
        small.write_all(b"def").unwrap();
        assert_eq!(contents(&mut small), b"abcdef");
    }

    #[test]
    fn parked_outputs_share_one_file_and_keep_their_bytes() {
        let mut park = ParkFile::default();
        let big_chunk: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let mut spools: Vec<Spool> = (0..100u32)
            .map(|i| {
                let mut spool = Spool::default();
                if i % 10 == 0 {
                    spool.write_all(&big_chunk).unwrap();
                }
                write!(spool, "job {i}").unwrap();
                spool
            })
            .collect();
        let mut empty = Spool::default();
        for spool in spools.iter_mut().chain([&mut empty]) {
            spool.park(&mut park).unwrap();
        }
        assert!(matches!(empty.store, Store::Memory(_)), "nothing to park");
        let shared = park.file.clone().unwrap();
        for (i, spool) in spools.iter_mut().enumerate() {
            let Store::Parked { file, .. } = &spool.store else {
                panic!("spool {i} is not parked");
            };
            assert!(Arc::ptr_eq(file, &shared), "one file for all");
            let mut expected = if i % 10 == 0 {
                big_chunk.clone()
            } else {
                Vec::new()
            };
            expected.extend_from_slice(format!("job {i}").as_bytes());
            assert_eq!(contents(spool), expected, "spool {i}");
        }
        assert!(spools[0].write_all(b"more").is_err());
        drop(spools);
        drop(shared);
        // Every parked output printed and gone: the next one starts afresh.
        let mut again = Spool::default();
        again.write_all(b"again").unwrap();
        again.park(&mut park).unwrap();
        assert_eq!(park.end, 5);
        assert_eq!(contents(&mut again), b"again");
    }
}
