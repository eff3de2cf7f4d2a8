//! The builder's error type: one enum, messages that name the object and, where the fix is
//! clear, a hint.

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
    #[error("{0}")]
    Input(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
