//! Who a public client is: the socket's peer address, or — only when that peer is a trusted
//! proxy — the address it reports in `X-Forwarded-For`.
//!
//! Believing `X-Forwarded-For` from anyone would let a client pick its own address and walk
//! around IP lists and rate limits. We walk the list from the right (the entry the nearest
//! proxy added) and stop at the first address that is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The peer address of a public connection, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The address rate limits and IP lists apply to, set on every request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A network (CIDR or address) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR")]
pub struct InvalidNetwork(pub String);

/// Parses `10.0.0.0/8`, `fd00::/8`, or a single address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, InvalidNetwork> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| InvalidNetwork(s.to_string()))
}

/// Whether `peer` is one of the `trusted` proxies, whose forwarding headers are believed.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&canonical(peer)))
}

/// Finds the client address of a request that came from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(&client) {
                    return client;
                }
            }
            // Garbage in the chain: trust nothing to its left.
            Err(_) => return client,
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().expect("valid"));
        }
        h
    }

    #[test]
    fn untrusted_peers_are_taken_at_their_word_only_for_the_socket() {
        let trusted = vec![parse_cidr("10.0.0.0/8").expect("valid")];
        let peer: IpAddr = "203.0.113.5".parse().expect("ip");
        assert_eq!(client_ip(peer, &headers(&["1.1.1.1"]), &trusted), peer);
    }

    #[test]
    fn trusted_chains_are_walked_from_the_right() {
        let trusted = vec![
            parse_cidr("10.0.0.0/8").expect("valid"),
            parse_cidr("192.168.1.1").expect("valid"),
        ];
        let peer: IpAddr = "10.1.2.3".parse().expect("ip");
        // spoofed, real client, inner proxy
        let h = headers(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        // Only proxies: the leftmost one.
        let h = headers(&["10.9.9.9"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "10.9.9.9".parse::<IpAddr>().expect("ip")
        );
        // Garbage stops the walk.
        let h = headers(&["1.2.3.4, garbage, 10.0.0.9"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "10.0.0.9".parse::<IpAddr>().expect("ip")
        );
        // IPv6 and mapped addresses.
        let trusted6 = vec![parse_cidr("::1").expect("valid")];
        let h = headers(&["::ffff:198.51.100.9"]);
        assert_eq!(
            client_ip("::1".parse().expect("ip"), &h, &trusted6),
            "198.51.100.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn cidrs_parse() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("127.0.0.1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }
}
