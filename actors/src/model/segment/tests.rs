//! Unit tests of segments and the segment index.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn segment(text: &str) -> Segment {
    parse_segment(text, &SegmentLimits::default()).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses `input` with the default limits: `Ok(canonical text)` or `Err(error message)`.
fn check(input: &str, expected: Result<&str, &str>) {
    check_with(input, &SegmentLimits::default(), expected);
}

fn check_with(input: &str, limits: &SegmentLimits, expected: Result<&str, &str>) {
    let actual = parse_segment(input, limits)
        .map(|segment| segment.to_string())
        .map_err(|error| error.to_string());
    assert_eq!(
        actual,
        expected.map(str::to_owned).map_err(str::to_owned),
        "input {input:?}"
    );
}

#[test]
fn good_segments_parse_to_their_canonical_form() {
    check("203.0.113.0/24", Ok("203.0.113.0/24"));
    check("198.51.100.7/32", Ok("198.51.100.7/32"));
    check("10.20.0.0/16", Ok("10.20.0.0/16"));
    check("127.0.0.0/24", Ok("127.0.0.0/24"));
    check("192.168.1.0/24", Ok("192.168.1.0/24"));
    check("2001:db8:1::/48", Ok("2001:db8:1::/48"));
    check("2001:DB8:1:0:0::/64", Ok("2001:db8:1::/64"));
    check("2001:db8:1::7/128", Ok("2001:db8:1::7/128"));
    check("::1/128", Ok("::1/128"));
    check("fd00:1:2::/48", Ok("fd00:1:2::/48"));
    // The IPv4-compatible form is not the mapped one: it stays an IPv6 segment.
    check("::203.0.113.0/120", Ok("::cb00:7100/120"));
    // Surrounding whitespace is trimmed; the stored form is canonical anyway.
    check("  203.0.113.0/24\n", Ok("203.0.113.0/24"));
    check("\t2001:db8:1::/48 ", Ok("2001:db8:1::/48"));
    // A prefix length with a leading zero is unambiguous.
    check("10.20.0.0/016", Ok("10.20.0.0/16"));
}

#[test]
fn malformed_text_is_not_a_cidr() {
    let expected = |text: &str| {
        format!(
            "{text:?} is not a CIDR segment: expected an address, a slash and a prefix length, \
             such as 203.0.113.0/24 or 2001:db8:1::/48"
        )
    };
    for input in [
        "",
        "203.0.113.0",
        "203.0.113.0/",
        "/24",
        "203.0.113.0/24/24",
        "203.0.113.0 /24",
        "203.0.113.0/ 24",
        "203.0.113.0/+24",
        "203.0.113.0/-1",
        "203.0.113.0/1234",
        "203.0.113/24",
        "203.0.113.256/32",
        "010.0.0.0/16",
        "fe80::1%eth0/64",
        "[2001:db8::]/48",
        "venue.example/24",
        "203.0.113.0-203.0.113.255",
    ] {
        check(input, Err(&expected(input)));
    }
    // Quoted inputs are cut to 80 characters.
    let long = "x".repeat(200);
    let quoted_long = format!("{}…", "x".repeat(80));
    check(&long, Err(&expected(&quoted_long)));
    assert!(matches!(
        parse_segment("nope", &SegmentLimits::default()),
        Err(SegmentError::NotCidr { .. })
    ));
}

#[test]
fn prefix_lengths_beyond_the_address_are_refused() {
    check(
        "203.0.113.0/33",
        Err("\"203.0.113.0/33\" has prefix length 33, but an IPv4 prefix length is at most 32"),
    );
    check(
        "2001:db8::/129",
        Err("\"2001:db8::/129\" has prefix length 129, but an IPv6 prefix length is at most 128"),
    );
    check(
        "2001:db8::/999",
        Err("\"2001:db8::/999\" has prefix length 999, but an IPv6 prefix length is at most 128"),
    );
}

