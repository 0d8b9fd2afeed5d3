//! Where inputs come from, as GNU parallel takes them: words after `:::`,
//! files after `::::` or `-a`, else stdin; several sources give their
//! cartesian product. Inputs are bytes, split on newlines (or NULs with `-0`).
//!
//! Files and stdin are read on a thread of their own, so that a stop (Ctrl-C,
//! a halt) ends the run even while a read blocks (a terminal, a FIFO).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use anyhow::Context;
use parking_lot::Mutex;

/// One input source.
#[derive(Debug)]
pub(crate) enum Source {
    /// The words after a `:::`.
    List(Vec<Vec<u8>>),
    /// A file named after `::::` or by `-a`.
    File(PathBuf),
    Stdin,
}

enum Msg {
    Item(Vec<u8>),
    Failed(io::Error),
    End,
    Stop,
}

/// Wakes every reader's consumer when the run stops.
#[derive(Default)]
pub(crate) struct Stoppers {
    senders: Mutex<Vec<SyncSender<Msg>>>,
}

impl Stoppers {
    pub(crate) fn stop_all(&self) {
        for sender in self.senders.lock().iter() {
            // A full channel: the consumer is not blocked, and it checks the
            // stop flag before every item.
            match sender.try_send(Msg::Stop) {
                Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// The inputs of one job: one value per source.
pub(crate) type Args = Vec<Vec<u8>>;

/// Every job's inputs, in GNU parallel's order (the last source varies
/// fastest). One file or stdin source streams; several are read whole first.
pub(crate) fn open(
    sources: Vec<Source>,
    separator: u8,
    stop: Arc<AtomicBool>,
    stoppers: &Stoppers,
) -> anyhow::Result<Box<dyn Iterator<Item = io::Result<Args>>>> {
    let mut streams = Vec::with_capacity(sources.len());
    for source in sources {
        streams.push(stream(source, separator, Arc::clone(&stop), stoppers)?);
    }
    if streams.len() == 1 {
        let only = streams
            .pop()
            .unwrap_or_else(|| Box::new(std::iter::empty()));
        return Ok(Box::new(only.map(|item| item.map(|value| vec![value]))));
    }
    let mut lists = Vec::with_capacity(streams.len());
    for stream in streams {
        match stream.collect::<io::Result<Vec<_>>>() {
            Ok(list) => lists.push(list),
            Err(e) => return Ok(Box::new(std::iter::once(Err(e)))),
        }
    }
    Ok(Box::new(Product::new(lists).map(Ok)))
}

type Stream = Box<dyn Iterator<Item = io::Result<Vec<u8>>>>;

fn stream(
    source: Source,
    separator: u8,
    stop: Arc<AtomicBool>,
    stoppers: &Stoppers,
) -> anyhow::Result<Stream> {
    let reader: Box<dyn Read + Send> = match source {
        Source::List(words) => return Ok(Box::new(words.into_iter().map(Ok))),
        Source::File(path) => Box::new(
            File::open(&path)
                .with_context(|| format!("cannot read the inputs in {}", path.display()))?,
        ),
        Source::Stdin => Box::new(io::stdin()),
    };
    let (send, receive) = sync_channel(1024);
    stoppers.senders.lock().push(send.clone());
    std::thread::Builder::new()
        .name("troika-run-input".into())
        .spawn(move || read_items(reader, separator, &send))
        .context("cannot start the input reader")?;
    Ok(Box::new(Received {
        receive,
        stop,
        done: false,
    }))
}

fn read_items(reader: Box<dyn Read + Send>, separator: u8, send: &SyncSender<Msg>) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    loop {
        let mut item = Vec::new();
        let msg = match reader.read_until(separator, &mut item) {
            Ok(0) => Msg::End,
            Ok(_) => {
                if item.last() == Some(&separator) {
                    item.pop();
                    if separator == b'\n' && item.last() == Some(&b'\r') {
                        item.pop();
                    }
                }
                Msg::Item(item)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Msg::Failed(e),
        };
        let last = !matches!(msg, Msg::Item(_));
        if send.send(msg).is_err() || last {
            return;
        }
    }
}

struct Received {
    receive: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    /// Ended: never wait on the channel again (a stopper's sender keeps it
    /// open).
    done: bool,
}

impl Iterator for Received {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.stop.load(Ordering::Acquire) {
            return None;
        }
        match self.receive.recv() {
            Ok(Msg::Item(item)) => Some(Ok(item)),
            Ok(Msg::Failed(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(Msg::End | Msg::Stop) | Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

/// The cartesian product of lists, the last varying fastest.
struct Product {
    lists: Vec<Vec<Vec<u8>>>,
    at: Vec<usize>,
    done: bool,
}

impl Product {
    fn new(lists: Vec<Vec<Vec<u8>>>) -> Product {
        let done = lists.iter().any(Vec::is_empty);
        let at = vec![0; lists.len()];
        Product { lists, at, done }
    }
}

impl Iterator for Product {
    type Item = Args;

    fn next(&mut self) -> Option<Args> {
        if self.done {
            return None;
        }
        let item = self
            .at
            .iter()
            .zip(&self.lists)
            .map(|(&i, list)| list[i].clone())
            .collect();
        // Advance the odometer.
        self.done = true;
        for (i, list) in self.at.iter_mut().zip(&self.lists).rev() {
            *i += 1;
            if *i < list.len() {
                self.done = false;
                break;
            }
            *i = 0;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_product_varies_the_last_list_fastest() {
        let all: Vec<Args> =
            Product::new(vec![words(&["a", "b"]), words(&["1", "2", "3"])]).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], words(&["a", "1"]));
        assert_eq!(all[1], words(&["a", "2"]));
        assert_eq!(all[5], words(&["b", "3"]));
        assert_eq!(Product::new(vec![words(&["a"]), vec![]]).count(), 0);
    }
}
