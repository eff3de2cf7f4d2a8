//! The repository's files as git tracks them, which are copied to `/workspace`; and the
//! install inputs among them, which are fingerprinted into the env key.
//!
//! A snapshot is a checkpoint of install's work, and every boot runs install again on the
//! commit it checks out, so the env key covers only what install depends on. The inputs are,
//! in order of precedence: the globs of `--input`; the `inputs` of `.cursor/envbuild.json`;
//! else by default the dependency manifests and lock files found anywhere in the repository
//! ([`MANIFESTS`]: npm, yarn, pnpm, bun, pip and requirements files, pyproject, poetry, uv,
//! pipenv, cargo, go, bundler, composer, maven, gradle, mix, and the version files of node,
//! python and ruby), the files the install command names (`./scripts/setup.sh`), and
//! `.cursor/`. When the repository has no manifest at all, every tracked file is an input, as
//! nothing tells what install reads. A source-only commit is therefore a cache hit under the
//! default inputs.
//!
//! Content is identified by git blob ids, so a warm build hashes almost nothing: files
//! unchanged since the index are taken from `git ls-files --stage`, and only files git reports
//! as modified (`git diff-files`) are read and hashed, the way git hashes them. A file therefore
//! has the same fingerprint whether its change is committed or not. Tracked files deleted from
//! the working tree are not inputs; submodules (gitlinks) are left out. Outside a git
//! repository, every file except `.git` is an input.

use std::path::Path;
use std::process::Command;

pub use crate::dockerignore::Globs;
use crate::error::{BuildError, Result};
use crate::tree::{self, FileEntry, FileSet, Kind};

/// The dependency manifests and lock files that make the default install inputs, by file
/// name (`*` matches within the name). Found at any depth, so a monorepo's
/// `apps/web/package.json` counts.
pub const MANIFESTS: &[&str] = &[
    // npm, yarn, pnpm, bun
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    ".npmrc",
    "yarn.lock",
    ".yarnrc",
    ".yarnrc.yml",
    "pnpm-lock.yaml",
    "pnpm-workspace.yaml",
    ".pnpmfile.cjs",
    "bun.lock",
    "bun.lockb",
    "bunfig.toml",
    ".nvmrc",
    ".node-version",
    // pip, pyproject, poetry, uv, pipenv
    "requirements*.txt",
    "constraints*.txt",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    ".python-version",
    // cargo, go
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain",
    "rust-toolchain.toml",
    "go.mod",
    "go.sum",
    "go.work",
    "go.work.sum",
    // bundler, composer
    "Gemfile",
    "Gemfile.lock",
    "*.gemspec",
    ".ruby-version",
    "composer.json",
    "composer.lock",
    // maven, gradle, mix
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
    "gradle.properties",
    "gradle-wrapper.properties",
    "libs.versions.toml",
    "mix.exs",
    "mix.lock",
    // version managers
    ".tool-versions",
];

/// How the install inputs are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRule {
    /// The globs of `--input`.
    Flags(Vec<String>),
    /// The `inputs` of `.cursor/envbuild.json`.
    Settings(Vec<String>),
    /// Manifests and lock files, the files install names, and `.cursor/`.
    Default,
}

/// All the files `repo` tracks (every file but `.git` outside a git repository).
pub fn tracked(repo: &Path) -> Result<FileSet> {
    let entries = match git_files(repo)? {
        Some(files) => files,
        None => walk_all(repo)?,
    };
    Ok(FileSet::new(entries))
}

/// The install inputs among `tracked`, and where the list came from (for `key` and `explain`).
pub fn select(tracked: &FileSet, install: Option<&str>, rule: &InputRule) -> Result<(FileSet, String)> {
    let pick = |globs: &Globs| {
        FileSet::new(tracked.entries.iter().filter(|e| globs.matches(&e.path)).cloned().collect())
    };
    match rule {
        InputRule::Flags(globs) => Ok((pick(&Globs::new(globs)?), format!("--input {}", globs.join(" ")))),
        InputRule::Settings(globs) => {
            Ok((pick(&Globs::new(globs)?), format!(".cursor/envbuild.json inputs: {}", globs.join(" "))))
        }
        InputRule::Default => {
            let manifests = Globs::new(&MANIFESTS.iter().map(|m| format!("**/{m}")).collect::<Vec<_>>())?;
            let named = named_by(install.unwrap_or_default(), tracked);
            let mut found = 0;
            let entries: Vec<_> = tracked
                .entries
                .iter()
                .filter(|e| {
                    let manifest = manifests.matches(&e.path);
                    found += usize::from(manifest);
                    manifest || named.contains(&e.path) || e.path.starts_with(".cursor/")
                })
                .cloned()
                .collect();
            if found == 0 {
                return Ok((
                    tracked.clone(),
                    "every tracked file: no dependency manifest or lock file was found".to_owned(),
                ));
            }
            let mut from = format!("{found} dependency manifest and lock file(s), `.cursor/`");
            if !named.is_empty() {
                from = format!("{from}, and what install names ({})", named.join(", "));
            }
            Ok((FileSet::new(entries), from))
        }
    }
}

