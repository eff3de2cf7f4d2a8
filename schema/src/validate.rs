//! Structural validation: the spanned JSON tree against the environment.json format.
//!
//! Every field is checked and every problem reported, so one run shows them all. The rules
//! follow Cursor's schema, so every file Cursor accepts passes: unknown fields are errors at
//! the top level, in `build` and in `mcpServerAllowlist` items (Cursor closes those objects),
//! but only warnings in `terminals` and `ports` items, which Cursor leaves open. `$schema` is
//! accepted with a warning, since Cursor's own validator rejects it. Beyond the schema,
//! duplicate keys are warned about (JSON.parse keeps the last), terminal names and ports must
//! be unique because boot addresses terminals by name and ports collide, and a base that
//! another takes precedence over is named in a warning.
//!
//! The checks that need the file system (Dockerfile exists, paths stay in the repository) live
//! in `config`, which runs after this.

use std::collections::HashMap;

use crate::diagnostic::Sink;
use crate::jsonc::{Member, Node, NodeKind, child_path, index_path};
use crate::spec::{Build, EgressMode, EnvironmentSpec, McpServer, Port, Terminal, TerminalItem};
use crate::suggest;

pub(crate) const TOP_LEVEL_FIELDS: &[&str] = &[
    "name",
    "user",
    "install",
    "start",
    "terminals",
    "ports",
    "repositoryDependencies",
    "snapshot",
    "image",
    "build",
    "agentCanUpdateSnapshot",
    "disableAllMcpServers",
    "mcpServerAllowlist",
    "egressAllowlist",
    "egressMode",
    "chromeExecutablePath",
    "enable_testing",
];
const BUILD_FIELDS: &[&str] = &["dockerfile", "dockerfileContents", "context"];
const MCP_FIELDS: &[&str] = &["name", "serverUrl", "command", "toolAllowlist"];
const TERMINAL_FIELDS: &[&str] = &["name", "command", "description"];
const PORT_FIELDS: &[&str] = &["port", "name"];

/// Names from other formats that people bring along, with what to write instead.
fn foreign_field_hint(object: &str, key: &str) -> Option<&'static str> {
    Some(match (object, key) {
        ("$", "update") => "`update` is the old name of `install`; rename it",
        ("$", "dockerfile" | "dockerFile" | "context") => {
            "this belongs inside `build`: `\"build\": { \"dockerfile\": \"Dockerfile\", \"context\": \"..\" }`"
        }
        ("build", "image") => "`image` is a top-level field: `\"image\": \"node:22\"`, outside `build`",
        ("$", "postCreateCommand" | "onCreateCommand" | "updateContentCommand" | "setup") => {
            "that is a devcontainer.json field; environment.json calls it `install`"
        }
        ("$", "postStartCommand" | "postAttachCommand") => {
            "that is a devcontainer.json field; environment.json calls it `start`"
        }
        ("$", "forwardPorts" | "appPort") => {
            "that is a devcontainer.json field; use `ports`: [{\"port\": 3000}]"
        }
        ("$", "remoteUser" | "containerUser") => {
            "that is a devcontainer.json field; environment.json calls it `user`"
        }
        ("$", "env" | "environment" | "containerEnv" | "remoteEnv" | "secrets") => {
            "environment.json has no environment variables; store values with `envbuild secrets set NAME`"
        }
        ("build", "args" | "buildArgs" | "target") => {
            "Cursor's `build` takes only `dockerfile`, `dockerfileContents` and `context`; pass build args with `envbuild build --build-arg`"
        }
        ("$", "enableTesting" | "enable-testing") => {
            "the field is spelled `enable_testing`, with an underscore"
        }
        _ => return None,
    })
}

