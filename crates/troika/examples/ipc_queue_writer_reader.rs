//! Python's `multiprocessing.Queue`: a writer process puts into a Queue and a
//! reader process gets from it.
//!
//! The parent creates the queue and starts two children — this same program,
//! re-executed with a role in the environment — each receiving the queue as a
//! serialized argument, as Python's `Process(target=writer_proc, args=(q,))`.

use std::process::Command;
use troika::ipc::Queue;

const ROLE: &str = "TROIKA_EXAMPLE_ROLE";
const ARG: &str = "TROIKA_EXAMPLE_ARG";

fn writer_proc(q: Queue<String>) {
    q.put(&"write data to mysql".to_string()).expect("put");
}

fn reader_proc(q: Queue<String>) {
    let res = q.get().expect("get");
    println!("{}", res.replace("write", "read").replace("to", "from"));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(role) = std::env::var(ROLE) {
        let q: Queue<String> = serde_json::from_str(&std::env::var(ARG)?)?;
        match role.as_str() {
            "writer" => writer_proc(q),
            _ => reader_proc(q),
        }
        return Ok(());
    }
    let q: Queue<String> = Queue::new(8)?;
    let start = |role: &str| -> std::io::Result<std::process::Child> {
        let arg = serde_json::to_string(&q).map_err(std::io::Error::other)?;
        Command::new(std::env::current_exe()?)
            .env(ROLE, role)
            .env(ARG, arg)
            .spawn()
    };
    let mut writer = start("writer")?;
    let mut reader = start("reader")?;
    reader.wait()?;
    writer.wait()?;
    Ok(())
}
