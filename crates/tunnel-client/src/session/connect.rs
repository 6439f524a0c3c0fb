//! Getting a connection: the WebSocket upgrade with the tunnel's token, then hello and
//! welcome, and why it can fail.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::MaybeTlsStream;
use tunnel_protocol::frame::websocket_config;
use tunnel_protocol::mux::Role;
use tunnel_protocol::ws::{Message, WebSocket};
use tunnel_protocol::{ControlMessage, Feature, GoodbyeReason, Hello, Welcome, PROTOCOL_VERSION};

use crate::config::ClientConfig;
use crate::control::{error_chain, Created};

/// Why a connection attempt failed.
pub(super) enum ConnectError {
    /// The token was refused (the server may have forgotten the tunnel).
    Unauthorized,
    /// No connection, or it broke during the handshake: try again later.
    Unreachable(String),
    /// The server speaks another protocol version: the end.
    Version(String),
    /// The server said no for another reason: try again later.
    Refused(String),
}

/// The client's end of the tunnel's WebSocket.
pub(super) type ClientWs = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens the tunnel's WebSocket and exchanges hello and welcome.
pub(super) async fn connect(
    cfg: &ClientConfig,
    created: &Created,
) -> Result<(ClientWs, Welcome), ConnectError> {
    let mut ws = upgrade(cfg, created).await?;
    let welcome = hello(&mut ws).await?;
    Ok((ws, welcome))
}

/// The WebSocket upgrade of `/api/tunnel/connect/<id>`, authenticated with the token.
async fn upgrade(cfg: &ClientConfig, created: &Created) -> Result<ClientWs, ConnectError> {
    let url = format!(
        "{}/api/tunnel/connect/{}",
        cfg.server.ws_base, created.tunnel_id
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Unreachable(format!("bad URL {url}: {e}")))?;
    let auth = http::HeaderValue::from_str(&format!("Bearer {}", created.token))
        .map_err(|_| ConnectError::Refused("unusable token".into()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, auth);
    let config = websocket_config(1024 * 1024);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None);
    let (ws, _) = match tokio::time::timeout(Duration::from_secs(15), connecting).await {
        Err(_) => return Err(ConnectError::Unreachable("connect timed out".into())),
        Ok(Err(tungstenite::Error::Http(resp)))
            if resp.status() == http::StatusCode::UNAUTHORIZED =>
        {
            return Err(ConnectError::Unauthorized)
        }
        Ok(Err(tungstenite::Error::Http(resp))) => {
            return Err(ConnectError::Refused(format!("HTTP {}", resp.status())))
        }
        Ok(Err(e)) => return Err(ConnectError::Unreachable(error_chain(&e))),
        Ok(Ok(pair)) => pair,
    };
    // tungstenite did the upgrade; the frames are ours from here on. Nothing can be lost in
    // its buffers: the server sends nothing before our hello.
    Ok(WebSocket::new(
        ws.into_inner(),
        Role::Client,
        tunnel_protocol::frame::max_message(1024 * 1024),
    ))
}

/// Sends our hello and reads the server's answer: a welcome of our protocol version, or why
/// not.
async fn hello(ws: &mut ClientWs) -> Result<Welcome, ConnectError> {
    let hello = ControlMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        agent: concat!("tunnel-client/", env!("CARGO_PKG_VERSION")).to_string(),
        // Every session can carry TCP streams (crate::tcp); the server opens them only on a
        // TCP tunnel.
        features: vec![Feature::Tcp],
    });
    let hello = serde_json::to_string(&hello).map_err(|e| ConnectError::Refused(e.to_string()))?;
    ws.send_text(&hello)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let first = match tokio::time::timeout(Duration::from_secs(15), ws.recv()).await {
        Err(_) => {
            return Err(ConnectError::Unreachable(
                "no welcome from the server".into(),
            ))
        }
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(other))) => {
            let why = format!("unexpected {other:?} before welcome");
            return Err(ConnectError::Unreachable(why));
        }
        Ok(Some(Err(e))) => return Err(ConnectError::Unreachable(e.to_string())),
        Ok(None) => return Err(ConnectError::Unreachable("closed before welcome".into())),
    };
    match tunnel_protocol::frame::Frame::decode_text(&first) {
        Ok(ControlMessage::Welcome(w)) if w.protocol_version == PROTOCOL_VERSION => Ok(w),
        Ok(ControlMessage::Welcome(w)) => Err(ConnectError::Version(format!(
            "the server speaks tunnel protocol {}, this client {PROTOCOL_VERSION}: use a matching tunnel-client",
            w.protocol_version
        ))),
        Ok(ControlMessage::Goodbye {
            reason: GoodbyeReason::VersionMismatch,
            message,
        }) => Err(ConnectError::Version(message)),
        Ok(ControlMessage::Goodbye { message, .. }) => Err(ConnectError::Refused(message)),
        Ok(_) => Err(ConnectError::Refused("unexpected first message".into())),
        Err(e) => Err(ConnectError::Refused(format!("malformed welcome: {e}"))),
    }
}
