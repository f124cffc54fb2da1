//! The quota-ledger entity of one (campaign, gateway): wire messages and the behaviour that
//! runs them through the [ledger model](crate::model::ledger), turning its effects into journal
//! entries, messages to the accounts' claim books and units issued to the accounts.
//!
//! A gateway's allocations arrive in batches ([`LedgerRequest::Allocate`]), applied in order
//! and saved once; the answer of each is the model's result, usually
//! [`crate::model::ledger::LedgerOutcome::Reserved`] (the claim book has not answered yet), which the gateway's node
//! follows with [`LedgerRequest::Results`] until it is final. The journal entries go to the
//! ledger journal store under the entity's id (see [`crate::host::behavior::JournalNote`]), so
//! the balances can be rebuilt from storage and compared with the live ones
//! ([`LedgerRequest::Inspect`] answers both the live balances and the next sequence).
//!
//! The gateway also reports how many of its units each account has used
//! ([`LedgerRequest::ReportUsage`], a cumulative total, so duplicates and reordering change
//! nothing); the ledger keeps it beside the model and forwards it to the account.

use crate::entities::claim_book::ClaimBookRequest;
use crate::entities::user::UserRequest;
use crate::entities::{decode_request, encode};
use crate::host::behavior::{
    AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage, JournalNote, Outgoing,
};
use crate::model::claim_book::{ClaimBookReply, claim_id};
use crate::model::entity_kind::EntityKind;
use crate::model::ledger::{
    AllocateRequest, Balances, JournalKind, Ledger, LedgerEffect, LedgerError, LedgerOp,
    LedgerResult, VoidRequest, ledger_id,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Most allocations one [`LedgerRequest::Allocate`] may carry.
pub const MAX_ALLOCATIONS_PER_BATCH: usize = 256;

/// Most op ids one [`LedgerRequest::Results`] may ask about.
pub const MAX_RESULTS_PER_QUERY: usize = 256;

/// A request to a ledger entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRequest {
    /// Credits the venue's ledger with its quota (sent when the venue enrols; idempotent).
    Open {
        /// The campaign.
        campaign_id: String,
        /// The venue's gateway.
        gateway_id: String,
        /// The venue's quota.
        quota: u64,
        /// The most units one account may receive.
        user_limit: u64,
    },
    /// A batch of allocations, applied in order (at most [`MAX_ALLOCATIONS_PER_BATCH`]).
    Allocate {
        /// The allocations.
        requests: Vec<AllocateRequest>,
    },
    /// Cancels a pending allocation.
    Void(VoidRequest),
    /// The results recorded for gateway ops (at most [`MAX_RESULTS_PER_QUERY`]).
    Results {
        /// The op ids.
        op_ids: Vec<String>,
    },
    /// An account's claim book answered a hold.
    ClaimAnswer(ClaimBookReply),
    /// The live balances.
    Inspect,
    /// What each account received and used here, for the campaign's rankings.
    Standings,
    /// The gateway's report of how many of an account's units it has used so far.
    ReportUsage {
        /// The account.
        account_id: String,
        /// Units used in total (cumulative; a lower total than one already reported is kept
        /// as no change).
        used_total: u64,
    },
}

/// Why a ledger entity refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum LedgerEntityError {
    /// The venue is not enrolled in the campaign: the ledger has no quota.
    #[error("the venue is not enrolled in this campaign")]
    NotOpen,
    /// The ledger was opened with other terms.
    #[error("the ledger is open with quota {quota} and user limit {user_limit}")]
    OpenedOtherwise {
        /// Its quota.
        quota: u64,
        /// Its user limit.
        user_limit: u64,
    },
    /// The entity id is not the ledger id of the named campaign and gateway.
    #[error("ledger {entity_id:?} is not the ledger of this campaign and gateway")]
    WrongLedger {
        /// The entity's id.
        entity_id: String,
    },
    /// The quota or the user limit is out of range.
    #[error("a quota and a user limit are at least 1, and the limit at most the quota")]
    BadTerms,
    /// Too many items in one request.
    #[error("{n_items} items in one request, at most {max_items}")]
    TooMany {
        /// Items sent.
        n_items: usize,
        /// Items allowed.
        max_items: usize,
    },
    /// Usage reported for an account that holds no units here.
    #[error("account {account_id:?} holds no units of this venue")]
    NoUnits {
        /// The account.
        account_id: String,
    },
    /// Usage reported above the units the account holds.
    #[error("{used_total} units used is more than the {units} units account {account_id:?} holds")]
    UsageOverUnits {
        /// The account.
        account_id: String,
        /// The reported total.
        used_total: u64,
        /// The units it holds.
        units: u64,
    },
}

