//! Human-facing messages on stderr: the reporter the workflows talk to (notes, warnings, child
//! output, progress bars on a terminal), and the lines the commands print themselves. All of
//! it is masked with every secret this process opened.

#![allow(clippy::print_stderr)]

use std::fmt::Display;
use std::io::Write;
use std::sync::Arc;

use envbuild::session::Reporter;
use envbuild_cache::ingest::Progress;
use envbuild_secrets::redact;

use crate::cli::progress;

/// Prints one line on stderr. A closed stderr is ignored: there is nowhere left to say it.
pub fn eprint_line(text: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", redact::mask(&text.to_string()));
}

/// The reporter of a command run from a terminal or a CI log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stderr;

impl Reporter for Stderr {
    fn note(&self, text: &str) {
        eprint_line(text);
    }

    fn warn(&self, text: &str) {
        eprint_line(format!("warning: {text}"));
    }

    fn output(&self, bytes: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }

    fn progress(&self, label: &'static str, counters: &Arc<Progress>) -> Box<dyn Send> {
        Box::new(progress::Bar::start(counters, label))
    }
}
