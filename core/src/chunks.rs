//! A byte buffer that hands out what was written into it as [`Bytes`](bytes::Bytes) chunks sharing its
//! allocation, and reuses an allocation once every chunk taken from it is dropped.
//!
//! Two hot paths fill memory and pass it on without keeping it: a driver's socket reads
//! (each read handed to a machine) and the TLS layer's ciphertext (each record batch handed
//! to the driver to write). Taking a fresh allocation for each would cost page faults and
//! zeroing on every byte; [`ChunkBuf`] serves both from a few arenas that cycle.

use bytes::BytesMut;

/// Most exhausted arenas kept for reuse: enough to cover what is still in flight in a bulk
/// transfer. A driver's reads stay in flight until the target has taken their bytes (up to
/// a stream's window, with TLS records opened where they were read as well), and the TLS
/// ciphertext of the last writes until the driver has written it. With 4 spares a TLS
/// tunnel end still zeroed a fresh arena for most reads (`memset`, 2 % of its CPU); with 16
/// it reuses them. A spare is memory only while its chunks are in flight or the connection
/// stays busy: a quiet connection gives its spares back.
const SPARES: usize = 16;

/// Writes go into the space after the bytes written and not yet taken; [`take`] splits
/// those bytes off as one [`BytesMut`] that shares the arena, so handing them on copies
/// nothing.
///
/// When the current arena lacks room it is reclaimed in place if every chunk split off it
/// has been dropped; else it waits among a few spares, and the next arena is the first
/// spare whose chunks are all gone, or a new one. A new arena is zeroed once (a write needs
/// an initialised `&mut [u8]`); a reclaimed one is not zeroed again, since its bytes were
/// initialised when it was new.
///
/// Memory: the current arena plus at most 16 spares; [`release_spares`] gives the
/// spares back, for a connection that has gone quiet.
///
/// [`take`]: ChunkBuf::take
/// [`release_spares`]: ChunkBuf::release_spares
#[derive(Debug, Default)]
pub struct ChunkBuf {
    arena: Arena,
    /// Bytes at the front of the arena written and not yet taken.
    filled: usize,
    spares: Vec<Arena>,
}

#[derive(Debug, Default)]
struct Arena {
    /// Its length is the initialised part still ahead of the chunks split off.
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
        // stale data, which the next write overwrites).
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

impl ChunkBuf {
    /// An empty buffer; it allocates on the first [`space`](ChunkBuf::space).
    pub fn new() -> ChunkBuf {
        ChunkBuf::default()
    }

    /// Initialised space for at least `want` more bytes after those written and not yet
    /// taken (its contents are stale). If the arena lacks that room, the next one holds at
    /// least `arena` bytes and what is pending moves there. Mark what was written with
    /// [`commit`](ChunkBuf::commit).
    pub fn space(&mut self, want: usize, arena: usize) -> &mut [u8] {
        if self.arena.bytes.len() - self.filled < want {
            self.next_arena(want, arena);
        }
        &mut self.arena.bytes[self.filled..]
    }

    fn next_arena(&mut self, want: usize, arena: usize) {
        let size = arena.max(self.filled + want);
        // Only an arena with nothing pending can start over from its front.
        if self.filled == 0 && self.arena.reclaim(size) {
            return;
        }
        let spare = self.spares.iter_mut().position(|a| a.reclaim(size));
        let mut next = match spare {
            Some(i) => self.spares.swap_remove(i),
            None => Arena::new(size),
        };
        // Pending bytes are rare here: a writer's records that did not fit after others.
        next.bytes[..self.filled].copy_from_slice(&self.arena.bytes[..self.filled]);
        let mut used = std::mem::replace(&mut self.arena, next);
        used.bytes.truncate(0);
        // Only arenas that can serve this size again are worth keeping.
        if self.spares.len() < SPARES && used.initialised >= size {
            self.spares.push(used);
        }
    }

