//! The leak scan: a stream holding a secret value is refused, the secret and the file named,
//! and nothing of it stays in the store.

use std::sync::Arc;

use envbuild_cache::ingest::{self, IngestOptions, LeakScanner, Progress};
use envbuild_cache::store::memory::MemoryStore;
use envbuild_cache::testing::{RawEntry, write_tar};
use envbuild_cache::{Error, Store, layout};

/// Finds one literal value (the real scanner, with encodings, lives in the builder).
#[derive(Debug)]
struct Literal(&'static [u8]);

impl LeakScanner for Literal {
    fn longest(&self) -> usize {
        self.0.len()
    }
    fn find(&self, haystack: &[u8]) -> Vec<(usize, String)> {
        haystack
            .windows(self.0.len())
            .enumerate()
            .filter(|(_, w)| *w == self.0)
            .map(|(i, _)| (i, "TOKEN".to_owned()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_the_stream_refuses_the_publish_and_leaves_nothing() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let secret = b"tok-3f9a0c1d2e";
    let mut big = super::noise(5 * 1024 * 1024, 8);
    // Straddle a read boundary of the scan somewhere in the middle of a large file.
    big.splice(3_000_000..3_000_000, secret.iter().copied());
    let tar = write_tar(&[
        RawEntry::file("etc/app.env", b"harmless"),
        RawEntry::file("opt/big.bin", &big),
        RawEntry::symlink("opt/tok-3f9a0c1d2e-link", "nowhere"),
    ]);
    let options = IngestOptions { leak_scanner: Some(Arc::new(Literal(secret))), ..IngestOptions::default() };
    let err = ingest::ingest(
        store.clone(),
        Box::new(std::io::Cursor::new(tar)),
        options,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_err();
    let Error::Leak { findings } = &err else { panic!("expected a leak, got {err}") };
    assert_eq!(
        findings,
        &[
            ("TOKEN".to_owned(), "opt/big.bin".to_owned()),
            ("TOKEN".to_owned(), "opt/tok-3f9a0c1d2e-link".to_owned())
        ]
    );
    assert!(err.to_string().contains("nothing was published"));
    assert!(store.list(layout::SNAPSHOTS).await.unwrap().is_empty());
    assert!(
        store.list(layout::CHUNKS).await.unwrap().is_empty(),
        "the chunks holding the value were not removed"
    );
}
