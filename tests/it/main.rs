//! End-to-end tests of the `envbuild` binary. One test binary for link time; one module per
//! area.

// Test helpers may panic: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::print_stderr, unreachable_pub)]

mod bases;
mod boot;
mod build;
mod cursor_format;
mod export;
mod incremental;
#[cfg(feature = "http")]
mod registry;
mod runtime;
#[cfg(feature = "s3")]
mod s3;
mod scopes;
#[cfg(feature = "http")]
mod serve;
mod store;
mod validate;
mod workflows;

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
