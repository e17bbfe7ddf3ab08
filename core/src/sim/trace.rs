//! The event trace: a stable hash of everything that happened, and the last few lines of it
//! in words for failure reports.

use crate::machine::{Input, Output};
use crate::time::Instant;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// 64-bit FNV-1a, written out because `std`'s hashers may change between Rust versions and
/// a recorded trace hash must not.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(super) fn new() -> Fnv64 {
        Fnv64(Self::OFFSET)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(super) fn finish(self) -> u64 {
        self.0
    }
}

/// Every input a machine got and every output it gave, folded into one hash, plus a bounded
/// tail of recent lines in words.
///
/// The tail is capped at [`NetConfig::trace_tail`](super::NetConfig::trace_tail) lines; the
/// oldest line is dropped when it is full. The hash covers every record in full, payloads
/// included, however long the run.
pub(super) struct Trace {
    hash: Fnv64,
    records: u64,
    tail: VecDeque<String>,
    tail_cap: usize,
}

/// How many payload bytes a tail line shows; the hash always covers all of them.
const PREVIEW: usize = 40;

impl Trace {
    pub(super) fn new(tail_cap: usize) -> Trace {
        Trace { hash: Fnv64::new(), records: 0, tail: VecDeque::new(), tail_cap }
    }

    /// Records that `what` happened on `host` at `at`, carrying `payload`.
    pub(super) fn record(&mut self, at: Instant, host: &str, what: &str, payload: &[u8]) {
        self.records += 1;
        self.hash.write(&at.as_micros().to_le_bytes());
        self.hash.write(host.as_bytes());
        self.hash.write(&[0xff]);
        self.hash.write(what.as_bytes());
        self.hash.write(&(payload.len() as u64).to_le_bytes());
        self.hash.write(payload);
        if self.tail_cap == 0 {
            return;
        }
        if self.tail.len() == self.tail_cap {
            self.tail.pop_front();
        }
        let mut line = format!("{at} {host}: {what}");
        if !payload.is_empty() {
            let shown = &payload[..payload.len().min(PREVIEW)];
            let more = if payload.len() > PREVIEW { "…" } else { "" };
            let _ = write!(line, " {}B \"{}{more}\"", payload.len(), shown.escape_ascii());
        }
        self.tail.push_back(line);
    }

    pub(super) fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub(super) fn records(&self) -> u64 {
        self.records
    }

    pub(super) fn tail(&self) -> String {
        let mut out = String::new();
        for line in &self.tail {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// An input in words, and its payload.
pub(super) fn describe_input<'i>(input: &'i Input<'_>) -> (String, &'i [u8]) {
    match input {
        Input::Connected { conn, local } => (format!("in Connected {conn} local {local}"), &[]),
        Input::ConnectFailed { conn, error } => (format!("in ConnectFailed {conn} {error:?}"), &[]),
        Input::Received { conn, bytes } => (format!("in Received {conn}"), bytes),
        Input::ReadClosed { conn } => (format!("in ReadClosed {conn}"), &[]),
        Input::Closed { conn, reason } => (format!("in Closed {conn} {reason:?}"), &[]),
        Input::Sent { conn, bytes } => (format!("in Sent {conn} {bytes}"), &[]),
        Input::Datagram { socket, from, bytes } => (format!("in Datagram {socket:?} from {from}"), bytes),
        Input::Listened { listener, result } => (format!("in Listened {listener:?} {result:?}"), &[]),
    }
}

/// An output in words, and its payload. Events arrive already rendered with `Debug`.
pub(super) fn describe_output(output: &Output<String>) -> (String, &[u8]) {
    match output {
        Output::Connect { conn, to } => (format!("out Connect {conn} to {to}"), &[]),
        Output::Write { conn, bytes } => (format!("out Write {conn}"), bytes),
        Output::Close { conn, how } => (format!("out Close {conn} {how:?}"), &[]),
        Output::PauseReading { conn } => (format!("out PauseReading {conn}"), &[]),
        Output::ResumeReading { conn } => (format!("out ResumeReading {conn}"), &[]),
        Output::Transmit { socket, to, bytes } => (format!("out Transmit {socket:?} to {to}"), bytes),
        Output::Listen { listener, addr } => (format!("out Listen {listener:?} on {addr}"), &[]),
        Output::Unlisten { listener } => (format!("out Unlisten {listener:?}"), &[]),
        Output::Event(event) => (format!("out Event {event}"), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv64::new();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn tail_keeps_the_last_lines_and_the_hash_sees_payloads() {
        let mut a = Trace::new(2);
        let mut b = Trace::new(0);
        for i in 0..3u64 {
            a.record(Instant::from_micros(i), "h", &format!("line {i}"), b"x");
            b.record(Instant::from_micros(i), "h", &format!("line {i}"), b"x");
        }
        assert_eq!(a.tail(), "0.000001s h: line 1 1B \"x\"\n0.000002s h: line 2 1B \"x\"\n");
        assert_eq!(a.hash(), b.hash(), "the tail must not affect the hash");
        b.record(Instant::ZERO, "h", "same", b"1");
        a.record(Instant::ZERO, "h", "same", b"2");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.records(), 4);
    }
}
