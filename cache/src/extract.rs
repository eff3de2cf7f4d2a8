//! Safe extraction of a tar stream into a directory.
//!
//! Whatever the stream holds, nothing is written, chmodded, chowned or linked outside the
//! root directory:
//! - every path is split into components; absolute paths, `..` components and empty names are
//!   refused (a refused entry is an error naming it, never a silent skip);
//! - directories are walked one component at a time from an open descriptor of the root with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink (or a file) in the middle of a path is
//!   refused instead of followed; the walk caches the open directories of the current path,
//!   which in canonical order makes each entry cost a few system calls;
//! - the final component is created relative to its parent's descriptor with `O_EXCL |
//!   O_NOFOLLOW` (files), `symlinkat`, `mknodat` or `linkat` without `AT_SYMLINK_FOLLOW`;
//!   metadata is set through the new descriptor or with `AT_SYMLINK_NOFOLLOW`;
//! - hard link targets are resolved the same way, inside the root; a link to an entry that
//!   comes later in the stream is made at the end.
//!
//! Symlinks are created exactly as stored (absolute targets included) and never followed.
//! Ownership (numeric uid/gid) is restored when running as root; then the mode (after chown,
//! which clears set-id bits), extended attributes (after chown, which clears
//! `security.capability`), and times. Directories are created private (0700) and get their
//! own mode, owner and times last, deepest first, so a read-only directory can still be filled
//! and its mtime is not disturbed by its children.
//!
//! [`extract_sharing`] also keeps regular files in a content-addressed store of files on the
//! same file system (the boot runtime's): a file whose bytes and metadata an object already
//! has is a hard link to it, never written; any other becomes an object after it is written.
//! An object's name is its sha256 with the mode, owner and time hard links share.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::tar::{Entry, EntryKind, TarReader};

/// An entry the extractor will not create, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing tar entry `{path}`: {reason}")]
pub struct Refused {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Restore numeric owners (needs root).
    pub same_owner: bool,
    /// Create device nodes (needs root); otherwise they are skipped with a warning.
    pub devices: bool,
    /// `restore::fetch_to_dir`: replace a target that exists and is not an empty directory
    /// (`--force`), once the new tree is complete.
    pub replace: bool,
}

impl Default for ExtractOptions {
    /// Owners and devices when running as root, as `tar` does.
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        Self { same_owner: root, devices: root, replace: false }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    pub bytes: u64,
    /// [`extract_sharing`]: files linked to an object that was there already, and the bytes
    /// of files that became new objects.
    pub shared_files: u64,
    pub new_object_bytes: u64,
    /// Things that could not be restored exactly (not an error: device nodes as non-root,
    /// extended attributes the file system refuses).
    pub warnings: Vec<String>,
}

/// Metadata applied at the end to a directory.
#[derive(Debug, Clone)]
struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DirMeta {
    fn of(entry: &Entry) -> Self {
        Self {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: (entry.mtime, entry.mtime_nsec),
            xattrs: entry.xattrs.clone(),
        }
    }

    /// A directory the stream never described (a parent implied by a deeper entry).
    fn implied() -> Self {
        Self { mode: 0o755, uid: 0, gid: 0, mtime: (0, 0), xattrs: Vec::new() }
    }
}

/// A path split into components.
type Components = Vec<Vec<u8>>;

struct DeferredLink {
    link: Components,
    target: Components,
    shown: String,
}

struct Extractor {
    root: OwnedFd,
    /// Open directories along the current path: (component, descriptor).
    stack: Vec<(Vec<u8>, OwnedFd)>,
    dirs: HashMap<Components, DirMeta>,
    root_meta: Option<DirMeta>,
    /// Hard links whose target comes later in the stream.
    deferred_links: Vec<DeferredLink>,
    options: ExtractOptions,
    report: ExtractReport,
    buf: Vec<u8>,
    objects: Option<Objects>,
    /// Regular files read but not yet placed: a run of them is hashed on two threads at once,
    /// then placed in stream order before any other entry is.
    pending: Vec<Pending>,
    pending_bytes: usize,
}

/// Files larger than this are not shared: held whole in memory to be hashed before writing.
const MAX_SHARED_FILE: u64 = 64 << 20;

