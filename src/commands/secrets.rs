//! `envbuild secrets set|ls|rm`.

use std::process::ExitCode;

use envbuild_builder::secrets::When;

use crate::cli::{GlobalArgs, SecretsCommand, WhenArg};
use crate::{output, secrets, store, ui};

pub async fn run(global: &GlobalArgs, command: &SecretsCommand) -> anyhow::Result<ExitCode> {
    let store = store::open(global).await?;
    match command {
        SecretsCommand::Set(args) => {
            let value = secrets::read_value()?;
            let when = match args.when {
                WhenArg::Boot => When::Boot,
                WhenArg::Install => When::Install,
                WhenArg::Both => When::Both,
            };
            let kek = secrets::sealing_key(args.kms_key_id.as_deref()).await?;
            let version =
                secrets::set(&store, &*kek, &args.scope, &args.name, when, !args.no_redact, &value).await?;
            let reference = kek.reference();
            ui::eprint_line(format!(
                "stored secret `{}` in scope `{}`: version {version}, {}, {}, sealed with the {} key {}",
                args.name,
                args.scope,
                match when {
                    When::Boot => "given at boot",
                    When::Install => "given to install only",
                    When::Both => "given at boot and to install",
                },
                if args.no_redact { "not redacted" } else { "redacted in all output" },
                reference.kind,
                reference.key_id
            ));
            if args.no_redact && value.len() < envbuild_builder::redact::MIN_SECRET_LEN {
                ui::eprint_line(
                    "note: values shorter than 8 bytes cannot be redacted; this one will show in output",
                );
            }
        }
        SecretsCommand::Ls(args) => {
            let found = secrets::list(&*store, &args.scopes).await?;
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
                ui::eprint_line(format!("no secrets in {}", store.location()));
            } else {
                output::line(format!(
                    "{:<28} {:<18} {:>7}  {:<8} {:<8} {:<21} KEY",
                    "NAME", "SCOPE", "VERSION", "WHEN", "REDACT", "CREATED"
                ));
            }
            for f in &found {
                let when = serde_json::to_value(f.record.when)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                output::line(format!(
                    "{:<28} {:<18} {:>7}  {:<8} {:<8} {:<21} {}:{}",
                    f.name,
                    f.scope,
                    f.record.version,
                    when,
                    if f.record.redact { "yes" } else { "no" },
                    f.record.created,
                    f.record.kek.kind,
                    f.record.kek.key_id
                ));
            }
        }
        SecretsCommand::Rm(args) => {
            let path = secrets::path(&args.scope, &args.name)?;
            if store.head(&path).await?.is_none() {
                anyhow::bail!("there is no secret `{}` in scope `{}`", args.name, args.scope);
            }
            store.delete(&path).await?;
            ui::eprint_line(format!("removed secret `{}` from scope `{}`", args.name, args.scope));
        }
    }
    Ok(ExitCode::SUCCESS)
}
