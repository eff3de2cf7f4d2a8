//! The streaming tar reader: entries one at a time, data read on demand.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;

use super::TarError;
use super::header::{self, BLOCK, RawHeader};

/// Bounds on what one entry may make the reader hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A PAX extended header's data, or a GNU long name.
    pub max_extension: u64,
    /// Extended attributes on one entry.
    pub max_xattrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_extension: 1024 * 1024, max_xattrs: 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Fifo => "fifo",
        }
    }
}

/// One entry with its extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream offset of the entry's first header block (extension headers included).
    pub offset: u64,
    /// Stream offset of the entry's data.
    pub data_offset: u64,
    pub path: Vec<u8>,
    /// The target of a symlink or hardlink.
    pub link: Option<Vec<u8>>,
    pub kind: EntryKind,
    /// Bytes of data that follow the header.
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, in the order the stream gives them.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether a PAX global header preceded this entry.
    pub after_global_header: bool,
}

/// Reads a tar stream entry by entry. Every byte of the underlying reader is consumed in order
/// (headers, data, padding, and with [`TarReader::drain`] whatever follows the end marker), so
/// a reader underneath can observe the exact stream.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    pos: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Path of the current entry, for messages.
    current: Vec<u8>,
    ended: bool,
    /// Whether the end-of-archive marker was read (not just the end of the input).
    marked: bool,
    limits: Limits,
    scratch: Box<[u8]>,
}

/// What extension headers said about the next entry.
#[derive(Default)]
struct Pending {
    pax: BTreeMap<String, Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    after_global: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            current: Vec::new(),
            ended: false,
            marked: false,
            limits,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Whether the stream ended with its end-of-archive marker, rather than simply stopping at
    /// an entry boundary: a stream cut short (an export that died, a truncated file) ends
    /// without one.
    pub fn saw_end_marker(&self) -> bool {
        self.marked
    }

