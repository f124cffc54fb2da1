//! The claim book of one (campaign, account) as a pure state machine: it holds the account's one
//! claim on the campaign across every venue, so that no account is allocated units of one
//! campaign twice (rule 2 of the quota ledger, see [`crate::model::ledger`]).
//!
//! A venue's ledger coordinates each allocation with the claim book:
//!
//! 1. the ledger reserves a pending transfer and sends [`ClaimMessage::HoldClaim`];
//! 2. the book, when the claim is free, records that transfer as its holder and answers
//!    [`ClaimBookReply::ClaimHeld`]; when another transfer holds or has confirmed it, it answers
//!    [`ClaimBookReply::ClaimRefused`] naming the holder's gateway;
//! 3. the ledger posts the transfer and sends [`ClaimMessage::ConfirmClaim`] (the claim becomes
//!    final), or, when the transfer was voided or expired meanwhile, [`ClaimMessage::ReleaseClaim`]
//!    (the claim becomes free again).
//!
//! Messages are delivered at least once and in any order, so every handler is idempotent, and a
//! confirm or release from a transfer that does not hold the claim changes nothing. The book also
//! remembers the last [`RELEASES_KEPT`] transfers released, so that a late duplicate of a
//! released transfer's hold cannot take the claim back. (Were it forgotten, the ledger would
//! answer the resulting `ClaimHeld` with a release, so the claim would be freed again.)
//!
//! Why this cannot post one account twice: the ledger posts a transfer only on `ClaimHeld` while
//! the transfer is still pending, and sends a release only for a transfer it voided; the book
//! answers `ClaimHeld` only to its current holder and changes holder only after that holder's
//! release. So once a transfer is posted the book holds it for good, and no other can be.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Released transfers remembered per claim book, newest kept.
pub const RELEASES_KEPT: usize = 16;

/// The id of the claim book of `account_id` in `campaign_id`: one claim per (campaign, account).
///
/// The campaign id's length (in bytes) comes first, so that two different pairs never give the
/// same id whatever characters the ids contain: ("a/b", "c") gives `3:a/b/c` and ("a", "b/c")
/// gives `1:a/b/c`. The result is printable when both ids are.
pub fn claim_id(campaign_id: &str, account_id: &str) -> String {
    format!("{}:{campaign_id}/{account_id}", campaign_id.len())
}

/// One pending transfer of one venue's ledger, as named in the messages about its claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferRef {
    /// The campaign.
    pub campaign_id: String,
    /// The account the units are for.
    pub account_id: String,
    /// The venue's gateway: with the campaign, it names the ledger.
    pub gateway_id: String,
    /// The transfer, numbered by its ledger (never reused there).
    pub transfer_id: u64,
}

impl TransferRef {
    /// The claim book this transfer's messages go to.
    pub fn claim_id(&self) -> String {
        claim_id(&self.campaign_id, &self.account_id)
    }
}

/// What a ledger tells a claim book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimMessage {
    /// Hold the claim for this pending transfer.
    HoldClaim {
        /// The transfer.
        transfer: TransferRef,
        /// Its units (recorded for the operators, not checked).
        units: u64,
    },
    /// The transfer was posted: its claim is final.
    ConfirmClaim {
        /// The transfer.
        transfer: TransferRef,
    },
    /// The transfer was voided or expired: its claim, if it holds one, is free again.
    ReleaseClaim {
        /// The transfer.
        transfer: TransferRef,
    },
}

impl ClaimMessage {
    /// The transfer the message is about.
    pub fn transfer(&self) -> &TransferRef {
        match self {
            Self::HoldClaim { transfer, .. }
            | Self::ConfirmClaim { transfer }
            | Self::ReleaseClaim { transfer } => transfer,
        }
    }
}

/// What a claim book answers a hold with; it goes to the transfer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimBookReply {
    /// The transfer holds the claim (or has confirmed it).
    ClaimHeld {
        /// The transfer.
        transfer: TransferRef,
    },
    /// Another transfer holds or has confirmed the claim.
    ClaimRefused {
        /// The refused transfer.
        transfer: TransferRef,
        /// The gateway of the transfer that holds the claim.
        holder_gateway: String,
    },
}

impl ClaimBookReply {
    /// The transfer the answer is about.
    pub fn transfer(&self) -> &TransferRef {
        match self {
            Self::ClaimHeld { transfer } | Self::ClaimRefused { transfer, .. } => transfer,
        }
    }
}

/// The transfer holding a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its venue's gateway.
    pub gateway_id: String,
    /// The transfer, numbered by that gateway's ledger.
    pub transfer_id: u64,
    /// Its units.
    pub units: u64,
    /// When the claim was taken.
    pub held_at_unix_ms: u64,
}

impl Holder {
    fn is(&self, transfer: &TransferRef) -> bool {
        self.gateway_id == transfer.gateway_id && self.transfer_id == transfer.transfer_id
    }
}

