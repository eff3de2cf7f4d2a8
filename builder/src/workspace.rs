//! Bringing `/workspace` to a commit, as a checkout would, and giving processes their secrets
//! without leaving them anywhere: what the install container (and a booted environment)
//! receives before install runs.
//!
//! - The tracked files are uploaded over whatever `/workspace` holds (a fresh image, or the
//!   last checkpoint with its `node_modules/` and `.venv/`), and the files the previous commit
//!   tracked and this one does not are removed by the [`PRELUDE`]; untracked and ignored files
//!   stay, which is what makes an install from a checkpoint incremental. The list of tracked
//!   files goes with the snapshot, at [`TRACKED`], for the next build to compare with. A file
//!   the checkpoint already holds exactly as the upload would write it (content, mode, owner,
//!   time) is not sent again ([`changed_since`]): the upload, and what the install container
//!   is seen to change, stay in proportion to the commit.
//! - Package-manager caches (npm, pip, uv, yarn, pnpm, bun, go, composer) point at
//!   [`CACHE_DIR`], a volume of the build host, so a changed dependency downloads only what is
//!   new; the volume is not part of the container's file system, so the snapshot never holds
//!   a cache.
//! - Secrets go into a file on a tmpfs ([`SECRETS_FILE`]), written by a process inside the
//!   container from its standard input: never the container's configuration, an exec's
//!   environment, an image layer, or a file the export or a commit could take. The prelude
//!   reads them into the environment of install alone.

use std::collections::BTreeMap;

use bytes::Bytes;
use envbuild_schema::SecretString;
use futures::StreamExt;

use crate::engine::ByteStream;
use crate::tree::{FIXED_MTIME, FileEntry, FileSet, Kind};

/// Where the workspace is.
pub const WORKSPACE: &str = "/workspace";
/// The list of tracked files (one per line) of the commit `/workspace` was brought to.
pub const TRACKED: &str = "/.envbuild/tracked";
/// Files to remove before install: tracked before, not now.
pub const REMOVE: &str = "/.envbuild/remove";
/// The tmpfs that holds the secrets file while processes run.
pub const SECRETS_DIR: &str = "/run/envbuild";
/// The secrets file, readable by the environment's user only.
pub const SECRETS_FILE: &str = "/run/envbuild/secrets.env";
/// The package-manager caches' mount.
pub const CACHE_DIR: &str = "/var/cache/envbuild";

/// Runs before install (and every process that should see the secrets): removes what the
/// checkout removes, then exports the secrets of the secrets file, if there is one.
pub const PRELUDE: &str = r#"if [ -f /.envbuild/remove ]; then
  while IFS= read -r f; do rm -f -- "/workspace/$f"; done < /.envbuild/remove
  rm -f /.envbuild/remove
fi
if [ -r /run/envbuild/secrets.env ]; then set -a; . /run/envbuild/secrets.env; set +a; fi"#;

/// The command that writes the secrets file from standard input, run as root, leaving the
/// file to `uid:gid` alone (mode 0600). The tmpfs itself stays root's: Docker copies the mode
/// of a directory the image already has over a tmpfs's own.
pub fn write_secrets_command(uid: u64, gid: u64) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("umask 077 && cat > {SECRETS_FILE} && chown {uid}:{gid} {SECRETS_FILE}"),
    ]
}

/// `command` run with `sh -c` after the prelude, its text passed as an argument so no quoting
/// can change it.
pub fn with_prelude(command: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("{PRELUDE}\nexec sh -c \"$1\""), "envbuild".into(), command.into()]
}

/// The secrets file: `NAME='value'` lines, each value single-quoted (a quote inside becomes
/// `'\''`), so a value with spaces, newlines or `$` stays exactly as it is.
pub fn secrets_file(secrets: &BTreeMap<String, SecretString>) -> SecretString {
    let mut text = String::new();
    for (name, value) in secrets {
        text.push_str(name);
        text.push_str("='");
        text.push_str(&value.expose().replace('\'', r"'\''"));
        text.push_str("'\n");
    }
    SecretString::new(text)
}

/// The package-manager cache variables, each under [`CACHE_DIR`].
pub fn cache_env() -> Vec<String> {
    [
        ("npm_config_cache", "npm"),
        ("YARN_CACHE_FOLDER", "yarn"),
        ("npm_config_store_dir", "pnpm"),
        ("BUN_INSTALL_CACHE_DIR", "bun"),
        ("PIP_CACHE_DIR", "pip"),
        ("UV_CACHE_DIR", "uv"),
        ("POETRY_CACHE_DIR", "poetry"),
        ("GOMODCACHE", "go/mod"),
        ("GOCACHE", "go/build"),
        ("COMPOSER_CACHE_DIR", "composer"),
    ]
    .iter()
    .map(|(name, dir)| format!("{name}={CACHE_DIR}/{dir}"))
    .collect()
}

/// A tar entry of a directory or file, owned by `owner`.
fn entry(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    contents: Option<&[u8]>,
    mode: u32,
    owner: (u64, u64),
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(if contents.is_some() {
        tar::EntryType::Regular
    } else {
        tar::EntryType::Directory
    });
    header.set_size(contents.map_or(0, |c| c.len() as u64));
    header.set_mode(mode);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    header.set_mtime(crate::tree::FIXED_MTIME);
    // Appending to a Vec fails only for a path tar cannot encode; these are constants.
    let _ = builder.append_data(&mut header, path, contents.unwrap_or_default());
}

/// One path per line (a path with a newline in it cannot be listed, and is left out).
fn lines(paths: &mut dyn Iterator<Item = &str>) -> String {
    paths.filter(|p| !p.contains('\n')).fold(String::new(), |mut text, p| {
        text.push_str(p);
        text.push('\n');
        text
    })
}

