//! Writing results to stdout: the only module that does. Data goes here; diagnostics,
//! progress and logs go to stderr. Every write is masked with the secrets this process opened,
//! and a write error is returned, never a panic: a closed pipe (`envbuild ls | head -1`) ends
//! the command quietly (see `main`).

#![allow(clippy::print_stdout)]

use std::io::Write;

use envbuild_secrets::redact;
use serde::Serialize;

/// Prints a value as pretty JSON followed by a newline.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", redact::mask(&text))?;
    out.flush()?;
    Ok(())
}

/// Prints one line of data.
pub fn line(text: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", redact::mask(&text.to_string()))?;
    out.flush()
}
