//! The snapshot manifest: what a snapshot is made of, and its id.
//!
//! A manifest lists, in stream order, every chunk's digest, raw size and stored size; the
//! stream's total size; a table of contents (path → offset, size, type, and the metadata a
//! diff needs); and three opaque documents the builder supplies (the image's OCI config, the
//! normalized environment.json, the key manifest). It holds nothing time- or host-dependent,
//! so the same stream always gives the same manifest, and the snapshot id is
//! `sha256:` + hex of the manifest bytes.
//!
//! **Format v2** (written) keeps both long lists out of the manifest object: the chunk list
//! and the table of contents are each a stream of JSON lines (one chunk, one entry per line),
//! cut into content-defined chunks of their own ([`LIST_CHUNKING`], small) and stored like data
//! chunks; the manifest names them ([`StreamRef`]). A table line gives the bytes its entry
//! *spans* in the stream rather than its offset, so an entry's line is the same in every
//! snapshot that holds the entry unchanged, wherever it falls. Why: a 1 GB root file system has
//! some 50,000 entries and 4,000 chunks, a 9 MB table and a 0.5 MB list; inline (format v1)
//! every snapshot stored all of it again, ten times what a new dependency adds, while in
//! chunks a new snapshot stores only the list chunks around what changed, and its manifest is
//! a few hundred bytes. **Format v1** (both inline, with offsets) is still read.
//!
//! The bytes are canonical JSON: object keys sorted bytewise at every level, no whitespace,
//! integers only in envbuild's own fields. envbuild's own structs declare their fields in
//! sorted order (by their serialized names), so serde writes them canonically without an
//! intermediate `Value` (which would cost a hundred bytes per field for a large table of
//! contents); the opaque documents are rebuilt with sorted keys first, so a `serde_json`
//! built with `preserve_order` (feature unification can switch it on) cannot change ids.
//! A test checks the struct order against [`canonical_json`].
//!
//! One caveat, by design: `stored_size` is the size of the zstd frame, which depends on the
//! zstd library version (pinned in Cargo.lock) and level. A chunk already in the store keeps
//! the size it was stored with.
//!
//! Decoding is defensive: the byte length is bounded before reading, the bytes must hash to
//! the id asked for, unknown fields are refused, and every size and count is checked (chunk
//! sizes within the chunking bounds, stored sizes within zstd's worst case, sizes summing to
//! the total, table-of-contents entries inside the stream) before anything relies on them.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chunker::ChunkParams;
use crate::digest::{Digest, SnapshotId};
use crate::tar::EntryKind;

/// The format written.
pub const FORMAT: &str = "envbuild.snapshot.v2";
/// The format with the table of contents inline; read, no longer written.
pub const FORMAT_V1: &str = "envbuild.snapshot.v1";

/// Largest manifest envbuild reads. A v1 manifest of a root filesystem with a million files is
/// roughly 200 MB; nothing real comes near this.
pub const MAX_MANIFEST_BYTES: u64 = 512 * 1024 * 1024;
/// Largest table of contents (v2) envbuild reads, for the same reason.
pub const MAX_TOC_BYTES: u64 = 512 * 1024 * 1024;

/// Largest chunk any manifest may declare, whatever its chunking parameters say.
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// How v2's lists are cut: 16 KiB / 64 KiB / 256 KiB. Lines are 100 to 300 bytes, so a changed
/// entry re-stores about 64 KiB of list (some 15 KiB compressed), while a table of 50,000
/// entries is about 150 chunks.
pub const LIST_CHUNKING: ChunkParams = ChunkParams { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };

/// Largest chunk list (v2) envbuild reads: some 5 million chunks.
pub const MAX_LIST_BYTES: u64 = 512 * 1024 * 1024;