/// Validates the tree and builds the spec from every part that is well formed.
pub(crate) fn check(root: &Node, sink: &mut Sink<'_>) -> EnvironmentSpec {
    let mut spec = EnvironmentSpec::default();
    let NodeKind::Object(members) = &root.kind else {
        sink.error(
            root.span.start,
            "$",
            format!("expected a JSON object at the top level, found {}", root.kind.describe()),
            Some(
                "environment.json is one object, such as `{ \"build\": { \"dockerfile\": \"Dockerfile\" } }`"
                    .into(),
            ),
        );
        return spec;
    };
    for member in unique_members(members, "$", sink) {
        let path = child_path("$", &member.key);
        let value = &member.value;
        match member.key.as_str() {
            "$schema" => {
                string(value, &path, sink);
                sink.warning(
                    member.key_span.start,
                    &path,
                    "`$schema` is accepted by envbuild, but Cursor's own validator rejects it".into(),
                    Some("remove it if Cursor reads this file; editors can be pointed at `envbuild schema` in their settings instead".into()),
                );
            }
            "name" => spec.name = string(value, &path, sink),
            "user" => spec.user = non_empty_string(value, &path, sink),
            "install" => spec.install = command(value, &path, sink),
            "start" => spec.start = command(value, &path, sink),
            "snapshot" => spec.snapshot = non_empty_string(value, &path, sink),
            "image" => spec.image = non_empty_string(value, &path, sink),
            "disableAllMcpServers" => spec.disable_all_mcp_servers = boolean(value, &path, sink),
            "mcpServerAllowlist" => spec.mcp_server_allowlist = mcp_servers(value, &path, sink),
            "egressAllowlist" => spec.egress_allowlist = hosts(value, &path, sink),
            "egressMode" => spec.egress_mode = egress_mode(value, &path, sink),
            "chromeExecutablePath" => spec.chrome_executable_path = non_empty_string(value, &path, sink),
            "enable_testing" => spec.enable_testing = boolean_or_word(value, &path, sink),
            "agentCanUpdateSnapshot" => spec.agent_can_update_snapshot = boolean(value, &path, sink),
            "build" => spec.build = build(value, &path, sink),
            "terminals" => spec.terminals = terminals(value, &path, sink),
            "ports" => spec.ports = ports(value, &path, sink),
            "repositoryDependencies" => {
                spec.repository_dependencies = array(value, &path, sink)
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| non_empty_string(item, &index_path(&path, i), sink))
                    .collect();
            }
            _ => unknown_field(member, "$", TOP_LEVEL_FIELDS, true, sink),
        }
    }
    precedence_warnings(&spec, members, root, sink);
    spec
}

/// Warns about each base that a higher one takes precedence over (snapshot > image > build).
fn precedence_warnings(spec: &EnvironmentSpec, members: &[Member], root: &Node, sink: &mut Sink<'_>) {
    let at =
        |key: &str| members.iter().rev().find(|m| m.key == key).map_or(root.span.start, |m| m.key_span.start);
    let winner = if spec.snapshot.is_some() {
        "snapshot"
    } else if spec.image.is_some() {
        "image"
    } else {
        return;
    };
    let mut ignored = Vec::new();
    if winner == "snapshot" && spec.image.is_some() {
        ignored.push("image");
    }
    if spec.build.is_some() {
        ignored.push("build");
    }
    for field in ignored {
        let fallback = if winner == "snapshot" {
            " (it is still the fallback when the snapshot cannot be used)"
        } else {
            ""
        };
        sink.warning(
            at(field),
            field,
            format!("`{winner}` takes precedence, so `{field}` is not used{fallback}"),
            Some(format!("remove `{field}` if `{winner}` is the base you mean")),
        );
    }
}

fn mcp_servers(node: &Node, path: &str, sink: &mut Sink<'_>) -> Vec<McpServer> {
    let mut servers = Vec::new();
    for (i, item) in array(node, path, sink).iter().enumerate() {
        let item_path = index_path(path, i);
        let Some(members) = object(item, &item_path, sink) else { continue };
        let mut server = McpServer::default();
        for member in unique_members(members, &item_path, sink) {
            let field_path = child_path(&item_path, &member.key);
            match member.key.as_str() {
                "name" => server.name = string(&member.value, &field_path, sink),
                "serverUrl" => server.server_url = non_empty_string(&member.value, &field_path, sink),
                "command" => server.command = non_empty_string(&member.value, &field_path, sink),
                "toolAllowlist" => {
                    server.tool_allowlist = Some(
                        array(&member.value, &field_path, sink)
                            .iter()
                            .enumerate()
                            .filter_map(|(j, t)| non_empty_string(t, &index_path(&field_path, j), sink))
                            .collect(),
                    );
                }
                _ => unknown_field(member, &item_path, MCP_FIELDS, true, sink),
            }
        }
        let named_by = members.iter().any(|m| m.key == "serverUrl" || m.key == "command");
        if !named_by {
            sink.error(
                item.span.start,
                &item_path,
                "an MCP server entry needs a `serverUrl` or a `command`".into(),
                Some("add `\"serverUrl\": \"https://mcp.example.com/sse\"` or `\"command\": \"npx my-mcp-server\"`".into()),
            );
        }
        servers.push(server);
    }
    servers
}