#[test]
fn host_bits_are_refused_with_the_canonical_form() {
    check(
        "203.0.113.7/24",
        Err("\"203.0.113.7/24\" has host bits set: did you mean 203.0.113.0/24"),
    );
    check(
        "2001:db8:1::1/48",
        Err("\"2001:db8:1::1/48\" has host bits set: did you mean 2001:db8:1::/48"),
    );
    assert_eq!(
        parse_segment("203.0.113.7/24", &SegmentLimits::default()),
        Err(SegmentError::HostBitsSet {
            text: "203.0.113.7/24".to_owned(),
            canonical: "203.0.113.0/24".parse().unwrap(),
        })
    );
    // A block that is unusable anyway is refused for that, not for its host bits.
    check(
        "10.1.2.3/8",
        Err(
            "10.0.0.0/8 is too large: IPv4 segments may be at most /16 (prefix length 16 or \
             more), this one is /8",
        ),
    );
}

#[test]
fn segments_larger_than_the_limits_are_refused() {
    check(
        "10.0.0.0/8",
        Err(
            "10.0.0.0/8 is too large: IPv4 segments may be at most /16 (prefix length 16 or \
             more), this one is /8",
        ),
    );
    check(
        "2001:db8::/32",
        Err(
            "2001:db8::/32 is too large: IPv6 segments may be at most /48 (prefix length 48 or \
             more), this one is /32",
        ),
    );
    let strict = SegmentLimits {
        min_ipv4_prefix_len: 24,
        min_ipv6_prefix_len: 56,
    };
    check_with("203.0.113.0/24", &strict, Ok("203.0.113.0/24"));
    check_with(
        "203.0.112.0/23",
        &strict,
        Err(
            "203.0.112.0/23 is too large: IPv4 segments may be at most /24 (prefix length 24 or \
             more), this one is /23",
        ),
    );
    check_with(
        "2001:db8:1::/48",
        &strict,
        Err(
            "2001:db8:1::/48 is too large: IPv6 segments may be at most /56 (prefix length 56 or \
             more), this one is /48",
        ),
    );
    check_with("10.0.0.0/8", &SegmentLimits::UNLIMITED, Ok("10.0.0.0/8"));
    assert_eq!(
        parse_segment("10.0.0.0/8", &SegmentLimits::default()),
        Err(SegmentError::TooLarge {
            net: "10.0.0.0/8".parse().unwrap(),
            prefix_len: 8,
            family: IpFamily::Ipv4,
            min_prefix_len: 16,
        })
    );
}

#[test]
fn the_unspecified_address_is_refused() {
    check(
        "0.0.0.0/16",
        Err(
            "0.0.0.0/16 contains the unspecified address 0.0.0.0, which no client ever has: \
             register the venue's own addresses",
        ),
    );
    check(
        "0.0.0.0/32",
        Err(
            "0.0.0.0/32 contains the unspecified address 0.0.0.0, which no client ever has: \
             register the venue's own addresses",
        ),
    );
    check_with(
        "0.0.0.0/0",
        &SegmentLimits::UNLIMITED,
        Err(
            "0.0.0.0/0 contains the unspecified address 0.0.0.0, which no client ever has: \
             register the venue's own addresses",
        ),
    );
    check(
        "::/128",
        Err(
            "::/128 contains the unspecified address ::, which no client ever has: register \
             the venue's own addresses",
        ),
    );
    check(
        "::/64",
        Err(
            "::/64 contains the unspecified address ::, which no client ever has: register the \
             venue's own addresses",
        ),
    );
}

#[test]
fn multicast_ranges_are_refused() {
    check(
        "224.0.0.0/24",
        Err("224.0.0.0/24 overlaps the multicast range 224.0.0.0/4: register unicast addresses"),
    );
    check(
        "239.255.0.0/16",
        Err(
            "239.255.0.0/16 overlaps the multicast range 224.0.0.0/4: register unicast \
             addresses",
        ),
    );
    check(
        "ff02::/64",
        Err("ff02::/64 overlaps the multicast range ff00::/8: register unicast addresses"),
    );
    // A block containing the whole multicast range overlaps it too.
    check_with(
        "192.0.0.0/2",
        &SegmentLimits::UNLIMITED,
        Err("192.0.0.0/2 overlaps the multicast range 224.0.0.0/4: register unicast addresses"),
    );
    check("223.255.255.0/24", Ok("223.255.255.0/24"));
}

