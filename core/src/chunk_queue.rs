//! Received bytes kept for later, in the chunks they arrived in, without copying the large
//! ones.
//!
//! A received chunk ([`Input::Received`](crate::machine::Input::Received)) shares the
//! driver's read arena, and keeping it keeps that whole arena (up to two read windows of
//! 64 KiB) from being reused. Bulk data arrives in chunks large enough that sharing is
//! cheap; a trickle of small chunks kept for a slow reader would hold an arena each, so
//! chunks under [`COPY_BELOW`] bytes are copied out instead: copying them costs little, and
//! what is kept then never holds more than `arena / COPY_BELOW` times its own size.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Chunks shorter than this are copied when kept; longer ones are kept as they are.
pub const COPY_BELOW: usize = 2 * 1024;

/// A received chunk in a form to keep: itself if it is large, a copy if it is small.
pub fn keep(chunk: BytesMut) -> Bytes {
    if chunk.len() < COPY_BELOW {
        Bytes::copy_from_slice(&chunk)
    } else {
        chunk.freeze()
    }
}

/// Bytes waiting in order: large chunks as they came, small ones copied together into one
/// growing tail so that a run of small reads costs one buffer (and, once sent, one
/// `iovec`) rather than one each.
///
/// Unbounded itself: its owner caps what it pushes (the multiplexer pauses a connection's
/// reads once its queue holds `stream_buffer` bytes).
#[derive(Debug, Default)]
pub struct ChunkQueue {
    /// Chunks before `tail`, oldest first.
    chunks: VecDeque<Bytes>,
    /// Small chunks copied together, after every chunk in `chunks`.
    tail: BytesMut,
    len: usize,
}

impl ChunkQueue {
    /// An empty queue.
    pub fn new() -> ChunkQueue {
        ChunkQueue::default()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk`: kept as it is if large, copied into the tail if small.
    pub fn push(&mut self, chunk: BytesMut) {
        self.len += chunk.len();
        if chunk.len() < COPY_BELOW {
            self.tail.extend_from_slice(&chunk);
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.chunks.push_back(chunk.freeze());
    }

    /// Takes the first `n` bytes (or all, if fewer are queued), handing them to `each` in
    /// order as one or more chunks, without copying.
    pub fn take(&mut self, n: usize, mut each: impl FnMut(Bytes)) {
        let mut left = n.min(self.len);
        self.len -= left;
        while left > 0 {
            let piece = match self.chunks.front_mut() {
                Some(front) if front.len() <= left => self.chunks.pop_front().unwrap_or_default(),
                Some(front) => front.split_to(left),
                None => self.tail.split_to(left).freeze(),
            };
            left -= piece.len();
            each(piece);
        }
        if self.len == 0 && self.tail.capacity() > 4 * COPY_BELOW {
            // An emptied queue keeps no more than a small tail's room.
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn chunk(len: usize, byte: u8) -> BytesMut {
        BytesMut::from(&vec![byte; len][..])
    }

    #[test]
    fn large_chunks_are_kept_and_small_ones_copied() {
        let big = chunk(COPY_BELOW, 1);
        let at = big.as_ptr();
        assert_eq!(keep(big).as_ptr(), at, "kept without a copy");
        let small = chunk(COPY_BELOW - 1, 1);
        let at = small.as_ptr();
        assert_ne!(keep(small).as_ptr(), at, "copied out");
    }

    #[test]
    fn small_chunks_share_one_buffer_and_large_ones_stay_whole() {
        let mut queue = ChunkQueue::new();
        let big = chunk(4096, 2);
        let at = big.as_ptr();
        queue.push(chunk(3, 1));
        queue.push(chunk(4, 1));
        queue.push(big);
        let mut pieces = Vec::new();
        queue.take(usize::MAX, |piece| pieces.push(piece));
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [7, 4096]);
        assert_eq!(pieces[1].as_ptr(), at, "the large chunk was not copied");
        assert!(queue.is_empty());
    }

    quickcheck! {
        /// Whatever the chunk sizes and however it is drained, the bytes come out in order
        /// and `len` counts what is left.
        fn takes_return_the_bytes_in_order(sizes: Vec<u16>, takes: Vec<u16>) -> bool {
            let mut queue = ChunkQueue::new();
            let mut sent = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let bytes: Vec<u8> = (0..*size as usize).map(|j| (i * 7 + j) as u8).collect();
                sent.extend_from_slice(&bytes);
                queue.push(BytesMut::from(&bytes[..]));
            }
            let mut got = Vec::new();
            for take in takes.iter().chain(std::iter::once(&u16::MAX)) {
                let before = queue.len();
                let mut taken = 0;
                queue.take(usize::from(*take), |piece| {
                    taken += piece.len();
                    got.extend_from_slice(&piece);
                });
                if taken != usize::from(*take).min(before) || queue.len() != before - taken {
                    return false;
                }
            }
            while !queue.is_empty() {
                queue.take(usize::MAX, |piece| got.extend_from_slice(&piece));
            }
            got == sent
        }
    }
}