/// What one account received and used at this venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStanding {
    /// The account.
    pub account_id: String,
    /// Units posted to it.
    pub units_allocated: u64,
    /// Units the gateway reported used.
    pub units_used: u64,
}

/// A ledger entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerReply {
    /// Open, with these terms.
    Opened {
        /// The quota.
        quota: u64,
        /// The most units one account may receive.
        user_limit: u64,
    },
    /// One result per allocation or void, in order.
    Results(Vec<LedgerResult>),
    /// The recorded result of each op asked about, in order (`None`: never seen, forgotten,
    /// or refused from its request alone).
    Recorded(Vec<Option<LedgerResult>>),
    /// The live balances.
    Balances {
        /// The balances.
        balances: Balances,
        /// The sequence the next journal entry will have.
        next_sequence: u64,
        /// The most units one account may receive.
        user_limit: u64,
    },
    /// Every account's standing, by account.
    Standings(Vec<AccountStanding>),
    /// Done.
    Done,
    /// Refused.
    Refused(LedgerEntityError),
}

/// Everything a ledger entity persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntityState {
    /// `None` until the venue enrols.
    pub ledger_opt: Option<Ledger>,
    /// The most units one account may receive.
    pub user_limit: u64,
    /// Units used per account, as the gateway reported them.
    pub used_by_account: BTreeMap<String, u64>,
}

/// The ledger behaviour.
#[derive(Debug)]
pub struct LedgerEntity;

/// What handling one request gives before it is turned into [`Effects`].
struct Handled {
    reply: LedgerReply,
    model_effects: Vec<LedgerEffect>,
    state_changed: bool,
    to_accounts: Vec<(String, UserRequest)>,
    audit: Vec<AuditNote>,
}

impl Handled {
    fn reply(reply: LedgerReply) -> Self {
        Self {
            reply,
            model_effects: Vec::new(),
            state_changed: false,
            to_accounts: Vec::new(),
            audit: Vec::new(),
        }
    }

    fn refused(error: LedgerEntityError) -> Self {
        Self::reply(LedgerReply::Refused(error))
    }
}

fn open(
    state: &mut LedgerEntityState,
    entity_id: &str,
    campaign_id: String,
    gateway_id: String,
    quota: u64,
    user_limit: u64,
) -> Handled {
    if let Some(ledger) = &state.ledger_opt {
        if ledger.quota() == quota && state.user_limit == user_limit {
            return Handled::reply(LedgerReply::Opened { quota, user_limit });
        }
        return Handled::refused(LedgerEntityError::OpenedOtherwise {
            quota: ledger.quota(),
            user_limit: state.user_limit,
        });
    }
    if ledger_id(&campaign_id, &gateway_id) != entity_id {
        return Handled::refused(LedgerEntityError::WrongLedger {
            entity_id: entity_id.to_owned(),
        });
    }
    if user_limit == 0 || user_limit > quota {
        return Handled::refused(LedgerEntityError::BadTerms);
    }
    let Ok(ledger) = Ledger::new(campaign_id, gateway_id, quota) else {
        return Handled::refused(LedgerEntityError::BadTerms);
    };
    state.ledger_opt = Some(ledger);
    state.user_limit = user_limit;
    let mut handled = Handled::reply(LedgerReply::Opened { quota, user_limit });
    handled.state_changed = true;
    handled.audit.push(AuditNote {
        action: "ledger.opened".to_owned(),
        detail: format!("quota={quota} user_limit={user_limit}"),
    });
    handled
}

fn too_many(n_items: usize, max_items: usize) -> Option<Handled> {
    (n_items > max_items)
        .then(|| Handled::refused(LedgerEntityError::TooMany { n_items, max_items }))
}

