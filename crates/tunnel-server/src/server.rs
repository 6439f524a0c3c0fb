//! The accept loop, the expiry reaper, and graceful shutdown: assembly only. What a request
//! meets is in [`crate::app`]; what a connection meets first is in [`crate::edge`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use tunnel_protocol::mux::ServerMux;
use tunnel_protocol::GoodbyeReason;

use crate::app::{self, router};
use crate::edge::client_ip::{client_ip, ClientIp, PeerAddr};
use crate::edge::framing::{FramingGuard, FramingLink, HeadLimits, RequestSlot};
use crate::error::TunnelError;
use crate::limits::check_framing;
use crate::observe::metrics_server;
use crate::peer::{self, PeerAuth};
use crate::proxy;
use crate::state::AppState;

/// How long the last step of shutdown waits for client sessions (and the request tasks their
/// closing cuts) to end once every client connection was closed: a close is a goodbye and a
/// close frame, so only a peer that stopped reading takes this long.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Serves on `listener` until `state.shutdown` is cancelled, then drains: readiness fails, new
/// connections are refused, clients are told the server is restarting (and reconnect, to
/// another pod if there is one), in-flight requests get up to the grace period to finish, and
/// finally every client connection still here is closed.
///
/// The listener is injected so that tests (and embedders) can bind port 0 first. The parts,
/// as mini-redis has them: [`accept`] (the listener, under the connection cap), one
/// [`serve_connection`] task per public connection, and [`drain`].
pub async fn run(listener: TcpListener, state: Arc<AppState>) {
    serve(
        Listeners {
            public: listener,
            more_public: Vec::new(),
            metrics: None,
            peer: None,
        },
        state,
    )
    .await
}

/// The listeners of a server: the public one, and optionally the metrics' and the peer
/// listener other pods forward requests to (`TUNNEL_PEER_BIND`, when pods share a registry).
#[derive(Debug)]
pub struct Listeners {
    /// Public traffic, the control API and tunnel clients.
    pub public: TcpListener,
    /// More listeners for the same: in dev mode `[::1]` beside `127.0.0.1`, so that a client
    /// given `localhost` reaches the server whichever address it resolves to first.
    pub more_public: Vec<TcpListener>,
    /// `GET /metrics`.
    pub metrics: Option<TcpListener>,
    /// Requests other pods forward for tunnels whose client is connected here.
    pub peer: Option<TcpListener>,
}

/// Serves on every listener until `state.shutdown` is cancelled, then drains as [`run`] says.
/// The metrics keep answering through the drain; so does the peer listener (other pods
/// forward to the clients here until they have moved), which answers "not here" for a client
/// that moved, so that the request follows it.
pub async fn serve(listeners: Listeners, state: Arc<AppState>) {
    let Listeners {
        public,
        more_public,
        metrics,
        peer,
    } = listeners;
    let stop = CancellationToken::new();
    let metrics = metrics.map(|listener| {
        tokio::spawn(metrics_server::serve(
            listener,
            state.metrics.clone(),
            state.registry.clone(),
            stop.clone(),
        ))
    });
    let peer = peer.and_then(|listener| peer_listener(listener, &state, stop.clone()));
    let mut public = vec![public];
    public.extend(more_public);
    serve_public(PublicListeners::new(public), state).await;
    stop.cancel();
    for task in [metrics, peer].into_iter().flatten() {
        if let Err(e) = task.await {
            warn!(error = %e, "listener task failed");
        }
    }
}

/// Starts the peer listener, relaying what other pods forward into the clients here.
fn peer_listener(
    listener: TcpListener,
    state: &Arc<AppState>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some(cluster) = &state.settings.cluster else {
        warn!("a peer listener without TUNNEL_PEER_SECRET: not served");
        return None;
    };
    let auth = PeerAuth::new(cluster.peer_secret.expose());
    let relaying = state.clone();
    let handler: peer::listener::Handler = Arc::new(move |req| {
        let state = relaying.clone();
        Box::pin(async move {
            // A TCP connection to a tunnel, or a request for its local service.
            match req.headers().contains_key(peer::wire::TCP) {
                true => crate::tcp::relay::relay(state, req).await,
                false => proxy::relay::relay(state, req).await,
            }
        })
    });
    let limits = peer::listener::Limits {
        max_connections: state.settings.limits.max_connections,
        header_read_timeout: state.settings.timeouts.header_read_timeout,
        drain: CLOSE_WAIT,
    };
    Some(tokio::spawn(peer::listener::serve(
        listener, auth, handler, limits, stop,
    )))
}

