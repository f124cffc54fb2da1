//! Campaign notices (S0 step 7): the node's copy of the campaign directory, and the push of a
//! newly published campaign's notice to the connections this node holds — the gateways the
//! notice names and the clients whose address lies inside one of those venues' segments.
//!
//! Like the segment index, the copy is refreshed by polling the directory (see
//! [`crate::edge::venues`] for why a poll rather than a broadcast), so every node sees a
//! publication within one interval and pushes to its own connections: the fan-out is spread
//! over the cluster and never waits for a slow client (a frame that does not fit a
//! connection's queue is dropped and counted; the client sees the notice at its next login or
//! in `campaign.list`). A node's first copy pushes nothing: its connections are new and got
//! the notices at their login. Every login is sent the notices in force for its venue.

use crate::edge::Edge;
use crate::edge::campaign_wire::WireCampaignNotice;
use crate::edge::sessions::{ConnectionLink, encode_push};
use lanmesh_actors::entities::campaign_directory::{
    CampaignDirectoryReply, CampaignDirectoryRequest,
};
use lanmesh_actors::model::campaign::CampaignStatus;
use lanmesh_actors::model::campaign_directory::CampaignListing;
use lanmesh_actors::model::entity_kind::{CAMPAIGN_DIRECTORY_ID, EntityKind};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;

/// Who is on the other end of one connection, for notices.
#[derive(Debug, Clone)]
enum Audience {
    /// A logged-in gateway.
    Gateway {
        /// The gateway.
        gateway_id: String,
    },
    /// A logged-in client, from this address.
    Client {
        /// Its address (none on a socket without a peer address).
        address_opt: Option<IpAddr>,
    },
}

#[derive(Default)]
struct NoticeState {
    /// The directory revision copied, `None` before the first copy.
    revision_opt: Option<u64>,
    listings: BTreeMap<String, CampaignListing>,
    /// The audience of each connection, with where its frames go.
    audience: HashMap<u64, (ConnectionLink, Audience)>,
}

/// The node's copy of the campaign directory and the connections that may receive notices.
#[derive(Default)]
pub struct CampaignNotices {
    state: Mutex<NoticeState>,
}

impl CampaignNotices {
    fn state(&self) -> MutexGuard<'_, NoticeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The published campaigns whose notice names `gateway_id`.
    pub fn published_for(&self, gateway_id: &str) -> Vec<CampaignListing> {
        self.state()
            .listings
            .values()
            .filter(|listing| {
                listing.status == CampaignStatus::Published
                    && listing.notice_gateways.contains(gateway_id)
            })
            .cloned()
            .collect()
    }

    /// A campaign as last copied.
    pub fn listing(&self, campaign_id: &str) -> Option<CampaignListing> {
        self.state().listings.get(campaign_id).cloned()
    }

    fn join(&self, link: ConnectionLink, audience: Audience) {
        self.state()
            .audience
            .insert(link.connection_id, (link, audience));
    }

    /// Forgets a closed connection.
    pub fn leave(&self, connection_id: u64) {
        self.state().audience.remove(&connection_id);
    }

    /// Replaces the copy; returns the campaigns published since the previous copy (none for
    /// the first copy).
    fn replace(&self, revision: u64, listings: Vec<CampaignListing>) -> Vec<CampaignListing> {
        let mut state = self.state();
        let first_copy = state.revision_opt.is_none();
        let newly_published: Vec<CampaignListing> = listings
            .iter()
            .filter(|listing| {
                listing.status == CampaignStatus::Published
                    && state
                        .listings
                        .get(&listing.campaign_id)
                        .is_none_or(|known| known.status != CampaignStatus::Published)
            })
            .cloned()
            .collect();
        state.revision_opt = Some(revision);
        state.listings = listings
            .into_iter()
            .map(|listing| (listing.campaign_id.clone(), listing))
            .collect();
        if first_copy {
            Vec::new()
        } else {
            newly_published
        }
    }
}

/// Queues `frame` for one connection without waiting; returns whether it was queued.
fn offer(link: &ConnectionLink, frame: &[u8]) -> bool {
    match link.frames.try_send(frame.to_vec()) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Closed(_)) => false,
    }
}

