//! The settings of a pod among several sharing a registry in Redis: flags and environment
//! ([`ClusterArgs`]), checked together into [`Cluster`] (all of them matter only with
//! TUNNEL_REDIS_URL), and the two secrets they hold, which never reach a log line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::values::{invalid, secs, ConfigError};

/// Several server processes ("pods") behind one ingress, sharing their tunnels through Redis.
/// All off unless TUNNEL_REDIS_URL is set: one process with its registry in memory.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Redis holding the shared registry: redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// for
    /// TLS, or unix:///PATH. Unset: the registry lives in this process's memory.
    #[arg(
        long,
        env = "TUNNEL_REDIS_URL",
        value_name = "TUNNEL_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// This process's name among the pods (unique; default: the host name, which is the pod
    /// name on Kubernetes).
    #[arg(long, env = "TUNNEL_NODE_ID", value_name = "TUNNEL_NODE_ID")]
    pub node_id: Option<String>,
    /// Listen address of the internal listener other pods forward public requests to.
    #[arg(
        long,
        env = "TUNNEL_PEER_BIND",
        value_name = "TUNNEL_PEER_BIND",
        default_value = "0.0.0.0:8990"
    )]
    pub peer_bind: SocketAddr,
    /// HOST:PORT other pods reach the peer listener at (e.g. the pod IP). Default: the bound
    /// address, when TUNNEL_PEER_BIND names a specific IP.
    #[arg(
        long,
        env = "TUNNEL_PEER_ADVERTISE",
        value_name = "TUNNEL_PEER_ADVERTISE"
    )]
    pub peer_advertise: Option<String>,
    /// Secret every pod presents to the others' peer listeners (at least 32 characters, the
    /// same on every pod). Required with TUNNEL_REDIS_URL.
    #[arg(
        long,
        env = "TUNNEL_PEER_SECRET",
        value_name = "TUNNEL_PEER_SECRET",
        hide_env_values = true
    )]
    pub peer_secret: Option<String>,
    /// Seconds a pod's claim on a tunnel (its lease) lasts without renewal: after a pod dies,
    /// other pods stop forwarding to it at most this long after its last renewal. Renewed every
    /// third of it.
    #[arg(
        long = "lease-secs",
        env = "TUNNEL_LEASE_SECS",
        value_name = "TUNNEL_LEASE_SECS",
        value_parser = secs(3..=600),
        default_value = "15"
    )]
    pub lease: Duration,
    /// Seconds a pod believes what it looked up of a tunnel whose client is on another pod
    /// (a miss half as long) before asking Redis again. Changes reach the other pods at once
    /// through pub/sub whatever this is; it bounds how long an entry stays wrong if a hint is
    /// lost.
    #[arg(
        long = "cache-secs",
        env = "TUNNEL_CACHE_SECS",
        value_name = "TUNNEL_CACHE_SECS",
        value_parser = secs(1..=600),
        default_value = "2"
    )]
    pub cache: Duration,
}

/// Shortest TUNNEL_PEER_SECRET accepted.
pub const MIN_PEER_SECRET: usize = 32;

/// A Redis URL whose password never reaches a log line: `Debug` and [`RedisUrl::redacted`]
/// show `***` in its place.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (and user) replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some((scheme, rest)) = url.split_once("://") else {
            return "***".into();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => url.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// The shared secret of the peer listeners; never printed.
#[derive(Clone)]
pub struct PeerSecret(String);

impl PeerSecret {
    /// The secret, to present or check.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// Validated settings of a pod among several (TUNNEL_REDIS_URL set).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Where the shared registry is.
    pub redis_url: RedisUrl,
    /// This pod's name.
    pub node_id: String,
    /// Where the peer listener listens.
    pub peer_bind: SocketAddr,
    /// Where other pods reach it; `None`: the bound address (TUNNEL_PEER_BIND has a specific
    /// IP).
    pub peer_advertise: Option<String>,
    /// What pods present to each other.
    pub peer_secret: PeerSecret,
    /// How long a claim on a tunnel lasts without renewal.
    pub lease: Duration,
    /// How long a lookup of another pod's tunnel is believed.
    pub cache: Duration,
}

