//! Reading files of an environment's root file system from the host, as the environment sees
//! them and never beyond it.
//!
//! The environment owns its files: a `/var/log/envbuild/web.log` that is a symlink to
//! `/etc/shadow` must not make the host read its own `/etc/shadow`. Every path is resolved
//! with `openat2(RESOLVE_IN_ROOT)`, which treats the root as `/` for `..` and absolute
//! symlinks alike, magic links refused; only regular files are read, and no more than a
//! bound.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The contents of `path` (absolute, as the environment sees it) under `root`, at most `max`
/// bytes (the last `max` when it is longer, which is what logs want); `None` when there is
/// no regular file there.
pub fn read_tail(root: &Path, path: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let Some(mut file) = open(root, path)? else { return Ok(None) };
    let len = file.metadata()?.len();
    if len > max {
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(len - max))?;
    }
    let mut out = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    file.take(max).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// `path` under `root` opened for reading if it is a regular file.
pub fn open(root: &Path, path: &str) -> std::io::Result<Option<std::fs::File>> {
    let dir = match rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let relative = path.trim_start_matches('/');
    let fd = match rustix::fs::openat2(
        &dir,
        if relative.is_empty() { "." } else { relative },
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    Ok(file.metadata()?.is_file().then_some(file))
}

/// The names in directory `path` under `root`, resolved the same way; empty when it is not
/// a directory.
pub fn list(root: &Path, path: &str) -> std::io::Result<Vec<String>> {
    let dir = match rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let fd = match rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(&fd)?;
    while let Some(entry) = entries.read() {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root_and_only_files_are_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        std::fs::write(root.path().join("var/log/a.log"), b"0123456789").unwrap();
        let escape = outside.path().join("secret");
        std::os::unix::fs::symlink(&escape, root.path().join("var/log/abs.log")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../..".to_owned() + escape.to_str().unwrap(),
            root.path().join("var/log/rel.log"),
        )
        .unwrap();
        assert_eq!(read_tail(root.path(), "/var/log/a.log", 100).unwrap().unwrap(), b"0123456789");
        assert_eq!(read_tail(root.path(), "/var/log/a.log", 4).unwrap().unwrap(), b"6789");
        // Both symlinks resolve inside the root, where there is no such file.
        assert!(read_tail(root.path(), "/var/log/abs.log", 100).unwrap().is_none());
        assert!(read_tail(root.path(), "/var/log/rel.log", 100).unwrap().is_none());
        assert!(read_tail(root.path(), "/var/log", 100).unwrap().is_none(), "a directory is not read");
        assert_eq!(list(root.path(), "/var/log").unwrap(), vec!["a.log", "abs.log", "rel.log"]);
        assert!(list(root.path(), "/nowhere").unwrap().is_empty());
    }
}