impl Edge {
    /// Brings this node's copy of the campaign directory up to date and pushes the notices
    /// of campaigns published since the last copy.
    pub async fn refresh_campaigns(&self) {
        let reply = self
            .ask_entity(
                EntityKind::CampaignDirectory,
                CAMPAIGN_DIRECTORY_ID,
                &CampaignDirectoryRequest::List,
                None,
            )
            .await;
        match reply {
            Ok(CampaignDirectoryReply::Listing {
                revision,
                campaigns,
            }) => {
                for listing in self.campaigns.replace(revision, campaigns) {
                    self.push_notice(&listing);
                }
            }
            Ok(other) => {
                tracing::error!(reply = ?other, "unexpected answer from the campaign directory");
            }
            Err(error) => {
                tracing::debug!(error = %error.message, "campaign directory not reachable; copy kept");
            }
        }
    }

    /// Whether a client at `address_opt` is inside one of the venues `listing` notices.
    fn client_is_noticed(&self, address_opt: Option<IpAddr>, listing: &CampaignListing) -> bool {
        address_opt
            .and_then(|address| self.venues.venue_of(address))
            .is_some_and(|(_, gateway_id)| listing.notice_gateways.contains(&gateway_id))
    }

    /// Pushes one campaign's notice to every connection of this node it is for.
    fn push_notice(&self, listing: &CampaignListing) {
        let notice = WireCampaignNotice::of(listing);
        let (Some(gateway_frame), Some(client_frame)) = (
            encode_push("gateway.campaign_notice", &notice),
            encode_push("campaign.notice", &notice),
        ) else {
            return;
        };
        let audience: Vec<(ConnectionLink, Audience)> =
            self.campaigns.state().audience.values().cloned().collect();
        let metrics = &self.deps.metrics;
        for (link, member) in audience {
            let frame = match &member {
                Audience::Gateway { gateway_id }
                    if listing.notice_gateways.contains(gateway_id) =>
                {
                    &gateway_frame
                }
                Audience::Client { address_opt }
                    if self.client_is_noticed(*address_opt, listing) =>
                {
                    &client_frame
                }
                Audience::Gateway { .. } | Audience::Client { .. } => continue,
            };
            if offer(&link, frame) {
                metrics.campaign_notices_pushed.inc();
            } else {
                metrics.campaign_notices_dropped.inc();
            }
        }
        tracing::info!(campaign = %listing.campaign_id, "campaign notice pushed to this node's connections");
    }

    /// A gateway logged in on `link`: it gets notices from now on, and those in force now.
    pub fn gateway_joins_notices(&self, link: &ConnectionLink, gateway_id: &str) {
        for listing in self.campaigns.published_for(gateway_id) {
            if let Some(frame) =
                encode_push("gateway.campaign_notice", &WireCampaignNotice::of(&listing))
            {
                offer(link, &frame);
            }
        }
        let audience = Audience::Gateway {
            gateway_id: gateway_id.to_owned(),
        };
        self.campaigns.join(link.clone(), audience);
    }

    /// A client logged in on `link` from `address_opt`: it gets notices from now on, and
    /// those in force now for its venue.
    pub fn client_joins_notices(&self, link: &ConnectionLink, address_opt: Option<IpAddr>) {
        for notice in self.client_notices(address_opt).1 {
            if let Some(frame) = encode_push("campaign.notice", &notice) {
                offer(link, &frame);
            }
        }
        self.campaigns
            .join(link.clone(), Audience::Client { address_opt });
    }

    /// The venue a client at `address_opt` is in, and the notices in force for it.
    pub fn client_notices(
        &self,
        address_opt: Option<IpAddr>,
    ) -> (Option<String>, Vec<WireCampaignNotice>) {
        let Some((_, gateway_id)) = address_opt.and_then(|address| self.venues.venue_of(address))
        else {
            return (None, Vec::new());
        };
        let notices = self
            .campaigns
            .published_for(&gateway_id)
            .iter()
            .map(WireCampaignNotice::of)
            .collect();
        (Some(gateway_id), notices)
    }
}

/// Refreshes `edge`'s copy of the campaign directory every `interval` until the edge is
/// dropped.
pub fn spawn_refresh(edge: &Arc<Edge>, interval: Duration) {
    crate::edge::spawn_periodic(edge, interval, |edge| async move {
        edge.refresh_campaigns().await;
    });
}
