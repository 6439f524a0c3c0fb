//! Server configuration: flags and environment variables (clap), validated once at start-up.
//!
//! Every setting has a flag and an environment variable; the value name in `--help` and in
//! error messages *is* the environment variable, so an error names the setting either way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::auth::ApiKeys;

/// Default listen port.
pub const DEFAULT_PORT: u16 = 8989;

/// Upper bound of TUNNEL_MAX_WINDOW_BYTES (256 MiB): enough for 2.5 GB/s on a 100 ms path, and
/// a bound on what one stream may hold even when misconfigured.
pub const MAX_WINDOW_BYTES: u32 = 256 * 1024 * 1024;

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

    /// Default tunnel lifetime in seconds (a create request may ask for less or more, up to
    /// TUNNEL_MAX_TTL_SECS).
    #[arg(
        long,
        env = "TUNNEL_TTL_SECS",
        value_name = "TUNNEL_TTL_SECS",
        default_value_t = 86_400
    )]
    pub ttl_secs: u64,

    /// Longest lifetime a create request may ask for, in seconds.
    #[arg(long, env = "TUNNEL_MAX_TTL_SECS", value_name = "TUNNEL_MAX_TTL_SECS", default_value_t = 7 * 86_400)]
    pub max_ttl_secs: u64,

    /// How long a public request waits for the local service's response head, in seconds
    /// (504 after). Once the head arrived, the body may stream for as long as it needs.
    #[arg(
        long,
        env = "TUNNEL_REQUEST_TIMEOUT_SECS",
        value_name = "TUNNEL_REQUEST_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub request_timeout_secs: u64,

    /// How long an open response body or WebSocket may stay silent (no byte either way), in
    /// seconds, before it is closed. Bounds streams whose other end vanished without a word.
    #[arg(
        long,
        env = "TUNNEL_IDLE_TIMEOUT_SECS",
        value_name = "TUNNEL_IDLE_TIMEOUT_SECS",
        default_value_t = 600
    )]
    pub idle_timeout_secs: u64,

    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(
        long,
        env = "TUNNEL_SHUTDOWN_GRACE_SECS",
        value_name = "TUNNEL_SHUTDOWN_GRACE_SECS",
        default_value_t = 20
    )]
    pub shutdown_grace_secs: u64,

    /// Interval between pings to each tunnel client, in seconds; a client silent for three
    /// intervals is dropped. Keep it well under the idle timeout of proxies in front (Cloudflare
    /// cuts idle connections at about 100 s).
    #[arg(
        long,
        env = "TUNNEL_PING_INTERVAL_SECS",
        value_name = "TUNNEL_PING_INTERVAL_SECS",
        default_value_t = 20
    )]
    pub ping_interval_secs: u64,

    /// Time a tunnel client has to send its hello after the WebSocket upgrade, in seconds.
    #[arg(
        long,
        env = "TUNNEL_HANDSHAKE_TIMEOUT_SECS",
        value_name = "TUNNEL_HANDSHAKE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,

    /// Most concurrent public requests per tunnel (503 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_STREAMS_PER_TUNNEL",
        value_name = "TUNNEL_MAX_STREAMS_PER_TUNNEL",
        default_value_t = 512
    )]
    pub max_streams_per_tunnel: usize,

    /// Most tunnels one API key may hold at once (429 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_TUNNELS_PER_KEY",
        value_name = "TUNNEL_MAX_TUNNELS_PER_KEY",
        default_value_t = 100
    )]
    pub max_tunnels_per_key: usize,

    /// Flow-control window each stream starts with per direction, in bytes: what the server
    /// buffers for one stream unless auto-tuning grows it (see TUNNEL_MAX_WINDOW_BYTES).
    #[arg(long, env = "TUNNEL_WINDOW_BYTES", value_name = "TUNNEL_WINDOW_BYTES", default_value_t = 1024 * 1024)]
    pub window_bytes: u32,

    /// Largest flow-control window per stream and direction, in bytes: the most the server ever
    /// buffers for one stream. A stream's window grows from TUNNEL_WINDOW_BYTES towards this
    /// only while its reader keeps up and the round trip to the client is the limit (a slow
    /// reader never grows it). Equal to TUNNEL_WINDOW_BYTES: fixed windows. Also sent to clients
    /// as the limit of their own receive windows.
    #[arg(long, env = "TUNNEL_MAX_WINDOW_BYTES", value_name = "TUNNEL_MAX_WINDOW_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_window_bytes: u32,

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

    /// Control API requests allowed per client address and minute (0: no limit).
    #[arg(
        long,
        env = "TUNNEL_API_RATE_PER_MIN",
        value_name = "TUNNEL_API_RATE_PER_MIN",
        default_value_t = 120
    )]
    pub api_rate_per_min: u32,

    /// Tunnel client connection attempts allowed per client address and minute (0: no limit).
    #[arg(
        long,
        env = "TUNNEL_CONNECT_RATE_PER_MIN",
        value_name = "TUNNEL_CONNECT_RATE_PER_MIN",
        default_value_t = 30
    )]
    pub connect_rate_per_min: u32,

    /// Public requests allowed per tunnel and second, with a burst of as many (0: no limit).
    /// Each tunnel has its own budget, so one noisy tunnel never slows another.
    #[arg(
        long,
        env = "TUNNEL_PUBLIC_RATE_PER_SEC",
        value_name = "TUNNEL_PUBLIC_RATE_PER_SEC",
        default_value_t = 1000
    )]
    pub public_rate_per_sec: u32,

    /// Largest request head (request line and headers), in bytes (431 past it).
    #[arg(long, env = "TUNNEL_MAX_HEADER_BYTES", value_name = "TUNNEL_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Most request headers (431 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_HEADERS",
        value_name = "TUNNEL_MAX_HEADERS",
        default_value_t = 100
    )]
    pub max_headers: usize,

    /// Longest request target (path and query), in bytes (414 past it).
    #[arg(long, env = "TUNNEL_MAX_URI_BYTES", value_name = "TUNNEL_MAX_URI_BYTES", default_value_t = 8 * 1024)]
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

    /// Time a public client has to send a complete request head, in seconds (slowloris guard).
    #[arg(
        long,
        env = "TUNNEL_HEADER_READ_TIMEOUT_SECS",
        value_name = "TUNNEL_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_read_timeout_secs: u64,

    /// Most concurrent public TCP connections; further ones wait in the listen backlog.
    #[arg(
        long,
        env = "TUNNEL_MAX_CONNECTIONS",
        value_name = "TUNNEL_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Most tunnel clients between WebSocket upgrade and hello at once (503 past it).
    #[arg(
        long,
        env = "TUNNEL_MAX_PENDING_HANDSHAKES",
        value_name = "TUNNEL_MAX_PENDING_HANDSHAKES",
        default_value_t = 256
    )]
    pub max_pending_handshakes: usize,
    /// Listen address of the Prometheus metrics (`GET /metrics`), or `off`. A listener of its
    /// own, so that the public ingress never exposes the metrics (they name every tunnel).
    #[arg(
        long,
        env = "TUNNEL_METRICS_BIND",
        value_name = "TUNNEL_METRICS_BIND",
        default_value = "127.0.0.1:9090"
    )]
    pub metrics_bind: String,

    /// Log format: `plain` or `json`.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "plain"
    )]
    pub log_format: String,

    /// Time zone of log timestamps (IANA name, e.g. America/Los_Angeles).
    #[arg(
        long,
        env = "LOG_TIMEZONE",
        value_name = "LOG_TIMEZONE",
        default_value = "UTC"
    )]
    pub log_timezone: String,
}

