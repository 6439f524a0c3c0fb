//! Client configuration: flags and environment variables.
//!
//! `tunnel-client [FLAGS]` exposes one service as it always did ([`ClientArgs`]), and so do
//! `tunnel-client 3000` and `tunnel-client http 3000`; the subcommands of [`Command`] work
//! from a config file (`start`, `config check`), which `crate::file` reads into the same
//! [`ClientConfig`]s; `tcp` and `connect` are TCP tunnels' two ends. What the flags leave out
//! (server, key) `crate::sources` fills in before [`ClientConfig::from_args`] checks it all;
//! `args` holds the clap definitions, `server_url` parses `--server`.

mod args;
mod flags;
mod server_url;

use std::time::Duration;

use tunnel_protocol::name;

pub use self::flags::SessionFlags;
pub use self::server_url::{ExplainedServer, SchemeReason, ServerUrl, ServerUrlError};
use crate::inspect::{InspectConfig, InspectConfigError};

pub use self::args::{
    Cli, ClientArgs, Command, ConfigCommand, ConnectArgs, FileArgs, ServerArgs, StartArgs, TcpArgs,
    TunnelArgs,
};

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
