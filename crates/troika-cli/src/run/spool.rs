//! A job's captured output in bounded memory: held in memory up to
//! [`IN_MEMORY`] bytes, then spooled to an unnamed temporary file (as GNU
//! parallel spools to files), and copied out whole when the job is printed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// What one stream of one job may hold in memory before it spools.
pub(crate) const IN_MEMORY: usize = 256 * 1024;

/// One stream (stdout or stderr) of one job.
#[derive(Debug, Default)]
pub(crate) struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
}

impl Spool {
    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Move what is held in memory to the file (a finished job that waits
    /// long to be printed holds no memory).
    pub(crate) fn spill(&mut self) -> io::Result<()> {
        if self.file.is_none() && !self.memory.is_empty() {
            let mut file = temp_file()?;
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        Ok(())
    }

    /// Copy everything written to `to`, in order.
    pub(crate) fn copy_to(&mut self, to: &mut dyn Write) -> io::Result<()> {
        to.write_all(&self.memory)?;
        if let Some(file) = &mut self.file {
            file.seek(SeekFrom::Start(0))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => to.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > IN_MEMORY {
            let mut file = temp_file()?;
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
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

    #[test]
    fn small_output_stays_in_memory_and_big_output_spools_in_order() {
        let mut small = Spool::default();
        small.write_all(b"abc").unwrap();
        assert!(small.file.is_none());
        let mut big = Spool::default();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        for _ in 0..5 {
            big.write_all(&chunk).unwrap();
        }
        assert!(big.file.is_some() && big.memory.is_empty());
        assert_eq!(big.len(), 500_000);
        let mut out = Vec::new();
        big.copy_to(&mut out).unwrap();
        assert_eq!(out, chunk.repeat(5));
        small.spill().unwrap();
        assert!(small.file.is_some() && small.memory.is_empty());
        small.write_all(b"def").unwrap();
        let mut out = Vec::new();
        small.copy_to(&mut out).unwrap();
        assert_eq!(out, b"abcdef");
    }
}
