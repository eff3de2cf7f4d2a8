//! One module per command; each exposes `run`, which returns the process exit code.

pub mod init;
pub mod schema;
pub mod validate;
