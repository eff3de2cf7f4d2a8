//! envbuild's content-addressed snapshot store.
//!
//! A root filesystem, as a tar stream in canonical order, is cut into content-defined chunks
//! (FastCDC), each named by the sha256 of its bytes and stored zstd-compressed exactly once;
//! a canonical JSON manifest lists the chunks and a table of contents, and the snapshot's id
//! is the sha256 of the manifest. Snapshots are immutable, deduplicated against everything
//! already stored, and verified on every read. This crate knows nothing of Docker or of
//! environment.json: the builder hands it streams and opaque documents.
//!
//! # Layout
//! - [`digest`], [`layout`]: names of things, and where they live in a store.
//! - [`store`]: the [`Store`](store::Store) trait and its backends; its conformance suite
//!   (feature `testing`).
//! - [`tar`]: a defensive streaming tar reader, canonical order and reordering.
//! - [`chunker`], [`chunk`]: content-defined chunking; compression and verification of one chunk.
//! - [`manifest`]: format v1, canonical encoding, bounded decoding.
//! - [`ingest`]: stream in, snapshot out. [`splice`]: a snapshot as its parent plus what
//!   changed. [`restore`]: snapshot out as a stream or a tree.
//! - [`extract`]: safe extraction into a directory; [`staging`]: what a fetch builds beside
//!   its target, removed on every path.
//! - [`catalog`]: snapshots, key records, refs, and resolving a query to an id;
//!   [`retention`]: removing snapshots (`rm`, `prune`).
//! - [`verified`]: the chunks this host knows sound in a store, so dedup never trusts a
//!   damaged one and rarely reads one back.
//! - [`verify`], [`gc`], [`diff`], [`lease`]: checking, collecting, comparing, and keeping
//!   collection and writers apart.
//! - [`transfer`]: copying snapshots between stores (`push`, `pull`).
//! - [`admission`]: the checks a store makes of writes from writers it does not trust.

pub mod admission;
pub mod catalog;
pub mod chunk;
pub mod chunker;
pub mod diff;
pub mod digest;
pub mod error;
pub mod extract;
pub mod gc;
pub mod ingest;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod splice;
pub mod staging;
pub mod store;
pub mod tar;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod verified;
pub mod verify;

pub use digest::{Digest, SnapshotId};
pub use error::{Error, Result};
pub use store::Store;
