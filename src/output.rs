//! Writing results to stdout. The only module that prints to stdout: data goes here, while
//! diagnostics, progress and logs go to stderr.

#![allow(clippy::print_stdout)]

use std::io::Write;

use serde::Serialize;

/// Prints a value as pretty JSON followed by a newline.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints one line of data.
pub fn line(text: impl std::fmt::Display) {
    println!("{text}");
}
