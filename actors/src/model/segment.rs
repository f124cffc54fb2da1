//! Venue segments (S0): the IPv4/IPv6 CIDR blocks a gateway registers for its LAN, the rules a
//! segment must pass (well-formed, canonical, not too large, unicast), the canonical form of a
//! client address, and the [`SegmentIndex`] every node keeps to map a client address to the one
//! registered segment it belongs to.
//!
//! Parsing trims surrounding whitespace (pasted registration data often ends in a newline; the
//! canonical form is what gets stored, so nothing ambiguous survives) and refuses anything else
//! that is not exactly `address/prefix-length`: IPv4 octets with leading zeros, zone ids, a
//! missing prefix length. Loopback and private ranges are allowed (tests run on 127.0.0.x, and
//! some deployments put venues behind private space).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Bound;

/// Most characters of a refused input quoted back in an error.
const MAX_QUOTED_CHARS: usize = 80;
/// Most decimal digits of a prefix length (`128`).
const MAX_PREFIX_LEN_DIGITS: usize = 3;

/// The IPv4 multicast range.
const IPV4_MULTICAST: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4);
/// The IPv6 multicast range.
const IPV6_MULTICAST: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8);
/// The IPv4-mapped IPv6 range (`::ffff:a.b.c.d`).
const IPV6_MAPPED_IPV4: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    /// Bits in an address of this family (32 or 128).
    pub fn address_bits(self) -> u8 {
        match self {
            Self::Ipv4 => 32,
            Self::Ipv6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        })
    }
}

/// The canonical form of a client address: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as
/// dual-stack sockets report IPv4 peers) becomes the IPv4 address; every other address is
/// returned unchanged (the deprecated IPv4-compatible form `::a.b.c.d` stays IPv6).
pub fn canonical_address(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// How large a segment may be, per family: the shortest prefix length accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentLimits {
    /// The shortest IPv4 prefix length accepted: 16 means segments of at most a /16.
    pub min_ipv4_prefix_len: u8,
    /// The shortest IPv6 prefix length accepted: 48 means segments of at most a /48.
    pub min_ipv6_prefix_len: u8,
}

impl SegmentLimits {
    /// No size limit (segments are still checked for everything else); for stored segments,
    /// which passed the limits in force when they were registered.
    pub const UNLIMITED: Self = Self {
        min_ipv4_prefix_len: 0,
        min_ipv6_prefix_len: 0,
    };

    /// Checks that each limit is a prefix length of its family.
    pub fn validate(&self) -> Result<(), SegmentLimitsError> {
        let settings = [
            (
                "min_ipv4_prefix_len",
                self.min_ipv4_prefix_len,
                IpFamily::Ipv4,
            ),
            (
                "min_ipv6_prefix_len",
                self.min_ipv6_prefix_len,
                IpFamily::Ipv6,
            ),
        ];
        for (setting, value, family) in settings {
            if value > family.address_bits() {
                return Err(SegmentLimitsError::PrefixLenOutOfRange {
                    setting,
                    value,
                    family,
                    max_prefix_len: family.address_bits(),
                });
            }
        }
        Ok(())
    }

    /// The shortest prefix length accepted for a family.
    pub fn min_prefix_len(&self, family: IpFamily) -> u8 {
        match family {
            IpFamily::Ipv4 => self.min_ipv4_prefix_len,
            IpFamily::Ipv6 => self.min_ipv6_prefix_len,
        }
    }
}

impl Default for SegmentLimits {
    fn default() -> Self {
        Self {
            min_ipv4_prefix_len: 16,
            min_ipv6_prefix_len: 48,
        }
    }
}

/// Why segment limits are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentLimitsError {
    /// A limit is longer than an address of its family.
    #[error(
        "segment limit {setting} is {value}, but an {family} prefix length is at most \
         {max_prefix_len}: set it between 0 and {max_prefix_len}"
    )]
    PrefixLenOutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// Its value.
        value: u8,
        /// The family it limits.
        family: IpFamily,
        /// The longest prefix length of that family.
        max_prefix_len: u8,
    },
}

