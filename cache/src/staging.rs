//! Work in progress outside the store: the hidden directories and files a fetch fills beside
//! its target before renaming them into place.
//!
//! Each is a [`Staged`] guard, removed when dropped unless it was [`kept`](Staged::keep) (after
//! the rename): a failure, a cancelled future (Ctrl-C, SIGTERM) and a panic all leave nothing
//! behind. A process killed outright runs no destructor, so each path is also noted in a
//! journal directory of this host when the process names one ([`set_journal`]); [`sweep`]
//! (which `gc` runs) removes what processes that no longer run left behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where this process notes its staging paths, if anywhere.
static JOURNAL: OnceLock<PathBuf> = OnceLock::new();

/// Notes every staging path of this process in `dir` (created when needed), for [`sweep`].
/// Later calls are ignored: one journal per process.
pub fn set_journal(dir: PathBuf) {
    let _ = JOURNAL.set(dir);
}

/// A staging directory or file, removed on drop unless kept.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    note: Option<PathBuf>,
    kept: bool,
}

/// The directory `target` goes in, as an absolute path it can be renamed into: `target`'s
/// parent resolved (`a/../b` names `b` in the current directory), created if missing.
pub fn resolve(target: &Path) -> std::io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "name a file or directory, not `.` or `..`")
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    Ok(std::fs::canonicalize(&parent)?.join(name))
}

impl Staged {
    /// A new, private directory beside `target` (resolved by [`resolve`]), on the same file
    /// system so the final rename is atomic.
    pub fn dir_beside(target: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        Self::create(target, |path| std::fs::DirBuilder::new().mode(0o700).create(path))
            .map(|(staged, ())| staged)
    }

    /// A new, empty file beside `target`, and the file opened for writing.
    pub fn file_beside(target: &Path) -> std::io::Result<(Self, std::fs::File)> {
        use std::os::unix::fs::OpenOptionsExt;
        Self::create(target, |path| {
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
        })
    }

    /// Picks a fresh hidden name beside `target`, notes it in the journal, then makes it with
    /// `make` (which must fail if the path exists). The note comes first, so a process killed
    /// at any point leaves nothing the journal does not name; a note whose path was never
    /// made is swept like any other.
    fn create<T>(target: &Path, make: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<(Self, T)> {
        let target = resolve(target)?;
        let name = target.file_name().map_or_else(|| "fetch".into(), |n| n.to_string_lossy().into_owned());
        let parent = target.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        loop {
            let path = parent.join(format!(".{name}.envbuild-{:016x}", rand::random::<u64>()));
            let note = Self::note(&path);
            match make(&path) {
                Ok(made) => return Ok((Self { path, note, kept: false }, made)),
                Err(e) => {
                    if let Some(note) = note {
                        let _ = std::fs::remove_file(note);
                    }
                    // 64 random bits: a name already taken is as good as never seen twice.
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Notes `path` in this process's journal, if it has one; returns the note.
    fn note(path: &Path) -> Option<PathBuf> {
        let journal = JOURNAL.get()?;
        std::fs::create_dir_all(journal).ok()?;
        let note = journal.join(format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
        std::fs::write(&note, path.as_os_str().as_encoded_bytes()).ok()?;
        Some(note)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The work is in place (or about to be, by a rename of this path): nothing to remove.
    pub fn keep(mut self) -> PathBuf {
        self.kept = true;
        if let Some(note) = self.note.take() {
            let _ = std::fs::remove_file(note);
        }
        std::mem::take(&mut self.path)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = remove(&self.path) {
            tracing::warn!("cannot remove the staging path `{}`: {e}", self.path.display());
            return; // the note stays, for `sweep`
        }
        if let Some(note) = &self.note {
            let _ = std::fs::remove_file(note);
        }
    }
}

/// Removes a staging file or tree, one that may hold read-only directories, and one another
/// thread may still be writing into (the walk is retried).
pub fn remove(path: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..5 {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
            Ok(meta) if !meta.is_dir() => return std::fs::remove_file(path),
            Ok(_) => {}
        }
        last = remove_tree(path);
        if last.is_ok() {
            return Ok(());
        }
    }
    last
}

fn remove_tree(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    // Make every directory writable, then try again.
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    std::fs::remove_dir_all(path)
}

/// Removes the staging paths that processes no longer running left behind (their journal
/// notes name them); returns them.
pub fn sweep() -> Vec<PathBuf> {
    let Some(journal) = JOURNAL.get() else { return Vec::new() };
    let Ok(notes) = std::fs::read_dir(journal) else { return Vec::new() };
    let mut removed = Vec::new();
    for note in notes.flatten() {
        let name = note.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if alive(pid) {
            continue;
        }
        let Ok(bytes) = std::fs::read(note.path()) else { continue };
        let path = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
        // Only what this module makes: a hidden `.NAME.envbuild-*` path.
        let ours = path.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with('.') && n.contains(".envbuild-")
        });
        if ours && remove(&path).is_ok() {
            removed.push(path);
        }
        let _ = std::fs::remove_file(note.path());
    }
    removed
}

/// Whether process `pid` of this host is running.
pub fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
        // EPERM: it exists, and belongs to someone else.
        matches!(rustix::process::test_kill_process(pid), Ok(()) | Err(rustix::io::Errno::PERM))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_path_goes_unless_kept_and_resolve_names_the_real_place() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let staged = Staged::dir_beside(&target).unwrap();
        std::fs::create_dir_all(staged.path().join("a/b")).unwrap();
        let path = staged.path().to_path_buf();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with(".out.envbuild-"));
        drop(staged);
        assert!(!path.exists());
        let (staged, _file) = Staged::file_beside(&target).unwrap();
        let kept = staged.keep();
        assert!(kept.exists());
        std::fs::create_dir(root.path().join("x")).unwrap();
        assert_eq!(
            resolve(&root.path().join("x/../y")).unwrap(),
            root.path().canonicalize().unwrap().join("y")
        );
        assert!(resolve(Path::new("..")).is_err());
        assert!(alive(i32::try_from(std::process::id()).unwrap()));
    }
}
