//! Environments on an OCI runtime (runc), without the Docker engine: what `boot` uses by
//! default when it runs as root beside `runc` and `pasta` (DESIGN §6).
//!
//! A boot on the Docker engine starts with `docker import` of the whole root file system
//! (28–33 s for a 1 GB Node or Python environment) for every new snapshot, and every build
//! makes one. Here a snapshot is materialized once per host as a read-only tree of
//! hardlinks into a content-addressed file store ([`trees`]), which sibling snapshots share
//! file by file, and each environment is an overlay (its own upper and work directories) on
//! that tree, run by runc from a runtime spec envbuild writes ([`spec`]), in a network
//! namespace of its own that pasta connects to the outside and publishes its ports through
//! ([`net`]). Fifty environments of one snapshot share its disk blocks and page cache.
//!
//! Everything lives under one directory ([`Layout`], `$ENVBUILD_RUNTIME_DIR`, default
//! `/var/lib/envbuild` for root): `trees/` and `objects/`, `envs/NAME/` (the bundle: its
//! `config.json`, `rootfs/` mount point, `upper/`, `work/`, and `env.json`, the record of
//! what was made for it, written *before* each thing is made so that `gc` can undo a boot a
//! kill -9 interrupted), and `runc/`, runc's own state. Network namespaces are named after
//! the directory, so two runtime directories on one host never collide.

pub mod engine;
pub mod inroot;
pub mod net;
pub mod spec;
pub mod trees;

use std::path::{Path, PathBuf};

pub use engine::Runc;

/// The runtime's directory (`boot --engine runc`): trees, environments and runc's state.
pub const RUNTIME_DIR: &str = "ENVBUILD_RUNTIME_DIR";

/// Where the runtime keeps what it makes.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The directory `$ENVBUILD_RUNTIME_DIR` names, else `/var/lib/envbuild` for root, else
    /// `$XDG_DATA_HOME/envbuild` (runc itself needs root; the path only matters for messages).
    pub fn from_env() -> Self {
        let root = std::env::var_os(RUNTIME_DIR)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| {
                if rustix::process::geteuid().is_root() {
                    PathBuf::from("/var/lib/envbuild")
                } else {
                    crate::env::data_home().join("envbuild")
                }
            });
        Self { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn envs(&self) -> PathBuf {
        self.root.join("envs")
    }

    pub fn env(&self, name: &str) -> PathBuf {
        self.envs().join(name)
    }

    pub fn runc_root(&self) -> PathBuf {
        self.root.join("runc")
    }

    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }

    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// A short tag of this directory, in the names of host-wide things (network namespaces).
    pub fn tag(&self) -> String {
        envbuild_cache::Digest::of(self.root.as_os_str().as_encoded_bytes()).hex()[..8].to_owned()
    }
}

/// Whether this host can boot on runc: root, with `runc` and (for a private network) `pasta`
/// and `ip` on the PATH. The reason when not.
pub fn unavailable_because(private_network: bool) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("runc environments need root (overlay mounts and network namespaces)".into());
    }
    let mut tools = vec!["runc"];
    if private_network {
        tools.extend(["pasta", "ip"]);
    }
    let missing: Vec<&str> = tools.into_iter().filter(|t| which(t).is_none()).collect();
    if missing.is_empty() {
        return None;
    }
    let list = missing.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" and ");
    let verb = if missing.len() == 1 { "is" } else { "are" };
    Some(format!("{list} {verb} not installed (Debian packages: runc, passt, iproute2)"))
}

/// The program `name` on the PATH (or in the sbin directories root's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `command` (`shown` in messages) to its end: its standard output (unless the caller
/// sent that elsewhere), or its standard error as the reason it failed.
pub(crate) async fn run(
    operation: &str,
    shown: &str,
    mut command: tokio::process::Command,
) -> Result<Vec<u8>, envbuild_builder::engine::EngineError> {
    use envbuild_builder::engine::EngineError;
    let out = command
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| EngineError::Runtime {
            operation: operation.into(),
            message: format!("cannot run `{shown}`: {e}"),
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(EngineError::Runtime {
        operation: operation.into(),
        message: format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Whether process `pid` is running (a record's maker, a pasta).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether an environment name is one runc, a directory and a network namespace all take.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