/// Where a claim stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimState {
    /// Nobody holds it.
    #[default]
    Free,
    /// A pending transfer holds it; its ledger will confirm or release it.
    Held {
        /// The transfer.
        holder: Holder,
    },
    /// A posted transfer holds it, for good.
    Confirmed {
        /// The transfer.
        holder: Holder,
        /// When it was confirmed.
        confirmed_at_unix_ms: u64,
    },
}

/// Why a claim book refused a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClaimBookError {
    /// The message is about another (campaign, account): it was routed to the wrong book.
    #[error("message for claim {message_claim_id:?} reached claim book {claim_id:?}")]
    WrongClaim {
        /// This book's claim id.
        claim_id: String,
        /// The claim id the message names.
        message_claim_id: String,
    },
}

/// The one claim of one account on one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimBook {
    campaign_id: String,
    account_id: String,
    state: ClaimState,
    /// (gateway, transfer) released, oldest first, the last [`RELEASES_KEPT`].
    released: VecDeque<(String, u64)>,
}

impl ClaimBook {
    /// The free claim of `account_id` on `campaign_id`.
    pub fn new(campaign_id: impl Into<String>, account_id: impl Into<String>) -> Self {
        Self {
            campaign_id: campaign_id.into(),
            account_id: account_id.into(),
            state: ClaimState::Free,
            released: VecDeque::new(),
        }
    }

    /// This book's claim id (see [`claim_id`]).
    pub fn claim_id(&self) -> String {
        claim_id(&self.campaign_id, &self.account_id)
    }

    /// The campaign.
    pub fn campaign_id(&self) -> &str {
        &self.campaign_id
    }

    /// The account.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Where the claim stands.
    pub fn state(&self) -> &ClaimState {
        &self.state
    }

    /// Whether `transfer` was released (among the last [`RELEASES_KEPT`]).
    pub fn was_released(&self, transfer: &TransferRef) -> bool {
        self.released.iter().any(|(gateway_id, transfer_id)| {
            *gateway_id == transfer.gateway_id && *transfer_id == transfer.transfer_id
        })
    }

    /// Handles one message from a ledger; returns the answer to send back, if any.
    ///
    /// Idempotent: handling a message again answers the same and changes nothing more.
    pub fn handle(
        &mut self,
        message: &ClaimMessage,
        now_unix_ms: u64,
    ) -> Result<Option<ClaimBookReply>, ClaimBookError> {
        let transfer = message.transfer();
        if transfer.campaign_id != self.campaign_id || transfer.account_id != self.account_id {
            return Err(ClaimBookError::WrongClaim {
                claim_id: self.claim_id(),
                message_claim_id: transfer.claim_id(),
            });
        }
        Ok(match message {
            ClaimMessage::HoldClaim { transfer, units } => self.hold(transfer, *units, now_unix_ms),
            ClaimMessage::ConfirmClaim { transfer } => {
                self.confirm(transfer, now_unix_ms);
                None
            }
            ClaimMessage::ReleaseClaim { transfer } => {
                self.release(transfer);
                None
            }
        })
    }

    fn hold(
        &mut self,
        transfer: &TransferRef,
        units: u64,
        now_unix_ms: u64,
    ) -> Option<ClaimBookReply> {
        let held = ClaimBookReply::ClaimHeld {
            transfer: transfer.clone(),
        };
        match &self.state {
            ClaimState::Held { holder } | ClaimState::Confirmed { holder, .. }
                if holder.is(transfer) =>
            {
                Some(held)
            }
            // Released already, so its ledger voided it and waits for no answer.
            _ if self.was_released(transfer) => None,
            ClaimState::Free => {
                self.state = ClaimState::Held {
                    holder: Holder {
                        gateway_id: transfer.gateway_id.clone(),
                        transfer_id: transfer.transfer_id,
                        units,
                        held_at_unix_ms: now_unix_ms,
                    },
                };
                Some(held)
            }
            ClaimState::Held { holder } | ClaimState::Confirmed { holder, .. } => {
                Some(ClaimBookReply::ClaimRefused {
                    transfer: transfer.clone(),
                    holder_gateway: holder.gateway_id.clone(),
                })
            }
        }
    }

    fn confirm(&mut self, transfer: &TransferRef, now_unix_ms: u64) {
        if let ClaimState::Held { holder } = &self.state
            && holder.is(transfer)
        {
            self.state = ClaimState::Confirmed {
                holder: holder.clone(),
                confirmed_at_unix_ms: now_unix_ms,
            };
        }
    }

    fn release(&mut self, transfer: &TransferRef) {
        match &self.state {
            // A posted transfer is never released: nothing to do.
            ClaimState::Confirmed { holder, .. } if holder.is(transfer) => return,
            ClaimState::Held { holder } if holder.is(transfer) => self.state = ClaimState::Free,
            _ => {}
        }
        if !self.was_released(transfer) {
            self.released
                .push_back((transfer.gateway_id.clone(), transfer.transfer_id));
            while self.released.len() > RELEASES_KEPT {
                self.released.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests;
