//! Which store a command uses, and opening it.
//!
//! `--store LOCATION`, else `ENVBUILD_STORE`, else `~/.cache/envbuild` (under
//! `$XDG_CACHE_HOME` when set). A location is a directory path or a `file://` URL; other
//! schemes come with their backends.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use envbuild_cache::Store;
use envbuild_cache::store::local::LocalStore;

/// The default local store.
pub fn default_location() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("envbuild")
}

/// Opens the store at `location` (see the module docs), or the default one.
pub fn open(location: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    let location = location.map_or_else(|| default_location().display().to_string(), str::to_owned);
    if let Some((scheme, _)) = location.split_once("://") {
        if scheme == "file" {
            let path = location.trim_start_matches("file://");
            return open_local(path);
        }
        bail!(
            "`{location}` is not a store this envbuild can open: `{scheme}://` is not supported\nhint: use a directory path or file:// URL"
        );
    }
    open_local(&location)
}

fn open_local(path: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = LocalStore::open(path).with_context(|| format!("cannot open the store at `{path}`"))?;
    Ok(Arc::new(store))
}