/// Why a text is not an acceptable segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SegmentError {
    /// Not `address/prefix-length`.
    #[error(
        "{text:?} is not a CIDR segment: expected an address, a slash and a prefix length, \
         such as 203.0.113.0/24 or 2001:db8:1::/48"
    )]
    NotCidr {
        /// The text (its first 80 characters).
        text: String,
    },
    /// The prefix length is longer than the address.
    #[error(
        "{text:?} has prefix length {prefix_len}, but an {family} prefix length is at most \
         {max_prefix_len}"
    )]
    PrefixLenOutOfRange {
        /// The text (its first 80 characters).
        text: String,
        /// The prefix length written.
        prefix_len: u16,
        /// The address's family.
        family: IpFamily,
        /// The longest prefix length of that family.
        max_prefix_len: u8,
    },
    /// An IPv4-mapped IPv6 block (`::ffff:a.b.c.d/n`): IPv4 segments are written as IPv4.
    #[error("{net} is an IPv4-mapped IPv6 segment: write the IPv4 form {ipv4_form}")]
    Ipv4Mapped {
        /// The block written (host bits cleared).
        net: IpNet,
        /// The same block as an IPv4 segment.
        ipv4_form: Ipv4Net,
    },
    /// The block contains the unspecified address (`0.0.0.0` or `::`), which no client has.
    #[error(
        "{net} contains the unspecified address {unspecified}, which no client ever has: \
         register the venue's own addresses"
    )]
    Unspecified {
        /// The block written (host bits cleared).
        net: IpNet,
        /// `0.0.0.0` or `::`.
        unspecified: IpAddr,
    },
    /// An IPv6 block containing the whole IPv4-mapped range.
    #[error(
        "{net} contains the IPv4-mapped range ::ffff:0:0/96: write IPv4 segments in IPv4 form \
         and keep IPv6 segments outside that range"
    )]
    ContainsIpv4Mapped {
        /// The block written (host bits cleared).
        net: IpNet,
    },
    /// The block overlaps the multicast range, which no client sends from.
    #[error("{net} overlaps the multicast range {multicast}: register unicast addresses")]
    Multicast {
        /// The block written (host bits cleared).
        net: IpNet,
        /// `224.0.0.0/4` or `ff00::/8`.
        multicast: IpNet,
    },
    /// The block is larger than the configured limit.
    #[error(
        "{net} is too large: {family} segments may be at most /{min_prefix_len} (prefix length \
         {min_prefix_len} or more), this one is /{prefix_len}"
    )]
    TooLarge {
        /// The block written (host bits cleared).
        net: IpNet,
        /// Its prefix length.
        prefix_len: u8,
        /// The family.
        family: IpFamily,
        /// The shortest prefix length configured for the family.
        min_prefix_len: u8,
    },
    /// Bits after the prefix are set (`203.0.113.7/24`).
    #[error("{text:?} has host bits set: did you mean {canonical}")]
    HostBitsSet {
        /// The text (its first 80 characters).
        text: String,
        /// The block with host bits cleared.
        canonical: IpNet,
    },
    /// A stored segment id that is a valid segment but not written canonically.
    #[error("{text:?} is not written in canonical form: write {canonical}")]
    NotCanonical {
        /// The text (its first 80 characters).
        text: String,
        /// The canonical form.
        canonical: IpNet,
    },
}

/// A registered venue segment: a canonical CIDR block (no host bits set), unicast, not
/// IPv4-mapped, and within the size limits in force when it was parsed. Serialised as its
/// canonical text (`"203.0.113.0/24"`, `"2001:db8:1::/48"`), which is also the segment
/// entity's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Segment {
    net: IpNet,
}

/// Parses a segment as written by a gateway admin or operator: surrounding whitespace is
/// trimmed, the rest must be `address/prefix-length`, canonical (no host bits), not
/// IPv4-mapped, unicast, free of the unspecified address and within `limits`.
pub fn parse_segment(text: &str, limits: &SegmentLimits) -> Result<Segment, SegmentError> {
    parse_exact(text.trim(), limits)
}

impl Segment {
    /// Parses a stored segment (an entity id, a stored registration): it must be written
    /// exactly in canonical form, without surrounding whitespace. Size limits are not applied:
    /// the segment passed those in force when it was registered.
    pub fn from_canonical_str(text: &str) -> Result<Self, SegmentError> {
        let segment = parse_exact(text, &SegmentLimits::UNLIMITED)?;
        if segment.to_string() != text {
            return Err(SegmentError::NotCanonical {
                text: quoted(text),
                canonical: segment.net,
            });
        }
        Ok(segment)
    }