/// A setting with an unusable value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct ConfigError {
    /// The environment variable (and flag) at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Configured public base URL, without trailing slash; `None` derives it from the bound
    /// address.
    pub public_url: Option<String>,
    /// Accepted API keys (hashed).
    pub api_keys: ApiKeys,
    /// The key generated in dev mode, to print.
    pub generated_key: Option<String>,
    /// Default tunnel lifetime.
    pub default_ttl: Duration,
    /// Longest lifetime a tunnel may ask for.
    pub max_ttl: Duration,
    /// Wait for a response head.
    pub request_timeout: Duration,
    /// Silence allowed on an open stream.
    pub idle_timeout: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Ping interval to clients.
    pub ping_interval: Duration,
    /// Hello deadline.
    pub handshake_timeout: Duration,
    /// Concurrent streams per tunnel.
    pub max_streams_per_tunnel: usize,
    /// Tunnels per API key.
    pub max_tunnels_per_key: usize,
    /// Flow-control window each stream starts with.
    pub window_bytes: u32,
    /// Largest flow-control window auto-tuning may grow a stream to (≥ `window_bytes`).
    pub max_window_bytes: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Control API requests per address and minute (0: off).
    pub api_rate_per_min: u32,
    /// Connect attempts per address and minute (0: off).
    pub connect_rate_per_min: u32,
    /// Public requests per tunnel and second (0: off).
    pub public_rate_per_sec: u32,
    /// Request head limit.
    pub max_header_bytes: usize,
    /// Header count limit.
    pub max_headers: usize,
    /// Request target limit.
    pub max_uri_bytes: usize,
    /// Body limit (0: none).
    pub max_body_bytes: u64,
    /// Request head deadline.
    pub header_read_timeout: Duration,
    /// Concurrent public connections.
    pub max_connections: usize,
    /// Concurrent client handshakes.
    pub max_pending_handshakes: usize,
    /// Where to serve metrics; `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log time zone.
    pub log_timezone: chrono_tz::Tz,
}

