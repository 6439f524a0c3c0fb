//! Idle tunnels: each created through the control API and held open by a real WebSocket that
//! has done the protocol's handshake (hello → welcome), then says nothing more. This is what
//! an idle `tunnel-client` costs the server, without 1,000 client processes on the machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tunnel_protocol::frame::{websocket_config, Frame};
use tunnel_protocol::{ControlMessage, Hello, PROTOCOL_VERSION};

use crate::client;

/// A tunnel as the create call answered it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Created {
    /// Its id.
    pub tunnel_id: String,
    /// The token to connect with.
    pub token: String,
}

/// The control API of one server, on one keep-alive connection.
pub struct Api {
    addr: SocketAddr,
    key: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Api {
    /// Connects to the server at `addr`.
    pub async fn connect(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            key: key.to_string(),
            sender: client::connect(addr).await?,
        })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// Creates a tunnel (named, or with a generated id).
    pub async fn create(&mut self, name: Option<&str>) -> anyhow::Result<Created> {
        let body = match name {
            Some(n) => serde_json::json!({ "name": n }).to_string(),
            None => String::new(),
        };
        let (status, bytes) = self
            .call(Method::POST, "/api/tunnels/create", &body)
            .await?;
        if status != StatusCode::OK {
            bail!(
                "create tunnel: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Deletes a tunnel.
    pub async fn delete(&mut self, id: &str) -> anyhow::Result<()> {
        let (status, bytes) = self
            .call(Method::DELETE, &format!("/api/tunnels/{id}"), "")
            .await?;
        if status != StatusCode::OK {
            bail!("delete {id}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }

    /// How many of this key's tunnels have a connected client.
    pub async fn connected(&mut self) -> anyhow::Result<usize> {
        let (status, bytes) = self.call(Method::GET, "/api/tunnels/list", "").await?;
        if status != StatusCode::OK {
            bail!("list: {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        let tunnels = v["tunnels"]
            .as_array()
            .ok_or_else(|| anyhow!("list: no tunnels array"))?;
        Ok(tunnels
            .iter()
            .filter(|t| t["connected"].as_bool() == Some(true))
            .count())
    }
}

/// An idle client connection.
pub type IdleConn = WebSocketStream<TcpStream>;

/// Opens a tunnel's WebSocket and does the handshake; returns once the welcome arrived.
pub async fn connect_idle(addr: SocketAddr, created: &Created) -> anyhow::Result<IdleConn> {
    let url = format!("ws://{addr}/api/tunnel/connect/{}", created.tunnel_id);
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {}", created.token))?,
    );
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(websocket_config(1 << 20)))
            .await
            .context("websocket upgrade")?;
    let hello = Frame::Control(ControlMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        agent: "tunnel-bench".into(),
        features: Vec::new(),
    }))
    .into_message()?;
    ws.send(hello).await?;
    let welcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow!("before welcome: {e}")),
                None => return Err(anyhow!("closed before welcome")),
            }
        }
    })
    .await
    .context("no welcome within 10 s")??;
    match serde_json::from_str::<ControlMessage>(welcome.as_str())? {
        ControlMessage::Welcome(_) => Ok(ws),
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// Creates `n` tunnels and connects an idle client to each, `parallel` at a time.
pub async fn open(
    addr: SocketAddr,
    api: &mut Api,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<IdleConn>> {
    let mut created = Vec::with_capacity(n);
    for _ in 0..n {
        created.push(api.create(None).await?);
    }
    futures_util::stream::iter(created.iter().map(|c| Ok(connect_idle(addr, c))))
        .try_buffer_unordered(parallel)
        .try_collect()
        .await
}
