//! Secret records in a store: `v1/secrets/<scope>/<NAME>`, one sealed record per secret (its
//! newest version), replaced by compare-and-swap so two writers setting one secret at once
//! both land, one version after the other.
//!
//! Listing never decrypts: a cache hit needs the names and versions only. [`open_all`]
//! decrypts with the [`Keyring`], which opens each record with the key the record names (a
//! KMS-sealed secret opens without being told the KMS key), and fails naming every secret that
//! would not open, never returning a partial set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use envbuild_cache::Store;
use envbuild_cache::layout::{ObjectPath, SECRETS};
use envbuild_cache::store::{PutMode, PutOutcome, StoreError};
use envbuild_schema::SecretString;
use futures::StreamExt;

use crate::envelope::{self, Binding, KeyEncryptionKey, LocalKey, SecretRecord};
use crate::error::{Result, SecretError};
use crate::redact::Patterns;
use crate::scope::{Scope, When, check_name};

/// Largest secret record read.
const MAX_RECORD: u64 = 1024 * 1024;
/// Compare-and-swap attempts before `set` gives up.
const SET_ATTEMPTS: usize = 8;

/// Where a secret's record lives.
pub fn path(scope: &Scope, name: &str) -> Result<ObjectPath> {
    check_name(name)?;
    Ok(ObjectPath::new(format!("{SECRETS}{}/{name}", scope.path_component()))?)
}

/// The keys that seal and open records: the local master key file, and AWS KMS for records
/// sealed with it (feature `kms`).
#[derive(Debug, Clone)]
pub struct Keyring {
    /// The local master key file (created with mode 0600 on first use).
    pub master_key: PathBuf,
    /// Seal new versions with this KMS key (id, ARN or alias) instead of the local key.
    pub kms_key_id: Option<String>,
}

impl Keyring {
    /// The key new versions are sealed with.
    pub async fn sealing_key(&self) -> Result<Arc<dyn KeyEncryptionKey>> {
        match &self.kms_key_id {
            Some(id) => kms_key(id, "(new)").await,
            None => Ok(Arc::new(LocalKey::load_or_create(&self.master_key)?)),
        }
    }

    /// The key that opens `found` (never created: see `LocalKey::load`).
    async fn opening_key(&self, found: &Found) -> Result<Arc<dyn KeyEncryptionKey>> {
        match found.record.kek.kind.as_str() {
            "kms" => kms_key(&found.record.kek.key_id, &found.name).await,
            _ => Ok(Arc::new(LocalKey::load(&self.master_key)?)),
        }
    }
}

#[cfg(feature = "kms")]
#[allow(clippy::unused_async)] // the same signature without the feature
async fn kms_key(id: &str, _name: &str) -> Result<Arc<dyn KeyEncryptionKey>> {
    Ok(Arc::new(crate::kms::KmsKey::new(id, &crate::kms::KmsOptions::default()).await))
}

#[cfg(not(feature = "kms"))]
#[allow(clippy::unused_async)] // the same signature as the real one
async fn kms_key(_id: &str, name: &str) -> Result<Arc<dyn KeyEncryptionKey>> {
    Err(SecretError::KmsUnavailable { name: name.to_owned() })
}

/// A record and where it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub scope: Scope,
    pub name: String,
    pub record: SecretRecord,
    pub etag: String,
}

