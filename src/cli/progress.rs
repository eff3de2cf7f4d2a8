//! Progress on stderr while a long operation runs: a bar when stderr is a terminal, nothing
//! otherwise (the final summary line is printed either way, by the command).
//!
//! The library exposes atomic counters (`ingest::Progress`); this module polls them, so the
//! library never depends on how progress is drawn.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envbuild_cache::ingest::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar that follows `counters` until dropped.
pub struct Bar {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bar {
    /// Starts following `counters`; `verb` names the work ("importing", "fetching").
    pub fn start(counters: &Arc<Progress>, verb: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None, task: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} {wide_bar} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(verb);
        let follower = bar.clone();
        let counters = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                let total = counters.total.load(Ordering::Relaxed);
                if total > 0 {
                    follower.set_length(total);
                }
                follower.set_position(counters.bytes.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { bar: Some(bar), task: Some(task) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
