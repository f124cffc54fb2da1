//! The client's address as the edge sees it: the socket peer, or, when the peer is a configured
//! trusted proxy (`edge.trusted_proxies`), the address that proxy forwarded in
//! `X-Forwarded-For`. Pure: the caller passes the peer and the header values.
//!
//! Only `X-Forwarded-For` is read. RFC 7239 `Forwarded: for=…` is not: the proxies in front
//! of venue gateways and clients set `X-Forwarded-For`, and reading two headers would let a
//! client pick whichever one its proxy does not overwrite. A proxy that only sends
//! `Forwarded` must be configured to send `X-Forwarded-For` too.
//!
//! Forwarded headers from a peer that is not a trusted proxy are ignored, so a client cannot
//! spoof its address (and so its venue) by sending one.

use ipnet::IpNet;
use lanmesh_actors::model::segment::{
    Segment, SegmentError, SegmentLimits, canonical_address, parse_segment,
};
use std::net::{IpAddr, SocketAddr};

/// Most characters of a refused header entry quoted back in an error.
const MAX_QUOTED_CHARS: usize = 64;

/// The proxies whose `X-Forwarded-For` is believed: a short list of addresses and CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Segment>,
}

/// Why a trusted-proxy entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxiesError {
    /// An entry is neither an address nor an acceptable CIDR block.
    #[error(
        "trusted proxy entry {position} is unusable: {source} (entries are addresses such as \
         10.0.0.5 or blocks such as 10.0.0.0/24)"
    )]
    BadEntry {
        /// Its position in the list, from 1.
        position: usize,
        /// What is wrong with it.
        source: SegmentError,
    },
    /// An entry contains the unspecified address, as `0.0.0.0/0` and `::/0` do.
    #[error(
        "trusted proxy entry {position} ({net}) contains the unspecified address, so it would \
         trust every peer and let any client choose its address: list the proxies' own \
         addresses or blocks"
    )]
    TrustsEveryone {
        /// Its position in the list, from 1.
        position: usize,
        /// The block written.
        net: IpNet,
    },
}

/// Why the client's address cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAddressError {
    /// An `X-Forwarded-For` entry that had to be read is not an address.
    #[error(
        "x-forwarded-for entry {entry:?} is not an IP address: expected comma-separated \
         addresses such as 203.0.113.7 or 2001:db8::7"
    )]
    MalformedForwardedFor {
        /// The entry (its first 64 characters).
        entry: String,
    },
}

impl TrustedProxies {
    /// No trusted proxy: the client's address is always the socket peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses the configured list. Each entry is an address (`10.0.0.5`, `::1`: that one
    /// host) or a CIDR block (`10.0.0.0/24`), surrounding whitespace trimmed, checked by the
    /// segment rules without a size limit: canonical (no host bits), not IPv4-mapped (write
    /// the IPv4 form), not multicast, and not containing the unspecified address, so
    /// `0.0.0.0/0` and `::/0` ("trust everyone", which would let any peer choose its address)
    /// are refused. Blocks may overlap.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, TrustedProxiesError> {
        let unlimited = SegmentLimits::UNLIMITED;
        let mut blocks = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            let parsed = match entry.parse::<IpAddr>() {
                Ok(host) => parse_segment(&IpNet::from(host).to_string(), &unlimited),
                Err(_) => parse_segment(entry, &unlimited),
            };
            let position = index.saturating_add(1);
            let block = parsed.map_err(|source| match source {
                SegmentError::Unspecified { net, .. } => {
                    TrustedProxiesError::TrustsEveryone { position, net }
                }
                source => TrustedProxiesError::BadEntry { position, source },
            })?;
            blocks.push(block);
        }
        Ok(Self { blocks })
    }

    /// Whether an address (after [`canonical_address`]) is a trusted proxy. A linear scan:
    /// the list is a handful of entries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// The client's address, in canonical form (an IPv4-mapped address becomes IPv4).
///
/// If `peer` is not a trusted proxy, it is the answer and `forwarded_for_values` (every
/// `X-Forwarded-For` header value, in order) is ignored. Otherwise the entries of all values,
/// joined and split at commas, are walked from the right, skipping trusted proxies; the first
/// untrusted address is the client. If every entry is trusted, the leftmost is the answer; with
/// no entries, the peer. Empty entries are skipped. Only the entries walked are parsed: those
/// left of the client were written by the client and are not evidence of anything, so garbage
/// there is ignored, but a malformed entry that had to be read is an error (the caller refuses
/// the connection). Entries may be `203.0.113.7`, `2001:db8::7`, `[2001:db8::7]`, or carry a
/// port (`203.0.113.7:5000`, `[2001:db8::7]:5000`).
pub fn client_address(
    peer: IpAddr,
    forwarded_for_values: &[&str],
    trusted: &TrustedProxies,
) -> Result<IpAddr, ClientAddressError> {
    let peer = canonical_address(peer);
    if !trusted.contains(peer) {
        return Ok(peer);
    }
    let entries: Vec<&str> = forwarded_for_values
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let mut leftmost = peer;
    for entry in entries.into_iter().rev() {
        let hop = parse_entry(entry)?;
        if !trusted.contains(hop) {
            return Ok(hop);
        }
        leftmost = hop;
    }
    Ok(leftmost)
}

