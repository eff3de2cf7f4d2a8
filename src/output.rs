//! Writing results to stdout. The only module that prints to stdout: data goes here, while
//! diagnostics, progress and logs go to stderr.

#![allow(clippy::print_stdout)]

use std::io::Write;

use serde::Serialize;

/// Prints a value as pretty JSON followed by a newline (secret values masked).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", crate::ui::redact(&text))?;
    Ok(())
}

/// Prints one line of data (secret values masked).
pub fn line(text: impl std::fmt::Display) {
    println!("{}", crate::ui::redact(&text.to_string()));
}

/// Raw bytes to stdout, for `logs` (the caller redacts them as a stream).
pub fn bytes(data: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()
}
