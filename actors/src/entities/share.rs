//! The share entity's wire messages and behaviour (S4): each request becomes one call on
//! [`ShareState`], after the share's expiry is applied. What happened is audited, told to the
//! parties it concerns through their user entities, and kept in step with the listing in the
//! offer's cell (listed while offered, withdrawn otherwise).

use crate::entities::offer_cell::OfferCellRequest;
use crate::entities::user::UserRequest;
use crate::entities::{decode_request, encode};
use crate::host::behavior::{
    AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage, Outgoing,
};
use crate::model::entity_kind::EntityKind;
use crate::model::geo::GeoPoint;
use crate::model::share::{
    Bill, MatchAnswer, Offer, PasswordAnswer, ShareError, ShareEvent, ShareState, ShareTerms,
    ShareView, Step, UsageAnswer,
};
use serde::{Deserialize, Serialize};

/// A request to a share entity (its id is the share id). Requests naming an account come from
/// the edge after it checked that account's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareRequest {
    /// Make the offer and list it.
    Open {
        /// The offer.
        offer: Offer,
        /// The cluster's terms now.
        terms: ShareTerms,
        /// The sharer's password, relayed to the requester it is matched with.
        password: String,
    },
    /// Match a requester.
    Match {
        /// The requester.
        requester: String,
        /// Bytes asked for.
        requested_bytes: u64,
        /// Where the requester is.
        location: GeoPoint,
    },
    /// Cancel before the share starts.
    Cancel {
        /// Who cancels.
        account: String,
    },
    /// The requester presents the password.
    PresentPassword {
        /// Who presents it.
        account: String,
        /// The password.
        password: String,
    },
    /// The requester's cumulative usage.
    ReportUsage {
        /// Who reports.
        account: String,
        /// The report's id (a repeat must repeat the total).
        report_id: u64,
        /// Bytes used in total.
        used_bytes: u64,
    },
    /// End an active share.
    End {
        /// Who ends it.
        account: String,
    },
    /// The share as `account` sees it.
    Inspect {
        /// The viewer.
        account: String,
    },
    /// Apply the share's expiry if it is due (sent by the edge when the validity ends, so a
    /// share nobody touches still closes and bills on time). Answered `Done`.
    Expire,
}

/// A share entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a reply is built once, encoded and dropped; boxing the view buys nothing"
)]
pub enum ShareReply {
    /// Done (answers `Open` and `Cancel`).
    Done,
    /// Matched: the password relayed.
    Matched(MatchAnswer),
    /// The password's verdict.
    Password(PasswordAnswer),
    /// The usage recorded.
    Usage(UsageAnswer),
    /// Ended, with the bill.
    Ended(Bill),
    /// The share as the viewer sees it.
    View(ShareView),
    /// Refused.
    Refused(ShareError),
}

/// The share behaviour.
#[derive(Debug)]
pub struct ShareEntity;

impl EntityBehavior for ShareEntity {
    const KIND: EntityKind = EntityKind::Share;
    type State = ShareState;

    fn handle(
        state: &mut ShareState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: ShareRequest = decode_request(message)?;
        let now = message.now_unix_ms;
        let mut effects = Effects::default();
        let mut events = Vec::new();
        let reply = match state.expire_due(now) {
            Err(error) => ShareReply::Refused(error),
            Ok(expiry) => {
                effects.state_changed = expiry.changed;
                events.extend(expiry.events);
                let outcome = apply(state, request, now);
                match outcome {
                    Ok((reply, step_changed, step_events)) => {
                        effects.state_changed |= step_changed;
                        events.extend(step_events);
                        reply
                    }
                    Err(error) => ShareReply::Refused(error),
                }
            }
        };
        for event in &events {
            carry_out(state, message.entity_id, event, &mut effects)?;
        }
        effects.reply_opt = Some(encode(&reply)?);
        Ok(effects)
    }
}

/// One request's reply, whether it changed the state, and what happened.
type Applied = (ShareReply, bool, Vec<ShareEvent>);

fn step<T>(step: Step<T>, into_reply: impl FnOnce(T) -> ShareReply) -> Applied {
    (into_reply(step.answer), step.changed, step.events)
}

fn apply(state: &mut ShareState, request: ShareRequest, now: u64) -> Result<Applied, ShareError> {
    Ok(match request {
        ShareRequest::Open {
            offer,
            terms,
            password,
        } => step(state.open(offer, terms, password, now)?, |()| {
            ShareReply::Done
        }),
        ShareRequest::Match {
            requester,
            requested_bytes,
            location,
        } => step(
            state.match_requester(&requester, requested_bytes, location, now)?,
            ShareReply::Matched,
        ),
        ShareRequest::Cancel { account } => {
            step(state.cancel(&account, now)?, |()| ShareReply::Done)
        }
        ShareRequest::PresentPassword { account, password } => step(
            state.present_password(&account, &password, now)?,
            ShareReply::Password,
        ),
        ShareRequest::ReportUsage {
            account,
            report_id,
            used_bytes,
        } => step(
            state.report_usage(&account, report_id, used_bytes, now)?,
            ShareReply::Usage,
        ),
        ShareRequest::End { account } => step(state.end(&account, now)?, ShareReply::Ended),
        ShareRequest::Inspect { account } => (
            ShareReply::View(state.view_for(&account)?),
            false,
            Vec::new(),
        ),
        // Expiry is applied before every request.
        ShareRequest::Expire => (ShareReply::Done, false, Vec::new()),
    })
}

/// Audits `event`, tells its recipients, and lists or withdraws the offer in its cell.
fn carry_out(
    state: &ShareState,
    share_id: &str,
    event: &ShareEvent,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    effects.audit.push(AuditNote {
        action: event.action().to_owned(),
        detail: format!("{event:?}"),
    });
    for party in event.recipients() {
        let Some(account) = state.account_of(party) else {
            continue;
        };
        if let Ok(target) = EntityKind::User.address(account) {
            effects.outgoing.push(Outgoing {
                target,
                payload: encode(&UserRequest::ShareNotice {
                    share_id: share_id.to_owned(),
                    event: event.clone(),
                })?,
            });
        }
    }
    let listing = match event {
        ShareEvent::Offered | ShareEvent::Released { .. } => state
            .listing(share_id)
            .map(|(cell, listed)| (cell, OfferCellRequest::List(listed))),
        ShareEvent::Matched { .. } | ShareEvent::Closed { .. } => {
            state.listing(share_id).map(|(cell, _)| {
                let unlist = OfferCellRequest::Unlist {
                    share_id: share_id.to_owned(),
                };
                (cell, unlist)
            })
        }
        _ => None,
    };
    if let Some((cell, request)) = listing
        && let Ok(target) = EntityKind::OfferCell.address(cell)
    {
        effects.outgoing.push(Outgoing {
            target,
            payload: encode(&request)?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