#[test]
fn ipv4_mapped_segments_are_refused_with_the_ipv4_form() {
    check(
        "::ffff:203.0.113.0/120",
        Err(
            "::ffff:203.0.113.0/120 is an IPv4-mapped IPv6 segment: write the IPv4 form \
             203.0.113.0/24",
        ),
    );
    check(
        "::ffff:203.0.113.9/120",
        Err(
            "::ffff:203.0.113.0/120 is an IPv4-mapped IPv6 segment: write the IPv4 form \
             203.0.113.0/24",
        ),
    );
    check(
        "::ffff:cb00:7107/128",
        Err(
            "::ffff:203.0.113.7/128 is an IPv4-mapped IPv6 segment: write the IPv4 form \
             203.0.113.7/32",
        ),
    );
    check(
        "::ffff:0:0/96",
        Err("::ffff:0.0.0.0/96 is an IPv4-mapped IPv6 segment: write the IPv4 form 0.0.0.0/0"),
    );
    check(
        "::8000:0:0/81",
        Err(
            "::8000:0:0/81 contains the IPv4-mapped range ::ffff:0:0/96: write IPv4 segments in \
             IPv4 form and keep IPv6 segments outside that range",
        ),
    );
}

#[test]
fn limits_default_and_validate() {
    assert_eq!(
        SegmentLimits::default(),
        SegmentLimits {
            min_ipv4_prefix_len: 16,
            min_ipv6_prefix_len: 48
        }
    );
    assert_eq!(SegmentLimits::default().validate(), Ok(()));
    assert_eq!(SegmentLimits::UNLIMITED.validate(), Ok(()));
    let full = SegmentLimits {
        min_ipv4_prefix_len: 32,
        min_ipv6_prefix_len: 128,
    };
    assert_eq!(full.validate(), Ok(()));
    let bad_ipv4 = SegmentLimits {
        min_ipv4_prefix_len: 33,
        ..SegmentLimits::default()
    };
    assert_eq!(
        bad_ipv4.validate().unwrap_err().to_string(),
        "segment limit min_ipv4_prefix_len is 33, but an IPv4 prefix length is at most 32: set \
         it between 0 and 32"
    );
    let bad_ipv6 = SegmentLimits {
        min_ipv6_prefix_len: 200,
        ..SegmentLimits::default()
    };
    assert_eq!(
        bad_ipv6.validate(),
        Err(SegmentLimitsError::PrefixLenOutOfRange {
            setting: "min_ipv6_prefix_len",
            value: 200,
            family: IpFamily::Ipv6,
            max_prefix_len: 128,
        })
    );
}

#[test]
fn stored_segments_must_be_exactly_canonical() {
    assert_eq!(
        Segment::from_canonical_str("203.0.113.0/24"),
        Ok(segment("203.0.113.0/24"))
    );
    // Size limits are not applied to stored segments.
    assert_eq!(
        Segment::from_canonical_str("10.0.0.0/8").map(|segment| segment.to_string()),
        Ok("10.0.0.0/8".to_owned())
    );
    assert_eq!(
        Segment::from_canonical_str("2001:DB8:1::/48")
            .unwrap_err()
            .to_string(),
        "\"2001:DB8:1::/48\" is not written in canonical form: write 2001:db8:1::/48"
    );
    assert_eq!(
        Segment::from_canonical_str("10.20.0.0/016")
            .unwrap_err()
            .to_string(),
        "\"10.20.0.0/016\" is not written in canonical form: write 10.20.0.0/16"
    );
    assert!(matches!(
        Segment::from_canonical_str(" 203.0.113.0/24"),
        Err(SegmentError::NotCidr { .. })
    ));
    assert!(matches!(
        Segment::from_canonical_str("203.0.113.7/24"),
        Err(SegmentError::HostBitsSet { .. })
    ));
}

