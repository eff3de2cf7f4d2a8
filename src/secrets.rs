//! Secrets as the commands use them: where they are stored (`v1/secrets/<scope>/<NAME>` in the
//! store), which key encrypts them, loading the ones a build or boot needs, and installing the
//! redaction of their values for everything the process prints.
//!
//! The key-encryption key is AWS KMS when `--kms-key-id` (or `ENVBUILD_KMS_KEY_ID`) is given,
//! else the local master key file (`$ENVBUILD_MASTER_KEY`, else
//! `~/.config/envbuild/master.key`, created with mode 0600 on first use). Opening a record uses
//! the key it names, so a KMS-sealed secret opens without `--kms-key-id`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use envbuild_builder::redact::Patterns;
use envbuild_builder::secrets::{self, KeyEncryptionKey, LocalKey, Scope, SecretRecord, When};
use envbuild_cache::layout::{ObjectPath, SECRETS};
use envbuild_cache::store::{PutMode, PutOutcome, StoreError};
use envbuild_cache::{Store, catalog};
use envbuild_schema::SecretString;
use futures::StreamExt;

use crate::env;

/// Largest secret record read.
const MAX_RECORD: u64 = 1024 * 1024;

/// Where a secret's record lives.
pub fn path(scope: &Scope, name: &str) -> anyhow::Result<ObjectPath> {
    secrets::check_name(name)?;
    Ok(ObjectPath::new(format!("{SECRETS}{}/{name}", scope.path_component()))?)
}

fn master_key_path() -> PathBuf {
    if let Some(path) = std::env::var_os(env::MASTER_KEY) {
        return PathBuf::from(path);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(std::env::temp_dir);
    config.join("envbuild").join("master.key")
}

/// The key new secrets are sealed with.
pub async fn sealing_key(kms_key_id: Option<&str>) -> anyhow::Result<Arc<dyn KeyEncryptionKey>> {
    match kms_key_id {
        Some(id) => kms_key(id).await,
        None => Ok(Arc::new(LocalKey::load_or_create(&master_key_path())?)),
    }
}

#[cfg(feature = "kms")]
async fn kms_key(id: &str) -> anyhow::Result<Arc<dyn KeyEncryptionKey>> {
    Ok(Arc::new(secrets::KmsKey::new(id, &secrets::KmsOptions::default()).await))
}

#[cfg(not(feature = "kms"))]
#[allow(clippy::unused_async)] // the same signature as the real one
async fn kms_key(_id: &str) -> anyhow::Result<Arc<dyn KeyEncryptionKey>> {
    anyhow::bail!("this envbuild was built without AWS KMS support (feature `kms`)")
}

/// The key that opens `record`.
async fn opening_key(record: &SecretRecord) -> anyhow::Result<Arc<dyn KeyEncryptionKey>> {
    match record.kek.kind.as_str() {
        "kms" => kms_key(&record.kek.key_id).await,
        _ => Ok(Arc::new(LocalKey::load_or_create(&master_key_path())?)),
    }
}

/// A record and where it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub scope: Scope,
    pub name: String,
    pub record: SecretRecord,
    pub etag: String,
}

