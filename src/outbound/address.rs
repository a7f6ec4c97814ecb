//! Where a delivery may go (SSRF care): a destination's URL is checked when it is made, and every
//! address its host resolves to is checked again at connect time (so DNS rebinding cannot turn
//! an allowed name into a forbidden address). No redirect is followed (the sender's business).
//!
//! Always refused: unspecified (`0.0.0.0`, `::`), link-local (`169.254/16`, with the cloud
//! metadata address `169.254.169.254`, and `fe80::/10`), IPv4-mapped IPv6 (`::ffff:a.b.c.d`, a way
//! around v4 rules; so too IPv4-compatible `::a.b.c.d` and NAT64 `64:ff9b::/96`), CGNAT (`100.64/10`), multicast, broadcast and reserved (`240/4`), and the
//! mirror's own ports. Refused unless `allow_private`: loopback, private (`10/8`, `172.16/12`,
//! `192.168/16`, `fc00::/7`). `https` is required except for an allowed private target.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The instance's choices.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Whether loopback and private addresses may be delivered to (over `http` too).
    pub allow_private: bool,
    /// The mirror's own bound addresses (webhook, gRPC, admin): never a destination.
    pub own: Vec<SocketAddr>,
}

/// Why a destination or an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("`{0}` is not an absolute http(s) URL with a host")]
    NotAUrl(String),
    #[error("`{0}` must use https (http only to an allowed private address: --allow-private-destinations)")]
    NotHttps(String),
    #[error("`{0}` may carry no user name or password: put credentials in the path or a header-free token")]
    Credentials(String),
    #[error("{0} is {1}: never a destination")]
    Forbidden(IpAddr, &'static str),
    #[error("{0} is {1}: a destination only with --allow-private-destinations")]
    Private(IpAddr, &'static str),
    #[error("{0} is one of the mirror's own ports")]
    OwnPort(SocketAddr),
}

/// A checked destination URL: its host and port, and whether it is `https`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub https: bool,
}

/// What kind of address `ip` is, if it is one a delivery must not reach: `(always, what)`.
fn class(ip: IpAddr) -> Option<(bool, &'static str)> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return Some((true, "an IPv4-mapped IPv6 address"));
            }
            let segments = v6.segments();
            let first = segments[0];
            // `::a.b.c.d` (IPv4-compatible, deprecated) and `64:ff9b::a.b.c.d` (NAT64) reach
            // IPv4 addresses too.
            let compatible = segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if compatible || nat64 {
                Some((true, "an IPv6 address that reaches an IPv4 one"))
            } else if v6.is_unspecified() {
                Some((true, "the unspecified address"))
            } else if v6.is_loopback() {
                Some((false, "a loopback address"))
            } else if first & 0xffc0 == 0xfe80 {
                Some((true, "a link-local address"))
            } else if first & 0xfe00 == 0xfc00 {
                Some((false, "a private (unique local) address"))
            } else if v6.is_multicast() {
                Some((true, "a multicast address"))
            } else {
                None
            }
        }
    }
}

fn class_v4(v4: Ipv4Addr) -> Option<(bool, &'static str)> {
    let [a, b, ..] = v4.octets();
    if v4.is_unspecified() || a == 0 {
        Some((true, "the unspecified address"))
    } else if v4 == Ipv4Addr::new(169, 254, 169, 254) {
        Some((true, "the cloud metadata address"))
    } else if v4.is_link_local() {
        Some((true, "a link-local address"))
    } else if a == 100 && (64..128).contains(&b) {
        Some((true, "a carrier-grade NAT address"))
    } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
        Some((true, "a broadcast, multicast or reserved address"))
    } else if v4.is_loopback() {
        Some((false, "a loopback address"))
    } else if v4.is_private() {
        Some((false, "a private address"))
    } else {
        None
    }
}

