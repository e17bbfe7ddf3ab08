//! Field encodings shared by the binary message codecs (mesh, punch, the tunnel's `Open`): names, socket
//! addresses, address lists, and a cursor that reads them off a frame payload.
//!
//! The layouts are in `docs/PROTOCOL.md` §4.1: a *name* is a length byte and 1–32 bytes of
//! UTF-8 without whitespace or control characters; an *addr* is a family byte (4 or 6), the
//! address (4 or 16 bytes) and a port (u16 BE); a list of addrs is a count byte and that
//! many addrs. Each codec keeps its own error enum; [`FieldError`] is how this module
//! builds one.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use uuid::Uuid;

/// Longest name (user or peer id), in bytes.
pub const MAX_NAME: usize = 32;

/// True when `name` is a valid name field: 1–[`MAX_NAME`] bytes of UTF-8 without
/// whitespace or control characters (chat syntaxes split on the first space).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The errors a codec's enum must be able to express for the shared fields.
pub(crate) trait FieldError: Sized {
    /// The payload ended before a field did, or went on after the last one.
    fn bad_length(what: &'static str, len: usize) -> Self;
    /// A name field is not a valid name.
    fn bad_name() -> Self;
    /// An address has an unknown family byte.
    fn bad_address(family: u8) -> Self;
    /// An address list is longer than the codec allows.
    fn too_many_addrs(count: usize) -> Self;
}

/// Reads fields off a payload, remembering which message it is for errors.
pub(crate) struct Fields<E> {
    what: &'static str,
    len: usize,
    rest: Bytes,
    error: std::marker::PhantomData<E>,
}

impl<E: FieldError> Fields<E> {
    /// A cursor over `payload`, the payload of the message called `what`.
    pub(crate) fn new(what: &'static str, payload: Bytes) -> Fields<E> {
        Fields { what, len: payload.len(), rest: payload, error: std::marker::PhantomData }
    }

    fn short(&self) -> E {
        E::bad_length(self.what, self.len)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, E> {
        if self.rest.is_empty() {
            return Err(self.short());
        }
        Ok(self.rest.get_u8())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, E> {
        if self.rest.len() < 8 {
            return Err(self.short());
        }
        Ok(self.rest.get_u64())
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, E> {
        if self.rest.len() < n {
            return Err(self.short());
        }
        Ok(self.rest.split_to(n))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], E> {
        let b = self.bytes(N)?;
        Ok(b[..].try_into().expect("N bytes"))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, E> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    pub(crate) fn name(&mut self) -> Result<String, E> {
        let n = usize::from(self.u8()?);
        let raw = self.bytes(n)?;
        let name = std::str::from_utf8(&raw).map_err(|_| E::bad_name())?;
        if !is_valid_name(name) {
            return Err(E::bad_name());
        }
        Ok(name.to_owned())
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, E> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            family => return Err(E::bad_address(family)),
        };
        Ok(SocketAddr::new(ip, u16::from_be_bytes(self.array()?)))
    }

    /// A count byte, at most `max`, then that many addrs.
    pub(crate) fn addrs(&mut self, max: usize) -> Result<Vec<SocketAddr>, E> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(E::too_many_addrs(n));
        }
        (0..n).map(|_| self.addr()).collect()
    }

    /// The rest of the payload, raw.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }

    /// The rest of the payload as UTF-8 of at most `max` bytes.
    pub(crate) fn text(&mut self, max: usize, error: E) -> Result<String, E> {
        let raw = self.rest();
        if raw.len() > max {
            return Err(error);
        }
        String::from_utf8(raw.to_vec()).map_err(|_| error)
    }

    /// Every byte must have been read.
    pub(crate) fn end(self) -> Result<(), E> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.short())
        }
    }
}

/// Appends a name field. Panics on a caller bug: a name [`is_valid_name`] refuses.
pub(crate) fn put_name(out: &mut BytesMut, name: &str) {
    assert!(is_valid_name(name), "invalid name {name:?}");
    out.put_u8(name.len() as u8);
    out.put_slice(name.as_bytes());
}

/// Appends an addr field.
pub(crate) fn put_addr(out: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

/// Appends a count byte and the addrs. Panics on a caller bug: more than `max` addrs.
pub(crate) fn put_addrs(out: &mut BytesMut, addrs: &[SocketAddr], max: usize) {
    assert!(addrs.len() <= max && max <= usize::from(u8::MAX), "address list over {max} entries");
    out.put_u8(addrs.len() as u8);
    for addr in addrs {
        put_addr(out, addr);
    }
}
