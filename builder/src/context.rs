//! The build context: the files of the context directory the engine receives, with
//! `.dockerignore` applied the way the Docker CLI applies it (the engine's API does not).
//!
//! Only what the Dockerfile reads is collected, hashed into the system key and sent: the
//! sources of its `COPY`, `ADD` and `RUN --mount=type=bind` (see `dockerfile::context_reads`),
//! plus the Dockerfile and `.dockerignore`. A context at the repository root therefore does
//! not put `.git/` (or `node_modules/`, or the source tree) into the system key unless a
//! `COPY` takes it, and directories no source can reach are not even walked. When a source
//! cannot be known before the build (`COPY . .`, a variable the build args leave unset), the
//! whole context is collected, as Docker would send it.
//!
//! Symlinks are sent as symlinks, never followed, so a link cannot pull files from outside
//! the context. Sockets and devices are skipped. The Dockerfile and `.dockerignore` are always
//! sent; a Dockerfile outside the context is sent as `.envbuild.Dockerfile`, as the Docker CLI
//! does with a random name.
//!
//! Unlike the Docker CLI, envbuild leaves `environment.json` itself out of the context. The
//! default context is the folder that holds it, and sending it would put the install command
//! and the terminals into the system key, so that editing them rebuilt the image; the parts of
//! it that matter to the image (`user`) feed the key directly.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::dockerfile::ContextReads;
use crate::dockerignore::DockerIgnore;
use crate::error::{BuildError, Result};
use crate::tree::{self, FileSet};

/// Where a Dockerfile from outside the context is placed in it.
pub(crate) const OUTSIDE_DOCKERFILE: &str = ".envbuild.Dockerfile";

#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The context directory.
    pub dir: PathBuf,
    pub files: FileSet,
    /// Whether the whole context is in `files`, and why; `None` when only the Dockerfile's
    /// sources are.
    pub whole: Option<String>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub(crate) enum Dockerfile {
    /// A file (absolute path), inside the context or not.
    File(PathBuf),
    /// The text itself (`build.dockerfileContents`), sent as `.envbuild.Dockerfile`.
    Inline(String),
}

/// One source of the Dockerfile, as a matcher of context paths.
#[derive(Debug)]
struct Source {
    /// Each component, as written (literal, or a glob of one component).
    components: Vec<Option<GlobMatcher>>,
    literal: Vec<String>,
    globstar: bool,
}

impl Source {
    fn new(source: &str) -> Result<Self> {
        let literal: Vec<String> = source.split('/').map(str::to_owned).collect();
        let components = literal
            .iter()
            .map(|c| {
                if c.contains(['*', '?', '[', '\\']) {
                    GlobBuilder::new(c)
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .map(|g| Some(g.compile_matcher()))
                        .map_err(|e| {
                            BuildError::Invalid(format!(
                                "the Dockerfile source `{source}` is not a valid pattern: {}",
                                e.kind()
                            ))
                        })
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { globstar: literal.iter().any(|c| c == "**"), components, literal })
    }

    fn component_matches(&self, i: usize, name: &str) -> bool {
        match &self.components[i] {
            Some(glob) => glob.is_match(name),
            None => self.literal[i] == name,
        }
    }

    /// Whether `path` is this source, or inside a directory it names.
    fn takes(&self, path: &[&str]) -> bool {
        self.globstar
            || (path.len() >= self.literal.len()
                && (0..self.literal.len()).all(|i| self.component_matches(i, path[i])))
    }

    /// Whether something under directory `dir` could be taken, so the walk must enter it.
    fn may_take_under(&self, dir: &[&str]) -> bool {
        self.globstar
            || self.takes(dir)
            || (dir.len() < self.literal.len() && (0..dir.len()).all(|i| self.component_matches(i, dir[i])))
    }
}

/// Which context paths are collected.
enum Selection {
    All,
    Sources(Vec<Source>),
}

impl Selection {
    fn takes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        match self {
            Selection::All => true,
            Selection::Sources(sources) => sources.iter().any(|s| s.takes(&parts)),
        }
    }

    fn enters(&self, dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').collect();
        match self {
            Selection::All => true,
            Selection::Sources(sources) => sources.iter().any(|s| s.may_take_under(&parts)),
        }
    }
}

/// Collects the context at `dir` for `dockerfile`: what `reads` names of it (or all of it),
/// leaving out the config file `config` (absolute paths).
pub(crate) fn collect(
    dir: &Path,
    dockerfile: &Dockerfile,
    config: &Path,
    reads: &ContextReads,
) -> Result<BuildContext> {
    let (selection, whole) = match reads {
        ContextReads::Everything(why) => (Selection::All, Some(why.clone())),
        ContextReads::Sources(sources) => {
            (Selection::Sources(sources.iter().map(|s| Source::new(s)).collect::<Result<_>>()?), None)
        }
    };
    let ignore_path = dir.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text, &ignore_path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(BuildError::io(format!("cannot read `{}`", ignore_path.display()))(e)),
    };
    let mut entries = Vec::new();
    walk(dir, "", &ignore, &selection, &mut entries)?;
    entries.retain(|e| e.source != config);
    let dockerfile_path = match dockerfile {
        Dockerfile::Inline(text) => {
            entries.retain(|e| e.path != OUTSIDE_DOCKERFILE);
            entries.push(tree::inline_entry(OUTSIDE_DOCKERFILE.to_owned(), text.as_bytes()));
            OUTSIDE_DOCKERFILE.to_owned()
        }
        Dockerfile::File(file) => {
            let inside = file.strip_prefix(dir).ok().map(|rel| rel.to_string_lossy().into_owned());
            if let Some(rel) = inside {
                if !entries.iter().any(|e: &tree::FileEntry| e.path == rel) {
                    entries.extend(tree::entry_for(rel.clone(), file.clone())?);
                }
                rel
            } else {
                entries.extend(tree::entry_for(OUTSIDE_DOCKERFILE.to_owned(), file.clone())?);
                OUTSIDE_DOCKERFILE.to_owned()
            }
        }
    };
    if ignore_path.exists() && !entries.iter().any(|e| e.path == ".dockerignore") {
        entries.extend(tree::entry_for(".dockerignore".to_owned(), ignore_path)?);
    }
    Ok(BuildContext {
        dir: dir.to_path_buf(),
        files: FileSet::new(entries),
        whole,
        dockerfile: dockerfile_path,
    })
}