impl Policy {
    /// Whether a delivery may connect to `addr` (every address a host resolves to, at connect
    /// time).
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip();
        let own = self
            .own
            .iter()
            .any(|o| o.port() == addr.port() && (o.ip() == ip || o.ip().is_unspecified() || ip.is_loopback()));
        if own {
            return Err(Refusal::OwnPort(addr));
        }
        match class(ip) {
            Some((true, what)) => Err(Refusal::Forbidden(ip, what)),
            Some((false, what)) if !self.allow_private => Err(Refusal::Private(ip, what)),
            _ => Ok(()),
        }
    }

    /// A destination URL, checked before anything is resolved: absolute http(s) with a host,
    /// no credentials, https unless its host is a literal private address that is allowed; a
    /// literal address is checked at once.
    pub fn check_url(&self, url: &str) -> Result<Target, Refusal> {
        let not_a_url = || Refusal::NotAUrl(url.chars().take(200).collect());
        let uri: http::Uri = url.parse().map_err(|_| not_a_url())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(not_a_url()),
        };
        let authority = uri.authority().ok_or_else(not_a_url)?;
        if authority.as_str().contains('@') {
            return Err(Refusal::Credentials(authority.host().to_string()));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(not_a_url());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check(SocketAddr::new(ip, port))?;
        }
        let private = host.parse::<IpAddr>().is_ok_and(|ip| class(ip).is_some()) || host == "localhost";
        if !https && !(self.allow_private && private) {
            return Err(Refusal::NotHttps(url.chars().take(200).collect()));
        }
        Ok(Target { host, port, https })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forbidden_addresses_are_refused_whatever_the_flag_and_private_ones_only_without_it() {
        let strict = Policy::default();
        let open = Policy {
            allow_private: true,
            own: vec![addr("127.0.0.1:8080"), addr("0.0.0.0:50051")],
        };
        for forbidden in [
            "0.0.0.0:443",
            "[::]:443",
            "169.254.169.254:80",
            "169.254.1.1:443",
            "[fe80::1]:443",
            "[::ffff:10.0.0.1]:443",
            "[::ffff:169.254.169.254]:80",
            "[::10.0.0.1]:443",
            "[64:ff9b::a9fe:a9fe]:80",
            "100.64.0.1:443",
            "100.127.255.254:443",
            "255.255.255.255:443",
            "224.0.0.1:443",
            "240.0.0.1:443",
            "[ff02::1]:443",
        ] {
            for policy in [&strict, &open] {
                assert!(matches!(policy.check(addr(forbidden)), Err(Refusal::Forbidden(..))), "{forbidden}");
            }
        }
        for private in ["127.0.0.1:9999", "[::1]:443", "10.1.2.3:443", "172.16.0.1:443", "172.31.255.255:443", "192.168.1.1:443", "[fd00::1]:443"] {
            assert!(matches!(strict.check(addr(private)), Err(Refusal::Private(..))), "{private}");
            assert_eq!(open.check(addr(private)), Ok(()), "{private}");
        }
        for public in ["93.184.216.34:443", "172.32.0.1:443", "100.128.0.1:443", "[2606:4700::1111]:443", "8.8.8.8:80"] {
            assert_eq!(strict.check(addr(public)), Ok(()), "{public}");
        }
        // The mirror's own ports, on loopback or where they are bound.
        assert_eq!(open.check(addr("127.0.0.1:8080")), Err(Refusal::OwnPort(addr("127.0.0.1:8080"))));
        assert_eq!(open.check(addr("10.0.0.5:50051")), Err(Refusal::OwnPort(addr("10.0.0.5:50051"))));
        assert_eq!(open.check(addr("10.0.0.5:8080")), Ok(()));
    }

    #[test]
    fn a_destination_url_needs_https_a_host_and_no_credentials_and_a_literal_address_is_checked_at_once() {
        let strict = Policy::default();
        let open = Policy {
            allow_private: true,
            ..Default::default()
        };
        assert_eq!(
            strict.check_url("https://hooks.example.com/clerk").unwrap(),
            Target { host: "hooks.example.com".into(), port: 443, https: true }
        );
        assert!(matches!(strict.check_url("http://hooks.example.com/clerk"), Err(Refusal::NotHttps(_))));
        assert!(matches!(open.check_url("http://hooks.example.com/clerk"), Err(Refusal::NotHttps(_))), "http only to a private target");
        assert_eq!(open.check_url("http://127.0.0.1:3000/in").unwrap(), Target { host: "127.0.0.1".into(), port: 3000, https: false });
        assert!(matches!(strict.check_url("http://127.0.0.1:3000/in"), Err(Refusal::Private(..))));
        assert!(matches!(open.check_url("https://169.254.169.254/latest"), Err(Refusal::Forbidden(..))));
        assert!(matches!(open.check_url("https://[::ffff:127.0.0.1]/"), Err(Refusal::Forbidden(..))));
        assert!(matches!(strict.check_url("https://user:pw@hooks.example.com/"), Err(Refusal::Credentials(_))));
        for bad in ["hooks.example.com/clerk", "ftp://hooks.example.com/", "https:///path", "not a url"] {
            assert!(matches!(strict.check_url(bad), Err(Refusal::NotAUrl(_))), "{bad}");
        }
        // Refusals say what to do.
        let e = strict.check_url("http://10.0.0.1/").unwrap_err().to_string();
        assert!(e.contains("--allow-private-destinations"), "{e}");
    }
}
