//! Every environment variable envbuild reads, in one place, and the defaults that depend on
//! the environment (where caches and keys live).

use std::path::PathBuf;

/// Repository root for commands that work on a repository (`--repo`).
pub const REPO: &str = "ENVBUILD_REPO";

/// The snapshot store (`--store`).
pub const STORE: &str = "ENVBUILD_STORE";

/// Largest size of the local cache of remote stores (`10G`, `512M`).
pub const CACHE_MAX: &str = "ENVBUILD_CACHE_MAX";

/// Accept an S3 server that ignores conditional writes (`--allow-unconditional-writes`).
pub const ALLOW_UNCONDITIONAL: &str = "ENVBUILD_ALLOW_UNCONDITIONAL_WRITES";

/// `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn data_home() -> PathBuf {
    base_dir("XDG_DATA_HOME", ".local/share")
}

/// The local master key file that encrypts secrets (default `~/.config/envbuild/master.key`).
pub const MASTER_KEY: &str = "ENVBUILD_MASTER_KEY";

/// An AWS KMS key (id, ARN or alias) to encrypt new secrets with (`--kms-key-id`).
pub const KMS_KEY_ID: &str = "ENVBUILD_KMS_KEY_ID";

/// The default base image, for configs that name no `snapshot`, `image` or `build`
/// (`--base-image`).
pub const BASE_IMAGE: &str = "ENVBUILD_BASE_IMAGE";

/// The bearer token for an `http(s)://` store (`envbuild serve`).
pub const TOKEN: &str = "ENVBUILD_TOKEN";

/// The tokens file of `envbuild serve` and `envbuild token new` (`--tokens`).
pub const TOKENS: &str = "ENVBUILD_TOKENS";

/// How a build stores an install that started from a checkpoint: `auto` (the default: only the
/// paths install changed, read from the engine, unless reading them costs more than exporting
/// everything), `changes` (always the changed paths), or `whole` (always a full export).
pub const EXPORT: &str = "ENVBUILD_EXPORT";

/// An absolute directory from `var`, else `$HOME/<fallback>`, else the temporary directory.
fn base_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback)))
        .unwrap_or_else(std::env::temp_dir)
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_home() -> PathBuf {
    base_dir("XDG_CACHE_HOME", ".cache")
}

/// The local master key file: `$ENVBUILD_MASTER_KEY`, else `~/.config/envbuild/master.key`.
pub fn master_key_path() -> PathBuf {
    std::env::var_os(MASTER_KEY).map_or_else(
        || base_dir("XDG_CONFIG_HOME", ".config").join("envbuild").join("master.key"),
        PathBuf::from,
    )
}