fn walk(
    root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    selection: &Selection,
    out: &mut Vec<tree::FileEntry>,
) -> Result<()> {
    let dir: PathBuf = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(BuildError::io(format!("cannot list `{}`", dir.display())))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(BuildError::Invalid(format!(
                "`{}` in the build context has a name that is not UTF-8; rename it or exclude it in .dockerignore",
                dir.join(&name).display()
            )));
        };
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let source = dir.join(&name);
        let is_dir = std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_dir());
        if is_dir && !selection.enters(&path) {
            continue;
        }
        if ignore.excludes(&path) {
            if is_dir && ignore.may_include_under(&path) {
                walk(root, &path, ignore, selection, out)?;
            }
            continue;
        }
        let taken = selection.takes(&path);
        if is_dir {
            if taken {
                out.extend(tree::entry_for(path.clone(), source)?);
            }
            walk(root, &path, ignore, selection, out)?;
        } else if taken {
            out.extend(tree::entry_for(path, source)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_files_are_left_out_and_the_dockerfile_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/a.md"), "a").unwrap();
        std::fs::write(root.join("docs/keep.md"), "k").unwrap();
        std::fs::write(root.join("build.log"), "l").unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\ndocs\n!docs/keep.md\nDockerfile\n.dockerignore\n")
            .unwrap();
        std::fs::write(root.join("environment.json"), "{}").unwrap();
        let all = ContextReads::Everything("test".into());
        let context =
            collect(root, &Dockerfile::File(root.join("Dockerfile")), &root.join("environment.json"), &all)
                .unwrap();
        let paths: Vec<_> = context.files.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".dockerignore", "Dockerfile", "docs/keep.md"]);
        assert_eq!(context.dockerfile, "Dockerfile");

        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let context =
            collect(root, &Dockerfile::File(outside.path().join("Dockerfile")), Path::new("/none"), &all)
                .unwrap();
        assert_eq!(context.dockerfile, OUTSIDE_DOCKERFILE);
        let inline =
            collect(root, &Dockerfile::Inline("FROM scratch\n".into()), Path::new("/none"), &all).unwrap();
        assert_eq!(inline.dockerfile, OUTSIDE_DOCKERFILE);
        let mut tar = Vec::new();
        inline.files.write_tar(&mut tar, "", (0, 0)).unwrap();
        assert!(tar.windows(13).any(|w| w == b"FROM scratch\n"), "the inline Dockerfile is in the context");
    }

    #[test]
    fn only_what_the_dockerfile_reads_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "package.json",
            "package-lock.json",
            "src/app.ts",
            "apps/web/src/a.ts",
            "apps/api/src/b.ts",
            ".git/HEAD",
            "node_modules/x/index.js",
            "tools/a.tar.gz",
            "tools/b.txt",
        ] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), path).unwrap();
        }
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        let reads = ContextReads::Sources(
            ["package*.json", "apps/*/src", "tools/*.tar.gz"].into_iter().map(str::to_owned).collect(),
        );
        let context =
            collect(root, &Dockerfile::File(root.join("Dockerfile")), Path::new("/none"), &reads).unwrap();
        let paths: Vec<_> = context.files.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Dockerfile",
                "apps/api/src",
                "apps/api/src/b.ts",
                "apps/web/src",
                "apps/web/src/a.ts",
                "package-lock.json",
                "package.json",
                "tools/a.tar.gz"
            ]
        );
        assert!(context.whole.is_none());
    }
}
