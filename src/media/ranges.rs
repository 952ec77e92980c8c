//! Which IP addresses count as public: the IANA special-purpose registries
//! as data, and the one question every other step asks of an address.
//!
//! Kept apart because both the syntax check (IP literals) and resolution
//! (DNS answers) apply the same rules, and because the tables are the part
//! a reviewer has to compare, line by line, with the registries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose
/// Address Registry plus multicast and reserved space), with the words used in
/// error messages. First match wins, so the broadcast address sits before
/// 240/4.
const V4_SPECIAL: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "a this-network"),
    (v4(10, 0, 0, 0, 8), "a private"),
    (v4(100, 64, 0, 0, 10), "a shared (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "a loopback"),
    (v4(169, 254, 0, 0, 16), "a link-local"),
    (v4(172, 16, 0, 0, 12), "a private"),
    // The whole IETF protocol assignments block, including the few entries
    // (192.0.0.9, 192.0.0.10) IANA marks global: none of them serves media.
    (v4(192, 0, 0, 0, 24), "an IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "a documentation"),
    (v4(192, 88, 99, 0, 24), "a 6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "a private"),
    (v4(198, 18, 0, 0, 15), "a benchmarking"),
    (v4(198, 51, 100, 0, 24), "a documentation"),
    (v4(203, 0, 113, 0, 24), "a documentation"),
    (v4(224, 0, 0, 0, 4), "a multicast"),
    (v4(255, 255, 255, 255, 32), "a broadcast"),
    (v4(240, 0, 0, 0, 4), "a reserved"),
];

/// The only IPv6 space admitted at all: global unicast.
const V6_GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// IPv6 ranges refused. Everything outside 2000::/3 is refused anyway; the
/// ranges outside it are listed too so the error message can name them.
/// Specific ranges come before the blocks that contain them.
const V6_SPECIAL: &[(Ipv6Net, &str)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), "an unspecified"),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), "a loopback"),
    (v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96), "an IPv4-mapped"),
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 96), "an IPv4-compatible"),
    (v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96), "a NAT64"),
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), "a local-use NAT64"),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "a discard-only"),
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 32), "a Teredo"),
    (v6(0x2001, 0x2, 0, 0, 0, 0, 0, 0, 48), "a benchmarking"),
    (v6(0x2001, 0x10, 0, 0, 0, 0, 0, 0, 28), "an ORCHID"),
    (v6(0x2001, 0x20, 0, 0, 0, 0, 0, 0, 28), "an ORCHIDv2"),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), "a documentation"),
    // The rest of the IETF protocol assignments block (anycast services, AMT,
    // AS112, DETs). RIR allocations start at 2001:200::, so no real media
    // server lives here.
    (
        v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),
        "an IETF protocol assignment",
    ),
    (v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16), "a 6to4"),
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), "a documentation"),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "a unique-local"),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), "a link-local"),
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), "a site-local"),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "a multicast"),
];

/// Describes why `ip` is not public ("a private", "a loopback", ...), or
/// `None` if it is globally routable.
pub(super) fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => V4_SPECIAL
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind),
        IpAddr::V6(ip) => V6_SPECIAL
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind)
            .or_else(|| {
                (!V6_GLOBAL_UNICAST.contains(&ip)).then_some("a reserved (non-global-unicast)")
            }),
    }
}

/// Whether an address is globally routable: not in any IANA special-purpose
/// range listed above and, for IPv6, inside global unicast 2000::/3. The test
/// allow-list is not consulted.
pub fn is_public_ip(ip: IpAddr) -> bool {
    non_public_kind(ip).is_none()
}

/// Whether a fetch may connect to `ip`: public, or inside the test
/// allow-list.
pub(super) fn ip_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    is_public_ip(ip) || allow.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_classification() {
        let rows: &[(&str, bool)] = &[
            ("93.184.215.14", true),
            ("8.8.8.8", true),
            ("1.0.0.1", true),
            ("192.31.196.1", true),
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("10.1.2.3", false),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("127.255.255.255", false),
            ("169.254.1.1", false),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("192.0.0.9", false),
            ("192.0.2.255", false),
            ("192.88.99.2", false),
            ("192.168.255.255", false),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.51.100.1", false),
            ("203.0.113.255", false),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            ("2606:2800:220:1::1", true),
            ("2001:4860:4860::8888", true),
            ("2a00:1450:4001:82b::200e", true),
            ("3ffe::1", true),
            ("3fff:fff:ffff::1", false),
            ("3fff:1000::1", true),
            ("::", false),
            ("::1", false),
            ("::ffff:8.8.8.8", false),
            ("::8.8.8.8", false),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::808:808", false),
            ("100::1", false),
            ("2001::", false),
            ("2001:0:ffff::1", false),
            ("2001:2::", false),
            ("2001:10::1", false),
            ("2001:1f::1", false),
            ("2001:20::1", false),
            ("2001:2f::1", false),
            ("2001:1ff::1", false),
            ("2001:db8:ffff::1", false),
            ("2002::1", false),
            ("fc00::", false),
            ("fdff::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("4000::", false),
            ("1fff:ffff::1", false),
        ];
        for (ip, public) in rows {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(is_public_ip(addr), *public, "{ip}");
        }
    }
}
