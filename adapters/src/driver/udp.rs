//! UDP sockets: a receive loop and a send queue per socket.

use super::stats::Counters;
use super::NetMsg;
use crate::runtime::{AsyncUdpSocket, Runtime};
use async_channel::{Receiver, Sender, TrySendError};
use bytes::Bytes;
use futures_lite::future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::SocketId;

/// Largest UDP payload over IPv4 and IPv6 without jumbograms.
const MAX_DATAGRAM: usize = 65_535;
/// Pause after a receive error, so a persistent one does not spin the loop.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// The machine task's side of one UDP socket: a bounded queue into its send loop.
#[derive(Debug)]
pub(super) struct UdpOut {
    tx: Sender<(SocketAddr, Bytes)>,
}

impl UdpOut {
    /// Queues one datagram. UDP is lossy anyway, so when the queue is full the datagram is
    /// dropped (and counted) rather than stalling the machine.
    pub(super) fn transmit(&self, socket: SocketId, to: SocketAddr, bytes: Bytes, counters: &Counters) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send((to, bytes)) {
            counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?socket, %to, "send queue full: datagram dropped");
        }
    }
}

/// Starts the receive and send loops of a bound socket; they count the bytes they move in
/// `counters`.
pub(super) fn start<R: Runtime, S: Send + 'static>(
    rt: &R,
    id: SocketId,
    socket: R::UdpSocket,
    queue: usize,
    (tx, stop): (Sender<NetMsg<S>>, Receiver<()>),
    counters: &Arc<Counters>,
) -> UdpOut {
    let socket = Arc::new(socket);
    let (out_tx, out_rx) = async_channel::bounded(queue.max(1));
    rt.spawn(recv_loop(rt.clone(), id, socket.clone(), (tx, stop), counters.clone()));
    rt.spawn(send_loop(id, socket, out_rx, counters.clone()));
    UdpOut { tx: out_tx }
}

async fn recv_loop<R: Runtime, S>(
    rt: R,
    id: SocketId,
    socket: Arc<R::UdpSocket>,
    (tx, stop): (Sender<NetMsg<S>>, Receiver<()>),
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let stopped = async {
            let _ = stop.recv().await;
            None
        };
        let Some(received) = future::or(async { Some(socket.recv_from(&mut buf).await) }, stopped).await else {
            break;
        };
        match received {
            Ok((n, from)) => {
                counters.received(n);
                let bytes = Bytes::copy_from_slice(&buf[..n]);
                if tx.send(NetMsg::Datagram { socket: id, from, bytes }).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                // E.g. an ICMP error from an earlier send, reported on some platforms.
                tracing::debug!(socket = ?id, "receive failed: {e}");
                rt.sleep_until(rt.now() + RECV_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Sends queued datagrams until the machine task drops its side of the queue.
async fn send_loop<U: AsyncUdpSocket>(
    id: SocketId,
    socket: Arc<U>,
    rx: Receiver<(SocketAddr, Bytes)>,
    counters: Arc<Counters>,
) {
    while let Ok((to, bytes)) = rx.recv().await {
        match socket.send_to(&bytes, to).await {
            Ok(n) => counters.sent(n),
            Err(e) => tracing::debug!(socket = ?id, %to, "send failed: {e}"),
        }
    }
}
