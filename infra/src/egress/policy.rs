//! Which IP addresses a request on a user's behalf may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block (`10.0.0.0/8`, `::1/128`; a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?,
        };
        Ok(Self {
            network: canonical(network),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which addresses requests on users' behalf may reach: public unicast addresses, and those
/// an operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Blocks allowed even though they are not public (an internal media origin; tests).
    pub allow: Vec<Cidr>,
}

impl AddressPolicy {
    /// Whether `ip` may be reached, or why not (for the owner of the request to read).
    ///
    /// # Errors
    /// The kind of address `ip` is: "a loopback address", "the cloud metadata address", …
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|block| block.contains(ip)) {
            return Ok(());
        }
        match not_public(ip) {
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => not_public_v4(v4),
        IpAddr::V6(v6) => not_public_v6(v6),
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "the cloud metadata address",
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_private() => "a private address",
        _ if ip.is_link_local() => "a link-local address",
        (0, _, _) => "an address of this network (0.0.0.0/8)",
        (100, 64..=127, _) => "a shared address (carrier-grade NAT, 100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved address (240.0.0.0/4)",
        _ => return None,
    })
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |high: u128| Ipv4Addr::from((u128::from(ip) >> high) as u32);
    Some(match segments {
        _ if ip.is_unspecified() => "the unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        // fd00:ec2::254 (AWS's metadata over IPv6) is one of these.
        [s, ..] if s & 0xfe00 == 0xfc00 => "a private address (unique local, fc00::/7)",
        [s, ..] if s & 0xffc0 == 0xfe80 => "a link-local address",
        [s, ..] if s & 0xffc0 == 0xfec0 => "a site-local address",
        [s, ..] if s & 0xff00 == 0xff00 => "a multicast address",
        // Addresses that carry an IPv4 address: judged by it.
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0, 0, _, _] => {
            return not_public_v4(embedded_v4(0)).map(|_| "an IPv6 address carrying a non-public IPv4 address")
        }
        [0x2002, ..] => {
            return not_public_v4(embedded_v4(80)).map(|_| "a 6to4 address carrying a non-public IPv4 address")
        }
        [0x2001, 0, ..] => "a Teredo tunnel address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, ip: &str) -> Option<&'static str> {
        policy.check(ip.parse().expect("address")).err()
    }

    #[test]
    fn addresses_inside_the_network_are_refused_by_kind() {
        let policy = AddressPolicy::default();
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.20.30.40", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "private"),
            ("fd00:ec2::254", "private"),
            ("fc00::1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "this network"),
            ("::", "unspecified"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("192.0.0.170", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("64:ff9b::7f00:1", "non-public IPv4"),
            ("::7f00:1", "non-public IPv4"),
            ("2002:a00:1::", "6to4"),
            ("2001:0:4136:e378::1", "Teredo"),
        ] {
            let why = refused(&policy, ip);
            assert!(why.is_some_and(|w| w.contains(kind)), "{ip}: {why:?}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.7",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(refused(&policy, ip), None, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_admits_its_blocks_only() {
        let policy = AddressPolicy {
            allow: vec!["127.0.0.1".parse().expect("cidr"), "10.1.0.0/16".parse().expect("cidr")],
        };
        assert_eq!(refused(&policy, "127.0.0.1"), None);
        assert_eq!(refused(&policy, "::ffff:127.0.0.1"), None, "mapped is the same address");
        assert_eq!(refused(&policy, "10.1.200.3"), None);
        assert!(refused(&policy, "127.0.0.2").is_some());
        assert!(refused(&policy, "10.2.0.1").is_some());
        assert!(refused(&policy, "169.254.169.254").is_some());
        for bad in ["10.0.0.0/33", "::/129", "localhost", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "::/0"
                .parse::<Cidr>()
                .map(|c| c.contains("fd00::1".parse().expect("ip"))),
            Ok(true)
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().map(|c| c.to_string()),
            Ok("0.0.0.0/0".to_owned())
        );
    }
}
