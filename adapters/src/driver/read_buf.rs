//! The reader's buffer: large reads for bulk streams, little memory for quiet ones.

use bytes::{Bytes, BytesMut};

/// Smallest read window once a connection has shrunk it.
const MIN_READ: usize = 2 * 1024;
/// Read window of a new connection. Small, because an idle connection holds its arena
/// (two windows) for as long as it is open: with 8 KiB, ten thousand idle tunnel streams
/// cost 16 KiB each per tunnel end in read buffers alone. A bulk transfer doubles its way
/// from here to the maximum in a few reads.
const FIRST_READ: usize = 2 * 1024;

/// Reads go into a window at the front of an arena; each read's bytes are split off as a
/// [`Bytes`] that shares the arena, so handing them to the machine task copies nothing.
///
/// The window doubles after a read that filled it (up to `max`, 64 KiB by default) and
/// halves after a read that used under a quarter of it, so a bulk transfer makes few large
/// reads while an idle or chatty connection holds only a small arena. When the arena runs
/// low it is reclaimed in place if every chunk handed out has been dropped (the usual case:
/// the machine task drops each chunk right after `handle_input`), else a new one is taken.
///
/// A new arena is zeroed once (a read needs an initialised `&mut [u8]`); a reclaimed one is
/// not zeroed again, since its bytes were initialised when it was new. In a bulk transfer
/// the chunks of the last few reads are still on their way to the machine (up to the
/// read-ahead limit), so an exhausted arena is rarely free at once: it waits among a few
/// spares, and the next arena is the first spare whose chunks are all gone. Zeroing each
/// new arena instead cost a `memset` of every byte read, about 5 % of a tunnel end's CPU
/// in bulk transfers.
#[derive(Debug)]
pub(super) struct ReadBuf {
    arena: Arena,
    spares: Vec<Arena>,
    window: usize,
    max: usize,
}

/// Most exhausted arenas kept for reuse: enough to cover the read-ahead of a bulk
/// transfer (256 KiB of 64 KiB reads, in arenas of two reads each).
const SPARES: usize = 4;

#[derive(Debug, Default)]
struct Arena {
    bytes: BytesMut,
    /// Start of the allocation, and how many bytes of it were initialised when it was
    /// new: every byte in `[base, base + initialised)` stays initialised for good.
    base: usize,
    initialised: usize,
}

impl Arena {
    /// A zeroed arena of `size` bytes.
    fn new(size: usize) -> Arena {
        let mut bytes = BytesMut::with_capacity(size);
        bytes.resize(size, 0);
        let base = bytes.as_ptr() as usize;
        Arena { bytes, base, initialised: size }
    }

    /// Makes the arena `size` bytes long again, without zeroing, if every chunk split off
    /// it has been dropped and its allocation was initialised that far; false otherwise.
    fn reclaim(&mut self, size: usize) -> bool {
        self.bytes.clear();
        if !(self.bytes.try_reclaim(size) && self.initialised_from_here() >= size) {
            return false;
        }
        // SAFETY: `try_reclaim` never allocates, so the buffer is still (a part of) the
        // allocation that starts at `base`, and `initialised_from_here` checked that its
        // next `size` bytes lie in the part that was zeroed when it was new. Nothing writes
        // uninitialised memory into an allocation, so they are still initialised (holding
        // stale data, which the next read overwrites).
        unsafe { self.bytes.set_len(size) };
        true
    }

    /// Bytes from the buffer's start to the end of its allocation's initialised part.
    fn initialised_from_here(&self) -> usize {
        let here = self.bytes.as_ptr() as usize;
        let end = self.base + self.initialised;
        if (self.base..end).contains(&here) {
            end - here
        } else {
            0
        }
    }
}

impl ReadBuf {
    /// A buffer whose reads never exceed `max` bytes.
    pub(super) fn new(max: usize) -> ReadBuf {
        let max = max.max(1);
        ReadBuf { arena: Arena::default(), spares: Vec::new(), window: FIRST_READ.min(max), max }
    }

    /// Space for the next read.
    pub(super) fn space(&mut self) -> &mut [u8] {
        if self.arena.bytes.len() < self.window {
            // Two windows per arena: a reclaim (no allocation) is then possible as soon as
            // the chunks of the previous arena are gone.
            let size = self.window * 2;
            if !self.arena.reclaim(size) {
                let spare = self.spares.iter_mut().position(|a| a.reclaim(size));
                let next = match spare {
                    Some(i) => self.spares.swap_remove(i),
                    None => Arena::new(size),
                };
                let used = std::mem::replace(&mut self.arena, next);
                // Only arenas that can serve this size again are worth keeping.
                if self.spares.len() < SPARES && used.initialised >= size {
                    self.spares.push(used);
                }
            }
        }
        &mut self.arena.bytes[..self.window]
    }

    /// The first `n` bytes of the space just read into.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        if n == self.window {
            self.window = (self.window * 2).min(self.max);
        } else if n < self.window / 4 {
            self.window = (self.window / 2).max(MIN_READ.min(self.max));
            // A quiet connection needs no spares: give their memory back.
            self.spares.clear();
        }
        self.arena.bytes.split_to(n).freeze()
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
    fn a_reclaimed_arena_is_reused_without_zeroing() {
        let mut buf = ReadBuf::new(4);
        let first = buf.space().as_ptr();
        // Fill both windows of the arena and drop the chunks: the arena is free again.
        for _ in 0..2 {
            buf.space().copy_from_slice(b"abcd");
            drop(buf.take(4));
        }
        let space = buf.space();
        assert_eq!(space.as_ptr(), first, "the same allocation is used again");
        assert_eq!(space, b"abcd", "stale bytes, not zeroed again");
    }

    #[test]
    fn an_arena_whose_chunks_are_still_held_waits_as_a_spare() {
        let mut buf = ReadBuf::new(4);
        let first = buf.space().as_ptr();
        let held: Vec<Bytes> = (0..2).map(|_| buf.take(4)).collect();
        // The first arena is exhausted and still shared: a second one is made.
        let second = buf.space().as_ptr();
        assert_ne!(second, first);
        drop(held);
        for _ in 0..2 {
            buf.space();
            drop(buf.take(4));
        }
        // The second arena is free again, and so is the first: no third allocation.
        let next = buf.space().as_ptr();
        assert!(next == first || next == second);
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
