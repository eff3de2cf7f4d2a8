//! Sealing and opening one secret: envelope encryption.
//!
//! Each version of a secret gets a fresh 256-bit data key; the value is encrypted with it
//! under AES-256-GCM, and the data key itself is encrypted ("wrapped") by a key-encryption
//! key: AWS KMS (`GenerateDataKey`/`Decrypt`, feature `kms`) or, by default, a local master
//! key file (created once with mode 0600, refused if others can read it). The name, scope and
//! version are bound to both layers (GCM additional data, and the KMS encryption context), so
//! a record moved to another scope or name, or replayed as another version, does not decrypt:
//! it yields an error, never plaintext. Plaintext exists only in [`SecretString`]s, which
//! never print it and are zeroed when dropped; data keys are zeroed too.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use envbuild_schema::SecretString;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Result, SecretError};
use crate::redact::MIN_SECRET_LEN;
use crate::scope::{Scope, When, check_name};

pub const FORMAT: &str = "envbuild.secret.v1";

/// Which key-encryption key wrapped the data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRef {
    /// `local` or `kms`.
    pub kind: String,
    /// The local key's fingerprint, or the KMS key id.
    pub key_id: String,
}

/// A sealed secret, as the store keeps it (`v1/secrets/<scope>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub format: String,
    pub name: String,
    pub scope: Scope,
    pub version: u64,
    pub when: When,
    pub redact: bool,
    /// Whether a new version changes the env key (rebuilds): off, so rotating a token rebuilds
    /// nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub affects_build: bool,
    /// RFC 3339.
    pub created: String,
    pub kek: KekRef,
    /// The wrapped data key, base64.
    pub wrapped_key: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// What binds a ciphertext to its name, scope and version.
#[derive(Debug, Clone)]
pub struct Binding {
    pub name: String,
    pub scope: Scope,
    pub version: u64,
}

impl Binding {
    /// GCM additional data.
    fn aad(&self) -> Vec<u8> {
        format!("{FORMAT}\nname={}\nscope={}\nversion={}", self.name, self.scope, self.version).into_bytes()
    }

    /// The KMS encryption context.
    pub fn kms_context(&self) -> Vec<(String, String)> {
        vec![
            ("envbuild:name".to_owned(), self.name.clone()),
            ("envbuild:scope".to_owned(), self.scope.to_string()),
            ("envbuild:version".to_owned(), self.version.to_string()),
        ]
    }
}

/// A fresh data key and its wrapped form.
pub type DataKey = (Zeroizing<[u8; 32]>, Vec<u8>);

/// The key that wraps data keys.
#[async_trait]
pub trait KeyEncryptionKey: Send + Sync + std::fmt::Debug {
    fn reference(&self) -> KekRef;
    async fn new_data_key(&self, binding: &Binding) -> Result<DataKey>;
    async fn unwrap_key(&self, wrapped: &[u8], binding: &Binding) -> Result<Zeroizing<[u8; 32]>>;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str, what: &str, binding: &Binding) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| undecryptable(binding, &format!("its {what} is not base64")))
}

pub(crate) fn undecryptable(binding: &Binding, reason: &str) -> SecretError {
    SecretError::Undecryptable {
        name: binding.name.clone(),
        scope: binding.scope.to_string(),
        reason: reason.to_owned(),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Encrypts `plaintext` with `key` bound to `aad`; returns nonce and ciphertext.
fn gcm_seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SecretError::kms("bad key length"))?;
    let nonce = random::<12>();
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .map_err(|_| SecretError::kms("encryption failed"))?;
    Ok((nonce, ciphertext))
}

fn gcm_open(key: &[u8; 32], nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    (nonce.len() == 12).then_some(())?;
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad }).ok().map(Zeroizing::new)
}

/// Seals `value` as version `binding.version`.
/// What a sealed record says of its secret, beside the value.
#[derive(Debug, Clone)]
pub struct Meta {
    pub when: When,
    pub redact: bool,
    pub affects_build: bool,
    /// RFC 3339.
    pub created: String,
}

