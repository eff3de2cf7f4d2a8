//! Tar streams: a defensive, streaming reader, and the canonical order of entries.
//!
//! One reader ([`TarReader`]) serves every use: ingest reads through it to build the table of
//! contents while the raw bytes flow on to the chunker untouched, reordering uses it to cut an
//! out-of-order stream into entries, and extraction uses it to create files. It understands
//! ustar, GNU (`L`/`K` long names, base-256 numbers) and PAX (`x` records, `SCHILY.xattr.*`
//! and `LIBARCHIVE.xattr.*` attributes), which covers `docker export`, GNU tar and bsdtar.
//!
//! Entries envbuild renames get new headers from [`encode_header`], in one fixed style;
//! [`checked`] parses a copy of bytes on their way elsewhere.
//!
//! Every size is bounded before anything is allocated (extension headers, names, attributes),
//! header checksums are verified, and a stream that ends early is an error naming the entry.
//! Nothing here touches the file system.

mod check;
mod header;
mod order;
mod reader;
mod writer;

pub use check::{Checked, Checker, checked};
pub use order::{CanonicalKey, Reordered, canonical_key, display_path, reorder};
pub use reader::{Entry, EntryKind, Limits, TarReader};
pub use writer::{encode_header, padding};

/// A tar stream could not be read. Offsets are bytes from the start of the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    #[error("cannot read the tar stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("the tar stream ends early, inside {context} (at byte {offset})")]
    Truncated { offset: u64, context: String },
    #[error(
        "the tar stream ends at byte {offset} without its end-of-archive marker: it was cut short (an export or a download that stopped?), so nothing was stored"
    )]
    NoEndMarker { offset: u64 },
    #[error("the tar stream holds no entries: there is no file system in it")]
    Empty,
    #[error("the tar header at byte {offset} is damaged: its checksum does not match")]
    BadChecksum { offset: u64 },
    #[error("the tar header at byte {offset} has an invalid `{field}` field: {detail}")]
    BadField { offset: u64, field: &'static str, detail: String },
    #[error("the tar entry at byte {offset} is {what}, which envbuild does not support")]
    Unsupported { offset: u64, what: String },
    #[error("the tar entry at byte {offset} has a {what} of {size} bytes, over the limit of {limit}")]
    TooLarge { offset: u64, what: &'static str, size: u64, limit: u64 },
}
