//! What travels through Redis: the keys of a queue, a task entry and a
//! result entry. Both entries are one stream field, `m`, holding a postcard
//! value; anything else in a stream is garbage to be dead-lettered.

use serde::{Deserialize, Serialize};
use troika::{ErrorKind, Exit, TaskError};

/// The one field of every entry this crate writes.
pub(crate) const FIELD: &str = "m";
/// The version of the entry format, first in every message.
pub(crate) const VERSION: u8 = 1;
/// The consumer group every worker of a queue reads in.
pub(crate) const GROUP: &str = "workers";
/// The dead-letter stream keeps about this many entries (older ones go).
pub(crate) const DEAD_LETTER_MAXLEN: usize = 10_000;

/// The Redis keys of one queue.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    queue: String,
    prefix: String,
}

impl Keys {
    pub(crate) fn new(queue: &str) -> Keys {
        Keys {
            queue: queue.to_owned(),
            prefix: format!("troika:{queue}"),
        }
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// The task stream the workers' group reads.
    pub(crate) fn tasks(&self) -> String {
        format!("{}:tasks", self.prefix)
    }

    /// The dead-letter stream.
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// The pub/sub channel that carries cancels of running tasks.
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// The sorted set of workers by last heartbeat (milliseconds).
    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// One worker's description (a hash with a TTL).
    pub(crate) fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }

    /// One client's result stream (with a TTL its client refreshes).
    pub(crate) fn results(&self, client: &str) -> String {
        format!("{}:results:{client}", self.prefix)
    }
}

/// A task as written to the task stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    pub(crate) version: u8,
    /// The client that waits for it (its results stream).
    pub(crate) client: String,
    /// The client's id of the task.
    pub(crate) id: u64,
    /// The registered function's name.
    pub(crate) name: String,
    /// Its encoded argument.
    pub(crate) arg: Vec<u8>,
    /// The per-task timeout in milliseconds, 0 for none.
    pub(crate) timeout_ms: u64,
    /// How many deliveries the task may have.
    pub(crate) max_deliveries: u32,
    /// Deliveries of earlier copies of this entry (a task handed back or
    /// re-queued after its process crashed is written again).
    pub(crate) earlier: u32,
    /// Milliseconds a result is kept for its client.
    pub(crate) result_ttl_ms: u64,
}

/// The first fields of a task entry: enough to know whose task it is, even
/// when the rest cannot be read.
#[derive(Debug, Deserialize)]
pub(crate) struct Head {
    pub(crate) version: u8,
    pub(crate) client: String,
    pub(crate) id: u64,
}

/// A failure as stored for the client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    Panicked(String),
    TimedOut(u64),
    Serialization(String),
    Failed(String),
    WorkerDied {
        code: Option<i32>,
        signal: Option<i32>,
    },
    DeadLettered {
        deliveries: u64,
        reason: String,
    },
    TooLarge {
        size: u64,
        limit: u64,
    },
    Cancelled,
}

impl WireError {
    pub(crate) fn from_task_error(err: &TaskError) -> WireError {
        match err.kind() {
            ErrorKind::Panicked(m) => WireError::Panicked(m.clone()),
            ErrorKind::TimedOut(d) => WireError::TimedOut(d.as_millis() as u64),
            ErrorKind::Serialization(m) => WireError::Serialization(m.clone()),
            ErrorKind::WorkerDied(exit) => match *exit {
                Exit::Code(c) => WireError::WorkerDied {
                    code: Some(c),
                    signal: None,
                },
                Exit::Signal(s) => WireError::WorkerDied {
                    code: None,
                    signal: Some(s),
                },
                _ => WireError::WorkerDied {
                    code: None,
                    signal: None,
                },
            },
            ErrorKind::DeadLettered { deliveries, reason } => WireError::DeadLettered {
                deliveries: *deliveries,
                reason: reason.clone(),
            },
            ErrorKind::FrameTooLarge { size, limit } => WireError::TooLarge {
                size: *size,
                limit: *limit,
            },
            ErrorKind::Cancelled => WireError::Cancelled,
            _ => WireError::Failed(err.to_string()),
        }
    }

    pub(crate) fn into_task_error(self) -> TaskError {
        TaskError::new(match self {
            WireError::Panicked(m) => ErrorKind::Panicked(m),
            WireError::TimedOut(ms) => ErrorKind::TimedOut(std::time::Duration::from_millis(ms)),
            WireError::Serialization(m) => ErrorKind::Serialization(m),
            WireError::Failed(m) => ErrorKind::Failed(m),
            WireError::WorkerDied { code, signal } => ErrorKind::WorkerDied(match (code, signal) {
                (Some(c), _) => Exit::Code(c),
                (_, Some(s)) => Exit::Signal(s),
                _ => Exit::Unknown,
            }),
            WireError::DeadLettered { deliveries, reason } => {
                ErrorKind::DeadLettered { deliveries, reason }
            }
            WireError::TooLarge { size, limit } => ErrorKind::FrameTooLarge { size, limit },
            WireError::Cancelled => ErrorKind::Cancelled,
        })
    }
}

/// A task's outcome as written to its client's result stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub(crate) version: u8,
    pub(crate) id: u64,
    /// The worker that produced it.
    pub(crate) worker: String,
    pub(crate) outcome: Result<Vec<u8>, WireError>,
}

/// Encode a message; our own types always encode.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    troika::process::encode_value(msg).unwrap_or_default()
}

/// Decode a message, or say why not.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    troika::process::decode_value(bytes).map_err(|e| e.to_string())
}
