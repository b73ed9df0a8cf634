//! Where an address reaches, for deciding where a provider key may be sent. Both halves ask
//! the same question — the control plane of a provider's URL, the proxy and the key check of
//! every address they are about to connect to — so it is answered once, here.
//!
//! Every IPv6 form that carries an IPv4 address (IPv4-mapped and -compatible, NAT64, 6to4,
//! Teredo) is judged by the IPv4 address it carries, so `[::ffff:127.0.0.1]`,
//! `[64:ff9b::a9fe:a9fe]` or `[2002:a9fe:a9fe::]` reach what `127.0.0.1` and `169.254.169.254`
//! reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far outside the public internet an address lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// The public internet.
    Public,
    /// Loopback, private, shared (CGNAT), unique-local and similar: a local vLLM may live
    /// there, so a provider may be allowed to.
    Private,
    /// Never a provider: unspecified (which connects to this host), link-local, multicast,
    /// reserved, and cloud metadata services — not even with the private-network permission.
    Forbidden,
}

impl Reach {
    /// Whether a provider with (or without) the private-network permission may connect here.
    pub fn permitted(self, allow_private_network: bool) -> bool {
        match self {
            Reach::Public => true,
            Reach::Private => allow_private_network,
            Reach::Forbidden => false,
        }
    }

    /// What to tell an operator whose provider points here.
    pub fn describe(self) -> &'static str {
        match self {
            Reach::Public => "a public address",
            Reach::Private => "a loopback or private address",
            Reach::Forbidden => {
                "a link-local, metadata, unspecified, reserved or multicast address"
            }
        }
    }
}

/// Cloud metadata and platform services on addresses that are otherwise private: AWS (IPv6
/// IMDS under `fd00:ec2::/32`), Google (`fd20:ce::254`), Oracle, Alibaba, Azure's WireServer.
/// The link-local ones (`169.254.169.254`, ECS's `169.254.170.2`) are link-local anyway.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

pub fn of_ip(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => of_ipv4(v4),
        IpAddr::V6(v6) => of_ipv6(v6),
    }
}

pub fn of_ipv4(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    if a == 0                                   // "this network": 0.0.0.0 connects to this host
        || ip.is_link_local()                   // 169.254/16, metadata on every cloud
        || ip.is_multicast()
        || a >= 240                             // reserved, broadcast
        || METADATA_V4.contains(&ip)
    {
        Reach::Forbidden
    } else if ip.is_loopback()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18)
    // benchmarking
    {
        Reach::Private
    } else {
        Reach::Public
    }
}

pub fn of_ipv6(ip: Ipv6Addr) -> Reach {
    let own = own_ipv6_reach(ip);
    // Judged by the IPv4 address it carries, unless the IPv6 address is already worse.
    match embedded_ipv4(ip).into_iter().map(of_ipv4).max() {
        Some(carried) => own.max(carried),
        None => own,
    }
}