/// The content-addressed store of files [`extract_sharing`] links from.
struct Objects {
    dir: std::path::PathBuf,
    /// Fan-out directories known to exist.
    made: std::collections::HashSet<String>,
}

impl Objects {
    /// The object holding bytes of `digest` with `entry`'s metadata: what a hard link shares.
    fn path(&self, digest: &crate::digest::Digest, entry: &Entry) -> (std::path::PathBuf, String) {
        let hex = digest.hex();
        let fan = hex[..2].to_owned();
        let name = format!(
            "{hex}.{:o}.{}.{}.{}.{}",
            entry.mode & 0o7777,
            entry.uid,
            entry.gid,
            entry.mtime,
            entry.mtime_nsec
        );
        (self.dir.join(&fan).join(name), fan)
    }
}

/// A file read whole, waiting for its batch to be hashed (see `Extractor::flush`).
struct Pending {
    entry: Entry,
    data: Vec<u8>,
}

/// A batch is hashed once it holds this many bytes or files.
const BATCH_BYTES: usize = 16 << 20;
const BATCH_FILES: usize = 256;

/// Extracts `input` into `root`, an existing, empty, private directory.
pub fn extract(input: &mut dyn Read, root: &Path, options: &ExtractOptions) -> Result<ExtractReport> {
    run(input, root, *options, None)
}

/// [`extract`], sharing regular files with the object store `objects` (see the module docs);
/// owners must be restored (`same_owner`), since they are part of what is shared.
pub fn extract_sharing(
    input: &mut dyn Read,
    root: &Path,
    options: &ExtractOptions,
    objects: &Path,
) -> Result<ExtractReport> {
    let objects = options
        .same_owner
        .then(|| Objects { dir: objects.to_path_buf(), made: std::collections::HashSet::new() });
    run(input, root, *options, objects)
}

fn run(
    input: &mut dyn Read,
    root: &Path,
    options: ExtractOptions,
    objects: Option<Objects>,
) -> Result<ExtractReport> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("cannot open `{}`", root.display()))(e.into()))?;
    let mut extractor = Extractor {
        root: root_fd,
        stack: Vec::new(),
        dirs: HashMap::new(),
        root_meta: None,
        deferred_links: Vec::new(),
        options,
        report: ExtractReport::default(),
        buf: vec![0; 256 * 1024],
        objects,
        pending: Vec::new(),
        pending_bytes: 0,
    };
    let mut tar = TarReader::new(input);
    while let Some(entry) = tar.next_entry()? {
        extractor.entry(&entry, &mut tar)?;
    }
    tar.drain()?;
    extractor.finish()?;
    Ok(extractor.report)
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn refuse(path: &[u8], reason: impl Into<String>) -> Error {
    Refused { path: shown(path), reason: reason.into() }.into()
}

/// Refuses a path that could leave the root it is extracted in (absolute, or with a `..`
/// component): what ingest checks of every name and hard-link target before storing it.
pub(crate) fn check_path(path: &[u8], what: &str) -> Result<()> {
    safe_components(path, what).map(drop)
}

