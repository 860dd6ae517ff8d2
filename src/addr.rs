//! The key a client address is counted under, by the per-address connection cap
//! (`src/http/server.rs`) and the login throttle (`src/auth/throttle.rs`) alike.
//!
//! IPv4 as is (IPv4-mapped IPv6 included: a dual-stack listener sees v4 clients so);
//! IPv6 by its /64, which one host usually owns whole, so rotating through its own
//! addresses buys a client nothing.

use std::net::{IpAddr, Ipv6Addr};

/// The counting key of `ip`.
pub fn share_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::share_key;
    use std::net::IpAddr;

    #[test]
    fn ipv4_as_is_ipv6_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(share_key(ip("10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(share_key(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(
            share_key(ip("2001:db8:1:2::5")),
            share_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            share_key(ip("2001:db8:1:2::5")),
            share_key(ip("2001:db8:1:3::5"))
        );
    }
}
