//! The order of a stream's heads, in types: a request head goes out when the stream opens,
//! its answer arrives through a [`ResponseFuture`], and the accepting side answers an
//! [`IncomingRequest`] by consuming its [`Responder`]. No head can be sent twice, before its
//! stream exists or after body bytes; the generic "send any control message" stays inside
//! the multiplexer. A raw TCP stream has the same order with its own types: the server opens
//! it with [`super::Mux::open_tcp`], the client is handed an [`IncomingTcp`] and either
//! accepts it (once connected to its local service) or refuses it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::error::StreamError;
use super::stream::{BodyReceiver, BodySender};
use crate::head_headers::HeadHeaders;
use crate::head_json::{self, HeaderList};
use crate::headers::WireHeaders;
use crate::message::{ControlMessage, RequestHead, ResetCode, ResponseHead, StreamId, TcpOpen};

/// The head of a request as its opener writes it; the multiplexer adds the stream id (and
/// `end_stream`, from the method used to open it). The headers are a [`WireHeaders`] list or
/// the proxy's own [`http::HeaderMap`], written to the wire as they are ([`head_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParts<H = WireHeaders> {
    /// HTTP method.
    pub method: String,
    /// Origin-form target for the local service (path and query).
    pub target: String,
    /// Headers to send to the local service.
    pub headers: H,
}

impl<H: HeaderList> RequestParts<H> {
    /// The head's JSON text for stream `stream_id`.
    pub(super) fn to_json(&self, stream_id: StreamId, end_stream: bool) -> String {
        head_json::request_json(
            stream_id,
            &self.method,
            &self.target,
            &self.headers,
            end_stream,
        )
    }
}

/// The head of a raw TCP stream: its origin; the rest of the head is fixed
/// (see [`crate::message::RequestHead::tcp`]).
pub(super) fn tcp_head(stream_id: StreamId, open: TcpOpen) -> RequestHead {
    RequestHead {
        stream_id,
        method: "CONNECT".into(),
        target: String::new(),
        headers: HeadHeaders::default(),
        end_stream: false,
        tcp: Some(open),
    }
}

/// The head of a response as the accepting side writes it; the stream id is the request's.
/// The headers, as for [`RequestParts`], are a [`WireHeaders`] list or an [`http::HeaderMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseParts<H = WireHeaders> {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: H,
}

/// The answer to an opened stream: the response head and the body that follows it.
#[derive(Debug)]
pub struct IncomingResponse {
    /// The response head as the peer sent it.
    pub head: ResponseHead,
    /// The response body (already ended when the head said `end_stream`).
    pub body: BodyReceiver,
}

/// Resolves to the response of an opened stream, or to why none will come. Dropping it
/// before that abandons the stream (the peer sees a reset).
#[derive(Debug)]
pub struct ResponseFuture {
    id: StreamId,
    head: oneshot::Receiver<Result<ResponseHead, StreamError>>,
    /// Handed out with the head; `None` once it was.
    body: Option<BodyReceiver>,
}

impl ResponseFuture {
    pub(super) fn new(
        head: oneshot::Receiver<Result<ResponseHead, StreamError>>,
        body: BodyReceiver,
    ) -> Self {
        Self {
            id: body.id(),
            head,
            body: Some(body),
        }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }
}

impl Future for ResponseFuture {
    type Output = Result<IncomingResponse, StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let head = match Pin::new(&mut self.head).poll(cx) {
            Poll::Pending => return Poll::Pending,
            // The stream's state keeps the sender until it answers or fails; gone without a
            // word means the connection went with it.
            Poll::Ready(Err(_)) => Err(StreamError::ConnectionClosed),
            Poll::Ready(Ok(head)) => head,
        };
        Poll::Ready(head.and_then(|head| match self.body.take() {
            Some(body) => Ok(IncomingResponse { head, body }),
            None => Err(StreamError::Cancelled), // polled again after it resolved
        }))
    }
}

/// (Client role) a stream the server opened for a public request.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The request head.
    pub head: RequestHead,
    /// The request body (already ended when the head said `end_stream`); after a `101`,
    /// the public client's bytes.
    pub body: BodyReceiver,
    /// Answers the request, once.
    pub responder: Responder,
}

/// The not yet answered response direction of an [`IncomingRequest`]. Answering consumes it,
/// so a response head goes exactly once; so does refusing.
#[derive(Debug)]
pub struct Responder {
    sender: BodySender,
}

impl Responder {
    pub(super) fn new(sender: BodySender) -> Self {
        Self { sender }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.sender.id()
    }

    /// The sending half, for a stream that turned out to be another kind (raw TCP).
    pub(super) fn into_sender(self) -> BodySender {
        self.sender
    }

    /// Sends the response head; the body follows through the returned sender.
    pub async fn respond<H: HeaderList>(
        self,
        parts: ResponseParts<H>,
    ) -> Result<BodySender, StreamError> {
        self.send(parts, false).await
    }

    /// Sends a response head that has no body: the response direction ends with it.
    pub async fn respond_empty<H: HeaderList>(
        self,
        parts: ResponseParts<H>,
    ) -> Result<(), StreamError> {
        self.send(parts, true).await.map(drop)
    }

    async fn send<H: HeaderList>(
        self,
        parts: ResponseParts<H>,
        end_stream: bool,
    ) -> Result<BodySender, StreamError> {
        let mut sender = self.sender;
        let json = head_json::response_json(sender.id(), parts.status, &parts.headers, end_stream);
        sender.send_head_json(json).await?;
        if end_stream {
            sender.mark_finished();
        }
        Ok(sender)
    }

    /// Refuses the request instead of answering it: the stream is reset (the server maps the
    /// code to the public client's status).
    pub fn reset(self, code: ResetCode, message: &str) {
        self.sender.reset(code, message);
    }

    /// Resolves when the stream is reset (the public client left) or its connection ends.
    pub async fn cancelled(&self) {
        self.sender.cancelled().await
    }
}

/// Status of the response head that accepts a raw TCP stream.
pub const TCP_CONNECTED: u16 = 200;

/// (Client role) a raw TCP stream the server opened (a connection to the tunnel's public port
/// or front door).
#[derive(Debug)]
pub struct IncomingTcp {
    /// Where the connection comes from.
    pub open: TcpOpen,
    body: BodyReceiver,
    sender: BodySender,
}

impl IncomingTcp {
    /// The stream of an opened head that carries [`RequestHead::tcp`].
    pub(super) fn new(open: TcpOpen, body: BodyReceiver, sender: BodySender) -> Self {
        Self { open, body, sender }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.sender.id()
    }

    /// Accepts the stream once the local service is connected: the server learns it may pass
    /// bytes (a `200` head), and the halves carry them from now on, as [`super::splice()`]
    /// takes them.
    pub async fn accept(self) -> Result<(BodySender, BodyReceiver), StreamError> {
        let sender = self.sender;
        let head = ResponseHead {
            stream_id: sender.id(),
            status: TCP_CONNECTED,
            headers: HeadHeaders::default(),
            end_stream: false,
        };
        sender.send_head(&ControlMessage::Response(head)).await?;
        Ok((sender, self.body))
    }

    /// Refuses the stream (say, [`ResetCode::LocalConnectFailed`]): the server closes the
    /// connection it came from.
    pub fn refuse(self, code: ResetCode, message: &str) {
        self.sender.reset(code, message);
    }

    /// Resolves when the stream is reset (the connection's peer left) or its connection ends.
    pub async fn cancelled(&self) {
        self.sender.cancelled().await
    }
}