pub async fn seal(
    kek: &dyn KeyEncryptionKey,
    binding: &Binding,
    meta: &Meta,
    value: &SecretString,
) -> Result<SecretRecord> {
    let Meta { when, redact, affects_build, created } = meta.clone();
    check_name(&binding.name)?;
    if redact && value.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShortToRedact { name: binding.name.clone(), len: value.len() });
    }
    let (data_key, wrapped) = kek.new_data_key(binding).await?;
    let (nonce, ciphertext) = gcm_seal(&data_key, value.expose().as_bytes(), &binding.aad())?;
    Ok(SecretRecord {
        format: FORMAT.to_owned(),
        name: binding.name.clone(),
        scope: binding.scope.clone(),
        version: binding.version,
        when,
        redact,
        affects_build,
        created,
        kek: kek.reference(),
        wrapped_key: b64(&wrapped),
        nonce: b64(&nonce),
        ciphertext: b64(&ciphertext),
    })
}

/// Opens a record found at the store path of `scope` and `name`. The binding comes from where
/// the record was found, not from what it says, so a record copied elsewhere does not open.
pub async fn open(
    kek: &dyn KeyEncryptionKey,
    record: &SecretRecord,
    scope: &Scope,
    name: &str,
) -> Result<SecretString> {
    let binding = Binding { name: name.to_owned(), scope: scope.clone(), version: record.version };
    if record.format != FORMAT {
        return Err(undecryptable(&binding, &format!("its format is `{}`", record.format)));
    }
    let wrapped = unb64(&record.wrapped_key, "wrapped key", &binding)?;
    let nonce = unb64(&record.nonce, "nonce", &binding)?;
    let ciphertext = unb64(&record.ciphertext, "ciphertext", &binding)?;
    let data_key = kek.unwrap_key(&wrapped, &binding).await?;
    let plaintext = gcm_open(&data_key, &nonce, &ciphertext, &binding.aad()).ok_or_else(|| {
        undecryptable(&binding, "it was sealed for another name, scope or version, or has been altered")
    })?;
    let text = String::from_utf8(plaintext.to_vec())
        .map_err(|_| undecryptable(&binding, "its value is not UTF-8"))?;
    Ok(SecretString::new(text))
}

/// The default local master key: a 32-byte key in a file only its owner can read.
#[derive(Clone)]
pub struct LocalKey {
    key: Zeroizing<[u8; 32]>,
    path: PathBuf,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey").field("path", &self.path).field("key", &"****").finish()
    }
}

impl LocalKey {
    /// Loads the key at `path`; a missing file is an error saying so. Opening secrets never
    /// creates a key: a new key would open nothing, and would hide which file was meant.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(SecretError::MasterKey {
                path: path.to_path_buf(),
                reason: "there is no key file here, so no secret sealed with a local key can be opened\nhint: point ENVBUILD_MASTER_KEY at the key file the secrets were sealed with (copy it from the machine that ran `envbuild secrets set`)".into(),
            });
        }
        Self::load_or_create(path)
    }

    /// Loads the key at `path`, creating it (mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        use std::io::{Read, Write};
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let fail = |reason: String| SecretError::MasterKey { path: path.to_path_buf(), reason };
        match std::fs::File::open(path) {
            Ok(mut file) => {
                let mode = file.metadata().map_err(|e| fail(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!(
                        "other users can read it (mode {:o}); run `chmod 600` on it",
                        mode & 0o777
                    )));
                }
                let mut key = Zeroizing::new([0u8; 32]);
                let mut extra = [0u8; 1];
                file.read_exact(&mut key[..]).map_err(|_| fail("it is not a 32-byte key".into()))?;
                if file.read(&mut extra).map_err(|e| fail(e.to_string()))? != 0 {
                    return Err(fail("it is not a 32-byte key".into()));
                }
                Ok(Self { key, path: path.to_path_buf() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| fail(format!("cannot create its folder: {e}")))?;
                    let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
                }
                let key = Zeroizing::new(random::<32>());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| fail(format!("cannot create it: {e}")))?;
                file.write_all(&key[..])
                    .and_then(|()| file.sync_all())
                    .map_err(|e| fail(format!("cannot write it: {e}")))?;
                Ok(Self { key, path: path.to_path_buf() })
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        hex::encode(&sha2::Sha256::digest(&self.key[..])[..8])
    }
}

