//! Managing secrets from the command line: reading a value safely, and setting, listing and
//! removing records in the session's store with its keyring.

use envbuild_cache::catalog;
use envbuild_secrets::envelope::KekRef;
use envbuild_secrets::records::{self, Found, NewVersion};
use envbuild_secrets::{Scope, SecretString, When};

use crate::error::{Error, Result};
use crate::session::Session;

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
    when: When,
    redact: bool,
    value: &SecretString,
) -> Result<Stored> {
    let kek = session.keyring.sealing_key().await?;
    let new = NewVersion { scope, name, when, redact, created: catalog::now_rfc3339() };
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
