//! Where objects live in a store, identical on disk, in S3 and behind `envbuild serve`.
//!
//! ```text
//! v1/chunks/ab/<hex>          a chunk: zstd frame of the raw bytes whose sha256 is <hex>
//! v1/snapshots/<hex>          a manifest (canonical JSON) whose sha256 is <hex>
//! v1/keys/<hex>               a key record: cache key -> snapshot id (JSON)
//! v1/refs/<name>              a mutable name -> snapshot id, updated by compare-and-swap
//! v1/heads/<hex>              the newest build of a repository on a system key (a side
//!                             record: where the next build's install starts from)
//! v1/images/<hex>            a snapshot's OCI image record (a side record: the digests of
//!                             its layers and documents, computed once for the registry API)
//! v1/digests/<hex>            which snapshot's image has a blob or manifest of that digest
//! v1/secrets/<scope>/<name>   an envelope-encrypted secret
//! v1/leases/<kind>-<id>       a writer's or gc's lease (see `lease`)
//! ```
//!
//! The format version is the first path component, so a v2 can live beside v1. Chunks fan out
//! on the first byte so no directory holds more than 1/256 of them.
//!
//! [`ObjectPath`] is the only way to name an object: it refuses empty components, `.`, `..`,
//! leading slashes and characters outside a conservative set, so a path read from a hostile
//! peer can never escape a local store's root.

use std::fmt;

use crate::digest::{Digest, SnapshotId};

pub const CHUNKS: &str = "v1/chunks/";
pub const SNAPSHOTS: &str = "v1/snapshots/";
pub const KEYS: &str = "v1/keys/";
pub const REFS: &str = "v1/refs/";
pub const HEADS: &str = "v1/heads/";
pub const IMAGES: &str = "v1/images/";
pub const DIGESTS: &str = "v1/digests/";
pub const SECRETS: &str = "v1/secrets/";
pub const LEASES: &str = "v1/leases/";

/// A validated, relative object path such as `v1/chunks/ab/ab12…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPath(String);

/// The path is not a valid object path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is not a valid object path: {reason}")]
pub struct InvalidPath {
    pub path: String,
    pub reason: &'static str,
}

impl ObjectPath {
    /// Longest accepted path, well under every backend's limit (S3: 1024 bytes).
    pub const MAX_LEN: usize = 512;

    pub fn new(path: impl Into<String>) -> Result<Self, InvalidPath> {
        let path = path.into();
        let invalid = |reason| Err(InvalidPath { path: path.chars().take(120).collect(), reason });
        if path.is_empty() || path.len() > Self::MAX_LEN {
            return invalid("it must be 1 to 512 bytes long");
        }
        for component in path.split('/') {
            if component.is_empty() {
                return invalid("it has an empty component (a leading, trailing or double `/`)");
            }
            if component == "." || component == ".." {
                return invalid("it has a `.` or `..` component");
            }
            if !component.bytes().all(is_path_byte) {
                return invalid("only ASCII letters, digits and `-_.:=@+%` are allowed in components");
            }
        }
        Ok(Self(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a listing prefix: the beginning of an object path (empty included), so it has only
/// path bytes and `/`, no `.` or `..` component and no leading `/`. A local store walks the
/// directory a prefix names, so this is what keeps a listing inside the store.
pub fn check_prefix(prefix: &str) -> Result<(), InvalidPath> {
    let invalid = |reason| Err(InvalidPath { path: prefix.chars().take(120).collect(), reason });
    if prefix.len() > ObjectPath::MAX_LEN {
        return invalid("a prefix is at most 512 bytes long");
    }
    if prefix.starts_with('/') || prefix.split('/').any(|c| c == "." || c == "..") {
        return invalid("a prefix has no leading `/` and no `.` or `..` component");
    }
    if !prefix.bytes().all(|b| b == b'/' || is_path_byte(b)) {
        return invalid("only ASCII letters, digits, `/` and `-_.:=@+%` are allowed in a prefix");
    }
    Ok(())
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'=' | b'@' | b'+' | b'%')
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0)
    }
}

fn known(path: String) -> ObjectPath {
    // Built from hex digits and constant prefixes only: always valid.
    ObjectPath(path)
}

pub fn chunk(digest: &Digest) -> ObjectPath {
    let hex = digest.hex();
    known(format!("{CHUNKS}{}/{hex}", &hex[..2]))
}

pub fn snapshot(id: &SnapshotId) -> ObjectPath {
    known(format!("{SNAPSHOTS}{}", id.0.hex()))
}

pub fn key(key: &Digest) -> ObjectPath {
    known(format!("{KEYS}{}", key.hex()))
}

/// The head record of lineage `lineage` (a digest of a repository and a system key).
pub fn head(lineage: &Digest) -> ObjectPath {
    ObjectPath(format!("{HEADS}{}", lineage.hex()))
}

/// The OCI image record of snapshot `id`.
pub fn image(id: &SnapshotId) -> ObjectPath {
    known(format!("{IMAGES}{}", id.0.hex()))
}

/// The pointer from an image blob's or manifest's digest to its snapshot.
pub fn image_digest(digest: &Digest) -> ObjectPath {
    known(format!("{DIGESTS}{}", digest.hex()))
}

/// A ref name: letters, digits and `-_.`, optionally in `/`-separated groups (`team/main`).
pub fn reference(name: &str) -> Result<ObjectPath, InvalidPath> {
    if name.contains([':', '=', '@', '+', '%']) {
        return Err(InvalidPath {
            path: name.to_owned(),
            reason: "ref names use letters, digits, `-_.` and `/`",
        });
    }
    ObjectPath::new(format!("{REFS}{name}"))
}

pub fn lease(name: &str) -> Result<ObjectPath, InvalidPath> {
    ObjectPath::new(format!("{LEASES}{name}"))
}

/// The digest a chunk path names, if `path` is a chunk path.
pub fn parse_chunk(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix(CHUNKS)?;
    let (fan, hex) = rest.split_once('/')?;
    let digest = Digest::from_hex(hex).ok()?;
    (fan == &hex[..2]).then_some(digest)
}

/// The id a snapshot path names, if `path` is a snapshot path.
pub fn parse_snapshot(path: &str) -> Option<SnapshotId> {
    Digest::from_hex(path.strip_prefix(SNAPSHOTS)?).ok().map(SnapshotId)
}

/// The key a key path names, if `path` is a key path.
pub fn parse_key(path: &str) -> Option<Digest> {
    Digest::from_hex(path.strip_prefix(KEYS)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let d = Digest::of(b"x");
        assert_eq!(parse_chunk(chunk(&d).as_str()), Some(d));
        assert_eq!(parse_snapshot(snapshot(&SnapshotId(d)).as_str()), Some(SnapshotId(d)));
        assert_eq!(parse_key(key(&d).as_str()), Some(d));
        assert!(chunk(&d).as_str().starts_with("v1/chunks/"));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in ["", "/abs", "a//b", "a/../b", "..", "a/./b", "a/b/", "a\\b", "a b", "a\0b", "é"] {
            assert!(ObjectPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(reference("../x").is_err());
        assert!(reference("team/main").is_ok());
        assert!(ObjectPath::new("v1/secrets/team:core/TOKEN").is_ok());
        for bad in ["../", "v1/../x", "/v1", "v1/./", "v1 x", "v1\\"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        for good in ["", "v1/", "v1/chunks/ab", "v1/secrets/team:core/"] {
            assert!(check_prefix(good).is_ok(), "{good:?}");
        }
    }
}