/// Hosts of `egressAllowlist`. Cursor takes any string; a URL or a path where a host belongs is
/// worth a warning, since it would match no host.
fn hosts(node: &Node, path: &str, sink: &mut Sink<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in array(node, path, sink).iter().enumerate() {
        let item_path = index_path(path, i);
        let Some(host) = non_empty_string(item, &item_path, sink) else { continue };
        if let Some((scheme, rest)) = host.split_once("://") {
            let bare = rest.split('/').next().unwrap_or(rest);
            sink.warning(
                item.span.start,
                &item_path,
                format!("`{host}` is a URL; egress rules match host names"),
                Some(format!("write the host alone: `{bare}` (without `{scheme}://`)")),
            );
        } else if host.contains('/') || host.chars().any(char::is_whitespace) {
            sink.warning(
                item.span.start,
                &item_path,
                format!("`{host}` does not look like a host name"),
                Some("write a host such as `registry.npmjs.org` or `*.github.com`".into()),
            );
        }
        out.push(host);
    }
    out
}

fn egress_mode(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<EgressMode> {
    let text = string(node, path, sink)?;
    if let Some(mode) = EgressMode::parse(&text) {
        return Some(mode);
    }
    let names: Vec<&str> = EgressMode::ALL.iter().map(|m| m.as_str()).collect();
    let hint = suggest::closest(&text, names.iter().copied()).map(|m| format!("did you mean `{m}`?"));
    sink.error(
        node.span.start,
        path,
        format!(
            "`{text}` is not an egress mode; the modes are {}",
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ),
        hint,
    );
    None
}

/// A boolean, also written as the string `"true"` or `"false"` (Cursor accepts both).
fn boolean_or_word(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<bool> {
    match &node.kind {
        NodeKind::Bool(b) => Some(*b),
        NodeKind::String(s) if s == "true" => Some(true),
        NodeKind::String(s) if s == "false" => Some(false),
        NodeKind::String(s) => {
            let hint = match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some("write `true`".to_owned()),
                "false" | "no" | "off" | "0" => Some("write `false`".to_owned()),
                _ => None,
            };
            sink.error(
                node.span.start,
                path,
                format!("expected `true` or `false`, found the string `{s}`"),
                hint,
            );
            None
        }
        _ => {
            type_error(node, path, "a boolean (or the string `\"true\"` or `\"false\"`)", sink);
            None
        }
    }
}

/// The members of an object with duplicates resolved as JSON.parse does (the last wins),
/// warning about each earlier one.
fn unique_members<'n>(members: &'n [Member], object_path: &str, sink: &mut Sink<'_>) -> Vec<&'n Member> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, member) in members.iter().enumerate() {
        last.insert(member.key.as_str(), i);
    }
    let mut kept = Vec::new();
    for (i, member) in members.iter().enumerate() {
        if last[member.key.as_str()] == i {
            kept.push(member);
        } else {
            sink.warning(
                member.key_span.start,
                &child_path(object_path, &member.key),
                format!("duplicate key `{}`; only the last one counts", member.key),
                Some("remove this one".into()),
            );
        }
    }
    kept
}

fn unknown_field(member: &Member, object: &str, known: &[&str], closed: bool, sink: &mut Sink<'_>) {
    let path = child_path(object, &member.key);
    let object_kind = if object == "$" { "$" } else { object.rsplit('.').next().unwrap_or(object) };
    let hint = foreign_field_hint(object_kind, &member.key).map(str::to_owned).or_else(|| {
        suggest::closest(&member.key, known.iter().copied())
            .map(|name| format!("did you mean `{name}`?"))
            .or_else(|| {
                Some(format!(
                    "known fields here: {}",
                    known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ))
            })
    });
    if closed {
        sink.error(member.key_span.start, &path, format!("unknown field `{}`", member.key), hint);
    } else {
        sink.warning(
            member.key_span.start,
            &path,
            format!("unknown field `{}` is ignored", member.key),
            hint,
        );
    }
}

fn type_error(node: &Node, path: &str, expected: &str, sink: &mut Sink<'_>) {
    let hint = match (&node.kind, expected) {
        (NodeKind::Array(_), "a string") if is_command_path(path) => {
            Some("join the commands into one string, e.g. with `&&`".to_owned())
        }
        (NodeKind::Number(n), "an object") if path.starts_with("ports[") => {
            Some(format!("write the port as an object: `{{ \"port\": {} }}`", n.text))
        }
        (NodeKind::String(s), "a terminal object or an array of terminal objects") => Some(format!(
            "write the terminal as an object: `{{ \"command\": {} }}`",
            serde_json::Value::String(s.clone())
        )),
        (NodeKind::Number(n), "a string") => Some(format!("write it in quotes: `\"{}\"`", n.text)),
        (NodeKind::String(s), "an integer") if s.trim().parse::<i64>().is_ok() => {
            Some(format!("remove the quotes: `{}`", s.trim()))
        }
        (NodeKind::String(s), "a boolean") if matches!(s.as_str(), "true" | "false") => {
            Some(format!("remove the quotes: `{s}`"))
        }
        _ => None,
    };
    sink.error(node.span.start, path, format!("expected {expected}, found {}", node.kind.describe()), hint);
}

