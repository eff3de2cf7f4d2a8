//! What a Dockerfile builds on: the external images its `FROM` lines and `COPY --from` flags
//! name, which the system key must pin by id (a tag is never trusted: it moves); and what it
//! reads of its build context: the sources of `COPY` and `ADD` and of `RUN --mount=type=bind`,
//! which are all the system key covers of the context (so a commit that touches nothing they
//! name keeps the key).
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

/// What a Dockerfile reads of its build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextReads {
    /// Paths and globs relative to the context root (`src`, `package*.json`); a directory
    /// stands for everything under it.
    Sources(BTreeSet<String>),
    /// The whole context: a source is `.`, or cannot be known before the build (a variable
    /// the build args do not give); the reason says which.
    Everything(String),
}

/// The words of an instruction's arguments, JSON form (`["a", "b"]`) or shell form.
fn arguments(rest: &str) -> Vec<String> {
    let rest = rest.trim();
    if rest.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(rest)
    {
        return words;
    }
    rest.split_whitespace().map(str::to_owned).collect()
}

/// The context sources `text` reads; `build_args` override `ARG` defaults.
pub(crate) fn context_reads(text: &str, build_args: &BTreeMap<String, String>) -> ContextReads {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut sources = BTreeSet::new();
    let mut add = |source: &str, args: &HashMap<String, String>| -> Result<(), String> {
        if source.contains('$') {
            if references_unset(source, args) {
                return Err(format!("the source `{source}` depends on a variable this build does not set"));
            }
            add_source(&substitute(source, args), &mut sources);
        } else {
            add_source(source, &mut sources);
        }
        Ok(())
    };
    for line in logical_lines(text) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line.as_str(), ""));
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" => {
                for decl in rest.split_whitespace() {
                    let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
                    let value =
                        build_args.get(name).cloned().unwrap_or_else(|| default.trim_matches('"').to_owned());
                    args.insert(name.to_owned(), value);
                }
            }
            "COPY" | "ADD" => {
                let words = arguments(rest);
                let flags: Vec<&String> = words.iter().take_while(|w| w.starts_with("--")).collect();
                if flags.iter().any(|f| f.starts_with("--from=")) {
                    continue; // from another stage or image, not the context
                }
                let operands = &words[flags.len()..];
                // A heredoc (`COPY <<EOF /x`) carries its own content.
                if operands.iter().any(|w| w.starts_with("<<")) || operands.len() < 2 {
                    continue;
                }
                for source in &operands[..operands.len() - 1] {
                    let remote =
                        ["http://", "https://", "git@", "git://"].iter().any(|p| source.starts_with(p));
                    if !remote && let Err(why) = add(source, &args) {
                        return ContextReads::Everything(why);
                    }
                }
            }
            "RUN" => {
                for word in rest.split_whitespace().take_while(|w| w.starts_with("--")) {
                    let Some(mount) = word.strip_prefix("--mount=") else { continue };
                    let fields: HashMap<&str, &str> =
                        mount.split(',').filter_map(|f| f.split_once('=')).collect();
                    let bind = fields.get("type").is_none_or(|t| *t == "bind");
                    if bind && !fields.contains_key("from") {
                        let source = fields.get("source").or(fields.get("src")).copied().unwrap_or(".");
                        if let Err(why) = add(source, &args) {
                            return ContextReads::Everything(why);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if sources.contains("") {
        return ContextReads::Everything("a source is the whole context (`.`)".to_owned());
    }
    ContextReads::Sources(sources)
}

/// Whether `word` refers to a variable that `args` does not set (and gives no default for).
fn references_unset(word: &str, args: &HashMap<String, String>) -> bool {
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
        let has_default = braced && chars.peek() == Some(&':');
        if !name.is_empty() && !has_default && args.get(&name).is_none_or(String::is_empty) {
            return true;
        }
    }
    false
}

/// Adds `source`, cleaned and relative to the context root (`""` for the root itself).
fn add_source(source: &str, sources: &mut BTreeSet<String>) {
    let mut parts: Vec<&str> = Vec::new();
    for component in source.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    sources.insert(parts.join("/"));
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

    fn reads(text: &str) -> ContextReads {
        context_reads(text, &BTreeMap::from([("APP".to_owned(), "web".to_owned())]))
    }

    #[test]
    fn context_reads_are_copy_add_and_bind_sources() {
        let text = "FROM node:22 AS build\n\
            ARG APP\n\
            COPY --chown=node:node package.json package-lock.json /app/\n\
            COPY [\"apps/${APP}/src\", \"/app/src\"]\n\
            ADD https://example.com/x.tgz /tmp/\n\
            COPY --from=build /app /app\n\
            COPY <<EOF /etc/motd\nhello\nEOF\n\
            RUN --mount=type=bind,source=scripts/setup.sh,target=/s.sh --mount=type=cache,target=/c sh /s.sh\n\
            ADD ./vendor/../tools/*.tar.gz /opt/\n";
        let ContextReads::Sources(sources) = reads(text) else { panic!() };
        assert_eq!(
            sources.into_iter().collect::<Vec<_>>(),
            ["apps/web/src", "package-lock.json", "package.json", "scripts/setup.sh", "tools/*.tar.gz"]
        );
        assert!(matches!(reads("FROM x\nCOPY . /app\n"), ContextReads::Everything(_)));
        assert!(matches!(
            reads("FROM x\nRUN --mount=type=bind,target=/src make\n"),
            ContextReads::Everything(_)
        ));
        assert!(
            matches!(reads("FROM x\nCOPY $UNSET/a /b\n"), ContextReads::Everything(why) if why.contains("$UNSET"))
        );
        assert_eq!(reads("FROM x\nRUN apt-get update\n"), ContextReads::Sources(BTreeSet::new()));
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
