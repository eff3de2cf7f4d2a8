//! The `.cursor/environment.json` format.
//!
//! envbuild reads the same file Cursor's cloud agents read, and accepts every file Cursor
//! accepts. This crate owns that format and nothing else: it does no I/O beyond reading the
//! config and checking that the paths it names exist.
//!
//! # Layout
//! - [`jsonc`]: JSON with comments, parsed into a tree that remembers where each value is.
//! - [`validate`](crate::config::load) (private module): the tree checked against the format,
//!   every problem reported at once.
//! - [`config`]: loading a file safely, resolving the repository root and the `build` paths.
//! - [`diagnostic`]: how problems are located and rendered (`PATH:LINE:COL: JSON.path: message`).
//! - [`spec`]: the typed config and its normalized, canonical form.
//! - [`json_schema`]: the schema editors use.
//! - [`suggest`]: "did you mean" for misspelled names.
//! - [`secret`]: the type secret values travel in, which never prints them.
//! - [`digest`]: SHA-256 digests, the names of chunks, snapshots and keys.

pub mod config;
pub mod diagnostic;
pub mod digest;
pub mod json_schema;
pub mod jsonc;
pub mod secret;
pub mod spec;
pub mod suggest;
mod validate;

pub use config::{DEFAULT_CONFIG_PATH, LoadedConfig, ResolvedPaths, find, load, load_bytes};
pub use diagnostic::{Diagnostic, Position, Severity};
pub use digest::Digest;
pub use secret::SecretString;
pub use spec::{
    Base, Build, EgressMode, EnvironmentSpec, McpServer, NamedTerminal, Port, Terminal, TerminalItem,
};
