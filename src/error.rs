//! The workflows' error type: the crates' errors, kept as sources, and the failures that only
//! a workflow can name (an invalid config, an interrupted build, an environment that is not
//! there). Messages read as sentences and name the object; hints are on `hint:` lines.

use std::path::PathBuf;

use envbuild_builder::BuildError;
use envbuild_builder::engine::EngineError;
use envbuild_cache::store::StoreError;
use envbuild_secrets::{SecretError, redact};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("`{file}` is invalid; fix it first (see `envbuild validate`)")]
    InvalidConfig { file: PathBuf },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cache(#[from] envbuild_cache::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    /// A workflow could not go on; the message says what and why, with a hint when the fix is
    /// clear.
    #[error("{0}")]
    Failed(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// A closure that wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// This error with what was being done in front of it.
    #[must_use]
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context { context: context.into(), source: Box::new(self) }
    }

    /// The error with the text of child output it carries (an install's last lines) masked
    /// with every secret this process opened: the one place raw child output enters an error.
    #[must_use]
    pub fn masked(self) -> Error {
        match self {
            Error::Build(BuildError::InstallFailed { code, tail }) => {
                Error::Build(BuildError::InstallFailed { code, tail: redact::mask(&tail) })
            }
            Error::Build(BuildError::BuildFailed { detail }) => {
                Error::Build(BuildError::BuildFailed { detail: redact::mask(&detail) })
            }
            other => other,
        }
    }
}

impl From<envbuild_cache::layout::InvalidPath> for Error {
    fn from(e: envbuild_cache::layout::InvalidPath) -> Self {
        Error::Store(e.into())
    }
}

impl From<envbuild_schema::digest::DigestParseError> for Error {
    fn from(e: envbuild_schema::digest::DigestParseError) -> Self {
        Error::Failed(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.context(...)` for results of this crate.
pub trait ResultExt<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}