impl Settings {
    /// Validates parsed arguments.
    pub fn from_args(args: ServerArgs) -> Result<Self, ConfigError> {
        let keys: Vec<String> = args
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(short) = keys.iter().find(|k| k.len() < 16) {
            return Err(invalid(
                "TUNNEL_API_KEYS",
                format!(
                    "every key must be at least 16 characters (one has {})",
                    short.len()
                ),
            ));
        }
        let (bind, api_keys, generated_key) = match (args.bind, keys.is_empty()) {
            (Some(bind), true) if !bind.ip().is_loopback() => {
                return Err(invalid(
                    "TUNNEL_API_KEYS",
                    format!(
                        "no API key is set, so the server would be open to anyone on {bind}; \
                         set TUNNEL_API_KEYS, or bind a loopback address for local use"
                    ),
                ))
            }
            (bind, true) => {
                let key = crate::auth::generate_secret();
                let bind = bind.unwrap_or(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    DEFAULT_PORT,
                ));
                (bind, ApiKeys::new(std::slice::from_ref(&key)), Some(key))
            }
            (bind, false) => (
                bind.unwrap_or(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    DEFAULT_PORT,
                )),
                ApiKeys::new(&keys),
                None,
            ),
        };
        let public_url = match args.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                let url = url.trim_end_matches('/');
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
                Some(url.to_string())
            }
        };
        let secs = |setting: &'static str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                Err(invalid(setting, format!("{v} is outside {min}..={max}")))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        let year = 366 * 86_400;
        let max_ttl = secs("TUNNEL_MAX_TTL_SECS", args.max_ttl_secs, 1, 10 * year)?;
        let default_ttl = secs("TUNNEL_TTL_SECS", args.ttl_secs, 1, 10 * year)?;
        if default_ttl > max_ttl {
            return Err(invalid(
                "TUNNEL_TTL_SECS",
                "must not exceed TUNNEL_MAX_TTL_SECS",
            ));
        }
        let log_format = match args.log_format.to_ascii_lowercase().as_str() {
            "plain" | "text" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("{other:?} is neither plain nor json"),
                ))
            }
        };
        let log_timezone = args.log_timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                "LOG_TIMEZONE",
                format!("unknown time zone {:?}", args.log_timezone),
            )
        })?;
        if !(16 * 1024..=64 * 1024 * 1024).contains(&args.window_bytes) {
            return Err(invalid(
                "TUNNEL_WINDOW_BYTES",
                "must be between 16384 and 67108864",
            ));
        }
        if !(args.window_bytes..=MAX_WINDOW_BYTES).contains(&args.max_window_bytes) {
            return Err(invalid(
                "TUNNEL_MAX_WINDOW_BYTES",
                format!(
                    "must be between TUNNEL_WINDOW_BYTES ({}) and {MAX_WINDOW_BYTES}",
                    args.window_bytes
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
        if args.max_header_bytes < 8192 {
            return Err(invalid("TUNNEL_MAX_HEADER_BYTES", "must be at least 8192"));
        }
        if args.max_headers == 0 {
            return Err(invalid("TUNNEL_MAX_HEADERS", "must be at least 1"));
        }
        if args.max_uri_bytes < 16 {
            return Err(invalid("TUNNEL_MAX_URI_BYTES", "must be at least 16"));
        }
        if args.max_connections == 0 {
            return Err(invalid("TUNNEL_MAX_CONNECTIONS", "must be at least 1"));
        }
        if args.max_pending_handshakes == 0 {
            return Err(invalid(
                "TUNNEL_MAX_PENDING_HANDSHAKES",
                "must be at least 1",
            ));
        }
        if args.max_streams_per_tunnel == 0 {
            return Err(invalid(
                "TUNNEL_MAX_STREAMS_PER_TUNNEL",
                "must be at least 1",
            ));
        }
        let metrics_bind = match args.metrics_bind.trim() {
            "off" | "" => None,
            addr => {
                let addr: SocketAddr = addr.parse().map_err(|_| {
                    invalid(
                        "TUNNEL_METRICS_BIND",
                        format!("{addr:?} is neither an address like 127.0.0.1:9090 nor off"),
                    )
                })?;
                let same_ip = addr.ip() == bind.ip()
                    || addr.ip().is_unspecified()
                    || bind.ip().is_unspecified();
                if addr.port() != 0 && addr.port() == bind.port() && same_ip {
                    return Err(invalid(
                        "TUNNEL_METRICS_BIND",
                        format!(
                            "{addr} is also TUNNEL_BIND's port; metrics need a port of their own"
                        ),
                    ));
                }
                Some(addr)
            }
        };
        if args.max_tunnels_per_key == 0 {
            return Err(invalid("TUNNEL_MAX_TUNNELS_PER_KEY", "must be at least 1"));
        }
        Ok(Self {
            bind,
            public_url,
            api_keys,
            generated_key,
            default_ttl,
            max_ttl,
            request_timeout: secs(
                "TUNNEL_REQUEST_TIMEOUT_SECS",
                args.request_timeout_secs,
                1,
                86_400,
            )?,
            idle_timeout: secs(
                "TUNNEL_IDLE_TIMEOUT_SECS",
                args.idle_timeout_secs,
                1,
                7 * 86_400,
            )?,
            shutdown_grace: secs(
                "TUNNEL_SHUTDOWN_GRACE_SECS",
                args.shutdown_grace_secs,
                0,
                3_600,
            )?,
            ping_interval: secs(
                "TUNNEL_PING_INTERVAL_SECS",
                args.ping_interval_secs,
                1,
                3_600,
            )?,
            handshake_timeout: secs(
                "TUNNEL_HANDSHAKE_TIMEOUT_SECS",
                args.handshake_timeout_secs,
                1,
                600,
            )?,
            max_streams_per_tunnel: args.max_streams_per_tunnel,
            max_tunnels_per_key: args.max_tunnels_per_key,
            window_bytes: args.window_bytes,
            max_window_bytes: args.max_window_bytes,
            trusted_proxies,
            api_rate_per_min: args.api_rate_per_min,
            connect_rate_per_min: args.connect_rate_per_min,
            public_rate_per_sec: args.public_rate_per_sec,
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            max_uri_bytes: args.max_uri_bytes,
            max_body_bytes: args.max_body_bytes,
            header_read_timeout: secs(
                "TUNNEL_HEADER_READ_TIMEOUT_SECS",
                args.header_read_timeout_secs,
                1,
                600,
            )?,
            max_connections: args.max_connections,
            max_pending_handshakes: args.max_pending_handshakes,
            metrics_bind,
            log_format,
            log_timezone,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["tunnel-server"];
        all.extend_from_slice(args);
        Settings::from_args(ServerArgs::try_parse_from(all).expect("parses"))
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
    fn windows_start_at_1_mib_and_may_grow_to_16_mib() {
        let s = parse(&[]).expect("valid");
        assert_eq!((s.window_bytes, s.max_window_bytes), (1 << 20, 16 << 20));
        // Equal turns auto-tuning off; the bounds are inclusive.
        let s = parse(&["--window-bytes", "65536", "--max-window-bytes", "65536"]).expect("valid");
        assert_eq!((s.window_bytes, s.max_window_bytes), (64 << 10, 64 << 10));
        let s = parse(&["--max-window-bytes", "268435456"]).expect("valid");
        assert_eq!(s.max_window_bytes, MAX_WINDOW_BYTES);
    }

    #[test]
    fn a_max_window_below_the_initial_one_is_refused_with_both_values() {
        let e = parse(&["--window-bytes", "4194304", "--max-window-bytes", "2097152"])
            .expect_err("refused");
        assert_eq!(e.setting, "TUNNEL_MAX_WINDOW_BYTES");
        assert!(e.message.contains("TUNNEL_WINDOW_BYTES (4194304)"), "{e}");
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
            let e = parse(&args).expect_err("invalid");
            assert_eq!(e.setting, setting, "{args:?}");
        }
    }
}
