//! The field-reading mechanics of the spec readers in [`mesh`](crate::mesh) and
//! [`punch`](crate::punch): the fields of `docs/PROTOCOL.md` §4.1 read straight from the
//! bytes, with the spec's numbers, independently of the codec's own field readers (which
//! the readers check, so they must not share them).
//!
//! Each reader keeps its own message table, its own [`Verdict`](crate::mesh::Verdict) and
//! the rules only its protocol has; what a field breaks here is a [`Broken`], which each
//! reader turns into its verdict with `From`, so `?` carries it.
//!
//! Like the rest of the harness this file depends only on `std`:
//! `core/tests/mesh_props.rs` and `core/tests/punch_props.rs` include it with `#[path]`
//! as `spec`, next to the reader that names it `crate::spec`.

/// A rule of §4.1 that a field breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The payload ends inside a field, or goes on after the last one.
    Length,
    /// A name that is not 1–32 bytes of UTF-8 without whitespace or control characters.
    Name,
    /// An address whose family byte (the one given) is neither 4 nor 6.
    Address(u8),
    /// An address list whose count byte (the one given) is over the list's cap.
    Count(usize),
}

/// Reads `payload` as the fields of `layout` from left to right, each with `read`, and
/// then requires the payload to end: "a payload must end exactly where its last field
/// ends". The first rule broken is the answer.
pub fn read_payload<F: Copy, V: From<Broken>>(
    payload: &[u8],
    layout: &[F],
    read: impl Fn(F, &mut &[u8]) -> Result<(), V>,
) -> Result<(), V> {
    let mut rest = payload;
    for &field in layout {
        read(field, &mut rest)?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Broken::Length.into())
    }
}

/// Takes the next `n` bytes off `rest`, or says the payload is too short.
pub fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], Broken> {
    if rest.len() < n {
        return Err(Broken::Length);
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Takes the next byte off `rest` (a one-byte field: a count, a code, a status).
pub fn byte(rest: &mut &[u8]) -> Result<u8, Broken> {
    Ok(take(rest, 1)?[0])
}

/// Reads a name: length u8, then 1–32 bytes of UTF-8, no whitespace, no control
/// characters (see [`name_char_ok`]). A name that does not fit in the payload is a bad
/// length before its content is looked at.
pub fn name(rest: &mut &[u8]) -> Result<(), Broken> {
    let len = byte(rest)?;
    let name = take(rest, usize::from(len))?;
    let valid =
        (1..=32).contains(&name.len()) && std::str::from_utf8(name).is_ok_and(|name| name.chars().all(name_char_ok));
    if valid {
        Ok(())
    } else {
        Err(Broken::Name)
    }
}

/// Reads an address: family u8 (4 or 6), 4 or 16 bytes of address, port u16.
pub fn addr(rest: &mut &[u8]) -> Result<(), Broken> {
    let ip_len = match byte(rest)? {
        4 => 4,
        6 => 16,
        family => return Err(Broken::Address(family)),
    };
    take(rest, ip_len + 2)?;
    Ok(())
}

/// Reads an address list: count u8 (at most `max`), then that many addresses.
pub fn addrs(rest: &mut &[u8], max: u8) -> Result<(), Broken> {
    let count = byte(rest)?;
    if count > max {
        return Err(Broken::Count(usize::from(count)));
    }
    for _ in 0..count {
        addr(rest)?;
    }
    Ok(())
}

/// Takes the rest of the payload as text (a body, a reason): whether it is UTF-8 of at
/// most `max` bytes.
pub fn text_within(rest: &mut &[u8], max: usize) -> bool {
    let text = std::mem::take(rest);
    text.len() <= max && std::str::from_utf8(text).is_ok()
}

/// Whether `c` may appear in a name: it is neither whitespace (Unicode's `White_Space`
/// property, all 25 code points, listed here rather than asked of `char`) nor a control
/// character (general category `Cc`: U+0000–U+001F and U+007F–U+009F).
pub fn name_char_ok(c: char) -> bool {
    let white_space = matches!(
        c,
        '\u{9}'..='\u{d}'
            | '\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    );
    let control = matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}');
    !white_space && !control
}
