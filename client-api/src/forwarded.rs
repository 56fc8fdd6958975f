//! Who a request is from, behind a reverse proxy. A connection from a trusted proxy (an address
//! in `client_api.trusted_proxies`) names the client in `X-Forwarded-For`: the client is the
//! rightmost address there that is not itself a trusted proxy (each proxy appends the address
//! it was reached from, so everything left of that is whatever the client chose to send). A
//! connection from anywhere else is its own client, whatever it sends. The address decided here
//! is the one rate limits, last-seen records and logs use.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

/// A `trusted_proxies` entry that is neither an address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network (like 10.0.0.0/8)")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// Parses addresses (`127.0.0.1`, `::1`) and networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadProxy> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| BadProxy(entry.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|nets| Self(nets.into()))
    }

    /// Whether connections from `ip` are a trusted proxy's.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived on a connection from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("").split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            // An entry that is not an address ends the trail: the hop before it is the client.
            let Ok(ip) = IpAddr::from_str(hop.trim()) else {
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// IPv4 addresses that arrive mapped into IPv6 (a dual-stack listener) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8", "fd00::/8"]).unwrap();
        let forwarded = headers(&["203.0.113.7"]);
        // Straight from a client: its own address, whatever it claims.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &forwarded),
            ip("198.51.100.1")
        );
        // Through the proxy: the address the proxy saw.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &forwarded),
            ip("203.0.113.7")
        );
        // A client that sends its own X-Forwarded-For through the proxy cannot pick its
        // address: the proxy appended the real one last.
        let spoofed = headers(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &spoofed), ip("203.0.113.7"));
        // Two proxies in a row (one inside 10/8), in one header or two.
        for chain in [
            headers(&["1.2.3.4, 203.0.113.7, 10.1.2.3"]),
            headers(&["1.2.3.4, 203.0.113.7", "10.1.2.3"]),
        ] {
            assert_eq!(proxies.client(ip("127.0.0.1"), &chain), ip("203.0.113.7"));
        }
        // Mapped and plain IPv6.
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::5"])),
            ip("2001:db8::5")
        );
        assert_eq!(proxies.client(ip("fd00::1"), &forwarded), ip("203.0.113.7"));
        // No header, or garbage: the proxy itself (or the last good hop).
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &headers(&["203.0.113.7, not-an-ip"])),
            ip("127.0.0.1")
        );
        // Nothing trusted (the default): every header is ignored.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("127.0.0.1"), &forwarded), ip("127.0.0.1"));
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(TrustedProxies::parse(&["192.168.0.0/16", "::1"]).is_ok());
        assert_eq!(
            TrustedProxies::parse(&["proxy.local"]).unwrap_err(),
            BadProxy("proxy.local".into())
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
    }
}
