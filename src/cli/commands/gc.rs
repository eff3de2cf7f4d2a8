//! `envbuild gc`: remove unreferenced chunks older than the grace period.

use std::process::ExitCode;

use envbuild_cache::gc::{self, GcOptions};

use tokio_util::sync::CancellationToken;

use crate::cli::{self, GcArgs, GlobalArgs, output, ui};
use envbuild::format;

pub async fn run(global: &GlobalArgs, args: &GcArgs, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let session = cli::reading_session(global, cancel).await?;
    let store = session.store.clone();
    let options = GcOptions { grace: args.grace, dry_run: args.dry_run, concurrency: session.jobs };
    let report = gc::gc(&store, options).await?;
    // What fetches killed outright left beside their targets, on this host.
    let staging = if args.dry_run { Vec::new() } else { envbuild_cache::staging::sweep() };
    // What interrupted boots left in the runc runtime, and trees beyond its bound.
    let runtime =
        if args.dry_run { envbuild::envs::Swept::default() } else { envbuild::envs::sweep().await? };
    // The package-manager caches of this host go by their own bounds; without an engine there
    // are none to collect.
    let caches = match envbuild::caches::collect(&session, args.dry_run).await {
        Ok(removed) => removed,
        Err(envbuild::Error::Engine(_) | envbuild::Error::Build(envbuild_builder::BuildError::Engine(_))) => {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        output::json(&serde_json::json!({
            "dry_run": args.dry_run,
            "snapshots": report.snapshots,
            "chunks": report.chunks,
            "reachable_chunks": report.reachable_chunks,
            "removed_chunks": report.removed_chunks,
            "removed_bytes": report.removed_bytes,
            "young_chunks": report.young_chunks,
            "removed_leases": report.removed_leases,
            "removed_uploads": report.removed_uploads,
            "removed_image_records": report.removed_image_records,
            "removed_package_caches": caches,
            "removed_staging": staging,
            "runtime": runtime,
            "damaged": report.damaged.iter().map(|(id, why)| serde_json::json!({"id": id, "damage": why})).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    ui::eprint_line(format!(
        "{}: {} snapshots reference {} of {} chunks; {verb} {} unreferenced chunks ({}); kept {} younger than {}",
        store.location(),
        report.snapshots,
        report.reachable_chunks,
        report.chunks,
        report.removed_chunks,
        format::bytes(report.removed_bytes),
        report.young_chunks,
        humantime::format_duration(args.grace),
    ));
    if !staging.is_empty() {
        ui::eprint_line(format!(
            "  removed {} staging path(s) left by interrupted fetches: {}",
            staging.len(),
            staging.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !runtime.environments.is_empty() || !runtime.network_namespaces.is_empty() || !runtime.trees.is_empty()
    {
        ui::eprint_line(format!(
            "  removed {} environment(s) interrupted boots left, {} network namespace(s), {} tree(s) beyond the bound ({} of files)",
            runtime.environments.len(),
            runtime.network_namespaces.len(),
            runtime.trees.len(),
            format::bytes(runtime.object_bytes)
        ));
    }
    for (_, damage) in &report.damaged {
        ui::eprint_line(format!(
            "warning: {damage}; left in place (`envbuild rm` removes it, a push from another store repairs it)"
        ));
    }
    if !caches.is_empty() {
        ui::eprint_line(format!(
            "  {verb} {} package-manager cache volume(s): {}",
            caches.len(),
            caches.join(", ")
        ));
    }
    if report.removed_leases > 0 || report.removed_uploads > 0 {
        ui::eprint_line(format!(
            "  {verb} {} stale leases and {} abandoned uploads",
            report.removed_leases, report.removed_uploads
        ));
    }
    if report.removed_image_records > 0 {
        ui::eprint_line(format!(
            "  {verb} {} image record(s) of removed snapshots (the registry API's side records)",
            report.removed_image_records
        ));
    }
    Ok(ExitCode::SUCCESS)
}
