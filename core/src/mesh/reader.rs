//! Turns the bytes of one connection into mesh messages.

use crate::wire::frame::FrameDecoder;
use crate::wire::mesh::{MeshMsg, MeshStreamError, MAX_BODY, MAX_NAME, MAX_SERVERS};
use bytes::BytesMut;

/// Largest frame payload the mesh accepts: a `Forward` with the longest names and body, or
/// an `Announce` with a full server list, fits; anything longer is refused at its header,
/// before its payload is buffered.
pub const MAX_MESH_PAYLOAD: usize = {
    let forward = 16 + 1 + 19 + 2 * (1 + MAX_NAME) + MAX_BODY;
    let announce = 19 + 1 + MAX_SERVERS * 19;
    if forward > announce {
        forward
    } else {
        announce
    }
};

/// A connection's receive buffer and frame decoder. Holds at most one frame in progress
/// (a header plus [`MAX_MESH_PAYLOAD`] bytes) beyond what the caller has not read yet.
#[derive(Debug)]
pub struct MsgReader {
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Default for MsgReader {
    fn default() -> Self {
        MsgReader { buf: BytesMut::new(), decoder: FrameDecoder::new(MAX_MESH_PAYLOAD) }
    }
}

impl MsgReader {
    /// Appends received bytes; read the messages with [`MsgReader::next_msg`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when no bytes wait to be read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next whole message, if any. After an error the connection must be closed.
    pub fn next_msg(&mut self) -> Option<Result<MeshMsg, MeshStreamError>> {
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(frame)) => Some(MeshMsg::decode(frame).map_err(MeshStreamError::from)),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let wire = [MeshMsg::Ping { token: 7 }.to_bytes(), MeshMsg::Leave.to_bytes()].concat();
        let mut reader = MsgReader::default();
        let mut got = Vec::new();
        for byte in wire {
            reader.push(&[byte]);
            while let Some(msg) = reader.next_msg() {
                got.push(msg.unwrap());
            }
        }
        assert_eq!(got, vec![MeshMsg::Ping { token: 7 }, MeshMsg::Leave]);
    }

    #[test]
    fn an_oversized_frame_is_refused_at_its_header() {
        let mut reader = MsgReader::default();
        reader.push(&[3, 0, 0xff, 0xff, 0, 0]);
        assert!(matches!(reader.next_msg(), Some(Err(MeshStreamError::Frame(_)))));
    }
}