/// One `X-Forwarded-For` entry as a canonical address.
fn parse_entry(entry: &str) -> Result<IpAddr, ClientAddressError> {
    let bracketed_opt = entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    let parsed_opt = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| {
            bracketed_opt.and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
        })
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()));
    parsed_opt
        .map(canonical_address)
        .ok_or_else(|| ClientAddressError::MalformedForwardedFor {
            entry: quoted(entry),
        })
}

/// At most the first [`MAX_QUOTED_CHARS`] characters of a refused entry.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Proxies at 10.0.0.0/24, 192.0.2.10 and fd00::/64.
    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/24", " 192.0.2.10 ", "fd00::/64"]).unwrap()
    }

    /// The client address for `peer` and header values: `Ok(address)` or `Err(message)`.
    fn check(peer: &str, forwarded_for_values: &[&str], expected: Result<&str, &str>) {
        let actual = client_address(ip(peer), forwarded_for_values, &proxies())
            .map_err(|error| error.to_string());
        assert_eq!(
            actual,
            expected.map(ip).map_err(str::to_owned),
            "peer {peer}, x-forwarded-for {forwarded_for_values:?}"
        );
    }

    fn malformed(entry: &str) -> String {
        format!(
            "x-forwarded-for entry {entry:?} is not an IP address: expected comma-separated \
             addresses such as 203.0.113.7 or 2001:db8::7"
        )
    }

    #[test]
    fn untrusted_peers_cannot_spoof_their_address() {
        check("203.0.113.7", &[], Ok("203.0.113.7"));
        check("203.0.113.7", &["198.51.100.9"], Ok("203.0.113.7"));
        check(
            "203.0.113.7",
            &["198.51.100.9, 10.0.0.1"],
            Ok("203.0.113.7"),
        );
        check("203.0.113.7", &["not an address"], Ok("203.0.113.7"));
        check("2001:db8::7", &["198.51.100.9"], Ok("2001:db8::7"));
        check("::ffff:203.0.113.7", &["198.51.100.9"], Ok("203.0.113.7"));
        // Next to a trusted block, but outside it.
        check("10.0.1.1", &["198.51.100.9"], Ok("10.0.1.1"));
        check("192.0.2.11", &["198.51.100.9"], Ok("192.0.2.11"));
    }

    #[test]
    fn trusted_peers_forward_the_client() {
        // Empty or missing header: the peer.
        check("10.0.0.1", &[], Ok("10.0.0.1"));
        check("10.0.0.1", &[""], Ok("10.0.0.1"));
        check("10.0.0.1", &[" , "], Ok("10.0.0.1"));
        // One hop.
        check("10.0.0.1", &["198.51.100.9"], Ok("198.51.100.9"));
        check("192.0.2.10", &[" 198.51.100.9 "], Ok("198.51.100.9"));
        // The client's own entries left of the first untrusted hop are not believed.
        check("10.0.0.1", &["1.2.3.4, 198.51.100.9"], Ok("198.51.100.9"));
        check("10.0.0.1", &["garbage, 198.51.100.9"], Ok("198.51.100.9"));
        // Several trusted proxies.
        check(
            "10.0.0.1",
            &["1.2.3.4, 198.51.100.9, 192.0.2.10, 10.0.0.7"],
            Ok("198.51.100.9"),
        );
        // Several header values are one list.
        check(
            "10.0.0.1",
            &["1.2.3.4, 198.51.100.9", "192.0.2.10", "10.0.0.7"],
            Ok("198.51.100.9"),
        );
        check("10.0.0.1", &["198.51.100.9", ""], Ok("198.51.100.9"));
        // Every hop trusted: the leftmost.
        check("10.0.0.1", &["10.0.0.9, 192.0.2.10"], Ok("10.0.0.9"));
        check("10.0.0.1", &["10.0.0.9", "10.0.0.8"], Ok("10.0.0.9"));
    }

    #[test]
    fn ipv6_mapped_and_ported_entries() {
        check("fd00::1", &["2001:db8::7"], Ok("2001:db8::7"));
        check("fd00::1", &["[2001:db8::7]"], Ok("2001:db8::7"));
        check("fd00::1", &["[2001:db8::7]:5000"], Ok("2001:db8::7"));
        check("fd00::1", &["203.0.113.7:5000"], Ok("203.0.113.7"));
        check("fd00::1", &["::ffff:203.0.113.7"], Ok("203.0.113.7"));
        check("fd00::1", &["2001:db8::7, fd00::2"], Ok("2001:db8::7"));
        // A mapped peer is the IPv4 proxy.
        check("::ffff:10.0.0.1", &["198.51.100.9"], Ok("198.51.100.9"));
        // A mapped trusted hop is skipped like its IPv4 form.
        check(
            "10.0.0.1",
            &["198.51.100.9, ::ffff:10.0.0.2"],
            Ok("198.51.100.9"),
        );
        check("10.0.0.1", &["::ffff:10.0.0.2"], Ok("10.0.0.2"));
    }

    #[test]
    fn malformed_entries_that_must_be_read_are_errors() {
        check("10.0.0.1", &["unknown"], Err(&malformed("unknown")));
        check("10.0.0.1", &["198.51.100.9, nope"], Err(&malformed("nope")));
        check(
            "10.0.0.1",
            &["198.51.100.9, 10.0.0.300"],
            Err(&malformed("10.0.0.300")),
        );
        check(
            "10.0.0.1",
            &["192.0.2.10", "_hidden"],
            Err(&malformed("_hidden")),
        );
        check(
            "10.0.0.1",
            &["fe80::1%eth0"],
            Err(&malformed("fe80::1%eth0")),
        );
        check(
            "10.0.0.1",
            &["[203.0.113.7]"],
            Err(&malformed("[203.0.113.7]")),
        );
        check(
            "10.0.0.1",
            &["198.51.100.9 10.0.0.2"],
            Err(&malformed("198.51.100.9 10.0.0.2")),
        );
        let long = "y".repeat(100);
        check(
            "10.0.0.1",
            &[long.as_str()],
            Err(&malformed(&format!("{}…", "y".repeat(64)))),
        );
    }

    #[test]
    fn trusted_proxy_lists_parse_or_say_what_is_wrong() {
        let check_list = |entries: &[&str], expected: Result<(), &str>| {
            let actual = TrustedProxies::parse(entries)
                .map(|_| ())
                .map_err(|error| error.to_string());
            assert_eq!(actual, expected.map_err(str::to_owned), "{entries:?}");
        };
        check_list(&[], Ok(()));
        check_list(&["10.0.0.0/8", "10.1.0.0/16", "127.0.0.1", "::1"], Ok(()));
        check_list(
            &["10.0.0.0/8", "10.0.0.5/24"],
            Err(
                "trusted proxy entry 2 is unusable: \"10.0.0.5/24\" has host bits set: did you \
                 mean 10.0.0.0/24 (entries are addresses such as 10.0.0.5 or blocks such as \
                 10.0.0.0/24)",
            ),
        );
        check_list(
            &["proxy.internal"],
            Err(
                "trusted proxy entry 1 is unusable: \"proxy.internal\" is not a CIDR segment: \
                 expected an address, a slash and a prefix length, such as 203.0.113.0/24 or \
                 2001:db8:1::/48 (entries are addresses such as 10.0.0.5 or blocks such as \
                 10.0.0.0/24)",
            ),
        );
        check_list(
            &["10.0.0.1", "0.0.0.0/0"],
            Err(
                "trusted proxy entry 2 (0.0.0.0/0) contains the unspecified address, so it would \
                 trust every peer and let any client choose its address: list the proxies' own \
                 addresses or blocks",
            ),
        );
        assert_eq!(
            TrustedProxies::parse(&["::/0"]),
            Err(TrustedProxiesError::TrustsEveryone {
                position: 1,
                net: "::/0".parse().unwrap(),
            })
        );
        assert!(matches!(
            TrustedProxies::parse(&["::ffff:10.0.0.5"]),
            Err(TrustedProxiesError::BadEntry {
                position: 1,
                source: SegmentError::Ipv4Mapped { .. }
            })
        ));
        let list = TrustedProxies::parse(&["10.0.0.0/24", "2001:db8::1"]).unwrap();
        assert!(list.contains(ip("10.0.0.255")));
        assert!(list.contains(ip("::ffff:10.0.0.1")));
        assert!(!list.contains(ip("10.0.1.0")));
        assert!(list.contains(ip("2001:db8::1")));
        assert!(!list.contains(ip("2001:db8::2")));
        assert!(TrustedProxies::none().is_empty());
        assert!(!list.is_empty());
    }
}
