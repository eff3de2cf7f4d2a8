//! The life of booted environments after `boot`: listing them, reading their logs (redacted
//! with the secrets they were booted with), stopping them.

use std::io::Write;
use std::sync::Arc;

use envbuild_builder::boot;
use envbuild_builder::engine::{ContainerEngine, ContainerInfo};
use envbuild_secrets::{Redactor, Scope, records};
use futures::StreamExt;
use serde::Serialize;

use crate::build;
use crate::error::{Error, Result};
use crate::session::Session;

/// A booted environment, as `ps` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentInfo {
    pub name: String,
    pub container: String,
    pub running: bool,
    pub snapshot: String,
    pub terminals: Vec<String>,
}

/// The names of the environment's terminals, from the label boot gave it.
fn terminals_of(container: &ContainerInfo) -> Vec<String> {
    container
        .labels
        .get(boot::TERMINALS_LABEL)
        .map_or_else(Vec::new, |l| l.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect())
}

async fn find(engine: &Arc<dyn ContainerEngine>, name: &str) -> Result<ContainerInfo> {
    engine.containers(&format!("{}={name}", boot::NAME_LABEL)).await?.into_iter().next().ok_or_else(|| {
        Error::Failed(format!("there is no environment named `{name}`\nhint: `envbuild ps` lists them"))
    })
}

/// Every booted environment, by name.
pub async fn list(session: &Session) -> Result<Vec<EnvironmentInfo>> {
    let engine = session.engine.get().await?;
    let mut list = engine.containers(boot::NAME_LABEL).await?;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let label = |c: &ContainerInfo, key: &str| c.labels.get(key).cloned().unwrap_or_default();
    Ok(list
        .iter()
        .map(|c| EnvironmentInfo {
            name: label(c, boot::NAME_LABEL),
            container: c.id.clone(),
            running: c.running,
            snapshot: label(c, boot::SNAPSHOT_LABEL),
            terminals: terminals_of(c),
        })
        .collect())
}

/// Writes the output of an environment's terminal (`start`, or all when `None`) to `out`,
/// redacted, following it when asked.
pub async fn logs(
    session: &Session,
    name: &str,
    terminal: Option<&str>,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let engine = session.engine.get().await?;
    let container = find(&engine, name).await?;
    if !container.running {
        return Err(Error::Failed(format!("the environment `{name}` is not running")));
    }
    if let Some(wanted) = terminal {
        let mut known = terminals_of(&container);
        known.push("start".to_owned());
        if !known.iter().any(|k| k == wanted) {
            return Err(Error::Failed(format!(
                "the environment `{name}` has no terminal `{wanted}`\nhint: its logs are {}",
                known.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // The logs are redacted with the secrets the environment was booted with.
    let scopes: Vec<Scope> = container
        .labels
        .get(boot::SCOPES_LABEL)
        .map(|s| s.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_default();
    let found = records::list(&*session.store, &scopes).await?;
    let loaded = build::open_secrets(session, found).await.map_err(|e| {
        e.context("the logs are shown only redacted, and the secrets to redact them with cannot be read")
    })?;
    let mut redactor = Redactor::new(records::patterns(&loaded)?);
    let mut stream = boot::logs(&engine, &container.id, terminal, follow).await?;
    let write = |out: &mut (dyn Write + Send), bytes: &[u8]| {
        out.write_all(bytes).and_then(|()| out.flush()).map_err(Error::io("cannot write the logs"))
    };
    while let Some(item) = stream.next().await {
        let chunk = item?;
        write(out, &redactor.push(chunk.bytes()))?;
    }
    write(out, &redactor.finish())
}

/// Stops an environment and removes its container.
pub async fn stop(session: &Session, name: &str) -> Result<()> {
    let engine = session.engine.get().await?;
    let container = find(&engine, name).await?;
    engine.remove_container(&container.id).await?;
    Ok(())
}