async fn read(store: &dyn Store, scope: &Scope, name: &str) -> Result<Option<Found>> {
    match store.get(&path(scope, name)?, MAX_RECORD).await {
        Ok(got) => {
            let record: SecretRecord = serde_json::from_slice(&got.bytes).map_err(|source| {
                SecretError::DamagedRecord { name: name.to_owned(), scope: scope.to_string(), source }
            })?;
            Ok(Some(Found { scope: scope.clone(), name: name.to_owned(), record, etag: got.etag }))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every secret record in `scopes` (all scopes when empty), without decrypting anything.
pub async fn list(store: &dyn Store, scopes: &[Scope]) -> Result<Vec<Found>> {
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

/// What a new version is.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub scope: &'a Scope,
    pub name: &'a str,
    pub meta: envelope::Meta,
}

/// Stores a new version of a secret, sealed with `kek`; returns its version number.
pub async fn set(
    store: &dyn Store,
    kek: &dyn KeyEncryptionKey,
    new: &NewVersion<'_>,
    value: &SecretString,
) -> Result<u64> {
    let object = path(new.scope, new.name)?;
    for _ in 0..SET_ATTEMPTS {
        let existing = read(store, new.scope, new.name).await?;
        let version = existing.as_ref().map_or(1, |f| f.record.version + 1);
        let binding = Binding { name: new.name.to_owned(), scope: new.scope.clone(), version };
        let record = envelope::seal(kek, &binding, &new.meta, value).await?;
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|source| SecretError::Encode { name: new.name.to_owned(), source })?;
        let mode = existing.map_or(PutMode::Create, |f| PutMode::Update { etag: f.etag });
        match store.put(&object, Bytes::from(bytes), mode).await {
            Ok(PutOutcome::Written { .. }) => return Ok(version),
            // Someone else set it at the same time: seal again on top of their version.
            Ok(PutOutcome::AlreadyExists) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(SecretError::Contended { name: new.name.to_owned() })
}

/// Removes a secret; `false` when there was none.
pub async fn remove(store: &dyn Store, scope: &Scope, name: &str) -> Result<bool> {
    let object = path(scope, name)?;
    if store.head(&object).await?.is_none() {
        return Ok(false);
    }
    store.delete(&object).await?;
    Ok(true)
}

/// A decrypted secret.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub scope: Scope,
    pub version: u64,
    pub when: When,
    pub redact: bool,
    pub value: SecretString,
}

/// Decrypts `found`. Every secret is tried; when any fails, the error names each that failed
/// with its reason, and nothing is returned: nothing runs with some secrets missing.
pub async fn open_all(keyring: &Keyring, found: Vec<Found>) -> Result<Vec<Loaded>> {
    let results: Vec<(String, Result<Loaded>)> = futures::stream::iter(found)
        .map(|f| async move {
            let opened = async {
                let kek = keyring.opening_key(&f).await?;
                let value = envelope::open(&*kek, &f.record, &f.scope, &f.name).await?;
                Ok(Loaded {
                    name: f.name.clone(),
                    scope: f.scope.clone(),
                    version: f.record.version,
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
    let mut loaded = Vec::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok(secret) => loaded.push(secret),
            Err(e) => failures.push((name, e)),
        }
    }
    if failures.is_empty() {
        loaded.sort_by(|a, b| (&a.scope, &a.name).cmp(&(&b.scope, &b.name)));
        Ok(loaded)
    } else {
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        Err(SecretError::NotOpened { failures })
    }
}

/// The redaction patterns of the redacted ones. Fails rather than leave a value unmasked.
pub fn patterns(loaded: &[Loaded]) -> Result<Patterns> {
    Patterns::new(loaded.iter().filter(|s| s.redact).map(|s| (s.name.as_str(), s.value.expose().as_bytes())))
}

/// Which values a leak scan with [`patterns`] looks for, without them: each redacted secret's
/// scope, name and version. A stream scanned for these needs no new scan for a subset.
pub fn scanned(loaded: &[Loaded]) -> Vec<String> {
    let mut out: Vec<String> =
        loaded.iter().filter(|s| s.redact).map(|s| format!("{}/{}@{}", s.scope, s.name, s.version)).collect();
    out.sort();
    out
}

/// `NAME=value` for the ones `pick` selects.
pub fn env_pairs(loaded: &[Loaded], pick: impl Fn(When) -> bool) -> BTreeMap<String, SecretString> {
    loaded.iter().filter(|s| pick(s.when)).map(|s| (s.name.clone(), s.value.clone())).collect()
}

/// What the env key records of the secrets install sees: each name with its scope, so that
/// rotating a value (a new version) rebuilds nothing; and its version too for a secret marked
/// to affect the build.
pub fn install_secrets(found: &[Found]) -> BTreeMap<String, String> {
    found
        .iter()
        .filter(|f| f.record.when.at_install())
        .map(|f| {
            let what = if f.record.affects_build {
                format!("{} version {}", f.scope, f.record.version)
            } else {
                f.scope.to_string()
            };
            (f.name.clone(), what)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envbuild_cache::store::memory::MemoryStore;

    #[tokio::test]
    async fn set_twice_gives_versions_and_open_all_names_every_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let keyring = Keyring { master_key: dir.path().join("master.key"), kms_key_id: None };
        let kek = keyring.sealing_key().await.unwrap();
        let scope = Scope::workspace();
        let meta =
            envelope::Meta { when: When::Both, redact: true, affects_build: false, created: "now".into() };
        let new = NewVersion { scope: &scope, name: "API_TOKEN", meta };
        let value = SecretString::new("first-value-123".into());
        assert_eq!(set(&store, &*kek, &new, &value).await.unwrap(), 1);
        assert_eq!(set(&store, &*kek, &new, &SecretString::new("second-value-456".into())).await.unwrap(), 2);
        let found = list(&store, &[]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(install_secrets(&found)["API_TOKEN"], "workspace");
        let loaded = open_all(&keyring, found.clone()).await.unwrap();
        assert_eq!(loaded[0].value.expose(), "second-value-456");

        // Another master key opens nothing, and the error names the secret, not its value.
        let stranger = Keyring { master_key: dir.path().join("other.key"), kms_key_id: None };
        let err = open_all(&stranger, found).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`API_TOKEN`") && !text.contains("second-value"), "{text}");
        assert!(remove(&store, &scope, "API_TOKEN").await.unwrap());
        assert!(!remove(&store, &scope, "API_TOKEN").await.unwrap());
    }
}