fn own_ipv6_reach(ip: Ipv6Addr) -> Reach {
    let segments = ip.segments();
    let first = segments[0];
    let aws = first == 0xfd00 && segments[1] == 0x0ec2;
    let google = ip == Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254);
    if ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80         // link-local
        || (segments[..4] == [0x100, 0, 0, 0]) // discard-only
        || aws
        || google
    {
        Reach::Forbidden
    } else if ip.is_loopback()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfec0
    // site-local (deprecated)
    {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// The IPv4 addresses an IPv6 address carries, by the standard ways of embedding one.
fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let octets = ip.octets();
    let last32 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    let mut carried = Vec::new();
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
    if s[..5] == [0; 5] && s[5] == 0xffff || s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        carried.push(last32);
    }
    // IPv4-compatible ::a.b.c.d (deprecated), which :: and ::1 are not.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        carried.push(last32);
    }
    // NAT64: the well-known 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        carried.push(last32);
    }
    // 6to4: 2002:aabb:ccdd::/48.
    if s[0] == 0x2002 {
        carried.push(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    // Teredo 2001:0::/32: the server's address, and the client's with every bit inverted.
    if s[0] == 0x2001 && s[1] == 0 {
        carried.push(Ipv4Addr::new(octets[4], octets[5], octets[6], octets[7]));
        carried.push(Ipv4Addr::new(
            !octets[12],
            !octets[13],
            !octets[14],
            !octets[15],
        ));
    }
    carried
}

/// What a host name reaches by its name alone, before anything resolves it: the names every
/// system maps to loopback and the metadata services' names. `None`: only resolving tells.
pub fn of_name(name: &str) -> Option<Reach> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let under = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if matches!(
        name.as_str(),
        "metadata" | "instance-data" | "instance-data.ec2.internal"
    ) || under("metadata.google.internal")
    {
        Some(Reach::Forbidden)
    } else if under("localhost")
        || matches!(
            name.as_str(),
            "localhost.localdomain" | "ip6-localhost" | "ip6-loopback" | "localhost6"
        )
        || name.starts_with("localhost6.")
    {
        Some(Reach::Private)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(text: &str) -> Reach {
        of_ip(text.parse().unwrap())
    }

    #[test]
    fn addresses_and_every_form_that_embeds_one() {
        for (address, expected) in [
            ("8.8.8.8", Reach::Public),
            ("2001:db8::1", Reach::Public),
            ("2606:4700::1111", Reach::Public),
            ("127.0.0.1", Reach::Private),
            ("127.8.9.10", Reach::Private),
            ("10.0.0.5", Reach::Private),
            ("172.16.3.4", Reach::Private),
            ("192.168.1.1", Reach::Private),
            ("100.64.0.1", Reach::Private),
            ("192.0.0.8", Reach::Private),
            ("198.18.0.1", Reach::Private),
            ("::1", Reach::Private),
            ("fd00::1", Reach::Private),
            ("fec0::1", Reach::Private),
            ("::ffff:10.0.0.1", Reach::Private),
            ("::127.0.0.1", Reach::Private),
            ("::7f00:1", Reach::Private),
            ("64:ff9b::7f00:1", Reach::Private),
            ("64:ff9b:1::7f00:1", Reach::Private),
            ("2002:7f00:1::", Reach::Private),
            ("::ffff:0:127.0.0.1", Reach::Private),
            ("0.0.0.0", Reach::Forbidden),
            ("0.1.2.3", Reach::Forbidden),
            ("::", Reach::Forbidden),
            ("169.254.169.254", Reach::Forbidden),
            ("169.254.170.2", Reach::Forbidden),
            ("192.0.0.192", Reach::Forbidden),
            ("100.100.100.200", Reach::Forbidden),
            ("168.63.129.16", Reach::Forbidden),
            ("fd00:ec2::254", Reach::Forbidden),
            ("fd20:ce::254", Reach::Forbidden),
            ("fe80::1", Reach::Forbidden),
            ("ff02::1", Reach::Forbidden),
            ("224.0.0.1", Reach::Forbidden),
            ("255.255.255.255", Reach::Forbidden),
            ("240.0.0.1", Reach::Forbidden),
            ("::ffff:169.254.169.254", Reach::Forbidden),
            ("::a9fe:a9fe", Reach::Forbidden),
            ("64:ff9b::a9fe:a9fe", Reach::Forbidden),
            ("2002:a9fe:a9fe::", Reach::Forbidden),
            ("::ffff:0.0.0.0", Reach::Forbidden),
            ("2002:808:808::1", Reach::Public),
            ("64:ff9b::808:808", Reach::Public),
            // Teredo, client 127.0.0.1 (inverted: 80ff:fffe).
            ("2001:0:808:808::80ff:fffe", Reach::Private),
        ] {
            assert_eq!(reach(address), expected, "{address}");
        }
    }

    #[test]
    fn names_known_without_resolving() {
        for name in [
            "localhost",
            "LOCALHOST.",
            "vllm.localhost",
            "localhost.localdomain",
            "ip6-localhost",
            "ip6-loopback",
        ] {
            assert_eq!(of_name(name), Some(Reach::Private), "{name}");
        }
        for name in ["metadata.google.internal", "metadata", "instance-data"] {
            assert_eq!(of_name(name), Some(Reach::Forbidden), "{name}");
        }
        for name in [
            "api.openai.com",
            "127.0.0.1.nip.io",
            "vm",
            "notlocalhost.com",
        ] {
            assert_eq!(of_name(name), None, "{name}");
        }
    }

    #[test]
    fn permission() {
        assert!(Reach::Public.permitted(false));
        assert!(!Reach::Private.permitted(false));
        assert!(Reach::Private.permitted(true));
        assert!(!Reach::Forbidden.permitted(true));
    }
}
