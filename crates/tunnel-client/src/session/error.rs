//! Why a session stops (other than being asked to), and the exit status of each reason.

use tunnel_protocol::GoodbyeReason;

use super::reach::Fatal;
use crate::control::ApiError;

/// Why the client stopped (other than being asked to).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control API refused us.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server ended the tunnel for good.
    #[error("{0}")]
    Ended(String),
    /// Another tunnel-client took the tunnel over (`--force`, or its own reconnect).
    #[error("{0}")]
    Replaced(String),
    /// Client and server speak different protocol versions.
    #[error("{0}")]
    VersionMismatch(String),
    /// The server cannot be reached for a reason retrying cannot fix (and no
    /// `--retry-forever`).
    #[error("{message}")]
    Unreachable {
        /// What is wrong.
        fatal: Fatal,
        /// The whole sentence, with what to do.
        message: String,
    },
    /// The traffic inspector could not listen.
    #[error("cannot listen for the traffic inspector on {addr} (nor the 20 ports above): {source}; choose another with --inspect-addr, or --no-inspect")]
    Inspector {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Exit status: replaced by another client (see README's exit status table).
pub const EXIT_REPLACED: u8 = 3;
/// Exit status: the server's host name does not exist (EX_NOHOST).
pub const EXIT_NO_HOST: u8 = 68;
/// Exit status: the server's name is taken by another key, or served by a running client
/// (EX_TEMPFAIL).
pub const EXIT_IN_USE: u8 = 75;
/// Exit status: protocol trouble: TLS certificate invalid, http/https mismatch, protocol
/// version mismatch (EX_PROTOCOL).
pub const EXIT_PROTOCOL: u8 = 76;
/// Exit status: the API key was refused (EX_NOPERM).
pub const EXIT_NO_PERM: u8 = 77;

impl ClientError {
    /// Process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api(ApiError::Unauthorized) => EXIT_NO_PERM,
            ClientError::Api(ApiError::Conflict(_) | ApiError::InUse(_)) => EXIT_IN_USE,
            ClientError::VersionMismatch(_) => EXIT_PROTOCOL,
            ClientError::Replaced(_) => EXIT_REPLACED,
            ClientError::Unreachable { fatal, .. } => match fatal {
                Fatal::NoHost => EXIT_NO_HOST,
                Fatal::BadCertificate | Fatal::NotTls | Fatal::NotHttp => EXIT_PROTOCOL,
            },
            _ => 1,
        }
    }
}

/// The error for a goodbye that ends the tunnel for good.
pub(super) fn ended(reason: GoodbyeReason, message: &str) -> ClientError {
    let why = match reason {
        GoodbyeReason::Replaced => {
            // A current server names the newcomer ("replaced by another client from …").
            return ClientError::Replaced(if message.starts_with("replaced") {
                message.to_string()
            } else {
                format!("replaced by another client ({message})")
            });
        }
        GoodbyeReason::Deleted => "the tunnel was deleted on the server",
        GoodbyeReason::Expired => {
            "the tunnel expired (its TTL ended); start the client again for a new one"
        }
        GoodbyeReason::VersionMismatch => "protocol version mismatch",
        _ => "the server ended the tunnel",
    };
    ClientError::Ended(format!("{why} ({message})"))
}
