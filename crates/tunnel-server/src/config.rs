//! Server configuration: flags and environment variables (clap), validated once at start-up.
//!
//! Every setting has a flag and an environment variable; the value name in `--help` and in
//! error messages *is* the environment variable, so an error names the setting either way.
//! Each value is parsed and range-checked by clap (`secs`, `at_least` and the parsers below),
//! so a bad value is a usage error that names its setting; [`Settings::from_args`] only checks
//! what involves several settings (API keys and the listen address, lifetimes, windows, the
//! metrics port).
//!
//! The settings come in groups: [`Timeouts`], [`Limits`], [`Rates`] and [`Logging`], plus the
//! few that say where the server is and who may use it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono_tz::Tz;
use clap::{Args, Parser, ValueEnum};

use crate::auth::ApiKeys;

pub mod dev_key;
pub mod domains;
pub mod tcp;

pub use domains::{DnsResolver, DomainArgs, Domains, UrlStyle};
mod cluster;
mod values;
mod workers;

pub use cluster::{Cluster, ClusterArgs, PeerSecret, RedisUrl, MIN_PEER_SECRET};
pub use tcp::{PortRange, TcpPorts, TcpSettings};
pub use values::ConfigError;
use values::{at_least, invalid, parse_metrics_bind, parse_time_zone, secs};
pub use values::{BadMetricsBind, MetricsBind, UnknownTimeZone};
pub use workers::{parse_workers, BadWorkers, Workers, MAX_WORKERS};

/// Default listen port.
pub const DEFAULT_PORT: u16 = tunnel_protocol::dev_key::DEFAULT_PORT;

/// Upper bound of TUNNEL_MAX_WINDOW_BYTES (256 MiB): enough for 2.5 GB/s on a 100 ms path, and
/// a bound on what one stream may hold even when misconfigured.
pub const MAX_WINDOW_BYTES: u32 = 256 * 1024 * 1024;

/// Longest tunnel lifetime a setting may give, in seconds (ten years of 366 days).
const TEN_YEARS: u64 = 10 * 366 * 86_400;

/// Command line and environment of `tunnel-server`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tunnel-server", version, about = "Self-hosted HTTP tunnel server", long_about = None)]
pub struct ServerArgs {
    /// Listen address. Default 0.0.0.0:8989, or 127.0.0.1:8989 when no API key is configured
    /// (dev mode: a key is generated and printed).
    #[arg(long, env = "TUNNEL_BIND", value_name = "TUNNEL_BIND")]
    pub bind: Option<SocketAddr>,

    /// Base URL the public reaches this server at (e.g. https://tunnels.example.com); tunnel
    /// URLs are built from it. Default: http://localhost:PORT.
    #[arg(long, env = "TUNNEL_PUBLIC_URL", value_name = "TUNNEL_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Comma-separated API keys for the control API (each at least 16 characters).
    #[arg(
        long,
        env = "TUNNEL_API_KEYS",
        value_name = "TUNNEL_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_keys: Vec<String>,

    /// Comma-separated CIDRs of proxies in front of the server (e.g. Traefik's pod network).
    /// Only from these peers is `X-Forwarded-For` believed when finding a client's address;
    /// from anyone else the socket address is used.
    #[arg(
        long,
        env = "TUNNEL_TRUSTED_PROXIES",
        value_name = "TUNNEL_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Listen address of the Prometheus metrics (`GET /metrics`), or `off`. A listener of its
    /// own, so that the public ingress never exposes the metrics (they name every tunnel).
    #[arg(
        long,
        env = "TUNNEL_METRICS_BIND",
        value_name = "TUNNEL_METRICS_BIND",
        value_parser = parse_metrics_bind,
        default_value = "127.0.0.1:9090"
    )]
    pub metrics_bind: MetricsBind,

    /// Threads that run the server: a number, or `auto` for one per core the process may use
    /// (see `config::workers` for why one is the default).
    #[arg(
        long,
        env = "TUNNEL_WORKERS",
        value_name = "TUNNEL_WORKERS",
        value_parser = parse_workers,
        default_value = "1"
    )]
    pub workers: Workers,

    /// Timeouts and lifetimes.
    #[command(flatten)]
    pub timeouts: Timeouts,

    /// Size and count limits.
    #[command(flatten)]
    pub limits: Limits,

    /// Rate limits.
    #[command(flatten)]
    pub rates: Rates,

    /// Log output.
    #[command(flatten)]
    pub logging: Logging,

    /// Names and domains: subdomains, blocked and reserved names, custom domains.
    #[command(flatten)]
    pub domains: DomainArgs,
    /// Several pods sharing a registry in Redis.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// TCP tunnels: public ports, connection cap.
    #[command(flatten)]
    pub tcp: TcpSettings,
}