#[async_trait]
impl KeyEncryptionKey for LocalKey {
    fn reference(&self) -> KekRef {
        KekRef { kind: "local".to_owned(), key_id: self.fingerprint() }
    }

    async fn new_data_key(&self, binding: &Binding) -> Result<DataKey> {
        let data_key = Zeroizing::new(random::<32>());
        let (nonce, wrapped) = gcm_seal(&self.key, &data_key[..], &binding.aad())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&wrapped);
        Ok((data_key, out))
    }

    async fn unwrap_key(&self, wrapped: &[u8], binding: &Binding) -> Result<Zeroizing<[u8; 32]>> {
        if wrapped.len() < 12 {
            return Err(undecryptable(binding, "its wrapped key is truncated"));
        }
        let plain = gcm_open(&self.key, &wrapped[..12], &wrapped[12..], &binding.aad()).ok_or_else(|| {
            undecryptable(binding, &format!("the local master key `{}` does not open it: another key sealed it, or the record was moved from another name or scope\nhint: point ENVBUILD_MASTER_KEY at the key file it was sealed with, or set the secret again", self.path.display()))
        })?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(undecryptable(binding, "its data key has the wrong length"));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scope::Scope;

    fn binding(name: &str, scope: &str, version: u64) -> Binding {
        Binding { name: name.into(), scope: scope.parse().unwrap(), version }
    }

    pub(crate) fn meta(when: When, redact: bool) -> Meta {
        Meta { when, redact, affects_build: false, created: "now".into() }
    }

    #[tokio::test]
    async fn local_round_trip_and_refusals() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let kek = LocalKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let value = SecretString::new("correct horse battery staple".into());
        let record =
            seal(&kek, &binding("API_TOKEN", "workspace", 1), &meta(When::Boot, true), &value).await.unwrap();
        assert!(!serde_json::to_string(&record).unwrap().contains("horse"), "the record holds no plaintext");
        let again = LocalKey::load_or_create(&path).unwrap();
        assert_eq!(open(&again, &record, &Scope::workspace(), "API_TOKEN").await.unwrap(), value);

        let other_scope: Scope = "env:core".parse().unwrap();
        let err = open(&kek, &record, &other_scope, "API_TOKEN").await.unwrap_err();
        assert!(matches!(err, SecretError::Undecryptable { .. }), "{err}");
        assert!(open(&kek, &record, &Scope::workspace(), "OTHER").await.is_err());
        let mut replayed = record.clone();
        replayed.version = 2;
        assert!(open(&kek, &replayed, &Scope::workspace(), "API_TOKEN").await.is_err());
        let stranger = LocalKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(open(&stranger, &record, &Scope::workspace(), "API_TOKEN").await.is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(LocalKey::load_or_create(&path).unwrap_err().to_string().contains("chmod 600"));
    }

    #[tokio::test]
    async fn names_scopes_and_short_values() {
        let dir = tempfile::tempdir().unwrap();
        let kek = LocalKey::load_or_create(&dir.path().join("k")).unwrap();
        let short = SecretString::new("1234".into());
        let err =
            seal(&kek, &binding("PIN", "workspace", 1), &meta(When::Boot, true), &short).await.unwrap_err();
        assert!(err.to_string().contains("cannot be redacted"), "{err}");
        assert!(seal(&kek, &binding("PIN", "workspace", 1), &meta(When::Boot, false), &short).await.is_ok());
        assert!("env:".parse::<Scope>().is_err() && "a b".parse::<Scope>().is_err());
        assert!(check_name("9LIVES").is_err() && check_name("OK_1").is_ok());
        for scope in ["workspace", "env:platform", "repo:github.com/acme/app", "repo:/home/me/my app"] {
            let scope: Scope = scope.parse().unwrap();
            let component = scope.path_component();
            assert!(
                envbuild_cache::layout::ObjectPath::new(format!("v1/secrets/{component}/X")).is_ok(),
                "{component}"
            );
            assert_eq!(Scope::from_path_component(&component), Some(scope));
        }
    }
}