/// The components of an archive path, refusing anything that could leave the root.
fn safe_components(path: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
    if path.first() == Some(&b'/') {
        return Err(refuse(path, format!("{what} is an absolute path")));
    }
    let mut out = Vec::new();
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(refuse(path, format!("{what} has a `..` component"))),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn os_error(path: &[u8], action: &str, errno: Errno) -> Error {
    Error::Io { context: format!("cannot {action} `{}`", shown(path)), source: errno.into() }
}

fn timestamps((secs, nanos): (i64, u32)) -> Timestamps {
    let t = Timespec { tv_sec: secs, tv_nsec: i64::from(nanos) };
    Timestamps { last_access: t, last_modification: t }
}

fn ids(uid: u64, gid: u64, path: &[u8]) -> Result<(rustix::fs::Uid, rustix::fs::Gid)> {
    let uid = u32::try_from(uid).map_err(|_| refuse(path, format!("its uid {uid} does not fit 32 bits")))?;
    let gid = u32::try_from(gid).map_err(|_| refuse(path, format!("its gid {gid} does not fit 32 bits")))?;
    Ok((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits & 0o7777)
}

impl Extractor {
    fn entry(&mut self, entry: &Entry, tar: &mut TarReader<&mut dyn Read>) -> Result<()> {
        let components = safe_components(&entry.path, "the path")?;
        if self.objects.is_some()
            && entry.kind == EntryKind::File
            && entry.xattrs.is_empty()
            && entry.size <= MAX_SHARED_FILE
            && !components.is_empty()
        {
            return self.queue(entry, tar);
        }
        self.flush()?;
        let Some((name, parents)) = components.split_last() else {
            if entry.kind != EntryKind::Directory {
                return Err(refuse(&entry.path, "the root of the tree must be a directory"));
            }
            self.root_meta = Some(DirMeta::of(entry));
            return Ok(());
        };
        let parent = self.descend(parents, &entry.path)?;
        match entry.kind {
            EntryKind::Directory => {
                match rustix::fs::mkdirat(&parent, name.as_slice(), Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let stat = rustix::fs::statat(&parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| os_error(&entry.path, "inspect", e))?;
                        if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                            != rustix::fs::FileType::Directory
                        {
                            replace(&parent, name, &entry.path)?;
                            rustix::fs::mkdirat(&parent, name.as_slice(), Mode::from_raw_mode(0o700))
                                .map_err(|e| os_error(&entry.path, "create directory", e))?;
                        }
                    }
                    Err(e) => return Err(os_error(&entry.path, "create directory", e)),
                }
                self.dirs.insert(components.clone(), DirMeta::of(entry));
                self.report.directories += 1;
            }
            EntryKind::File => {
                replace(&parent, name, &entry.path)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_slice(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| os_error(&entry.path, "create", e))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = tar.read_data(&mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(Error::io(format!("cannot write `{}`", shown(&entry.path))))?;
                    self.report.bytes += n as u64;
                }
                self.apply_fd(file.as_fd(), entry)?;
                self.report.files += 1;
            }
            EntryKind::Symlink => {
                let target = entry.link.as_deref().unwrap_or_default();
                replace(&parent, name, &entry.path)?;
                rustix::fs::symlinkat(target, &parent, name.as_slice())
                    .map_err(|e| os_error(&entry.path, "create symlink", e))?;
                self.apply_at(&parent, name, entry)?;
                self.report.symlinks += 1;
            }
            EntryKind::Hardlink => {
                let target = entry.link.as_deref().unwrap_or_default();
                let target_components = safe_components(target, "the hard link's target")?;
                if target_components.is_empty() {
                    return Err(refuse(&entry.path, "a hard link cannot point at the root"));
                }
                replace(&parent, name, &entry.path)?;
                if self.link(&target_components, &parent, name, &entry.path)? {
                    self.report.hardlinks += 1;
                } else {
                    self.deferred_links.push(DeferredLink {
                        link: components.clone(),
                        target: target_components,
                        shown: shown(&entry.path),
                    });
                }
            }
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                if entry.kind != EntryKind::Fifo && !self.options.devices {
                    self.report.warnings.push(format!(
                        "skipped device node `{}` (creating one needs root)",
                        shown(&entry.path)
                    ));
                    return Ok(());
                }
                let file_type = match entry.kind {
                    EntryKind::Char => rustix::fs::FileType::CharacterDevice,
                    EntryKind::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                replace(&parent, name, &entry.path)?;
                let dev = rustix::fs::makedev(entry.dev_major, entry.dev_minor);
                rustix::fs::mknodat(&parent, name.as_slice(), file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| os_error(&entry.path, "create node", e))?;
                self.apply_at(&parent, name, entry)?;
                if entry.kind == EntryKind::Fifo {
                    self.report.fifos += 1;
                } else {
                    self.report.devices += 1;
                }
            }
        }
        Ok(())
    }

    /// The descriptor of the directory `parents`, walking (and creating) it without following
    /// anything that is not a real directory.
    fn descend(&mut self, parents: &[Vec<u8>], path: &[u8]) -> Result<OwnedFd> {
        let common = self.stack.iter().zip(parents).take_while(|((name, _), want)| name == *want).count();
        self.stack.truncate(common);
        for (depth, component) in parents.iter().enumerate().skip(common) {
            let fd = {
                let dir = self.stack.last().map_or(&self.root, |(_, fd)| fd);
                open_dir(dir, component, path)?
            };
            let fd = if let Some(fd) = fd {
                fd
            } else {
                let dir = self.stack.last().map_or(&self.root, |(_, fd)| fd);
                rustix::fs::mkdirat(dir, component.as_slice(), Mode::from_raw_mode(0o700))
                    .map_err(|e| os_error(path, "create a parent directory of", e))?;
                self.dirs.entry(parents[..=depth].to_vec()).or_insert_with(DirMeta::implied);
                open_dir(dir, component, path)?.ok_or_else(|| refuse(path, "a parent directory vanished"))?
            };
            self.stack.push((component.clone(), fd));
        }
        let dir = self.stack.last().map_or(&self.root, |(_, fd)| fd);
        rustix::io::dup(dir).map_err(|e| os_error(path, "open a parent directory of", e))
    }

    /// Opens `components` (a path inside the root) without following anything; `None` if the
    /// last component does not exist.
    fn open_path(&self, components: &[Vec<u8>], path: &[u8]) -> Result<Option<OwnedFd>> {
        let mut fd = rustix::io::dup(&self.root).map_err(|e| os_error(path, "open", e))?;
        for component in components {
            match open_dir(&fd, component, path)? {
                Some(next) => fd = next,
                None => return Ok(None),
            }
        }
        Ok(Some(fd))
    }

    /// Links `name` in `parent` to `target`; `false` if the target does not exist yet.
    fn link(&self, target: &[Vec<u8>], parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<bool> {
        let (target_name, target_parents) =
            target.split_last().ok_or_else(|| refuse(path, "empty hard link target"))?;
        let Some(target_dir) = self.open_path(target_parents, path)? else { return Ok(false) };
        match rustix::fs::linkat(&target_dir, target_name.as_slice(), parent, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(os_error(path, "create hard link", e)),
        }
    }

    /// Reads a regular file whole into the pending batch; hashes and places the batch when it
    /// is full.
    fn queue(&mut self, entry: &Entry, tar: &mut TarReader<&mut dyn Read>) -> Result<()> {
        // Straight into a buffer of the declared size (bounded by MAX_SHARED_FILE).
        let mut data = vec![0u8; usize::try_from(entry.size).unwrap_or(0)];
        let filled = tar.read_data_into(&mut data)?;
        data.truncate(filled);
        self.pending_bytes += data.len();
        self.pending.push(Pending { entry: entry.clone(), data });
        if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_FILES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hashes the pending files (on two threads: hashing is most of the work of sharing), then
    /// places each in stream order, as if it had been placed when it was read.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let (first, second) = pending.split_at(pending.len().div_ceil(2));
        let hash =
            |part: &[Pending]| part.iter().map(|p| crate::digest::Digest::of(&p.data)).collect::<Vec<_>>();
        let digests = std::thread::scope(|scope| {
            let other = scope.spawn(|| hash(second));
            let mut digests = hash(first);
            // Hashing cannot fail; a panic there is a bug, passed on as one.
            digests.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            digests
        });
        for (Pending { entry, data }, digest) in pending.iter().zip(&digests) {
            let components = safe_components(&entry.path, "the path")?;
            let Some((name, parents)) = components.split_last() else { continue };
            let parent = self.descend(parents, &entry.path)?;
            replace(&parent, name, &entry.path)?;
            self.place_shared(&parent, name, entry, data, digest)?;
        }
        Ok(())
    }

    /// A regular file linked to its object, or written and made one.
    fn place_shared(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        entry: &Entry,
        data: &[u8],
        digest: &crate::digest::Digest,
    ) -> Result<()> {
        self.report.files += 1;
        self.report.bytes += data.len() as u64;
        let Some(objects) = &self.objects else { return Ok(()) };
        let (object, fan) = objects.path(digest, entry);
        match rustix::fs::linkat(rustix::fs::CWD, &object, parent, name, AtFlags::empty()) {
            Ok(()) => {
                self.report.shared_files += 1;
                return Ok(());
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(os_error(&entry.path, "link from the file store", e)),
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| os_error(&entry.path, "create", e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data).map_err(Error::io(format!("cannot write `{}`", shown(&entry.path))))?;
        self.apply_fd(file.as_fd(), entry)?;
        drop(file);
        if let Some(objects) = &mut self.objects
            && !objects.made.contains(&fan)
        {
            let dir = objects.dir.join(&fan);
            std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create `{}`", dir.display())))?;
            objects.made.insert(fan);
        }
        match rustix::fs::linkat(parent, name, rustix::fs::CWD, &object, AtFlags::empty()) {
            // Another extraction made the same object meanwhile: this copy stays its own.
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(os_error(&entry.path, "add to the file store", e)),
        }
        self.report.new_object_bytes += data.len() as u64;
        Ok(())
    }

    /// Owner, mode, extended attributes and times, through an open descriptor.
    fn apply_fd(&mut self, fd: std::os::fd::BorrowedFd<'_>, entry: &Entry) -> Result<()> {
        if self.options.same_owner {
            let (uid, gid) = ids(entry.uid, entry.gid, &entry.path)?;
            rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| os_error(&entry.path, "chown", e))?;
        }
        rustix::fs::fchmod(fd, mode(entry.mode)).map_err(|e| os_error(&entry.path, "chmod", e))?;
        for (name, value) in &entry.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                self.xattr_warning(&entry.path, name, e);
            }
        }
        rustix::fs::futimens(fd, &timestamps((entry.mtime, entry.mtime_nsec)))
            .map_err(|e| os_error(&entry.path, "set the times of", e))
    }

    /// The same for entries that cannot be opened (symlinks, devices, FIFOs), by name.
    fn apply_at(&mut self, parent: &OwnedFd, name: &[u8], entry: &Entry) -> Result<()> {
        if self.options.same_owner {
            let (uid, gid) = ids(entry.uid, entry.gid, &entry.path)?;
            rustix::fs::chownat(parent, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| os_error(&entry.path, "chown", e))?;
        }
        if entry.kind != EntryKind::Symlink {
            // Not a symlink (we just created it), so following is harmless here.
            rustix::fs::chmodat(parent, name, mode(entry.mode), AtFlags::empty())
                .map_err(|e| os_error(&entry.path, "chmod", e))?;
        }
        if !entry.xattrs.is_empty() {
            // lsetxattr by path; through /proc so the parent is the descriptor we walked to.
            let mut proc_path =
                format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(parent)).into_bytes();
            proc_path.extend_from_slice(name);
            for (attr, value) in &entry.xattrs {
                if let Err(e) =
                    rustix::fs::lsetxattr(proc_path.as_slice(), attr.as_slice(), value, XattrFlags::empty())
                {
                    self.xattr_warning(&entry.path, attr, e);
                }
            }
        }
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps((entry.mtime, entry.mtime_nsec)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| os_error(&entry.path, "set the times of", e))
    }

    fn xattr_warning(&mut self, path: &[u8], name: &[u8], errno: Errno) {
        self.report.warnings.push(format!(
            "could not set extended attribute `{}` on `{}`: {}",
            shown(name),
            shown(path),
            std::io::Error::from(errno)
        ));
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.stack.clear();
        for DeferredLink { link, target, shown: shown_path } in std::mem::take(&mut self.deferred_links) {
            let (name, parents) =
                link.split_last().ok_or_else(|| refuse(shown_path.as_bytes(), "empty link"))?;
            let parent = self
                .open_path(parents, shown_path.as_bytes())?
                .ok_or_else(|| refuse(shown_path.as_bytes(), "its directory vanished"))?;
            if !self.link(&target, &parent, name, shown_path.as_bytes())? {
                let target_shown = target.iter().map(|c| shown(c)).collect::<Vec<_>>().join("/");
                return Err(refuse(
                    shown_path.as_bytes(),
                    format!("it is a hard link to `{target_shown}`, which is not in the snapshot"),
                ));
            }
            self.report.hardlinks += 1;
        }
        let mut dirs: Vec<(Components, DirMeta)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for (components, meta) in dirs {
            let path = components.join(&b'/');
            let fd =
                self.open_path(&components, &path)?.ok_or_else(|| refuse(&path, "the directory vanished"))?;
            self.apply_dir(&fd, &path, &meta)?;
        }
        let root_meta = self.root_meta.take().unwrap_or(DirMeta { mode: 0o755, ..DirMeta::implied() });
        let root = rustix::io::dup(&self.root).map_err(|e| os_error(b".", "open", e))?;
        if root_meta.mtime == (0, 0) {
            // No root entry: keep the current time rather than 1970.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let meta = DirMeta {
                mtime: (i64::try_from(now.as_secs()).unwrap_or(0), now.subsec_nanos()),
                ..root_meta
            };
            return self.apply_dir(&root, b".", &meta);
        }
        self.apply_dir(&root, b".", &root_meta)
    }

    fn apply_dir(&mut self, fd: &OwnedFd, path: &[u8], meta: &DirMeta) -> Result<()> {
        if self.options.same_owner {
            let (uid, gid) = ids(meta.uid, meta.gid, path)?;
            rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| os_error(path, "chown", e))?;
        }
        rustix::fs::fchmod(fd, mode(meta.mode)).map_err(|e| os_error(path, "chmod", e))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                self.xattr_warning(path, name, e);
            }
        }
        rustix::fs::futimens(fd, &timestamps(meta.mtime)).map_err(|e| os_error(path, "set the times of", e))
    }
}

