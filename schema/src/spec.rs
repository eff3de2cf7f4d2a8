//! The typed form of `.cursor/environment.json`, as Cursor defines it today.
//!
//! Every top-level field is optional: the common fields (`name`, `user`, `install`, `start`,
//! `terminals`, `ports`, `repositoryDependencies`), the base (`snapshot`, `image`, `build`,
//! `agentCanUpdateSnapshot`), the agent's tools (`disableAllMcpServers`, `mcpServerAllowlist`,
//! `chromeExecutablePath`, `enable_testing`) and its network (`egressAllowlist`,
//! `egressMode`). A `terminals` item is one terminal or an array of terminals (a group shown
//! side by side); both shapes are kept, so the normalized form round-trips what was written.
//!
//! The base follows Cursor's precedence: `snapshot`, else `image`, else `build`, else the
//! default base image ([`EnvironmentSpec::base`]). `agentCanUpdateSnapshot` defaults to true on
//! a snapshot or the default base and is always false on an `image` or `build` base
//! ([`EnvironmentSpec::agent_can_update_snapshot_effective`]); `enable_testing` defaults to
//! true. [`EnvironmentSpec::normalized`] writes those effective values in, and is what
//! snapshots store, so two spellings of one config store the same bytes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user that `install`, `start` and the terminals run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Runs from the repository root at build time and again at every boot, so it must be
    /// idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// Runs at boot after `install`, before the terminals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<TerminalItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_dependencies: Vec<String>,
    /// A stored snapshot to start from: an envbuild snapshot id or ref name (or a Cursor
    /// snapshot id, which the store does not know: the fallback applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// A registry image to start from, such as `node:22-bookworm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_can_update_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_all_mcp_servers: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_server_allowlist: Vec<McpServer>,
    /// Hosts the environment may reach, beside what `egressMode` allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mode: Option<EgressMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chrome_executable_path: Option<String>,
    /// Whether the agent may test in a browser; `"true"`/`"false"` are read as booleans.
    #[serde(default, rename = "enable_testing", skip_serializing_if = "Option::is_none")]
    pub enable_testing: Option<bool>,
}

/// Build the base from a Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// Relative to the folder that holds environment.json (`.cursor/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The Dockerfile's text, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_contents: Option<String>,
    /// Relative to the folder that holds environment.json, which is the default; `.`, `./`
    /// and `..` mean the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl Build {
    /// Whether the context as written means the repository root (Cursor special-cases these).
    pub fn context_is_repository_root(&self) -> bool {
        matches!(self.context.as_deref(), Some("." | "./" | ".."))
    }
}

/// One MCP server the agent may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The tools of this server the agent may call; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
}

/// How the environment reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    AllowAll,
    ParentPlusNetworkSettings,
    DefaultWithNetworkSettings,
    NetworkSettingsOnly,
}

impl EgressMode {
    pub const ALL: [EgressMode; 4] = [
        EgressMode::AllowAll,
        EgressMode::ParentPlusNetworkSettings,
        EgressMode::DefaultWithNetworkSettings,
        EgressMode::NetworkSettingsOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::AllowAll => "allow_all",
            EgressMode::ParentPlusNetworkSettings => "parent_plus_network_settings",
            EgressMode::DefaultWithNetworkSettings => "default_with_network_settings",
            EgressMode::NetworkSettingsOnly => "network_settings_only",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
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

/// Where the environment's system layer comes from, after Cursor's precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base<'a> {
    Snapshot(&'a str),
    Image(&'a str),
    Build(&'a Build),
    /// None of the three: the default base image.
    Default,
}

impl Base<'_> {
    /// How the base is named in messages: `snapshot`, `image`, `build`, `the default base`.
    pub fn describe(&self) -> &'static str {
        match self {
            Base::Snapshot(_) => "`snapshot`",
            Base::Image(_) => "`image`",
            Base::Build(_) => "`build`",
            Base::Default => "the default base image",
        }
    }
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

    /// The base this config starts from: `snapshot` over `image` over `build`.
    pub fn base(&self) -> Base<'_> {
        if let Some(snapshot) = &self.snapshot {
            Base::Snapshot(snapshot)
        } else if let Some(image) = &self.image {
            Base::Image(image)
        } else if let Some(build) = &self.build {
            Base::Build(build)
        } else {
            Base::Default
        }
    }

    /// The base to use when the snapshot cannot be (Cursor's fallback): `image`, else `build`,
    /// else the default base.
    pub fn fallback_base(&self) -> Base<'_> {
        if let Some(image) = &self.image {
            Base::Image(image)
        } else if let Some(build) = &self.build {
            Base::Build(build)
        } else {
            Base::Default
        }
    }

