//! `envbuild rm` and `envbuild prune`: removing snapshots.

use std::process::ExitCode;

use envbuild::retention::{self, PruneOptions};
use envbuild::{envs, format};
use envbuild_cache::retention::Rules;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, PruneArgs, RmArgs, output, ui};

pub async fn rm(global: &GlobalArgs, args: &RmArgs, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    // Environment names first (a runc environment needs no store); the rest name snapshots.
    let mut environments = Vec::new();
    let mut names = Vec::new();
    for name in &args.snapshots {
        if envs::remove_runc(name).await? {
            removed_environment(name, &mut environments);
        } else {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        return environments_only(args, &environments);
    }
    let session = cli::reading_session(global, cancel).await?;
    let mut snapshots = Vec::new();
    for name in names {
        if envs::exists(&session, &name).await? {
            envs::remove(&session, &name).await?;
            removed_environment(&name, &mut environments);
        } else {
            snapshots.push(name);
        }
    }
    if snapshots.is_empty() {
        return environments_only(args, &environments);
    }
    let report = retention::rm(&session, &snapshots, args.force).await?;
    if args.json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    for id in &report.removed.snapshots {
        output::line(id.to_string())?;
    }
    ui::eprint_line(format!(
        "removed {} snapshot(s), {} key record(s), {} head(s){}{}; their chunks go at the next `envbuild gc`",
        report.removed.snapshots.len(),
        report.removed.keys,
        report.removed.heads,
        if report.removed.refs.is_empty() {
            String::new()
        } else {
            format!(", ref(s) {}", report.removed.refs.join(", "))
        },
        if report.engine.is_empty() {
            String::new()
        } else {
            format!(", and from the engine: {}", report.engine.join(", "))
        },
    ));
    Ok(ExitCode::SUCCESS)
}

fn removed_environment(name: &str, environments: &mut Vec<String>) {
    ui::eprint_line(format!("removed environment `{name}`"));
    environments.push(name.to_owned());
}

/// The end of an `rm` that named environments only.
fn environments_only(args: &RmArgs, environments: &[String]) -> anyhow::Result<ExitCode> {
    if args.json {
        output::json(&serde_json::json!({ "environments": environments }))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn prune(
    global: &GlobalArgs,
    args: &PruneArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let options = PruneOptions {
        rules: Rules {
            keep_last: args.keep_last,
            keep_within: args.keep_within,
            include_refs: args.include_refs,
        },
        dry_run: args.collect.dry_run,
        grace: args.collect.grace,
    };
    let report = retention::prune(&session, options).await?;
    if args.collect.json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.collect.dry_run { "would remove" } else { "removed" };
    for decision in &report.plan.remove {
        output::line(format!(
            "{verb:>12}  {}  {}  {}",
            decision.snapshot.id, decision.snapshot.repository, decision.reason
        ))?;
    }
    for decision in &report.plan.keep {
        output::line(format!(
            "{:>12}  {}  {}  {}",
            "keep", decision.snapshot.id, decision.snapshot.repository, decision.reason
        ))?;
    }
    ui::eprint_line(format!(
        "{verb} {} of {} snapshots, freeing {}{}",
        report.plan.remove.len(),
        report.plan.remove.len() + report.plan.keep.len(),
        format::bytes(report.freed_bytes),
        match &report.gc {
            Some(gc) => format!(
                " (gc removed {} chunks, {}; kept {} younger than {})",
                gc.removed_chunks,
                format::bytes(gc.removed_bytes),
                gc.young_chunks,
                humantime::format_duration(args.collect.grace)
            ),
            None => String::new(),
        }
    ));
    if !report.engine.is_empty() {
        ui::eprint_line(format!("  and from the engine: {}", report.engine.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}