/// How long things may take: waits, silences, the drain, pings, and tunnel lifetimes.
#[derive(Debug, Clone, Args)]
pub struct Timeouts {
    /// Default tunnel lifetime in seconds (a create request may ask for less or more, up to
    /// TUNNEL_MAX_TTL_SECS).
    #[arg(
        long = "ttl-secs",
        env = "TUNNEL_TTL_SECS",
        value_name = "TUNNEL_TTL_SECS",
        value_parser = secs(1..=TEN_YEARS),
        default_value = "86400"
    )]
    pub default_ttl: Duration,
    /// Longest lifetime a create request may ask for, in seconds.
    #[arg(
        long = "max-ttl-secs",
        env = "TUNNEL_MAX_TTL_SECS",
        value_name = "TUNNEL_MAX_TTL_SECS",
        value_parser = secs(1..=TEN_YEARS),
        default_value = "604800"
    )]
    pub max_ttl: Duration,
    /// How long a public request waits for the local service's response head, in seconds
    /// (504 after). Once the head arrived, the body may stream for as long as it needs.
    #[arg(
        long = "request-timeout-secs",
        env = "TUNNEL_REQUEST_TIMEOUT_SECS",
        value_name = "TUNNEL_REQUEST_TIMEOUT_SECS",
        value_parser = secs(1..=86_400),
        default_value = "30"
    )]
    pub request_timeout: Duration,
    /// How long an open response body or WebSocket may stay silent (no byte either way), in
    /// seconds, before it is closed. Bounds streams whose other end vanished without a word.
    #[arg(
        long = "idle-timeout-secs",
        env = "TUNNEL_IDLE_TIMEOUT_SECS",
        value_name = "TUNNEL_IDLE_TIMEOUT_SECS",
        value_parser = secs(1..=7 * 86_400),
        default_value = "600"
    )]
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(
        long = "shutdown-grace-secs",
        env = "TUNNEL_SHUTDOWN_GRACE_SECS",
        value_name = "TUNNEL_SHUTDOWN_GRACE_SECS",
        value_parser = secs(0..=3_600),
        default_value = "20"
    )]
    pub shutdown_grace: Duration,
    /// Interval between pings to each tunnel client, in seconds; a client silent for three
    /// intervals is dropped. Keep it well under the idle timeout of proxies in front (Cloudflare
    /// cuts idle connections at about 100 s).
    #[arg(
        long = "ping-interval-secs",
        env = "TUNNEL_PING_INTERVAL_SECS",
        value_name = "TUNNEL_PING_INTERVAL_SECS",
        value_parser = secs(1..=3_600),
        default_value = "20"
    )]
    pub ping_interval: Duration,
    /// Time a tunnel client has to send its hello after the WebSocket upgrade, in seconds.
    #[arg(
        long = "handshake-timeout-secs",
        env = "TUNNEL_HANDSHAKE_TIMEOUT_SECS",
        value_name = "TUNNEL_HANDSHAKE_TIMEOUT_SECS",
        value_parser = secs(1..=600),
        default_value = "10"
    )]
    pub handshake_timeout: Duration,
    /// Time a public client has to send a complete request head, in seconds (slowloris guard).
    #[arg(
        long = "header-read-timeout-secs",
        env = "TUNNEL_HEADER_READ_TIMEOUT_SECS",
        value_name = "TUNNEL_HEADER_READ_TIMEOUT_SECS",
        value_parser = secs(1..=600),
        default_value = "10"
    )]
    pub header_read_timeout: Duration,
}

