//! `.dockerignore`, with Docker's semantics, and the glob matching it shares with `--input`
//! filters.
//!
//! Each non-comment line is a pattern, matched against paths relative to the context root (a
//! leading `/` and `./` are dropped, `.` and `..` components cleaned). `*` matches within one
//! path component, `?` one character, `[...]` a class (`[^...]`/`[!...]` negated), `\`
//! escapes, and a `**` component matches any number of components, none included. A pattern
//! excludes the path it matches and everything under it. `!pattern` re-includes. The last
//! pattern that matches a path (or one of its parents) decides. The Dockerfile and
//! `.dockerignore` are always sent, as the Docker CLI does.
//!
//! Patterns come from the repository, which may be an untrusted pull request, so they are
//! compiled with `globset` into regular expressions that match in time linear in the path: a
//! pattern such as `*a*a*a*a*a*a*a*a*a*a*b` cannot make key computation backtrack. A pattern
//! that does not compile is an error naming its line, not a pattern that silently matches
//! nothing.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{BuildError, Result};

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    negate: bool,
    /// Components of the cleaned pattern, to tell how deep it reaches.
    depth: usize,
    has_globstar: bool,
    matcher: GlobMatcher,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// `path` without empty, `.` and `..` components, joined with `/`.
fn clean(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Compiles one glob with Docker's (Go's `filepath.Match`) rules.
fn compile(glob: &str, what: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| BuildError::Invalid(format!("{what} `{glob}` is not a valid pattern: {}", e.kind())))
}

impl DockerIgnore {
    /// Parses `.dockerignore` text; `source` names the file in errors.
    pub(crate) fn parse(text: &str, source: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let components = clean(body);
            if components.is_empty() {
                continue;
            }
            // Alternation is not Docker syntax: braces are literal there.
            let glob = components.join("/").replace('{', "\\{").replace('}', "\\}");
            let matcher = compile(&glob, &format!("{source}:{}: the pattern", number + 1))?;
            patterns.push(Pattern {
                negate,
                depth: components.len(),
                has_globstar: components.contains(&"**"),
                matcher,
            });
        }
        Ok(Self { patterns })
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let components = clean(path);
        // The path itself and each of its parents, shortest first.
        let prefixes: Vec<String> = (1..=components.len()).map(|n| components[..n].join("/")).collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            if prefixes.iter().any(|p| pattern.matcher.is_match(p)) {
                excluded = !pattern.negate;
            }
        }
        excluded
    }

    /// Whether some exception could re-include something under directory `dir`, so a walk
    /// must still enter an excluded directory.
    pub(crate) fn may_include_under(&self, dir: &str) -> bool {
        let depth = clean(dir).len();
        self.patterns.iter().any(|p| p.negate && (p.depth > depth || p.has_globstar))
    }
}

/// A set of `--input` globs (`src/**`, `*.lock`), matched against whole relative paths.
#[derive(Debug, Clone, Default)]
pub struct Globs {
    matchers: Vec<GlobMatcher>,
}

impl Globs {
    pub fn new(globs: &[String]) -> Result<Self> {
        let matchers = globs
            .iter()
            .map(|g| compile(&clean(g).join("/").replace('{', "\\{").replace('}', "\\}"), "the input glob"))
            .collect::<Result<_>>()?;
        Ok(Self { matchers })
    }

    /// Whether any glob matches the whole `path`.
    pub fn matches(&self, path: &str) -> bool {
        let path = clean(path).join("/");
        self.matchers.iter().any(|m| m.is_match(&path))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn glob_matches(glob: &str, path: &str) -> bool {
        Globs::new(&[glob.to_owned()]).unwrap().matches(path)
    }

    #[test]
    fn docker_semantics() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.log\n/build\ndocs/**\n!docs/keep.md\n**/node_modules\ntmp?\n[ab].txt\nsecret\\*\n",
            ".dockerignore",
        )
        .unwrap();
        assert!(ignore.excludes("app.log"));
        assert!(!ignore.excludes("src/app.log"), "`*` does not cross `/`");
        assert!(ignore.excludes("build/out/x.o"), "a matched directory takes its contents");
        assert!(ignore.excludes("docs/a/b.md"));
        assert!(!ignore.excludes("docs/keep.md"), "the last matching pattern wins");
        assert!(ignore.excludes("a/b/node_modules/x/y.js"));
        assert!(ignore.excludes("node_modules"));
        assert!(ignore.excludes("tmp1") && !ignore.excludes("tmp12"));
        assert!(ignore.excludes("a.txt") && !ignore.excludes("c.txt"));
        assert!(ignore.excludes("secret*") && !ignore.excludes("secrets"));
        assert!(!ignore.excludes("src/main.rs"));
        assert!(ignore.may_include_under("docs"));
    }

    #[test]
    fn globs() {
        assert!(glob_matches("src/**", "src/a/b.rs"));
        assert!(glob_matches("**/*.rs", "main.rs"));
        assert!(glob_matches("[!a]x", "bx") && !glob_matches("[!a]x", "ax"));
        assert!(glob_matches("[a-c]*", "beta") && !glob_matches("[a-c]*", "delta"));
        assert!(glob_matches("{a,b}", "{a,b}"), "braces are literal, as in Docker");
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_its_line() {
        let err = DockerIgnore::parse("*.log\n[\n", "ctx/.dockerignore").unwrap_err();
        assert!(err.to_string().contains("ctx/.dockerignore:2"), "{err}");
    }

    /// A backtracking matcher takes exponential time on this pattern (2^24 ways to place the
    /// stars here): a pull request could hang every CI key computation with it. Compiled globs
    /// answer at once; the deadline only turns a hang into a failure instead of a stuck run.
    #[test]
    fn hostile_patterns_do_not_hang() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ignore = DockerIgnore::parse(pattern, ".dockerignore").unwrap();
            let path = "a".repeat(200);
            let _ = tx.send((ignore.excludes(&path), glob_matches(pattern, &path)));
        });
        let answer = rx.recv_timeout(Duration::from_mins(1)).expect("matching a hostile pattern hung");
        assert_eq!(answer, (false, false));
    }
}
