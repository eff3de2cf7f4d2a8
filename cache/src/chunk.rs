//! One chunk on its way into and out of the store: hashing, zstd, and verification.
//!
//! A stored chunk is a single zstd frame of the raw bytes. Reading one back is where untrusted
//! bytes meet memory, so [`decode`] never trusts the frame: the output buffer is exactly the
//! size the manifest declares (a frame that decompresses to more fails, so a decompression
//! bomb cannot allocate), the window the decoder may use is capped, and the output must be
//! exactly that size and hash to the expected digest before a byte is handed on.

use std::cell::RefCell;

use bytes::Bytes;

use crate::digest::Digest;
use crate::manifest::{MAX_CHUNK_BYTES, zstd_bound};

/// The chunk's bytes are not what its digest and size say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chunk {digest} is corrupt: {detail}")]
pub struct CorruptChunk {
    pub digest: Digest,
    pub detail: String,
}

/// Largest window a chunk's frame may ask for: a chunk is at most 16 MiB.
const WINDOW_LOG_MAX: u32 = 24;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses one chunk at `level`, reusing this thread's zstd context.
pub fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut compressor = zstd::bulk::Compressor::new(level)?;
            compressor.include_checksum(false)?;
            compressor.include_contentsize(true)?;
            *slot = Some((level, compressor));
        }
        let Some((_, compressor)) = slot.as_mut() else { unreachable!("set above") };
        compressor.compress(raw)
    })
}

/// Decompresses and verifies a stored chunk that must be `size` bytes hashing to `digest`.
pub fn decode(stored: &[u8], digest: &Digest, size: u64) -> Result<Bytes, CorruptChunk> {
    let corrupt = |detail: String| CorruptChunk { digest: *digest, detail };
    if size == 0 || size > MAX_CHUNK_BYTES {
        return Err(corrupt(format!("its declared size {size} is out of range")));
    }
    if stored.len() as u64 > zstd_bound(size) {
        return Err(corrupt(format!(
            "its stored object is {} bytes, impossible for {size} raw bytes",
            stored.len()
        )));
    }
    let expected = usize::try_from(size).map_err(|_| corrupt("its size does not fit in memory".into()))?;
    let mut out = Vec::with_capacity(expected);
    DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                let mut decompressor = zstd::bulk::Decompressor::new()?;
                decompressor.window_log_max(WINDOW_LOG_MAX)?;
                *slot = Some(decompressor);
            }
            let Some(decompressor) = slot.as_mut() else { unreachable!("set above") };
            decompressor.decompress_to_buffer(stored, &mut out)
        })
        .map_err(|e| corrupt(format!("it does not decompress ({e}); the object may be truncated")))?;
    if out.len() != expected {
        return Err(corrupt(format!("it decompresses to {} bytes, not {size}", out.len())));
    }
    let actual = Digest::of(&out);
    if actual != *digest {
        return Err(corrupt(format!("its content hashes to {actual}")));
    }
    Ok(Bytes::from(out))
}

/// Verifies a stored chunk whose raw size is not known from a manifest (a chunk uploaded to
/// `envbuild serve`): the size comes from the frame header, which envbuild always writes and
/// which must be within [`MAX_CHUNK_BYTES`]; then [`decode`] checks it as usual. Returns the
/// raw size.
pub fn verify_stored(stored: &[u8], digest: &Digest) -> Result<u64, CorruptChunk> {
    let corrupt = |detail: &str| CorruptChunk { digest: *digest, detail: detail.to_owned() };
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(corrupt("its zstd frame does not declare its size")),
        Err(_) => return Err(corrupt("it is not a zstd frame")),
    };
    decode(stored, digest, size)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_chunk_is_verified_by_its_frame_size() {
        let raw = b"hello chunk ".repeat(1000);
        let digest = Digest::of(&raw);
        let stored = compress(&raw, 3).unwrap();
        assert_eq!(verify_stored(&stored, &digest).unwrap(), raw.len() as u64);
        assert!(verify_stored(&stored, &Digest::of(b"x")).unwrap_err().detail.contains("hashes to"));
        assert!(verify_stored(&raw, &digest).unwrap_err().detail.contains("not a zstd frame"));
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::Encoder::new(&mut streamed, 3).unwrap();
        std::io::Write::write_all(&mut encoder, &raw).unwrap();
        encoder.finish().unwrap();
        assert!(verify_stored(&streamed, &digest).unwrap_err().detail.contains("declare its size"));
    }

    #[test]
    fn round_trip_and_damage() {
        let raw: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let digest = Digest::of(&raw);
        let stored = compress(&raw, 3).unwrap();
        assert_eq!(&decode(&stored, &digest, raw.len() as u64).unwrap()[..], &raw[..]);

        let mut flipped = stored.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(decode(&flipped, &digest, raw.len() as u64).is_err());
        assert!(
            decode(&stored[..stored.len() / 2], &digest, raw.len() as u64)
                .unwrap_err()
                .detail
                .contains("truncated")
        );
        assert!(decode(&stored, &digest, raw.len() as u64 - 1).is_err());
        assert!(
            decode(&stored, &Digest::of(b"other"), raw.len() as u64)
                .unwrap_err()
                .detail
                .contains("hashes to")
        );
    }

    #[test]
    fn a_decompression_bomb_cannot_allocate() {
        let zeros = vec![0u8; 16 * 1024 * 1024];
        let bomb = compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 4096);
        let err = decode(&bomb, &Digest::of(&zeros[..1024]), 1024).unwrap_err();
        assert!(err.detail.contains("does not decompress") || err.detail.contains("impossible"), "{err}");
    }
}
