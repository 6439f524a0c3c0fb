//! Client configuration: flags and environment variables.
//!
//! `tunnel-client [FLAGS]` exposes one service as it always did ([`ClientArgs`]), and so do
//! `tunnel-client 3000` and `tunnel-client http 3000`; the subcommands of [`Command`] work
//! from a config file (`start`, `config check`), which `crate::file` reads into the same
//! [`ClientConfig`]s; `tcp` and `connect` are TCP tunnels' two ends. What the flags leave out
//! (server, key) `crate::sources` fills in before [`ClientConfig::from_args`] checks it all;
//! `server_url` parses `--server`.

mod server_url;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tunnel_protocol::name;

pub use self::server_url::{ExplainedServer, SchemeReason, ServerUrl, ServerUrlError};
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

    /// The one-tunnel flags (all defaults with a subcommand).
    #[command(flatten)]
    pub http: ClientArgs,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Expose a local HTTP service: `tunnel-client http 3000`, the same as `tunnel-client
    /// 3000`.
    Http(ClientArgs),
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
#[derive(Debug, Clone, Default, clap::Args)]
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

    /// The server and the key.
    #[command(flatten)]
    pub server: ServerArgs,

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

    /// Lifetime, access lists, quiet: as for an HTTP tunnel.
    #[command(flatten)]
    pub common: TunnelArgs,
}

/// The server and the API key, for the commands that create a tunnel. Either may be left
/// out: then the config file's `[client]` table gives it, and for a server on this machine
/// the key a dev server keeps in its state file (`crate::sources`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// The tunnel server: HOST[:PORT], or a URL. Without a scheme https/wss is used, except
    /// for loopback hosts (http/ws; without a port, the dev server's 8989). Default: the
    /// config file's `[client] server`, else localhost:8989 when no key is given either.
    #[arg(long, env = "TUNNEL_SERVER", value_name = "TUNNEL_SERVER")]
    pub server: Option<String>,

    /// API key for the server's control API. Default: the config file's `[client] api_key`,
    /// else, for a server on this machine, the key a dev server keeps in its state file.
    #[arg(
        long,
        env = "TUNNEL_API_KEY",
        value_name = "TUNNEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// The config file whose `[client]` table fills in what is left out.
    #[command(flatten)]
    pub file: FileArgs,
}

/// What every tunnel the command line creates shares, HTTP or TCP: lifetime, access lists,
/// quiet.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TunnelArgs {
    /// Requested tunnel lifetime in seconds (the server's default when absent).
    #[arg(
        long,
        env = "TUNNEL_CLIENT_TTL_SECS",
        value_name = "TUNNEL_CLIENT_TTL_SECS"
    )]
    pub ttl_secs: Option<u64>,

    /// Only these networks (CIDR or address, IPv4 or IPv6) may use the tunnel; repeat or
    /// comma-separate.
    #[arg(
        long = "allow-ip",
        env = "TUNNEL_ALLOW_IPS",
        value_name = "TUNNEL_ALLOW_IPS",
        value_delimiter = ','
    )]
    pub allow_ips: Vec<String>,

    /// These networks may never use the tunnel (checked before --allow-ip).
    #[arg(
        long = "deny-ip",
        env = "TUNNEL_DENY_IPS",
        value_name = "TUNNEL_DENY_IPS",
        value_delimiter = ','
    )]
    pub deny_ips: Vec<String>,

    /// No per-request (per-connection) log lines.
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
    /// Local port to expose: `tunnel-client 3000` (the same as --port 3000).
    #[arg(value_name = "PORT")]
    pub local_port: Option<u16>,

    /// The server and the key.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Local port to expose.
    #[arg(
        short,
        long,
        env = "TUNNEL_LOCAL_PORT",
        value_name = "TUNNEL_LOCAL_PORT"
    )]
    pub port: Option<u16>,

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

    /// Host header sent to the local service: `rewrite` (the local address, what dev servers
    /// expect; an Origin naming the tunnel's public origin follows it), `preserve` (the
    /// public host), or a literal host name.
    #[arg(
        long,
        env = "TUNNEL_HOST_HEADER",
        value_name = "TUNNEL_HOST_HEADER",
        default_value = "rewrite"
    )]
    pub host_header: String,

    /// Path-prefix URLs keep their prefix: the local service receives `/<id>/x` unchanged,
    /// and nothing is rewritten (for apps configured for that base path: Vite's `base`,
    /// Jupyter's `base_url`, Next.js's `basePath`).
    #[arg(long, env = "TUNNEL_KEEP_PREFIX")]
    pub keep_prefix: bool,

    /// Require HTTP basic auth on the public URL: `user:password` (password 8+ characters).
    #[arg(
        long,
        env = "TUNNEL_BASIC_AUTH",
        value_name = "TUNNEL_BASIC_AUTH",
        hide_env_values = true
    )]
    pub basic_auth: Option<String>,

    /// Lifetime, access lists, quiet.
    #[command(flatten)]
    pub common: TunnelArgs,

    /// The traffic inspector.
    #[command(flatten)]
    pub inspect: InspectArgs,
}

