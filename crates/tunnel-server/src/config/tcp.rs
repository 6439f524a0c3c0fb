//! Settings of TCP tunnels: the public port range (opt-in), where those ports listen, and how
//! many connections one TCP tunnel may carry at once.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use clap::builder::RangedU64ValueParser;
use clap::Args;

/// A port range that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a port range: use FIRST-LAST (e.g. 20000-20099) or a single port")]
pub struct BadPortRange(String);

/// The public ports a server may hand to TCP tunnels, `FIRST-LAST` inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl PortRange {
    /// Parses `20000-20099` or `20000`; port 0 and an empty range are refused.
    pub fn parse(s: &str) -> Result<Self, BadPortRange> {
        let bad = || BadPortRange(s.to_string());
        let (first, last) = match s.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let first: u16 = first.parse().map_err(|_| bad())?;
        let last: u16 = last.parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(Self(first..=last))
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    /// How many ports the range holds.
    pub fn len(&self) -> usize {
        usize::from(*self.0.end() - *self.0.start()) + 1
    }

    /// Never: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// `TUNNEL_TCP_PORTS`: a range, or none (empty or `off`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpPorts(pub Option<PortRange>);

impl TcpPorts {
    /// Parses a range, or `""`/`off` for none.
    pub fn parse(s: &str) -> Result<Self, BadPortRange> {
        match s.trim() {
            "" | "off" => Ok(Self(None)),
            range => PortRange::parse(range).map(|r| Self(Some(r))),
        }
    }
}

/// TCP tunnels.
#[derive(Debug, Clone, Args)]
pub struct TcpSettings {
    /// Public ports for TCP tunnels, `FIRST-LAST` (e.g. 20000-20099): each TCP tunnel then
    /// listens on one of them (the one it asks for, or a free one), released when it is
    /// deleted. Unset: TCP tunnels are reached through the HTTP front door only
    /// (`tunnel-client connect`). For pods with host networking or a LoadBalancer that lists
    /// these ports.
    #[arg(
        long,
        env = "TUNNEL_TCP_PORTS",
        value_name = "TUNNEL_TCP_PORTS",
        value_parser = TcpPorts::parse,
        default_value = ""
    )]
    pub tcp_ports: TcpPorts,

    /// The address the public TCP ports listen on.
    #[arg(
        long,
        env = "TUNNEL_TCP_BIND_IP",
        value_name = "TUNNEL_TCP_BIND_IP",
        default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    )]
    pub tcp_bind_ip: IpAddr,

    /// Most connections one TCP tunnel carries at once (both ways in together); further ones
    /// are closed at once (a public port) or refused with 503 (the front door).
    #[arg(
        long,
        env = "TUNNEL_TCP_MAX_CONNECTIONS",
        value_name = "TUNNEL_TCP_MAX_CONNECTIONS",
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
        default_value_t = 1000
    )]
    pub tcp_max_connections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!(
            PortRange::parse("20000-20099"),
            Ok(PortRange(20000..=20099))
        );
        assert_eq!(PortRange::parse(" 5000 "), Ok(PortRange(5000..=5000)));
        assert_eq!(PortRange::parse("20000-20099").map(|r| r.len()), Ok(100));
        assert_eq!(TcpPorts::parse(""), Ok(TcpPorts(None)));
        assert_eq!(TcpPorts::parse("off"), Ok(TcpPorts(None)));
        for bad in ["", "0-10", "10-9", "a-b", "1-70000", "-5"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }
}
