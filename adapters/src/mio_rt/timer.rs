//! `sleep_until` on the event loop: a deadline in the loop's timer map, which becomes
//! the timeout of its wait.

use super::event_loop::{Shared, TimerKey};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Completes at its deadline. It registers with the loop of the thread that first polls
/// it, and removes itself when dropped early.
pub(super) struct Timer {
    deadline: Instant,
    registered: Option<(Arc<Shared>, TimerKey)>,
}

impl Timer {
    pub(super) fn new(deadline: Instant) -> Timer {
        Timer { deadline, registered: None }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some((owner, key)) = self.registered.take() {
                owner.cancel_timer(key);
            }
            return Poll::Ready(());
        }
        match &self.registered {
            // Still pending: just make sure it wakes the task polling it now.
            Some((owner, key)) if owner.update_timer(*key, cx.waker()) => {}
            // Fired, yet polled before the deadline by the clock: the loop rounds its wait
            // up, so this is rare; register again.
            _ => {
                let owner = super::loop_here();
                let key = owner.add_timer(self.deadline, cx.waker().clone());
                self.registered = Some((owner, key));
            }
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((owner, key)) = self.registered.take() {
            owner.cancel_timer(key);
        }
    }
}
