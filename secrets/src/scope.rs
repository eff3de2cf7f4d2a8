//! Who a secret is for, what it may be called, and when it reaches the environment.
//!
//! A secret belongs to exactly one scope, and a build or boot sees exactly the secrets of the
//! scopes it is in:
//! - `repo:ID`, one repository: its normalized git remote (`github.com/acme/app`), else its
//!   path. The default of `secrets set` inside a repository; a repository is always in its own.
//! - `env:NAME`, a named environment group, for multi-repository setups: every repository that
//!   declares itself in the group (`.cursor/envbuild.json`, or `--group NAME`) sees it, as
//!   Cursor's environment-scoped secrets apply to every repository of that environment.
//! - `workspace`, the whole store, opt-in: every build and boot sees it.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecretError};

/// Who a secret is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One repository, by its identity (`github.com/acme/app`, or a path).
    Repository(String),
    /// A named group of repositories.
    Environment(String),
    /// Every repository of the store.
    Workspace,
}

impl Scope {
    pub fn workspace() -> Self {
        Self::Workspace
    }

    /// The component naming this scope in the store's paths: `workspace`, `env=NAME`, or
    /// `repo=` and the identity with `%` escapes (`/` is `%2F`), which object paths accept.
    pub fn path_component(&self) -> String {
        match self {
            Scope::Workspace => "workspace".to_owned(),
            Scope::Environment(name) => format!("env={name}"),
            Scope::Repository(id) => {
                let mut out = String::from("repo=");
                for b in id.bytes() {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'+' | b':') {
                        out.push(char::from(b));
                    } else {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xF)]));
                    }
                }
                out
            }
        }
    }

    /// The scope a path component names.
    pub fn from_path_component(component: &str) -> Option<Self> {
        if component == "workspace" {
            return Some(Scope::Workspace);
        }
        if let Some(name) = component.strip_prefix("env=") {
            return valid_group(name).then(|| Scope::Environment(name.to_owned()));
        }
        let encoded = component.strip_prefix("repo=")?;
        let bytes = encoded.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(decoded).ok().filter(|id| !id.is_empty()).map(Scope::Repository)
    }
}

/// A group name: letters, digits, `-`, `_`, `.`.
fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Workspace => f.write_str("workspace"),
            Scope::Environment(name) => write!(f, "env:{name}"),
            Scope::Repository(id) => write!(f, "repo:{id}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = SecretError;

    /// `workspace`, `env:NAME` or `repo:ID`.
    fn from_str(text: &str) -> Result<Self> {
        if text == "workspace" {
            return Ok(Scope::Workspace);
        }
        if let Some(name) = text.strip_prefix("env:").filter(|n| valid_group(n)) {
            return Ok(Scope::Environment(name.to_owned()));
        }
        if let Some(id) = text.strip_prefix("repo:").filter(|id| !id.is_empty() && id.len() <= 300) {
            return Ok(Scope::Repository(id.to_owned()));
        }
        Err(SecretError::BadScope(text.to_owned()))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Checks a secret's name: it becomes an environment variable.
pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) { Ok(()) } else { Err(SecretError::BadName(name.to_owned())) }
}

/// When a secret reaches the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// In the booted environment's processes (start, terminals).
    Boot,
    /// In the install step only, at build and at boot.
    Install,
    Both,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Boot => "boot",
            When::Install => "install",
            When::Both => "both",
        }
    }

    pub fn at_boot(self) -> bool {
        matches!(self, When::Boot | When::Both)
    }
    pub fn at_install(self) -> bool {
        matches!(self, When::Install | When::Both)
    }
}
