//! Server-side request forgery protection for webhook receivers.
//!
//! A receiver URL comes from configuration, but its host name may resolve anywhere, and
//! a receiver may answer with a redirect. Following the OWASP SSRF cheat sheet: only
//! http/https; no redirects and no proxies; the name is resolved by [`GuardedResolver`],
//! which refuses the whole name if any of its addresses lies in a non-public range, and
//! the addresses it returns are the ones the connection uses (no second lookup that a
//! DNS rebinding could change); literal IP hosts are checked by [`check_url`] before the
//! request. Ranges named in the receiver's `allowed_networks` are let through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which destination addresses a receiver may reach.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    allowed: Vec<IpNet>,
}

impl NetPolicy {
    /// A policy allowing public addresses plus `allowed` (CIDR strings, validated with the
    /// config; an unparsable one is skipped, which only makes the policy stricter).
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.iter().filter_map(|s| parse_net(s)).collect(),
        }
    }

    /// An error when `ip` may not be contacted.
    pub fn check(&self, ip: IpAddr) -> Result<(), RestrictedAddress> {
        let ip = canonical(ip);
        let Some(range) = restricted_range(ip) else {
            return Ok(());
        };
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        Err(RestrictedAddress { ip, range })
    }
}

/// An address in a non-public range the receiver's `allowed_networks` does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ip} is in a {range} range, refused to prevent request forgery \
     (allow it with the receiver's allowed_networks)"
)]
pub struct RestrictedAddress {
    /// The address (IPv4-mapped IPv6 addresses as their IPv4 address).
    pub ip: IpAddr,
    /// The kind of range, such as `loopback` or `private`.
    pub range: &'static str,
}

/// Why a receiver URL cannot be posted to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {source}")]
    Invalid {
        /// The URL as configured.
        url: String,
        /// The parser's complaint.
        source: url::ParseError,
    },
    /// Neither http nor https.
    #[error("scheme {0:?} refused: only http and https")]
    Scheme(String),
    /// No host to connect to.
    #[error("URL {0:?} has no host")]
    NoHost(String),
    /// A literal IP host the policy refuses.
    #[error(transparent)]
    Address(#[from] RestrictedAddress),
}

/// Parse `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4 address they
/// carry, so `::ffff:127.0.0.1` is loopback.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The kind of non-public range `ip` is in, if any.
fn restricted_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignment",
        (198, 18..=19, _) => "benchmarking",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    Some(match seg[0] {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        s if s & 0xfe00 == 0xfc00 => "unique local (private)",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        0x2001 if seg[1] == 0x0db8 => "documentation",
        // NAT64 and 6to4 embed an IPv4 address that may be private.
        0x0064 if seg[1] == 0xff9b => "NAT64",
        0x2002 => "6to4",
        // IPv4-compatible (deprecated) ::a.b.c.d.
        0 if seg[1..6].iter().all(|&s| s == 0) => "IPv4-compatible",
        _ => return None,
    })
}

/// An error when `url` cannot be posted to: not http/https, no host, or a literal IP
/// host the policy refuses (names are checked by [`GuardedResolver`] at connect time).
pub fn check_url(url: &str, policy: &NetPolicy) -> Result<(), UrlRefused> {
    let parsed = reqwest::Url::parse(url).map_err(|source| UrlRefused::Invalid {
        url: lookout_config::redact_url(url),
        source,
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlRefused::Scheme(parsed.scheme().to_string()));
    }
    match parsed.host() {
        None => Err(UrlRefused::NoHost(lookout_config::redact_url(url))),
        Some(url::Host::Ipv4(v4)) => Ok(policy.check(IpAddr::V4(v4))?),
        Some(url::Host::Ipv6(v6)) => Ok(policy.check(IpAddr::V6(v6))?),
        Some(url::Host::Domain(_)) => Ok(()),
    }
}

/// What the guard will refuse among `receivers`, checked now (names resolved once): one
/// line per receiver that will not be reached, naming its key, for `--check-config`.
pub fn preflight<'a>(
    receivers: impl Iterator<Item = (&'a String, &'a lookout_config::ReceiverConfig)>,
) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for (name, rc) in receivers {
        let key = format!("receivers.{name}.url");
        let policy = NetPolicy::new(&rc.allowed_networks);
        if let Err(e) = check_url(&rc.url.0, &policy) {
            out.push(format!("{key}: {e}; every notification to it will fail"));
            continue;
        }
        let Ok(parsed) = reqwest::Url::parse(&rc.url.0) else {
            continue;
        };
        let (Some(url::Host::Domain(host)), Some(port)) =
            (parsed.host(), parsed.port_or_known_default())
        else {
            continue;
        };
        match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                if let Some(refused) = addrs.filter_map(|a| policy.check(a.ip()).err()).next() {
                    out.push(format!(
                        "{key}: {host} resolves to {refused}; every notification to it will fail"
                    ));
                }
            }
            Err(e) => out.push(format!("{key}: cannot resolve {host} now: {e}")),
        }
    }
    out
}

/// A host name that resolves to an address the policy refuses; final, not worth a retry.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {address}")]
pub struct Refused {
    /// The name looked up.
    pub host: String,
    /// The first refused address it resolves to.
    pub address: RestrictedAddress,
}

/// The refusal somewhere in `err`'s source chain, if that is why it failed.
pub fn refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// A DNS resolver that answers only with addresses the policy allows; the connection is
/// made to exactly those addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<NetPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<NetPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            // One bad address refuses the name: a rebinding name may mix them.
            for a in &addrs {
                policy.check(a.ip()).map_err(|address| Refused {
                    host: host.clone(),
                    address,
                })?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn refused(policy: &NetPolicy, ip: &str) -> bool {
        policy.check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn non_public_ranges_are_refused_by_default() {
        let p = NetPolicy::default();
        for ip in [
            "127.0.0.1",
            "127.5.6.7",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(refused(&p, ip), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!refused(&p, ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_their_ranges() {
        let p = NetPolicy::new(&["127.0.0.0/8".into(), "10.1.2.3".into(), "fd00::/8".into()]);
        assert!(!refused(&p, "127.0.0.1"));
        assert!(!refused(&p, "::ffff:127.0.0.1"));
        assert!(!refused(&p, "10.1.2.3"));
        assert!(refused(&p, "10.1.2.4"));
        assert!(!refused(&p, "fd12::1"));
        assert!(refused(&p, "169.254.169.254"));
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_hosts() {
        let p = NetPolicy::default();
        assert!(check_url("https://hooks.example.com/x", &p).is_ok());
        for (url, needle) in [
            (
                "http://127.0.0.1:9000/hook",
                "127.0.0.1 is in a loopback range",
            ),
            ("http://[::1]:9000/", "loopback"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            // Decimal and hex encodings of a private address are normalised by the URL
            // parser.
            ("http://167772161/", "10.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("file:///etc/passwd", "only http and https"),
        ] {
            let e = check_url(url, &p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        use reqwest::dns::Resolve;
        let r = GuardedResolver::new(Arc::new(NetPolicy::default()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = r.resolve(name).await.err().expect("refused").to_string();
        assert!(err.contains("localhost resolves to"), "{err}");
        let r = GuardedResolver::new(Arc::new(NetPolicy::new(&[
            "127.0.0.0/8".into(),
            "::1/128".into(),
        ])));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = r.resolve(name).await.expect("allowed").collect();
        assert!(!addrs.is_empty());
    }
}
