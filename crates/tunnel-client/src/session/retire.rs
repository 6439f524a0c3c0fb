//! The end of a connection: letting its requests in flight finish. After Ctrl-C for the
//! current connection ([`finish_in_flight`]); and for a connection the server asked the
//! client to leave ([`Retiring`]), which goes on beside the new one until the server closes it.
//!
//! # Moving on, make-before-break
//! A server that restarts (a pod of several draining for a rolling update) says goodbye
//! (`server_shutdown`) without closing, as HTTP/2's GOAWAY does. The client connects again at
//! once, through the ingress to another pod, while the old connection keeps serving: the
//! server may still send requests on it until the new session has replaced it (they are the
//! server's to stop, since only it knows when the tunnel has moved; a request refused here
//! would be lost), and it closes the old connection once the requests on it have finished.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_protocol::mux::{ClientEvent, ClientMux};
use tunnel_protocol::{GoodbyeReason, ResetCode};

use crate::forward::Forwarder;
use crate::tcp::TcpForwarder;

/// Waits for the forwards in `tasks` (closed by the caller) to finish, for at most `grace`,
/// refusing every request still arriving on `events` meanwhile. Whether they all finished.
pub(super) async fn finish_in_flight(
    tasks: &TaskTracker,
    events: &mut mpsc::Receiver<ClientEvent>,
    grace: Duration,
) -> bool {
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    let mut open = true;
    loop {
        tokio::select! {
            () = tasks.wait() => return true,
            () = &mut deadline => return false,
            e = events.recv(), if open => match e {
                Some(ClientEvent::Request(request)) => request
                    .responder
                    .reset(ResetCode::Refused, "client shutting down"),
                Some(ClientEvent::Tcp(tcp)) => {
                    tcp.refuse(ResetCode::Refused, "client shutting down")
                }
                Some(ClientEvent::Goodbye(_)) => {}
                None => open = false,
            },
        }
    }
}

/// A connection the server told the client to leave: what serving it on needs. See the
/// module documentation.
pub(super) struct Retiring {
    pub(super) forwarder: Arc<Forwarder>,
    pub(super) tcp: Arc<TcpForwarder>,
    /// Cancelled when the client stops (Ctrl-C, or an end it cannot recover from): the
    /// requests in flight then get `grace`, new ones are refused, and the client closes the
    /// connection itself.
    pub(super) stop: CancellationToken,
    pub(super) grace: Duration,
}

impl Retiring {
    /// Serves `mux` until the server closes it, or until [`Retiring::stop`].
    pub(super) async fn run(self, mux: ClientMux, mut events: mpsc::Receiver<ClientEvent>) {
        let forwards = TaskTracker::new();
        loop {
            let event = tokio::select! {
                () = self.stop.cancelled() => break,
                e = events.recv() => e,
            };
            match event {
                Some(ClientEvent::Request(request)) => {
                    forwards.spawn(self.forwarder.clone().boxed(request));
                }
                Some(ClientEvent::Tcp(tcp)) => {
                    forwards.spawn(self.tcp.clone().forward(tcp));
                }
                // The server closing it: `replaced` (by this client's own new session, once
                // the requests here are done) or the restart itself. Neither ends the client.
                Some(ClientEvent::Goodbye(_)) => {}
                None => {
                    // Closed: whatever still runs fails with its stream, at once.
                    forwards.close();
                    let _ = tokio::time::timeout(Duration::from_secs(1), forwards.wait()).await;
                    return;
                }
            }
        }
        forwards.close();
        finish_in_flight(&forwards, &mut events, self.grace).await;
        mux.close(GoodbyeReason::ClientShutdown, "client shutting down")
            .await;
    }
}
