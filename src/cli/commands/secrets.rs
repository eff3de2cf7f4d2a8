//! `envbuild secrets set|ls|rm`.

use std::process::ExitCode;

use envbuild::secrets;
use envbuild_secrets::When;
use envbuild_secrets::redact::MIN_SECRET_LEN;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, GlobalArgs, SecretsCommand, WhenArg, output, ui};

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
            let stored =
                secrets::set(&session, &args.scope, &args.name, when, !args.no_redact, &value).await?;
            ui::eprint_line(format!(
                "stored secret `{}` in scope `{}`: version {}, {}, {}, sealed with the {} key {}",
                args.name,
                args.scope,
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
            let found = secrets::list(&session, &args.scopes).await?;
            if args.json {
                let rows: Vec<_> = found
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name, "scope": f.scope, "version": f.record.version, "when": f.record.when,
                            "redact": f.record.redact, "created": f.record.created, "key": f.record.kek,
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
                "{:<28} {:<18} {:>7}  {:<8} {:<8} {:<21} KEY",
                "NAME", "SCOPE", "VERSION", "WHEN", "REDACT", "CREATED"
            ))?;
            for f in &found {
                output::line(format!(
                    "{:<28} {:<18} {:>7}  {:<8} {:<8} {:<21} {}:{}",
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
            secrets::remove(&session, &args.scope, &args.name).await?;
            ui::eprint_line(format!("removed secret `{}` from scope `{}`", args.name, args.scope));
        }
    }
    Ok(ExitCode::SUCCESS)
}
