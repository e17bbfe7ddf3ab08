//! Accept loops for TCP listeners.

use super::NetMsg;
use crate::runtime::{AsyncTcpListener, AsyncTcpStream, Runtime};
use async_channel::{Receiver, Sender};
use futures_lite::future;
use std::time::Duration;
use switchyard_core::ListenerId;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin
/// while the condition lasts.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Starts [`accept_loop`] for `listener` on `rt`; returns its stop: dropping it (a closed
/// listener, or the machine task ending) stops the loop, which closes the socket.
pub(super) fn start<R: Runtime>(
    rt: &R,
    id: ListenerId,
    listener: R::TcpListener,
    tx: Sender<NetMsg<R::TcpStream>>,
) -> Sender<()> {
    let (stop, stopped) = async_channel::bounded::<()>(1);
    rt.spawn(accept_loop(rt.clone(), id, listener, tx, stopped));
    stop
}

/// Accepts connections on `listener` and hands them to the machine task until the driver
/// stops (`stop` closes) or the machine task is gone.
///
/// Accepts wait for room in the bounded inbound channel, so a busy machine slows accepting
/// down and the kernel's backlog absorbs the rest.
async fn accept_loop<R: Runtime>(
    rt: R,
    id: ListenerId,
    listener: R::TcpListener,
    tx: Sender<NetMsg<R::TcpStream>>,
    stop: Receiver<()>,
) {
    loop {
        let stopped = async {
            let _ = stop.recv().await;
            None
        };
        let Some(accepted) = future::or(async { Some(listener.accept().await) }, stopped).await else { break };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                if tx.send(NetMsg::Accepted { listener: id, stream, peer }).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(listener = ?id, "accept failed: {e}");
                rt.sleep_until(rt.now() + ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
