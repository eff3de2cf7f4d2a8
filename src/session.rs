//! What every workflow runs with: the store, the engine (connected on first use), the keyring
//! that opens secrets, how many chunks to move at once, where to report progress, and a
//! cancellation token.
//!
//! Workflows never print. They report through a [`Reporter`]: the binary draws notes and child
//! output on stderr (and progress bars on a terminal), tests collect them. Everything a
//! workflow reports passes the redaction of every secret it has opened (the process-wide set
//! of `envbuild_secrets::redact`): notes are masked whole, child output is masked as it
//! streams, so a reporter never sees a value.

use std::sync::Arc;

use envbuild_builder::engine::LazyEngine;
use envbuild_builder::pipeline::OutputSink;
use envbuild_cache::Store;
use envbuild_cache::ingest::Progress;
use envbuild_secrets::{Keyring, Redactor, redact};
use tokio_util::sync::CancellationToken;

/// Where a workflow tells people what it does.
pub trait Reporter: Send + Sync + std::fmt::Debug {
    /// A line about the work: a step that began or ended, a summary.
    fn note(&self, text: &str);
    /// Something that did not stop the work but should be looked at.
    fn warn(&self, text: &str);
    /// Output of a process the workflow runs (build, install, start), already redacted.
    fn output(&self, bytes: &[u8]);
    /// Counters of a long transfer, to draw while it runs; the guard stops drawing on drop.
    fn progress(&self, label: &'static str, counters: &Arc<Progress>) -> Box<dyn Send> {
        let _ = (label, counters);
        Box::new(())
    }
}

/// A reporter that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Reporter for Quiet {
    fn note(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn output(&self, _: &[u8]) {}
}

/// What every workflow runs with.
#[derive(Debug, Clone)]
pub struct Session {
    pub store: Arc<dyn Store>,
    pub engine: Arc<LazyEngine>,
    pub keyring: Keyring,
    /// Chunks hashed, compressed or transferred at once.
    pub jobs: usize,
    pub reporter: Arc<dyn Reporter>,
    /// Cancelled when the user interrupts; workflows stop, clean up, and return
    /// [`crate::Error::Interrupted`].
    pub cancel: CancellationToken,
}

impl Session {
    /// Reports a note, masked.
    pub fn note(&self, text: impl AsRef<str>) {
        self.reporter.note(&redact::mask(text.as_ref()));
    }

    /// Reports a warning, masked.
    pub fn warn(&self, text: impl AsRef<str>) {
        self.reporter.warn(&redact::mask(text.as_ref()));
    }

    /// A sink for one step's child output, masked as it streams; what a value still being
    /// written holds back is let out when the sink is dropped.
    pub fn output_sink(&self) -> ReportSink {
        let patterns = redact::registered();
        ReportSink {
            reporter: self.reporter.clone(),
            redactor: (!patterns.is_empty()).then(|| Redactor::new(patterns)),
        }
    }
}

/// Child output on its way to the reporter, redacted.
#[derive(Debug)]
pub struct ReportSink {
    reporter: Arc<dyn Reporter>,
    redactor: Option<Redactor>,
}

impl OutputSink for ReportSink {
    fn output(&mut self, chunk: &[u8]) {
        match &mut self.redactor {
            Some(redactor) => {
                let safe = redactor.push(chunk);
                if !safe.is_empty() {
                    self.reporter.output(&safe);
                }
            }
            None => self.reporter.output(chunk),
        }
    }
}

impl Drop for ReportSink {
    fn drop(&mut self) {
        if let Some(redactor) = &mut self.redactor {
            let rest = redactor.finish();
            if !rest.is_empty() {
                self.reporter.output(&rest);
            }
        }
    }
}