/// A snapshot's manifest, in either format. Its `chunks` and `toc` are complete when it was
/// read with `restore::read_manifest`; [`Manifest::decode`] alone leaves v2's lists where
/// `chunks_ref` and `toc_ref` say they are, and `chunks` and `toc` empty until they are read
/// (`restore::read_manifest_shallow` reads the chunks only). It serializes (for
/// `inspect --json`) as it is in memory; the stored bytes come from [`Manifest::encode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub format: String,
    pub chunking: Chunking,
    pub chunks: Vec<ChunkRef>,
    /// Where a v2 chunk list is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks_ref: Option<StreamRef>,
    pub compression: Compression,
    /// The normalized environment.json the snapshot was built from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Value>,
    /// The image's OCI configuration (Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<Value>,
    /// Every build input and its hash, for `envbuild explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Value>,
    /// Bytes in the whole stream.
    pub size: u64,
    pub toc: Vec<TocEntry>,
    /// Where a v2 table of contents is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc_ref: Option<StreamRef>,
}

/// Where one of v2's lists is: its stream of JSON lines, in chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRef {
    // Fields in sorted order: see the module docs.
    pub chunking: Chunking,
    pub chunks: Vec<ChunkRef>,
    /// Lines in the stream.
    pub entries: u64,
    /// Bytes of the stream.
    pub size: u64,
}

/// Format v1 as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireV1 {
    chunking: Chunking,
    chunks: Vec<ChunkRef>,
    compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    environment: Option<Value>,
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Value>,
    size: u64,
    toc: Vec<TocEntry>,
}

/// Format v2 as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireV2 {
    chunking: Chunking,
    chunks: StreamRef,
    compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    environment: Option<Value>,
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Value>,
    size: u64,
    toc: StreamRef,
}

/// Only the format, to choose the wire struct.
#[derive(Deserialize)]
struct FormatOnly {
    format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    pub algorithm: ChunkAlgorithm,
    pub avg: u32,
    pub max: u32,
    pub min: u32,
}

impl Chunking {
    pub fn of(params: ChunkParams) -> Self {
        Self { algorithm: ChunkAlgorithm::FastCdc2020, avg: params.avg, max: params.max, min: params.min }
    }

    fn params(self) -> Result<ChunkParams, String> {
        ChunkParams::new(self.min, self.avg, self.max)
    }
}

/// The only chunking algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAlgorithm {
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub algorithm: Zstd,
    pub level: i32,
}

/// The only compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Zstd {
    #[serde(rename = "zstd")]
    Zstd,
}

/// One chunk of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    pub digest: Digest,
    pub size: u64,
    pub stored_size: u64,
}

/// One entry of the table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TocEntry {
    // Fields in sorted order of their serialized names: see the module docs.
    /// `[major, minor]` of a device node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<[u32; 2]>,
    pub gid: u64,
    /// Content hash of a regular file, for diffs only (`xxh3:<32 hex>`); integrity comes from
    /// the chunk digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Symlink or hardlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_b64: Option<String>,
    pub mode: u32,
    pub mtime: i64,
    /// Stream offset of the entry's first header block.
    pub offset: u64,
    /// Without `./` or a trailing `/`; `.` for the root. Lossy when the name is not UTF-8.
    pub path: String,
    /// The exact name in base64, present only when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// Bytes of data (file contents).
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub uid: u64,
    /// Names of extended attributes, for diffs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<String>,
}

/// A manifest could not be decoded or fails its checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the manifest of snapshot {id} is invalid: {detail}")]
pub struct ManifestError {
    pub id: String,
    pub detail: String,
}

/// One line of a v2 table of contents: an entry, with the bytes it spans instead of where it
/// starts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TocLine {
    // Fields in sorted order of their serialized names: see the module docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dev: Option<[u32; 2]>,
    gid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_b64: Option<String>,
    mode: u32,
    mtime: i64,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    size: u64,
    /// Bytes from the entry's first header block to the end of its data's padding.
    span: u64,
    #[serde(rename = "type")]
    kind: EntryKind,
    uid: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<String>,
}

