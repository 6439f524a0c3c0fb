//! Client configuration: flags and environment variables.
//!
//! `tunnel-client [FLAGS]` exposes one service as it always did ([`ClientArgs`]); the
//! subcommands of [`Command`] work from a config file (`start`, `config check`), which
//! `crate::file` reads into the same [`ClientConfig`]s; `tcp` and `connect` are TCP tunnels'
//! two ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::inspect::{InspectArgs, InspectConfig, InspectConfigError};

mod flags;

pub use self::flags::SessionFlags;

/// The command line of `tunnel-client`: a subcommand, or today's flags of one tunnel.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tunnel-client",
    version,
    about = "Expose a local HTTP or TCP service through a tunnel-server",
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do; without one, expose the service the flags describe.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The one-tunnel flags (`None` with a subcommand).
    #[command(flatten)]
    pub http: Option<ClientArgs>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Start tunnels of the config file: `start --all`, or `start NAME...`. The file is
    /// watched (and SIGHUP reloads it): tunnels added, removed or changed follow it.
    Start(StartArgs),
    /// The config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Expose a local TCP service (Postgres, Redis, SSH…): `tunnel-client tcp 5432`.
    Tcp(TcpArgs),
    /// Reach a TCP tunnel through the server's HTTP front door: a local port whose
    /// connections go to the tunnel's service (`tunnel-client connect ID --listen
    /// 127.0.0.1:15432`).
    Connect(ConnectArgs),
}

/// `tunnel-client config ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Reads and validates the file; prints its tunnels, or every error with file, line and
    /// key (exit status 64).
    Check(FileArgs),
}

/// Where the config file is.
#[derive(Debug, Clone, clap::Args)]
pub struct FileArgs {
    /// The config file. Default: `$XDG_CONFIG_HOME/tunnel/tunnel.toml` (or the platform's
    /// config directory).
    #[arg(long = "config", env = "TUNNEL_CONFIG", value_name = "TUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `tunnel-client start`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// The tunnels to start, by name.
    #[arg(value_name = "NAME", required_unless_present = "all")]
    pub names: Vec<String>,

    /// Start every tunnel of the file (and those added to it later).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,

    /// The config file.
    #[command(flatten)]
    pub file: FileArgs,

    /// The server, over the file's `[client] server`.
    #[arg(long, env = "TUNNEL_SERVER", value_name = "TUNNEL_SERVER")]
    pub server: Option<String>,

    /// The API key, over the file's `[client] api_key`.
    #[arg(
        long,
        env = "TUNNEL_API_KEY",
        value_name = "TUNNEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Do not watch the file (SIGHUP still reloads it).
    #[arg(long, env = "TUNNEL_NO_WATCH")]
    pub no_watch: bool,

    /// No per-request log lines.
    #[arg(long, short, env = "TUNNEL_QUIET")]
    pub quiet: bool,
}

/// `tunnel-client tcp PORT`.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// Local TCP port to expose.
    #[arg(value_name = "PORT")]
    pub port: u16,

    /// The tunnel server: HOST[:PORT], or a URL.
    #[arg(long, env = "TUNNEL_SERVER", value_name = "TUNNEL_SERVER")]
    pub server: String,

    /// API key for the server's control API.
    #[arg(
        long,
        env = "TUNNEL_API_KEY",
        value_name = "TUNNEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: String,

    /// Host of the local service.
    #[arg(
        long,
        env = "TUNNEL_LOCAL_HOST",
        value_name = "TUNNEL_LOCAL_HOST",
        default_value = "localhost"
    )]
    pub local_host: String,

    /// Requested tunnel id.
    #[arg(long, env = "TUNNEL_NAME", value_name = "TUNNEL_NAME")]
    pub name: Option<String>,

    /// The public port to ask for (within the server's TUNNEL_TCP_PORTS; a free one if absent).
    #[arg(long, env = "TUNNEL_REMOTE_PORT", value_name = "TUNNEL_REMOTE_PORT")]
    pub remote_port: Option<u16>,

    /// Send a PROXY protocol v2 header (the real client's address) to the local service
    /// before each connection's bytes.
    #[arg(long, env = "TUNNEL_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Requested tunnel lifetime in seconds.
    #[arg(
        long,
        env = "TUNNEL_CLIENT_TTL_SECS",
        value_name = "TUNNEL_CLIENT_TTL_SECS"
    )]
    pub ttl_secs: Option<u64>,

    /// Only these networks may connect; repeat or comma-separate.
    #[arg(
        long = "allow-ip",
        env = "TUNNEL_ALLOW_IPS",
        value_name = "TUNNEL_ALLOW_IPS",
        value_delimiter = ','
    )]
    pub allow_ips: Vec<String>,

    /// These networks may never connect (checked before --allow-ip).
    #[arg(
        long = "deny-ip",
        env = "TUNNEL_DENY_IPS",
        value_name = "TUNNEL_DENY_IPS",
        value_delimiter = ','
    )]
    pub deny_ips: Vec<String>,

    /// No per-connection log lines.
    #[arg(long, short, env = "TUNNEL_QUIET")]
    pub quiet: bool,

    /// Retrying, taking over, request lines.
    #[command(flatten)]
    pub session: SessionFlags,
}

