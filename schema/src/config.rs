//! Loading a config file: bounded reading, parsing, validation, and the checks that need the
//! file system.
//!
//! [`load`] never fails and never hangs: every problem, including a missing file, a directory,
//! a FIFO, a file over [`MAX_CONFIG_BYTES`] or bytes that are not UTF-8, becomes a
//! [`Diagnostic`]. Only regular files are opened (a FIFO would block `open`), and at most
//! `MAX_CONFIG_BYTES + 1` bytes are read whatever the metadata claims.
//!
//! Paths in `build` are relative to the folder that holds the file (`.cursor/`), as in Cursor:
//! `build.dockerfile` there, and `build.context` there too, defaulting to that folder, except
//! that `.`, `./` and `..` all mean the repository root. The repository root is, in order: the
//! root given by the caller; the parent of a folder named `.cursor`; the nearest ancestor with
//! a `.git`; the folder of the file. The Dockerfile and the context must stay inside it, both
//! as written (`..` components) and after symlinks are resolved.
//!
//! [`find`] locates a repository's config from anywhere inside it: the nearest ancestor with a
//! `.cursor/environment.json`, stopping at the repository root (the nearest `.git`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::diagnostic::{Diagnostic, Severity, Sink};
use crate::jsonc;
use crate::spec::EnvironmentSpec;
use crate::suggest;
use crate::validate;

/// Largest config accepted. Real files are a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The default location of the config inside a repository.
pub const DEFAULT_CONFIG_PATH: &str = ".cursor/environment.json";

/// Everything known about one config file after loading it.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file as the caller named it.
    pub file: PathBuf,
    /// The spec built from the well-formed parts; `None` when the file could not be parsed.
    pub spec: Option<EnvironmentSpec>,
    pub diagnostics: Vec<Diagnostic>,
    /// Absolute, symlink-free paths, present when the file was found.
    pub paths: Option<ResolvedPaths>,
}

/// Where things are on disk, all absolute and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPaths {
    pub config_file: PathBuf,
    pub config_dir: PathBuf,
    pub repo_root: PathBuf,
    /// Present when `build.dockerfile` resolves to an existing file inside the repository.
    pub dockerfile: Option<PathBuf>,
    /// Present when the build context resolves to an existing directory inside the repository.
    pub context: Option<PathBuf>,
}

impl LoadedConfig {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The spec when the file is valid (warnings allowed).
    pub fn valid_spec(&self) -> Option<&EnvironmentSpec> {
        if self.has_errors() { None } else { self.spec.as_ref() }
    }

    fn file_problem(file: &Path, message: String, hint: Option<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            spec: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                position: None,
                json_path: None,
                message,
                hint,
            }],
            paths: None,
        }
    }
}

/// Reads, parses and validates the config at `file`. `repo_root` overrides the discovery of the
/// repository root.
pub fn load(file: &Path, repo_root: Option<&Path>) -> LoadedConfig {
    match read_bounded(file) {
        Ok(bytes) => load_bytes(file, &bytes, repo_root),
        Err((message, hint)) => LoadedConfig::file_problem(file, message, hint),
    }
}

/// Parses and validates config bytes that were read from `file`. The path checks run when
/// `file` exists on disk.
pub fn load_bytes(file: &Path, bytes: &[u8], repo_root: Option<&Path>) -> LoadedConfig {
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        let (message, hint) = too_large(bytes.len() as u64);
        return LoadedConfig::file_problem(file, message, hint);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid = &bytes[..err.valid_up_to()];
            // The prefix is valid UTF-8 by definition, so this cannot fail.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let mut sink = Sink::new(file, prefix);
            sink.error(
                prefix.len(),
                "$",
                format!("the file is not valid UTF-8 (byte 0x{:02X})", bytes[err.valid_up_to()]),
                Some("save the file as UTF-8".into()),
            );
            return LoadedConfig {
                file: file.to_path_buf(),
                spec: None,
                diagnostics: sink.finish(),
                paths: None,
            };
        }
    };
    let mut sink = Sink::new(file, text);
    let spec = match jsonc::parse(text) {
        Ok(root) => {
            let spec = validate::check(&root, &mut sink);
            Some((spec, root))
        }
        Err(err) => {
            sink.error(err.offset, &err.json_path, err.message, err.hint);
            None
        }
    };
    let paths = resolve_paths(file, repo_root).map(|mut paths| {
        if let Some((spec, root)) = &spec {
            check_build_paths(spec, root, &mut paths, &mut sink);
        }
        paths
    });
    LoadedConfig { file: file.to_path_buf(), spec: spec.map(|(s, _)| s), diagnostics: sink.finish(), paths }
}

