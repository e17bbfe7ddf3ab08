//! The reliable chat channel between two punched peers: sequence numbers, cumulative
//! acknowledgements and resends, so no message is lost or delivered twice across loss,
//! reordering, duplication or a change of path (direct ↔ relayed).
//!
//! It is pure bookkeeping: the [`Peer`](super::Peer) asks it what to (re)send and when, and
//! feeds it what arrived. Each side numbers its messages from 0 within its *epoch*, a random
//! number drawn when the peer machine starts; a receiver that sees a new epoch knows the
//! sender started over (restarted) and resets what it expects.
//!
//! **Caps.** At most `max_unacked` messages wait for an acknowledgement: [`Sender::push`]
//! refuses more. A receiver holds at most [`REORDER_WINDOW`] messages that arrived ahead of a
//! gap; anything further ahead is dropped (the sender resends it).

use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Messages a receiver buffers ahead of a gap.
pub const REORDER_WINDOW: u64 = 256;

/// First resend delay before any round trip was measured.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Shortest resend delay.
pub const MIN_RTO: Duration = Duration::from_millis(100);
/// Longest resend delay (after backing off).
pub const MAX_RTO: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
struct Unacked {
    seq: u64,
    body: String,
    /// When to send it (again); `None` while no path exists to send it on.
    due: Instant,
    backoff: Duration,
}

/// The sending half: numbers messages and resends them until acknowledged.
#[derive(Debug, Clone)]
pub struct Sender {
    epoch: u64,
    next_seq: u64,
    unacked: VecDeque<Unacked>,
    max_unacked: usize,
    rto: Duration,
}

/// Why [`Sender::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} messages are waiting for the peer's acknowledgement (the cap): try again later")]
pub struct QueueFull(pub usize);

impl Sender {
    /// A sender in `epoch` that keeps at most `max_unacked` messages in flight.
    pub fn new(epoch: u64, max_unacked: usize) -> Sender {
        Sender { epoch, next_seq: 0, unacked: VecDeque::new(), max_unacked, rto: INITIAL_RTO }
    }

    /// This sender's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Queues `body` to be sent at once (at `now`); returns its sequence number.
    pub fn push(&mut self, now: Instant, body: String) -> Result<u64, QueueFull> {
        if self.unacked.len() >= self.max_unacked {
            return Err(QueueFull(self.max_unacked));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back(Unacked { seq, body, due: now, backoff: self.rto });
        Ok(seq)
    }

    /// Updates the resend delay from a measured round trip: three times it, within bounds.
    pub fn observe_rtt(&mut self, rtt: Duration) {
        self.rto = (rtt * 3).clamp(MIN_RTO, MAX_RTO);
    }

    /// The messages due at `now`, each rescheduled with exponential backoff.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for m in self.unacked.iter_mut().filter(|m| m.due <= now) {
            out.push((m.seq, m.body.clone()));
            m.due = now + m.backoff;
            m.backoff = (m.backoff * 2).min(MAX_RTO);
        }
        out
    }

    /// Makes every unacknowledged message due at `now` with a fresh backoff: a new path
    /// just formed, so what was sent on the old one may never have arrived.
    pub fn resend_all(&mut self, now: Instant) {
        for m in &mut self.unacked {
            m.due = now;
            m.backoff = self.rto;
        }
    }

    /// The earliest resend.
    pub fn next_due(&self) -> Option<Instant> {
        self.unacked.iter().map(|m| m.due).min()
    }

    /// The peer acknowledged everything of `epoch` below `next`. Returns how many messages
    /// that newly acknowledged.
    pub fn on_ack(&mut self, epoch: u64, next: u64) -> usize {
        if epoch != self.epoch {
            return 0;
        }
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|m| m.seq < next) {
            self.unacked.pop_front();
        }
        before - self.unacked.len()
    }
}

/// The receiving half: delivers each message once, in order.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    epoch: Option<u64>,
    next: u64,
    ahead: BTreeMap<u64, String>,
}

