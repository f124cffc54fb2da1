//! The directory of every campaign and its notice (S0 step 7) as a pure state machine: each
//! campaign entity sends it its listing after every change it announces, and nodes read it to
//! push notices to gateways and clients and to deliver them at login. Listings may arrive late
//! or twice; the campaign's own revision decides which one is current.

use crate::model::campaign::{CampaignKind, CampaignStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the directory knows of one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignListing {
    /// The campaign.
    pub campaign_id: String,
    /// What it distributes.
    pub kind: CampaignKind,
    /// Its title.
    pub title: String,
    /// Its description.
    pub text: String,
    /// Draft, published or closed.
    pub status: CampaignStatus,
    /// The lowest certification tier that may enrol, if any.
    pub min_tier_opt: Option<String>,
    /// When enrolment opens, in Unix milliseconds (inclusive).
    pub enrol_opens_at_ms: u64,
    /// When enrolment closes, in Unix milliseconds (exclusive).
    pub enrol_closes_at_ms: u64,
    /// The venues the notice goes to.
    pub notice_gateways: BTreeSet<String>,
    /// When it was published, if it was.
    pub published_at_unix_ms_opt: Option<u64>,
    /// The campaign's revision when the listing was made: the higher one is current.
    pub campaign_revision: u64,
}

/// Every campaign's current listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDirectoryState {
    revision: u64,
    campaigns: BTreeMap<String, CampaignListing>,
}

impl CampaignDirectoryState {
    /// Keeps `listing` unless the directory holds one of the same campaign with the same or a
    /// higher campaign revision (a late or repeated one). Returns whether anything changed;
    /// every change bumps the directory's revision.
    pub fn upsert(&mut self, listing: CampaignListing) -> bool {
        if let Some(held) = self.campaigns.get(&listing.campaign_id)
            && held.campaign_revision >= listing.campaign_revision
        {
            return false;
        }
        self.campaigns.insert(listing.campaign_id.clone(), listing);
        self.revision = self.revision.saturating_add(1);
        true
    }

    /// Bumped by every change (0 when empty).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Every listing, by campaign id.
    pub fn listings(&self) -> impl Iterator<Item = &CampaignListing> + '_ {
        self.campaigns.values()
    }

    /// One campaign's listing.
    pub fn listing(&self, campaign_id: &str) -> Option<&CampaignListing> {
        self.campaigns.get(campaign_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(campaign_id: &str, campaign_revision: u64, title: &str) -> CampaignListing {
        CampaignListing {
            campaign_id: campaign_id.to_owned(),
            kind: CampaignKind::Promotion,
            title: title.to_owned(),
            text: "text".to_owned(),
            status: CampaignStatus::Published,
            min_tier_opt: None,
            enrol_opens_at_ms: 10,
            enrol_closes_at_ms: 20,
            notice_gateways: BTreeSet::from(["g1".to_owned()]),
            published_at_unix_ms_opt: Some(5),
            campaign_revision,
        }
    }

    fn titles(directory: &CampaignDirectoryState) -> Vec<(String, u64, String)> {
        directory
            .listings()
            .map(|held| {
                (
                    held.campaign_id.clone(),
                    held.campaign_revision,
                    held.title.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn newer_listings_replace_and_stale_or_equal_ones_change_nothing() {
        let mut directory = CampaignDirectoryState::default();
        assert_eq!(directory.revision(), 0);
        assert!(directory.upsert(listing("spring", 2, "second")));
        assert_eq!(directory.revision(), 1);
        assert!(!directory.upsert(listing("spring", 1, "first")), "stale");
        assert!(!directory.upsert(listing("spring", 2, "again")), "equal");
        assert_eq!(directory.revision(), 1, "no change, no bump");
        assert_eq!(
            titles(&directory),
            vec![("spring".to_owned(), 2, "second".to_owned())]
        );

        assert!(directory.upsert(listing("autumn", 1, "other")));
        assert!(directory.upsert(listing("spring", 3, "third")));
        assert_eq!(directory.revision(), 3);
        assert_eq!(
            titles(&directory),
            vec![
                ("autumn".to_owned(), 1, "other".to_owned()),
                ("spring".to_owned(), 3, "third".to_owned())
            ]
        );
        assert_eq!(
            directory
                .listing("spring")
                .map(|held| held.campaign_revision),
            Some(3)
        );
        assert!(directory.listing("winter").is_none());
    }

    #[test]
    fn the_directory_round_trips_through_message_pack() {
        let mut directory = CampaignDirectoryState::default();
        directory.upsert(listing("spring", 4, "title"));
        let bytes = rmp_serde::to_vec_named(&directory).unwrap();
        let restored: CampaignDirectoryState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(restored, directory);
    }
}
