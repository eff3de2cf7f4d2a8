//! Which store a workflow uses, and opening it.
//!
//! A location is a directory, `file://PATH`, `s3://BUCKET/PREFIX`, or `http(s)://HOST:PORT`
//! (`envbuild serve`, with a token). The default is `~/.cache/envbuild` (under
//! `$XDG_CACHE_HOME` when set). Remote stores keep a local cache of chunks and manifests in
//! `<default>/remote-cache`, bounded by [`StoreOptions::cache_max_bytes`].

use std::path::PathBuf;
use std::sync::Arc;

use envbuild_cache::Store;
use envbuild_cache::store::open::{self, OpenOptions};

use crate::error::{Result, ResultExt};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The location; `None` for the default local store.
    pub location: Option<String>,
    /// Accept an S3 server that ignores `If-None-Match`.
    pub allow_unconditional_writes: bool,
    /// The bearer token of an `http(s)://` store.
    pub token: Option<String>,
    /// Largest size of the local cache of remote stores.
    pub cache_max_bytes: u64,
    /// Create a local store that does not exist yet; commands that only read leave this off,
    /// so a mistyped location is an error, not a new empty store.
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            location: None,
            allow_unconditional_writes: false,
            token: None,
            cache_max_bytes: 10 << 30,
            create: true,
        }
    }
}

/// The default local store.
pub fn default_location() -> PathBuf {
    crate::env::cache_home().join("envbuild")
}

/// Opens the store `options` names.
pub async fn open(options: &StoreOptions) -> Result<Arc<dyn Store>> {
    let location = options.location.clone().unwrap_or_else(|| default_location().display().to_string());
    #[cfg_attr(not(feature = "http"), allow(unused_mut))]
    let mut open_options = OpenOptions {
        cache_dir: Some(default_location().join("remote-cache")),
        cache_max_bytes: options.cache_max_bytes,
        allow_unconditional_writes: options.allow_unconditional_writes,
        create: options.create,
        ..OpenOptions::default()
    };
    #[cfg(feature = "http")]
    {
        open_options.http.token = options.token.clone().filter(|t| !t.trim().is_empty());
    }
    open::open(&location, &open_options).await.with_context(|| format!("cannot open the store `{location}`"))
}

/// What this host knows of the soundness of `store`'s chunks (see `envbuild_cache::verified`),
/// kept beside the default store.
pub fn verified(store: &dyn Store) -> Arc<envbuild_cache::verified::Verified> {
    Arc::new(envbuild_cache::verified::Verified::open(
        &default_location().join("verified"),
        &store.location(),
    ))
}

/// `10G`, `512M`, `4096`, `512 MiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("lots"), None);
    }
}
