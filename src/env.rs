//! Every environment variable envbuild reads, in one place.

/// Repository root for commands that work on a repository (`--repo`).
pub const REPO: &str = "ENVBUILD_REPO";

/// The snapshot store (`--store`).
pub const STORE: &str = "ENVBUILD_STORE";

/// Largest size of the local cache of remote stores (`10G`, `512M`).
pub const CACHE_MAX: &str = "ENVBUILD_CACHE_MAX";

/// Accept an S3 server that ignores conditional writes (`--allow-unconditional-writes`).
pub const ALLOW_UNCONDITIONAL: &str = "ENVBUILD_ALLOW_UNCONDITIONAL_WRITES";

/// The local master key file that encrypts secrets (default `~/.config/envbuild/master.key`).
pub const MASTER_KEY: &str = "ENVBUILD_MASTER_KEY";

/// An AWS KMS key (id, ARN or alias) to encrypt new secrets with (`--kms-key-id`).
pub const KMS_KEY_ID: &str = "ENVBUILD_KMS_KEY_ID";

/// The bearer token for an `http(s)://` store (`envbuild serve`).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub const TOKEN: &str = "ENVBUILD_TOKEN";

/// The tokens file of `envbuild serve` and `envbuild token new` (`--tokens`).
pub const TOKENS: &str = "ENVBUILD_TOKENS";
