//! The command line: `tunnel-client`'s subcommands and the flag groups they share (server
//! and key, tunnel lifetime and access, session behaviour), parsed by clap and then checked by
//! [`super::ClientConfig::from_args`] and the config file's reader.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::flags::SessionFlags;
use crate::inspect::InspectArgs;

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

/// `tunnel-client start`. Its server and key come from the file: the shared flags override
/// them, with help saying so (there is no dev-server default here).
#[derive(Debug, Clone, clap::Args)]
#[command(
    mut_arg("server", |a| a.help("The tunnel server, over the file's `[client] server`")),
    mut_arg("api_key", |a| a.help("The API key, over the file's `[client] api_key`"))
)]
pub struct StartArgs {
    /// The tunnels to start, by name.
    #[arg(value_name = "NAME", required_unless_present = "all")]
    pub names: Vec<String>,

    /// Start every tunnel of the file (and those added to it later).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,

    /// The config file, and the server and key over its `[client]` table: the same flags
    /// (and environment) as every command that creates a tunnel.
    #[command(flatten)]
    pub server: ServerArgs,

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
