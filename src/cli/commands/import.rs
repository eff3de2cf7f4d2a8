//! `envbuild import`: a root filesystem tar into the store.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use envbuild::{format, snapshots};
use envbuild_cache::ingest::IngestReport;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, ImportArgs, output, ui};

pub async fn run(
    global: &GlobalArgs,
    args: &ImportArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let (input, name, size): (Box<dyn Read + Send>, String, Option<u64>) = if args.input == "-" {
        (Box::new(std::io::stdin()), "stdin".to_owned(), None)
    } else {
        let file =
            std::fs::File::open(&args.input).with_context(|| format!("cannot open `{}`", args.input))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), format!("`{}`", args.input), size)
    };
    let report = snapshots::import(&session, input, size, !args.no_secret_scan)
        .await
        .with_context(|| format!("cannot import {name} into {}", session.store.location()))?;
    ui::eprint_line(summary(&name, &report));
    output::line(report.id)?;
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
