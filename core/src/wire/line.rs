//! Newline-terminated lines, for the text services that `nc` and `telnet` talk to.
//!
//! A line ends at `\n`; a `\r` just before it is dropped too, so `telnet`'s CRLF works.
//! The terminator is not part of the decoded line. A line longer than the decoder's cap is
//! an error, detected as soon as the cap is passed, without waiting for the newline: a
//! peer cannot make the buffer grow past `max_line + 1` bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Default cap on one line, terminator excluded: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// A line could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// More than `max` bytes arrived without a newline.
    #[error("line too long (limit {max} bytes)")]
    TooLong {
        /// The cap in force.
        max: usize,
    },
}

/// Incremental line decoder. Feed bytes into a `BytesMut` and call [`LineDecoder::decode`]
/// until it returns `Ok(None)`.
///
/// It remembers how far it has scanned, so bytes trickling in one at a time are scanned
/// once, not once per arrival.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_line: usize,
    scanned: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(DEFAULT_MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> LineDecoder {
        LineDecoder { max_line, scanned: 0 }
    }

    /// The cap in force.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Takes the next complete line off the front of `buf`, without its terminator.
    ///
    /// `Ok(None)` means more bytes are needed. After an error the stream is unusable: the
    /// caller should report it and close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        // A `\r\n` pair needs one byte beyond the cap, so look that far.
        let limit = buf.len().min(self.max_line.saturating_add(2));
        match buf[self.scanned.min(limit)..limit].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let newline = self.scanned.min(limit) + offset;
                let mut line = buf.split_to(newline + 1);
                line.truncate(newline);
                if line.last() == Some(&b'\r') {
                    line.truncate(newline - 1);
                }
                self.scanned = 0;
                if line.len() > self.max_line {
                    return Err(LineError::TooLong { max: self.max_line });
                }
                Ok(Some(line.freeze()))
            }
            None if buf.len() > self.max_line + 1 || (buf.len() == self.max_line + 1 && buf.last() != Some(&b'\r')) => {
                Err(LineError::TooLong { max: self.max_line })
            }
            None => {
                self.scanned = limit;
                Ok(None)
            }
        }
    }

    /// At end of stream: whatever is left in `buf` as a final, unterminated line (`nc`
    /// without `-q` and `printf` often send no trailing newline). `None` when `buf` is empty.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.scanned = 0;
        if buf.is_empty() {
            return Ok(None);
        }
        let mut rest = buf.split();
        if rest.last() == Some(&b'\r') {
            rest.truncate(rest.len() - 1);
        }
        if rest.len() > self.max_line {
            return Err(LineError::TooLong { max: self.max_line });
        }
        Ok(Some(rest.freeze()))
    }
}

/// Appends `line` and a `\n` to `out`. The caller guarantees `line` has no `\n` of its own.
pub fn encode_line(line: &[u8], out: &mut BytesMut) {
    out.reserve(line.len() + 1);
    out.put_slice(line);
    out.put_u8(b'\n');
}

/// `line` plus a `\n`, as one buffer ready to write.
pub fn line_bytes(line: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 1);
    encode_line(line, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut LineDecoder, buf: &mut BytesMut) -> Vec<Result<Bytes, LineError>> {
        let mut out = Vec::new();
        loop {
            match dec.decode(buf) {
                Ok(Some(line)) => out.push(Ok(line)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        let mut dec = LineDecoder::new(16);
        let mut buf = BytesMut::from(&b"hello\nworld\r\npartial"[..]);
        let lines = decode_all(&mut dec, &mut buf);
        assert_eq!(lines, vec![Ok(Bytes::from("hello")), Ok(Bytes::from("world"))]);
        assert_eq!(&buf[..], b"partial");
        assert_eq!(dec.finish(&mut buf), Ok(Some(Bytes::from("partial"))));
        assert_eq!(dec.finish(&mut buf), Ok(None));
    }

    #[test]
    fn line_at_the_cap_is_fine_one_past_is_an_error() {
        let mut dec = LineDecoder::new(4);
        let mut buf = BytesMut::from(&b"abcd\r\nabcd\n"[..]);
        assert_eq!(decode_all(&mut dec, &mut buf).len(), 2);
        let mut buf = BytesMut::from(&b"abcde"[..]);
        assert_eq!(dec.decode(&mut buf), Err(LineError::TooLong { max: 4 }));
    }

    #[test]
    fn overlong_line_is_caught_before_its_newline_arrives() {
        let mut dec = LineDecoder::new(8);
        let mut buf = BytesMut::new();
        for _ in 0..9 {
            assert_eq!(dec.decode(&mut buf), Ok(None));
            buf.extend_from_slice(b"x");
        }
        buf.extend_from_slice(b"x");
        assert_eq!(dec.decode(&mut buf), Err(LineError::TooLong { max: 8 }));
    }

    #[test]
    fn encode_appends_newline() {
        assert_eq!(&line_bytes(b"hi")[..], b"hi\n");
    }
}