    /// Whether the agent may update the snapshot: default true on a snapshot or the default
    /// base; never on an `image` or `build` base, whatever the file says.
    pub fn agent_can_update_snapshot_effective(&self) -> bool {
        match self.base() {
            Base::Image(_) | Base::Build(_) => false,
            Base::Snapshot(_) | Base::Default => self.agent_can_update_snapshot.unwrap_or(true),
        }
    }

    /// Whether browser testing is on (default true).
    pub fn testing_enabled(&self) -> bool {
        self.enable_testing.unwrap_or(true)
    }

    /// The form stored in snapshots: the effective `agentCanUpdateSnapshot` and
    /// `enable_testing` written in, nothing else changed.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut spec = self.clone();
        spec.agent_can_update_snapshot = Some(self.agent_can_update_snapshot_effective());
        spec.enable_testing = Some(self.testing_enabled());
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

    fn spec(json: &str) -> EnvironmentSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unnamed_terminals_get_positional_names() {
        let spec = spec(r#"{"terminals":[{"command":"a"},[{"command":"b","name":"web"},{"command":"c"}]]}"#);
        let names: Vec<_> = spec.terminals().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["terminal-1", "web", "terminal-3"]);
    }

    #[test]
    fn precedence_and_fallback() {
        let all = spec(r#"{"snapshot":"s","image":"node:22","build":{"dockerfile":"Dockerfile"}}"#);
        assert_eq!(all.base(), Base::Snapshot("s"));
        assert_eq!(all.fallback_base(), Base::Image("node:22"));
        let build = spec(r#"{"snapshot":"s","build":{"dockerfile":"Dockerfile"}}"#);
        assert!(matches!(build.fallback_base(), Base::Build(_)));
        assert_eq!(spec(r#"{"snapshot":"s"}"#).fallback_base(), Base::Default);
        assert_eq!(spec("{}").base(), Base::Default);
        assert_eq!(spec(r#"{"image":"a","build":{"dockerfile":"D"}}"#).base(), Base::Image("a"));
    }

    #[test]
    fn agent_can_update_snapshot_follows_the_base() {
        assert!(spec("{}").agent_can_update_snapshot_effective());
        assert!(spec(r#"{"snapshot":"s"}"#).agent_can_update_snapshot_effective());
        assert!(
            !spec(r#"{"snapshot":"s","agentCanUpdateSnapshot":false}"#).agent_can_update_snapshot_effective()
        );
        assert!(
            !spec(r#"{"image":"a","agentCanUpdateSnapshot":true}"#).agent_can_update_snapshot_effective()
        );
        assert!(
            !spec(r#"{"build":{"dockerfile":"D"},"agentCanUpdateSnapshot":true}"#)
                .agent_can_update_snapshot_effective()
        );
    }

    #[test]
    fn normalized_writes_the_effective_values() {
        let a = spec(r#"{"build":{"dockerfile":"Dockerfile"}}"#);
        let b = spec(
            r#"{"build":{"dockerfile":"Dockerfile"},"agentCanUpdateSnapshot":true,"enable_testing":true}"#,
        );
        assert_eq!(a.canonical_json().unwrap(), b.canonical_json().unwrap());
        assert_eq!(
            String::from_utf8(a.canonical_json().unwrap()).unwrap(),
            r#"{"build":{"dockerfile":"Dockerfile"},"agentCanUpdateSnapshot":false,"enable_testing":true}"#
        );
    }
}