/// `tunnel-client connect ID --listen ADDR`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The TCP tunnel's id.
    #[arg(value_name = "TUNNEL_ID")]
    pub tunnel_id: String,

    /// The local address to listen on; each connection to it reaches the tunnel's service.
    #[arg(long, env = "TUNNEL_LISTEN", value_name = "TUNNEL_LISTEN")]
    pub listen: SocketAddr,

    /// The tunnel server: HOST[:PORT], or a URL.
    #[arg(long, env = "TUNNEL_SERVER", value_name = "TUNNEL_SERVER")]
    pub server: String,

    /// The tunnel's access token (from its owner's banner or create call).
    #[arg(
        long,
        env = "TUNNEL_ACCESS_TOKEN",
        value_name = "TUNNEL_ACCESS_TOKEN",
        hide_env_values = true,
        required_unless_present = "api_key"
    )]
    pub token: Option<String>,

    /// Or the owner's API key.
    #[arg(
        long,
        env = "TUNNEL_API_KEY",
        value_name = "TUNNEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// No per-connection log lines.
    #[arg(long, short, env = "TUNNEL_QUIET")]
    pub quiet: bool,
}

/// Command line and environment of one tunnel (`tunnel-client` without a subcommand).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tunnel-client",
    version,
    about = "Expose a local HTTP service through a tunnel-server",
    long_about = None
)]
pub struct ClientArgs {
    /// The tunnel server: HOST[:PORT], or a URL. Without a scheme https/wss is used, except
    /// for loopback hosts (http/ws).
    #[arg(long, env = "TUNNEL_SERVER", value_name = "TUNNEL_SERVER")]
    pub server: String,

    /// API key for the server's control API.
    #[arg(
        long,
        env = "TUNNEL_API_KEY",
        value_name = "TUNNEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: String,

    /// Local port to expose.
    #[arg(
        short,
        long,
        env = "TUNNEL_LOCAL_PORT",
        value_name = "TUNNEL_LOCAL_PORT"
    )]
    pub port: u16,

    /// Host of the local service.
    #[arg(
        long,
        env = "TUNNEL_LOCAL_HOST",
        value_name = "TUNNEL_LOCAL_HOST",
        default_value = "localhost"
    )]
    pub local_host: String,

    /// Requested tunnel id (becomes the first path segment of the public URL).
    #[arg(long, env = "TUNNEL_NAME", value_name = "TUNNEL_NAME")]
    pub name: Option<String>,

    /// A custom domain for the tunnel (e.g. app.mycompany.com): the server routes it here once
    /// a DNS TXT record `_tunnel.<domain>` holds the value the client prints.
    #[arg(
        long,
        env = "TUNNEL_CUSTOM_DOMAIN",
        value_name = "TUNNEL_CUSTOM_DOMAIN"
    )]
    pub domain: Option<String>,

    /// Requested tunnel lifetime in seconds (the server's default when absent).
    #[arg(
        long,
        env = "TUNNEL_CLIENT_TTL_SECS",
        value_name = "TUNNEL_CLIENT_TTL_SECS"
    )]
    pub ttl_secs: Option<u64>,

    /// Host header sent to the local service: `rewrite` (the local address, what dev servers
    /// expect), `preserve` (the public host), or a literal host name.
    #[arg(
        long,
        env = "TUNNEL_HOST_HEADER",
        value_name = "TUNNEL_HOST_HEADER",
        default_value = "rewrite"
    )]
    pub host_header: String,

    /// Require HTTP basic auth on the public URL: `user:password` (password 8+ characters).
    #[arg(
        long,
        env = "TUNNEL_BASIC_AUTH",
        value_name = "TUNNEL_BASIC_AUTH",
        hide_env_values = true
    )]
    pub basic_auth: Option<String>,

    /// Only these networks (CIDR or address, IPv4 or IPv6) may use the public URL; repeat or
    /// comma-separate.
    #[arg(
        long = "allow-ip",
        env = "TUNNEL_ALLOW_IPS",
        value_name = "TUNNEL_ALLOW_IPS",
        value_delimiter = ','
    )]
    pub allow_ips: Vec<String>,

    /// These networks may never use the public URL (checked before --allow-ip).
    #[arg(
        long = "deny-ip",
        env = "TUNNEL_DENY_IPS",
        value_name = "TUNNEL_DENY_IPS",
        value_delimiter = ','
    )]
    pub deny_ips: Vec<String>,

    /// No per-request log lines.
    #[arg(long, short, env = "TUNNEL_QUIET")]
    pub quiet: bool,

    /// The traffic inspector.
    #[command(flatten)]
    pub inspect: InspectArgs,

    /// Retrying, taking over, request lines.
    #[command(flatten)]
    pub session: SessionFlags,
}

