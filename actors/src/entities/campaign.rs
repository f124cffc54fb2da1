//! The campaign entity's wire messages and behaviour (S0 steps 6, 9 and 13): each request
//! becomes one call on [`CampaignState`]; what changed is announced to the campaign directory,
//! and at the close each winner is sent its reward.

use crate::entities::campaign_directory::CampaignDirectoryRequest;
use crate::entities::gateway::GatewayRequest;
use crate::entities::user::UserRequest;
use crate::entities::{decode_request, encode};
use crate::host::behavior::{
    AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage, Outgoing,
};
use crate::model::campaign::{
    CampaignDefinition, CampaignError, CampaignResults, CampaignState, CampaignStatus, Eligibility,
    UserStanding, VenueEnrolment, validate_campaign_id,
};
use crate::model::certification::WindowFigures;
use crate::model::entity_kind::{CAMPAIGN_DIRECTORY_ID, EntityKind};
use crate::model::reward::Reward;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A request to a campaign entity (its id is the campaign id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignRequest {
    /// Create the campaign as a draft (an operator's request).
    Create {
        /// The campaign.
        definition: CampaignDefinition,
        /// The tiers of the certification policy in force, lowest first.
        tier_names: Vec<String>,
    },
    /// Publish the draft (an operator's request).
    Publish {
        /// The venues its notice goes to.
        notice_gateways: BTreeSet<String>,
    },
    /// The whole campaign, for an operator.
    Inspect,
    /// Enrol a venue (its admin's request).
    EnrolVenue {
        /// The venue's gateway.
        gateway_id: String,
        /// Its certification tier now, if certified.
        tier_opt: Option<String>,
        /// The tiers of the certification policy in force, lowest first.
        tier_names: Vec<String>,
        /// Its figures over the campaign's `activity_days` up to now.
        figures: WindowFigures,
    },
    /// Whether a venue is enrolled in the open campaign, and its quota (before a client enrols
    /// through it, asks it for units, or is allocated units).
    CheckVenue {
        /// The venue's gateway.
        gateway_id: String,
    },
    /// Close the campaign and reward its winners (an operator's request).
    Close {
        /// What every account received and used, gathered from the enrolled venues' ledgers.
        standings: Vec<UserStanding>,
    },
}

/// A whole campaign, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignView {
    /// The campaign.
    pub campaign_id: String,
    /// Its definition.
    pub definition: CampaignDefinition,
    /// Draft, published or closed.
    pub status: CampaignStatus,
    /// When it was created.
    pub created_at_unix_ms: u64,
    /// When it was published, if it was.
    pub published_at_unix_ms_opt: Option<u64>,
    /// When it was closed, if it was.
    pub closed_at_unix_ms_opt: Option<u64>,
    /// The venues its notice went to.
    pub notice_gateways: BTreeSet<String>,
    /// The enrolled venues, by gateway id.
    pub venues: BTreeMap<String, VenueEnrolment>,
    /// Units granted to enrolled venues, in all.
    pub units_granted: u64,
    /// The results, once closed.
    pub results_opt: Option<CampaignResults>,
}

/// A campaign entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a reply is built once, encoded and dropped; boxing the view buys nothing"
)]
pub enum CampaignReply {
    /// The whole campaign (answers `Create`, `Publish` and `Inspect`).
    View(CampaignView),
    /// The venue is enrolled with this quota.
    VenueEnrolled {
        /// The units its ledger is credited with.
        quota: u64,
    },
    /// The venue is enrolled in the open campaign with this quota; the terms a client's
    /// request through it is checked against come with it.
    VenueChecked {
        /// The units its ledger is credited with.
        quota: u64,
        /// Who may take part (re-checked by the asker against the venue's figures now).
        eligibility: Eligibility,
        /// The most units one account may receive.
        user_limit: u64,
    },
    /// The campaign is closed with these results.
    Closed(CampaignResults),
    /// Refused.
    Refused(CampaignError),
}

/// The campaign behaviour.
#[derive(Debug)]
pub struct CampaignEntity;

fn view(state: &CampaignState, campaign_id: &str) -> Result<CampaignView, CampaignError> {
    Ok(CampaignView {
        campaign_id: campaign_id.to_owned(),
        definition: state.definition()?.clone(),
        status: state.status(),
        created_at_unix_ms: state.created_at_unix_ms(),
        published_at_unix_ms_opt: state.published_at_unix_ms_opt(),
        closed_at_unix_ms_opt: state.closed_at_unix_ms_opt(),
        notice_gateways: state.notice_gateways().clone(),
        venues: state.venues().clone(),
        units_granted: state.units_granted(),
        results_opt: state.results_opt().cloned(),
    })
}

fn audit(effects: &mut Effects, action: &str, detail: String) {
    effects.audit.push(AuditNote {
        action: action.to_owned(),
        detail,
    });
}

/// Sends the campaign's current listing to the campaign directory.
fn announce(
    state: &CampaignState,
    campaign_id: &str,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let Some(listing) = state.listing(campaign_id) else {
        return Ok(());
    };
    // The directory's id is a constant and a valid entity id.
    if let Ok(target) = EntityKind::CampaignDirectory.address(CAMPAIGN_DIRECTORY_ID) {
        effects.outgoing.push(Outgoing {
            target,
            payload: encode(&CampaignDirectoryRequest::Upsert(listing))?,
        });
    }
    Ok(())
}

