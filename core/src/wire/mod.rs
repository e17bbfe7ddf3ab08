//! Pure encoders and decoders for everything Switchyard puts on the wire.
//!
//! Nothing here knows about connections or state machines: each codec turns bytes into
//! typed values and back, and refuses malformed input with a typed error. The byte-by-byte
//! description of every format is in `docs/PROTOCOL.md`.

pub(crate) mod fields;
pub mod frame;
pub mod line;
pub mod mesh;
pub mod proxy;
pub mod punch;
pub mod tunnel;

pub use frame::{Frame, FrameDecoder, FrameError, FrameType};
pub use line::{LineDecoder, LineError};

/// The longest prefix of `text` that is at most `max` bytes and ends on a character
/// boundary: how encoders cut reason texts to their cap.
pub(crate) fn utf8_prefix(text: &str, max: usize) -> &[u8] {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}