    /// Bytes consumed from the underlying reader so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, or `None` after the end-of-archive marker (or a clean end of input at
    /// an entry boundary). Unread data of the previous entry is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.ended {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut pending = Pending::default();
        let mut first_offset = None;
        loop {
            let offset = self.pos;
            let Some(block) = self.read_block()? else {
                // Input ended at an entry boundary without the end marker; tolerated, as GNU
                // tar does, unless extension headers were waiting for their entry.
                if first_offset.is_some() {
                    return Err(TarError::Truncated { offset, context: "the header of an entry".into() });
                }
                self.ended = true;
                return Ok(None);
            };
            if header::is_zero_block(&block) {
                // The end marker is two zero blocks; a single one is accepted as the end too.
                let _ = self.read_block()?;
                self.ended = true;
                self.marked = true;
                return Ok(None);
            }
            first_offset.get_or_insert(offset);
            let raw = header::parse(&block, offset)?;
            match raw.typeflag {
                b'x' | b'g' => {
                    let data = self.read_extension(&raw, offset, "PAX header")?;
                    let global = raw.typeflag == b'g';
                    pending.after_global |= global;
                    parse_pax(&data, offset, &mut pending, self.limits, global)?;
                }
                b'L' => {
                    pending.long_name = Some(trim_nul(self.read_extension(&raw, offset, "GNU long name")?));
                }
                b'K' => {
                    pending.long_link =
                        Some(trim_nul(self.read_extension(&raw, offset, "GNU long link name")?));
                }
                _ => return self.finish_entry(raw, first_offset.unwrap_or(offset), pending).map(Some),
            }
        }
    }

    fn finish_entry(&mut self, raw: RawHeader, offset: u64, mut pending: Pending) -> Result<Entry, TarError> {
        let kind = match raw.typeflag {
            b'0' | b'\0' | b'7' => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'S' => return Err(TarError::Unsupported { offset, what: "a GNU sparse file".into() }),
            other => {
                return Err(TarError::Unsupported {
                    offset,
                    what: format!("of type `{}`", char::from(other).escape_default()),
                });
            }
        };
        if pending.pax.keys().any(|k| k.starts_with("GNU.sparse.")) {
            return Err(TarError::Unsupported { offset, what: "a PAX sparse file".into() });
        }
        let path = pending.pax.remove("path").or(pending.long_name).unwrap_or(raw.name);
        let link = pending.pax.remove("linkpath").or(pending.long_link).unwrap_or(raw.linkname);
        let pax_number = |key: &'static str, value: u64| -> Result<u64, TarError> {
            match pending.pax.get(key) {
                Some(text) => {
                    std::str::from_utf8(text).ok().and_then(|t| t.trim().parse().ok()).ok_or_else(|| {
                        TarError::BadField {
                            offset,
                            field: key,
                            detail: "the PAX value is not a number".into(),
                        }
                    })
                }
                None => Ok(value),
            }
        };
        let size = pax_number("size", raw.size)?;
        let uid = pax_number("uid", raw.uid)?;
        let gid = pax_number("gid", raw.gid)?;
        let (mtime, mtime_nsec) = match pending.pax.get("mtime") {
            Some(text) => parse_pax_time(text).ok_or_else(|| TarError::BadField {
                offset,
                field: "mtime",
                detail: "the PAX value is not a time".into(),
            })?,
            None => (raw.mtime, 0),
        };
        if path.is_empty() {
            return Err(TarError::BadField {
                offset,
                field: "name",
                detail: "the entry has an empty name".into(),
            });
        }
        let link = matches!(kind, EntryKind::Symlink | EntryKind::Hardlink).then_some(link);
        // Whatever the type, `size` bytes of data follow (some writers give hard links data).
        let data_size = size;
        let data_offset = self.pos;
        self.remaining = data_size;
        self.padding = padding_for(data_size);
        self.current.clone_from(&path);
        Ok(Entry {
            offset,
            data_offset,
            path,
            link,
            kind,
            size: data_size,
            mode: raw.mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            dev_major: raw.dev_major,
            dev_minor: raw.dev_minor,
            xattrs: pending.xattrs,
            after_global_header: pending.after_global,
        })
    }

    /// Reads the current entry's data; `Ok(0)` at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated {
                offset: self.pos,
                context: format!("the data of `{}`", String::from_utf8_lossy(&self.current)),
            });
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Fills `buf` from the current entry's data, as far as the data goes; how much it filled.
    pub fn read_data_into(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_data(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    /// Skips the rest of the current entry's data and its padding.
    fn skip_rest(&mut self) -> Result<(), TarError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let skipped = loop {
            match self.read_data(&mut scratch) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.scratch = scratch;
        skipped?;
        while self.padding > 0 {
            let want = usize::try_from(self.padding).unwrap_or(BLOCK).min(BLOCK);
            let n = self.inner.read(&mut self.scratch[..want])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    context: "the padding after an entry".into(),
                });
            }
            self.pos += n as u64;
            self.padding -= n as u64;
        }
        Ok(())
    }

    /// Consumes everything after the end marker (zero padding to the record size, usually),
    /// returning how many bytes there were.
    pub fn drain(&mut self) -> Result<u64, TarError> {
        self.skip_rest()?;
        let mut total = 0;
        loop {
            let n = self.inner.read(&mut self.scratch)?;
            if n == 0 {
                return Ok(total);
            }
            self.pos += n as u64;
            total += n as u64;
        }
    }

    /// One block, `None` at a clean end of input, an error if the input ends inside it.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(TarError::Truncated { offset: self.pos, context: "a header block".into() });
            }
            filled += n;
            self.pos += n as u64;
        }
        Ok(Some(block))
    }

    fn read_extension(
        &mut self,
        raw: &RawHeader,
        offset: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, TarError> {
        if raw.size > self.limits.max_extension {
            return Err(TarError::TooLarge {
                offset,
                what,
                size: raw.size,
                limit: self.limits.max_extension,
            });
        }
        // Bounded just above, so the allocation is too.
        let mut data = vec![0u8; usize::try_from(raw.size).unwrap_or(0)];
        let mut filled = 0;
        while filled < data.len() {
            let n = self.inner.read(&mut data[filled..])?;
            if n == 0 {
                return Err(TarError::Truncated { offset: self.pos, context: format!("a {what}") });
            }
            filled += n;
            self.pos += n as u64;
        }
        self.padding = padding_for(raw.size);
        self.remaining = 0;
        self.skip_rest()?;
        Ok(data)
    }
}

fn padding_for(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(end) = data.iter().position(|&b| b == 0) {
        data.truncate(end);
    }
    data
}

