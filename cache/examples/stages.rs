//! Times each CPU stage of an ingest alone on one tar file, to see where import time goes:
//! `cargo run --release -p envbuild-cache --example stages -- FILE`. The stages run one after
//! the other on one core; the real pipeline runs the scan (chunking, tar, xxh3) beside the
//! chunk workers (sha256, zstd).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use envbuild_cache::chunker::{ChunkParams, Chunker};

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: stages FILE");
    let data = std::fs::read(&path)?;
    println!("{path}: {} bytes", data.len());

    let t = Instant::now();
    let mut chunker = Chunker::new(ChunkParams::default());
    let mut chunks = Vec::new();
    let mut digests = Vec::new();
    for piece in data.chunks(256 * 1024) {
        chunker.push(piece, &mut chunks);
        digests.extend(chunks.drain(..).map(|c| c.len()));
    }
    println!("chunking  {:>7.3} s  ({} chunks)", t.elapsed().as_secs_f64(), digests.len());

    let mut chunker = Chunker::new(ChunkParams::default());
    let mut all = Vec::new();
    for piece in data.chunks(1 << 20) {
        chunker.push(piece, &mut all);
    }
    chunker.finish(&mut all);

    let t = Instant::now();
    for c in &all {
        std::hint::black_box(envbuild_cache::Digest::of(c));
    }
    println!("sha256    {:>7.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut stored = 0;
    for c in &all {
        stored += envbuild_cache::chunk::compress(c, 3)?.len();
    }
    println!("zstd -3   {:>7.3} s  ({stored} bytes stored)", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut reader = envbuild_cache::tar::TarReader::new(&data[..]);
    let mut buf = vec![0; 256 * 1024];
    let mut entries = 0;
    while reader.next_entry().map_err(std::io::Error::other)?.is_some() {
        entries += 1;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        loop {
            let n = reader.read_data(&mut buf).map_err(std::io::Error::other)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        std::hint::black_box(hasher.digest128());
    }
    println!("tar+xxh3  {:>7.3} s  ({entries} entries)", t.elapsed().as_secs_f64());
    Ok(())
}
