//! Progress bars on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `len` steps drawn with `bar_template`, or a spinner drawn with
/// `spinner_template` when the length is unknown; hidden (every call a no-op)
/// when stderr is not a terminal.
pub(crate) fn stderr_bar(
    len: Option<u64>,
    bar_template: &str,
    spinner_template: &str,
) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let style = match len {
        Some(_) => ProgressStyle::with_template(bar_template)
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        None => ProgressStyle::with_template(spinner_template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    };
    bar.with_style(style)
}