/// `"%d %s=%s\n"` records; the length counts the whole record.
fn parse_pax(
    data: &[u8],
    offset: u64,
    pending: &mut Pending,
    limits: Limits,
    global: bool,
) -> Result<(), TarError> {
    let bad = |detail: &str| TarError::BadField { offset, field: "pax", detail: detail.to_owned() };
    let mut rest = data;
    while !rest.is_empty() {
        // Some writers pad the data with NULs.
        if rest[0] == 0 {
            break;
        }
        let space =
            rest.iter().take(20).position(|&b| b == b' ').ok_or_else(|| bad("a record has no length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("a record length is not a number"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("a record's length does not match its contents"));
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(|| bad("a record has no `=`"))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        let value = record[eq + 1..].to_vec();
        if global {
            // Global headers apply to every later entry; envbuild keeps them in the stream
            // but only honours per-entry values, which is what docker and GNU tar emit.
            continue;
        }
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            push_xattr(pending, name.as_bytes().to_vec(), value, offset, limits)?;
        } else if let Some(encoded) = key.strip_prefix("LIBARCHIVE.xattr.") {
            let name = percent_decode(encoded.as_bytes());
            let value = base64::engine::general_purpose::STANDARD
                .decode(&value)
                .map_err(|_| bad("a LIBARCHIVE.xattr value is not base64"))?;
            push_xattr(pending, name, value, offset, limits)?;
        } else {
            pending.pax.insert(key, value);
        }
    }
    Ok(())
}

fn push_xattr(
    pending: &mut Pending,
    name: Vec<u8>,
    value: Vec<u8>,
    offset: u64,
    limits: Limits,
) -> Result<(), TarError> {
    if pending.xattrs.len() >= limits.max_xattrs {
        return Err(TarError::TooLarge {
            offset,
            what: "count of extended attributes",
            size: pending.xattrs.len() as u64 + 1,
            limit: limits.max_xattrs as u64,
        });
    }
    if let Some(existing) = pending.xattrs.iter_mut().find(|(n, _)| *n == name) {
        existing.1 = value;
    } else {
        pending.xattrs.push((name, value));
    }
    Ok(())
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && i + 2 < input.len()
            && let Ok(byte) = u8::from_str_radix(&String::from_utf8_lossy(&input[i + 1..i + 3]), 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// `seconds[.fraction]`, possibly negative.
fn parse_pax_time(text: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ustar header for tests.
    pub(crate) fn header(name: &str, typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        format!("{len}{body}")
    }

    #[test]
    fn reads_entries_with_pax_and_data() {
        let pax = pax_record("path", &"d/".repeat(100))
            + &pax_record("SCHILY.xattr.user.k", "v")
            + &pax_record("mtime", "12.5");
        let mut tar = Vec::new();
        tar.extend_from_slice(&header("pax", b'x', pax.len() as u64));
        let mut padded = pax.into_bytes();
        padded.resize(padded.len().div_ceil(BLOCK) * BLOCK, 0);
        tar.extend_from_slice(&padded);
        tar.extend_from_slice(&header("short", b'0', 3));
        let mut data = b"abc".to_vec();
        data.resize(BLOCK, 0);
        tar.extend_from_slice(&data);
        tar.extend_from_slice(&header("link", b'2', 0));
        tar.extend_from_slice(&[0u8; 1024]);
        tar.extend_from_slice(&[0u8; 512]); // record padding after the end marker

        let mut reader = TarReader::new(&tar[..]);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.path, "d/".repeat(100).into_bytes());
        assert_eq!(first.offset, 0);
        assert_eq!((first.mtime, first.mtime_nsec), (12, 500_000_000));
        assert_eq!(first.xattrs, vec![(b"user.k".to_vec(), b"v".to_vec())]);
        let mut buf = [0u8; 10];
        assert_eq!(reader.read_data(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!(second.kind, EntryKind::Symlink);
        assert!(reader.next_entry().unwrap().is_none());
        assert_eq!(reader.drain().unwrap(), 512);
        assert_eq!(reader.position(), tar.len() as u64);
    }

    #[test]
    fn truncation_and_damage_are_errors() {
        let mut tar = header("f", b'0', 100).to_vec();
        tar.extend_from_slice(&[1u8; 50]);
        let mut reader = TarReader::new(&tar[..]);
        reader.next_entry().unwrap();
        assert!(matches!(reader.next_entry(), Err(TarError::Truncated { .. })));

        let mut damaged = header("f", b'0', 0);
        damaged[0] = b'g';
        assert!(matches!(
            TarReader::new(&damaged[..]).next_entry(),
            Err(TarError::BadChecksum { offset: 0 })
        ));

        let huge = header("x", b'x', 1 << 30);
        assert!(matches!(TarReader::new(&huge[..]).next_entry(), Err(TarError::TooLarge { .. })));
    }
}
