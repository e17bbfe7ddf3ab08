//! A wake-up signal between two tasks.

use async_channel::{Receiver, Sender};

/// Wakes one waiting task. [`Notify::notify`] leaves a single permit (extra calls before
/// the waiter runs coalesce); [`Notify::notified`] waits for the permit and consumes it.
///
/// Waiters re-check their condition after waking, so a coalesced or stale permit only
/// costs a spurious wake-up, never a lost one.
#[derive(Debug)]
pub(crate) struct Notify {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Notify {
    pub(crate) fn new() -> Notify {
        let (tx, rx) = async_channel::bounded(1);
        Notify { tx, rx }
    }

    /// Leaves a permit (a no-op if one is already waiting).
    pub(crate) fn notify(&self) {
        let _ = self.tx.try_send(());
    }

    /// Waits for a permit.
    pub(crate) async fn notified(&self) {
        // Both ends live in `self`, so the channel never closes and `recv` only returns Ok.
        let _ = self.rx.recv().await;
    }
}