/// Sizes and counts: what one request, stream, tunnel, key or the whole server may hold.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Most concurrent public requests per tunnel (503 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_STREAMS_PER_TUNNEL",
        value_name = "TUNNEL_MAX_STREAMS_PER_TUNNEL",
        value_parser = at_least(1),
        default_value_t = 512
    )]
    pub max_streams_per_tunnel: usize,
    /// Most tunnels one API key may hold at once (429 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_TUNNELS_PER_KEY",
        value_name = "TUNNEL_MAX_TUNNELS_PER_KEY",
        value_parser = at_least(1),
        default_value_t = 100
    )]
    pub max_tunnels_per_key: usize,
    /// Flow-control window each stream starts with per direction, in bytes: what the server
    /// buffers for one stream unless auto-tuning grows it (see TUNNEL_MAX_WINDOW_BYTES).
    #[arg(
        long,
        env = "TUNNEL_WINDOW_BYTES",
        value_name = "TUNNEL_WINDOW_BYTES",
        value_parser = clap::value_parser!(u32).range(16 * 1024..=64 * 1024 * 1024),
        default_value_t = 1024 * 1024
    )]
    pub window_bytes: u32,
    /// Largest flow-control window per stream and direction, in bytes: the most the server ever
    /// buffers for one stream. A stream's window grows from TUNNEL_WINDOW_BYTES towards this
    /// only while its reader keeps up and the round trip to the client is the limit (a slow
    /// reader never grows it). Equal to TUNNEL_WINDOW_BYTES: fixed windows. Also sent to clients
    /// as the limit of their own receive windows.
    #[arg(
        long,
        env = "TUNNEL_MAX_WINDOW_BYTES",
        value_name = "TUNNEL_MAX_WINDOW_BYTES",
        value_parser = clap::value_parser!(u32).range(16 * 1024..=MAX_WINDOW_BYTES as i64),
        default_value_t = 16 * 1024 * 1024
    )]
    pub max_window_bytes: u32,
    /// Largest request head (request line and headers), in bytes (431 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_HEADER_BYTES",
        value_name = "TUNNEL_MAX_HEADER_BYTES",
        value_parser = at_least(8192),
        default_value_t = 64 * 1024
    )]
    pub max_header_bytes: usize,
    /// Most request headers (431 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_HEADERS",
        value_name = "TUNNEL_MAX_HEADERS",
        value_parser = at_least(1),
        default_value_t = 100
    )]
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes (414 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_URI_BYTES",
        value_name = "TUNNEL_MAX_URI_BYTES",
        value_parser = at_least(16),
        default_value_t = 8 * 1024
    )]
    pub max_uri_bytes: usize,
    /// Largest public request body, in bytes (413 past it; 0: no limit). Bodies are streamed,
    /// so this bounds what reaches local services, not the server's memory.
    #[arg(
        long,
        env = "TUNNEL_MAX_BODY_BYTES",
        value_name = "TUNNEL_MAX_BODY_BYTES",
        default_value_t = 0
    )]
    pub max_body_bytes: u64,
    /// Most concurrent public TCP connections; further ones wait in the listen backlog.
    #[arg(
        long,
        env = "TUNNEL_MAX_CONNECTIONS",
        value_name = "TUNNEL_MAX_CONNECTIONS",
        value_parser = at_least(1),
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Most tunnel clients between WebSocket upgrade and hello at once (503 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_PENDING_HANDSHAKES",
        value_name = "TUNNEL_MAX_PENDING_HANDSHAKES",
        value_parser = at_least(1),
        default_value_t = 256
    )]
    pub max_pending_handshakes: usize,
}

