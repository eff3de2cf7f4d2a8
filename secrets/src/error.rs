//! The one error type of this crate. Messages name the secret and its scope, never its value.

use std::path::PathBuf;

use envbuild_cache::store::StoreError;

use crate::redact::MIN_SECRET_LEN;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("`{0}` is not a valid secret name: use letters, digits and `_`, not starting with a digit")]
    BadName(String),
    #[error("`{0}` is not a valid scope: use `repo:ID`, `env:NAME` (letters, digits, `-_.`) or `workspace`")]
    BadScope(String),
    #[error(
        "the secret `{name}` is {len} bytes; values shorter than {MIN_SECRET_LEN} bytes cannot be redacted without masking ordinary output\nhint: use a longer value, or store it with --no-redact"
    )]
    TooShortToRedact { name: String, len: usize },
    #[error("the secret `{name}` in scope `{scope}` cannot be decrypted: {reason}")]
    Undecryptable { name: String, scope: String, reason: String },
    #[error("the master key file `{path}`: {reason}")]
    MasterKey { path: PathBuf, reason: String },
    /// KMS failed; the SDK's error, when there is one, is the source (its own rendering
    /// appends a `Debug` dump of the response, which no user needs).
    #[error("AWS KMS: {message}")]
    Kms {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error(
        "this envbuild was built without AWS KMS support (feature `kms`), and the secret `{name}` is sealed with KMS"
    )]
    KmsUnavailable { name: String },
    #[error("the record of secret `{name}` in scope `{scope}` is damaged")]
    DamagedRecord {
        name: String,
        scope: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("secret `{name}` keeps changing while it is being set; try again")]
    Contended { name: String },
    /// Several secrets could not be opened; each is named with its reason.
    #[error("cannot decrypt {}: {}", names(.failures), .failures.first().map(|(_, e)| e.to_string()).unwrap_or_default())]
    NotOpened { failures: Vec<(String, SecretError)> },
    /// The redaction of the values in scope cannot be set up. Output is never shown unmasked
    /// instead: the operation that needed it fails.
    #[error("cannot set up the redaction of secret values: {reason}")]
    Redaction { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] envbuild_cache::layout::InvalidPath),
    #[error("cannot encode the record of secret `{name}`")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

fn names(failures: &[(String, SecretError)]) -> String {
    let names: Vec<String> = failures.iter().map(|(n, _)| format!("`{n}`")).collect();
    format!("the secret{} {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))
}

impl SecretError {
    pub(crate) fn kms(message: impl Into<String>) -> Self {
        Self::Kms { message: message.into(), source: None }
    }

    #[cfg(feature = "kms")]
    pub(crate) fn kms_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Kms { message: message.into(), source: Some(Box::new(source)) }
    }
}

pub type Result<T, E = SecretError> = std::result::Result<T, E>;
