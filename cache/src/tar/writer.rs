//! Writing one entry's header in a single fixed style, for entries envbuild renames (an
//! archive of one directory rebased to its place in the root file system).
//!
//! The style is POSIX ustar, with a PAX extended header only for what ustar cannot hold (a long
//! name or link target, a number out of range, extended attributes), records in sorted order.
//! The same entry always gives the same bytes. User and group names are left empty: envbuild
//! restores numeric ids, as `docker export` streams are read.

use super::header::BLOCK;
use super::reader::{Entry, EntryKind};

/// Largest value of an 8-byte octal field (mode, uid, gid): seven digits.
const MAX_SMALL: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime): eleven digits.
const MAX_LARGE: u64 = 0o77_777_777_777;

/// The header blocks of `entry` (a PAX extended header first when needed). Directories are
/// named with a trailing `/`.
pub fn encode_header(entry: &Entry) -> Vec<u8> {
    let mut name = entry.path.clone();
    if entry.kind == EntryKind::Directory && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let link = entry.link.clone().unwrap_or_default();
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let split = split_name(&name);
    if split.is_none() {
        pax.push((b"path".to_vec(), name.clone()));
    }
    if link.len() > 100 {
        pax.push((b"linkpath".to_vec(), link.clone()));
    }
    let size = if entry.kind == EntryKind::File { entry.size } else { 0 };
    for (key, value, max) in
        [("size", size, MAX_LARGE), ("uid", entry.uid, MAX_SMALL), ("gid", entry.gid, MAX_SMALL)]
    {
        if value > max {
            pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
        }
    }
    let mtime_fits = u64::try_from(entry.mtime).is_ok_and(|m| m <= MAX_LARGE);
    if !mtime_fits {
        pax.push((b"mtime".to_vec(), entry.mtime.to_string().into_bytes()));
    }
    for (key, value) in &entry.xattrs {
        let mut name = b"SCHILY.xattr.".to_vec();
        name.extend_from_slice(key);
        pax.push((name, value.clone()));
    }
    pax.sort();

    let mut out = Vec::with_capacity(BLOCK * 3);
    if !pax.is_empty() {
        let records = pax_records(&pax);
        let mut block = [0u8; BLOCK];
        put_bytes(&mut block[0..100], b"././@PaxHeader");
        put_octal(&mut block[100..108], 0o644);
        put_octal(&mut block[108..116], 0);
        put_octal(&mut block[116..124], 0);
        put_octal(&mut block[124..136], records.len() as u64);
        put_octal(&mut block[136..148], 0);
        block[156] = b'x';
        finish(&mut block);
        out.extend_from_slice(&block);
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let mut block = [0u8; BLOCK];
    match split {
        Some((prefix, rest)) => {
            put_bytes(&mut block[0..100], rest);
            put_bytes(&mut block[345..500], prefix);
        }
        // The PAX `path` record holds the name; the ustar field keeps a recognisable tail.
        None => put_bytes(&mut block[0..100], tail(&name, 100)),
    }
    put_octal(&mut block[100..108], u64::from(entry.mode & 0o7777));
    put_octal(&mut block[108..116], entry.uid.min(MAX_SMALL));
    put_octal(&mut block[116..124], entry.gid.min(MAX_SMALL));
    put_octal(&mut block[124..136], size.min(MAX_LARGE));
    put_octal(&mut block[136..148], if mtime_fits { entry.mtime.unsigned_abs() } else { 0 });
    block[156] = match entry.kind {
        EntryKind::File => b'0',
        EntryKind::Hardlink => b'1',
        EntryKind::Symlink => b'2',
        EntryKind::Char => b'3',
        EntryKind::Block => b'4',
        EntryKind::Directory => b'5',
        EntryKind::Fifo => b'6',
    };
    put_bytes(&mut block[157..257], tail(&link, 100));
    if matches!(entry.kind, EntryKind::Char | EntryKind::Block) {
        put_octal(&mut block[329..337], u64::from(entry.dev_major).min(MAX_SMALL));
        put_octal(&mut block[337..345], u64::from(entry.dev_minor).min(MAX_SMALL));
    }
    finish(&mut block);
    out.extend_from_slice(&block);
    out
}

/// Zero bytes that pad `size` bytes of data to a whole block.
pub fn padding(size: u64) -> usize {
    // Less than a block, so it fits.
    let rest = usize::try_from(size % BLOCK as u64).unwrap_or(0);
    if rest == 0 { 0 } else { BLOCK - rest }
}

/// `(prefix, name)` when ustar's two fields can hold `name`.
fn split_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    // Split at a `/` leaving at most 155 bytes before it and 1 to 100 after it. A trailing
    // `/` (a directory) is not a place to split.
    let body = name.strip_suffix(b"/").unwrap_or(name);
    (0..body.len())
        .rev()
        .filter(|&i| body[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&name[..i], &name[i + 1..]))
}

