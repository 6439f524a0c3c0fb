//! The flags of a session's behaviour, shared by `tunnel-client` (HTTP) and `tunnel-client
//! tcp`: what to do when the server cannot be reached, when the tunnel's name is held by a
//! running client, and how much each request line shows.

/// Flags of how a session behaves (flattened into the commands that run one tunnel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct SessionFlags {
    /// Keep retrying even on errors retrying cannot fix (the server's host name does not
    /// exist, its TLS certificate is invalid, http given for an https server or the reverse);
    /// without it the client exits (status 68 or 76).
    #[arg(long, env = "TUNNEL_RETRY_FOREVER")]
    pub retry_forever: bool,

    /// Take the tunnel's name over from the tunnel-client that serves it now (that client
    /// exits, saying who replaced it); without it the client refuses and exits 75.
    #[arg(long, env = "TUNNEL_FORCE")]
    pub force: bool,

    /// Request lines with the request id (the server's `X-Request-Id`), and wider than 80
    /// columns when they need to be.
    #[arg(long, short = 'v', env = "TUNNEL_VERBOSE")]
    pub verbose: bool,
}
