//! `[server] trusted_proxies`: the CIDR blocks of peers whose forwarding
//! headers are believed. Compiled from the configuration; reading the
//! headers themselves is `proxy::client_addr`'s job.

use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block, such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!("{text:?} is not an address or CIDR block such as \"10.0.0.0/8\"")
        })?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?,
        };
        let host_bits = u32::from(width - prefix);
        let host_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1);
        if bits(network) & host_mask != 0 {
            return Err(format!("{text:?} has bits set past its /{prefix} prefix"));
        }
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4()
            && mask(ip, self.prefix) == mask(self.network, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let host_bits = width - u32::from(prefix);
    bits(ip).checked_shr(host_bits).unwrap_or(0)
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
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let block: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(block.contains(ip("10.200.1.2")));
        assert!(block.contains(ip("::ffff:10.1.1.1")));
        assert!(!block.contains(ip("11.0.0.1")));
    }
}