async fn read(store: &dyn Store, scope: &Scope, name: &str) -> anyhow::Result<Option<Found>> {
    match store.get(&path(scope, name)?, MAX_RECORD).await {
        Ok(got) => {
            let record: SecretRecord = serde_json::from_slice(&got.bytes)
                .with_context(|| format!("the record of secret `{name}` in scope `{scope}` is damaged"))?;
            Ok(Some(Found { scope: scope.clone(), name: name.to_owned(), record, etag: got.etag }))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every secret record in `scopes` (all scopes when empty), without decrypting anything.
pub async fn list(store: &dyn Store, scopes: &[Scope]) -> anyhow::Result<Vec<Found>> {
    let prefixes: Vec<String> = if scopes.is_empty() {
        vec![SECRETS.to_owned()]
    } else {
        scopes.iter().map(|s| format!("{SECRETS}{}/", s.path_component())).collect()
    };
    let mut out = Vec::new();
    for prefix in prefixes {
        for meta in store.list(&prefix).await? {
            let rest = meta.path.as_str().trim_start_matches(SECRETS);
            let Some((component, name)) = rest.split_once('/') else { continue };
            let Some(scope) = Scope::from_path_component(component) else { continue };
            if let Some(found) = read(store, &scope, name).await? {
                out.push(found);
            }
        }
    }
    out.sort_by(|a, b| (&a.scope, &a.name).cmp(&(&b.scope, &b.name)));
    Ok(out)
}

/// Stores a new version of `name` in `scope`, sealed with `kek`; returns the version.
pub async fn set(
    store: &Arc<dyn Store>,
    kek: &dyn KeyEncryptionKey,
    scope: &Scope,
    name: &str,
    when: When,
    redact: bool,
    value: &SecretString,
) -> anyhow::Result<u64> {
    let object = path(scope, name)?;
    for _ in 0..8 {
        let existing = read(&**store, scope, name).await?;
        let version = existing.as_ref().map_or(1, |f| f.record.version + 1);
        let binding = secrets::Binding { name: name.to_owned(), scope: scope.clone(), version };
        let record = secrets::seal(kek, &binding, when, redact, catalog::now_rfc3339(), value).await?;
        let bytes = Bytes::from(serde_json::to_vec_pretty(&record)?);
        let mode = existing.map_or(PutMode::Create, |f| PutMode::Update { etag: f.etag });
        match store.put(&object, bytes, mode).await {
            Ok(PutOutcome::Written { .. }) => return Ok(version),
            // Someone else set it at the same time: seal again on top of their version.
            Ok(PutOutcome::AlreadyExists) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("secret `{name}` keeps changing under us; try again")
}

/// A decrypted secret.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub when: When,
    pub redact: bool,
    pub value: SecretString,
}

/// Decrypts `found`. Every secret is tried; when any fails, the error names all that failed,
/// and nothing is returned: nothing runs with some secrets missing.
pub async fn open_all(found: Vec<Found>) -> anyhow::Result<Vec<Loaded>> {
    let results: Vec<(String, Result<Loaded, anyhow::Error>)> = futures::stream::iter(found)
        .map(|f| async move {
            let opened = async {
                let kek = opening_key(&f.record).await?;
                let value = secrets::open(&*kek, &f.record, &f.scope, &f.name).await?;
                Ok::<_, anyhow::Error>(Loaded {
                    name: f.name.clone(),
                    when: f.record.when,
                    redact: f.record.redact,
                    value,
                })
            }
            .await;
            (f.name, opened)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(|(n, _)| format!("`{n}`")).collect();
        let first =
            failed.into_iter().find_map(|(_, r)| r.err()).map(|e| format!("{e:#}")).unwrap_or_default();
        anyhow::bail!("cannot decrypt the secrets {}: {first}", names.join(", "));
    }
    Ok(ok.into_iter().filter_map(|(_, r)| r.ok()).collect())
}

/// The redaction patterns of the redacted ones.
pub fn patterns(loaded: &[Loaded]) -> Patterns {
    Patterns::new(loaded.iter().filter(|s| s.redact).map(|s| (s.name.as_str(), s.value.expose().as_bytes())))
}

/// `NAME=value` for the ones `pick` selects.
pub fn env_pairs(loaded: &[Loaded], pick: impl Fn(When) -> bool) -> BTreeMap<String, String> {
    loaded.iter().filter(|s| pick(s.when)).map(|s| (s.name.clone(), s.value.expose().to_owned())).collect()
}

/// The versions of the secrets install sees, for the env key.
pub fn install_versions(found: &[Found]) -> BTreeMap<String, String> {
    found
        .iter()
        .filter(|f| f.record.when.at_install())
        .map(|f| (f.name.clone(), f.record.version.to_string()))
        .collect()
}

/// Reads a secret value from stdin: all of it, without one trailing newline.
pub fn read_value() -> anyhow::Result<SecretString> {
    use std::io::Read;
    let mut value = String::new();
    std::io::stdin()
        .take(64 * 1024 + 1)
        .read_to_string(&mut value)
        .context("cannot read the value from stdin")?;
    if value.len() > 64 * 1024 {
        anyhow::bail!("the value is larger than 64 KiB");
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        anyhow::bail!(
            "the value is empty\nhint: pipe it in: `printf %s \"$TOKEN\" | envbuild secrets set NAME`"
        );
    }
    Ok(SecretString::new(value))
}

/// The leak scan of snapshots, over the redacted secrets' patterns.
#[derive(Debug)]
pub struct SecretScanner(pub Patterns);

impl envbuild_cache::ingest::LeakScanner for SecretScanner {
    fn longest(&self) -> usize {
        self.0.longest()
    }

    fn find(&self, haystack: &[u8]) -> Vec<(usize, String)> {
        self.0.find(haystack).into_iter().map(|(start, _, name)| (start, name.to_owned())).collect()
    }
}