/// Where the server is, for the API and for the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `http(s)://host[:port]` (no trailing slash).
    pub http_base: String,
    /// `ws(s)://host[:port]`.
    pub ws_base: String,
}

/// Why `--server` is not a usable server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    /// A scheme other than `http://` and `https://`.
    #[error("{0:?}: only http:// and https:// servers are supported")]
    Scheme(String),
    /// Nothing before the path.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// Not a valid URI authority.
    #[error("{0:?} is not a valid server address: {1}")]
    Invalid(String, String),
}

/// Why the settings cannot be used; names the setting (exit status 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `TUNNEL_SERVER`.
    #[error("invalid TUNNEL_SERVER: {0}")]
    Server(#[from] ServerUrlError),
    /// `TUNNEL_API_KEY` is empty.
    #[error("invalid TUNNEL_API_KEY: empty")]
    EmptyApiKey,
    /// `TUNNEL_LOCAL_PORT` is 0.
    #[error("invalid TUNNEL_LOCAL_PORT: 0 is not a port")]
    PortZero,
    /// `TUNNEL_HOST_HEADER` is neither a mode nor a usable header value.
    #[error("invalid TUNNEL_HOST_HEADER: {0:?}")]
    HostHeader(String),
    /// A `TUNNEL_INSPECT_*` setting (the error names which).
    #[error(transparent)]
    Inspect(#[from] InspectConfigError),
}

/// Whether a host name or address is on this machine.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ServerUrl {
    /// Parses `--server`.
    pub fn parse(s: &str) -> Result<Self, ServerUrlError> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r)
        } else if s.contains("://") {
            return Err(ServerUrlError::Scheme(s.to_string()));
        } else {
            let authority = s.split('/').next().unwrap_or(s);
            let host = match authority.rsplit_once(':') {
                Some((h, port)) if port.parse::<u16>().is_ok() => h,
                _ => authority,
            };
            (
                if is_loopback_host(host) {
                    "http"
                } else {
                    "https"
                },
                s,
            )
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ServerUrlError::NoHost(s.to_string()));
        }
        let http_base = format!("{scheme}://{rest}");
        http_base
            .parse::<http::Uri>()
            .map_err(|e| ServerUrlError::Invalid(s.to_string(), e.to_string()))?;
        let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
        Ok(Self {
            ws_base: format!("{ws_scheme}://{rest}"),
            http_base,
        })
    }
}

/// What Host header the local service sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// The local address (`localhost:3000`).
    Rewrite,
    /// The host the public client asked for.
    Preserve,
    /// A fixed value.
    Fixed(String),
}

impl HostHeader {
    /// `rewrite`, `preserve`, or a literal host (`None` if it is not a usable header value).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rewrite" => Some(HostHeader::Rewrite),
            "preserve" => Some(HostHeader::Preserve),
            other if http::HeaderValue::from_str(other).is_ok() && !other.is_empty() => {
                Some(HostHeader::Fixed(other.to_string()))
            }
            _ => None,
        }
    }
}

/// Validated client settings (of one tunnel). Equal settings mean an unchanged tunnel on a
/// config reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server.
    pub server: ServerUrl,
    /// API key.
    pub api_key: String,
    /// Local service host.
    pub local_host: String,
    /// Local service port.
    pub local_port: u16,
    /// Requested tunnel id.
    pub name: Option<String>,
    /// Requested lifetime.
    pub ttl_secs: Option<u64>,
    /// Host header policy.
    pub host_header: HostHeader,
    /// Print per-request lines.
    pub log_requests: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Access control asked for on create.
    pub access: AccessRequest,
    /// The custom domain asked for on create.
    pub domain: Option<String>,
    /// The traffic inspector, unless `--no-inspect`.
    pub inspect: Option<InspectConfig>,
    /// Set for a TCP tunnel (`tunnel-client tcp`, a file's `proto = "tcp"`): raw TCP streams
    /// to the local service instead of HTTP requests.
    pub tcp: Option<TcpOptions>,
    /// Retrying, taking over, request lines.
    pub session: SessionFlags,
}

/// What a TCP tunnel asks for beyond an HTTP one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// The public port asked for (within the server's `TUNNEL_TCP_PORTS`).
    pub remote_port: Option<u16>,
    /// The PROXY protocol header to the local service.
    pub proxy_protocol: ProxyProtocol,
}

