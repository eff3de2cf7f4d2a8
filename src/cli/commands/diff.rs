//! `envbuild diff`: files added, removed and changed between two snapshots.

use std::process::ExitCode;

use envbuild_cache::diff;

use tokio_util::sync::CancellationToken;

use crate::cli::{self, DiffArgs, GlobalArgs, output, ui};
use envbuild::format;

pub async fn run(
    global: &GlobalArgs,
    args: &DiffArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let store = session.store.clone();
    let (old_id, old) = envbuild::snapshots::find(&*store, &args.old).await?;
    let (new_id, new) = envbuild::snapshots::find(&*store, &args.new).await?;
    let d = diff::diff(&old, &new, args.mtime);
    if args.json {
        output::json(&serde_json::json!({ "old": old_id, "new": new_id, "diff": d }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for entry in &d.added {
        output::line(format!("+ {} ({}, {})", entry.path, entry.kind.as_str(), format::bytes(entry.size)))?;
    }
    for entry in &d.removed {
        output::line(format!("- {} ({}, {})", entry.path, entry.kind.as_str(), format::bytes(entry.size)))?;
    }
    for change in &d.changed {
        let sizes = if change.old.size == change.new.size {
            format::bytes(change.new.size)
        } else {
            format!("{} -> {}", format::bytes(change.old.size), format::bytes(change.new.size))
        };
        output::line(format!("~ {} ({}; {sizes})", change.path, change.aspects.join(", ")))?;
    }
    let added: u64 = d.added.iter().map(|e| e.size).sum();
    let removed: u64 = d.removed.iter().map(|e| e.size).sum();
    ui::eprint_line(format!(
        "{} added ({}), {} removed ({}), {} changed",
        d.added.len(),
        format::bytes(added),
        d.removed.len(),
        format::bytes(removed),
        d.changed.len()
    ));
    Ok(ExitCode::SUCCESS)
}
