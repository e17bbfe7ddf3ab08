//! Identifiers: connections the machine mints, listeners and UDP sockets the embedder names.

use std::fmt;

/// A TCP-like connection, named by the machine that owns it.
///
/// The machine mints the id (for an accepted connection in [`crate::Machine::accept`], for
/// an outbound one in the `Connect` output) and never reuses it, so a late report about a
/// closed connection can never be mistaken for a newer one.
///
/// An id has two parts: a 16-bit *space* and a 48-bit sequence number. A node that hosts
/// several machines gives each child its own space, so children mint ids independently and
/// the node routes an input by [`ConnId::space`] alone.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

impl ConnId {
    const SEQ_BITS: u32 = 48;
    const SEQ_MASK: u64 = (1 << Self::SEQ_BITS) - 1;

    /// The id numbered `seq` in `space`. Embedders normally get ids from [`ConnIds`].
    pub const fn new(space: u16, seq: u64) -> ConnId {
        ConnId(((space as u64) << Self::SEQ_BITS) | (seq & Self::SEQ_MASK))
    }

    /// The space this id was minted in.
    pub const fn space(self) -> u16 {
        (self.0 >> Self::SEQ_BITS) as u16
    }

    /// The sequence number within its space.
    pub const fn seq(self) -> u64 {
        self.0 & Self::SEQ_MASK
    }

    /// The raw 64-bit value, e.g. for logs or a driver's own tables.
    pub const fn to_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.space() == 0 {
            write!(f, "c{}", self.seq())
        } else {
            write!(f, "c{}.{}", self.space(), self.seq())
        }
    }
}

/// Mints [`ConnId`]s in one space, in increasing order, never the same twice.
///
/// 2^48 ids per space: at a million connections a second that lasts nine years; past it
/// `next` panics rather than reuse an id.
#[derive(Clone, Debug)]
pub struct ConnIds {
    space: u16,
    next_seq: u64,
}

impl ConnIds {
    /// An allocator for `space`, starting at sequence number 1.
    pub const fn new(space: u16) -> ConnIds {
        ConnIds { space, next_seq: 1 }
    }

    /// The space this allocator mints in.
    pub const fn space(&self) -> u16 {
        self.space
    }

    /// A fresh id.
    // Not `Iterator::next`: an allocator never ends, and panics rather than reuse an id.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> ConnId {
        assert!(self.next_seq <= ConnId::SEQ_MASK, "connection id space {} exhausted", self.space);
        let id = ConnId::new(self.space, self.next_seq);
        self.next_seq += 1;
        id
    }
}

/// A listening TCP socket, named by the embedder when it sets the listener up.
///
/// The machine uses it to tell its listeners apart (a tunnel's client port from its static
/// forwards, say). Node machines route accepts to children by listener id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ListenerId(pub u16);

/// A bound UDP socket, named by the embedder when it binds it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SocketId(pub u16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_space_and_never_repeat() {
        let mut a = ConnIds::new(3);
        let first = a.next();
        let second = a.next();
        assert_ne!(first, second);
        assert!(first < second);
        assert_eq!(first.space(), 3);
        assert_eq!(second.seq(), 2);
        assert_eq!(second.to_string(), "c3.2");
        assert_eq!(ConnIds::new(0).next().to_string(), "c1");
        assert_ne!(ConnIds::new(1).next(), ConnIds::new(2).next());
    }
}