#[test]
fn segments_serialise_as_their_canonical_text() {
    for text in ["203.0.113.0/24", "2001:db8:1::/48"] {
        let encoded = rmp_serde::to_vec_named(&segment(text)).unwrap();
        assert_eq!(rmp_serde::from_slice::<String>(&encoded).unwrap(), text);
        assert_eq!(
            rmp_serde::from_slice::<Segment>(&encoded).unwrap(),
            segment(text)
        );
    }
    let bad = rmp_serde::to_vec_named("203.0.113.7/24").unwrap();
    assert!(rmp_serde::from_slice::<Segment>(&bad).is_err());
    // Errors cross actors too.
    let error = parse_segment("::ffff:203.0.113.0/120", &SegmentLimits::default()).unwrap_err();
    let encoded = rmp_serde::to_vec_named(&error).unwrap();
    assert_eq!(
        rmp_serde::from_slice::<SegmentError>(&encoded).unwrap(),
        error
    );
}

#[test]
fn segment_accessors() {
    let venue = segment("203.0.113.0/24");
    assert_eq!(venue.family(), IpFamily::Ipv4);
    assert_eq!(venue.prefix_len(), 24);
    assert_eq!(venue.first_address(), ip("203.0.113.0"));
    assert_eq!(venue.last_address(), ip("203.0.113.255"));
    assert!(venue.contains(ip("203.0.113.9")));
    assert!(venue.contains(ip("::ffff:203.0.113.9")));
    assert!(!venue.contains(ip("203.0.114.0")));
    assert!(venue.overlaps(&segment("203.0.113.128/25")));
    assert!(segment("203.0.113.128/25").overlaps(&venue));
    assert!(!venue.overlaps(&segment("203.0.114.0/24")));
    let venue_v6 = segment("2001:db8:1::/48");
    assert_eq!(venue_v6.family(), IpFamily::Ipv6);
    assert_eq!(
        venue_v6.last_address(),
        ip("2001:db8:1:ffff:ffff:ffff:ffff:ffff")
    );
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn canonical_addresses_unmap_ipv4() {
    let check_address = |input: &str, expected: &str| {
        assert_eq!(canonical_address(ip(input)), ip(expected), "input {input}");
    };
    check_address("203.0.113.7", "203.0.113.7");
    check_address("::ffff:203.0.113.7", "203.0.113.7");
    check_address("::ffff:cb00:7107", "203.0.113.7");
    check_address("::ffff:127.0.0.1", "127.0.0.1");
    check_address("2001:db8::7", "2001:db8::7");
    check_address("::1", "::1");
    // The deprecated IPv4-compatible form is not unmapped.
    check_address("::203.0.113.7", "::203.0.113.7");
}

// ---------------------------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------------------------

fn index_of(entries: &[(&str, &str)]) -> SegmentIndex<String> {
    let mut index = SegmentIndex::new();
    for (text, owner) in entries {
        index.insert(segment(text), (*owner).to_owned()).unwrap();
    }
    index
}

/// Looks `address` up: `Some((segment, owner))` or `None`.
fn check_lookup(index: &SegmentIndex<String>, address: &str, expected: Option<(&str, &str)>) {
    let actual = index
        .lookup(ip(address))
        .map(|(segment, owner)| (segment.to_string(), owner.clone()));
    assert_eq!(
        actual,
        expected.map(|(segment, owner)| (segment.to_owned(), owner.to_owned())),
        "address {address}"
    );
}

#[test]
fn lookup_boundaries() {
    let index = index_of(&[
        ("203.0.113.0/24", "gw-a"),
        ("198.51.100.128/25", "gw-c"),
        ("198.51.100.5/32", "gw-d"),
        ("2001:db8:1::/48", "gw-b"),
    ]);
    let a = Some(("203.0.113.0/24", "gw-a"));
    let b = Some(("2001:db8:1::/48", "gw-b"));
    let c = Some(("198.51.100.128/25", "gw-c"));
    check_lookup(&index, "203.0.112.255", None);
    check_lookup(&index, "203.0.113.0", a);
    check_lookup(&index, "203.0.113.77", a);
    check_lookup(&index, "203.0.113.255", a);
    check_lookup(&index, "203.0.114.0", None);
    check_lookup(&index, "198.51.100.127", None);
    check_lookup(&index, "198.51.100.128", c);
    check_lookup(&index, "198.51.100.255", c);
    check_lookup(&index, "198.51.101.0", None);
    check_lookup(&index, "198.51.100.4", None);
    check_lookup(&index, "198.51.100.5", Some(("198.51.100.5/32", "gw-d")));
    check_lookup(&index, "198.51.100.6", None);
    // Dual-stack sockets report IPv4 peers as mapped IPv6 addresses.
    check_lookup(&index, "::ffff:203.0.113.0", a);
    check_lookup(&index, "::ffff:203.0.113.255", a);
    check_lookup(&index, "::ffff:203.0.114.0", None);
    check_lookup(&index, "2001:db8:0:ffff:ffff:ffff:ffff:ffff", None);
    check_lookup(&index, "2001:db8:1::", b);
    check_lookup(&index, "2001:db8:1:2:3:4:5:6", b);
    check_lookup(&index, "2001:db8:1:ffff:ffff:ffff:ffff:ffff", b);
    check_lookup(&index, "2001:db8:2::", None);
    // The IPv4-compatible form of a registered IPv4 address is an IPv6 address.
    check_lookup(&index, "::203.0.113.7", None);
}

#[test]
fn ipv4_addresses_never_match_ipv6_segments() {
    // ::cb00:7100/120 has the same low bits as 203.0.113.0/24.
    let index = index_of(&[("::203.0.113.0/120", "gw-v6")]);
    check_lookup(&index, "203.0.113.7", None);
    check_lookup(&index, "::ffff:203.0.113.7", None);
    check_lookup(&index, "::203.0.113.7", Some(("::cb00:7100/120", "gw-v6")));
    let index = index_of(&[("203.0.113.0/24", "gw-v4")]);
    check_lookup(&index, "::cb00:7107", None);
}

#[test]
fn overlaps_are_refused_naming_every_conflict() {
    let mut index = index_of(&[("203.0.113.0/25", "gw-a"), ("203.0.113.128/26", "gw-b")]);
    let wider = segment("203.0.113.0/24");
    let conflict = index.insert(wider, "gw-c".to_owned()).unwrap_err();
    assert_eq!(
        conflict,
        SegmentConflict {
            segment: wider,
            owner: "gw-c".to_owned(),
            conflicts: vec![
                (segment("203.0.113.0/25"), "gw-a".to_owned()),
                (segment("203.0.113.128/26"), "gw-b".to_owned()),
            ],
        }
    );
    assert_eq!(
        conflict.to_string(),
        "segment 203.0.113.0/24 for gw-c overlaps 203.0.113.0/25 registered to gw-a, \
         203.0.113.128/26 registered to gw-b: a client address must belong to one segment, so \
         remove or narrow the overlapping segments first"
    );
    // Inside another venue's segment, and equal to it.
    for text in ["203.0.113.64/26", "203.0.113.0/25", "203.0.113.9/32"] {
        let conflict = index.insert(segment(text), "gw-c".to_owned()).unwrap_err();
        assert_eq!(
            conflict.conflicts,
            vec![(segment("203.0.113.0/25"), "gw-a".to_owned())],
            "{text}"
        );
    }
    // Nothing changed.
    assert_eq!(index.len(), 2);
    check_lookup(&index, "203.0.113.200", None);
    assert_eq!(index.segments_of(&"gw-c".to_owned()), vec![]);
    // Neighbours do not overlap.
    index
        .insert(segment("203.0.113.192/26"), "gw-c".to_owned())
        .unwrap();
    assert_eq!(index.conflicts(&segment("203.0.112.0/24")), vec![]);
    assert_eq!(index.conflicts(&segment("2001:db8::/48")), vec![]);
}

#[test]
fn the_same_owner_may_repeat_a_segment_but_not_overlap_its_own() {
    let mut index = index_of(&[("203.0.113.0/24", "gw-a")]);
    assert_eq!(
        index.insert(segment("203.0.113.0/24"), "gw-a".to_owned()),
        Ok(())
    );
    assert_eq!(index.len(), 1);
    let conflict = index
        .insert(segment("203.0.113.0/25"), "gw-a".to_owned())
        .unwrap_err();
    assert_eq!(
        conflict.to_string(),
        "segment 203.0.113.0/25 for gw-a overlaps 203.0.113.0/24 already registered to gw-a \
         itself: a client address must belong to one segment, so remove or narrow the \
         overlapping segments first"
    );
    assert!(
        index
            .insert(segment("203.0.112.0/23"), "gw-a".to_owned())
            .is_err()
    );
    assert_eq!(index.len(), 1);
}

#[test]
fn remove_and_remove_owner() {
    let mut index = index_of(&[
        ("203.0.113.0/24", "gw-a"),
        ("2001:db8:1::/48", "gw-a"),
        ("198.51.100.0/24", "gw-b"),
        ("192.0.2.0/28", "gw-a"),
    ]);
    assert_eq!(index.len(), 4);
    assert_eq!(
        index.segments_of(&"gw-a".to_owned()),
        vec![
            segment("192.0.2.0/28"),
            segment("203.0.113.0/24"),
            segment("2001:db8:1::/48"),
        ]
    );
    assert_eq!(
        index.get(&segment("198.51.100.0/24")),
        Some(&"gw-b".to_owned())
    );
    assert_eq!(index.get(&segment("198.51.100.0/25")), None);
    assert_eq!(
        index.remove(&segment("192.0.2.0/28")),
        Some("gw-a".to_owned())
    );
    assert_eq!(index.remove(&segment("192.0.2.0/28")), None);
    assert_eq!(index.remove(&segment("203.0.113.0/25")), None);
    check_lookup(&index, "192.0.2.1", None);
    // The emptied prefix length is no longer probed.
    assert!(!index.ipv4.by_prefix_len.contains_key(&28));
    assert_eq!(index.len(), 3);
    assert_eq!(
        index.remove_owner(&"gw-a".to_owned()),
        vec![segment("203.0.113.0/24"), segment("2001:db8:1::/48")]
    );
    assert_eq!(index.remove_owner(&"gw-a".to_owned()), vec![]);
    check_lookup(&index, "203.0.113.1", None);
    check_lookup(&index, "198.51.100.1", Some(("198.51.100.0/24", "gw-b")));
    assert_eq!(index.len(), 1);
    assert!(!index.is_empty());
    // A removed segment can be registered by another owner.
    index
        .insert(segment("203.0.113.0/25"), "gw-c".to_owned())
        .unwrap();
    assert_eq!(
        index.remove(&segment("198.51.100.0/24")),
        Some("gw-b".to_owned())
    );
    assert_eq!(
        index.remove(&segment("203.0.113.0/25")),
        Some("gw-c".to_owned())
    );
    assert!(index.is_empty());
    assert_eq!(index.iter().count(), 0);
    assert!(index.ipv4.by_prefix_len.is_empty() && index.ipv6.by_prefix_len.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Two IPv4 /16s and one IPv6 /48 hold everything, so random segments overlap often.
const IPV4_BASES: [u32; 2] = [0x0a01_0000, 0xcb00_0000];
const IPV6_BASE: u128 = 0x2001_0db8_0001_u128 << 80;

fn ipv4_address() -> impl Strategy<Value = Ipv4Addr> {
    (0..IPV4_BASES.len(), any::<u16>())
        .prop_map(|(base, low)| Ipv4Addr::from(IPV4_BASES[base] | u32::from(low)))
}

/// An address in the IPv6 base: bits 48..56 and 112..128 vary, the rest are zero.
fn ipv6_address() -> impl Strategy<Value = Ipv6Addr> {
    (any::<u8>(), any::<u16>()).prop_map(|(subnet, host)| {
        Ipv6Addr::from(IPV6_BASE | (u128::from(subnet) << 72) | u128::from(host))
    })
}

fn arbitrary_segment() -> impl Strategy<Value = Segment> {
    let limits = SegmentLimits::default();
    prop_oneof![
        (ipv4_address(), 16u8..=32)
            .prop_map(|(address, len)| IpNet::V4(Ipv4Net::new(address, len).unwrap().trunc())),
        (ipv6_address(), prop_oneof![48u8..=72, 100u8..=128])
            .prop_map(|(address, len)| IpNet::V6(Ipv6Net::new(address, len).unwrap().trunc())),
    ]
    .prop_map(move |net| parse_segment(&net.to_string(), &limits).unwrap())
}

fn probe_address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => ipv4_address().prop_map(IpAddr::V4),
        1 => ipv4_address().prop_map(|address| IpAddr::V6(address.to_ipv6_mapped())),
        3 => ipv6_address().prop_map(IpAddr::V6),
        1 => any::<IpAddr>(),
    ]
}

#[derive(Debug, Clone)]
enum Operation {
    Insert(Segment, u8),
    Remove(Segment),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => (arbitrary_segment(), 0u8..3).prop_map(|(segment, owner)| Operation::Insert(segment, owner)),
        1 => arbitrary_segment().prop_map(Operation::Remove),
    ]
}