/// Sends each winner its reward: an account's to its user entity, a venue's to its gateway.
/// A winner whose id is not a valid entity id cannot be reached; that is audited.
fn reward_winners(
    state: &CampaignState,
    campaign_id: &str,
    results: &CampaignResults,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let Ok(definition) = state.definition() else {
        return Ok(());
    };
    let reward = |rank: u32, score: u64, text: &str| Reward {
        campaign_id: campaign_id.to_owned(),
        campaign_title: definition.title.clone(),
        rank,
        score,
        text: text.to_owned(),
        granted_at_unix_ms: results.closed_at_unix_ms,
    };
    for winner in &results.user_winners {
        let reward = reward(winner.rank, winner.score, &definition.winners.user_reward);
        match EntityKind::User.address(winner.account_id.clone()) {
            Ok(target) => effects.outgoing.push(Outgoing {
                target,
                payload: encode(&UserRequest::GrantReward { reward })?,
            }),
            Err(error) => audit(
                effects,
                "campaign.reward_undeliverable",
                format!("account={:?} error={error}", winner.account_id),
            ),
        }
    }
    for winner in &results.venue_winners {
        let reward = reward(winner.rank, winner.score, &definition.winners.venue_reward);
        match EntityKind::Gateway.address(winner.gateway_id.clone()) {
            Ok(target) => effects.outgoing.push(Outgoing {
                target,
                payload: encode(&GatewayRequest::GrantReward { reward })?,
            }),
            Err(error) => audit(
                effects,
                "campaign.reward_undeliverable",
                format!("gateway={:?} error={error}", winner.gateway_id),
            ),
        }
    }
    Ok(())
}

/// Applies one request of a campaign whose id is valid; fills `effects` when something changed.
fn apply(
    state: &mut CampaignState,
    campaign_id: &str,
    request: CampaignRequest,
    now_unix_ms: u64,
    effects: &mut Effects,
) -> Result<CampaignReply, HandleError> {
    let outcome = match request {
        CampaignRequest::Create {
            definition,
            tier_names,
        } => match state.create(definition, &tier_names, now_unix_ms) {
            Ok(created) => {
                if created {
                    effects.state_changed = true;
                    announce(state, campaign_id, effects)?;
                    if let Ok(definition) = state.definition() {
                        audit(
                            effects,
                            "campaign.created",
                            format!(
                                "kind={} total_units={} venue_quota={}",
                                definition.kind.as_str(),
                                definition.total_units,
                                definition.venue_quota
                            ),
                        );
                    }
                }
                view(state, campaign_id).map(CampaignReply::View)
            }
            Err(error) => Err(error),
        },
        CampaignRequest::Publish { notice_gateways } => {
            match state.publish(notice_gateways, now_unix_ms) {
                Ok(published) => {
                    if published {
                        effects.state_changed = true;
                        announce(state, campaign_id, effects)?;
                        audit(
                            effects,
                            "campaign.published",
                            format!("n_notice_gateways={}", state.notice_gateways().len()),
                        );
                    }
                    view(state, campaign_id).map(CampaignReply::View)
                }
                Err(error) => Err(error),
            }
        }
        CampaignRequest::Inspect => view(state, campaign_id).map(CampaignReply::View),
        CampaignRequest::EnrolVenue {
            gateway_id,
            tier_opt,
            tier_names,
            figures,
        } => {
            let tier_text = tier_opt.clone().unwrap_or_default();
            state
                .enrol_venue(&gateway_id, tier_opt, &tier_names, figures, now_unix_ms)
                .map(|(quota, enrolled)| {
                    if enrolled {
                        effects.state_changed = true;
                        audit(
                            effects,
                            "campaign.venue_enrolled",
                            format!("gateway={gateway_id} quota={quota} tier={tier_text}"),
                        );
                    }
                    CampaignReply::VenueEnrolled { quota }
                })
        }
        CampaignRequest::CheckVenue { gateway_id } => {
            state.check_venue(&gateway_id).and_then(|quota| {
                let definition = state.definition()?;
                Ok(CampaignReply::VenueChecked {
                    quota,
                    eligibility: definition.eligibility.clone(),
                    user_limit: definition.user_limit,
                })
            })
        }
        CampaignRequest::Close { standings } => match state.close(&standings, now_unix_ms) {
            Ok((results, closed)) => {
                if closed {
                    effects.state_changed = true;
                    announce(state, campaign_id, effects)?;
                    reward_winners(state, campaign_id, &results, effects)?;
                    audit(
                        effects,
                        "campaign.closed",
                        format!(
                            "n_users_ranked={} n_venues_ranked={} n_user_winners={} \
                             n_venue_winners={}",
                            results.n_users_ranked,
                            results.n_venues_ranked,
                            results.user_winners.len(),
                            results.venue_winners.len()
                        ),
                    );
                }
                Ok(CampaignReply::Closed(results))
            }
            Err(error) => Err(error),
        },
    };
    // The model refuses before it changes anything.
    Ok(outcome.unwrap_or_else(CampaignReply::Refused))
}

impl EntityBehavior for CampaignEntity {
    const KIND: EntityKind = EntityKind::Campaign;
    type State = CampaignState;

    fn handle(
        state: &mut CampaignState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: CampaignRequest = decode_request(message)?;
        let campaign_id = message.entity_id;
        let mut effects = Effects::default();
        let reply = match validate_campaign_id(campaign_id) {
            Ok(()) => apply(
                state,
                campaign_id,
                request,
                message.now_unix_ms,
                &mut effects,
            )?,
            Err(error) => CampaignReply::Refused(error),
        };
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}

#[cfg(test)]
mod tests;
