//! Every environment variable envbuild reads, in one place.

/// Repository root for commands that work on a repository (`--repo`).
pub const REPO: &str = "ENVBUILD_REPO";

/// The snapshot store (`--store`).
pub const STORE: &str = "ENVBUILD_STORE";