/// What goes to `/` before the container starts: `.envbuild/` with the list of `tracked` files
/// (unless the checkpoint has the same list) and the files to remove, the cache mount owned by
/// the user, then the files of `send` (the tracked files, or those that changed) under
/// `workspace/`, all owned by `owner`.
pub fn upload(
    tracked: &FileSet,
    checkpoint: Option<&Checkpoint>,
    send: FileSet,
    owner: (u64, u64),
    remove: &[String],
    cache: bool,
) -> ByteStream {
    let mut builder = tar::Builder::new(Vec::new());
    let tracked = lines(&mut tracked.entries.iter().map(|e| e.path.as_str()));
    if checkpoint.is_none_or(|c| c.tracked != tracked) {
        entry(&mut builder, ".envbuild/", None, 0o755, owner);
        entry(&mut builder, TRACKED.trim_start_matches('/'), Some(tracked.as_bytes()), 0o644, owner);
    }
    let remove = lines(&mut remove.iter().map(String::as_str));
    if !remove.is_empty() {
        entry(&mut builder, REMOVE.trim_start_matches('/'), Some(remove.as_bytes()), 0o644, owner);
    }
    if cache {
        entry(&mut builder, &format!("{}/", CACHE_DIR.trim_start_matches('/')), None, 0o755, owner);
    }
    // Without the end-of-archive blocks, so the workspace's tar stream follows.
    let head = Bytes::from(builder.get_ref().clone());
    let rest = send.tar_stream("workspace/".to_owned(), owner);
    Box::pin(futures::stream::once(async move { Ok(head) }).chain(rest))
}

/// The `/workspace` of the checkpoint install starts from, as its snapshot holds it.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Paths under `/workspace`.
    pub files: BTreeMap<String, ParentEntry>,
    /// Its list of tracked files ([`TRACKED`]).
    pub tracked: String,
}

/// A path of the checkpoint's `/workspace`, as its snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentEntry {
    pub kind: ParentKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentKind {
    /// A regular file: its size and the xxh3-128 hash of its content.
    File {
        size: u64,
        xxh3: u128,
    },
    Symlink {
        target: String,
    },
    Directory,
    Other,
}

/// The tracked files the checkpoint (whose `/workspace` is `parent`, by path under it) does
/// not already hold exactly as the upload writes them, owned by `owner`. Files are read to
/// compare their contents; one that cannot be read counts as changed (the upload reports it).
pub fn changed_since(files: &FileSet, parent: &BTreeMap<String, ParentEntry>, owner: (u64, u64)) -> FileSet {
    let same = |entry: &FileEntry| -> bool {
        let Some(old) = parent.get(&entry.path) else { return false };
        if (old.uid, old.gid) != owner || old.mtime != FIXED_MTIME.cast_signed() {
            return false;
        }
        match (&entry.kind, &old.kind) {
            (Kind::File { executable }, ParentKind::File { size, xxh3 }) => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let content = match &entry.inline {
                    Some(inline) => Some(inline.to_vec()),
                    None => std::fs::read(&entry.source).ok(),
                };
                old.mode == mode
                    && content
                        .is_some_and(|c| c.len() as u64 == *size && xxhash_rust::xxh3::xxh3_128(&c) == *xxh3)
            }
            (Kind::Symlink { target }, ParentKind::Symlink { target: old_target }) => target == old_target,
            (Kind::Directory, ParentKind::Directory) => old.mode == 0o755,
            _ => false,
        }
    };
    FileSet::new(files.entries.iter().filter(|e| !same(e)).cloned().collect())
}

/// The files tracked in a parent and not in `now`: what a checkout from it removes.
pub fn removed(parent: &str, now: &FileSet) -> Vec<String> {
    let current: std::collections::HashSet<&str> = now.entries.iter().map(|e| e.path.as_str()).collect();
    parent.lines().filter(|p| !p.is_empty() && !current.contains(p)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_file_quotes_every_value() {
        let secrets = BTreeMap::from([
            ("A".to_owned(), SecretString::new("it's $HOME\nline two".into())),
            ("B".to_owned(), SecretString::new("plain".into())),
        ]);
        let file = secrets_file(&secrets);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}\nprintf '%s|%s' \"$A\" \"$B\"", file.expose()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's $HOME\nline two|plain");
    }

    #[test]
    fn the_prelude_removes_what_a_checkout_removes_and_runs_the_command_as_written() {
        let root = tempfile::tempdir().unwrap();
        let prelude = PRELUDE
            .replace("/workspace", &root.path().join("w").display().to_string())
            .replace("/.envbuild", &root.path().join("e").display().to_string());
        std::fs::create_dir_all(root.path().join("w/src")).unwrap();
        std::fs::create_dir_all(root.path().join("e")).unwrap();
        for f in ["w/src/old.ts", "w/keep.ts", "w/node_modules_file"] {
            std::fs::write(root.path().join(f), "x").unwrap();
        }
        std::fs::write(root.path().join("e/remove"), "src/old.ts\ngone-already.txt\n").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{prelude}\nexec sh -c \"$1\""))
            .args(["envbuild", "echo \"$0 kept\" 'quotes' ; exit 3"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sh kept quotes\n");
        assert!(!root.path().join("w/src/old.ts").exists());
        assert!(root.path().join("w/keep.ts").exists() && root.path().join("w/node_modules_file").exists());
        assert!(!root.path().join("e/remove").exists());
    }

    #[test]
    fn removed_is_what_the_parent_tracked_and_now_is_gone() {
        let now = FileSet::new(vec![crate::tree::inline_entry("a".into(), b"")]);
        assert_eq!(removed("a\nb\n", &now), ["b"]);
    }
}
