//! `[server] trusted_proxies`: the CIDR blocks of peers whose forwarding
//! headers are believed. Compiled from the configuration; reading the
//! headers themselves is `proxy::client_addr`'s job. The block arithmetic
//! is the `ipnet` crate's; what is ours is the stricter reading below.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// One CIDR block, such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = String;

    /// `ipnet` reads `a/n`; a bare address is a block of one (`ipnet` wants
    /// the prefix). A block with bits set past its prefix (`10.0.0.1/8`) is
    /// refused, where `ipnet` would keep it: it is most likely a typo for a
    /// single address or a narrower block, and trusting the wider one
    /// silently would believe forwarding headers from more peers than meant.
    fn from_str(text: &str) -> Result<Self, String> {
        let block = match text.parse::<IpNet>() {
            Ok(block) => block,
            Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!(
                    "{text:?} is not an address or CIDR block such as \"10.0.0.0/8\" \
                     (a prefix length of 0 to 32 for IPv4, 0 to 128 for IPv6)"
                )
            })?,
        };
        if block.trunc() != block {
            let prefix = block.prefix_len();
            return Err(format!("{text:?} has bits set past its /{prefix} prefix"));
        }
        Ok(Self(block))
    }
}

impl Cidr {
    /// An IPv4-mapped IPv6 peer (`::ffff:10.1.1.1`, as a dual-stack socket
    /// reports IPv4 clients) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// `[server] trusted_proxies`: peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("::1".parse::<Cidr>().is_ok());
        assert!("2001:db8::/32".parse::<Cidr>().is_ok());
        assert!("0.0.0.0/0".parse::<Cidr>().is_ok());
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
            "010.0.0.0/8",
            "10.0.0.0/",
            "/8",
            "::1/129",
            "2001:db8::1/32",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let block: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(block.contains(ip("10.200.1.2")));
        assert!(block.contains(ip("::ffff:10.1.1.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(
            !block.contains(ip("::a00:1")),
            "an IPv6 address is not an IPv4 one"
        );
        let single: Cidr = "192.0.2.7".parse().expect("one address");
        assert!(single.contains(ip("192.0.2.7")));
        assert!(!single.contains(ip("192.0.2.8")));
        let every: Cidr = "::/0".parse().expect("all of IPv6");
        assert!(every.contains(ip("2001:db8::1")));
        assert!(
            !every.contains(ip("::ffff:10.1.1.1")),
            "mapped IPv4 is IPv4"
        );
    }
}
