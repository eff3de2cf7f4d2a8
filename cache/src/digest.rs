//! Snapshot ids, and the [`Digest`] type (defined in `envbuild-schema`, the crate every other
//! one depends on, so keys and ids cross crate lines typed).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use envbuild_schema::digest::{DIGEST_PREFIX, Digest, DigestParseError, Hasher};

/// A snapshot's id: the digest of its manifest bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub Digest);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for SnapshotId {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::from_str(s).map(SnapshotId)
    }
}