/// The longest stored segment containing `address`, by scanning them all.
fn brute_force_lookup(model: &[(Segment, u8)], address: IpAddr) -> Option<(Segment, u8)> {
    let address = canonical_address(address);
    model
        .iter()
        .filter(|(segment, _)| segment.net().contains(&address))
        .max_by_key(|(segment, _)| segment.prefix_len())
        .copied()
}

proptest! {
    #[test]
    fn the_index_stays_disjoint_and_agrees_with_a_brute_force_scan(
        operations in proptest::collection::vec(operation(), 1..80),
        probes in proptest::collection::vec(probe_address(), 0..60),
    ) {
        let mut index = SegmentIndex::<u8>::new();
        let mut model: Vec<(Segment, u8)> = Vec::new();
        for operation in operations {
            match operation {
                Operation::Insert(segment, owner) => {
                    let mut overlapping: Vec<(Segment, u8)> = model
                        .iter()
                        .filter(|(stored, _)| stored.overlaps(&segment))
                        .copied()
                        .collect();
                    overlapping.sort();
                    prop_assert_eq!(index.conflicts(&segment), overlapping.clone());
                    let expected = match overlapping.as_slice() {
                        [] => {
                            model.push((segment, owner));
                            Ok(())
                        }
                        [(stored, stored_owner)] if *stored == segment && *stored_owner == owner => {
                            Ok(())
                        }
                        _ => Err(SegmentConflict { segment, owner, conflicts: overlapping }),
                    };
                    prop_assert_eq!(index.insert(segment, owner), expected);
                }
                Operation::Remove(segment) => {
                    let expected = model
                        .iter()
                        .position(|(stored, _)| *stored == segment)
                        .map(|position| model.remove(position).1);
                    prop_assert_eq!(index.remove(&segment), expected);
                }
            }
            prop_assert_eq!(index.len(), model.len());
        }
        model.sort();
        let stored: Vec<(Segment, u8)> =
            index.iter().map(|(segment, owner)| (*segment, *owner)).collect();
        prop_assert_eq!(&stored, &model);
        for (position, (left, _)) in model.iter().enumerate() {
            for (right, _) in &model[position + 1..] {
                prop_assert!(!left.overlaps(right), "{} overlaps {}", left, right);
            }
        }
        let edges = model
            .iter()
            .flat_map(|(segment, _)| [segment.first_address(), segment.last_address()]);
        for address in probes.into_iter().chain(edges) {
            let actual = index.lookup(address).map(|(segment, owner)| (*segment, *owner));
            prop_assert_eq!(actual, brute_force_lookup(&model, address), "address {}", address);
        }
        for owner in 0u8..3 {
            let expected: Vec<Segment> = model
                .iter()
                .filter(|(_, stored_owner)| *stored_owner == owner)
                .map(|(segment, _)| *segment)
                .collect();
            prop_assert_eq!(index.segments_of(&owner), expected);
        }
    }
}
