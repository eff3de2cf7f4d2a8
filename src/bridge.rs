//! Plumbing between the engine's async byte streams and the store's blocking readers: the
//! builder and the cache never meet, so the workflows connect an export stream to an ingest,
//! and a snapshot's chunk stream to an image import.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use envbuild_builder::engine::{ByteStream, EngineError};
use envbuild_cache::Store;
use envbuild_cache::manifest::Manifest;
use envbuild_cache::restore::ChannelReader;
use futures::StreamExt;

/// A blocking reader over an async byte stream (read it from a blocking thread). A task pulls
/// the stream into a small channel, so memory stays bounded.
pub fn stream_reader(mut stream: ByteStream) -> impl Read + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, EngineError>>(8);
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    ChannelReader::new(rx)
}

/// A snapshot's verified tar stream, as the engine takes it.
pub fn snapshot_stream(store: Arc<dyn Store>, manifest: &Manifest, concurrency: usize) -> ByteStream {
    let stream =
        envbuild_cache::restore::chunk_stream(store, manifest.chunks.clone(), concurrency).map(|item| {
            item.map_err(|e| EngineError::Failed {
                operation: "read the snapshot".into(),
                source: Box::new(e),
            })
        });
    Box::pin(stream)
}