/// Why the settings cannot be used; names the setting (exit status 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `TUNNEL_SERVER`.
    #[error("invalid TUNNEL_SERVER: {0}")]
    Server(#[from] ServerUrlError),
    /// No server was given (nor found in the config file).
    #[error("no server: give --server HOST[:PORT] (or TUNNEL_SERVER, or [client] server in {0})")]
    NoServer(String),
    /// No API key was given (nor found in the config file or a dev server's state file).
    #[error("no API key: give --api-key KEY (or TUNNEL_API_KEY, or [client] api_key in {0})")]
    NoApiKey(String),
    /// `TUNNEL_API_KEY` is empty.
    #[error("invalid TUNNEL_API_KEY: empty")]
    EmptyApiKey,
    /// No local port.
    #[error("no local port: `tunnel-client 3000` (or --port 3000, TUNNEL_LOCAL_PORT)")]
    NoPort,
    /// `TUNNEL_LOCAL_PORT` is 0.
    #[error("invalid TUNNEL_LOCAL_PORT: 0 is not a port")]
    PortZero,
    /// `TUNNEL_NAME` breaks the rule for names.
    #[error("invalid TUNNEL_NAME: {bad}{}", suggestion(bad))]
    Name {
        /// The name and the rule it breaks.
        bad: name::BadName,
    },
    /// `TUNNEL_HOST_HEADER` is neither a mode nor a usable header value.
    #[error("invalid TUNNEL_HOST_HEADER: {0:?}")]
    HostHeader(String),
    /// A `TUNNEL_INSPECT_*` setting (the error names which).
    #[error(transparent)]
    Inspect(#[from] InspectConfigError),
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
    /// Path-prefix requests reach the local service with their `/<id>` prefix
    /// (`--keep-prefix`).
    pub keep_prefix: bool,
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
    /// Validates parsed arguments (server and key filled in, see `crate::sources`).
    pub fn from_args(args: ClientArgs) -> Result<Self, ConfigError> {
        let local_port = args.local_port.or(args.port).ok_or(ConfigError::NoPort)?;
        let (server, api_key) = server_and_key(&args.server)?;
        let host_header = HostHeader::parse(&args.host_header)
            .ok_or_else(|| ConfigError::HostHeader(args.host_header.clone()))?;
        let inspect = args.inspect.validate()?;
        Ok(Self {
            inspect,
            server,
            api_key,
            local_host: args.local_host,
            local_port: non_zero(local_port)?,
            name: checked_name(args.name)?,
            domain: args
                .domain
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
            ttl_secs: args.common.ttl_secs,
            host_header,
            keep_prefix: args.keep_prefix,
            log_requests: !args.common.quiet,
            max_backoff: Duration::from_secs(30),
            access: AccessRequest {
                basic_auth: args.basic_auth.filter(|b| !b.is_empty()),
                ip_allow: clean(args.common.allow_ips),
                ip_deny: clean(args.common.deny_ips),
            },
            tcp: None,
            session: args.common.session,
        })
    }

    /// Validates `tunnel-client tcp`'s arguments (no inspector: it reads HTTP).
    pub fn from_tcp_args(args: TcpArgs) -> Result<Self, ConfigError> {
        let (server, api_key) = server_and_key(&args.server)?;
        let proxy_protocol = if args.proxy_protocol {
            ProxyProtocol::V2
        } else {
            ProxyProtocol::Off
        };
        Ok(Self {
            inspect: None,
            server,
            api_key,
            local_host: args.local_host,
            local_port: non_zero(args.port)?,
            name: checked_name(args.name)?,
            domain: None,
            ttl_secs: args.common.ttl_secs,
            host_header: HostHeader::Rewrite,
            keep_prefix: false,
            log_requests: !args.common.quiet,
            max_backoff: Duration::from_secs(30),
            access: AccessRequest {
                basic_auth: None,
                ip_allow: clean(args.common.allow_ips),
                ip_deny: clean(args.common.deny_ips),
            },
            tcp: Some(TcpOptions {
                remote_port: args.remote_port.filter(|p| *p != 0),
                proxy_protocol,
            }),
            session: args.common.session,
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

/// The server and key of `args`, which must both be there by now.
fn server_and_key(args: &ServerArgs) -> Result<(ServerUrl, String), ConfigError> {
    let file = || {
        args.file
            .config
            .as_ref()
            .map_or("the config file".into(), |p| p.display().to_string())
    };
    let server = args
        .server
        .as_deref()
        .ok_or_else(|| ConfigError::NoServer(file()))?;
    let server = ServerUrl::parse(server)?;
    let key = args
        .api_key
        .as_deref()
        .ok_or_else(|| ConfigError::NoApiKey(file()))?;
    if key.trim().is_empty() {
        return Err(ConfigError::EmptyApiKey);
    }
    Ok((server, key.trim().to_string()))
}

fn non_zero(port: u16) -> Result<u16, ConfigError> {
    if port == 0 {
        Err(ConfigError::PortZero)
    } else {
        Ok(port)
    }
}

/// `--name`, empty meaning none, checked against the rule both sides apply (before anything
/// asks the server).
fn checked_name(n: Option<String>) -> Result<Option<String>, ConfigError> {
    match n.filter(|n| !n.is_empty()) {
        Some(n) => name::check(&n)
            .map(|()| Some(n))
            .map_err(|bad| ConfigError::Name { bad }),
        None => Ok(None),
    }
}

/// `; try --name my-app`, when the rule leaves something close.
fn suggestion(bad: &name::BadName) -> String {
    name::suggest(&bad.name).map_or(String::new(), |s| format!("; try --name {s}"))
}

fn clean(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