    /// The block.
    pub fn net(&self) -> IpNet {
        self.net
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.net.network())
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.net.prefix_len()
    }

    /// The first address of the block.
    pub fn first_address(&self) -> IpAddr {
        self.net.network()
    }

    /// The last address of the block.
    pub fn last_address(&self) -> IpAddr {
        self.net.broadcast()
    }

    /// Whether a client address is in this segment (after [`canonical_address`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&canonical_address(ip))
    }

    /// Whether two segments share an address (one contains the other, or they are equal).
    pub fn overlaps(&self, other: &Segment) -> bool {
        self.net.contains(&other.net) || other.net.contains(&self.net)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.net, formatter)
    }
}

impl From<Segment> for String {
    fn from(segment: Segment) -> Self {
        segment.to_string()
    }
}

impl TryFrom<String> for Segment {
    type Error = SegmentError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::from_canonical_str(&text)
    }
}

/// At most the first [`MAX_QUOTED_CHARS`] characters of a refused input.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// Parses untrimmed `address/prefix-length` and applies every rule.
fn parse_exact(text: &str, limits: &SegmentLimits) -> Result<Segment, SegmentError> {
    let not_cidr = || SegmentError::NotCidr { text: quoted(text) };
    let (address_text, prefix_text) = text.split_once('/').ok_or_else(not_cidr)?;
    let address: IpAddr = address_text.parse().map_err(|_| not_cidr())?;
    let prefix_is_decimal = !prefix_text.is_empty()
        && prefix_text.len() <= MAX_PREFIX_LEN_DIGITS
        && prefix_text.bytes().all(|byte| byte.is_ascii_digit());
    if !prefix_is_decimal {
        return Err(not_cidr());
    }
    let prefix_len: u16 = prefix_text.parse().map_err(|_| not_cidr())?;
    let family = IpFamily::of(address);
    let out_of_range = || SegmentError::PrefixLenOutOfRange {
        text: quoted(text),
        prefix_len,
        family,
        max_prefix_len: family.address_bits(),
    };
    let prefix_len_u8 = u8::try_from(prefix_len).map_err(|_| out_of_range())?;
    let written = IpNet::new(address, prefix_len_u8).map_err(|_| out_of_range())?;
    let net = written.trunc();
    check_block(net, limits)?;
    if written != net {
        return Err(SegmentError::HostBitsSet {
            text: quoted(text),
            canonical: net,
        });
    }
    Ok(Segment { net })
}

/// The rules on the block itself (host bits already cleared).
fn check_block(net: IpNet, limits: &SegmentLimits) -> Result<(), SegmentError> {
    if let IpNet::V6(net_v6) = net
        && IPV6_MAPPED_IPV4.contains(&net_v6)
    {
        let ipv4_network = net_v6
            .network()
            .to_ipv4_mapped()
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ipv4_prefix_len = net_v6.prefix_len().saturating_sub(96);
        return Err(SegmentError::Ipv4Mapped {
            net,
            ipv4_form: Ipv4Net::new(ipv4_network, ipv4_prefix_len)
                .map(|ipv4_net| ipv4_net.trunc())
                .unwrap_or_default(),
        });
    }
    if net.network().is_unspecified() {
        let unspecified = match net {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        return Err(SegmentError::Unspecified { net, unspecified });
    }
    if let IpNet::V6(net_v6) = net
        && net_v6.contains(&IPV6_MAPPED_IPV4)
    {
        return Err(SegmentError::ContainsIpv4Mapped { net });
    }
    let multicast = match net {
        IpNet::V4(_) => IpNet::V4(IPV4_MULTICAST),
        IpNet::V6(_) => IpNet::V6(IPV6_MULTICAST),
    };
    if net.contains(&multicast) || multicast.contains(&net) {
        return Err(SegmentError::Multicast { net, multicast });
    }
    let family = IpFamily::of(net.network());
    let min_prefix_len = limits.min_prefix_len(family);
    if net.prefix_len() < min_prefix_len {
        return Err(SegmentError::TooLarge {
            net,
            prefix_len: net.prefix_len(),
            family,
            min_prefix_len,
        });
    }
    Ok(())
}

/// An insert refused because the segment overlaps registered ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentConflict<O> {
    /// The segment refused.
    pub segment: Segment,
    /// The owner it was for.
    pub owner: O,
    /// Every registered segment it overlaps, with its owner (possibly `owner` itself), in
    /// segment order.
    pub conflicts: Vec<(Segment, O)>,
}

