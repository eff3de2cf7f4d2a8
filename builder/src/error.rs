//! The builder's error type: one enum, messages that name the object and, where the fix is
//! clear, a hint. Causes are kept as sources, never flattened into strings.

use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the build of the Dockerfile failed: {detail}")]
    BuildFailed { detail: String },
    #[error("install failed with exit code {code}; its last lines:\n{tail}")]
    InstallFailed { code: i64, tail: String },
    #[error("the base image `{reference}` is not in the Docker engine\nhint: {hint}")]
    MissingBase { reference: String, hint: String },
    /// The config or the repository cannot be built from (named in the message).
    #[error("{0}")]
    Invalid(String),
    #[error("`git {command}` failed in `{repo}`: {stderr}")]
    Git { command: String, repo: std::path::PathBuf, stderr: String },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A booted environment did not come up as it should.
    #[error("{0}")]
    Boot(String),
    /// A user name or id that the image's `/etc/passwd` and `/etc/group` do not resolve.
    #[error("{0}")]
    User(String),
    /// Something the engine did that it should not have (an image vanished after its build).
    #[error("the Docker engine {0}")]
    Unexpected(String),
    #[error("the OCI image configuration {what}")]
    ImageConfig {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking task of the builder panicked or was cancelled.
    #[error("{what} stopped before it finished")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Canonical JSON of the key inputs could not be made: an invariant broke.
    #[error("cannot encode the inputs of the {key} key")]
    KeyEncoding {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl BuildError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }
}

/// `error: its cause: the cause's cause`, for messages that must carry the whole story in one
/// string.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
