//! Sets of files the builder sends somewhere: the build context (to the engine) and the
//! repository (to `/workspace`). A [`FileSet`] knows each file's kind, mode and content hash,
//! which is what the cache keys fingerprint, and writes itself as a deterministic tar stream
//! (sorted, fixed modification times, chosen owner) so the same files always make the same
//! bytes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::engine::{ByteStream, EngineError};
use crate::error::{BuildError, Result};

/// Modification time written for every entry: 1980-01-01, the earliest time zip and some
/// tools accept, rather than the checkout's times, which would make every build differ.
pub const FIXED_MTIME: u64 = 315_532_800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { executable: bool },
    Symlink { target: String },
    Directory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, `/`-separated.
    pub path: String,
    pub kind: Kind,
    /// Content identity: a git blob id (`git:<hex>`) or `sha256:<hex>`; empty for directories.
    pub hash: String,
    /// Where the content is read from.
    pub source: PathBuf,
    /// The content itself, for a file made in memory (an inline Dockerfile); `source` is then
    /// only its name.
    pub inline: Option<std::sync::Arc<[u8]>>,
}

impl FileEntry {
    /// The fingerprint line the keys record: kind, mode and content.
    pub fn fingerprint(&self) -> String {
        match &self.kind {
            Kind::File { executable: true } => format!("file 755 {}", self.hash),
            Kind::File { executable: false } => format!("file 644 {}", self.hash),
            Kind::Symlink { target } => format!("symlink {target}"),
            Kind::Directory => "dir".to_owned(),
        }
    }
}

/// Files in sorted order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    pub entries: Vec<FileEntry>,
}

impl FileSet {
    pub fn new(mut entries: Vec<FileEntry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        Self { entries }
    }

    /// Path → fingerprint, for the key manifest.
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        self.entries.iter().map(|e| (e.path.clone(), e.fingerprint())).collect()
    }

    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.inline {
                Some(contents) => contents.len() as u64,
                None => std::fs::metadata(&e.source).map_or(0, |m| m.len()),
            })
            .sum()
    }

    /// Writes the set as a tar stream under `prefix` (`""` or `dir/`), every entry owned by
    /// `owner` (uid, gid), parent directories included.
    pub fn write_tar(&self, out: impl Write, prefix: &str, owner: (u64, u64)) -> std::io::Result<()> {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut dirs_written = std::collections::HashSet::new();
        let mut dir = |builder: &mut tar::Builder<_>, path: &str| -> std::io::Result<()> {
            if path.is_empty() || !dirs_written.insert(path.to_owned()) {
                return Ok(());
            }
            let mut header = header(tar::EntryType::Directory, 0o755, 0, owner);
            builder.append_data(&mut header, format!("{path}/"), std::io::empty())
        };
        if let Some(root) = prefix.strip_suffix('/') {
            dir(&mut builder, root)?;
        }
        for entry in &self.entries {
            let full = format!("{prefix}{}", entry.path);
            // Parents first, shallowest first.
            let mut parent = String::new();
            for component in full.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(component);
                dir(&mut builder, &parent)?;
            }
            match &entry.kind {
                Kind::Directory => dir(&mut builder, &full)?,
                Kind::Symlink { target } => {
                    let mut header = header(tar::EntryType::Symlink, 0o777, 0, owner);
                    builder.append_link(&mut header, &full, target)?;
                }
                Kind::File { executable } if entry.inline.is_some() => {
                    let contents = entry.inline.as_deref().unwrap_or_default();
                    let mode = if *executable { 0o755 } else { 0o644 };
                    let mut header = header(tar::EntryType::Regular, mode, contents.len() as u64, owner);
                    builder.append_data(&mut header, &full, contents)?;
                }
                Kind::File { executable } => {
                    let file = std::fs::File::open(&entry.source)?;
                    let len = file.metadata()?.len();
                    let mode = if *executable { 0o755 } else { 0o644 };
                    let mut header = header(tar::EntryType::Regular, mode, len, owner);
                    // A file that changes while being read would corrupt the stream: send
                    // exactly the length announced.
                    builder.append_data(&mut header, &full, file.take(len))?;
                }
            }
        }
        builder.finish()
    }

    /// The tar stream of [`Self::write_tar`], produced on a blocking thread.
    pub fn tar_stream(self, prefix: String, owner: (u64, u64)) -> ByteStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, EngineError>>(8);
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
            let result = self.write_tar(std::io::BufWriter::with_capacity(CHUNK, writer), &prefix, owner);
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(EngineError::Failed {
                    operation: "receive the files to send".into(),
                    source: Box::new(e),
                }));
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
    }
}

