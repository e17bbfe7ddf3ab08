//! The reader's buffer: large reads for bulk streams, little memory for quiet ones.

use bytes::BytesMut;
use switchyard_core::chunks::ChunkBuf;

/// Smallest read window once a connection has shrunk it.
const MIN_READ: usize = 2 * 1024;
/// Read window of a new connection. Small, because an idle connection holds its arena
/// (two windows) for as long as it is open: with 8 KiB, ten thousand idle tunnel streams
/// cost 16 KiB each per tunnel end in read buffers alone. A bulk transfer doubles its way
/// from here to the maximum in a few reads.
const FIRST_READ: usize = 2 * 1024;

/// Reads go into a window of a [`ChunkBuf`]; each read's bytes are split off as a
/// [`BytesMut`] that shares the arena, so handing them to the machine task copies nothing.
///
/// The window doubles after a read that filled it (up to `max`, 64 KiB by default) and
/// halves after a read that used under a quarter of it, so a bulk transfer makes few large
/// reads while an idle or chatty connection holds only a small arena (two windows).
///
/// In a bulk transfer the chunks of the last few reads are still on their way to the
/// machine (up to the read-ahead limit), so an exhausted arena is rarely free at once: the
/// [`ChunkBuf`] keeps it among a few spares and reuses it without zeroing. Zeroing each
/// new arena instead cost a `memset` of every byte read, about 5 % of a tunnel end's CPU
/// in bulk transfers.
#[derive(Debug)]
pub(super) struct ReadBuf {
    chunks: ChunkBuf,
    window: usize,
    max: usize,
}

impl ReadBuf {
    /// A buffer whose reads never exceed `max` bytes.
    pub(super) fn new(max: usize) -> ReadBuf {
        let max = max.max(1);
        ReadBuf { chunks: ChunkBuf::new(), window: FIRST_READ.min(max), max }
    }

    /// Space for the next read.
    pub(super) fn space(&mut self) -> &mut [u8] {
        // Two windows per arena: a reclaim (no allocation) is then possible as soon as the
        // chunks of the previous arena are gone.
        let window = self.window;
        &mut self.chunks.space(window, window * 2)[..window]
    }

    /// Gives the arena back if the connection is quiet (its reads are small) and nothing
    /// is pending: for a connection about to wait for its next bytes, perhaps for hours.
    /// An idle connection then holds no read buffer; its next read takes a fresh arena.
    pub(super) fn release_if_quiet(&mut self) -> bool {
        if self.window > MIN_READ.min(self.max) {
            return false;
        }
        self.chunks.shrink_to(0);
        true
    }

    /// The first `n` bytes of the space just read into.
    pub(super) fn take(&mut self, n: usize) -> BytesMut {
        if n == self.window {
            self.window = (self.window * 2).min(self.max);
        } else if n < self.window / 4 {
            self.window = (self.window / 2).max(MIN_READ.min(self.max));
            // A quiet connection needs no spares: give their memory back.
            self.chunks.release_spares();
        }
        self.chunks.commit(n);
        self.chunks.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_on_full_reads_and_shrinks_on_small_ones() {
        let mut buf = ReadBuf::new(64 * 1024);
        assert_eq!(buf.space().len(), FIRST_READ);
        let n = buf.space().len();
        buf.space()[..3].copy_from_slice(b"abc");
        let chunk = buf.take(n);
        assert_eq!(&chunk[..3], b"abc");
        assert_eq!(buf.space().len(), 2 * FIRST_READ);
        for _ in 0..10 {
            let n = buf.space().len();
            buf.take(n);
        }
        assert_eq!(buf.space().len(), 64 * 1024);
        for _ in 0..10 {
            buf.space();
            buf.take(1);
        }
        assert_eq!(buf.space().len(), MIN_READ);
    }

    #[test]
    fn only_a_quiet_buffer_gives_its_arena_back_and_reads_on_after() {
        let mut buf = ReadBuf::new(64 * 1024);
        let n = buf.space().len();
        let bulk = buf.take(n);
        assert!(!buf.release_if_quiet(), "a buffer whose reads fill it is not quiet");
        drop(bulk);
        for _ in 0..4 {
            buf.space();
            buf.take(1);
        }
        let arena = buf.space().as_ptr();
        let held = buf.take(1);
        assert!(buf.release_if_quiet());
        assert_eq!(buf.chunks.pending(), 0);
        buf.space()[..2].copy_from_slice(b"hi");
        assert_ne!(buf.space().as_ptr(), arena, "a fresh arena: the old one is not kept");
        assert_eq!(&buf.take(2)[..], b"hi");
        assert_eq!(held.len(), 1, "bytes already taken live on in their chunk");
    }
}
