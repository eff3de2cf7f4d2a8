//! Human-facing messages on stderr: diagnostics, warnings, notes. Progress bars live with the
//! commands that draw them; this module owns plain lines.

#![allow(clippy::print_stderr)]

use std::fmt::Display;

/// Prints one line on stderr.
pub fn eprint_line(text: impl Display) {
    eprintln!("{text}");
}
