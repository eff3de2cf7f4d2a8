//! Managing secrets from the command line: reading a value safely, and setting, listing and
//! removing records in the session's store with its keyring; and which scopes a repository is
//! in, so a build or boot sees exactly their secrets.

use envbuild_cache::catalog;
use envbuild_secrets::envelope::{KekRef, Meta};
use envbuild_secrets::records::{self, Found, NewVersion};
use envbuild_secrets::{Scope, SecretString, When};

use crate::error::{Error, Result};
use crate::session::Session;

/// The scopes a repository is in: its own (`repo:` its normalized remote, else its path), the
/// environment groups it declares (`environment` in `.cursor/envbuild.json`) or is given
/// (`groups`, from `--group`), and the whole store.
pub fn scopes_of(repository: &str, declared: Option<&str>, groups: &[String]) -> Result<Vec<Scope>> {
    let mut scopes = vec![Scope::Repository(repository.to_owned())];
    for group in declared.into_iter().chain(groups.iter().map(String::as_str)) {
        let scope: Scope = format!("env:{group}").parse()?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.push(Scope::Workspace);
    Ok(scopes)
}

/// The scopes of the repository at (or above) `repo`, with `groups` besides what it declares.
pub fn scopes_of_repository(repo: &std::path::Path, groups: &[String]) -> Result<Vec<Scope>> {
    let start = std::fs::canonicalize(repo)
        .map_err(Error::io(format!("cannot open the repository `{}`", repo.display())))?;
    let (root, config) = envbuild_schema::find(&start);
    let declared = crate::config::settings(&config)?.and_then(|s| s.environment);
    scopes_of(&envbuild_builder::inputs::repository_id(&root), declared.as_deref(), groups)
}

/// Largest value accepted.
pub const MAX_VALUE: usize = 64 * 1024;

/// Reads a secret value from `input`: all of it, without one trailing newline.
pub fn read_value(input: impl std::io::Read) -> Result<SecretString> {
    use std::io::Read as _;
    let mut value = String::new();
    input
        .take(MAX_VALUE as u64 + 1)
        .read_to_string(&mut value)
        .map_err(Error::io("cannot read the value from stdin"))?;
    if value.len() > MAX_VALUE {
        return Err(Error::Failed(format!("the value is larger than {} KiB", MAX_VALUE / 1024)));
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Error::Failed(
            "the value is empty\nhint: pipe it in: `printf %s \"$TOKEN\" | envbuild secrets set NAME`".into(),
        ));
    }
    Ok(SecretString::new(value))
}

/// How a new version is used.
#[derive(Debug, Clone, Copy)]
pub struct SetOptions {
    pub when: When,
    pub redact: bool,
    /// A new version changes the env key (rebuilds); off by default, so rotating rebuilds nothing.
    pub affects_build: bool,
}

/// What `set` stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub version: u64,
    pub key: KekRef,
}

/// Stores a new version of a secret, sealed with the session keyring's sealing key.
pub async fn set(
    session: &Session,
    scope: &Scope,
    name: &str,
    options: &SetOptions,
    value: &SecretString,
) -> Result<Stored> {
    let kek = session.keyring.sealing_key().await?;
    let meta = Meta {
        when: options.when,
        redact: options.redact,
        affects_build: options.affects_build,
        created: catalog::now_rfc3339(),
    };
    let new = NewVersion { scope, name, meta };
    let version = records::set(&*session.store, &*kek, &new, value).await?;
    Ok(Stored { version, key: kek.reference() })
}

/// The records in `scopes` (all when empty), values never decrypted.
pub async fn list(session: &Session, scopes: &[Scope]) -> Result<Vec<Found>> {
    Ok(records::list(&*session.store, scopes).await?)
}

/// Removes a secret; an error when there is none.
pub async fn remove(session: &Session, scope: &Scope, name: &str) -> Result<()> {
    if records::remove(&*session.store, scope, name).await? {
        Ok(())
    } else {
        Err(Error::Failed(format!("there is no secret `{name}` in scope `{scope}`")))
    }
}