    /// Marks the first `n` bytes of the last [`space`](ChunkBuf::space) as written.
    ///
    /// # Panics
    /// If `n` is more than that space.
    pub fn commit(&mut self, n: usize) {
        assert!(self.filled + n <= self.arena.bytes.len(), "committed past the space");
        self.filled += n;
    }

    /// Bytes written and not yet taken.
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// Everything written and not yet taken, as one chunk (empty if nothing was).
    pub fn take(&mut self) -> BytesMut {
        let n = std::mem::take(&mut self.filled);
        self.arena.bytes.split_to(n)
    }

    /// Gives back the spare arenas, keeping the current one: for a connection whose
    /// traffic has become small.
    pub fn release_spares(&mut self) {
        self.spares.clear();
    }

    /// Gives back every arena if nothing is pending and the current one is larger than
    /// `keep` bytes: for a connection gone idle after a burst.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.filled == 0 && self.arena.initialised > keep {
            *self = ChunkBuf::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(buf: &mut ChunkBuf, bytes: &[u8], arena: usize) {
        buf.space(bytes.len(), arena)[..bytes.len()].copy_from_slice(bytes);
        buf.commit(bytes.len());
    }

    #[test]
    fn a_reclaimed_arena_is_reused_without_zeroing() {
        let mut buf = ChunkBuf::new();
        let first = buf.space(4, 8).as_ptr();
        // Fill the arena and drop the chunks: it is free again.
        for _ in 0..2 {
            write(&mut buf, b"abcd", 8);
            drop(buf.take());
        }
        let space = buf.space(4, 8);
        assert_eq!(space.as_ptr(), first, "the same allocation is used again");
        assert_eq!(&space[..4], b"abcd", "stale bytes, not zeroed again");
    }

    #[test]
    fn an_arena_whose_chunks_are_still_held_waits_as_a_spare() {
        let mut buf = ChunkBuf::new();
        let first = buf.space(4, 8).as_ptr();
        let held: Vec<BytesMut> = (0..2)
            .map(|_| {
                write(&mut buf, b"abcd", 8);
                buf.take()
            })
            .collect();
        // The first arena is exhausted and still shared: a second one is made.
        let second = buf.space(4, 8).as_ptr();
        assert_ne!(second, first);
        drop(held);
        for _ in 0..2 {
            write(&mut buf, b"wxyz", 8);
            drop(buf.take());
        }
        // The second arena is free again, and so is the first: no third allocation.
        let next = buf.space(4, 8).as_ptr();
        assert!(next == first || next == second);
    }

    #[test]
    fn chunks_keep_their_bytes_when_the_arena_is_reused() {
        let mut buf = ChunkBuf::new();
        write(&mut buf, b"hi", 16);
        let first = buf.take();
        for i in 0..100u8 {
            write(&mut buf, &[i; 7], 16);
            buf.take();
        }
        assert_eq!(&first[..], b"hi");
    }

    #[test]
    fn pending_bytes_move_with_the_arena_and_come_out_as_one_chunk() {
        let mut buf = ChunkBuf::new();
        write(&mut buf, b"head", 8);
        // Does not fit after the 4 pending bytes: a larger arena takes both.
        write(&mut buf, b"body-longer-than-the-arena", 8);
        assert_eq!(buf.pending(), 30);
        assert_eq!(&buf.take()[..], b"headbody-longer-than-the-arena");
        assert_eq!(buf.pending(), 0);
        assert!(buf.take().is_empty());
    }

    #[test]
    fn shrinking_gives_back_a_large_idle_arena_only() {
        let mut buf = ChunkBuf::new();
        write(&mut buf, b"x", 64);
        buf.shrink_to(16);
        assert_eq!(buf.pending(), 1, "pending bytes are never dropped");
        buf.take();
        buf.shrink_to(64);
        assert_eq!(buf.arena.initialised, 64, "an arena within the limit stays");
        buf.shrink_to(16);
        assert_eq!(buf.arena.initialised, 0);
    }
}
