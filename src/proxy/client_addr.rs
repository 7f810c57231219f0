//! Who the client is: the TCP peer (or the address a PROXY protocol header
//! gave for it), unless that peer is a trusted proxy, in which case its
//! `X-Forwarded-For` (or `Forwarded`, RFC 7239) is walked from the right
//! through further trusted hops to the first address that is not trusted,
//! the way NGINX's `real_ip_recursive` and Envoy's trusted hops work.
//!
//! Addresses left of that one were written by whoever the client is and
//! are never believed. This module does not set headers; `set_forwarding`
//! writes what it returns.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::runtime::trusted::TrustedProxies;
use crate::vocabulary::{FORWARDED, X_FORWARDED_FOR};

/// The client as far as the trusted chain vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: IpAddr,
    /// The client, then each trusted hop after it, the peer last: the
    /// `X-Forwarded-For` the gateway sends upstream.
    pub chain: Vec<IpAddr>,
}

impl ClientAddress {
    /// `X-Forwarded-For` for the upstream.
    pub fn forwarded_for(&self) -> String {
        // One string, written in place: this runs on every proxied request.
        let mut out = String::with_capacity(self.chain.len() * 17);
        for (i, hop) in self.chain.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_ip(&mut out, *hop);
        }
        out
    }
}

/// Writes an address as `Display` does; IPv4 without the formatter, whose
/// padding support made it the larger part of this header's cost.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The client behind `peer`: forwarding headers are read only when `peer`
/// is trusted, right to left, and only while each hop is trusted too.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddress {
    let mut chain = vec![peer.to_canonical()];
    if trusted.contains(peer) {
        for hop in listed_hops(headers) {
            let Some(hop) = hop else { break };
            chain.push(hop.to_canonical());
            if !trusted.contains(hop) {
                break;
            }
        }
    }
    chain.reverse();
    ClientAddress {
        ip: chain[0],
        chain,
    }
}

/// The client of a request the engine read; `None` on a socket without an
/// IP peer (a Unix socket).
pub fn of_session(
    session: &pingora_proxy::Session,
    trusted: &TrustedProxies,
) -> Option<ClientAddress> {
    let peer = session.client_addr()?.as_inet()?.ip();
    Some(resolve(peer, &session.req_header().headers, trusted))
}

/// The most hops read from a trusted peer's forwarding headers, from the
/// right. A real chain of proxies is a handful long; a header listing
/// thousands (each one a trusted address) would otherwise be parsed whole
/// and sent upstream as an `X-Forwarded-For` as long. When all of them are
/// trusted, the leftmost hop read is the client, as when a shorter list is
/// trusted throughout (NGINX's `real_ip_recursive` does the same).
pub const MAX_FORWARDED_HOPS: usize = 64;

/// The hops a proxy listed, right to left, at most [`MAX_FORWARDED_HOPS`]
/// (`None` for one that is not an address, such as `unknown` or an
/// obfuscated `_id`): `X-Forwarded-For` or `Forwarded`'s `for=`. A request
/// with both names no hop: a trusted proxy writes one of them, and the
/// other then came from the client, who could otherwise pick the one it
/// wrote.
fn listed_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    if headers.contains_key(X_FORWARDED_FOR) && headers.contains_key(FORWARDED) {
        return Vec::new();
    }
    let rightmost = |name: &str| -> Vec<&str> {
        let lines: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{0}"))
            .collect();
        lines
            .into_iter()
            .rev()
            .flat_map(|v| v.rsplit(','))
            .take(MAX_FORWARDED_HOPS)
            .collect()
    };
    let xff = rightmost(X_FORWARDED_FOR);
    if !xff.is_empty() {
        return xff.into_iter().map(node_address).collect();
    }
    rightmost(FORWARDED)
        .into_iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| node_address(value.trim().trim_matches('"')))
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|c| c.parse().expect("cidr")).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        let client = resolve(ip("203.0.113.9"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.ip, ip("203.0.113.9"));
        assert_eq!(client.forwarded_for(), "203.0.113.9");
    }

    /// A trusted proxy that writes `Forwarded` passes the client's own
    /// `X-Forwarded-For` through: with both present, neither is believed.
    #[test]
    fn both_forwarding_headers_name_no_client_but_the_peer() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.66"),
            ("forwarded", "for=203.0.113.5"),
        ]);
        let client = resolve(ip("10.0.0.5"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.ip, ip("10.0.0.5"));
        assert_eq!(client.forwarded_for(), "10.0.0.5");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        let client = resolve(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.ip, ip("198.51.100.7"));
        assert_eq!(client.forwarded_for(), "198.51.100.7, 10.0.0.2, 10.0.0.1");
    }

    #[test]
    fn a_malformed_hop_stops_the_walk() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7, garbage, 10.0.0.2")]);
        let client = resolve(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.ip, ip("10.0.0.2"));
    }

    /// Thousands of trusted hops: only the rightmost 64 are read, the
    /// leftmost of those is the client, and the chain sent upstream is 65
    /// long (those hops and the peer).
    #[test]
    fn a_trusted_chain_is_read_to_a_bound() {
        let mut listed: Vec<String> = vec!["198.51.100.7".into()];
        listed.extend((0..5000).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
        let mut h = HeaderMap::new();
        let (first, rest) = listed.split_at(2500);
        for part in [first, rest] {
            let value = HeaderValue::from_str(&part.join(", ")).expect("value");
            h.append("x-forwarded-for", value);
        }
        let client = resolve(ip("10.255.0.1"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.chain.len(), MAX_FORWARDED_HOPS + 1);
        let leftmost_read = &listed[listed.len() - MAX_FORWARDED_HOPS];
        assert_eq!(client.ip, ip(leftmost_read));
        assert_eq!(client.chain.last(), Some(&ip("10.255.0.1")));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        let client = resolve(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(client.ip, ip("2001:db8::7"));
        assert_eq!(client.chain, vec![ip("2001:db8::7"), ip("10.0.0.1")]);
    }

    proptest::proptest! {
        #[test]
        fn forwarded_for_writes_addresses_as_display_does(
            v4 in proptest::prelude::any::<[u8; 4]>(),
            v6 in proptest::prelude::any::<[u16; 8]>(),
        ) {
            let chain = vec![IpAddr::from(v4), IpAddr::from(v6), IpAddr::from(v4)];
            let expected = chain.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let client = ClientAddress { ip: chain[0], chain };
            proptest::prop_assert_eq!(client.forwarded_for(), expected);
        }
    }
}