/// Applies ops to an open ledger in order. The state changed when a new op was recorded (every
/// new allocation and void is, even a refused one) or an op produced an effect; a resubmitted
/// op only answers its recorded result, so a retried batch rewrites nothing.
fn apply_ops(
    ledger: &mut Ledger,
    user_limit: u64,
    ops: Vec<LedgerOp>,
    now_unix_ms: u64,
) -> Handled {
    let mut results = Vec::with_capacity(ops.len());
    let mut handled = Handled::reply(LedgerReply::Done);
    for op in ops {
        if let LedgerOp::Allocate(request) = &op
            && request.units > user_limit
        {
            // The per-user limit is the campaign's; the model knows only the quota.
            results.push(Err(LedgerError::UnitsOutOfRange {
                units: request.units,
                max_units: user_limit,
            }));
            continue;
        }
        let recorded =
            matches!(op, LedgerOp::Allocate(_) | LedgerOp::Void(_)) && !ledger.is_recorded(&op);
        let applied = ledger.apply(op, now_unix_ms);
        handled.state_changed |= recorded || !applied.effects.is_empty();
        results.push(applied.result);
        handled.model_effects.extend(applied.effects);
    }
    handled.reply = LedgerReply::Results(results);
    handled
}

/// Runs the expiry of due pending transfers (before a query answers), then `answer`.
fn after_expiry(
    ledger: &mut Ledger,
    now_unix_ms: u64,
    answer: impl FnOnce(&Ledger) -> LedgerReply,
) -> Handled {
    let applied = ledger.apply(LedgerOp::Expire, now_unix_ms);
    let mut handled = Handled::reply(answer(ledger));
    handled.state_changed = !applied.effects.is_empty();
    handled.model_effects = applied.effects;
    handled
}

fn report_usage(state: &mut LedgerEntityState, account_id: String, used_total: u64) -> Handled {
    let Some(ledger) = &state.ledger_opt else {
        return Handled::refused(LedgerEntityError::NotOpen);
    };
    let Some(claim) = ledger.posted_claim(&account_id) else {
        return Handled::refused(LedgerEntityError::NoUnits { account_id });
    };
    if used_total > claim.units {
        return Handled::refused(LedgerEntityError::UsageOverUnits {
            account_id,
            used_total,
            units: claim.units,
        });
    }
    let campaign_id = ledger.campaign_id().to_owned();
    let used = state.used_by_account.entry(account_id.clone()).or_default();
    let mut handled = Handled::reply(LedgerReply::Done);
    if used_total <= *used {
        return handled;
    }
    *used = used_total;
    handled.state_changed = true;
    handled.audit.push(AuditNote {
        action: "ledger.usage".to_owned(),
        detail: format!("account={account_id} used_total={used_total}"),
    });
    let forward = UserRequest::UnitsUsed {
        campaign_id,
        used_total,
    };
    handled.to_accounts.push((account_id, forward));
    handled
}

fn standings(ledger: &Ledger, used_by_account: &BTreeMap<String, u64>) -> Vec<AccountStanding> {
    ledger
        .balances()
        .claims
        .into_iter()
        .map(|(account_id, claim)| AccountStanding {
            units_used: used_by_account.get(&account_id).copied().unwrap_or(0),
            account_id,
            units_allocated: claim.units,
        })
        .collect()
}

fn handle_request(
    state: &mut LedgerEntityState,
    entity_id: &str,
    request: LedgerRequest,
    now_unix_ms: u64,
) -> Handled {
    if let LedgerRequest::Open {
        campaign_id,
        gateway_id,
        quota,
        user_limit,
    } = request
    {
        return open(state, entity_id, campaign_id, gateway_id, quota, user_limit);
    }
    if let LedgerRequest::ReportUsage {
        account_id,
        used_total,
    } = request
    {
        return report_usage(state, account_id, used_total);
    }
    let LedgerEntityState {
        ledger_opt,
        user_limit,
        used_by_account,
    } = state;
    let user_limit = *user_limit;
    let Some(ledger) = ledger_opt.as_mut() else {
        if let LedgerRequest::ClaimAnswer(reply) = &request {
            // Cannot happen (a ledger asks only once open); logged rather than answered.
            tracing::warn!(ledger = entity_id, answer = ?reply, "claim answer for a ledger that is not open");
        }
        return Handled::refused(LedgerEntityError::NotOpen);
    };
    match request {
        LedgerRequest::Allocate { requests } => too_many(requests.len(), MAX_ALLOCATIONS_PER_BATCH)
            .unwrap_or_else(|| {
                let ops = requests.into_iter().map(LedgerOp::Allocate).collect();
                apply_ops(ledger, user_limit, ops, now_unix_ms)
            }),
        LedgerRequest::Void(request) => apply_ops(
            ledger,
            user_limit,
            vec![LedgerOp::Void(request)],
            now_unix_ms,
        ),
        LedgerRequest::ClaimAnswer(reply) => {
            let handled = apply_ops(
                ledger,
                user_limit,
                vec![LedgerOp::ClaimAnswer(reply)],
                now_unix_ms,
            );
            if let LedgerReply::Results(results) = &handled.reply
                && let Some(Err(error)) = results.first()
                && !matches!(
                    error,
                    LedgerError::AlreadyClaimed { .. }
                        | LedgerError::Expired { .. }
                        | LedgerError::Cancelled { .. }
                )
            {
                tracing::warn!(ledger = entity_id, error = %error, "claim answer not applied");
            }
            handled
        }
        LedgerRequest::Results { op_ids } => too_many(op_ids.len(), MAX_RESULTS_PER_QUERY)
            .unwrap_or_else(|| {
                after_expiry(ledger, now_unix_ms, |ledger| {
                    LedgerReply::Recorded(
                        op_ids
                            .iter()
                            .map(|op_id| ledger.result_of(op_id).cloned())
                            .collect(),
                    )
                })
            }),
        LedgerRequest::Inspect => {
            after_expiry(ledger, now_unix_ms, |ledger| LedgerReply::Balances {
                balances: ledger.balances(),
                next_sequence: ledger.next_sequence(),
                user_limit,
            })
        }
        LedgerRequest::Standings => after_expiry(ledger, now_unix_ms, |ledger| {
            LedgerReply::Standings(standings(ledger, used_by_account))
        }),
        LedgerRequest::Open { .. } | LedgerRequest::ReportUsage { .. } => {
            Handled::reply(LedgerReply::Done)
        }
    }
}