/// Rate limits (0 turns one off).
#[derive(Debug, Clone, Args)]
pub struct Rates {
    /// Control API requests allowed per client address and minute (0: no limit).
    #[arg(
        long = "api-rate-per-min",
        env = "TUNNEL_API_RATE_PER_MIN",
        value_name = "TUNNEL_API_RATE_PER_MIN",
        default_value_t = 120
    )]
    pub api_per_min: u32,
    /// Tunnel client connection attempts allowed per client address and minute (0: no limit).
    #[arg(
        long = "connect-rate-per-min",
        env = "TUNNEL_CONNECT_RATE_PER_MIN",
        value_name = "TUNNEL_CONNECT_RATE_PER_MIN",
        default_value_t = 30
    )]
    pub connect_per_min: u32,
    /// Public requests allowed per tunnel and second, with a burst of as many (0: no limit).
    /// Each tunnel has its own budget, so one noisy tunnel never slows another.
    #[arg(
        long = "public-rate-per-sec",
        env = "TUNNEL_PUBLIC_RATE_PER_SEC",
        value_name = "TUNNEL_PUBLIC_RATE_PER_SEC",
        default_value_t = 1000
    )]
    pub public_per_sec: u32,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[value(alias = "text")]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Log output.
#[derive(Debug, Clone, Args)]
pub struct Logging {
    /// Log format: `plain` or `json`.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "plain",
        ignore_case = true
    )]
    pub format: LogFormat,
    /// Time zone of log timestamps (IANA name, e.g. America/Los_Angeles).
    #[arg(
        long = "log-timezone",
        env = "LOG_TIMEZONE",
        value_name = "LOG_TIMEZONE",
        value_parser = parse_time_zone,
        default_value = "UTC"
    )]
    pub timezone: Tz,
}

