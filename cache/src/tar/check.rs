//! Checking that bytes on their way somewhere else are a whole tar stream, without holding
//! them: [`checked`] passes a reader's bytes through unchanged and parses a copy of them on a
//! thread of its own, for writers that store a stream as it is (an OCI layer) but must not
//! hand out one that is not a file system.

use std::io::Read;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::{TarError, TarReader};

/// Pieces in flight to the checking thread: memory stays bounded by this many reads.
const IN_FLIGHT: usize = 16;

/// A reader that passes `inner`'s bytes through while [`Checker`] parses them.
#[derive(Debug)]
pub struct Checked<R> {
    inner: R,
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
}

/// The parse of what passed through a [`Checked`] reader.
#[derive(Debug)]
pub struct Checker {
    thread: JoinHandle<Result<usize, TarError>>,
}

/// `inner`'s bytes, checked as a tar stream as they pass.
pub fn checked<R: Read>(inner: R) -> (Checked<R>, Checker) {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let thread = std::thread::spawn(move || {
        let mut tar = TarReader::new(Received { rx, current: Vec::new(), at: 0 });
        let mut entries = 0;
        while tar.next_entry()?.is_some() {
            entries += 1;
        }
        if !tar.saw_end_marker() {
            return Err(TarError::NoEndMarker { offset: tar.position() });
        }
        tar.drain()?;
        if entries == 0 {
            return Err(TarError::Empty);
        }
        Ok(entries)
    });
    (Checked { inner, tx: Some(tx) }, Checker { thread })
}

impl Checker {
    /// Waits for the parse of everything read through the [`Checked`] reader (which must be
    /// dropped, or read to its end, first); the number of entries, or why it is not a tar.
    pub fn finish(self) -> Result<usize, TarError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(TarError::Io(std::io::Error::other("the tar check stopped"))))
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            // The end: the checker sees the end of its input too.
            self.tx = None;
        } else if let Some(tx) = &self.tx
            && tx.send(buf[..n].to_vec()).is_err()
        {
            // The checker stopped early (not a tar); its error is reported by `finish`.
            self.tx = None;
        }
        Ok(n)
    }
}

impl<R> Drop for Checked<R> {
    fn drop(&mut self) {
        self.tx = None;
    }
}

/// The checking thread's side of the channel, as a reader.
struct Received {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.current = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = (self.current.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(bytes: Vec<u8>) -> (Vec<u8>, Result<usize, TarError>) {
        let (mut reader, checker) = checked(std::io::Cursor::new(bytes));
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        drop(reader);
        (out, checker.finish())
    }

    #[test]
    fn bytes_pass_unchanged_and_only_whole_tars_pass_the_check() {
        let tar = crate::testing::write_tar(&[crate::testing::RawEntry::file(
            "a",
            &crate::testing::noise(70_000, 1),
        )]);
        let (out, checked) = pass(tar.clone());
        assert_eq!(out, tar);
        assert_eq!(checked.unwrap(), 1);
        let (out, checked) = pass(crate::testing::noise(100_000, 2));
        assert_eq!(out.len(), 100_000, "the bytes still pass");
        assert!(checked.is_err());
        assert!(matches!(pass(tar[..tar.len() - 1024].to_vec()).1, Err(TarError::NoEndMarker { .. })));
        assert!(matches!(pass(vec![0; 1024]).1, Err(TarError::Empty)));
    }
}