impl Receiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Receiver {
        Receiver::default()
    }

    /// Takes one message; returns the messages now deliverable in order (possibly none: a
    /// duplicate, or one ahead of a gap) and the cumulative acknowledgement to send back
    /// (`epoch`, `next`). Every message is acknowledged, duplicates too, so a sender whose
    /// acknowledgement was lost learns it.
    pub fn on_data(&mut self, epoch: u64, seq: u64, body: String) -> (Vec<String>, (u64, u64)) {
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.next = 0;
            self.ahead.clear();
        }
        let mut deliver = Vec::new();
        if seq == self.next {
            deliver.push(body);
            self.next += 1;
            while let Some(body) = self.ahead.remove(&self.next) {
                deliver.push(body);
                self.next += 1;
            }
        } else if seq > self.next && seq - self.next < REORDER_WINDOW {
            self.ahead.insert(seq, body);
        }
        (deliver, (epoch, self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_reordered_and_duplicated_messages_arrive_once_in_order() {
        let t = Instant::from_secs(1);
        let mut tx = Sender::new(7, 16);
        let mut rx = Receiver::new();
        for body in ["a", "b", "c"] {
            tx.push(t, body.to_owned()).unwrap();
        }
        let sent = tx.due(t);
        assert_eq!(sent.len(), 3);
        // "a" is lost, "c" arrives before "b", "b" twice.
        let mut got = Vec::new();
        for (seq, body) in [&sent[2], &sent[1], &sent[1]] {
            let (d, ack) = rx.on_data(7, *seq, body.clone());
            got.extend(d);
            assert_eq!(ack, (7, 0));
        }
        assert!(got.is_empty());
        assert_eq!(tx.on_ack(7, 0), 0);
        assert!(tx.due(t).is_empty(), "nothing is due before the resend delay");
        let resent = tx.due(t + INITIAL_RTO);
        assert_eq!(resent.len(), 3);
        let (d, ack) = rx.on_data(7, resent[0].0, resent[0].1.clone());
        assert_eq!(d, ["a", "b", "c"]);
        assert_eq!(ack, (7, 3));
        assert_eq!(tx.on_ack(7, 3), 3);
        assert_eq!(tx.unacked(), 0);
        assert_eq!(tx.next_due(), None);
    }

    #[test]
    fn a_new_epoch_starts_the_receiver_over_and_old_acks_are_ignored() {
        let mut rx = Receiver::new();
        assert_eq!(rx.on_data(1, 0, "x".into()).0, ["x"]);
        assert_eq!(rx.on_data(2, 0, "y".into()).0, ["y"], "a restarted sender counts from 0 again");
        let mut tx = Sender::new(5, 4);
        tx.push(Instant::ZERO, "m".into()).unwrap();
        assert_eq!(tx.on_ack(4, 1), 0, "an ack of another epoch acknowledges nothing");
        assert_eq!(tx.unacked(), 1);
    }

    #[test]
    fn the_queue_is_capped_and_resend_backs_off() {
        let t = Instant::ZERO;
        let mut tx = Sender::new(1, 2);
        tx.push(t, "1".into()).unwrap();
        tx.push(t, "2".into()).unwrap();
        assert_eq!(tx.push(t, "3".into()), Err(QueueFull(2)));
        tx.due(t);
        assert_eq!(tx.next_due(), Some(t + INITIAL_RTO));
        tx.due(t + INITIAL_RTO);
        assert_eq!(tx.next_due(), Some(t + INITIAL_RTO + INITIAL_RTO * 2));
        tx.resend_all(t + Duration::from_secs(2));
        assert_eq!(tx.next_due(), Some(t + Duration::from_secs(2)));
    }

    #[test]
    fn a_message_too_far_ahead_is_dropped_not_buffered() {
        let mut rx = Receiver::new();
        let (d, _) = rx.on_data(1, REORDER_WINDOW, "far".into());
        assert!(d.is_empty());
        assert!(rx.ahead.is_empty());
    }
}
