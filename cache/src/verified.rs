//! Chunks this host knows to be sound in a store: the objects it wrote, or read back and
//! checked, each by the validator (`etag`) the store gave that exact object.
//!
//! Dedup must never reference a damaged chunk: an import that found a chunk "already stored"
//! and trusted it published snapshots that could not be read back. So a writer that finds a
//! chunk reuses it only when it is *known* sound here, which costs nothing, or after reading
//! it back and checking it, and otherwise rewrites it from its own bytes, which repairs the
//! store. Knowledge is keyed by the object's validator: on a directory store that is its
//! inode, size and modification time (a rewrite, a truncation or an edit in place changes
//! it), on S3 its ETag. So damage done after the check is noticed, while the everyday build,
//! whose chunks this host wrote or checked before, reads nothing back.
//!
//! The record is one file per store location (lines of `<digest hex> <etag>`), appended to
//! by whoever learns something and read whole when opened; it is bounded ([`MAX_BYTES`]) by
//! starting again when it outgrows that. Losing it costs reads, never correctness.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;

/// Largest record kept: about half a million chunks.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Verified {
    known: Mutex<HashMap<Digest, String>>,
    /// Learned since opening, to append.
    learned: Mutex<Vec<(Digest, String)>>,
    file: Option<PathBuf>,
}

impl Verified {
    /// Knows nothing and remembers nothing past this process.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The record of the store at `location`, kept under `dir`.
    pub fn open(dir: &Path, location: &str) -> Self {
        let file = dir.join(&Digest::of(location.as_bytes()).hex()[..32]);
        let mut known = HashMap::new();
        let fits = std::fs::metadata(&file).is_ok_and(|m| m.len() <= MAX_BYTES);
        if fits && let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((hex, etag)) = line.split_once(' ')
                    && let Ok(digest) = Digest::from_hex(hex)
                {
                    known.insert(digest, etag.to_owned());
                }
            }
        } else if !fits {
            let _ = std::fs::remove_file(&file);
        }
        Self { known: Mutex::new(known), learned: Mutex::new(Vec::new()), file: Some(file) }
    }

    /// Whether the object `etag` of chunk `digest` is known sound.
    pub fn knows(&self, digest: &Digest, etag: &str) -> bool {
        !etag.is_empty() && lock(&self.known).get(digest).is_some_and(|known| known == etag)
    }

    /// Notes that the object `etag` of chunk `digest` is sound (it was written, or checked).
    pub fn note(&self, digest: Digest, etag: &str) {
        if etag.is_empty() || etag.contains(['\n', ' ']) {
            return;
        }
        let mut known = lock(&self.known);
        if known.get(&digest).map(String::as_str) != Some(etag) {
            known.insert(digest, etag.to_owned());
            lock(&self.learned).push((digest, etag.to_owned()));
        }
    }

    /// Appends what was learned to the record (best effort: losing it costs reads).
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        let learned = std::mem::take(&mut *lock(&self.learned));
        if learned.is_empty() {
            return;
        }
        let text = learned.iter().fold(String::new(), |mut text, (digest, etag)| {
            text.push_str(&digest.hex());
            text.push(' ');
            text.push_str(etag);
            text.push('\n');
            text
        });
        let appended = (|| -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // One write of whole lines: appends of concurrent writers do not interleave.
            std::fs::OpenOptions::new().create(true).append(true).open(file)?.write_all(text.as_bytes())
        })();
        if let Err(e) = appended {
            tracing::debug!("cannot record verified chunks in `{}`: {e}", file.display());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knowledge_is_per_object_and_survives_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let a = Digest::of(b"a");
        let record = Verified::open(dir.path(), "local store `/x`");
        assert!(!record.knows(&a, "e1"));
        record.note(a, "e1");
        assert!(
            record.knows(&a, "e1") && !record.knows(&a, "e2"),
            "another object of the same chunk is unknown"
        );
        record.save();
        let again = Verified::open(dir.path(), "local store `/x`");
        assert!(again.knows(&a, "e1"));
        assert!(!Verified::open(dir.path(), "local store `/y`").knows(&a, "e1"), "per store");
        again.note(a, "e2");
        again.save();
        assert!(Verified::open(dir.path(), "local store `/x`").knows(&a, "e2"), "the last word wins");
        assert!(!record.knows(&a, ""), "no validator, no knowledge");
    }
}