impl<O: fmt::Display + PartialEq> fmt::Display for SegmentConflict<O> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "segment {} for {} overlaps ",
            self.segment, self.owner
        )?;
        for (position, (segment, owner)) in self.conflicts.iter().enumerate() {
            if position > 0 {
                formatter.write_str(", ")?;
            }
            if *owner == self.owner {
                write!(formatter, "{segment} already registered to {owner} itself")?;
            } else {
                write!(formatter, "{segment} registered to {owner}")?;
            }
        }
        formatter.write_str(
            ": a client address must belong to one segment, so remove or narrow the \
             overlapping segments first",
        )
    }
}

impl<O: fmt::Debug + fmt::Display + PartialEq> std::error::Error for SegmentConflict<O> {}

/// The segments of one address family, by prefix length, then by network bits.
#[derive(Debug, Clone)]
struct FamilyTable<O> {
    by_prefix_len: BTreeMap<u8, BTreeMap<u128, (Segment, O)>>,
}

impl<O> Default for FamilyTable<O> {
    fn default() -> Self {
        Self {
            by_prefix_len: BTreeMap::new(),
        }
    }
}

/// Maps a client address to the registered segment containing it, and refuses overlapping
/// registrations so that a client address belongs to at most one segment.
///
/// Structure and cost: per address family, a map from each prefix length in use to an ordered
/// map from network bits to the segment and its owner. With `n` segments and `L` distinct
/// prefix lengths in use (at most 33 for IPv4, 129 for IPv6; a handful in practice):
/// - [`lookup`](Self::lookup) probes the lengths longest first: `O(L log n)`;
/// - [`insert`](Self::insert) and [`conflicts`](Self::conflicts) find the segments containing
///   the new one (one probe per shorter length) and those inside it (one range scan per longer
///   length): `O(L log n + k)` for `k` conflicts;
/// - [`remove`](Self::remove) and [`get`](Self::get): `O(log n)`;
/// - [`segments_of`](Self::segments_of) and [`remove_owner`](Self::remove_owner) scan every
///   segment, `O(n)` (owners need only `Clone + PartialEq`; registrations change rarely).
#[derive(Debug, Clone)]
pub struct SegmentIndex<O> {
    ipv4: FamilyTable<O>,
    ipv6: FamilyTable<O>,
    n_segments: usize,
}

impl<O> Default for SegmentIndex<O> {
    fn default() -> Self {
        Self {
            ipv4: FamilyTable::default(),
            ipv6: FamilyTable::default(),
            n_segments: 0,
        }
    }
}

/// An address's family and bits (IPv4 in the low 32 bits).
fn address_key(ip: IpAddr) -> (IpFamily, u128) {
    match ip {
        IpAddr::V4(ipv4) => (IpFamily::Ipv4, u128::from(u32::from(ipv4))),
        IpAddr::V6(ipv6) => (IpFamily::Ipv6, u128::from(ipv6)),
    }
}

/// The low bits after a prefix of `prefix_len` in a `family` address, all set.
fn host_mask(family: IpFamily, prefix_len: u8) -> u128 {
    let n_host_bits = family.address_bits().saturating_sub(prefix_len);
    1u128
        .checked_shl(u32::from(n_host_bits))
        .map_or(u128::MAX, |bit| bit.wrapping_sub(1))
}

/// `bits` with the host bits after a prefix of `prefix_len` cleared.
fn network_bits(family: IpFamily, bits: u128, prefix_len: u8) -> u128 {
    bits & !host_mask(family, prefix_len)
}

