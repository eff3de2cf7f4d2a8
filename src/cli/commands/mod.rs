//! One module per command; each exposes `run`, which returns the process exit code.

pub mod boot;
pub mod build;
pub mod diff;
pub mod envs;
pub mod explain;
pub mod fetch;
pub mod gc;
pub mod import;
pub mod init;
pub mod inspect;
pub mod key;
pub mod ls;
pub mod retention;
pub mod schema;
pub mod secrets;
pub mod serve;
pub mod transfer;
pub mod validate;
pub mod verify;