/// The v2 table of contents stream of `toc`, whose entries end at stream offset `entries_end`.
pub fn encode_toc(toc: &[TocEntry], entries_end: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(toc.len() * 160);
    for (i, entry) in toc.iter().enumerate() {
        let end = toc.get(i + 1).map_or(entries_end, |next| next.offset);
        let span = end
            .checked_sub(entry.offset)
            .filter(|span| *span > 0)
            .ok_or_else(|| format!("the table of contents is not in stream order at `{}`", entry.path))?;
        let line = TocLine {
            dev: entry.dev,
            gid: entry.gid,
            hash: entry.hash.clone(),
            link: entry.link.clone(),
            link_b64: entry.link_b64.clone(),
            mode: entry.mode,
            mtime: entry.mtime,
            path: entry.path.clone(),
            path_b64: entry.path_b64.clone(),
            size: entry.size,
            span,
            kind: entry.kind,
            uid: entry.uid,
            xattrs: entry.xattrs.clone(),
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| format!("an entry cannot be encoded: {e}"))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The entries of a v2 table of contents stream, checked against `stream` (where it was) and a
/// data stream of `stream_size` bytes.
pub fn decode_toc(bytes: &[u8], stream: &StreamRef, stream_size: u64) -> Result<Vec<TocEntry>, String> {
    let mut offset: u64 = 0;
    lines(bytes, stream, "table of contents", |line: TocLine| {
        if offset >= stream_size || line.size > stream_size || line.span > stream_size - offset {
            return Err(format!("the table of contents places `{}` outside the stream", line.path));
        }
        let entry = TocEntry {
            dev: line.dev,
            gid: line.gid,
            hash: line.hash,
            link: line.link,
            link_b64: line.link_b64,
            mode: line.mode,
            mtime: line.mtime,
            offset,
            path: line.path,
            path_b64: line.path_b64,
            size: line.size,
            kind: line.kind,
            uid: line.uid,
            xattrs: line.xattrs,
        };
        offset += line.span;
        Ok(entry)
    })
}

/// The v2 chunk list stream of `chunks`.
pub fn encode_chunk_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 110);
    for chunk in chunks {
        // A struct of a digest and two numbers always serializes.
        let _ = serde_json::to_writer(&mut out, chunk);
        out.push(b'\n');
    }
    out
}

/// The chunks of a v2 chunk list stream, checked against `stream` (where it was).
pub fn decode_chunk_list(bytes: &[u8], stream: &StreamRef) -> Result<Vec<ChunkRef>, String> {
    lines(bytes, stream, "chunk list", Ok)
}

/// Parses each line of a v2 list stream and hands it to `each`; checks the size and count.
fn lines<L: serde::de::DeserializeOwned, T>(
    bytes: &[u8],
    stream: &StreamRef,
    what: &str,
    mut each: impl FnMut(L) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if bytes.len() as u64 != stream.size {
        return Err(format!("its {what} is {} bytes, not the {} it declares", bytes.len(), stream.size));
    }
    // Bounded by the bytes: a line is at least a few bytes.
    let capacity = usize::try_from(stream.entries.min(bytes.len() as u64 / 16 + 1)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    if !bytes.is_empty() {
        let body =
            bytes.strip_suffix(b"\n").ok_or_else(|| format!("its {what} does not end with a line break"))?;
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let parsed: L = serde_json::from_slice(line)
                .map_err(|e| format!("line {} of its {what} is invalid: {e}", i + 1))?;
            out.push(each(parsed)?);
        }
    }
    if out.len() as u64 != stream.entries {
        return Err(format!("its {what} has {} lines, not the {} it declares", out.len(), stream.entries));
    }
    Ok(out)
}

