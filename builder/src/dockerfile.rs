//! What a Dockerfile builds on: the external images its `FROM` lines and `COPY --from` flags
//! name, which the system key must pin by id (a tag is never trusted: it moves).
//!
//! This is not a Dockerfile parser; it reads just enough: comments, line continuations (with
//! the `# escape=` directive), `ARG` defaults declared before the first `FROM` (which `FROM`
//! may use, as `$NAME`, `${NAME}` or `${NAME:-default}`), stage names (`FROM x AS name`, later
//! referred to by name or index), `FROM --platform=...`, and `scratch`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A base image reference, as written after substitution.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BaseRef(pub String);

impl BaseRef {}

/// Logical lines: continuations joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut escape = '\\';
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut in_directives = true;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if in_directives {
            if let Some(value) = trimmed.strip_prefix('#').and_then(|d| d.trim().strip_prefix("escape=")) {
                if let Some(c) = value.trim().chars().next() {
                    escape = c;
                }
                continue;
            }
            if !trimmed.starts_with('#') || trimmed.is_empty() {
                in_directives = false;
            }
        }
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(stripped) = trimmed.strip_suffix(escape) {
            current.push_str(stripped);
            current.push(' ');
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        current.push_str(trimmed);
        lines.push(std::mem::take(&mut current));
    }
    if !current.trim().is_empty() {
        lines.push(current);
    }
    lines
}

/// Expands `$NAME`, `${NAME}` and `${NAME:-default}` from `args`; unknown names expand to "".
fn substitute(word: &str, args: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let inner: String = chars.by_ref().take_while(|&c| c != '}').collect();
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner.as_str(), None),
            };
            match (args.get(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
            }
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
            } else if let Some(v) = args.get(&name) {
                out.push_str(v);
            }
        }
    }
    out
}

/// The external images `text` builds on, sorted; `build_args` override `ARG` defaults.
pub(crate) fn base_images(text: &str, build_args: &BTreeMap<String, String>) -> BTreeSet<BaseRef> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut bases = BTreeSet::new();
    let mut seen_from = false;
    let is_stage = |name: &str, stages: &[String]| {
        stages.iter().any(|s| s.eq_ignore_ascii_case(name))
            || name.parse::<usize>().is_ok_and(|i| i < stages.len())
    };
    for line in logical_lines(text) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else { continue };
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" if !seen_from => {
                for decl in words {
                    let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
                    let value =
                        build_args.get(name).cloned().unwrap_or_else(|| default.trim_matches('"').to_owned());
                    args.insert(name.to_owned(), value);
                }
            }
            "FROM" => {
                seen_from = true;
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let Some(image) = rest.first().map(|w| substitute(w, &args)) else { continue };
                if !image.eq_ignore_ascii_case("scratch") && !is_stage(&image, &stages) {
                    bases.insert(BaseRef(image));
                }
                let name = match rest.as_slice() {
                    [_, as_kw, name, ..] if as_kw.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => format!("#{}", stages.len()),
                };
                stages.push(name);
            }
            "COPY" | "ADD" => {
                for flag in words.take_while(|w| w.starts_with("--")) {
                    if let Some(from) = flag.strip_prefix("--from=") {
                        let from = substitute(from, &args);
                        if !is_stage(&from, &stages) {
                            bases.insert(BaseRef(from));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(text: &str) -> Vec<String> {
        base_images(text, &BTreeMap::new()).into_iter().map(|b| b.0).collect()
    }

    #[test]
    fn finds_external_bases_only() {
        let text = r"# escape=`
ARG VERSION=24.04
ARG REG
FROM --platform=linux/amd64 ${REG:-docker.io/library}/ubuntu:$VERSION AS base
RUN echo `
    continued
FROM base AS second
COPY --from=golang:1.22 /usr/local/go /usr/local/go
COPY --from=base /etc/os-release /x
COPY --from=0 /a /b
FROM scratch
FROM alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
";
        assert_eq!(
            bases(text),
            [
                "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io/library/ubuntu:24.04",
                "golang:1.22",
            ]
        );
    }

    #[test]
    fn build_args_override_defaults() {
        let args = BTreeMap::from([("V".to_owned(), "3.20".to_owned())]);
        let found: Vec<_> =
            base_images("ARG V=3.19\nFROM alpine:$V\n", &args).into_iter().map(|b| b.0).collect();
        assert_eq!(found, ["alpine:3.20"]);
        assert!(bases("FROM scratch\nCOPY busybox /bin/busybox\n").is_empty());
    }
}
