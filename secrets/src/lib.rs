//! envbuild's secrets: how values are kept at rest, who sees them, and how they are kept out
//! of everything envbuild prints, logs or stores.
//!
//! A secret is a named value (an environment variable) in a scope. Each version is sealed
//! with envelope encryption ([`envelope`]: a fresh AES-256-GCM data key, wrapped by a local
//! master key or by AWS KMS behind feature `kms`, with name, scope and version bound into both
//! layers) and kept as a record in the snapshot store ([`records`]). Plaintext only ever lives
//! in [`SecretString`]s. Every byte of output that could carry a value passes the streaming
//! [`redact::Redactor`], and every snapshot about to be published passes the leak scan
//! ([`scan`]), which refuses to publish a value it finds.
//!
//! # Layout
//! - [`scope`]: names, scopes, and when a secret reaches the environment.
//! - [`envelope`]: sealing and opening one record; the local master key. `kms` (feature
//!   `kms`) is the only file that imports the AWS SDK.
//! - [`records`]: the records in a store (`v1/secrets/<scope>/<NAME>`), written with
//!   compare-and-swap; the keyring that opens them.
//! - [`redact`]: the patterns of the values in scope and the redactor (fails closed).
//! - [`scan`]: the leak scanner the cache's ingest calls before it publishes.
//!
//! This crate knows the store (records live there) but nothing of engines or builds.

pub mod envelope;
pub mod error;
#[cfg(feature = "kms")]
pub mod kms;
pub mod records;
pub mod redact;
pub mod scan;
pub mod scope;

pub use envbuild_schema::SecretString;
pub use error::{Result, SecretError};
pub use records::{Found, Keyring, Loaded};
pub use redact::{Patterns, Redactor};
pub use scope::{Scope, When};