impl Manifest {
    /// The canonical bytes and the id they give, in the manifest's own format. Plain data with
    /// string keys always serializes; if it ever did not, the error is returned rather than an
    /// id of empty bytes.
    pub fn encode(&self) -> Result<(Vec<u8>, SnapshotId), ManifestError> {
        let sorted = |doc: &Option<Value>| doc.as_ref().map(sorted_keys);
        let fail = |detail: String| ManifestError { id: "(new)".to_owned(), detail };
        let encoded = match (&self.chunks_ref, &self.toc_ref, self.format.as_str()) {
            (Some(chunks), Some(toc), FORMAT) => serde_json::to_vec(&WireV2 {
                chunking: self.chunking,
                chunks: chunks.clone(),
                compression: self.compression,
                environment: sorted(&self.environment),
                format: self.format.clone(),
                image_config: sorted(&self.image_config),
                keys: sorted(&self.keys),
                size: self.size,
                toc: toc.clone(),
            }),
            (None, None, FORMAT_V1) => serde_json::to_vec(&WireV1 {
                chunking: self.chunking,
                chunks: self.chunks.clone(),
                compression: self.compression,
                environment: sorted(&self.environment),
                format: self.format.clone(),
                image_config: sorted(&self.image_config),
                keys: sorted(&self.keys),
                size: self.size,
                toc: self.toc.clone(),
            }),
            (_, _, format) => {
                return Err(fail(format!("format `{format}` does not go with where its lists are")));
            }
        };
        let bytes = encoded.map_err(|e| fail(format!("it cannot be encoded: {e}")))?;
        let id = SnapshotId(Digest::of(&bytes));
        Ok((bytes, id))
    }

    /// Decodes and checks manifest bytes that must be the snapshot `id`. v2's lists stay where
    /// `chunks_ref` and `toc_ref` say (see [`Manifest`]).
    pub fn decode(bytes: &[u8], id: &SnapshotId) -> Result<Self, ManifestError> {
        let fail = |detail: String| ManifestError { id: id.to_string(), detail };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(fail(format!("it is {} bytes, over the limit of {MAX_MANIFEST_BYTES}", bytes.len())));
        }
        let actual = Digest::of(bytes);
        if actual != id.0 {
            return Err(fail(format!("its bytes hash to {actual}, not to the id")));
        }
        let format: FormatOnly =
            serde_json::from_slice(bytes).map_err(|e| fail(format!("it is not a manifest: {e}")))?;
        let manifest = match format.format.as_str() {
            FORMAT => {
                let w: WireV2 = serde_json::from_slice(bytes)
                    .map_err(|e| fail(format!("it is not a v2 manifest: {e}")))?;
                Manifest {
                    format: w.format,
                    chunking: w.chunking,
                    chunks: Vec::new(),
                    chunks_ref: Some(w.chunks),
                    compression: w.compression,
                    environment: w.environment,
                    image_config: w.image_config,
                    keys: w.keys,
                    size: w.size,
                    toc: Vec::new(),
                    toc_ref: Some(w.toc),
                }
            }
            FORMAT_V1 => {
                let w: WireV1 = serde_json::from_slice(bytes)
                    .map_err(|e| fail(format!("it is not a v1 manifest: {e}")))?;
                Manifest {
                    format: w.format,
                    chunking: w.chunking,
                    chunks: w.chunks,
                    chunks_ref: None,
                    compression: w.compression,
                    environment: w.environment,
                    image_config: w.image_config,
                    keys: w.keys,
                    size: w.size,
                    toc: w.toc,
                    toc_ref: None,
                }
            }
            other => return Err(fail(format!("its format is `{other}`, not `{FORMAT}` or `{FORMAT_V1}`"))),
        };
        manifest.check().map_err(fail)?;
        Ok(manifest)
    }

    /// The structural checks of the module docs, of what is read so far: a v2 manifest's lists
    /// are checked against it as they are read (`restore`), and again here once they are.
    pub fn check(&self) -> Result<(), String> {
        let params =
            self.chunking.params().map_err(|e| format!("its chunking parameters are invalid: {e}"))?;
        if !(1..=22).contains(&self.compression.level) {
            return Err(format!("its zstd level {} is out of range", self.compression.level));
        }
        let v2 = match (&self.chunks_ref, &self.toc_ref, self.format.as_str()) {
            (Some(chunks), Some(toc), FORMAT) => {
                check_stream(chunks, "chunk list", MAX_LIST_BYTES)?;
                check_stream(toc, "table of contents", MAX_TOC_BYTES)?;
                true
            }
            (None, None, FORMAT_V1) => false,
            (_, _, format) => {
                return Err(format!("its format `{format}` does not go with where its lists are"));
            }
        };
        let total = check_chunks(&self.chunks, params, "chunk")?;
        let unread = v2 && self.chunks.is_empty();
        if !unread && total != self.size {
            return Err(format!("its chunks add up to {total} bytes but it declares {}", self.size));
        }
        for entry in &self.toc {
            if entry.offset >= self.size || entry.size > self.size {
                return Err(format!("the table of contents places `{}` outside the stream", entry.path));
            }
        }
        Ok(())
    }

    /// Entries in the table of contents, whether or not it was read.
    pub fn entry_count(&self) -> u64 {
        self.toc_ref.as_ref().map_or(self.toc.len() as u64, |t| t.entries)
    }

    /// Chunks of the stream, whether or not their list was read.
    pub fn chunk_count(&self) -> u64 {
        self.chunks_ref.as_ref().map_or(self.chunks.len() as u64, |c| c.entries)
    }

    /// Bytes the data chunks take in the store (each chunk counted once per occurrence).
    pub fn stored_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored_size).sum()
    }

    /// Distinct chunks (data, and v2's list chunks), in first-occurrence order: what the
    /// snapshot needs in a store. The data chunks are those read so far.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let lists = self.chunks_ref.iter().chain(&self.toc_ref).flat_map(|s| s.chunks.iter());
        let mut seen = std::collections::HashSet::new();
        self.chunks.iter().chain(lists).filter(|c| seen.insert(c.digest)).copied().collect()
    }
}

