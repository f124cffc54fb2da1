//! The kinds of entity lanmesh hosts, and how each kind's ids become bus addresses.

use lanmesh_bus::EntityAddress;
use lanmesh_bus::address::NameError;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// The id of the one partner-registry entity. Partner sites are few and change rarely, so one
/// entity holds them all and answers every lookup.
pub const PARTNER_REGISTRY_ID: &str = "registry";

/// The id of the one certification-policy entity.
pub const CERTIFICATION_POLICY_ID: &str = "policy";

/// The id of the one segment-directory entity.
pub const SEGMENT_DIRECTORY_ID: &str = "directory";

/// The id of the one campaign-directory entity.
pub const CAMPAIGN_DIRECTORY_ID: &str = "campaigns";

/// One kind of entity; each entity is one actor, addressed by (kind, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// An account: profile, credentials, contacts, aggregated presence, unread hints.
    User,
    /// One client session, living on the node that holds its WebSocket.
    Session,
    /// A venue gateway: registration, uptime, certification, quotas received.
    Gateway,
    /// A registered LAN segment (canonical CIDR): client presence from its addresses.
    Segment,
    /// A campaign: definition, eligibility, notification, statistics, rewards.
    Campaign,
    /// The quota ledger of one (campaign, gateway): the only writer of its balances.
    Ledger,
    /// The claim book of one (campaign, account): at most one claim per account and campaign
    /// across every venue.
    ClaimBook,
    /// The directory of every campaign and its notice (one entity, [`CAMPAIGN_DIRECTORY_ID`]):
    /// feeds every node's notice fan-out and the notices delivered at login.
    CampaignDirectory,
    /// One mobile data-traffic share.
    Share,
    /// The open share offers listed in one geohash cell (the cell is the id): discovery asks
    /// the cells around a requester.
    OfferCell,
    /// The registry of partner sites whose users may log in (one entity, [`PARTNER_REGISTRY_ID`]).
    Partner,
    /// The certification policy in force (one entity, [`CERTIFICATION_POLICY_ID`]).
    CertificationPolicy,
    /// The directory of every registered venue segment and its gateway (one entity,
    /// [`SEGMENT_DIRECTORY_ID`]): refuses overlaps, feeds every node's segment index.
    SegmentDirectory,
    /// A diagnostic entity that records what it receives: cluster checks and load tests use it
    /// to prove exactly-once, in-order delivery across nodes.
    Probe,
}

impl EntityKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 14] = [
        Self::User,
        Self::Session,
        Self::Gateway,
        Self::Segment,
        Self::Campaign,
        Self::Ledger,
        Self::ClaimBook,
        Self::CampaignDirectory,
        Self::Share,
        Self::OfferCell,
        Self::Partner,
        Self::SegmentDirectory,
        Self::CertificationPolicy,
        Self::Probe,
    ];

    /// The kind's name on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Session => "session",
            Self::Gateway => "gateway",
            Self::Segment => "segment",
            Self::Campaign => "campaign",
            Self::Ledger => "ledger",
            Self::ClaimBook => "claim_book",
            Self::CampaignDirectory => "campaign_directory",
            Self::Share => "share",
            Self::OfferCell => "offer_cell",
            Self::Partner => "partner",
            Self::SegmentDirectory => "segment_directory",
            Self::CertificationPolicy => "certification_policy",
            Self::Probe => "probe",
        }
    }

    /// The bus address of entity `id` of this kind.
    pub fn address(self, id: impl Into<String>) -> Result<EntityAddress, NameError> {
        EntityAddress::new(self.as_str(), id)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A kind name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown entity kind {0:?}")]
pub struct UnknownEntityKind(pub String);

impl FromStr for EntityKind {
    type Err = UnknownEntityKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownEntityKind(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_valid_bus_kinds() {
        for kind in EntityKind::ALL {
            assert_eq!(kind.as_str().parse::<EntityKind>(), Ok(kind));
            assert!(lanmesh_bus::address::validate_kind(kind.as_str()).is_ok());
        }
        assert_eq!(
            "users".parse::<EntityKind>(),
            Err(UnknownEntityKind("users".to_owned()))
        );
    }

    #[test]
    fn addresses_carry_kind_and_id() {
        let address = EntityKind::Segment.address("10.0.0.0/24").unwrap();
        assert_eq!(address.to_string(), "segment/10.0.0.0/24");
        assert!(EntityKind::User.address("").is_err());
    }
}
