//! The canonical order of a root filesystem stream, and putting other streams in it.
//!
//! Canonical order is a depth-first walk in which each directory's entries are sorted bytewise
//! by name: the order of `docker export` and `tar --sort=name`. It is *not* a sort of whole
//! paths (`a/z` comes before `a.txt`), but it is exactly a bytewise sort of the paths with `/`
//! replaced by NUL, because NUL sorts below every byte a name can hold. That is the
//! [`CanonicalKey`]: components without `.` and empty ones, joined with NUL (the root is empty).
//!
//! [`reorder`] puts any other stream in canonical order: it copies the input into a spill file
//! (in memory up to a limit, then on disk), notes where each entry's bytes lie, sorts, and
//! replays the entries' bytes verbatim in the new order. A path that occurs twice keeps its
//! last occurrence, as extracting the original would.

use std::io::{Read, Seek, SeekFrom, Write};

use super::header::BLOCK;
use super::{TarError, TarReader};

/// Sort key of a path in canonical order.
pub type CanonicalKey = Vec<u8>;

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

pub fn canonical_key(path: &[u8]) -> CanonicalKey {
    let mut key = Vec::with_capacity(path.len());
    for (i, component) in components(path).enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(component);
    }
    key
}

/// The path as the table of contents shows it: no `./` prefix or trailing `/`; `.` for the root.
pub fn display_path(path: &[u8]) -> Vec<u8> {
    let joined = components(path).collect::<Vec<_>>().join(&b'/');
    if joined.is_empty() { b".".to_vec() } else { joined }
}

/// Bytes held in memory before the spill moves to a temporary file.
const SPILL_IN_MEMORY: usize = 64 * 1024 * 1024;

/// A stream in canonical order, replayed from a spill of the input.
#[derive(Debug)]
pub struct Reordered {
    spill: tempfile::SpooledTempFile,
    /// `[start, end)` byte ranges of the spill, in canonical order.
    ranges: Vec<(u64, u64)>,
    next: usize,
    left_in_range: u64,
    trailer_left: usize,
    /// Entries in the input, and how many of them later duplicates replaced.
    pub entries: usize,
    pub replaced: usize,
}

/// Copies every byte it reads into the spill.
struct Tee<'a, R> {
    inner: R,
    spill: &'a mut tempfile::SpooledTempFile,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.spill.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Reads `input` to its end and returns it in canonical order. `spill_dir` holds the spill
/// file once it outgrows memory.
pub fn reorder<R: Read>(input: R, spill_dir: &std::path::Path) -> Result<Reordered, TarError> {
    let mut spill = tempfile::SpooledTempFile::new_in(SPILL_IN_MEMORY, spill_dir);
    let mut index: Vec<(CanonicalKey, u64, u64)> = Vec::new();
    {
        let mut reader = TarReader::new(Tee { inner: input, spill: &mut spill });
        while let Some(entry) = reader.next_entry()? {
            if entry.after_global_header {
                return Err(TarError::Unsupported {
                    offset: entry.offset,
                    what: "preceded by a PAX global header in a stream that is not in canonical order".into(),
                });
            }
            let end =
                entry.data_offset + entry.size + (BLOCK as u64 - entry.size % BLOCK as u64) % BLOCK as u64;
            index.push((canonical_key(&entry.path), entry.offset, end));
        }
        // The replay ends with a marker of its own; the input must have had one.
        if !reader.saw_end_marker() {
            return Err(TarError::NoEndMarker { offset: reader.position() });
        }
        reader.drain()?;
    }
    let entries = index.len();
    // Stable: equal keys keep input order, so the last of a run is the last occurrence.
    index.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(index.len());
    for (i, (key, start, end)) in index.iter().enumerate() {
        if index.get(i + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        ranges.push((*start, *end));
    }
    let replaced = entries - ranges.len();
    spill.seek(SeekFrom::Start(0))?;
    Ok(Reordered { spill, ranges, next: 0, left_in_range: 0, trailer_left: 2 * BLOCK, entries, replaced })
}

impl Read for Reordered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.left_in_range == 0 {
            let Some(&(start, end)) = self.ranges.get(self.next) else {
                // The end-of-archive marker: two zero blocks.
                let n = self.trailer_left.min(buf.len());
                buf[..n].fill(0);
                self.trailer_left -= n;
                return Ok(n);
            };
            self.next += 1;
            self.spill.seek(SeekFrom::Start(start))?;
            self.left_in_range = end - start;
        }
        let want = usize::try_from(self.left_in_range).unwrap_or(usize::MAX).min(buf.len());
        let n = self.spill.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the spill file ended early"));
        }
        self.left_in_range -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_docker_export() {
        let mut paths: Vec<&[u8]> = vec![b"a.txt", b"a/z", b"./", b"a/", b"b", b"a/b/c", b"A"];
        paths.sort_by_key(|p| canonical_key(p));
        let shown: Vec<String> =
            paths.iter().map(|p| String::from_utf8_lossy(&display_path(p)).into_owned()).collect();
        assert_eq!(shown, [".", "A", "a", "a/b/c", "a/z", "a.txt", "b"]);
    }

    #[test]
    fn display_paths() {
        assert_eq!(display_path(b"./usr/bin/"), b"usr/bin");
        assert_eq!(display_path(b"/etc//passwd"), b"etc/passwd");
        assert_eq!(display_path(b"./"), b".");
    }
}