fn address(kind: EntityKind, id: &str) -> Result<lanmesh_bus::EntityAddress, HandleError> {
    kind.address(id).map_err(|error| HandleError::Malformed {
        reason: format!("no {kind} address for {id:?}: {error}"),
    })
}

/// Turns the model's effects into journal entries, messages to claim books and units issued.
fn carry_out(
    campaign_id: &str,
    gateway_id: &str,
    handled: Handled,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    for effect in handled.model_effects {
        match effect {
            LedgerEffect::Journal(entry) => {
                if entry.kind == JournalKind::Posted {
                    // Posted: the units are the account's now.
                    let issued = UserRequest::UnitsIssued {
                        campaign_id: campaign_id.to_owned(),
                        gateway_id: gateway_id.to_owned(),
                        transfer_id: entry.transfer_id,
                        units: entry.units,
                    };
                    effects.outgoing.push(Outgoing {
                        target: address(EntityKind::User, &entry.account_id)?,
                        payload: encode(&issued)?,
                    });
                }
                effects.journal.push(JournalNote {
                    sequence: entry.sequence,
                    at_unix_ms: entry.at_unix_ms,
                    body: encode(&entry)?,
                });
            }
            LedgerEffect::ToClaimBook(message) => {
                let transfer = message.transfer();
                let book_id = claim_id(&transfer.campaign_id, &transfer.account_id);
                effects.outgoing.push(Outgoing {
                    target: address(EntityKind::ClaimBook, &book_id)?,
                    payload: encode(&ClaimBookRequest::Ledger(message))?,
                });
            }
            // The gateway's node asks for results ([`LedgerRequest::Results`]).
            LedgerEffect::AllocationResolved { .. } => {}
        }
    }
    for (account_id, request) in handled.to_accounts {
        effects.outgoing.push(Outgoing {
            target: address(EntityKind::User, &account_id)?,
            payload: encode(&request)?,
        });
    }
    effects.audit.extend(handled.audit);
    Ok(())
}

impl EntityBehavior for LedgerEntity {
    const KIND: EntityKind = EntityKind::Ledger;
    type State = LedgerEntityState;

    fn handle(
        state: &mut LedgerEntityState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: LedgerRequest = decode_request(message)?;
        let handled = handle_request(state, message.entity_id, request, message.now_unix_ms);
        let mut effects = Effects {
            state_changed: handled.state_changed,
            reply_opt: Some(encode(&handled.reply)?),
            ..Effects::default()
        };
        let (campaign_id, gateway_id) = state.ledger_opt.as_ref().map_or_else(
            || (String::new(), String::new()),
            |ledger| {
                (
                    ledger.campaign_id().to_owned(),
                    ledger.gateway_id().to_owned(),
                )
            },
        );
        carry_out(&campaign_id, &gateway_id, handled, &mut effects)?;
        Ok(effects)
    }
}

#[cfg(test)]
mod tests;
