//! The inspector's flags and environment, validated into [`InspectConfig`].

use std::net::SocketAddr;

/// `--inspect-*` flags, flattened into the client's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Where the traffic inspector (page and API) listens. If the port is taken the next free
    /// one is used; the banner shows which. Anything but a loopback address exposes captured
    /// traffic to the network.
    #[arg(
        long,
        env = "TUNNEL_INSPECT_ADDR",
        value_name = "TUNNEL_INSPECT_ADDR",
        default_value = "127.0.0.1:4040"
    )]
    pub inspect_addr: String,

    /// No traffic inspector: nothing is captured and no port is opened.
    #[arg(long, env = "TUNNEL_NO_INSPECT")]
    pub no_inspect: bool,

    /// Captured data kept in all (headers, bodies, WebSocket messages), e.g. `50MiB`; the
    /// oldest requests are dropped first when it is full.
    #[arg(
        long,
        env = "TUNNEL_INSPECT_BUDGET",
        value_name = "TUNNEL_INSPECT_BUDGET",
        default_value = "50MiB"
    )]
    pub inspect_budget: String,

    /// Bytes kept of each body (and of each WebSocket session's messages), e.g. `1MiB`; the
    /// rest passes through uncaptured and the entry says where it was cut.
    #[arg(
        long,
        env = "TUNNEL_INSPECT_BODY_LIMIT",
        value_name = "TUNNEL_INSPECT_BODY_LIMIT",
        default_value = "1MiB"
    )]
    pub inspect_body_limit: String,
}

/// A validated inspector setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectConfig {
    /// The address asked for (the port may move up if it is taken).
    pub addr: SocketAddr,
    /// Total bytes of captured data.
    pub budget: usize,
    /// Bytes kept per body.
    pub body_limit: usize,
}

/// Why an `--inspect-*` setting is unusable; names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectConfigError {
    /// Not `IP:PORT`.
    #[error("invalid TUNNEL_INSPECT_ADDR: {0:?} is not IP:PORT (e.g. 127.0.0.1:4040)")]
    Addr(String),
    /// Not a size.
    #[error("invalid {setting}: {value:?} is not a size (e.g. 50MiB, 512KiB, 1048576)")]
    Size {
        /// The environment name of the setting.
        setting: &'static str,
        /// What was given.
        value: String,
    },
    /// A body limit larger than the whole budget could never be kept.
    #[error("invalid TUNNEL_INSPECT_BODY_LIMIT: {limit} bytes is more than TUNNEL_INSPECT_BUDGET ({budget} bytes)")]
    LimitOverBudget {
        /// The body limit.
        limit: usize,
        /// The budget.
        budget: usize,
    },
}

impl InspectArgs {
    /// The inspector's settings, or `None` with `--no-inspect`.
    pub fn validate(&self) -> Result<Option<InspectConfig>, InspectConfigError> {
        if self.no_inspect {
            return Ok(None);
        }
        let addr = self
            .inspect_addr
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| InspectConfigError::Addr(self.inspect_addr.clone()))?;
        let budget = parse_size(&self.inspect_budget).ok_or(InspectConfigError::Size {
            setting: "TUNNEL_INSPECT_BUDGET",
            value: self.inspect_budget.clone(),
        })?;
        let body_limit = parse_size(&self.inspect_body_limit).ok_or(InspectConfigError::Size {
            setting: "TUNNEL_INSPECT_BODY_LIMIT",
            value: self.inspect_body_limit.clone(),
        })?;
        if body_limit > budget {
            return Err(InspectConfigError::LimitOverBudget {
                limit: body_limit,
                budget,
            });
        }
        Ok(Some(InspectConfig {
            addr,
            budget,
            body_limit,
        }))
    }
}

/// `1048576`, `512KiB`, `50MiB`, `1GiB` (also `K`, `KB`, `M`, `MB`, `G`, `GB`, all powers of
/// 1024: these are memory sizes).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: usize = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1usize << shift)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("10 parsecs"), None);
    }

    fn args(addr: &str, budget: &str, limit: &str) -> InspectArgs {
        InspectArgs {
            inspect_addr: addr.into(),
            no_inspect: false,
            inspect_budget: budget.into(),
            inspect_body_limit: limit.into(),
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let ok = args("127.0.0.1:4040", "50MiB", "1MiB").validate().unwrap();
        assert_eq!(ok.map(|c| c.budget), Some(50 << 20));
        let e = args("localhost", "50MiB", "1MiB").validate().unwrap_err();
        assert!(e.to_string().contains("TUNNEL_INSPECT_ADDR"), "{e}");
        let e = args("127.0.0.1:1", "lots", "1MiB").validate().unwrap_err();
        assert!(e.to_string().contains("TUNNEL_INSPECT_BUDGET"), "{e}");
        let e = args("127.0.0.1:1", "1MiB", "2MiB").validate().unwrap_err();
        assert!(e.to_string().contains("TUNNEL_INSPECT_BODY_LIMIT"), "{e}");
        let mut off = args("nonsense", "x", "y");
        off.no_inspect = true;
        assert_eq!(off.validate(), Ok(None));
    }
}