fn is_command_path(path: &str) -> bool {
    matches!(path, "install" | "start") || path.ends_with(".command")
}

fn string(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<String> {
    if let NodeKind::String(s) = &node.kind {
        Some(s.clone())
    } else {
        type_error(node, path, "a string", sink);
        None
    }
}

/// A string that means nothing when empty (a user name, a path): empty is an error.
fn non_empty_string(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<String> {
    let s = string(node, path, sink)?;
    if s.trim().is_empty() {
        let hint = match path {
            "user" => "remove the field to run as the image's USER",
            "snapshot" => "set a snapshot id (`sha256:...`) or ref name, or remove the field",
            "build.dockerfile" => "set the Dockerfile's path, relative to the folder of environment.json",
            "build.dockerfileContents" => "write the Dockerfile's text, or use `dockerfile` with its path",
            "build.context" => "remove the field to use the folder of environment.json",
            "image" => "name an image such as `node:22-bookworm`, or remove the field for the default base",
            _ => "give it a value or remove the field",
        };
        sink.error(node.span.start, path, "must not be empty".into(), Some(hint.into()));
        return None;
    }
    Some(s)
}

/// A shell command: an empty one is allowed (Cursor accepts it) but almost surely a mistake.
fn command(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<String> {
    let s = string(node, path, sink)?;
    if s.trim().is_empty() {
        sink.warning(
            node.span.start,
            path,
            "the command is empty and does nothing".into(),
            Some("remove the field".into()),
        );
    }
    Some(s)
}

fn boolean(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<bool> {
    if let NodeKind::Bool(b) = node.kind {
        Some(b)
    } else {
        type_error(node, path, "a boolean", sink);
        None
    }
}

fn array<'n>(node: &'n Node, path: &str, sink: &mut Sink<'_>) -> &'n [Node] {
    if let NodeKind::Array(items) = &node.kind {
        items
    } else {
        type_error(node, path, "an array", sink);
        &[]
    }
}

fn object<'n>(node: &'n Node, path: &str, sink: &mut Sink<'_>) -> Option<&'n [Member]> {
    if let NodeKind::Object(members) = &node.kind {
        Some(members)
    } else {
        type_error(node, path, "an object", sink);
        None
    }
}

fn build(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<Build> {
    let members = object(node, path, sink)?;
    let mut build = Build::default();
    for member in unique_members(members, path, sink) {
        let field_path = child_path(path, &member.key);
        match member.key.as_str() {
            "dockerfile" => build.dockerfile = non_empty_string(&member.value, &field_path, sink),
            "dockerfileContents" => {
                build.dockerfile_contents = non_empty_string(&member.value, &field_path, sink);
            }
            "context" => build.context = non_empty_string(&member.value, &field_path, sink),
            _ => unknown_field(member, path, BUILD_FIELDS, true, sink),
        }
    }
    let has = |key: &str| members.iter().any(|m| m.key == key);
    match (has("dockerfile"), has("dockerfileContents")) {
        (false, false) => sink.error(
            node.span.start,
            path,
            "`build` needs a `dockerfile` or `dockerfileContents`".into(),
            Some("add `\"dockerfile\": \"Dockerfile\"` (relative to the folder of environment.json), or the Dockerfile's text as `\"dockerfileContents\"`".into()),
        ),
        (true, true) => {
            let at = members.iter().rev().find(|m| m.key == "dockerfile").map_or(node.span.start, |m| m.key_span.start);
            sink.warning(
                at,
                &child_path(path, "dockerfile"),
                "both `dockerfile` and `dockerfileContents` are set; envbuild builds `dockerfileContents`".into(),
                Some("remove one of them to say which Dockerfile you mean".into()),
            );
        }
        _ => {}
    }
    (build.dockerfile.is_some() || build.dockerfile_contents.is_some()).then_some(build)
}

fn terminals(node: &Node, path: &str, sink: &mut Sink<'_>) -> Vec<TerminalItem> {
    let mut items = Vec::new();
    // Names seen so far, with the path of the terminal that took each.
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, item) in array(node, path, sink).iter().enumerate() {
        let item_path = index_path(path, i);
        match &item.kind {
            NodeKind::Array(group) => {
                let terminals = group
                    .iter()
                    .enumerate()
                    .filter_map(|(j, t)| terminal(t, &index_path(&item_path, j), &mut names, sink))
                    .collect();
                items.push(TerminalItem::Group(terminals));
            }
            NodeKind::Object(_) => {
                if let Some(t) = terminal(item, &item_path, &mut names, sink) {
                    items.push(TerminalItem::Single(t));
                }
            }
            _ => type_error(item, &item_path, "a terminal object or an array of terminal objects", sink),
        }
    }
    items
}

fn terminal(
    node: &Node,
    path: &str,
    names: &mut HashMap<String, String>,
    sink: &mut Sink<'_>,
) -> Option<Terminal> {
    let members = object(node, path, sink)?;
    let mut name = None;
    let mut command_value = None;
    let mut description = None;
    let mut saw_command = false;
    for member in unique_members(members, path, sink) {
        let field_path = child_path(path, &member.key);
        match member.key.as_str() {
            "name" => {
                name = non_empty_string(&member.value, &field_path, sink);
                if let Some(n) = &name {
                    if let Some(first) = names.get(n) {
                        sink.error(
                            member.value.span.start,
                            &field_path,
                            format!("terminal name `{n}` is already used by `{first}`"),
                            Some(
                                "terminal names must be unique: `envbuild logs` finds terminals by name"
                                    .into(),
                            ),
                        );
                    } else {
                        names.insert(n.clone(), path.to_owned());
                    }
                }
            }
            "command" => {
                saw_command = true;
                command_value = command(&member.value, &field_path, sink);
            }
            "description" => description = string(&member.value, &field_path, sink),
            _ => unknown_field(member, path, TERMINAL_FIELDS, false, sink),
        }
    }
    if !saw_command {
        sink.error(
            node.span.start,
            &child_path(path, "command"),
            "a terminal needs a `command`".into(),
            Some("add `\"command\": \"npm run dev\"` or similar".into()),
        );
    }
    Some(Terminal { name, command: command_value?, description })
}

fn ports(node: &Node, path: &str, sink: &mut Sink<'_>) -> Vec<Port> {
    let mut ports: Vec<Port> = Vec::new();
    let mut seen: HashMap<u16, String> = HashMap::new();
    for (i, item) in array(node, path, sink).iter().enumerate() {
        let item_path = index_path(path, i);
        let Some(members) = object(item, &item_path, sink) else { continue };
        let mut port = None;
        let mut name = None;
        let mut saw_port = false;
        for member in unique_members(members, &item_path, sink) {
            let field_path = child_path(&item_path, &member.key);
            match member.key.as_str() {
                "port" => {
                    saw_port = true;
                    port = port_number(&member.value, &field_path, sink);
                    if let Some(p) = port {
                        if let Some(first) = seen.get(&p) {
                            sink.error(
                                member.value.span.start,
                                &field_path,
                                format!("port {p} is already declared at `{first}`"),
                                Some("declare each port once".into()),
                            );
                            port = None;
                        } else {
                            seen.insert(p, item_path.clone());
                        }
                    }
                }
                "name" => name = string(&member.value, &field_path, sink),
                _ => unknown_field(member, &item_path, PORT_FIELDS, false, sink),
            }
        }
        if !saw_port {
            sink.error(
                item.span.start,
                &child_path(&item_path, "port"),
                "a port entry needs a `port`".into(),
                Some("add `\"port\": 3000` or similar".into()),
            );
        }
        if let Some(port) = port {
            ports.push(Port { port, name });
        }
    }
    ports
}

fn port_number(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<u16> {
    let NodeKind::Number(n) = &node.kind else {
        type_error(node, path, "an integer", sink);
        return None;
    };
    let Some(value) = n.as_i64() else {
        sink.error(node.span.start, path, format!("port `{}` is not an integer", n.text), None);
        return None;
    };
    match u16::try_from(value) {
        Ok(port) if port >= 1 => Some(port),
        _ => {
            sink.error(
                node.span.start,
                path,
                format!("port {value} is out of range 1–65535"),
                Some("use a TCP port number between 1 and 65535".into()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(child_path("$", "build"), "build");
        assert_eq!(child_path("build", "dockerfile"), "build.dockerfile");
        assert_eq!(child_path("$", "odd key"), "$[\"odd key\"]");
        assert_eq!(child_path("terminals[0]", "name"), "terminals[0].name");
        assert_eq!(index_path("terminals[1]", 0), "terminals[1][0]");
    }
}
