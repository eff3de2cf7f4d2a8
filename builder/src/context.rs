//! The build context: the files of the context directory the engine receives, with
//! `.dockerignore` applied the way the Docker CLI applies it (the engine's API does not).
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

/// Collects the context at `dir` for `dockerfile`, leaving out the config file `config`
/// (absolute paths).
pub(crate) fn collect(dir: &Path, dockerfile: &Dockerfile, config: &Path) -> Result<BuildContext> {
    let ignore_path = dir.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text, &ignore_path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(BuildError::io(format!("cannot read `{}`", ignore_path.display()))(e)),
    };
    let mut entries = Vec::new();
    walk(dir, "", &ignore, &mut entries)?;
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
    Ok(BuildContext { dir: dir.to_path_buf(), files: FileSet::new(entries), dockerfile: dockerfile_path })
}

fn walk(root: &Path, rel: &str, ignore: &DockerIgnore, out: &mut Vec<tree::FileEntry>) -> Result<()> {
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
        if ignore.excludes(&path) {
            if is_dir && ignore.may_include_under(&path) {
                walk(root, &path, ignore, out)?;
            }
            continue;
        }
        if is_dir {
            out.extend(tree::entry_for(path.clone(), source)?);
            walk(root, &path, ignore, out)?;
        } else {
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
        let context =
            collect(root, &Dockerfile::File(root.join("Dockerfile")), &root.join("environment.json"))
                .unwrap();
        let paths: Vec<_> = context.files.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".dockerignore", "Dockerfile", "docs/keep.md"]);
        assert_eq!(context.dockerfile, "Dockerfile");

        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let context =
            collect(root, &Dockerfile::File(outside.path().join("Dockerfile")), Path::new("/none")).unwrap();
        assert_eq!(context.dockerfile, OUTSIDE_DOCKERFILE);
        let inline = collect(root, &Dockerfile::Inline("FROM scratch\n".into()), Path::new("/none")).unwrap();
        assert_eq!(inline.dockerfile, OUTSIDE_DOCKERFILE);
        let mut tar = Vec::new();
        inline.files.write_tar(&mut tar, "", (0, 0)).unwrap();
        assert!(tar.windows(13).any(|w| w == b"FROM scratch\n"), "the inline Dockerfile is in the context");
    }
}
