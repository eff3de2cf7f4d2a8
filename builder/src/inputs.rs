//! The install inputs: the repository's files as git tracks them (optionally narrowed by
//! globs), which are both copied to `/workspace` and fingerprinted into the env key.
//!
//! Content is identified by git blob ids, so a warm build hashes almost nothing: files
//! unchanged since the index are taken from `git ls-files --stage`, and only files git reports
//! as modified (`git diff-files`) are read and hashed, the way git hashes them. A file therefore
//! has the same fingerprint whether its change is committed or not. Tracked files deleted from
//! the working tree are not inputs; submodules (gitlinks) are left out. Outside a git
//! repository, every file except `.git` is an input.

use std::path::Path;
use std::process::Command;

use crate::dockerignore::Globs;
use crate::error::{BuildError, Result};
use crate::tree::{self, FileEntry, FileSet, Kind};

/// The inputs of `repo`, narrowed to paths matching any of `globs` when there are some.
pub fn collect(repo: &Path, globs: &[String]) -> Result<FileSet> {
    let globs = Globs::new(globs)?;
    let wanted = |path: &str| globs.is_empty() || globs.matches(path);
    let entries = match git_files(repo)? {
        Some(files) => files,
        None => walk_all(repo)?,
    };
    Ok(FileSet::new(entries.into_iter().filter(|e| wanted(&e.path)).collect()))
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
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
        for item in
            std::fs::read_dir(&dir).map_err(BuildError::io(format!("cannot list `{}`", dir.display())))?
        {
            let item = item.map_err(BuildError::io(format!("cannot list `{}`", dir.display())))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            match tree::entry_for(path.clone(), item.path())? {
                Some(FileEntry { kind: Kind::Directory, .. }) => stack.push(path),
                Some(entry) => out.push(entry),
                None => {}
            }
        }
    }
    Ok(out)
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
}
