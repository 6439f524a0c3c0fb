//! The PROXY protocol version 2 header a local service may be sent before the connection's
//! bytes, built by the `ppp` crate (HAProxy's binary format, the one servers parse fastest and
//! the only one with IPv6 and ports for both ends without text parsing).

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

/// The header for a TCP connection from `peer` to `local` (the server's address it reached).
/// Mixed families are given as IPv6 (an IPv4 address mapped), as the format needs one family.
pub(super) fn v2(peer: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = match (peer, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (peer, local)
        }
        _ => (as_v6(peer), as_v6(local)),
    };
    let header =
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
            .build();
    // Building writes into a Vec and checks the length field: it fails only for payloads past
    // 64 KiB, which two addresses never reach. Should it fail, the local connection is told
    // nothing rather than something malformed: the LOCAL command (no addresses).
    header.unwrap_or_else(|_| {
        let mut h = Vec::from(ppp::v2::PROTOCOL_PREFIX);
        h.extend([0x20, 0x00, 0x00, 0x00]);
        h
    })
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Addresses, Header};

    #[test]
    fn the_header_names_both_ends() {
        let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let local: SocketAddr = "10.0.0.1:20001".parse().expect("addr");
        let bytes = v2(peer, local);
        let header = Header::try_from(bytes.as_slice()).expect("parses");
        match header.addresses {
            Addresses::IPv4(a) => {
                assert_eq!(
                    (a.source_address, a.source_port),
                    ([192, 0, 2, 7].into(), 40000)
                );
                assert_eq!(a.destination_port, 20001);
            }
            other => panic!("expected IPv4 addresses, got {other:?}"),
        }
        let mixed = v2("[2001:db8::1]:5".parse().expect("addr"), local);
        let header = Header::try_from(mixed.as_slice()).expect("parses");
        assert!(matches!(header.addresses, Addresses::IPv6(_)));
    }
}
