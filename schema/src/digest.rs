//! SHA-256 digests: the names of chunks, snapshots and cache keys.
//!
//! This lives in the schema crate, which every other crate depends on, so that digests cross
//! crate lines as a type: the builder computes keys as [`Digest`]s and the cache stores them,
//! without the builder importing the cache.
//!
//! A [`Digest`] prints as `sha256:<64 lowercase hex>` and parses from that form or from the
//! bare hex. A chunk's id is the digest of its uncompressed bytes; a snapshot's id is the
//! digest of its manifest bytes ([`SnapshotId`]). Both are only ever computed from data, never
//! trusted from a peer: every read re-hashes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

pub const DIGEST_PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case), without a prefix.
    pub fn from_hex(hex_digits: &str) -> Result<Self, DigestParseError> {
        if hex_digits.len() != 64 {
            return Err(DigestParseError { input: truncate(hex_digits), reason: "expected 64 hex digits" });
        }
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| DigestParseError {
            input: truncate(hex_digits),
            reason: "expected only hex digits",
        })?;
        Ok(Self(bytes))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Incremental SHA-256.
#[derive(Debug, Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DIGEST_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The input could not be read as a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a sha256 digest: {reason}")]
pub struct DigestParseError {
    input: String,
    reason: &'static str,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    /// Accepts `sha256:<hex>` and bare `<hex>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s.strip_prefix(DIGEST_PREFIX).unwrap_or(s))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        // The wire form always carries the prefix.
        let hex_digits = s.strip_prefix(DIGEST_PREFIX).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{}` is not a sha256 digest: expected `sha256:` and 64 hex digits",
                truncate(&s)
            ))
        })?;
        Self::from_hex(hex_digits).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().parse::<Digest>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }

    #[test]
    fn bad_digests_are_refused() {
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!(serde_json::from_str::<Digest>(&format!("\"{}\"", "a".repeat(64))).is_err());
    }
}