impl From<domains::DomainSettingError> for ConfigError {
    fn from(e: domains::DomainSettingError) -> Self {
        invalid(e.setting, e.message)
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Whether to listen on `[::1]` too, on `bind`'s port: dev mode on 127.0.0.1 (the
    /// default), so that `localhost` works whichever of 127.0.0.1 and ::1 a client tries
    /// first.
    pub bind_ipv6_loopback: bool,
    /// Configured public base URL, without trailing slash; `None` derives it from the bound
    /// address.
    pub public_url: Option<String>,
    /// Accepted API keys (hashed).
    pub api_keys: ApiKeys,
    /// The key generated in dev mode, to print.
    pub generated_key: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where to serve metrics; `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
    /// Threads the runtime was built with (the runtime itself is built before the settings).
    pub workers: Workers,
    /// Timeouts and lifetimes (`default_ttl` at most `max_ttl`).
    pub timeouts: Timeouts,
    /// Size and count limits (`window_bytes` at most `max_window_bytes`).
    pub limits: Limits,
    /// Rate limits.
    pub rates: Rates,
    /// Log output.
    pub logging: Logging,
    /// Names and domains.
    pub domains: Domains,
    /// Several pods sharing a registry in Redis; `None`: the registry is in memory.
    pub cluster: Option<Cluster>,
    /// TCP tunnels.
    pub tcp: TcpSettings,
}

/// Why public TCP ports and a shared registry do not go together.
const PORTS_NEED_ONE_POD: &str = "public TCP ports need a single server process: a port \
    listens on the pod that created its tunnel, and no other pod accepts on it or knows it is \
    taken. With TUNNEL_REDIS_URL set, leave TUNNEL_TCP_PORTS empty: TCP tunnels are reached \
    through the front door (`tunnel-client connect`), which every pod serves";

impl Settings {
    /// Checks what involves several settings; every value by itself was checked by clap.
    pub fn from_args(args: ServerArgs) -> Result<Self, ConfigError> {
        let (bind, api_keys, generated_key) = keys_and_bind(&args.api_keys, args.bind)?;
        let domains = args.domains.validate(generated_key.is_some(), &api_keys)?;
        let cluster = cluster::cluster(args.cluster, generated_key.is_some())?;
        let public_url = public_url(args.public_url.as_deref())?;
        if cluster.is_some() && args.tcp.tcp_ports.0.is_some() {
            return Err(invalid("TUNNEL_TCP_PORTS", PORTS_NEED_ONE_POD));
        }
        let t = &args.timeouts;
        if t.default_ttl > t.max_ttl {
            return Err(invalid(
                "TUNNEL_TTL_SECS",
                "must not exceed TUNNEL_MAX_TTL_SECS",
            ));
        }
        let l = &args.limits;
        if l.max_window_bytes < l.window_bytes {
            return Err(invalid(
                "TUNNEL_MAX_WINDOW_BYTES",
                format!(
                    "must be between TUNNEL_WINDOW_BYTES ({}) and {MAX_WINDOW_BYTES}",
                    l.window_bytes
                ),
            ));
        }
        let trusted_proxies = args
            .trusted_proxies
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(crate::edge::client_ip::parse_cidr)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("TUNNEL_TRUSTED_PROXIES", e.to_string()))?;
        let metrics_bind = args.metrics_bind.0;
        if let Some(addr) = metrics_bind {
            let same_ip =
                addr.ip() == bind.ip() || addr.ip().is_unspecified() || bind.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == bind.port() && same_ip {
                return Err(invalid(
                    "TUNNEL_METRICS_BIND",
                    format!("{addr} is also TUNNEL_BIND's port; metrics need a port of their own"),
                ));
            }
        }
        Ok(Self {
            bind_ipv6_loopback: generated_key.is_some() && bind.ip() == Ipv4Addr::LOCALHOST,
            bind,
            public_url,
            api_keys,
            generated_key,
            trusted_proxies,
            metrics_bind,
            workers: args.workers,
            timeouts: args.timeouts,
            limits: args.limits,
            rates: args.rates,
            logging: args.logging,
            domains,
            cluster,
            tcp: args.tcp,
        })
    }

    /// In dev mode, serves with `key` (one kept from an earlier run, see [`dev_key`]) instead
    /// of the key generated for this run. Does nothing when API keys are configured.
    pub fn use_dev_key(&mut self, key: String) {
        if self.generated_key.is_some() {
            self.api_keys = ApiKeys::new(std::slice::from_ref(&key));
            self.generated_key = Some(key);
        }
    }

    /// Parses and validates an argument list (for tests and embedding): the environment is
    /// read too, as for the binary.
    pub fn parse_from<I, T>(args: I) -> Result<Self, anyhow::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = ServerArgs::try_parse_from(args)?;
        Ok(Self::from_args(args)?)
    }
}

/// The API keys and the listen address, which depend on each other: without a key the server
/// is in dev mode, generates one, and listens on loopback only.
fn keys_and_bind(
    keys: &[String],
    bind: Option<SocketAddr>,
) -> Result<(SocketAddr, ApiKeys, Option<String>), ConfigError> {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    // A labelled key (`label:KEY`) is measured without its label.
    let secret = |k: &String| crate::auth::split_label(k).1.len();
    if let Some(short) = keys.iter().find(|k| secret(k) < 16) {
        return Err(invalid(
            "TUNNEL_API_KEYS",
            format!(
                "every key must be at least 16 characters (one has {})",
                secret(short)
            ),
        ));
    }
    match (bind, keys.is_empty()) {
        (Some(bind), true) if !bind.ip().is_loopback() => Err(invalid(
            "TUNNEL_API_KEYS",
            format!(
                "no API key is set, so the server would be open to anyone on {bind}; \
                 set TUNNEL_API_KEYS, or bind a loopback address for local use"
            ),
        )),
        (bind, true) => {
            let key = crate::auth::generate_secret();
            let bind = bind.unwrap_or(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_PORT,
            ));
            Ok((bind, ApiKeys::new(std::slice::from_ref(&key)), Some(key)))
        }
        (bind, false) => Ok((
            bind.unwrap_or(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_PORT,
            )),
            ApiKeys::new(&keys),
            None,
        )),
    }
}

/// TUNNEL_PUBLIC_URL without its trailing slash; `None` when unset or empty.
fn public_url(url: Option<&str>) -> Result<Option<String>, ConfigError> {
    let url = match url.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(url) => url.trim_end_matches('/'),
    };
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| invalid("TUNNEL_PUBLIC_URL", format!("not a URL: {e}")))?;
    match parsed.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(invalid(
                "TUNNEL_PUBLIC_URL",
                "must start with http:// or https://",
            ))
        }
    }
    if parsed.host().is_none() {
        return Err(invalid("TUNNEL_PUBLIC_URL", "has no host"));
    }
    if parsed.query().is_some() {
        return Err(invalid("TUNNEL_PUBLIC_URL", "must not have a query"));
    }
    Ok(Some(url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["tunnel-server"];
        all.extend_from_slice(args);
        Settings::from_args(ServerArgs::try_parse_from(all).expect("parses"))
    }

    /// The setting an argument list is refused for: the `<VALUE_NAME>` of a value clap
    /// refused by itself, or the setting of a check across settings.
    fn refused_setting(args: &[&str]) -> String {
        let mut all = vec!["tunnel-server"];
        all.extend_from_slice(args);
        match ServerArgs::try_parse_from(all) {
            Err(e) => {
                let text = e.to_string();
                let name = text
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'));
                name.map(|(name, _)| name.to_string()).unwrap_or(text)
            }
            Ok(args) => Settings::from_args(args)
                .map(|_| "nothing".to_string())
                .unwrap_or_else(|e| e.setting.to_string()),
        }
    }

    #[test]
    fn no_key_means_loopback_and_a_generated_key() {
        let s = parse(&[]).expect("valid");
        assert!(s.bind.ip().is_loopback());
        assert_eq!(s.bind.port(), DEFAULT_PORT);
        let key = s.generated_key.expect("generated");
        assert!(s.api_keys.check(&key).is_some());
    }

    #[test]
    fn a_kept_dev_key_replaces_the_generated_one_only_in_dev_mode() {
        let mut s = parse(&[]).expect("valid");
        s.use_dev_key("kept-key-0123456789".into());
        assert_eq!(s.generated_key.as_deref(), Some("kept-key-0123456789"));
        assert!(s.api_keys.check("kept-key-0123456789").is_some());
        let mut s = parse(&["--api-keys", "0123456789abcdef"]).expect("valid");
        s.use_dev_key("kept-key-0123456789".into());
        assert!(s.api_keys.check("kept-key-0123456789").is_none());
        assert!(s.generated_key.is_none());
    }

    #[test]
    fn no_key_on_a_public_address_is_refused() {
        let e = parse(&["--bind", "0.0.0.0:8989"]).expect_err("refused");
        assert_eq!(e.setting, "TUNNEL_API_KEYS");
    }

    #[test]
    fn keys_mean_all_interfaces_by_default() {
        let s = parse(&["--api-keys", "0123456789abcdef,fedcba9876543210"]).expect("valid");
        assert!(s.bind.ip().is_unspecified());
        assert!(s.generated_key.is_none());
        assert!(s.api_keys.check("fedcba9876543210").is_some());
        assert!(s.api_keys.check("fedcba987654321").is_none());
    }

    #[test]
    fn metrics_listen_on_loopback_by_default_and_can_be_turned_off() {
        let s = parse(&[]).expect("valid");
        assert_eq!(
            s.metrics_bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        let s = parse(&["--metrics-bind", "off"]).expect("valid");
        assert_eq!(s.metrics_bind, None);
    }

    #[test]
    fn one_worker_thread_by_default_auto_or_a_count_on_request() {
        assert_eq!(parse(&[]).expect("valid").workers, Workers::default());
        let s = parse(&["--workers", "auto"]).expect("valid");
        assert_eq!(s.workers, Workers::Auto);
        let s = parse(&["--workers", "3"]).expect("valid");
        assert_eq!(s.workers.to_string(), "3");
        assert_eq!(refused_setting(&["--workers", "0"]), "TUNNEL_WORKERS");
        assert_eq!(refused_setting(&["--workers", "many"]), "TUNNEL_WORKERS");
    }

    #[test]
    fn windows_start_at_1_mib_and_may_grow_to_16_mib() {
        let s = parse(&[]).expect("valid").limits;
        assert_eq!((s.window_bytes, s.max_window_bytes), (1 << 20, 16 << 20));
        // Equal turns auto-tuning off; the bounds are inclusive.
        let s = parse(&["--window-bytes", "65536", "--max-window-bytes", "65536"])
            .expect("valid")
            .limits;
        assert_eq!((s.window_bytes, s.max_window_bytes), (64 << 10, 64 << 10));
        let s = parse(&["--max-window-bytes", "268435456"]).expect("valid");
        assert_eq!(s.limits.max_window_bytes, MAX_WINDOW_BYTES);
    }

    #[test]
    fn a_max_window_below_the_initial_one_is_refused_with_both_values() {
        let e = parse(&["--window-bytes", "4194304", "--max-window-bytes", "2097152"])
            .expect_err("refused");
        assert_eq!(e.setting, "TUNNEL_MAX_WINDOW_BYTES");
        assert!(e.message.contains("TUNNEL_WINDOW_BYTES (4194304)"), "{e}");
    }

    #[test]
    fn values_land_in_their_group_with_their_type() {
        let s = parse(&[
            "--request-timeout-secs",
            "5",
            "--shutdown-grace-secs",
            "0",
            "--max-body-bytes",
            "1024",
            "--public-rate-per-sec",
            "0",
            "--log-format",
            "TEXT",
            "--log-timezone",
            "Europe/Paris",
        ])
        .expect("valid");
        assert_eq!(s.timeouts.request_timeout, Duration::from_secs(5));
        assert_eq!(s.timeouts.shutdown_grace, Duration::ZERO);
        assert_eq!(s.timeouts.default_ttl, Duration::from_secs(86_400));
        assert_eq!(s.limits.max_body_bytes, 1024);
        assert_eq!(s.rates.public_per_sec, 0);
        assert_eq!(s.logging.format, LogFormat::Plain);
        assert_eq!(s.logging.timezone, chrono_tz::Europe::Paris);
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (args, setting) in [
            (vec!["--api-keys", "short"], "TUNNEL_API_KEYS"),
            (vec!["--public-url", "ftp://x"], "TUNNEL_PUBLIC_URL"),
            (vec!["--ttl-secs", "0"], "TUNNEL_TTL_SECS"),
            (vec!["--log-format", "xml"], "LOG_FORMAT"),
            (vec!["--log-timezone", "Mars/Base"], "LOG_TIMEZONE"),
            (vec!["--window-bytes", "10"], "TUNNEL_WINDOW_BYTES"),
            (vec!["--metrics-bind", "9090"], "TUNNEL_METRICS_BIND"),
            (
                vec!["--metrics-bind", "127.0.0.1:8989"],
                "TUNNEL_METRICS_BIND",
            ),
            (
                vec!["--ttl-secs", "100", "--max-ttl-secs", "10"],
                "TUNNEL_TTL_SECS",
            ),
            (
                vec!["--trusted-proxies", "10.0.0.0/33"],
                "TUNNEL_TRUSTED_PROXIES",
            ),
            (vec!["--max-header-bytes", "100"], "TUNNEL_MAX_HEADER_BYTES"),
            (vec!["--max-headers", "0"], "TUNNEL_MAX_HEADERS"),
            (
                vec!["--shutdown-grace-secs", "3601"],
                "TUNNEL_SHUTDOWN_GRACE_SECS",
            ),
            (
                vec!["--request-timeout-secs", "soon"],
                "TUNNEL_REQUEST_TIMEOUT_SECS",
            ),
            // Below the default initial window (1 MiB).
            (
                vec!["--max-window-bytes", "65536"],
                "TUNNEL_MAX_WINDOW_BYTES",
            ),
            (
                vec!["--window-bytes", "4194304", "--max-window-bytes", "2097152"],
                "TUNNEL_MAX_WINDOW_BYTES",
            ),
            (
                vec!["--max-window-bytes", "268435457"],
                "TUNNEL_MAX_WINDOW_BYTES",
            ),
        ] {
            assert_eq!(refused_setting(&args), setting, "{args:?}");
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn without_redis_there_is_no_cluster_and_cluster_settings_are_ignored() {
        let s = parse(&["--peer-bind", "0.0.0.0:9999"]).expect("valid");
        assert!(s.cluster.is_none());
    }

    #[test]
    fn a_cluster_needs_a_long_peer_secret_and_an_address_to_advertise() {
        let redis = [
            "--api-keys",
            "0123456789abcdef",
            "--redis-url",
            "redis://:hunter2@redis:6379/0",
        ];
        let with = |extra: &[&str]| {
            let mut args = redis.to_vec();
            args.extend_from_slice(extra);
            refused_setting(&args)
        };
        assert_eq!(with(&[]), "TUNNEL_PEER_SECRET");
        assert_eq!(with(&["--peer-secret", "short"]), "TUNNEL_PEER_SECRET");
        assert_eq!(with(&["--peer-secret", SECRET]), "TUNNEL_PEER_ADVERTISE");
        assert_eq!(
            with(&["--peer-secret", SECRET, "--peer-advertise", "10.1.2.3"]),
            "TUNNEL_PEER_ADVERTISE"
        );
        assert_eq!(
            with(&["--peer-secret", SECRET, "--peer-bind", "127.0.0.1:0"]),
            "nothing"
        );
        assert_eq!(
            with(&[
                "--peer-secret",
                SECRET,
                "--peer-bind",
                "127.0.0.1:0",
                "--tcp-ports",
                "20000-20009"
            ]),
            "TUNNEL_TCP_PORTS"
        );
        assert_eq!(
            refused_setting(&["--redis-url", "redis://r"]),
            "TUNNEL_API_KEYS"
        );
        assert_eq!(with(&["--redis-url", "http://x"]), "TUNNEL_REDIS_URL");
        assert_eq!(refused_setting(&["--lease-secs", "1"]), "TUNNEL_LEASE_SECS");
        assert_eq!(refused_setting(&["--cache-secs", "0"]), "TUNNEL_CACHE_SECS");
        assert_eq!(
            refused_setting(&["--cache-secs", "601"]),
            "TUNNEL_CACHE_SECS"
        );
        let mut args = redis.to_vec();
        args.extend_from_slice(&[
            "--peer-secret",
            SECRET,
            "--peer-advertise",
            "10.1.2.3:8990",
            "--node-id",
            "pod-a",
        ]);
        let c = parse(&args).expect("valid").cluster.expect("a cluster");
        assert_eq!(c.node_id, "pod-a");
        assert_eq!(c.peer_advertise.as_deref(), Some("10.1.2.3:8990"));
        assert_eq!(c.lease, Duration::from_secs(15));
        assert_eq!(c.cache, Duration::from_secs(2));
    }
}