/// Checks where one of v2's lists is: its chunking, its size bound, and its chunks' sizes.
fn check_stream(stream: &StreamRef, what: &str, max: u64) -> Result<(), String> {
    let params =
        stream.chunking.params().map_err(|e| format!("its {what}'s chunking parameters are invalid: {e}"))?;
    if stream.size > max {
        return Err(format!("its {what} is {} bytes, over the limit of {max}", stream.size));
    }
    let total = check_chunks(&stream.chunks, params, &format!("{what} chunk"))?;
    if total != stream.size {
        return Err(format!("its {what}'s chunks add up to {total} bytes but it declares {}", stream.size));
    }
    Ok(())
}

/// Checks each chunk's sizes against `params` and zstd's bounds; returns their total.
fn check_chunks(chunks: &[ChunkRef], params: ChunkParams, what: &str) -> Result<u64, String> {
    let max_chunk = u64::from(params.max).min(MAX_CHUNK_BYTES);
    let mut total: u64 = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.size == 0 || chunk.size > max_chunk {
            return Err(format!(
                "{what} {i} ({}) declares {} bytes, outside 1..={max_chunk}",
                chunk.digest, chunk.size
            ));
        }
        if chunk.stored_size == 0 || chunk.stored_size > zstd_bound(chunk.size) {
            return Err(format!(
                "{what} {i} ({}) declares {} stored bytes, impossible for {} raw bytes",
                chunk.digest, chunk.stored_size, chunk.size
            ));
        }
        total = total.checked_add(chunk.size).ok_or("the chunk sizes overflow")?;
    }
    Ok(total)
}

/// zstd's worst case for `size` input bytes (`ZSTD_COMPRESSBOUND`).
pub fn zstd_bound(size: u64) -> u64 {
    let margin = if size < (128 << 10) { ((128 << 10) - size) >> 11 } else { 0 };
    size + (size >> 8) + margin
}

/// `value` with every object's keys inserted in sorted order, so it serializes sorted whether
/// or not `serde_json` preserves insertion order.
fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted_keys(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        scalar => scalar.clone(),
    }
}