/// The cluster settings, checked together: all of them matter only with TUNNEL_REDIS_URL.
pub(super) fn cluster(args: ClusterArgs, dev_key: bool) -> Result<Option<Cluster>, ConfigError> {
    let Some(url) = args
        .redis_url
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    if dev_key {
        return Err(invalid(
            "TUNNEL_API_KEYS",
            "pods sharing a registry (TUNNEL_REDIS_URL) must share their API keys: set them",
        ));
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
        return Err(invalid(
            "TUNNEL_REDIS_URL",
            "must start with redis://, rediss:// or unix://",
        ));
    }
    let redis_url = RedisUrl(url);
    if let Err(e) = redis::Client::open(redis_url.expose()) {
        // The error text of redis-rs may quote the URL: name the setting, not the value.
        return Err(invalid(
            "TUNNEL_REDIS_URL",
            format!("not a usable Redis URL ({:?})", e.kind()),
        ));
    }
    let peer_secret = peer_secret(args.peer_secret)?;
    let node_id = node_id(args.node_id)?;
    let peer_advertise = args
        .peer_advertise
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    match &peer_advertise {
        Some(a) if !valid_authority(a) => {
            return Err(invalid(
                "TUNNEL_PEER_ADVERTISE",
                format!("{a:?} is not HOST:PORT"),
            ))
        }
        None if args.peer_bind.ip().is_unspecified() => {
            return Err(invalid(
                "TUNNEL_PEER_ADVERTISE",
                format!(
                    "TUNNEL_PEER_BIND {} listens on every interface, so say which address other \
                     pods reach this one at (e.g. the pod IP and port)",
                    args.peer_bind
                ),
            ))
        }
        _ => {}
    }
    Ok(Some(Cluster {
        redis_url,
        node_id,
        peer_bind: args.peer_bind,
        peer_advertise,
        peer_secret,
        lease: args.lease,
        cache: args.cache,
    }))
}

/// TUNNEL_PEER_SECRET: required, and long.
fn peer_secret(secret: Option<String>) -> Result<PeerSecret, ConfigError> {
    match secret.map(|s| s.trim().to_string()) {
        None => Err(invalid(
            "TUNNEL_PEER_SECRET",
            "is required with TUNNEL_REDIS_URL (the same on every pod); generate one with \
             `openssl rand -hex 32`",
        )),
        Some(s) if s.len() < MIN_PEER_SECRET => Err(invalid(
            "TUNNEL_PEER_SECRET",
            format!(
                "must be at least {MIN_PEER_SECRET} characters (it has {})",
                s.len()
            ),
        )),
        Some(s) => Ok(PeerSecret(s)),
    }
}

/// TUNNEL_NODE_ID, or the host name.
fn node_id(node: Option<String>) -> Result<String, ConfigError> {
    let node_id = match node.map(|n| n.trim().to_string()) {
        Some(n) if !n.is_empty() => n,
        _ => host_name().ok_or_else(|| {
            invalid(
                "TUNNEL_NODE_ID",
                "the host name is unknown: set a unique name per pod",
            )
        })?,
    };
    if node_id.len() > 200 || node_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "TUNNEL_NODE_ID",
            "must be at most 200 characters, without spaces or control characters",
        ));
    }
    Ok(node_id)
}

/// `HOST:PORT` with a port number and a host that fits a URL authority.
fn valid_authority(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && port.parse::<u16>().is_ok_and(|p| p != 0)
        && format!("http://{a}/").parse::<http::Uri>().is_ok()
}

/// The host name (the pod name on Kubernetes).
fn host_name() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env
        .or_else(from_kernel)
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_redis_password_never_shows() {
        for (url, shown) in [
            ("redis://:hunter2@redis:6379/0", "redis://***@redis:6379/0"),
            (
                "rediss://user:hunter2@r.example:6380",
                "rediss://***@r.example:6380",
            ),
            ("redis://redis:6379", "redis://redis:6379"),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ] {
            let u = RedisUrl(url.into());
            assert_eq!(u.redacted(), shown);
            assert!(!format!("{u:?}").contains("hunter2"));
        }
        let s = PeerSecret(SECRET.into());
        assert!(!format!("{s:?}").contains(SECRET));
    }
}