fn tail(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(max)..]
}

/// PAX records: `"<length> <key>=<value>\n"`, where the length counts itself.
fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // space, `=`, newline
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    field[..value.len()].copy_from_slice(value);
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Magic, version and checksum.
fn finish(block: &mut [u8; BLOCK]) {
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::TarReader;

    fn entry(path: &[u8], kind: EntryKind) -> Entry {
        Entry {
            offset: 0,
            data_offset: 0,
            path: path.to_vec(),
            link: None,
            kind,
            size: 0,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            after_global_header: false,
        }
    }

    /// Encodes each entry (with `data` for files) and reads the stream back.
    fn round_trip(entries: &[(Entry, Vec<u8>)]) -> Vec<(Entry, Vec<u8>)> {
        let mut stream = Vec::new();
        for (e, data) in entries {
            stream.extend_from_slice(&encode_header(e));
            stream.extend_from_slice(data);
            stream.resize(stream.len() + padding(data.len() as u64), 0);
        }
        stream.extend_from_slice(&[0; 1024]);
        let mut reader = TarReader::new(stream.as_slice());
        let mut out = Vec::new();
        while let Some(e) = reader.next_entry().unwrap() {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read_data(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((e, data));
        }
        out
    }

    #[test]
    fn every_field_survives_a_round_trip_through_the_reader() {
        let long = [b"workspace/node_modules/".as_slice(), &b"x".repeat(90), b"/", &b"y".repeat(90)].concat();
        let very_long = b"d/".repeat(200);
        let mut file = entry(&long, EntryKind::File);
        file.size = 5;
        file.mode = 0o4755;
        let mut attrs = entry(b"etc/secure", EntryKind::File);
        attrs.xattrs = vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0xff, 0])];
        attrs.uid = 5_000_000;
        attrs.mtime = -5;
        let mut link = entry(b"usr/bin/tool", EntryKind::Symlink);
        link.link = Some(b"../lib/".repeat(30));
        let mut hard = entry(b"usr/bin/b", EntryKind::Hardlink);
        hard.link = Some(b"usr/bin/a".to_vec());
        let mut dev = entry(b"dev/null", EntryKind::Char);
        (dev.dev_major, dev.dev_minor) = (1, 3);
        let input = vec![
            (entry(b"workspace", EntryKind::Directory), Vec::new()),
            (file, b"hello".to_vec()),
            (entry(&very_long, EntryKind::Directory), Vec::new()),
            (attrs, Vec::new()),
            (link, Vec::new()),
            (hard, Vec::new()),
            (dev, Vec::new()),
            (entry(b"run/fifo", EntryKind::Fifo), Vec::new()),
        ];
        let output = round_trip(&input);
        assert_eq!(output.len(), input.len());
        for ((want, want_data), (got, got_data)) in input.iter().zip(&output) {
            let name = |p: &[u8]| p.strip_suffix(b"/").unwrap_or(p).to_vec();
            assert_eq!(name(&got.path), name(&want.path));
            assert_eq!(
                (got.kind, got.size, got.mode, got.uid, got.gid),
                (want.kind, want.size, want.mode, want.uid, want.gid)
            );
            assert_eq!((got.mtime, &got.link, &got.xattrs), (want.mtime, &want.link, &want.xattrs));
            assert_eq!((got.dev_major, got.dev_minor), (want.dev_major, want.dev_minor));
            assert_eq!(got_data, want_data);
        }
    }

    #[test]
    fn the_same_entry_gives_the_same_bytes_and_short_names_need_no_extension() {
        let mut e = entry(b"workspace/src/app.ts", EntryKind::File);
        e.size = 10;
        let header = encode_header(&e);
        assert_eq!(header.len(), BLOCK, "a plain entry is one ustar block");
        assert_eq!(header, encode_header(&e));
        let mut x = e.clone();
        x.xattrs = vec![(b"user.b".to_vec(), b"2".to_vec()), (b"user.a".to_vec(), b"1".to_vec())];
        let mut y = x.clone();
        y.xattrs.reverse();
        assert_eq!(encode_header(&x), encode_header(&y), "attributes are written in sorted order");
    }

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        for n in [1usize, 85, 86, 87, 990, 995, 996, 9990] {
            let records = pax_records(&[(b"path".to_vec(), vec![b'a'; n])]);
            let space = records.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&records[..space]).unwrap().parse().unwrap();
            assert_eq!(len, records.len(), "value of {n} bytes");
        }
    }
}
