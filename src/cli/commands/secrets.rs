//! `envbuild secrets set|ls|rm`.

use std::process::ExitCode;

use envbuild::secrets;
use envbuild_secrets::redact::MIN_SECRET_LEN;
use envbuild_secrets::{Scope, When};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, SecretScopeArgs, SecretsCommand, WhenArg, output, ui};

/// The scope `target` names.
fn scope_of(target: &SecretScopeArgs) -> anyhow::Result<Scope> {
    if target.scope.is_some() {
        return Ok(Scope::Workspace);
    }
    if let Some(group) = &target.env {
        return Ok(format!("env:{group}").parse()?);
    }
    let start = std::fs::canonicalize(&target.repo)
        .map_err(|e| anyhow::anyhow!("cannot open the repository `{}`: {e}", target.repo.display()))?;
    let (root, _) = envbuild_schema::find(&start);
    Ok(Scope::Repository(envbuild_builder::inputs::repository_id(&root)))
}

pub async fn run(
    global: &GlobalArgs,
    command: &SecretsCommand,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let mut session = cli::session(global, cancel).await?;
    match command {
        SecretsCommand::Set(args) => {
            let value = secrets::read_value(std::io::stdin())?;
            let when = match args.when {
                WhenArg::Boot => When::Boot,
                WhenArg::Install => When::Install,
                WhenArg::Both => When::Both,
            };
            if args.kms_key_id.is_some() {
                session.keyring.kms_key_id.clone_from(&args.kms_key_id);
            }
            let scope = scope_of(&args.target)?;
            let options =
                secrets::SetOptions { when, redact: !args.no_redact, affects_build: args.affects_build };
            let stored = secrets::set(&session, &scope, &args.name, &options, &value).await?;
            ui::eprint_line(format!(
                "stored secret `{}` in scope `{}`: version {}, {}, {}, sealed with the {} key {}",
                args.name,
                scope,
                stored.version,
                match when {
                    When::Boot => "given at boot",
                    When::Install => "given to install only",
                    When::Both => "given at boot and to install",
                },
                if args.no_redact { "not redacted" } else { "redacted in all output" },
                stored.key.kind,
                stored.key.key_id
            ));
            if args.no_redact && value.len() < MIN_SECRET_LEN {
                ui::eprint_line(format!(
                    "note: values shorter than {MIN_SECRET_LEN} bytes cannot be redacted; this one will show in output"
                ));
            }
        }
        SecretsCommand::Ls(args) => {
            let scopes = match &args.for_repo {
                Some(repo) => secrets::scopes_of_repository(repo, &args.groups)?,
                None => Vec::new(),
            };
            if args.for_repo.is_some() && !args.json {
                ui::eprint_line(format!(
                    "this repository sees the secrets of {}",
                    scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ));
            }
            let found = secrets::list(&session, &scopes).await?;
            if args.json {
                let rows: Vec<_> = found
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name, "scope": f.scope, "version": f.record.version, "when": f.record.when,
                            "redact": f.record.redact, "affects_build": f.record.affects_build,
                            "created": f.record.created, "key": f.record.kek,
                        })
                    })
                    .collect();
                output::json(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            if found.is_empty() {
                ui::eprint_line(format!("no secrets in {}", session.store.location()));
                return Ok(ExitCode::SUCCESS);
            }
            output::line(format!(
                "{:<24} {:<36} {:>7}  {:<8} {:<8} {:<21} KEY",
                "NAME", "SCOPE", "VERSION", "WHEN", "REDACT", "CREATED"
            ))?;
            for f in &found {
                output::line(format!(
                    "{:<24} {:<36} {:>7}  {:<8} {:<8} {:<21} {}:{}",
                    f.name,
                    f.scope.to_string(),
                    f.record.version,
                    f.record.when.as_str(),
                    if f.record.redact { "yes" } else { "no" },
                    f.record.created,
                    f.record.kek.kind,
                    f.record.kek.key_id
                ))?;
            }
        }
        SecretsCommand::Rm(args) => {
            let scope = scope_of(&args.target)?;
            secrets::remove(&session, &scope, &args.name).await?;
            ui::eprint_line(format!("removed secret `{}` from scope `{scope}`", args.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}
