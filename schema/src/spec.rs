//! The typed form of `.cursor/environment.json`.
//!
//! The field set is exactly Cursor's published schema (`cursor.com/schemas/environment.schema.json`):
//! common fields (`name`, `user`, `install`, `start`, `repositoryDependencies`, `ports`,
//! `terminals`) and container fields (`build`, `snapshot`, `agentCanUpdateSnapshot`). A
//! `terminals` item is either one terminal or an array of terminals (a group shown side by
//! side); both shapes are kept so the normalized form round-trips what the user wrote.
//!
//! [`EnvironmentSpec::normalized`] fills defaults (`build.context` = `.`) and is what snapshots
//! store, so two spellings of the same config store the same bytes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user that `install`, `start` and the terminals run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Runs at build time and again at every boot, so it must be idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// Runs at boot after `install`, before the terminals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<TerminalItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// A base snapshot to start from instead of a Dockerfile: an envbuild snapshot id or ref name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_can_update_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_dependencies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Relative to the folder that holds environment.json.
    pub dockerfile: String,
    /// Relative to the folder that holds environment.json; that folder when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl Build {
    /// The context as written, or `.` (the folder of environment.json) when absent.
    pub fn context_or_default(&self) -> &str {
        self.context.as_deref().unwrap_or(".")
    }
}

/// One item of `terminals`: a terminal, or a group of terminals shown together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TerminalItem {
    Single(Terminal),
    Group(Vec<Terminal>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A terminal with the name it runs under: its own, or `terminal-N` (1-based, in file order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTerminal<'a> {
    pub name: String,
    pub terminal: &'a Terminal,
}

impl EnvironmentSpec {
    /// Every terminal in file order, groups flattened, each with a unique name.
    pub fn terminals(&self) -> Vec<NamedTerminal<'_>> {
        let flat = self.terminals.iter().flat_map(|item| match item {
            TerminalItem::Single(t) => std::slice::from_ref(t).iter(),
            TerminalItem::Group(g) => g.iter(),
        });
        flat.enumerate()
            .map(|(i, terminal)| NamedTerminal {
                name: terminal.name.clone().unwrap_or_else(|| format!("terminal-{}", i + 1)),
                terminal,
            })
            .collect()
    }

    /// The form stored in snapshots: defaults filled in, nothing else changed.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut spec = self.clone();
        if let Some(build) = &mut spec.build {
            build.context = Some(build.context_or_default().to_owned());
        }
        spec
    }

    /// Canonical JSON of [`Self::normalized`]: field order fixed, no whitespace. Encoding
    /// plain structs cannot fail; if it ever did, the error says so rather than hashing
    /// empty bytes.
    pub fn canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_terminals_get_positional_names() {
        let spec: EnvironmentSpec = serde_json::from_str(
            r#"{"terminals":[{"command":"a"},[{"command":"b","name":"web"},{"command":"c"}]]}"#,
        )
        .unwrap();
        let names: Vec<_> = spec.terminals().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["terminal-1", "web", "terminal-3"]);
    }

    #[test]
    fn normalized_fills_the_context() {
        let a: EnvironmentSpec = serde_json::from_str(r#"{"build":{"dockerfile":"Dockerfile"}}"#).unwrap();
        let b: EnvironmentSpec =
            serde_json::from_str(r#"{"build":{"context":".","dockerfile":"Dockerfile"}}"#).unwrap();
        assert_eq!(a.canonical_json().unwrap(), b.canonical_json().unwrap());
        assert_eq!(
            String::from_utf8(a.canonical_json().unwrap()).unwrap(),
            r#"{"build":{"dockerfile":"Dockerfile","context":"."}}"#
        );
    }
}
