//! Which store a command uses, and opening it.
//!
//! `--store LOCATION`, else `ENVBUILD_STORE`, else `~/.cache/envbuild` (under
//! `$XDG_CACHE_HOME` when set). A location is a directory, `file://PATH`,
//! `s3://BUCKET/PREFIX`, or `http(s)://HOST:PORT` (`envbuild serve`, with the token from
//! `ENVBUILD_TOKEN`). Remote stores keep a local cache of chunks and manifests in
//! `~/.cache/envbuild/remote-cache` (`ENVBUILD_CACHE_MAX`, default 10 GiB).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use envbuild_cache::Store;
use envbuild_cache::store::open::{self, OpenOptions};

use crate::cli::GlobalArgs;
use crate::env;

/// The default local store.
pub fn default_location() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("envbuild")
}

fn options(global: &GlobalArgs) -> anyhow::Result<OpenOptions> {
    let mut options = OpenOptions {
        cache_dir: Some(default_location().join("remote-cache")),
        allow_unconditional_writes: global.allow_unconditional_writes,
        ..OpenOptions::default()
    };
    #[cfg(feature = "http")]
    {
        options.http.token = std::env::var(env::TOKEN).ok().filter(|t| !t.trim().is_empty());
    }
    if let Ok(max) = std::env::var(env::CACHE_MAX) {
        options.cache_max_bytes =
            parse_size(&max).with_context(|| format!("{} is not a size: `{max}`", env::CACHE_MAX))?;
    }
    Ok(options)
}

/// `10G`, `512M`, `4096`.
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

/// Opens the store the command line names.
pub async fn open(global: &GlobalArgs) -> anyhow::Result<Arc<dyn Store>> {
    open_at(global.store.as_deref(), global).await
}

/// Opens the store at `location`, or the default one.
pub async fn open_at(location: Option<&str>, global: &GlobalArgs) -> anyhow::Result<Arc<dyn Store>> {
    let location = location.map_or_else(|| default_location().display().to_string(), str::to_owned);
    open::open(&location, &options(global)?)
        .await
        .with_context(|| format!("cannot open the store `{location}`"))
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
