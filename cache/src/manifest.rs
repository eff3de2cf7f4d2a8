//! The snapshot manifest, format v1: what a snapshot is made of, and its id.
//!
//! A manifest lists, in stream order, every chunk's digest, raw size and stored size; the
//! stream's total size; a table of contents (path → offset, size, type, and the metadata a
//! diff needs); and three opaque documents the builder supplies (the image's OCI config, the
//! normalized environment.json, the key manifest). It holds nothing time- or host-dependent,
//! so the same stream always gives the same manifest, and the snapshot id is
//! `sha256:` + hex of the manifest bytes.
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
//! the total, table-of-contents offsets inside the stream) before anything relies on them.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chunker::ChunkParams;
use crate::digest::{Digest, SnapshotId};
use crate::tar::EntryKind;

pub const FORMAT: &str = "envbuild.snapshot.v1";

/// Largest manifest envbuild reads. A root filesystem with a million files has a manifest of
/// roughly 200 MB; nothing real comes near this.
pub const MAX_MANIFEST_BYTES: u64 = 512 * 1024 * 1024;

/// Largest chunk any manifest may declare, whatever its chunking parameters say.
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    // Fields in sorted order: see the module docs.
    pub chunking: Chunking,
    pub chunks: Vec<ChunkRef>,
    pub compression: Compression,
    /// The normalized environment.json the snapshot was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Value>,
    pub format: String,
    /// The image's OCI configuration (Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<Value>,
    /// Every build input and its hash, for `envbuild explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Value>,
    /// Bytes in the whole stream.
    pub size: u64,
    pub toc: Vec<TocEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    pub algorithm: ChunkAlgorithm,
    pub avg: u32,
    pub max: u32,
    pub min: u32,
}

/// The only chunking algorithm of format v1.
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

/// The only compression of format v1.
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

impl Manifest {
    /// The canonical bytes and the id they give. Plain data with string keys always
    /// serializes; if it ever did not, the error is returned rather than an id of empty bytes.
    pub fn encode(&self) -> Result<(Vec<u8>, SnapshotId), ManifestError> {
        let sorted = |doc: &Option<Value>| doc.as_ref().map(sorted_keys);
        let canonical = Manifest {
            image_config: sorted(&self.image_config),
            environment: sorted(&self.environment),
            keys: sorted(&self.keys),
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&canonical).map_err(|e| ManifestError {
            id: "(new)".to_owned(),
            detail: format!("it cannot be encoded: {e}"),
        })?;
        let id = SnapshotId(Digest::of(&bytes));
        Ok((bytes, id))
    }

    /// Decodes and checks manifest bytes that must be the snapshot `id`.
    pub fn decode(bytes: &[u8], id: &SnapshotId) -> Result<Self, ManifestError> {
        let fail = |detail: String| ManifestError { id: id.to_string(), detail };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(fail(format!("it is {} bytes, over the limit of {MAX_MANIFEST_BYTES}", bytes.len())));
        }
        let actual = Digest::of(bytes);
        if actual != id.0 {
            return Err(fail(format!("its bytes hash to {actual}, not to the id")));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| fail(format!("it is not a v1 manifest: {e}")))?;
        manifest.check().map_err(fail)?;
        Ok(manifest)
    }

    /// The structural checks of the module docs.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("its format is `{}`, not `{FORMAT}`", self.format));
        }
        let c = self.chunking;
        ChunkParams::new(c.min, c.avg, c.max)
            .map_err(|e| format!("its chunking parameters are invalid: {e}"))?;
        if !(1..=22).contains(&self.compression.level) {
            return Err(format!("its zstd level {} is out of range", self.compression.level));
        }
        let max_chunk = u64::from(c.max).min(MAX_CHUNK_BYTES);
        let mut total: u64 = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if chunk.size == 0 || chunk.size > max_chunk {
                return Err(format!(
                    "chunk {i} ({}) declares {} bytes, outside 1..={max_chunk}",
                    chunk.digest, chunk.size
                ));
            }
            if chunk.stored_size == 0 || chunk.stored_size > zstd_bound(chunk.size) {
                return Err(format!(
                    "chunk {i} ({}) declares {} stored bytes, impossible for {} raw bytes",
                    chunk.digest, chunk.stored_size, chunk.size
                ));
            }
            total = total.checked_add(chunk.size).ok_or("the chunk sizes overflow")?;
        }
        if total != self.size {
            return Err(format!("its chunks add up to {total} bytes but it declares {}", self.size));
        }
        for entry in &self.toc {
            if entry.offset >= self.size || entry.size > self.size {
                return Err(format!("the table of contents places `{}` outside the stream", entry.path));
            }
        }
        Ok(())
    }

    /// Bytes the chunks take in the store (each chunk counted once per occurrence).
    pub fn stored_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored_size).sum()
    }

    /// Distinct chunks, in first-occurrence order.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = std::collections::HashSet::new();
        self.chunks.iter().filter(|c| seen.insert(c.digest)).copied().collect()
    }
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

    fn sample() -> Manifest {
        let data = b"hello";
        Manifest {
            format: FORMAT.into(),
            chunking: Chunking {
                algorithm: ChunkAlgorithm::FastCdc2020,
                min: 262_144,
                avg: 1_048_576,
                max: 4_194_304,
            },
            compression: Compression { algorithm: Zstd::Zstd, level: 3 },
            size: 5,
            chunks: vec![ChunkRef { digest: Digest::of(data), size: 5, stored_size: 14 }],
            toc: vec![],
            image_config: Some(serde_json::json!({"b": 1, "a": [true, null]})),
            environment: None,
            keys: None,
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_everywhere() {
        let (bytes, id) = sample().encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"chunking":{"algorithm":"fastcdc-2020","avg":1048576"#), "{text}");
        assert!(text.contains(r#""image_config":{"a":[true,null],"b":1}"#), "{text}");
        assert_eq!(Manifest::decode(&bytes, &id).unwrap(), sample());
    }

    #[test]
    fn struct_field_order_is_canonical() {
        let mut m = sample();
        m.environment = Some(serde_json::json!({"z": {"y": 1, "x": 2}, "a": null}));
        m.keys = Some(serde_json::json!({"k": "v"}));
        m.toc.push(TocEntry {
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
        });
        let (bytes, _) = m.encode().unwrap();
        let reference = canonical_json(&serde_json::from_slice(&bytes).unwrap());
        assert_eq!(String::from_utf8(bytes).unwrap(), String::from_utf8(reference).unwrap());
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let (bytes, id) = sample().encode().unwrap();
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(Manifest::decode(&flipped, &id).unwrap_err().detail.contains("hash"));

        let mut m = sample();
        m.chunks[0].size = 1 << 40;
        m.size = 1 << 40;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("outside"));

        let mut m = sample();
        m.size = 6;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("add up"));

        let mut m = sample();
        m.chunks[0].stored_size = 10_000;
        let (bytes, id) = m.encode().unwrap();
        assert!(Manifest::decode(&bytes, &id).unwrap_err().detail.contains("impossible"));

        let unknown = br#"{"format":"envbuild.snapshot.v1","surprise":1}"#;
        let id = SnapshotId(Digest::of(unknown));
        assert!(Manifest::decode(unknown, &id).is_err());
    }
}
