//! Test support (feature `testing`): a raw tar writer that can write what no well-behaved tool
//! writes (`..` paths, absolute paths, links out of the tree, any order), for the hostile-input
//! and ordering tests of this crate and of the binary; and [`noise`], the incompressible bytes
//! every test uses for real sizes on the wire and in the store.

#![allow(clippy::missing_panics_doc)]

/// `len` deterministic bytes that do not compress (xorshift64), different for each `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// One entry to write.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub path: Vec<u8>,
    /// `b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'5'` directory, `b'6'` FIFO, ...
    pub typeflag: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl RawEntry {
    pub fn file(path: &str, data: &[u8]) -> Self {
        Self::new(path, b'0', data.to_vec(), b"", 0o644)
    }
    pub fn dir(path: &str) -> Self {
        Self::new(path, b'5', Vec::new(), b"", 0o755)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, b'2', Vec::new(), target.as_bytes(), 0o777)
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, b'1', Vec::new(), target.as_bytes(), 0o644)
    }
    pub fn new(path: &str, typeflag: u8, data: Vec<u8>, link: &[u8], mode: u32) -> Self {
        Self {
            path: path.as_bytes().to_vec(),
            typeflag,
            data,
            link: link.to_vec(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }
}

fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], entry: &RawEntry) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    let octal = |h: &mut [u8; 512], range: std::ops::Range<usize>, value: u64| {
        let width = range.len() - 1;
        let text = format!("{value:0width$o}");
        h[range.start..range.start + width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    };
    octal(&mut h, 100..108, u64::from(entry.mode));
    octal(&mut h, 108..116, entry.uid);
    octal(&mut h, 116..124, entry.gid);
    octal(&mut h, 124..136, size);
    octal(&mut h, 136..148, entry.mtime);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h, 148..155, sum);
    h[155] = b' ';
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// Writes `entries` in the order given, with PAX records for names and links over 100 bytes,
/// and the end-of-archive marker.
pub fn write_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut pax = Vec::new();
        if entry.path.len() > 100 {
            pax.extend(pax_record("path", &entry.path));
        }
        if entry.link.len() > 100 {
            pax.extend(pax_record("linkpath", &entry.link));
        }
        if !pax.is_empty() {
            out.extend_from_slice(&header(b"././@PaxHeader", b'x', pax.len() as u64, b"", entry));
            out.extend_from_slice(&pax);
            pad(&mut out);
        }
        out.extend_from_slice(&header(
            &entry.path,
            entry.typeflag,
            entry.data.len() as u64,
            &entry.link,
            entry,
        ));
        out.extend_from_slice(&entry.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}