/// The tracked files the install command names (`./scripts/setup.sh`, `bash tools/deps.sh`).
fn named_by(install: &str, tracked: &FileSet) -> Vec<String> {
    let words = install
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>' | '`'));
    let mut named: Vec<String> = words
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'').trim_start_matches("./"))
        .filter(|w| !w.is_empty())
        .filter(|w| tracked.entries.iter().any(|e| e.path == *w && matches!(e.kind, Kind::File { .. })))
        .map(str::to_owned)
        .collect();
    named.sort();
    named.dedup();
    named
}

/// The normalized identity of the repository: its `origin` remote as `host/path` (scheme, user,
/// port and `.git` dropped, host in lower case), so every clone of one repository is the same
/// repository; else its canonical path.
pub fn repository_id(repo: &Path) -> String {
    if let Ok(Some(url)) = git(repo, &["remote", "get-url", "origin"]) {
        let url = String::from_utf8_lossy(&url).trim().to_owned();
        if let Some(id) = normalize_remote(&url) {
            return id;
        }
    }
    std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf()).display().to_string()
}

/// `https://user@GitHub.com:443/Org/Repo.git` and `git@github.com:Org/Repo` → `github.com/Org/Repo`.
fn normalize_remote(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (host, path) = if url.contains("://") {
        rest.split_once('/')?
    } else {
        rest.split_once(':')? // scp-like `host:path`
    };
    let host = host.split(':').next()?.to_ascii_lowercase();
    let path = path.trim_matches('/').trim_end_matches(".git");
    (!host.is_empty() && !path.is_empty()).then(|| format!("{host}/{path}"))
}

fn git(repo: &Path, args: &[&str]) -> Result<Option<Vec<u8>>> {
    let output = Command::new("git").arg("-C").arg(repo).args(args).output();
    match output {
        Ok(out) if out.status.success() => Ok(Some(out.stdout)),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("not a git repository") {
                Ok(None)
            } else {
                Err(BuildError::Git {
                    command: args.join(" "),
                    repo: repo.to_path_buf(),
                    stderr: stderr.trim().to_owned(),
                })
            }
        }
        // No git at all: treat the directory as a plain tree.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BuildError::io("cannot run git")(e)),
    }
}

/// Tracked files, or `None` outside a git repository.
fn git_files(repo: &Path) -> Result<Option<Vec<FileEntry>>> {
    let Some(staged) = git(repo, &["ls-files", "-z", "--stage"])? else { return Ok(None) };
    let format = git(repo, &["rev-parse", "--show-object-format"])?
        .map_or_else(|| "sha1".to_owned(), |f| String::from_utf8_lossy(&f).trim().to_owned());
    let modified: std::collections::HashSet<String> = git(repo, &["diff-files", "-z", "--name-only"])?
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let mut entries = Vec::new();
    for record in staged.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        // "<mode> <object> <stage>\t<path>"
        let record = String::from_utf8_lossy(record);
        let Some((meta, path)) = record.split_once('\t') else { continue };
        let mut fields = meta.split(' ');
        let (Some(mode), Some(object)) = (fields.next(), fields.next()) else { continue };
        if mode == "160000" {
            continue; // a submodule
        }
        let source = repo.join(path);
        if modified.contains(path) {
            // Changed (or deleted) in the working tree: fingerprint what is there now.
            let Some(mut entry) = tree::entry_for(path.to_owned(), source.clone())? else { continue };
            if matches!(entry.kind, Kind::File { .. }) {
                entry.hash = format!("git:{}", blob_id(&source, &format)?);
            }
            if !matches!(entry.kind, Kind::Directory) {
                entries.push(entry);
            }
            continue;
        }
        let kind = match mode {
            "120000" => Kind::Symlink {
                target: std::fs::read_link(&source)
                    .map_err(BuildError::io(format!("cannot read `{}`", source.display())))?
                    .to_string_lossy()
                    .into_owned(),
            },
            "100755" => Kind::File { executable: true },
            _ => Kind::File { executable: false },
        };
        let hash = if matches!(kind, Kind::File { .. }) { format!("git:{object}") } else { String::new() };
        entries.push(FileEntry { path: path.to_owned(), kind, hash, source, inline: None });
    }
    Ok(Some(entries))
}

/// The id git gives a file's content: the hash of `blob <len>\0<content>`.
fn blob_id(path: &Path, format: &str) -> Result<String> {
    use sha1::Digest as _;
    let content = std::fs::read(path).map_err(BuildError::io(format!("cannot read `{}`", path.display())))?;
    let header = format!("blob {}\0", content.len());
    Ok(if format == "sha256" {
        let mut h = envbuild_schema::digest::Hasher::new();
        h.update(header.as_bytes());
        h.update(&content);
        h.finish().hex()
    } else {
        let mut h = sha1::Sha1::new();
        h.update(header.as_bytes());
        h.update(&content);
        hex::encode(h.finalize())
    })
}