/// Whether a TCP tunnel's local service gets a PROXY protocol header naming the real client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// No header: the local service sees the tunnel client as its peer.
    #[default]
    Off,
    /// The binary version 2 header.
    V2,
}

/// Access control the client asks the server to enforce on its tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRequest {
    /// `user:password`.
    pub basic_auth: Option<String>,
    /// Allowed networks.
    pub ip_allow: Vec<String>,
    /// Denied networks.
    pub ip_deny: Vec<String>,
}

impl ClientConfig {
    /// Validates parsed arguments.
    pub fn from_args(args: ClientArgs) -> Result<Self, ConfigError> {
        let server = ServerUrl::parse(&args.server)?;
        if args.api_key.trim().is_empty() {
            return Err(ConfigError::EmptyApiKey);
        }
        if args.port == 0 {
            return Err(ConfigError::PortZero);
        }
        let host_header = HostHeader::parse(&args.host_header)
            .ok_or_else(|| ConfigError::HostHeader(args.host_header.clone()))?;
        let inspect = args.inspect.validate()?;
        Ok(Self {
            inspect,
            server,
            api_key: args.api_key.trim().to_string(),
            local_host: args.local_host,
            local_port: args.port,
            name: args.name.filter(|n| !n.is_empty()),
            domain: args
                .domain
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
            ttl_secs: args.ttl_secs,
            host_header,
            log_requests: !args.quiet,
            max_backoff: Duration::from_secs(30),
            access: AccessRequest {
                basic_auth: args.basic_auth.filter(|b| !b.is_empty()),
                ip_allow: clean(args.allow_ips),
                ip_deny: clean(args.deny_ips),
            },
            tcp: None,
            session: args.session,
        })
    }

    /// Validates `tunnel-client tcp`'s arguments (no inspector: it reads HTTP).
    pub fn from_tcp_args(args: TcpArgs) -> Result<Self, ConfigError> {
        let server = ServerUrl::parse(&args.server)?;
        if args.api_key.trim().is_empty() {
            return Err(ConfigError::EmptyApiKey);
        }
        if args.port == 0 {
            return Err(ConfigError::PortZero);
        }
        let proxy_protocol = if args.proxy_protocol {
            ProxyProtocol::V2
        } else {
            ProxyProtocol::Off
        };
        Ok(Self {
            inspect: None,
            server,
            api_key: args.api_key.trim().to_string(),
            local_host: args.local_host,
            local_port: args.port,
            name: args.name.filter(|n| !n.is_empty()),
            domain: None,
            ttl_secs: args.ttl_secs,
            host_header: HostHeader::Rewrite,
            log_requests: !args.quiet,
            max_backoff: Duration::from_secs(30),
            access: AccessRequest {
                basic_auth: None,
                ip_allow: clean(args.allow_ips),
                ip_deny: clean(args.deny_ips),
            },
            tcp: Some(TcpOptions {
                remote_port: args.remote_port.filter(|p| *p != 0),
                proxy_protocol,
            }),
            session: args.session,
        })
    }

    /// `host:port` of the local service.
    pub fn local_authority(&self) -> String {
        if self.local_host.contains(':') && !self.local_host.starts_with('[') {
            format!("[{}]:{}", self.local_host, self.local_port)
        } else {
            format!("{}:{}", self.local_host, self.local_port)
        }
    }
}

fn clean(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_defaults() {
        let u = ServerUrl::parse("tunnels.example.com").expect("valid");
        assert_eq!(u.http_base, "https://tunnels.example.com");
        assert_eq!(u.ws_base, "wss://tunnels.example.com");
        let u = ServerUrl::parse("localhost:8989").expect("valid");
        assert_eq!(u.http_base, "http://localhost:8989");
        assert_eq!(u.ws_base, "ws://localhost:8989");
        let u = ServerUrl::parse("127.0.0.1:1").expect("valid");
        assert_eq!(u.http_base, "http://127.0.0.1:1");
        let u = ServerUrl::parse("[::1]:5").expect("valid");
        assert_eq!(u.ws_base, "ws://[::1]:5");
        let u = ServerUrl::parse("http://tunnels.example.com/").expect("valid");
        assert_eq!(u.http_base, "http://tunnels.example.com");
        let u = ServerUrl::parse("https://localhost:8443").expect("valid");
        assert_eq!(u.ws_base, "wss://localhost:8443");
        assert_eq!(
            ServerUrl::parse("ftp://x"),
            Err(ServerUrlError::Scheme("ftp://x".into()))
        );
        assert_eq!(
            ServerUrl::parse("ftp://x").map_err(|e| e.to_string()),
            Err(r#""ftp://x": only http:// and https:// servers are supported"#.into())
        );
        assert_eq!(ServerUrl::parse(""), Err(ServerUrlError::NoHost("".into())));
    }
}
