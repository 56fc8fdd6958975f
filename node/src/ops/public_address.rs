//! Which addresses the hearth may call on a user's say-so (push endpoints): public unicast only.
//! Everything in the IANA special-purpose registries (loopback, private, shared, link-local,
//! documentation, benchmarking, multicast, reserved, …) is refused, after unwrapping the IPv6
//! forms that carry an IPv4 address (mapped, NAT64, 6to4), so `[::ffff:127.0.0.1]` is loopback.
//! Names are resolved when the request is made and every address they resolve to is checked; the
//! connection then goes to a checked address (the resolver below is the HTTP client's only one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The special-purpose range `ip` is in, or `None` for an ordinary public unicast address.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    // RFC 6890 and the IANA IPv4 Special-Purpose Address Registry, plus multicast and class E.
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\""),
        ([10, 0, 0, 0], 8, "private"),
        (
            [100, 64, 0, 0],
            10,
            "shared address space (carrier-grade NAT)",
        ),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved (and broadcast)"),
    ];
    RANGES
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, name)| *name)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    // Forms that carry an IPv4 address: judge the address they lead to.
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return special_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return special_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Only 2000::/3 is allocated global unicast; inside it, the special-purpose blocks.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        const OUTSIDE: &[([u16; 8], u32, &str)] = &[
            ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
            ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
            ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
            ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
            ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local (private)"),
            ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
            ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
            ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
        ];
        return Some(
            OUTSIDE
                .iter()
                .find(|(net, len, _)| in_v6(ip, *net, *len))
                .map_or("not global unicast", |(_, _, name)| *name),
        );
    }
    const INSIDE: &[([u16; 8], u32, &str)] = &[
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            "IETF protocol assignments (Teredo, ORCHID, …)",
        ),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    ];
    INSIDE
        .iter()
        .find(|(net, len, _)| in_v6(ip, *net, *len))
        .map(|(_, _, name)| *name)
}

/// Why a call out was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{host} resolves to {addr}, a {range} address")]
    Special {
        host: String,
        addr: IpAddr,
        range: &'static str,
    },
    #[error("{host} resolves to no address")]
    Nothing { host: String },
    #[error("cannot resolve {host}: {reason}")]
    Lookup {
        host: String,
        reason: std::io::Error,
    },
}

/// Resolves a host name and returns its addresses only if every one of them is public.
pub async fn resolve_public(host: &str) -> Result<Vec<SocketAddr>, Refused> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|source| Refused::Lookup {
            host: host.to_owned(),
            reason: source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Refused::Nothing {
            host: host.to_owned(),
        });
    }
    for addr in &addrs {
        if let Some(range) = special_purpose(addr.ip()) {
            return Err(Refused::Special {
                host: host.to_owned(),
                addr: addr.ip(),
                range,
            });
        }
    }
    Ok(addrs)
}

/// The HTTP client's resolver: names that lead anywhere but the public internet fail to resolve.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_public(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(text: &str) -> Option<&'static str> {
        special_purpose(text.parse().unwrap())
    }

    #[test]
    fn special_purpose_addresses_are_refused_in_every_spelling() {
        for bad in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "169.254.169.254",
            "172.31.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "0:0:0:0:0:ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "ff05::1:3",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
            "100::1",
            "::127.0.0.1",
            "5f00::1",
        ] {
            assert!(special(bad).is_some(), "{bad} passed as public");
        }
    }

    #[test]
    fn public_unicast_addresses_pass() {
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(special(good), None, "{good}");
        }
    }

    #[tokio::test]
    async fn names_are_checked_by_what_they_resolve_to() {
        let err = resolve_public("localhost").await.unwrap_err();
        assert!(
            matches!(
                err,
                Refused::Special {
                    range: "loopback",
                    ..
                }
            ),
            "{err}"
        );
    }
}
