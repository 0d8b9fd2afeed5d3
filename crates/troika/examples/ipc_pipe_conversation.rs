//! Python's `multiprocessing.Pipe`: a parent and a child talk over a two-way
//! Pipe.
//!
//! The child is this program re-executed; its end of the pipe travels to it
//! serialized, and end-of-file or the child's death would be an error on our
//! side, never a hang.

use std::process::Command;
use troika::ipc::Pipe;

type Msg = (i32, Option<i32>, String);
const ROLE: &str = "TROIKA_EXAMPLE_ROLE";
const ARG: &str = "TROIKA_EXAMPLE_ARG";

fn f(conn: Pipe<Msg, String>) -> Result<(), troika::ipc::IpcError> {
    conn.send(&(42, None, "hello".into()))?;
    println!("child got: {}", conn.recv()?);
    Ok(()) // dropping `conn` closes it
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(ROLE).is_ok() {
        f(serde_json::from_str(&std::env::var(ARG)?)?)?;
        return Ok(());
    }
    let (parent_conn, child_conn) = Pipe::<String, Msg>::pair()?;
    let mut p = Command::new(std::env::current_exe()?)
        .env(ROLE, "child")
        .env(ARG, serde_json::to_string(&child_conn)?)
        .spawn()?;
    println!("parent got: {:?}", parent_conn.recv()?);
    parent_conn.send(&"test".to_string())?;
    p.wait()?;
    // The child has gone: the pipe reports end-of-file.
    assert!(parent_conn.recv().unwrap_err().is_disconnected());
    Ok(())
}
