//! `.dockerignore`, with Docker's semantics, and the glob matching it shares with
//! `--input` filters.
//!
//! Each non-comment line is a pattern, matched against paths relative to the context root
//! (a leading `/` and `./` are dropped, `..`-free cleaning applied). `*` matches within one
//! path component, `?` one character, `[...]` a class (`[^...]`/`[!...]` negated), `\` escapes,
//! and a `**` component matches any number of components, none included. A pattern excludes
//! the path it matches and everything under it. `!pattern` re-includes. The last pattern that
//! matches a path (or one of its parents) decides. The Dockerfile and `.dockerignore` are
//! always sent, as the Docker CLI does.

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    negate: bool,
    components: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (negate, body) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                Pattern { negate, components: clean(body) }
            })
            .filter(|p| !p.components.is_empty())
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let components = clean(path);
        let mut excluded = false;
        for pattern in &self.patterns {
            // The path itself, or any of its parents, matching the pattern.
            let matched =
                (1..=components.len()).any(|n| match_components(&pattern.components, &components[..n]));
            if matched {
                excluded = !pattern.negate;
            }
        }
        excluded
    }

    /// Whether some exception could re-include something under directory `dir`, so a walk
    /// must still enter an excluded directory.
    pub fn may_include_under(&self, dir: &str) -> bool {
        let depth = clean(dir).len();
        self.patterns
            .iter()
            .any(|p| p.negate && (p.components.len() > depth || p.components.iter().any(|c| c == "**")))
    }
}

/// Matches path components against pattern components, `**` spanning any number of them.
pub(crate) fn match_components(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(head, tail)| match_glob(first, head) && match_components(rest, tail)),
    }
}

/// Whether `glob` matches the whole `path` (`/`-separated; `**` spans components).
pub fn glob_matches(glob: &str, path: &str) -> bool {
    match_components(&clean(glob), &clean(path))
}

/// Go's `filepath.Match` for one component.
fn match_glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            (0..=n.len()).any(|i| glob_at(rest, &n[i..]))
        }
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((matched, used)) => matched && glob_at(&p[1 + used..], &n[1..]),
                None => false, // a malformed class matches nothing, as in Go
            }
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(lit) => n.first() == Some(lit) && glob_at(&p[1..], &n[1..]),
    }
}

/// Matches `c` against a class whose body starts at `p` (after `[`); returns whether it
/// matched and how many pattern characters the class used, `]` included.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            i += 1;
            let hi = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            hi
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let ignore = DockerIgnore::parse(
            "# comment\n*.log\n/build\ndocs/**\n!docs/keep.md\n**/node_modules\ntmp?\n[ab].txt\nsecret\\*\n",
        );
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
        assert!(!glob_matches("[", "["), "malformed classes match nothing");
    }
}