/// Reads at most `MAX_CONFIG_BYTES` from a regular file, or says why not.
fn read_bounded(file: &Path) -> Result<Vec<u8>, (String, Option<String>)> {
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let hint = if file.ends_with(DEFAULT_CONFIG_PATH) {
                "run `envbuild init` to create one, or pass the path of the config".to_owned()
            } else {
                "check the path".to_owned()
            };
            return Err(("the file does not exist".into(), Some(hint)));
        }
        Err(err) => return Err((format!("cannot read the file: {err}"), None)),
    };
    if meta.is_dir() {
        let candidate = file.join(DEFAULT_CONFIG_PATH);
        let hint = if candidate.is_file() {
            format!("did you mean `{}`?", candidate.display())
        } else {
            "pass the path of the environment.json file".to_owned()
        };
        return Err(("is a directory, not a config file".into(), Some(hint)));
    }
    if !meta.is_file() {
        return Err((
            "is not a regular file".into(),
            Some("pass the path of the environment.json file".into()),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    let opened = std::fs::File::open(file).map_err(|err| (format!("cannot read the file: {err}"), None))?;
    opened
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| (format!("cannot read the file: {err}"), None))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_large(len: u64) -> (String, Option<String>) {
    #[allow(clippy::cast_precision_loss)]
    let mib = len as f64 / (1024.0 * 1024.0);
    (
        format!("the file is {mib:.1} MiB; a config may be at most {} KiB", MAX_CONFIG_BYTES / 1024),
        Some("environment.json holds a few commands and paths; check that this is the right file".into()),
    )
}

fn resolve_paths(file: &Path, repo_root: Option<&Path>) -> Option<ResolvedPaths> {
    let config_file = std::fs::canonicalize(file).ok()?;
    let config_dir = config_file.parent()?.to_path_buf();
    let repo_root = match repo_root {
        Some(root) => std::fs::canonicalize(root).ok()?,
        None => discover_repo_root(&config_dir),
    };
    Some(ResolvedPaths { config_file, config_dir, repo_root, dockerfile: None, context: None })
}

/// A repository's config, found from `start` (a directory inside the repository, or the
/// repository itself): the nearest ancestor holding `.cursor/environment.json`, searching no
/// higher than the repository root (the nearest ancestor with `.git`). Returns the root to use
/// and the config file; when there is none, the repository root (else `start`) and where its
/// config belongs.
pub fn find(start: &Path) -> (PathBuf, PathBuf) {
    for dir in start.ancestors() {
        let candidate = dir.join(DEFAULT_CONFIG_PATH);
        if candidate.is_file() {
            return (dir.to_path_buf(), candidate);
        }
        if dir.join(".git").exists() {
            return (dir.to_path_buf(), candidate);
        }
    }
    (start.to_path_buf(), start.join(DEFAULT_CONFIG_PATH))
}

/// See the module docs for the order of the rules.
pub fn discover_repo_root(config_dir: &Path) -> PathBuf {
    if config_dir.file_name().is_some_and(|n| n == ".cursor")
        && let Some(parent) = config_dir.parent()
    {
        return parent.to_path_buf();
    }
    config_dir.ancestors().find(|dir| dir.join(".git").exists()).unwrap_or(config_dir).to_path_buf()
}

/// Removes `.` and resolves `..` without touching the file system.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Shows `path` relative to the repository when it is inside, else as it is.
fn display_in_repo(path: &Path, repo_root: &Path) -> String {
    match path.strip_prefix(repo_root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn member_value_offset(root: &jsonc::Node, object: &str, key: &str) -> usize {
    let jsonc::NodeKind::Object(members) = &root.kind else { return root.span.start };
    let Some(parent) = members.iter().rev().find(|m| m.key == object) else { return root.span.start };
    let jsonc::NodeKind::Object(inner) = &parent.value.kind else { return parent.value.span.start };
    inner.iter().rev().find(|m| m.key == key).map_or(parent.value.span.start, |m| m.value.span.start)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    File,
    Directory,
}

fn check_build_paths(
    spec: &EnvironmentSpec,
    root: &jsonc::Node,
    paths: &mut ResolvedPaths,
    sink: &mut Sink<'_>,
) {
    let Some(build) = &spec.build else { return };
    if let Some(dockerfile) = &build.dockerfile {
        let offset = member_value_offset(root, "build", "dockerfile");
        let written = paths.config_dir.join(dockerfile);
        paths.dockerfile = check_path(
            dockerfile,
            &written,
            "build.dockerfile",
            "the Dockerfile",
            Expect::File,
            offset,
            paths,
            sink,
        );
    }
    let offset = if build.context.is_some() {
        member_value_offset(root, "build", "context")
    } else {
        member_value_offset(root, "$", "build")
    };
    let (written, path) = match build.context.as_deref() {
        // Cursor special-cases these three: they all mean the repository root.
        _ if build.context_is_repository_root() => {
            (build.context.clone().unwrap_or_default(), paths.repo_root.clone())
        }
        Some(context) => (context.to_owned(), paths.config_dir.join(context)),
        None => (".cursor/ (the default)".to_owned(), paths.config_dir.clone()),
    };
    paths.context = check_path(
        &written,
        &path,
        "build.context",
        "the build context",
        Expect::Directory,
        offset,
        paths,
        sink,
    );
}

#[allow(clippy::too_many_arguments)]
fn check_path(
    written: &str,
    joined: &Path,
    json_path: &str,
    what: &str,
    expect: Expect,
    offset: usize,
    paths: &ResolvedPaths,
    sink: &mut Sink<'_>,
) -> Option<PathBuf> {
    let relative_hint = || {
        Some(format!(
            "paths in `build` are relative to `{}`, the folder that holds environment.json",
            display_in_repo(&paths.config_dir, &paths.repo_root)
        ))
    };
    if Path::new(written).is_absolute() {
        sink.error(offset, json_path, format!("{what} path `{written}` is absolute"), relative_hint());
        return None;
    }
    let lexical = normalize_lexically(joined);
    if !lexical.starts_with(&paths.repo_root) {
        sink.error(
            offset,
            json_path,
            format!(
                "{what} `{written}` resolves to `{}`, outside the repository `{}`",
                lexical.display(),
                paths.repo_root.display()
            ),
            relative_hint(),
        );
        return None;
    }
    let shown = display_in_repo(&lexical, &paths.repo_root);
    let Ok(real) = std::fs::canonicalize(&lexical) else {
        let hint = similar_entry(&lexical, expect)
            .map(|name| format!("did you mean `{name}`?"))
            .or_else(relative_hint);
        sink.error(offset, json_path, format!("{what} `{shown}` does not exist"), hint);
        return None;
    };
    if !real.starts_with(&paths.repo_root) {
        sink.error(
            offset,
            json_path,
            format!("{what} `{shown}` is a symlink to `{}`, outside the repository", real.display()),
            Some("builds may only read files inside the repository".into()),
        );
        return None;
    }
    let ok = match expect {
        Expect::File => real.is_file(),
        Expect::Directory => real.is_dir(),
    };
    if !ok {
        let kind = if expect == Expect::File { "a file" } else { "a directory" };
        sink.error(offset, json_path, format!("{what} `{shown}` is not {kind}"), None);
        return None;
    }
    Some(real)
}

/// A sibling of a missing path whose name is close to it, to suggest as a fix.
fn similar_entry(missing: &Path, expect: Expect) -> Option<String> {
    let name = missing.file_name()?.to_str()?;
    let dir = missing.parent()?;
    let entries: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| match expect {
            Expect::File => e.path().is_file(),
            Expect::Directory => e.path().is_dir(),
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .take(1000)
        .collect();
    suggest::closest(name, entries.iter().map(String::as_str)).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalization() {
        assert_eq!(
            normalize_lexically(Path::new("/r/.cursor/../Dockerfile")),
            PathBuf::from("/r/Dockerfile")
        );
        assert_eq!(normalize_lexically(Path::new("/r/./a/./b")), PathBuf::from("/r/a/b"));
        assert_eq!(normalize_lexically(Path::new("/r/../../..")), PathBuf::from("/"));
    }

    #[test]
    fn find_walks_up_to_the_config_and_not_past_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join(".cursor")).unwrap();
        std::fs::create_dir_all(repo.join("src/deep")).unwrap();
        std::fs::write(repo.join(".cursor/environment.json"), "{}").unwrap();
        let (root, file) = find(&repo.join("src/deep"));
        assert_eq!((root.as_path(), file), (repo.as_path(), repo.join(".cursor/environment.json")));
        // A repository without a config: its root, not a config above it.
        std::fs::create_dir_all(dir.path().join(".cursor")).unwrap();
        std::fs::write(dir.path().join(".cursor/environment.json"), "{}").unwrap();
        std::fs::remove_file(repo.join(".cursor/environment.json")).unwrap();
        let (root, file) = find(&repo.join("src"));
        assert_eq!((root.as_path(), file), (repo.as_path(), repo.join(".cursor/environment.json")));
    }

    /// Cursor's rules: `dockerfile` and `context` are relative to `.cursor/`, the context
    /// defaults to `.cursor/`, and `.`, `./` and `..` all mean the repository root.
    #[test]
    fn context_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let repo = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(repo.join(".cursor/sub")).unwrap();
        std::fs::write(repo.join(".cursor/Dockerfile"), "FROM scratch\n").unwrap();
        let file = repo.join(".cursor/environment.json");
        let cases = [
            (r#""context": ".""#, repo.clone()),
            (r#""context": "./""#, repo.clone()),
            (r#""context": "..""#, repo.clone()),
            (r#""context": "sub""#, repo.join(".cursor/sub")),
            ("", repo.join(".cursor")),
        ];
        for (context, expected) in cases {
            let comma = if context.is_empty() { "" } else { ", " };
            std::fs::write(&file, format!(r#"{{"build": {{"dockerfile": "Dockerfile"{comma}{context}}}}}"#))
                .unwrap();
            let loaded = load(&file, None);
            assert!(!loaded.has_errors(), "{context}: {:?}", loaded.diagnostics);
            let paths = loaded.paths.unwrap();
            assert_eq!(paths.context.as_deref(), Some(expected.as_path()), "{context}");
            assert_eq!(
                paths.dockerfile.as_deref(),
                Some(repo.join(".cursor/Dockerfile").as_path()),
                "{context}"
            );
        }
        // `../..` is outside the repository, whatever `..` alone means.
        std::fs::write(&file, r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#).unwrap();
        assert!(load(&file, None).has_errors());
    }

    #[test]
    fn repo_root_is_the_parent_of_dot_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = dir.path().join(".cursor");
        std::fs::create_dir(&cursor).unwrap();
        assert_eq!(discover_repo_root(&cursor), dir.path());
    }

    #[test]
    fn reading_is_bounded_and_refuses_odd_files() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(dir.path(), None);
        assert!(loaded.diagnostics[0].message.contains("directory"));
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; usize::try_from(MAX_CONFIG_BYTES).unwrap() + 1]).unwrap();
        assert!(load(&big, None).diagnostics[0].message.contains("at most"));
        assert!(load(Path::new("/dev/null"), None).diagnostics[0].message.contains("not a regular file"));
        let missing = load(&dir.path().join("nope.json"), None);
        assert!(missing.diagnostics[0].message.contains("does not exist"));
    }
}
