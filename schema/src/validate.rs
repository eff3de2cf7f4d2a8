//! Structural validation: the spanned JSON tree against the environment.json format.
//!
//! Every field is checked and every problem reported, so one run shows them all. The rules
//! follow Cursor's schema exactly, so every file Cursor accepts passes: unknown fields are
//! errors at the top level and in `build` (Cursor closes those objects), but only warnings in
//! `terminals` and `ports` items, which Cursor leaves open. Beyond the schema, duplicate keys
//! are warned about (JSON.parse keeps the last), and terminal names and ports must be unique
//! because boot addresses terminals by name and ports collide.
//!
//! The checks that need the file system (Dockerfile exists, paths stay in the repository) live
//! in `config`, which runs after this.

use std::collections::HashMap;

use crate::diagnostic::Sink;
use crate::jsonc::{Member, Node, NodeKind, child_path, index_path};
use crate::spec::{Build, EnvironmentSpec, Port, Terminal, TerminalItem};
use crate::suggest;

pub(crate) const TOP_LEVEL_FIELDS: &[&str] = &[
    "$schema",
    "name",
    "user",
    "install",
    "start",
    "terminals",
    "build",
    "snapshot",
    "agentCanUpdateSnapshot",
    "ports",
    "repositoryDependencies",
];
const BUILD_FIELDS: &[&str] = &["dockerfile", "context"];
const TERMINAL_FIELDS: &[&str] = &["name", "command", "description"];
const PORT_FIELDS: &[&str] = &["port", "name"];

/// Names from other formats that people bring along, with what to write instead.
fn foreign_field_hint(object: &str, key: &str) -> Option<&'static str> {
    Some(match (object, key) {
        ("$", "update") => "`update` is the old name of `install`; rename it",
        ("$", "dockerfile" | "dockerFile" | "context") => {
            "this belongs inside `build`: `\"build\": { \"dockerfile\": \"Dockerfile\", \"context\": \"..\" }`"
        }
        ("$" | "build", "image") => {
            "environment.json has no `image`; write `FROM <image>` in a Dockerfile and set `build.dockerfile`"
        }
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
            "Cursor's `build` takes only `dockerfile` and `context`"
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
            }
            "name" => spec.name = string(value, &path, sink),
            "user" => spec.user = non_empty_string(value, &path, sink),
            "install" => spec.install = command(value, &path, sink),
            "start" => spec.start = command(value, &path, sink),
            "snapshot" => spec.snapshot = non_empty_string(value, &path, sink),
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
    if spec.build.is_none() && spec.snapshot.is_none() {
        sink.error(
            root.span.start,
            "$",
            "neither `build` nor `snapshot` is set, so there is nothing to build the environment from".into(),
            Some(
                "add `\"build\": { \"dockerfile\": \"Dockerfile\" }` (relative to `.cursor/`), or `\"snapshot\"` with a snapshot id or ref"
                    .into(),
            ),
        );
    }
    if spec.build.is_some() && spec.snapshot.is_some() {
        let at =
            members.iter().rev().find(|m| m.key == "snapshot").map_or(root.span.start, |m| m.key_span.start);
        sink.warning(
            at,
            "snapshot",
            "both `build` and `snapshot` are set; envbuild builds from `build` and ignores `snapshot`".into(),
            Some("remove one of them to say which base you mean".into()),
        );
    }
    spec
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
            "build.context" => "remove the field to use the folder of environment.json",
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
    let mut dockerfile = None;
    let mut context = None;
    let mut saw_dockerfile = false;
    for member in unique_members(members, path, sink) {
        let field_path = child_path(path, &member.key);
        match member.key.as_str() {
            "dockerfile" => {
                saw_dockerfile = true;
                dockerfile = non_empty_string(&member.value, &field_path, sink);
            }
            "context" => context = non_empty_string(&member.value, &field_path, sink),
            _ => unknown_field(member, path, BUILD_FIELDS, true, sink),
        }
    }
    if !saw_dockerfile {
        sink.error(
            node.span.start,
            &child_path(path, "dockerfile"),
            "`build` needs a `dockerfile`".into(),
            Some("add `\"dockerfile\": \"Dockerfile\"` (relative to the folder of environment.json)".into()),
        );
    }
    Some(Build { dockerfile: dockerfile?, context })
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
