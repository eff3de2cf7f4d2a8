//! `envbuild ps`, `logs` and `stop`: booted environments.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use envbuild_builder::boot;
use envbuild_builder::docker::DockerEngine;
use envbuild_builder::engine::{ContainerEngine, ContainerInfo};
use envbuild_builder::redact::Redactor;
use envbuild_builder::secrets::Scope;
use futures::StreamExt;

use crate::cli::{GlobalArgs, LogsArgs, PsArgs, StopArgs};
use crate::{output, secrets, store, ui};

async fn engine() -> anyhow::Result<Arc<dyn ContainerEngine>> {
    Ok(Arc::new(DockerEngine::connect().await?))
}

async fn find(engine: &Arc<dyn ContainerEngine>, name: &str) -> anyhow::Result<ContainerInfo> {
    engine
        .containers(&format!("{}={name}", boot::NAME_LABEL))
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("there is no environment named `{name}`\nhint: `envbuild ps` lists them"))
}

/// The names of the environment's terminals, from the label boot gave it.
fn terminals_of(container: &ContainerInfo) -> Vec<&str> {
    container
        .labels
        .get(boot::TERMINALS_LABEL)
        .map_or_else(Vec::new, |l| l.split(',').filter(|t| !t.is_empty()).collect())
}

pub async fn ps(args: &PsArgs) -> anyhow::Result<ExitCode> {
    let engine = engine().await?;
    let mut list = engine.containers(boot::NAME_LABEL).await?;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let label = |c: &ContainerInfo, key: &str| c.labels.get(key).cloned().unwrap_or_default();
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": label(c, boot::NAME_LABEL), "container": c.id, "running": c.running,
                    "snapshot": label(c, boot::SNAPSHOT_LABEL),
                    "terminals": terminals_of(c),
                })
            })
            .collect();
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        ui::eprint_line("no environments are booted");
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!("{:<24} {:<9} {:<23} TERMINALS", "NAME", "STATUS", "SNAPSHOT"));
    for c in &list {
        let snapshot = label(c, boot::SNAPSHOT_LABEL);
        output::line(format!(
            "{:<24} {:<9} {:<23} {}",
            label(c, boot::NAME_LABEL),
            if c.running { "running" } else { "stopped" },
            &snapshot[..snapshot.len().min(19)],
            label(c, boot::TERMINALS_LABEL)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(global: &GlobalArgs, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let engine = engine().await?;
    let container = find(&engine, &args.name).await?;
    if !container.running {
        anyhow::bail!("the environment `{}` is not running", args.name);
    }
    if let Some(wanted) = &args.terminal {
        let mut known = terminals_of(&container);
        known.push("start");
        if !known.contains(&wanted.as_str()) {
            anyhow::bail!(
                "the environment `{}` has no terminal `{wanted}`\nhint: its logs are {}",
                args.name,
                known.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    // The logs are redacted with the secrets the environment was booted with.
    let scopes: Vec<Scope> = container
        .labels
        .get(boot::SCOPES_LABEL)
        .map(|s| s.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_default();
    let store = store::open(global).await?;
    let loaded = secrets::open_all(secrets::list(&*store, &scopes).await?)
        .await
        .context("the logs are shown only redacted, and the secrets to redact them with cannot be read")?;
    let patterns = secrets::patterns(&loaded);
    ui::set_redaction(patterns.clone());
    let mut redactor = Redactor::new(patterns);
    let mut stream = boot::logs(&engine, &container.id, args.terminal.as_deref(), args.follow).await?;
    while let Some(item) = stream.next().await {
        let chunk = item?;
        output::bytes(&redactor.push(chunk.bytes()))?;
    }
    output::bytes(&redactor.finish())?;
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(args: &StopArgs) -> anyhow::Result<ExitCode> {
    let engine = engine().await?;
    let container = find(&engine, &args.name).await?;
    engine.remove_container(&container.id).await?;
    ui::eprint_line(format!("stopped `{}` and removed its container", args.name));
    Ok(ExitCode::SUCCESS)
}
