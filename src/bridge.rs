//! Plumbing between the engine's async byte streams and the store's blocking readers: the
//! builder and the cache never meet, so the binary connects an export stream to an ingest,
//! and a snapshot's chunk stream to an image import.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use envbuild_builder::engine::{ByteStream, EngineError};
use envbuild_cache::Store;
use envbuild_cache::manifest::Manifest;
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
    ChannelReader { rx, current: Bytes::new() }
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, EngineError>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A snapshot's verified tar stream, as the engine takes it.
pub fn snapshot_stream(store: Arc<dyn Store>, manifest: &Manifest, concurrency: usize) -> ByteStream {
    let stream =
        envbuild_cache::restore::chunk_stream(store, manifest.chunks.clone(), concurrency).map(|item| {
            item.map_err(|e| EngineError::Failed {
                operation: "read the snapshot".into(),
                detail: e.to_string(),
            })
        });
    Box::pin(stream)
}