/// Canonical JSON: keys sorted bytewise, no insignificant whitespace.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, offset: u64, size: u64) -> TocEntry {
        TocEntry {
            dev: None,
            gid: 0,
            hash: (size > 0).then(|| "xxh3:00".into()),
            link: None,
            link_b64: None,
            mode: 0o644,
            mtime: 5,
            offset,
            path: path.into(),
            path_b64: None,
            size,
            kind: if size > 0 { EntryKind::File } else { EntryKind::Directory },
            uid: 0,
            xattrs: vec![],
        }
    }

    fn list(size: u64, entries: u64) -> StreamRef {
        StreamRef {
            chunking: Chunking::of(LIST_CHUNKING),
            chunks: vec![ChunkRef {
                digest: Digest::of(&size.to_le_bytes()),
                size,
                stored_size: size / 2 + 12,
            }],
            entries,
            size,
        }
    }

    /// A v2 manifest as decoded: its lists not read.
    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            chunking: Chunking::of(ChunkParams::default()),
            compression: Compression { algorithm: Zstd::Zstd, level: 3 },
            size: 5,
            chunks: vec![],
            chunks_ref: Some(list(100, 1)),
            toc: vec![],
            toc_ref: Some(list(300, 1)),
            image_config: Some(serde_json::json!({"b": 1, "a": [true, null]})),
            environment: None,
            keys: None,
        }
    }

    fn sample_v1() -> Manifest {
        Manifest {
            format: FORMAT_V1.into(),
            chunks: vec![ChunkRef { digest: Digest::of(b"hello"), size: 5, stored_size: 14 }],
            chunks_ref: None,
            toc: vec![entry("a", 0, 0)],
            toc_ref: None,
            ..sample()
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_everywhere_in_both_formats() {
        let (bytes, id) = sample().encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"chunking":{"algorithm":"fastcdc-2020","avg":262144"#), "{text}");
        assert!(text.contains(r#""image_config":{"a":[true,null],"b":1}"#), "{text}");
        assert!(text.contains(r#""chunks":{"chunking""#), "the chunk list is a reference: {text}");
        assert!(text.ends_with(r#""size":300}}"#), "the table of contents is a reference: {text}");
        assert_eq!(Manifest::decode(&bytes, &id).unwrap(), sample());
        let (bytes, id) = sample_v1().encode().unwrap();
        assert_eq!(Manifest::decode(&bytes, &id).unwrap(), sample_v1(), "v1 is still read");
    }

    #[test]
    fn struct_field_order_is_canonical() {
        let mut m = sample();
        m.environment = Some(serde_json::json!({"z": {"y": 1, "x": 2}, "a": null}));
        m.keys = Some(serde_json::json!({"k": "v"}));
        let (bytes, _) = m.encode().unwrap();
        let reference = canonical_json(&serde_json::from_slice(&bytes).unwrap());
        assert_eq!(String::from_utf8(bytes).unwrap(), String::from_utf8(reference).unwrap());
        let full = TocEntry {
            dev: Some([1, 3]),
            gid: 1,
            hash: Some("xxh3:00".into()),
            link: Some("t".into()),
            link_b64: Some("dA==".into()),
            mode: 0o644,
            mtime: 5,
            offset: 0,
            path: "p".into(),
            path_b64: Some("cA==".into()),
            size: 0,
            kind: EntryKind::Char,
            uid: 2,
            xattrs: vec!["user.a".into()],
        };
        let lines = encode_toc(std::slice::from_ref(&full), 512).unwrap();
        let line = &lines[..lines.len() - 1];
        assert_eq!(line, canonical_json(&serde_json::from_slice(line).unwrap()));
        let (bytes, _) = Manifest { toc: vec![full], ..sample_v1() }.encode().unwrap();
        assert_eq!(bytes, canonical_json(&serde_json::from_slice(&bytes).unwrap()));
    }

    #[test]
    fn the_table_of_contents_keeps_spans_not_offsets() {
        let toc = vec![entry("a", 0, 0), entry("a/b", 512, 700), entry("a/c", 512 + 512 + 1024, 0)];
        let lines = encode_toc(&toc, 512 + 512 + 1024 + 512).unwrap();
        let text = String::from_utf8(lines.clone()).unwrap();
        assert!(text.contains(r#""span":1536"#) && !text.contains("offset"), "{text}");
        let toc_ref = StreamRef { entries: 3, size: lines.len() as u64, ..list(1, 3) };
        assert_eq!(decode_toc(&lines, &toc_ref, 10_000).unwrap(), toc);
        // The same entry is the same line wherever it falls.
        let shifted: Vec<TocEntry> =
            toc.iter().map(|e| TocEntry { offset: e.offset + 4096, ..e.clone() }).collect();
        assert_eq!(encode_toc(&shifted, 4096 + 2560).unwrap(), lines);
        // Refusals: a wrong count, a wrong size, an entry past the end of the stream.
        let wrong = StreamRef { entries: 2, ..toc_ref.clone() };
        assert!(decode_toc(&lines, &wrong, 10_000).unwrap_err().contains("3 lines"));
        let wrong = StreamRef { size: 1, ..toc_ref.clone() };
        assert!(decode_toc(&lines, &wrong, 10_000).unwrap_err().contains("bytes"));
        assert!(decode_toc(&lines, &toc_ref, 1000).unwrap_err().contains("outside"));
        assert!(encode_toc(&[entry("b", 512, 0), entry("a", 0, 0)], 1024).is_err());
    }

    #[test]
    fn the_chunk_list_is_lines_of_chunk_references() {
        let chunks: Vec<ChunkRef> = (0..3u64)
            .map(|i| ChunkRef { digest: Digest::of(&i.to_le_bytes()), size: 10 + i, stored_size: 9 })
            .collect();
        let bytes = encode_chunk_list(&chunks);
        let stream = StreamRef { entries: 3, size: bytes.len() as u64, ..list(1, 3) };
        assert_eq!(decode_chunk_list(&bytes, &stream).unwrap(), chunks);
        assert!(
            decode_chunk_list(
                &bytes[..bytes.len() - 1],
                &StreamRef { size: bytes.len() as u64 - 1, ..stream.clone() }
            )
            .unwrap_err()
            .contains("line break")
        );
        let mut hostile = bytes.clone();
        hostile.extend_from_slice(b"{\"digest\":\"x\"}\n");
        let stream = StreamRef { entries: 4, size: hostile.len() as u64, ..stream };
        assert!(decode_chunk_list(&hostile, &stream).unwrap_err().contains("line 4"));
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let (bytes, id) = sample().encode().unwrap();
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(Manifest::decode(&flipped, &id).unwrap_err().detail.contains("hash"));

        let mut m = sample_v1();
        m.chunks[0].size = 1 << 40;
        m.size = 1 << 40;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("outside"));

        let mut m = sample_v1();
        m.size = 6;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("add up"));

        let mut m = sample_v1();
        m.chunks[0].stored_size = 10_000;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("impossible"));

        let mut m = sample();
        m.toc_ref.as_mut().unwrap().size = 4;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("table of contents"));

        let mut m = sample();
        m.chunks_ref.as_mut().unwrap().chunks[0].size = 1 << 30;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("chunk list chunk 0"));

        let mut m = sample();
        m.toc_ref.as_mut().unwrap().size = MAX_TOC_BYTES + 1;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("limit"));

        let unknown = br#"{"format":"envbuild.snapshot.v2","surprise":1}"#;
        let id = SnapshotId(Digest::of(unknown));
        assert!(Manifest::decode(unknown, &id).is_err());
        let other = br#"{"format":"envbuild.snapshot.v9"}"#;
        let id = SnapshotId(Digest::of(other));
        assert!(Manifest::decode(other, &id).unwrap_err().detail.contains("v9"));
    }
}