const CHUNK: usize = 256 * 1024;

fn header(kind: tar::EntryType, mode: u32, size: u64, (uid, gid): (u64, u64)) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(FIXED_MTIME);
    header
}

/// Sends what is written down a channel, in pieces.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::result::Result<Bytes, EngineError>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.tx.blocking_send(Ok(piece)).map_err(|_| std::io::Error::other("the receiver went away"))?;
        }
        Ok(())
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// sha256 of `text`, as `sha256:<hex>`.
pub fn hash_text(text: &str) -> String {
    envbuild_schema::Digest::of(text.as_bytes()).to_string()
}

/// sha256 of a file's content, as `sha256:<hex>`.
pub fn hash_file(path: &Path) -> Result<String> {
    let fail = || BuildError::io(format!("cannot read `{}`", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail())?;
    let mut hasher = envbuild_schema::digest::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(fail())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish().to_string())
}

/// The entry for `path` (on disk at `source`): files are hashed, symlinks keep their target,
/// anything else (sockets, devices) is `None`.
pub fn entry_for(path: String, source: PathBuf) -> Result<Option<FileEntry>> {
    let Some(mut entry) = entry_unhashed(path, source)? else { return Ok(None) };
    if matches!(entry.kind, Kind::File { .. }) {
        entry.hash = hash_file(&entry.source)?;
    }
    Ok(Some(entry))
}

/// [`entry_for`] without the content hash: for files only copied, never fingerprinted.
pub fn entry_unhashed(path: String, source: PathBuf) -> Result<Option<FileEntry>> {
    let meta = std::fs::symlink_metadata(&source)
        .map_err(BuildError::io(format!("cannot stat `{}`", source.display())))?;
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        let target = std::fs::read_link(&source)
            .map_err(BuildError::io(format!("cannot read `{}`", source.display())))?;
        Kind::Symlink { target: target.to_string_lossy().into_owned() }
    } else if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_file() {
        use std::os::unix::fs::PermissionsExt;
        Kind::File { executable: meta.permissions().mode() & 0o111 != 0 }
    } else {
        return Ok(None);
    };
    Ok(Some(FileEntry { path, kind, hash: String::new(), source, inline: None }))
}

/// A file made in memory, such as a Dockerfile given inline.
pub fn inline_entry(path: String, contents: &[u8]) -> FileEntry {
    FileEntry {
        hash: envbuild_schema::Digest::of(contents).to_string(),
        source: PathBuf::from(&path),
        path,
        kind: Kind::File { executable: false },
        inline: Some(std::sync::Arc::from(contents)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tars_are_deterministic_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/deep")).unwrap();
        std::fs::write(dir.path().join("src/deep/a.txt"), b"a").unwrap();
        std::fs::write(dir.path().join("b.sh"), b"#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("src", dir.path().join("link")).unwrap();
        let entries = ["src/deep/a.txt", "b.sh", "link"]
            .iter()
            .map(|p| entry_for((*p).to_owned(), dir.path().join(p)).unwrap().unwrap())
            .collect();
        let set = FileSet::new(entries);
        let mut first = Vec::new();
        set.write_tar(&mut first, "workspace/", (1000, 1000)).unwrap();
        let mut second = Vec::new();
        set.write_tar(&mut second, "workspace/", (1000, 1000)).unwrap();
        assert_eq!(first, second);
        let mut archive = tar::Archive::new(&first[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().uid().unwrap(), 1000);
                e.path().unwrap().display().to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "workspace/",
                "workspace/b.sh",
                "workspace/link",
                "workspace/src/",
                "workspace/src/deep/",
                "workspace/src/deep/a.txt"
            ]
        );
        assert_eq!(set.fingerprints()["link"], "symlink src");
    }
}