impl<O: Clone + PartialEq> SegmentIndex<O> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, family: IpFamily) -> &FamilyTable<O> {
        match family {
            IpFamily::Ipv4 => &self.ipv4,
            IpFamily::Ipv6 => &self.ipv6,
        }
    }

    fn table_mut(&mut self, family: IpFamily) -> &mut FamilyTable<O> {
        match family {
            IpFamily::Ipv4 => &mut self.ipv4,
            IpFamily::Ipv6 => &mut self.ipv6,
        }
    }

    /// Registers `segment` for `owner`. Registering a segment the owner already holds is a
    /// no-op; a segment overlapping any registered one (another owner's, or another of this
    /// owner's) is refused with every overlapping segment named, and nothing changes.
    pub fn insert(&mut self, segment: Segment, owner: O) -> Result<(), SegmentConflict<O>> {
        let conflicts = self.conflicts(&segment);
        match conflicts.as_slice() {
            [] => {}
            [(existing, existing_owner)] if *existing == segment && *existing_owner == owner => {
                return Ok(());
            }
            _ => {
                return Err(SegmentConflict {
                    segment,
                    owner,
                    conflicts,
                });
            }
        }
        let (family, bits) = address_key(segment.first_address());
        self.table_mut(family)
            .by_prefix_len
            .entry(segment.prefix_len())
            .or_default()
            .insert(bits, (segment, owner));
        self.n_segments = self.n_segments.saturating_add(1);
        Ok(())
    }

    /// Every registered segment overlapping `segment` (containing it, inside it, or equal),
    /// with its owner, in segment order: what [`insert`](Self::insert) refuses on, unless
    /// the only one is `segment` itself held by the same owner.
    pub fn conflicts(&self, segment: &Segment) -> Vec<(Segment, O)> {
        let (family, bits) = address_key(segment.first_address());
        let prefix_len = segment.prefix_len();
        let table = self.table(family);
        let mut conflicts: Vec<(Segment, O)> = table
            .by_prefix_len
            .range(..=prefix_len)
            .filter_map(|(len, by_bits)| by_bits.get(&network_bits(family, bits, *len)))
            .cloned()
            .collect();
        let last_bits = bits | host_mask(family, prefix_len);
        for by_bits in table
            .by_prefix_len
            .range((Bound::Excluded(prefix_len), Bound::Unbounded))
            .map(|(_, by_bits)| by_bits)
        {
            conflicts.extend(
                by_bits
                    .range(bits..=last_bits)
                    .map(|(_, entry)| entry.clone()),
            );
        }
        conflicts.sort_by_key(|(segment, _)| *segment);
        conflicts
    }

    /// Unregisters a segment; returns its owner, or `None` if it was not registered.
    pub fn remove(&mut self, segment: &Segment) -> Option<O> {
        let (family, bits) = address_key(segment.first_address());
        let prefix_len = segment.prefix_len();
        let table = self.table_mut(family);
        let by_bits = table.by_prefix_len.get_mut(&prefix_len)?;
        let (_, owner) = by_bits.remove(&bits)?;
        if by_bits.is_empty() {
            // Keep lookups probing only the lengths in use.
            table.by_prefix_len.remove(&prefix_len);
        }
        self.n_segments = self.n_segments.saturating_sub(1);
        Some(owner)
    }

    /// Unregisters every segment of `owner`; returns them in segment order.
    pub fn remove_owner(&mut self, owner: &O) -> Vec<Segment> {
        let segments = self.segments_of(owner);
        for segment in &segments {
            self.remove(segment);
        }
        segments
    }

    /// The segments of `owner`, in segment order.
    pub fn segments_of(&self, owner: &O) -> Vec<Segment> {
        self.iter()
            .filter(|(_, segment_owner)| *segment_owner == owner)
            .map(|(segment, _)| *segment)
            .collect()
    }

    /// The owner of exactly this segment, if registered.
    pub fn get(&self, segment: &Segment) -> Option<&O> {
        let (family, bits) = address_key(segment.first_address());
        self.table(family)
            .by_prefix_len
            .get(&segment.prefix_len())?
            .get(&bits)
            .map(|(_, owner)| owner)
    }

    /// The registered segment containing a client address (after [`canonical_address`]), and
    /// its owner; the longest match if several did (registration refuses overlaps, so at most
    /// one does).
    pub fn lookup(&self, ip: IpAddr) -> Option<(&Segment, &O)> {
        let (family, bits) = address_key(canonical_address(ip));
        self.table(family)
            .by_prefix_len
            .iter()
            .rev()
            .find_map(|(prefix_len, by_bits)| by_bits.get(&network_bits(family, bits, *prefix_len)))
            .map(|(segment, owner)| (segment, owner))
    }

    /// Every registered segment and its owner, in segment order.
    pub fn iter(&self) -> impl Iterator<Item = (&Segment, &O)> {
        let mut entries: Vec<(&Segment, &O)> = [&self.ipv4, &self.ipv6]
            .into_iter()
            .flat_map(|table| table.by_prefix_len.values())
            .flat_map(BTreeMap::values)
            .map(|(segment, owner)| (segment, owner))
            .collect();
        entries.sort_by_key(|(segment, _)| **segment);
        entries.into_iter()
    }

    /// How many segments are registered.
    pub fn len(&self) -> usize {
        self.n_segments
    }

    /// Whether no segment is registered.
    pub fn is_empty(&self) -> bool {
        self.n_segments == 0
    }
}

#[cfg(test)]
mod tests;
