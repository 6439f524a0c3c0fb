//! What a process keeps of TCP tunnels beside the registry: each one's public port and its
//! accept loop, its connection cap; and the pool of public ports.
//!
//! # Why a table of its own
//! A TCP tunnel is a registered tunnel like any other (id, owner, token, lifetime, IP lists,
//! live client connection), and what every pod must know of it (its access token's digest,
//! its port) is registered with it ([`crate::tunnel::TcpRecord`]). What is kept here is this
//! process's: a public port is a socket of this process, and the cap counts the connections
//! this process carries. The pod that creates a tunnel adds its entry; another pod adds one
//! when it first carries a connection of it ([`TcpTunnels::get_or_insert`]). Entries are
//! taken out when the tunnel is deleted or expires here (see `crate::tcp::release`).
//!
//! # Ports
//! A port is held from the moment its listener is bound ([`PortPool::bind`]) until its
//! [`PortLease`] is dropped, which the listener's task does when it ends: a port is never
//! handed out twice, and a deleted tunnel's port is free again once its release returned.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PortRange;

/// What only a TCP tunnel has.
#[derive(Debug)]
pub struct TcpTunnel {
    /// Its public port, if the server has a range.
    pub port: Option<u16>,
    /// One permit per connection it carries (`TUNNEL_TCP_MAX_CONNECTIONS`).
    pub connections: Arc<Semaphore>,
    /// The public port's accept loop, ended by [`TcpTunnels::remove`].
    listener: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl TcpTunnel {
    /// A TCP tunnel with public port `port` (if any), carrying at most `max_connections`.
    pub fn new(port: Option<u16>, max_connections: usize) -> Self {
        Self {
            port,
            connections: Arc::new(Semaphore::new(max_connections)),
            listener: Mutex::new(None),
        }
    }

    /// Records the public port's accept loop, so that removing the tunnel ends it.
    pub fn set_listener(&self, stop: CancellationToken, task: JoinHandle<()>) {
        *lock(&self.listener) = Some((stop, task));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never held across an await and nothing under it panics; recover from poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TCP tunnels of this process, by tunnel id.
#[derive(Debug, Default)]
pub struct TcpTunnels {
    by_id: DashMap<String, Arc<TcpTunnel>>,
}

impl TcpTunnels {
    /// Adds tunnel `id`'s entry.
    pub fn insert(&self, id: &str, tcp: Arc<TcpTunnel>) {
        self.by_id.insert(id.to_string(), tcp);
    }

    /// Tunnel `id`'s entry, if this process has one.
    pub fn get(&self, id: &str) -> Option<Arc<TcpTunnel>> {
        self.by_id.get(id).map(|e| e.value().clone())
    }

    /// Tunnel `id`'s entry, added (without a public port) if this process has none yet: a
    /// TCP tunnel created on another pod whose connections this one carries.
    pub fn get_or_insert(&self, id: &str, max_connections: usize) -> Arc<TcpTunnel> {
        if let Some(t) = self.get(id) {
            return t;
        }
        self.by_id
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(TcpTunnel::new(None, max_connections)))
            .value()
            .clone()
    }

    /// Takes tunnel `id`'s entry out and ends its public port's accept loop; returns once
    /// the port is free again (connections already accepted go on until they end).
    pub async fn remove(&self, id: &str) {
        let Some((_, tcp)) = self.by_id.remove(id) else {
            return;
        };
        let listener = lock(&tcp.listener).take();
        if let Some((stop, task)) = listener {
            stop.cancel();
            if let Err(e) = task.await {
                tracing::warn!(tunnel = %id, error = %e, "tcp accept loop failed");
            }
        }
    }
}

/// Why no public port could be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The server has no range (`TUNNEL_TCP_PORTS` unset).
    #[error("this server has no public TCP ports (TUNNEL_TCP_PORTS is not set)")]
    NoRange,
    /// The port asked for is outside the range.
    #[error("port {port} is outside this server's TCP ports {first}-{last}")]
    OutOfRange {
        /// The port asked for.
        port: u16,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// The port asked for is taken (by another tunnel, or another program).
    #[error("port {0} is in use")]
    InUse(u16),
    /// Every port of the range is taken.
    #[error("all {0} public TCP ports of this server are in use; delete a TCP tunnel first")]
    Exhausted(usize),
    /// Binding failed for another reason.
    #[error("cannot listen on port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The public ports of `TUNNEL_TCP_PORTS`, and which are held.
#[derive(Debug)]
pub struct PortPool {
    range: Option<PortRange>,
    ip: IpAddr,
    held: Mutex<BTreeSet<u16>>,
}

/// A held port: free again when dropped.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.pool.held).remove(&self.port);
    }
}

impl PortPool {
    /// The ports of `range` (none when `None`) on address `ip`.
    pub fn new(range: Option<PortRange>, ip: IpAddr) -> Self {
        Self {
            range,
            ip,
            held: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether the server has public ports at all.
    pub fn enabled(&self) -> bool {
        self.range.is_some()
    }

    /// Binds `requested`, or a free port of the range picked at random, and holds it.
    pub fn bind(
        self: &Arc<Self>,
        requested: Option<u16>,
    ) -> Result<(TcpListener, PortLease), PortError> {
        let range = self.range.as_ref().ok_or(PortError::NoRange)?;
        let mut held = lock(&self.held);
        if let Some(port) = requested {
            if !range.contains(port) {
                let (first, last) = (*range.0.start(), *range.0.end());
                return Err(PortError::OutOfRange { port, first, last });
            }
            if held.contains(&port) {
                return Err(PortError::InUse(port));
            }
            let listener = listen(SocketAddr::new(self.ip, port)).map_err(|e| match e.kind() {
                io::ErrorKind::AddrInUse => PortError::InUse(port),
                _ => PortError::Bind { port, source: e },
            })?;
            held.insert(port);
            return Ok((listener, self.lease(port)));
        }
        let mut free: Vec<u16> = range.0.clone().filter(|p| !held.contains(p)).collect();
        free.shuffle(&mut rand::thread_rng());
        for port in free {
            // A port another program holds is skipped; any other failure is not the port's.
            match listen(SocketAddr::new(self.ip, port)) {
                Ok(listener) => {
                    held.insert(port);
                    return Ok((listener, self.lease(port)));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(PortError::Bind { port, source: e }),
            }
        }
        Err(PortError::Exhausted(range.len()))
    }

    fn lease(self: &Arc<Self>, port: u16) -> PortLease {
        PortLease {
            pool: self.clone(),
            port,
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so that a port whose tunnel was deleted can be
/// bound again at once, while connections it accepted linger in `TIME_WAIT`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(n: u16) -> PortRange {
        // Ports the OS hands out now, made into a range: others may take one meanwhile, which
        // the pool must skip.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let first = probe.local_addr().expect("addr").port();
        drop(probe);
        PortRange(first..=first.saturating_add(n - 1))
    }

    #[tokio::test]
    async fn ports_are_held_until_their_lease_drops() {
        let range = free_range(2);
        let pool = Arc::new(PortPool::new(Some(range), "127.0.0.1".parse().expect("ip")));
        let mut leases = Vec::new();
        while let Ok(bound) = pool.bind(None) {
            leases.push(bound);
        }
        assert!(leases.len() <= 2);
        assert!(matches!(pool.bind(None), Err(PortError::Exhausted(2))));
        if let Some((listener, lease)) = leases.pop() {
            let port = lease.port();
            assert!(matches!(pool.bind(Some(port)), Err(PortError::InUse(p)) if p == port));
            drop((listener, lease));
            let (_l, again) = pool.bind(Some(port)).expect("free again");
            assert_eq!(again.port(), port);
        }
        assert!(matches!(
            pool.bind(Some(1)),
            Err(PortError::OutOfRange { .. })
        ));
        let none = Arc::new(PortPool::new(None, "127.0.0.1".parse().expect("ip")));
        assert!(matches!(none.bind(None), Err(PortError::NoRange)));
    }
}
