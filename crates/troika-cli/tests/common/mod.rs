//! What every end-to-end test of the `troika` command needs: running it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Run the `troika` binary with `args` and wait for it. `stdin` is written to
/// its standard input and then closed; `None` gives it no standard input.
pub(crate) fn run_troika(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_troika"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the troika binary runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}
