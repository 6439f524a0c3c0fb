//! Which end of the connection a [`super::Mux`] is, in its type: only the server's opens
//! streams, only the client's is handed requests. The WebSocket framing below still takes
//! the run-time [`Role`] (it decides masking).

use super::events::{ClientEvent, Goodbye};
use super::exchange::{IncomingRequest, IncomingTcp};
use crate::ws::Role;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ServerSide {}
    impl Sealed for super::ClientSide {}
}

/// One end of a client connection: [`ServerSide`] or [`ClientSide`].
pub trait Side: sealed::Sealed + Send + Sync + 'static {
    /// The same, for the framing.
    const ROLE: Role;
    /// What the owner of this end is told.
    type Event: Send + 'static;
    /// How this end takes a stream the peer opened; `None`: it takes none, and a peer that
    /// opens one breaks the protocol.
    const ACCEPT: Option<fn(IncomingRequest) -> Self::Event>;
    /// A goodbye from the peer, as this end's event.
    fn goodbye(goodbye: Goodbye) -> Self::Event;
}

/// `tunnel-server`: opens a stream per public request; told only of goodbyes.
#[derive(Debug, Clone, Copy)]
pub enum ServerSide {}

/// `tunnel-client`: handed the streams the server opens.
#[derive(Debug, Clone, Copy)]
pub enum ClientSide {}

impl Side for ServerSide {
    const ROLE: Role = Role::Server;
    type Event = Goodbye;
    const ACCEPT: Option<fn(IncomingRequest) -> Goodbye> = None;

    fn goodbye(goodbye: Goodbye) -> Goodbye {
        goodbye
    }
}

impl Side for ClientSide {
    const ROLE: Role = Role::Client;
    type Event = ClientEvent;
    const ACCEPT: Option<fn(IncomingRequest) -> ClientEvent> = Some(client_event);

    fn goodbye(goodbye: Goodbye) -> ClientEvent {
        ClientEvent::Goodbye(goodbye)
    }
}

/// A stream the server opened, as the client's event: a raw TCP stream when its head says so,
/// an HTTP request otherwise.
fn client_event(request: IncomingRequest) -> ClientEvent {
    let IncomingRequest {
        mut head,
        body,
        responder,
    } = request;
    match head.tcp.take() {
        Some(open) => ClientEvent::Tcp(IncomingTcp::new(open, body, responder.into_sender())),
        None => ClientEvent::Request(IncomingRequest {
            head,
            body,
            responder,
        }),
    }
}