/// Makes room for a new entry at `name`: removes what is there unless it is a directory, which
/// cannot be replaced by something else.
fn replace(parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<()> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(os_error(path, "inspect", e)),
        Ok(stat) if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory => {
            Err(refuse(path, "it would replace a directory"))
        }
        Ok(_) => {
            rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(|e| os_error(path, "replace", e))
        }
    }
}

/// Opens `name` in `dir` as a directory without following symlinks; `None` if it does not exist.
fn open_dir(dir: &OwnedFd, name: &[u8], path: &[u8]) -> Result<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(refuse(
            path,
            format!(
                "`{}` on its path is a symlink or not a directory, and extraction never follows links",
                shown(name)
            ),
        )),
        Err(e) => Err(os_error(path, "open a directory on the path of", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        assert!(safe_components(b"/etc/passwd", "the path").is_err());
        assert!(safe_components(b"a/../../x", "the path").is_err());
        assert_eq!(safe_components(b"./a//b/", "the path").unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(safe_components(b"./", "the path").unwrap().is_empty());
    }

    #[test]
    fn sharing_links_equal_files_and_only_those() {
        use crate::testing::{RawEntry, write_tar};
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: sharing restores owners, which needs root");
            return;
        }
        let first = write_tar(&[
            RawEntry::dir("etc/"),
            RawEntry::file("etc/a", b"same bytes"),
            RawEntry::file("etc/b", b"first only"),
        ]);
        let second = write_tar(&[
            RawEntry::dir("etc/"),
            RawEntry::file("etc/a", b"same bytes"),
            RawEntry::file("etc/b", b"second only"),
            RawEntry::file("etc/c", b"same bytes"),
        ]);
        let work = tempfile::tempdir().unwrap();
        let objects = work.path().join("objects");
        let options = ExtractOptions::default();
        let mut reports = Vec::new();
        for (name, tar) in [("one", &first), ("two", &second)] {
            let root = work.path().join(name);
            std::fs::create_dir(&root).unwrap();
            reports.push(extract_sharing(&mut tar.as_slice(), &root, &options, &objects).unwrap());
        }
        let inode = |p: &str| std::fs::metadata(work.path().join(p)).unwrap().ino();
        // Equal bytes and metadata: one inode, in both trees and at both paths of the second.
        assert_eq!(inode("one/etc/a"), inode("two/etc/a"));
        assert_eq!(inode("two/etc/a"), inode("two/etc/c"));
        assert_ne!(inode("one/etc/b"), inode("two/etc/b"));
        assert_eq!(std::fs::read(work.path().join("two/etc/b")).unwrap(), b"second only");
        assert_eq!((reports[0].shared_files, reports[1].shared_files), (0, 2));
        assert_eq!(reports[1].new_object_bytes, b"second only".len() as u64);
    }
}
