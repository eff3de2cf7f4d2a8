//! `envbuild key`: both keys and every input, without building.

use std::process::ExitCode;

use envbuild::build;
use envbuild_builder::plan::{Plan, SystemSource};
use tokio_util::sync::CancellationToken;

use crate::cli::commands::build::repo_options;
use crate::cli::{self, GlobalArgs, KeyArgs, output};

pub async fn run(
    global: &GlobalArgs,
    args: &KeyArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let session = cli::session(global, cancel).await?;
    let planned = build::plan(&session, &repo_options(&args.repo)?).await?;
    let plan = &planned.plan;
    let keys = &plan.keys;
    let base = base_of(plan);
    if args.json {
        output::json(&serde_json::json!({
            "system_key": keys.system_key,
            "env_key": keys.env_key,
            "base": base,
            "inputs": { "system": keys.system, "env": keys.env },
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!("system key  {}", keys.system_key))?;
    output::line(format!("env key     {}", keys.env_key))?;
    for (what, value) in base.as_object().into_iter().flatten() {
        output::line(format!("  base    {what:<24} {}", value.as_str().unwrap_or_default()))?;
    }
    let system = &keys.system;
    if let Some(dockerfile) = &system.dockerfile {
        output::line(format!("  system  Dockerfile               {dockerfile}"))?;
    }
    if let Some(snapshot) = &system.base_snapshot {
        output::line(format!("  system  base snapshot            {snapshot}"))?;
    }
    for (reference, id) in &system.bases {
        output::line(format!("  system  base image {reference:<13} {id}"))?;
    }
    for (path, fingerprint) in &system.context {
        output::line(format!("  system  context {path}  {fingerprint}"))?;
    }
    for (name, value) in &system.build_args {
        output::line(format!("  system  build arg {name}={value}"))?;
    }
    output::line(format!("  system  platform                 {}", system.platform))?;
    output::line(format!(
        "  system  user                     {}",
        system.user.as_deref().unwrap_or("(image default)")
    ))?;
    let env = &keys.env;
    output::line(format!(
        "  env     install                  {}",
        env.install.as_deref().unwrap_or("(none)")
    ))?;
    for (path, fingerprint) in &env.inputs {
        output::line(format!("  env     input {path}  {fingerprint}"))?;
    }
    for (name, value) in &env.env {
        output::line(format!("  env     variable {name}={value}"))?;
    }
    for (name, version) in &env.secrets {
        output::line(format!("  env     secret {name} version {version}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the system layer is built from, for people: the kind of base and, for a Dockerfile,
/// where it and its context are.
fn base_of(plan: &Plan) -> serde_json::Value {
    let relative = |path: &std::path::Path| {
        path.strip_prefix(&plan.repo).map_or_else(
            |_| path.display().to_string(),
            |rel| if rel.as_os_str().is_empty() { ".".to_owned() } else { rel.display().to_string() },
        )
    };
    match &plan.source {
        SystemSource::Dockerfile { context, .. } => serde_json::json!({
            "kind": "build",
            "context": format!("{} (in the repository)", relative(&context.dir)),
            "dockerfile": context.dockerfile,
        }),
        SystemSource::Image { reference, id } => {
            serde_json::json!({ "kind": "image", "image": reference, "id": id })
        }
        SystemSource::Snapshot { id } => {
            serde_json::json!({ "kind": "snapshot", "snapshot": id.to_string() })
        }
    }
}
