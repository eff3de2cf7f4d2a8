//! Human-facing messages on stderr: diagnostics, warnings, notes; and the redaction of secret
//! values, which every line envbuild prints (here and in `output`) and every byte of child
//! output it relays (`RedactingSink`) passes through. Progress bars live with the commands that
//! draw them; this module owns plain lines.

#![allow(clippy::print_stderr)]

use std::fmt::Display;
use std::io::Write;
use std::sync::RwLock;

use envbuild_builder::pipeline::OutputSink;
use envbuild_builder::redact::{Patterns, Redactor};

/// The values to mask in everything printed from now on.
static REDACTION: RwLock<Option<Patterns>> = RwLock::new(None);

/// Masks `patterns` in everything printed from now on.
pub fn set_redaction(patterns: Patterns) {
    if let Ok(mut slot) = REDACTION.write() {
        *slot = (!patterns.is_empty()).then_some(patterns);
    }
}

fn current() -> Option<Patterns> {
    REDACTION.read().ok().and_then(|slot| slot.clone())
}

/// `text` with the secret values masked.
pub fn redact(text: &str) -> String {
    match current() {
        Some(patterns) => patterns.redact_str(text),
        None => text.to_owned(),
    }
}

/// Prints one line on stderr.
pub fn eprint_line(text: impl Display) {
    eprintln!("{}", redact(&text.to_string()));
}

/// Child output (build, install, start, terminals) relayed to stderr, redacted as it streams:
/// a value split across chunks is still masked.
pub struct RedactingSink {
    redactor: Option<Redactor>,
}

impl RedactingSink {
    pub fn new() -> Self {
        Self { redactor: current().map(Redactor::new) }
    }

    fn write(bytes: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }
}

impl OutputSink for RedactingSink {
    fn output(&mut self, chunk: &[u8]) {
        match &mut self.redactor {
            Some(redactor) => Self::write(&redactor.push(chunk)),
            None => Self::write(chunk),
        }
    }
}

impl Drop for RedactingSink {
    fn drop(&mut self) {
        if let Some(redactor) = &mut self.redactor {
            Self::write(&redactor.finish());
        }
    }
}