/// Every file and symlink under `root` except `.git`.
fn walk_all(root: &Path) -> Result<Vec<FileEntry>> {
    walk(root, "", true)
}

/// Every file under `root`, named under `prefix` (`""` or `dir/`), hashed when `hashed` (key
/// inputs are; what is only copied is not); a top-level `.git` is left out when walking a
/// repository's files.
fn walk(root: &Path, prefix: &str, hashed: bool) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
        for item in
            std::fs::read_dir(&dir).map_err(BuildError::io(format!("cannot list `{}`", dir.display())))?
        {
            let item = item.map_err(BuildError::io(format!("cannot list `{}`", dir.display())))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && prefix.is_empty() && name == ".git" {
                continue;
            }
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let entry = if hashed {
                tree::entry_for(format!("{prefix}{path}"), item.path())?
            } else {
                tree::entry_unhashed(format!("{prefix}{path}"), item.path())?
            };
            match entry {
                Some(FileEntry { kind: Kind::Directory, .. }) => stack.push(path),
                Some(entry) => out.push(entry),
                None => {}
            }
        }
    }
    Ok(out)
}

/// The repository as a booted environment's `/workspace` gets it: the tracked files and its
/// `.git`, so git works there (status, diff, commits of the agent). `.git` is copied, not
/// hashed: it is no input of any key.
pub fn workspace_files(repo: &Path) -> Result<FileSet> {
    let mut entries = tracked(repo)?.entries;
    let git = repo.join(".git");
    if git.is_dir() {
        entries.extend(walk(&git, ".git/", false)?);
    } else if let Some(entry) = tree::entry_unhashed(".git".to_owned(), git)? {
        // A worktree's `.git` file (it names a directory of the host).
        entries.push(entry);
    }
    Ok(FileSet::new(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(repo: &Path, args: &[&str]) {
        let status = Command::new("git").arg("-C").arg(repo).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn fingerprints_match_committed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        run(repo, &["init", "-q"]);
        std::fs::write(repo.join("a.txt"), "one\n").unwrap();
        std::fs::write(repo.join("untracked.txt"), "x").unwrap();
        run(repo, &["add", "a.txt"]);
        run(repo, &["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "1"]);
        let collect = |repo: &Path, globs: &[String]| {
            let all = tracked(repo).unwrap();
            if globs.is_empty() {
                Ok::<_, BuildError>(all)
            } else {
                Ok(select(&all, None, &InputRule::Flags(globs.to_vec())).unwrap().0)
            }
        };
        let committed = collect(repo, &[]).unwrap();
        assert_eq!(committed.entries.len(), 1, "untracked files are not inputs");
        // git's own id of "one\n".
        assert_eq!(committed.entries[0].hash, "git:5626abf0f72e58d7a153368ba57db4c673c0e171");

        std::fs::write(repo.join("a.txt"), "two\n").unwrap();
        let modified = collect(repo, &[]).unwrap();
        run(repo, &["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-am", "2"]);
        let recommitted = collect(repo, &[]).unwrap();
        assert_ne!(committed, modified);
        assert_eq!(
            modified.fingerprints(),
            recommitted.fingerprints(),
            "committing a change changes nothing"
        );
        assert!(collect(repo, &["*.md".to_owned()]).unwrap().entries.is_empty());
    }

    #[test]
    fn default_inputs_are_manifests_named_files_and_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        run(repo, &["init", "-q"]);
        for path in [
            "package.json",
            "package-lock.json",
            "apps/web/package.json",
            "src/app.ts",
            "scripts/setup.sh",
            ".cursor/environment.json",
            "README.md",
        ] {
            std::fs::create_dir_all(repo.join(path).parent().unwrap()).unwrap();
            std::fs::write(repo.join(path), path).unwrap();
        }
        run(repo, &["add", "-A"]);
        let all = tracked(repo).unwrap();
        let (inputs, from) = select(&all, Some("npm ci && ./scripts/setup.sh"), &InputRule::Default).unwrap();
        let paths: Vec<_> = inputs.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".cursor/environment.json",
                "apps/web/package.json",
                "package-lock.json",
                "package.json",
                "scripts/setup.sh"
            ]
        );
        assert!(from.contains("3 dependency manifest") && from.contains("scripts/setup.sh"), "{from}");
        // No manifest at all: every tracked file.
        let only_source =
            FileSet::new(all.entries.iter().filter(|e| e.path.starts_with("src/")).cloned().collect());
        let (inputs, from) = select(&only_source, None, &InputRule::Default).unwrap();
        assert_eq!(inputs, only_source);
        assert!(from.starts_with("every tracked file"), "{from}");
    }

    #[test]
    fn remotes_normalize_to_one_identity() {
        for url in [
            "https://user@GitHub.com/Org/Repo.git",
            "git@github.com:Org/Repo.git",
            "ssh://git@github.com:22/Org/Repo",
            "https://github.com/Org/Repo/",
        ] {
            assert_eq!(normalize_remote(url).as_deref(), Some("github.com/Org/Repo"), "{url}");
        }
        assert_eq!(normalize_remote("not a url"), None);
    }
}
