//! `envbuild import`: a root filesystem tar into the store.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use envbuild_cache::ingest::{self, IngestOptions, IngestReport, Progress};

use crate::cli::{GlobalArgs, ImportArgs};
use crate::{format, output, progress, store, ui};

pub async fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(global).await?;
    let counters = Arc::new(Progress::default());
    let (input, name): (Box<dyn Read + Send>, String) = if args.input == "-" {
        (Box::new(std::io::stdin()), "stdin".to_owned())
    } else {
        let file =
            std::fs::File::open(&args.input).with_context(|| format!("cannot open `{}`", args.input))?;
        if let Ok(meta) = file.metadata() {
            counters.total.store(meta.len(), Ordering::Relaxed);
        }
        (Box::new(file), format!("`{}`", args.input))
    };
    let options = IngestOptions { concurrency: crate::jobs(global), ..IngestOptions::default() };
    let bar = progress::Bar::start(&counters, "importing");
    let report = ingest::ingest(store.clone(), input, options, counters)
        .await
        .with_context(|| format!("cannot import {name} into {}", store.location()))?;
    drop(bar);
    ui::eprint_line(summary(&name, &report));
    output::line(report.id);
    Ok(ExitCode::SUCCESS)
}

fn summary(name: &str, r: &IngestReport) -> String {
    #[allow(clippy::cast_precision_loss)]
    let dedup = if r.bytes == 0 { 0.0 } else { 100.0 * (1.0 - r.new_raw_bytes as f64 / r.bytes as f64) };
    let mut text = format!(
        "imported {name}: {} in {} entries, {} chunks, in {} ({})\n  stored {} new chunk{} ({} compressed from {}); {dedup:.1}% of the stream was already stored",
        format::bytes(r.bytes),
        r.entries,
        r.chunks,
        format::duration(r.elapsed),
        format::rate(r.bytes, r.elapsed),
        r.new_chunks,
        if r.new_chunks == 1 { "" } else { "s" },
        format::bytes(r.new_stored_bytes),
        format::bytes(r.new_raw_bytes),
    );
    if r.reordered {
        text.push_str("\n  note: the input was not in canonical order and was reordered first");
    }
    if !r.published {
        text.push_str("\n  note: this snapshot was already in the store");
    }
    text
}
