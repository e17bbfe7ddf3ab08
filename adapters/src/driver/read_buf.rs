//! The reader's buffer: large reads for bulk streams, little memory for quiet ones.

use bytes::{Bytes, BytesMut};

/// Smallest read window once a connection has shrunk it.
const MIN_READ: usize = 4 * 1024;
/// Read window of a new connection.
const FIRST_READ: usize = 8 * 1024;

/// Reads go into a window at the front of an arena; each read's bytes are split off as a
/// [`Bytes`] that shares the arena, so handing them to the machine task copies nothing.
///
/// The window doubles after a read that filled it (up to `max`, 64 KiB by default) and
/// halves after a read that used under a quarter of it, so a bulk transfer makes few large
/// reads while an idle or chatty connection holds only a small arena. When the arena runs
/// low it is reclaimed in place if every chunk handed out has been dropped (the usual case:
/// the machine task drops each chunk right after `handle_input`), else a new one is taken.
#[derive(Debug)]
pub(super) struct ReadBuf {
    arena: BytesMut,
    window: usize,
    max: usize,
}

impl ReadBuf {
    /// A buffer whose reads never exceed `max` bytes.
    pub(super) fn new(max: usize) -> ReadBuf {
        let max = max.max(1);
        ReadBuf { arena: BytesMut::new(), window: FIRST_READ.min(max), max }
    }

    /// Space for the next read.
    pub(super) fn space(&mut self) -> &mut [u8] {
        if self.arena.len() < self.window {
            // Two windows per arena: a reclaim (no allocation) is then possible as soon as
            // the chunks of the previous arena are gone. Zeroing happens once per byte.
            let size = self.window * 2;
            self.arena.clear();
            self.arena.reserve(size);
            self.arena.resize(size, 0);
        }
        &mut self.arena[..self.window]
    }

    /// The first `n` bytes of the space just read into.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        if n == self.window {
            self.window = (self.window * 2).min(self.max);
        } else if n < self.window / 4 {
            self.window = (self.window / 2).max(MIN_READ.min(self.max));
        }
        self.arena.split_to(n).freeze()
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
    fn chunks_keep_their_bytes_when_the_arena_is_reused() {
        let mut buf = ReadBuf::new(16);
        buf.space()[..2].copy_from_slice(b"hi");
        let first = buf.take(2);
        for _ in 0..100 {
            buf.space().fill(b'x');
            buf.take(1);
        }
        assert_eq!(&first[..], b"hi");
    }
}
