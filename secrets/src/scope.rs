//! Who a secret is for, what it may be called, and when it reaches the environment.
//!
//! Scopes: `workspace` (the default), `team:NAME`, and a name prefix such as `NEXTJS_*`
//! (secrets of one service of a monorepo, whose names must start with the prefix).

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecretError};

/// Who a secret is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    pub fn workspace() -> Self {
        Self("workspace".to_owned())
    }

    /// The prefix a prefix scope requires of names.
    pub fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }

    /// The component naming this scope in the store's paths (no `*` there).
    pub fn path_component(&self) -> String {
        match self.prefix() {
            Some(prefix) => format!("prefix={prefix}"),
            None => self.0.clone(),
        }
    }

    /// The scope a path component names.
    pub fn from_path_component(component: &str) -> Option<Self> {
        let text =
            component.strip_prefix("prefix=").map_or_else(|| component.to_owned(), |p| format!("{p}*"));
        Scope::try_from(text).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that `name` may live in this scope.
    pub fn admits(&self, name: &str) -> Result<()> {
        match self.prefix() {
            Some(prefix) if !name.starts_with(prefix) => Err(SecretError::OutsidePrefix {
                name: name.into(),
                scope: self.0.clone(),
                prefix: prefix.into(),
            }),
            _ => Ok(()),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = SecretError;
    fn try_from(text: String) -> Result<Self> {
        let valid = text == "workspace"
            || text.strip_prefix("team:").is_some_and(|team| {
                !team.is_empty()
                    && team.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            })
            || text.strip_suffix('*').is_some_and(|prefix| !prefix.is_empty() && valid_name(prefix));
        if valid { Ok(Self(text)) } else { Err(SecretError::BadScope(text)) }
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.0
    }
}

impl std::str::FromStr for Scope {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self> {
        Scope::try_from(s.to_owned())
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
