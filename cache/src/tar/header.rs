//! One 512-byte tar header block: checksum and fields.

use super::TarError;

pub(crate) const BLOCK: usize = 512;

/// The raw fields of one header block, before extension headers are applied.
#[derive(Debug, Clone)]
pub(crate) struct RawHeader {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
}

/// Whether the block is all zeros (half of the end-of-archive marker).
pub(crate) fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Parses a header block that is not all zeros.
pub(crate) fn parse(block: &[u8; BLOCK], offset: u64) -> Result<RawHeader, TarError> {
    verify_checksum(block, offset)?;
    let magic = &block[257..263];
    let version = &block[263..265];
    let is_ustar = magic == b"ustar\0";
    let is_gnu = magic == b"ustar " && version == b" \0";
    let mut name = cstr(&block[0..100]).to_vec();
    // POSIX ustar splits long names into prefix/name; GNU uses that area for other fields.
    if is_ustar && !is_gnu {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let number = |range: std::ops::Range<usize>, field: &'static str| -> Result<u64, TarError> {
        let value = parse_number(&block[range], field, offset)?;
        u64::try_from(value).map_err(|_| TarError::BadField {
            offset,
            field,
            detail: format!("{value} is negative"),
        })
    };
    let small = |range: std::ops::Range<usize>, field: &'static str| -> Result<u32, TarError> {
        let value = number(range, field)?;
        u32::try_from(value).map_err(|_| TarError::BadField {
            offset,
            field,
            detail: format!("{value} is too large"),
        })
    };
    let devices = matches!(block[156], b'3' | b'4');
    Ok(RawHeader {
        name,
        // Only permission and special bits matter; some writers put the file type in here too.
        mode: small(100..108, "mode")? & 0o7777,
        uid: number(108..116, "uid")?,
        gid: number(116..124, "gid")?,
        size: number(124..136, "size")?,
        mtime: parse_number(&block[136..148], "mtime", offset)?,
        typeflag: block[156],
        linkname: cstr(&block[157..257]).to_vec(),
        dev_major: if devices { small(329..337, "devmajor")? } else { 0 },
        dev_minor: if devices { small(337..345, "devminor")? } else { 0 },
    })
}

fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let stored = parse_number(&block[148..156], "chksum", offset)?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b.cast_signed());
    }
    // Some old writers summed signed chars; both forms are accepted, as GNU tar does.
    if stored == unsigned || stored == signed { Ok(()) } else { Err(TarError::BadChecksum { offset }) }
}

/// The bytes up to the first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    field.iter().position(|&b| b == 0).map_or(field, |end| &field[..end])
}

/// An octal (NUL- or space-terminated, space-padded) or base-256 number field.
pub(crate) fn parse_number(field: &[u8], name: &'static str, offset: u64) -> Result<i64, TarError> {
    let bad = |detail: String| TarError::BadField { offset, field: name, detail };
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // Base-256: big-endian two's complement in the remaining bits.
        let negative = field[0] & 0x40 != 0;
        let mut value: i128 = if negative { -1 } else { 0 };
        value = (value << 6) | i128::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = (value << 8) | i128::from(b);
            if !(i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&value) {
                return Err(bad("the base-256 number does not fit 64 bits".into()));
            }
        }
        return i64::try_from(value).map_err(|_| bad("the base-256 number does not fit 64 bits".into()));
    }
    let text = field.iter().skip_while(|&&b| b == b' ').take_while(|&&b| b != 0 && b != b' ');
    // An empty field is zero: some writers leave unused fields blank.
    let mut value: i64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad(format!(
                "`{}` is not an octal number",
                String::from_utf8_lossy(field).trim_end_matches('\0')
            )));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| bad("the number is too large".into()))?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0", "mode", 0).unwrap(), 0o644);
        assert_eq!(parse_number(b"   755 \0", "mode", 0).unwrap(), 0o755);
        assert_eq!(parse_number(b"\0\0\0\0\0\0\0\0", "mode", 0).unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(9_000_000_000u64).to_be_bytes());
        assert_eq!(parse_number(&big, "size", 0).unwrap(), 9_000_000_000);
        let negative = [0xff; 12];
        assert_eq!(parse_number(&negative, "mtime", 0).unwrap(), -1);
        assert!(parse_number(b"00009\0\0\0", "mode", 0).is_err());
    }
}