/// The public listeners until shutdown, then the drain.
async fn serve_public(listener: PublicListeners, state: Arc<AppState>) {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    reserve_names(&state).await;
    let reaper = tokio::spawn(reap_expired(state.clone()));
    let rechecks = tokio::spawn(recheck_domains(state.clone()));
    while let Some((tcp, peer, permit)) = accept(&listener, &state).await {
        let (app, state) = (app.clone(), state.clone());
        connections.spawn(async move {
            serve_connection(tcp, peer, app, state).await;
            drop(permit);
        });
    }
    drop(listener);
    drain(&state, &connections).await;
    reaper.abort();
    rechecks.abort();
    info!("shutdown complete");
}

/// The next public connection, once there is room for it under `TUNNEL_MAX_CONNECTIONS`;
/// `None` once shutdown has begun.
async fn accept(
    listener: &PublicListeners,
    state: &AppState,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    // At the connection cap, stop accepting: further clients wait in the kernel's backlog
    // instead of costing us memory.
    let permit = tokio::select! {
        _ = state.shutdown.cancelled() => return None,
        p = state.connections.clone().acquire_owned() => p.ok()?,
    };
    loop {
        let (tcp, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        return Some((tcp, peer, permit));
    }
}

/// The public listeners, accepted from as one: usually one, two in dev mode.
struct PublicListeners {
    listeners: Vec<TcpListener>,
    /// Which listener is polled first next time, so that a busy one cannot starve another.
    next: std::sync::atomic::AtomicUsize,
}

impl PublicListeners {
    fn new(listeners: Vec<TcpListener>) -> Self {
        Self {
            listeners,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next connection on any of the listeners.
    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| {
            let n = self.listeners.len();
            let first = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for i in 0..n {
                if let Poll::Ready(r) = self.listeners[(first + i) % n].poll_accept(cx) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Header fields hyper's HTTP/1 parser takes when no limit is set, in an array on its stack.
const HYPER_MAX_HEADERS: usize = 100;

/// One public connection: HTTP/1.1 by hyper behind the framing guard, each request marked with
/// its peer and client address, checked for ambiguous framing, then dispatched by [`app`].
/// Ends when the peer is done, or (gracefully, after the request in flight) at shutdown.
async fn serve_connection(tcp: TcpStream, peer: SocketAddr, app: Router, state: Arc<AppState>) {
    let settings = &state.settings;
    let trusted = settings.trusted_proxies.clone();
    let proxy_state = state.clone();
    let link = FramingLink::new();
    let guard = FramingGuard::new(
        tcp,
        HeadLimits {
            max_bytes: settings.limits.max_header_bytes,
            max_fields: settings.limits.max_headers,
        },
        link.clone(),
    );
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let client = client_ip(peer.ip(), req.headers(), &trusted);
        req.extensions_mut().insert(PeerAddr(peer));
        req.extensions_mut().insert(ClientIp(client));
        serve_request(app.clone(), proxy_state.clone(), link.begin(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.timeouts.header_read_timeout)
        .max_buf_size(settings.limits.max_header_bytes);
    // Set only above hyper's own limit: with a limit set, hyper fills its two header arrays
    // element by element for every request (and above 100 allocates them) instead of using
    // uninitialised ones on its stack: 1,800 instructions per request at a limit of 100
    // (callgrind). Up to that limit the framing guard refuses a longer head first (431), as
    // it does above it.
    if settings.limits.max_headers > HYPER_MAX_HEADERS {
        builder.max_headers(settings.limits.max_headers);
    }
    let conn = builder
        .serve_connection(TokioIo::new(guard), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "public connection ended with an error");
    }
}

/// One request of a public connection, in the order hyper serves them: refused at once if
/// the framing guard refused it (or hyper's view of its framing is ambiguous), otherwise
/// dispatched; the answer tells the guard whether the connection switched protocols.
async fn serve_request(
    app: axum::Router,
    state: Arc<AppState>,
    slot: RequestSlot,
    mut req: hyper::Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    let client = req.extensions().get::<ClientIp>().map(|c| c.0);
    let refused = match slot.refusal() {
        Some(refusal) => Some(refusal.to_error()),
        None => check_framing(req.version(), req.headers())
            .err()
            .map(TunnelError::BadFraming),
    };
    if let Some(e) = refused {
        warn!(client = ?client, error = %e, "refused a request the framing guard would not pass");
        slot.answered(false);
        return Ok(app::count_rejections(axum::extract::State(state), e.json_response()).await);
    }
    // Only a request asking for it may switch protocols: the guard waits for the answer to
    // exactly those before it reads on.
    let connect = req.method() == http::Method::CONNECT;
    let may_switch = connect || req.headers().contains_key(http::header::UPGRADE);
    req.extensions_mut().insert(slot.clone());
    let resp = app::dispatch(app, state, req.map(Body::new)).await?;
    let status = resp.status();
    let switched =
        status == http::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success());
    if switched && !may_switch {
        warn!(client = ?client, "refused to switch protocols for a request that did not ask to");
        slot.answered(false);
        return Ok(TunnelError::BadResponse.json_response());
    }
    slot.answered(switched);
    Ok(resp)
}

/// Graceful shutdown once the listener is closed, in the way of HTTP/2's GOAWAY: every
/// client is told to reconnect elsewhere ([`goaway`]), public connections and request tasks
/// get the grace period, then every client connection still here is closed and its session
/// waited for.
///
/// With a shared registry a told client reconnects at once, through the ingress to another
/// pod, make-before-break: its new session there replaces the one here, which stops getting
/// new requests (other pods now forward to the new one; a request that raced here is answered
/// "not here" and follows) and closes once its requests in flight are done
/// ([`crate::tunnel::Connection::close_replaced`]). So the drain waits, within the grace
/// period, for the told sessions to close as well: until a client has moved, other pods keep
/// forwarding its requests here, and closing its session earlier would cut them.
async fn drain(state: &AppState, connections: &TaskTracker) {
    info!("shutting down: refusing new requests, draining in-flight ones");
    let told = goaway(state).await;
    let requests = &state.tasks.requests;
    connections.close();
    requests.close();
    let moving = state.registry.node_id().is_some();
    let grace = state.settings.timeouts.shutdown_grace;
    let in_flight = async {
        connections.wait().await;
        if moving {
            futures_util::future::join_all(told.iter().map(|mux| mux.closed())).await;
        }
        requests.wait().await;
    };
    if tokio::time::timeout(grace, in_flight).await.is_err() {
        warn!(
            open = connections.len(),
            tasks = requests.len(),
            clients = told.iter().filter(|mux| !mux.is_closed()).count(),
            "grace period of {}s over; cutting the remaining connections",
            grace.as_secs()
        );
    }
    close_clients(state, &told).await;
    let clients = &state.tasks.clients;
    clients.close();
    let sessions = async {
        clients.wait().await;
        requests.wait().await;
    };
    if tokio::time::timeout(CLOSE_WAIT, sessions).await.is_err() {
        warn!(
            clients = clients.len(),
            tasks = requests.len(),
            "tasks still running {}s after the client connections were closed",
            CLOSE_WAIT.as_secs()
        );
    }
}

/// Tells every client connected here that the server is restarting (a goodbye that does not
/// close: their requests in flight go on); returns their connections.
async fn goaway(state: &AppState) -> Vec<ServerMux> {
    let told: Vec<ServerMux> = state
        .registry
        .local()
        .into_iter()
        .filter_map(|t| t.connection())
        .map(|c| c.mux)
        .collect();
    for mux in &told {
        mux.announce(GoodbyeReason::ServerShutdown, "the server is restarting")
            .await;
    }
    told
}

/// Closes every client connection still open: the ones told at the start of the drain (a
/// replaced one may still be finishing its requests) and every one connected since.
async fn close_clients(state: &AppState, told: &[ServerMux]) {
    let since = state
        .registry
        .local()
        .into_iter()
        .filter_map(|t| t.connection())
        .map(|c| c.mux);
    let mut open: Vec<ServerMux> = told.to_vec();
    for mux in since {
        if !open.iter().any(|m| m.same_connection(&mux)) {
            open.push(mux);
        }
    }
    open.retain(|mux| !mux.is_closed());
    let closes = open.iter().map(|mux| async move {
        mux.close(GoodbyeReason::ServerShutdown, "the server is restarting")
            .await
    });
    futures_util::future::join_all(closes).await;
}

/// [`run`] plus the metrics endpoint on `metrics_listener`, which keeps answering while the
/// server drains (so a scrape can watch the drain) and stops when the server has stopped.
/// Both listeners are injected, so tests bind port 0 for each.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: Arc<AppState>,
) {
    serve(
        Listeners {
            public: listener,
            more_public: Vec::new(),
            metrics: Some(metrics_listener),
            peer: None,
        },
        state,
    )
    .await
}

/// Hands the names of `TUNNEL_RESERVED_NAMES` to the registry (checked at start-up already).
async fn reserve_names(state: &AppState) {
    for (name, key) in &state.settings.domains.reserved {
        if let Err(e) = state.registry.reserve(name, *key).await {
            warn!(name = %name, error = %e, "cannot reserve the name");
        }
    }
}

/// Checks every custom domain's TXT record every `TUNNEL_DOMAIN_RECHECK_SECS`: a record that
/// was removed or changed stops its domain's routing at the next check.
async fn recheck_domains(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.settings.domains.domain_recheck);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is at once; new domains are checked on create
    loop {
        tick.tick().await;
        crate::control::domain::recheck_all(&state).await;
    }
}

/// Removes expired tunnels every second, and trims the rate limiters' memory every minute.
async fn reap_expired(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        match state.registry.expire(chrono::Utc::now()).await {
            Ok(expired) => {
                for id in expired {
                    crate::tcp::release(&state, &id).await;
                }
            }
            Err(e) => warn!(error = %e, "cannot expire tunnels"),
        }
        if n % 60 == 59 {
            state.limits.retain_recent();
        }
    }
}
