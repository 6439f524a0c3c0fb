//! The traffic inspector: every request through the tunnel captured (bounded), shown live on
//! a local page, searchable and replayable, with an ngrok-compatible JSON API.
//!
//! # Layout
//! - [`config`]: `--inspect-*` flags, validated.
//! - [`record`]: what an entry is made of (request, response, kept bodies, messages); [`head`]:
//!   a captured head packed in one buffer, decoded only when read.
//! - [`store`]: the capture store and its bounds (per body, per session, in all).
//! - [`feed`]: its change notifications, for live updates.
//! - [`observe`]: passive WebSocket-frame and SSE parsers over copies of the bytes.
//! - [`capture`]: the hook into forwarding: a [`Capture`] per exchange and the tees.
//! - [`json`]: entries in ngrok's JSON shape; [`guard`]: Host and Origin checks.
//! - [`replay`]: requests sent again to the local service; [`page`]: the embedded page.
//! - [`api`]: the router over all of it.
//!
//! This file assembles them: [`Inspector::bind`] and [`serve`].
//!
//! # Never in the tunnel's way
//! The tunnel's tasks only ever append to the store synchronously, each into its own entry
//! under that entry's own lock (a bounded copy; the store-wide lock is taken once per
//! exchange, to add the entry), and no lock is held across an await; readers take copies.
//! Live updates go out through a bounded log that costs nothing when no page listens, wakes
//! a listening page once per burst, and drops for a slow browser instead of waiting for it.

pub mod api;
pub mod capture;
pub mod config;
pub mod feed;
pub mod guard;
pub mod head;
pub mod json;
pub mod observe;
pub mod page;
pub mod record;
pub mod replay;
pub mod store;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::capture::Capture;
pub use self::config::{InspectArgs, InspectConfig, InspectConfigError};

use self::api::{ApiState, TunnelInfo};
use self::replay::Replayer;
use self::store::{Limits, Store};

/// How many ports above the asked-for one are tried when it is taken.
const PORT_TRIES: u16 = 20;

/// A running inspector's handle: captures go in through it.
#[derive(Debug, Clone)]
pub struct Inspector {
    state: Arc<ApiState>,
    addr: SocketAddr,
}

impl Inspector {
    /// Binds the inspector's listener at `cfg.addr`, or the next free port above it (up to
    /// 20 more) if it is taken; `local` is the local service's `host:port`, where replays go.
    pub async fn bind(cfg: &InspectConfig, local: String) -> std::io::Result<(Self, TcpListener)> {
        let listener = bind_near(cfg.addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ApiState {
            store: Arc::new(Store::new(Limits {
                budget: cfg.budget,
                body_limit: cfg.body_limit,
            })),
            replayer: Replayer::new(local.clone()),
            local,
            tunnel: std::sync::Mutex::new(None),
            open: !addr.ip().is_loopback(),
        });
        Ok((Self { state, addr }, listener))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL (`http://127.0.0.1:4040`; a wildcard address is shown as loopback).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// A warning to print when the inspector can be reached from other machines.
    pub fn exposure_warning(&self) -> Option<String> {
        self.state.open.then(|| {
            format!(
                "WARNING: the traffic inspector listens on {} and has no password: anyone who can reach that address sees every captured request and can replay it",
                self.addr
            )
        })
    }

    /// Records the tunnel's name and public URL (for `/api/tunnels`).
    pub fn set_tunnel(&self, name: &str, public_url: &str) {
        // Poisoned only by a panic during a clone: the value is still whole.
        *self.state.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(TunnelInfo {
            name: name.to_string(),
            public_url: public_url.to_string(),
        });
    }

    /// Starts capturing a request about to be sent to the local service as `method target`
    /// with `headers`: `(name, value)` pairs in the order they are written (names lowercase).
    pub fn capture<'a, I>(
        &self,
        method: &Method,
        target: &str,
        headers: I,
        empty_body: bool,
    ) -> Capture
    where
        I: Iterator<Item = (&'a str, &'a [u8])> + Clone,
    {
        Capture::begin(
            self.state.store.clone(),
            Capture::new_entry_pairs(method, target, headers, empty_body),
        )
    }

    /// The router (for tests without a network).
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }
}

async fn bind_near(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let first = TcpListener::bind(addr).await;
    let taken = match first {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => e,
        Err(e) => return Err(e),
    };
    for port in (addr.port().saturating_add(1)..=u16::MAX).take(usize::from(PORT_TRIES)) {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            return Ok(l);
        }
    }
    Err(taken)
}

/// Serves the inspector on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, inspector: Inspector, shutdown: CancellationToken) {
    let app = inspector.router();
    // Not a graceful shutdown: the page's event streams never end by themselves, and nothing
    // the inspector serves is worth waiting for when the client leaves.
    tokio::select! {
        result = axum::serve(listener, app).into_future() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "inspector stopped");
            }
        }
        () = shutdown.cancelled() => {}
    }
}
