//! The campaign-directory entity (one, [`CAMPAIGN_DIRECTORY_ID`]): campaign entities send it
//! their listings, and nodes list it to push notices to gateways and clients (S0 step 7) and to
//! deliver them at login.
//!
//! [`CAMPAIGN_DIRECTORY_ID`]: crate::model::entity_kind::CAMPAIGN_DIRECTORY_ID

use crate::entities::{decode_request, encode};
use crate::host::behavior::{Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::campaign_directory::{CampaignDirectoryState, CampaignListing};
use crate::model::entity_kind::EntityKind;
use serde::{Deserialize, Serialize};

/// A request to the campaign directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignDirectoryRequest {
    /// A campaign's current listing (from its campaign entity; a stale one is ignored).
    Upsert(CampaignListing),
    /// Every listing.
    List,
}

/// The directory's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignDirectoryReply {
    /// The listing is recorded, or a newer one was already.
    Done,
    /// Every listing.
    Listing {
        /// The directory's revision, bumped by every change.
        revision: u64,
        /// The listings, by campaign id.
        campaigns: Vec<CampaignListing>,
    },
}

/// The campaign-directory behaviour.
#[derive(Debug)]
pub struct CampaignDirectoryEntity;

impl EntityBehavior for CampaignDirectoryEntity {
    const KIND: EntityKind = EntityKind::CampaignDirectory;
    type State = CampaignDirectoryState;

    fn handle(
        state: &mut CampaignDirectoryState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: CampaignDirectoryRequest = decode_request(message)?;
        let mut effects = Effects::default();
        let reply = match request {
            CampaignDirectoryRequest::Upsert(listing) => {
                effects.state_changed = state.upsert(listing);
                CampaignDirectoryReply::Done
            }
            CampaignDirectoryRequest::List => CampaignDirectoryReply::Listing {
                revision: state.revision(),
                campaigns: state.listings().cloned().collect(),
            },
        };
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::test_support::handle_request;

    use crate::model::campaign::{CampaignKind, CampaignStatus};
    use crate::model::entity_kind::CAMPAIGN_DIRECTORY_ID;
    use std::collections::BTreeSet;

    fn handle(
        state: &mut CampaignDirectoryState,
        request: &CampaignDirectoryRequest,
    ) -> (CampaignDirectoryReply, Effects) {
        handle_request::<CampaignDirectoryEntity, _, _>(
            state,
            CAMPAIGN_DIRECTORY_ID,
            request,
            1_000,
        )
    }

    fn listing(status: CampaignStatus, campaign_revision: u64) -> CampaignListing {
        CampaignListing {
            campaign_id: "spring".to_owned(),
            kind: CampaignKind::Activity,
            title: "Spring".to_owned(),
            text: "text".to_owned(),
            status,
            min_tier_opt: Some("silver".to_owned()),
            enrol_opens_at_ms: 10,
            enrol_closes_at_ms: 20,
            notice_gateways: BTreeSet::from(["g1".to_owned()]),
            published_at_unix_ms_opt: None,
            campaign_revision,
        }
    }

    #[test]
    fn upserts_keep_the_newest_listing_and_stale_ones_change_nothing() {
        let mut state = CampaignDirectoryState::default();
        let published = listing(CampaignStatus::Published, 2);
        let (reply, effects) = handle(
            &mut state,
            &CampaignDirectoryRequest::Upsert(published.clone()),
        );
        assert_eq!(reply, CampaignDirectoryReply::Done);
        assert!(effects.state_changed);

        // The draft's listing arrives late.
        let (reply, effects) = handle(
            &mut state,
            &CampaignDirectoryRequest::Upsert(listing(CampaignStatus::Draft, 1)),
        );
        assert_eq!(reply, CampaignDirectoryReply::Done);
        assert!(!effects.state_changed);

        let (reply, effects) = handle(&mut state, &CampaignDirectoryRequest::List);
        assert_eq!(
            reply,
            CampaignDirectoryReply::Listing {
                revision: 1,
                campaigns: vec![published],
            }
        );
        assert!(!effects.state_changed);
        assert!(effects.outgoing.is_empty() && effects.audit.is_empty());
    }
}
