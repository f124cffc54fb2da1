//! The quota ledger of one (campaign, gateway) as a pure state machine, after TigerBeetle's
//! two-phase transfers: the single writer of one venue's balances for one campaign.
//!
//! The campaign grants the venue a quota of units. The venue's gateway allocates units to
//! accounts; each allocation is a **pending transfer** with a timeout, **posted** once the
//! account's [claim book](crate::model::claim_book) says the claim is held, or **voided** (the
//! gateway cancelled it, the claim book refused it, or it expired). Rules that always hold:
//!
//! 1. `pending + posted <= quota`: a reservation that would pass the quota is refused with
//!    [`LedgerError::QuotaExceeded`], stating the units remaining.
//! 2. One claim per (campaign, account) across all venues: the ledger posts only on the claim
//!    book's [`ClaimBookReply::ClaimHeld`] for a transfer still pending (see the claim book for
//!    why that is enough). Within one venue an account has at most one pending or posted
//!    transfer.
//! 3. Every gateway op ([`LedgerOp::Allocate`], [`LedgerOp::Void`]) is idempotent by its
//!    client-chosen op id: the same id with the same fields answers the recorded result; with
//!    other fields it is [`LedgerError::IdReused`]. An allocation's result is
//!    [`LedgerOutcome::Reserved`] until it is resolved, then its final result, which never
//!    changes again. Errors found from the request alone ([`LedgerError::is_request_error`]) are
//!    not recorded (like TigerBeetle, which keeps only transient failures): the same request
//!    fails the same way, and a corrected one may reuse the id.
//! 4. A pending transfer is resolved at most once: posted, or voided with a reason. There is no
//!    gateway "post": a post the claim book did not allow would break rule 2, so the post is the
//!    ledger's answer to `ClaimHeld`, idempotent by transfer.
//! 5. Every op first expires the pending transfers whose expiry is at or before `now` (the
//!    ledger's clock never goes back: it is the latest `now` it was given), releasing their units
//!    and their claims; [`LedgerOp::Expire`] does only that. Every void, whatever its reason,
//!    sends the claim book a release, and a `ClaimHeld` for a transfer that is no longer pending
//!    is answered with another: either alone frees a claim held for a dead transfer.
//! 6. Units are `u64`, 1 to the quota per allocation; timeouts are [`MIN_TIMEOUT_MS`] to
//!    [`MAX_TIMEOUT_MS`]. Balances cannot overflow: pending and posted are each at most the
//!    quota, and the cumulative voided total saturates.
//! 7. Every change is a [`JournalEntry`] (an effect for the shell to append), numbered from 1
//!    without gaps; [`rebuild`] replays a journal into the [`Balances`] the live ledger reports.
//!
//! Transfers are numbered by the ledger, never by the client, and numbers are never reused:
//! a late message about a forgotten transfer can never be taken for a newer one.
//!
//! # Memory
//!
//! The ledger keeps every pending and every posted transfer and the op that allocated it: at
//! most `quota` of them (each holds at least one unit), and at most one per account served.
//! Beyond that it keeps the last [`VOIDED_TRANSFERS_KEPT`] voided transfers and the last
//! [`SETTLED_OPS_KEPT`] settled ops (failed ops, voids, allocations whose transfer was voided),
//! the oldest forgotten first. Forgetting only weakens idempotency for very old retries: such a
//! retry is applied as new, which rules 1 and 2 still bound (it reserves again, and the claim
//! book refuses a second claim); a void or claim answer for a forgotten transfer gets
//! [`LedgerError::UnknownTransfer`], and a `ClaimHeld` for one is answered with a release.

use crate::model::claim_book::{ClaimBookReply, ClaimMessage, TransferRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Longest op id, in bytes (every allowed character is one byte).
pub const MAX_OP_ID_BYTES: usize = 64;
/// Longest account id, in bytes.
pub const MAX_ACCOUNT_ID_BYTES: usize = 128;
/// Shortest timeout of a pending transfer: 1 s.
pub const MIN_TIMEOUT_MS: u64 = 1_000;
/// Longest timeout of a pending transfer: 1 day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Voided transfers remembered, newest kept.
pub const VOIDED_TRANSFERS_KEPT: usize = 1_024;
/// Settled ops (failures, voids, allocations whose transfer was voided) remembered, newest kept.
pub const SETTLED_OPS_KEPT: usize = 4_096;
/// Characters of a refused id quoted in an error.
const QUOTED_ID_CHARS: usize = 80;

/// A transfer's number in its ledger, from 1, never reused.
pub type TransferId = u64;

/// The id of the ledger entity of `gateway_id` in `campaign_id`, built like
/// [`claim_id`](crate::model::claim_book::claim_id) so that different pairs never collide.
pub fn ledger_id(campaign_id: &str, gateway_id: &str) -> String {
    format!("{}:{campaign_id}/{gateway_id}", campaign_id.len())
}

/// What is wrong with an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum IdProblem {
    /// It is empty.
    #[error("it is empty")]
    Empty,
    /// It is too long.
    #[error("it is {n_bytes} bytes long, at most {max_bytes} are allowed")]
    TooLong {
        /// Its length.
        n_bytes: usize,
        /// The longest allowed.
        max_bytes: usize,
    },
    /// It holds a character that is not allowed.
    #[error("it contains {character:?}, allowed: {allowed}")]
    BadCharacter {
        /// The first such character.
        character: char,
        /// The allowed characters.
        allowed: String,
    },
}

/// Checks an op id: 1 to [`MAX_OP_ID_BYTES`] characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_op_id(op_id: &str) -> Result<(), IdProblem> {
    if op_id.is_empty() {
        return Err(IdProblem::Empty);
    }
    if let Some(character) = op_id
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || ".:_-".contains(*character)))
    {
        return Err(IdProblem::BadCharacter {
            character,
            allowed: "A-Z a-z 0-9 . _ : -".to_owned(),
        });
    }
    if op_id.len() > MAX_OP_ID_BYTES {
        return Err(IdProblem::TooLong {
            n_bytes: op_id.len(),
            max_bytes: MAX_OP_ID_BYTES,
        });
    }
    Ok(())
}

/// Checks an account id: 1 to [`MAX_ACCOUNT_ID_BYTES`] bytes, no control characters.
pub fn validate_account_id(account_id: &str) -> Result<(), IdProblem> {
    if account_id.is_empty() {
        return Err(IdProblem::Empty);
    }
    if account_id.len() > MAX_ACCOUNT_ID_BYTES {
        return Err(IdProblem::TooLong {
            n_bytes: account_id.len(),
            max_bytes: MAX_ACCOUNT_ID_BYTES,
        });
    }
    if let Some(character) = account_id.chars().find(|character| character.is_control()) {
        return Err(IdProblem::BadCharacter {
            character,
            allowed: "printable characters".to_owned(),
        });
    }
    Ok(())
}

fn quoted(id: &str) -> String {
    id.chars().take(QUOTED_ID_CHARS).collect()
}

/// A gateway's request to allocate units to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// The client's id for this op (see [`validate_op_id`]).
    pub op_id: String,
    /// The account the units are for.
    pub account_id: String,
    /// How many, 1 to the quota.
    pub units: u64,
    /// How long the units stay reserved waiting for the claim, [`MIN_TIMEOUT_MS`] to
    /// [`MAX_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

/// A gateway's request to cancel a pending allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    /// The client's id for this op (see [`validate_op_id`]).
    pub op_id: String,
    /// The pending transfer.
    pub transfer_id: TransferId,
}

/// One input of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerOp {
    /// Reserve units for an account and ask its claim book for the claim.
    Allocate(AllocateRequest),
    /// Cancel a pending allocation.
    Void(VoidRequest),
    /// The account's claim book answered a hold: post the transfer, or void it.
    ClaimAnswer(ClaimBookReply),
    /// Expire the pending transfers that are due (every op does this first).
    Expire,
}

/// What a successful op did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerOutcome {
    /// An allocation's units are reserved; the claim book has not answered yet.
    Reserved {
        /// The pending transfer.
        transfer_id: TransferId,
        /// Its units.
        units: u64,
        /// When it expires unless posted.
        expires_at_unix_ms: u64,
    },
    /// An allocation is final: the units are issued to the account.
    Allocated {
        /// The posted transfer.
        transfer_id: TransferId,
        /// Its units.
        units: u64,
    },
    /// A void op cancelled a pending transfer; its units are released.
    Voided {
        /// The transfer.
        transfer_id: TransferId,
        /// Its units.
        units: u64,
    },
    /// The pending transfers this op expired (every op expires those due before it runs).
    Swept {
        /// The transfers, in order.
        expired: Vec<TransferId>,
    },
}

/// Why an op failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LedgerError {
    /// A ledger's quota must be at least one unit.
    #[error("a quota must be at least 1 unit")]
    ZeroQuota,
    /// The op id is not acceptable.
    #[error("op id {op_id:?} is not acceptable: {problem}")]
    InvalidOpId {
        /// The id (its first characters).
        op_id: String,
        /// What is wrong.
        problem: IdProblem,
    },
    /// The account id is not acceptable.
    #[error("account id {account_id:?} is not acceptable: {problem}")]
    InvalidAccountId {
        /// The id (its first characters).
        account_id: String,
        /// What is wrong.
        problem: IdProblem,
    },
    /// An allocation's units are 0 or more than the quota.
    #[error("{units} units requested, an allocation is 1 to {max_units} units")]
    UnitsOutOfRange {
        /// The units requested.
        units: u64,
        /// The most allowed: the quota.
        max_units: u64,
    },
    /// An allocation's timeout is out of bounds.
    #[error("timeout of {timeout_ms} ms requested, allowed: {min_ms} to {max_ms} ms")]
    TimeoutOutOfRange {
        /// The timeout requested.
        timeout_ms: u64,
        /// The shortest allowed.
        min_ms: u64,
        /// The longest allowed.
        max_ms: u64,
    },
    /// The op id was used before with other fields.
    #[error("op id {op_id:?} was already used for another request")]
    IdReused {
        /// The id.
        op_id: String,
    },
    /// The allocation would pass the quota.
    #[error("{requested} units requested, {remaining} remain of the quota")]
    QuotaExceeded {
        /// The units requested.
        requested: u64,
        /// The units still free (neither pending nor posted).
        remaining: u64,
    },
    /// The account already has a pending allocation at this venue.
    #[error("the account already has pending transfer {transfer_id} at this venue")]
    AllocationInProgress {
        /// That transfer.
        transfer_id: TransferId,
    },
    /// The account's claim on the campaign is held by a transfer of this or another venue.
    #[error("the account's claim on the campaign is held through gateway {holder_gateway:?}")]
    AlreadyClaimed {
        /// The holder's gateway.
        holder_gateway: String,
    },
    /// The ledger does not know the transfer (never made, or long forgotten).
    #[error("no transfer {transfer_id} is known")]
    UnknownTransfer {
        /// The transfer.
        transfer_id: TransferId,
    },
    /// The transfer is posted: it cannot be voided.
    #[error("transfer {transfer_id} is already posted")]
    AlreadyPosted {
        /// The transfer.
        transfer_id: TransferId,
    },
    /// The transfer was voided already (cancelled, or refused by the claim book).
    #[error("transfer {transfer_id} is already voided")]
    AlreadyVoided {
        /// The transfer.
        transfer_id: TransferId,
    },
    /// The transfer expired before it was posted; its units were released.
    #[error("transfer {transfer_id} expired")]
    Expired {
        /// The transfer.
        transfer_id: TransferId,
    },
    /// The allocation was cancelled by a void op before it was posted.
    #[error("transfer {transfer_id} was cancelled")]
    Cancelled {
        /// The transfer.
        transfer_id: TransferId,
    },
    /// A claim answer about another ledger reached this one.
    #[error(
        "a claim answer for campaign {campaign_id:?} gateway {gateway_id:?} reached this ledger"
    )]
    WrongLedger {
        /// The campaign the answer names.
        campaign_id: String,
        /// The gateway the answer names.
        gateway_id: String,
    },
    /// No transfer number is left (after 2^64 - 1 transfers).
    #[error("the ledger has no transfer number left")]
    Exhausted,
}

impl LedgerError {
    /// Whether the error follows from the request alone, whatever the ledger's state: such
    /// failures are not recorded under the op id, and resubmitting the request fails the same.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            Self::ZeroQuota
                | Self::InvalidOpId { .. }
                | Self::InvalidAccountId { .. }
                | Self::UnitsOutOfRange { .. }
                | Self::TimeoutOutOfRange { .. }
        )
    }
}

/// An op's answer.
pub type LedgerResult = Result<LedgerOutcome, LedgerError>;

/// Why a pending transfer was voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoidReason {
    /// A void op cancelled it.
    Requested,
    /// Its timeout passed.
    Expired,
    /// The account's claim book refused the claim.
    ClaimRefused,
}

/// What a journal entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalKind {
    /// Units reserved in a new pending transfer.
    Reserved {
        /// When it expires unless posted.
        expires_at_unix_ms: u64,
    },
    /// A pending transfer's units issued to the account.
    Posted,
    /// A pending transfer's units released.
    Voided {
        /// Why.
        reason: VoidReason,
    },
}

/// One change of a ledger, for its append-only journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The entry's number in its ledger's journal: 1, 2, 3… without gaps.
    pub sequence: u64,
    /// The op behind it: the void op for a cancellation, otherwise the allocation.
    pub op_id: String,
    /// The transfer.
    pub transfer_id: TransferId,
    /// The account of the transfer.
    pub account_id: String,
    /// The transfer's units.
    pub units: u64,
    /// What happened.
    pub kind: JournalKind,
    /// When (the ledger's clock).
    pub at_unix_ms: u64,
}

/// What the shell must carry out after an op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEffect {
    /// Append to the ledger's journal (with the state, before anything is sent).
    Journal(JournalEntry),
    /// Send to the claim book of the transfer's account.
    ToClaimBook(ClaimMessage),
    /// An allocation reached its final result after its own op had answered: tell the gateway
    /// waiting on it.
    AllocationResolved {
        /// The allocation's op id.
        op_id: String,
        /// Its final result.
        result: LedgerResult,
    },
}

/// What one op gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The answer for whoever sent the op.
    pub result: LedgerResult,
    /// What the shell must carry out, in order.
    pub effects: Vec<LedgerEffect>,
}

/// A pending transfer, as balances see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBalance {
    /// The account.
    pub account_id: String,
    /// The units reserved.
    pub units: u64,
    /// When it expires unless posted.
    pub expires_at_unix_ms: u64,
}

/// An account's posted claim at this venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedClaim {
    /// The posted transfer.
    pub transfer_id: TransferId,
    /// Its units.
    pub units: u64,
}

/// A ledger's balances: what the live ledger reports and what [`rebuild`] computes from its
/// journal, so that the two can be compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// The quota (credits).
    pub quota: u64,
    /// Units in pending transfers.
    pub pending_units: u64,
    /// Units in posted transfers.
    pub posted_units: u64,
    /// Units ever released by voided transfers (saturating).
    pub voided_units: u64,
    /// Every pending transfer.
    pub pending: BTreeMap<TransferId, PendingBalance>,
    /// Every account's posted claim at this venue, by account.
    pub claims: BTreeMap<String, PostedClaim>,
}

impl Balances {
    fn empty(quota: u64) -> Self {
        Self {
            quota,
            pending_units: 0,
            posted_units: 0,
            voided_units: 0,
            pending: BTreeMap::new(),
            claims: BTreeMap::new(),
        }
    }

    /// Units neither pending nor posted.
    pub fn remaining(&self) -> u64 {
        self.quota
            .saturating_sub(self.pending_units)
            .saturating_sub(self.posted_units)
    }
}

/// Why a journal cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JournalError {
    /// An entry is missing, repeated or out of order.
    #[error("journal entry {found} found where entry {expected} was expected")]
    SequenceGap {
        /// The sequence expected.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// A reservation of zero units.
    #[error("entry {sequence} reserves no units")]
    ZeroUnits {
        /// The entry.
        sequence: u64,
    },
    /// A reservation whose transfer number is not above every earlier one.
    #[error("entry {sequence} reserves transfer {transfer_id}, whose number is not new")]
    TransferReused {
        /// The entry.
        sequence: u64,
        /// The transfer.
        transfer_id: TransferId,
    },
    /// A reservation for an account that already has a pending or posted transfer.
    #[error("entry {sequence} reserves for account {account_id:?}, which already has a transfer")]
    AccountBusy {
        /// The entry.
        sequence: u64,
        /// The account.
        account_id: String,
    },
    /// A reservation that passes the quota.
    #[error("entry {sequence} reserves {requested} units, only {remaining} remain")]
    OverQuota {
        /// The entry.
        sequence: u64,
        /// The units reserved.
        requested: u64,
        /// The units that remained.
        remaining: u64,
    },
    /// A post or void of a transfer that is not pending.
    #[error("entry {sequence} resolves transfer {transfer_id}, which is not pending")]
    NotPending {
        /// The entry.
        sequence: u64,
        /// The transfer.
        transfer_id: TransferId,
    },
    /// A post or void whose account or units differ from the reservation's.
    #[error("entry {sequence} does not match the reservation of transfer {transfer_id}")]
    Mismatch {
        /// The entry.
        sequence: u64,
        /// The transfer.
        transfer_id: TransferId,
    },
}

/// Replays a ledger's whole journal, from entry 1, into its balances; refuses a gap in the
/// sequence and any entry the ledger could not have written.
pub fn rebuild<'entry>(
    quota: u64,
    entries: impl IntoIterator<Item = &'entry JournalEntry>,
) -> Result<Balances, JournalError> {
    let mut balances = Balances::empty(quota);
    let mut expected: u64 = 1;
    let mut last_transfer_id: TransferId = 0;
    for entry in entries {
        let sequence = entry.sequence;
        if sequence != expected {
            return Err(JournalError::SequenceGap {
                expected,
                found: sequence,
            });
        }
        expected = expected.saturating_add(1);
        match &entry.kind {
            JournalKind::Reserved { expires_at_unix_ms } => {
                if entry.units == 0 {
                    return Err(JournalError::ZeroUnits { sequence });
                }
                if entry.transfer_id <= last_transfer_id {
                    return Err(JournalError::TransferReused {
                        sequence,
                        transfer_id: entry.transfer_id,
                    });
                }
                let busy = balances.claims.contains_key(&entry.account_id)
                    || balances
                        .pending
                        .values()
                        .any(|pending| pending.account_id == entry.account_id);
                if busy {
                    return Err(JournalError::AccountBusy {
                        sequence,
                        account_id: entry.account_id.clone(),
                    });
                }
                let remaining = balances.remaining();
                if entry.units > remaining {
                    return Err(JournalError::OverQuota {
                        sequence,
                        requested: entry.units,
                        remaining,
                    });
                }
                last_transfer_id = entry.transfer_id;
                // Cannot saturate: the units are at most what remains of the quota.
                balances.pending_units = balances.pending_units.saturating_add(entry.units);
                balances.pending.insert(
                    entry.transfer_id,
                    PendingBalance {
                        account_id: entry.account_id.clone(),
                        units: entry.units,
                        expires_at_unix_ms: *expires_at_unix_ms,
                    },
                );
            }
            JournalKind::Posted | JournalKind::Voided { .. } => {
                let Some(pending) = balances.pending.get(&entry.transfer_id) else {
                    return Err(JournalError::NotPending {
                        sequence,
                        transfer_id: entry.transfer_id,
                    });
                };
                if pending.account_id != entry.account_id || pending.units != entry.units {
                    return Err(JournalError::Mismatch {
                        sequence,
                        transfer_id: entry.transfer_id,
                    });
                }
                balances.pending.remove(&entry.transfer_id);
                balances.pending_units = balances.pending_units.saturating_sub(entry.units);
                if entry.kind == JournalKind::Posted {
                    balances.posted_units = balances.posted_units.saturating_add(entry.units);
                    balances.claims.insert(
                        entry.account_id.clone(),
                        PostedClaim {
                            transfer_id: entry.transfer_id,
                            units: entry.units,
                        },
                    );
                } else {
                    balances.voided_units = balances.voided_units.saturating_add(entry.units);
                }
            }
        }
    }
    Ok(balances)
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferStatus {
    /// Units reserved, waiting for the claim book.
    Pending,
    /// Units issued to the account.
    Posted {
        /// When.
        at_unix_ms: u64,
    },
    /// Voided by a void op.
    Cancelled {
        /// When.
        at_unix_ms: u64,
    },
    /// Voided when its timeout passed.
    Expired {
        /// When.
        at_unix_ms: u64,
    },
    /// Voided because the claim book refused the claim.
    Refused {
        /// The gateway of the transfer holding the claim.
        holder_gateway: String,
        /// When.
        at_unix_ms: u64,
    },
}

impl TransferStatus {
    /// The journal's record of moving from pending to this status; `None` for pending.
    fn journal_kind(&self) -> Option<JournalKind> {
        let reason = match self {
            Self::Pending => return None,
            Self::Posted { .. } => return Some(JournalKind::Posted),
            Self::Cancelled { .. } => VoidReason::Requested,
            Self::Expired { .. } => VoidReason::Expired,
            Self::Refused { .. } => VoidReason::ClaimRefused,
        };
        Some(JournalKind::Voided { reason })
    }
}

/// One transfer of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The allocation op that made it.
    pub op_id: String,
    /// The account the units are for.
    pub account_id: String,
    /// Its units.
    pub units: u64,
    /// When it was reserved.
    pub reserved_at_unix_ms: u64,
    /// When it expires unless posted.
    pub expires_at_unix_ms: u64,
    /// Where it stands.
    pub status: TransferStatus,
}

impl Transfer {
    /// The result of the allocation that made this transfer, as things stand.
    fn allocation_result(&self, transfer_id: TransferId) -> LedgerResult {
        match &self.status {
            TransferStatus::Pending => Ok(LedgerOutcome::Reserved {
                transfer_id,
                units: self.units,
                expires_at_unix_ms: self.expires_at_unix_ms,
            }),
            TransferStatus::Posted { .. } => Ok(LedgerOutcome::Allocated {
                transfer_id,
                units: self.units,
            }),
            TransferStatus::Cancelled { .. } => Err(LedgerError::Cancelled { transfer_id }),
            TransferStatus::Expired { .. } => Err(LedgerError::Expired { transfer_id }),
            TransferStatus::Refused { holder_gateway, .. } => Err(LedgerError::AlreadyClaimed {
                holder_gateway: holder_gateway.clone(),
            }),
        }
    }
}

/// A gateway op as recorded under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum RecordedRequest {
    Allocate(AllocateRequest),
    Void(VoidRequest),
}

/// A recorded op: its request, to tell a resubmission from a reuse, and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OpRecord {
    request: RecordedRequest,
    result: LedgerResult,
}

/// The quota ledger of one (campaign, gateway); everything its entity persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    campaign_id: String,
    gateway_id: String,
    quota: u64,
    /// The latest `now` given.
    clock_unix_ms: u64,
    pending_units: u64,
    posted_units: u64,
    voided_units: u64,
    next_transfer_id: TransferId,
    next_sequence: u64,
    /// Pending and posted transfers, and the last voided ones.
    transfers: BTreeMap<TransferId, Transfer>,
    /// Each account's pending or posted transfer here.
    live_by_account: BTreeMap<String, TransferId>,
    /// Voided transfers still remembered, oldest first.
    voided_order: VecDeque<TransferId>,
    /// Recorded gateway ops by id.
    ops: BTreeMap<String, OpRecord>,
    /// Settled ops still remembered, oldest first.
    settled_ops: VecDeque<String>,
}

impl Ledger {
    /// A ledger granting `quota` units of `campaign_id` through `gateway_id`.
    pub fn new(
        campaign_id: impl Into<String>,
        gateway_id: impl Into<String>,
        quota: u64,
    ) -> Result<Self, LedgerError> {
        if quota == 0 {
            return Err(LedgerError::ZeroQuota);
        }
        Ok(Self {
            campaign_id: campaign_id.into(),
            gateway_id: gateway_id.into(),
            quota,
            clock_unix_ms: 0,
            pending_units: 0,
            posted_units: 0,
            voided_units: 0,
            next_transfer_id: 1,
            next_sequence: 1,
            transfers: BTreeMap::new(),
            live_by_account: BTreeMap::new(),
            voided_order: VecDeque::new(),
            ops: BTreeMap::new(),
            settled_ops: VecDeque::new(),
        })
    }

    /// The campaign.
    pub fn campaign_id(&self) -> &str {
        &self.campaign_id
    }

    /// The venue's gateway.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// The quota (credits).
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// The ledger's clock: the latest `now` it was given.
    pub fn clock_unix_ms(&self) -> u64 {
        self.clock_unix_ms
    }

    /// The sequence the next journal entry will have.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// A remembered transfer.
    pub fn transfer(&self, transfer_id: TransferId) -> Option<&Transfer> {
        self.transfers.get(&transfer_id)
    }

    /// The result recorded for a gateway op: an allocation's is [`LedgerOutcome::Reserved`]
    /// until it is resolved, then final. `None` for an op never seen (or forgotten, or refused
    /// from its request alone).
    pub fn result_of(&self, op_id: &str) -> Option<&LedgerResult> {
        self.ops.get(op_id).map(|record| &record.result)
    }

    /// The account's posted claim at this venue, if it has one.
    pub fn posted_claim(&self, account_id: &str) -> Option<PostedClaim> {
        let transfer_id = *self.live_by_account.get(account_id)?;
        let transfer = self.transfers.get(&transfer_id)?;
        matches!(transfer.status, TransferStatus::Posted { .. }).then_some(PostedClaim {
            transfer_id,
            units: transfer.units,
        })
    }

    /// Whether `op` is a gateway op recorded with these very fields: applying it again only
    /// answers its recorded result (and expires what is due, as every op does).
    pub fn is_recorded(&self, op: &LedgerOp) -> bool {
        let (op_id, request) = match op {
            LedgerOp::Allocate(request) => {
                (&request.op_id, RecordedRequest::Allocate(request.clone()))
            }
            LedgerOp::Void(request) => (&request.op_id, RecordedRequest::Void(request.clone())),
            LedgerOp::ClaimAnswer(_) | LedgerOp::Expire => return false,
        };
        self.ops
            .get(op_id)
            .is_some_and(|record| record.request == request)
    }

    /// How many ops and transfers are remembered, as (ops, transfers): bounded as the module
    /// says.
    pub fn n_remembered(&self) -> (usize, usize) {
        (self.ops.len(), self.transfers.len())
    }

    /// When the next pending transfer expires, for the shell's timer.
    pub fn next_expiry_unix_ms(&self) -> Option<u64> {
        self.transfers
            .values()
            .filter(|transfer| transfer.status == TransferStatus::Pending)
            .map(|transfer| transfer.expires_at_unix_ms)
            .min()
    }

    /// The live balances, comparable with [`rebuild`]'s.
    pub fn balances(&self) -> Balances {
        let mut balances = Balances::empty(self.quota);
        balances.pending_units = self.pending_units;
        balances.posted_units = self.posted_units;
        balances.voided_units = self.voided_units;
        for (transfer_id, transfer) in &self.transfers {
            match transfer.status {
                TransferStatus::Pending => {
                    balances.pending.insert(
                        *transfer_id,
                        PendingBalance {
                            account_id: transfer.account_id.clone(),
                            units: transfer.units,
                            expires_at_unix_ms: transfer.expires_at_unix_ms,
                        },
                    );
                }
                TransferStatus::Posted { .. } => {
                    balances.claims.insert(
                        transfer.account_id.clone(),
                        PostedClaim {
                            transfer_id: *transfer_id,
                            units: transfer.units,
                        },
                    );
                }
                TransferStatus::Cancelled { .. }
                | TransferStatus::Expired { .. }
                | TransferStatus::Refused { .. } => {}
            }
        }
        balances
    }

    /// Applies ops in order, each on its own: one failing does not stop the others.
    pub fn apply_batch(&mut self, ops: Vec<LedgerOp>, now_unix_ms: u64) -> Vec<Applied> {
        ops.into_iter()
            .map(|op| self.apply(op, now_unix_ms))
            .collect()
    }

    /// Applies one op at `now_unix_ms`, after expiring the pending transfers due by then.
    pub fn apply(&mut self, op: LedgerOp, now_unix_ms: u64) -> Applied {
        let mut effects = Vec::new();
        self.clock_unix_ms = self.clock_unix_ms.max(now_unix_ms);
        let expired = self.expire_due(&mut effects);
        let result = match op {
            LedgerOp::Allocate(request) => self.allocate(&request, &mut effects),
            LedgerOp::Void(request) => self.void(request, &mut effects),
            LedgerOp::ClaimAnswer(reply) => self.claim_answer(&reply, &mut effects),
            LedgerOp::Expire => Ok(LedgerOutcome::Swept { expired }),
        };
        Applied { result, effects }
    }

    fn expire_due(&mut self, effects: &mut Vec<LedgerEffect>) -> Vec<TransferId> {
        let due: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, transfer)| {
                transfer.status == TransferStatus::Pending
                    && transfer.expires_at_unix_ms <= self.clock_unix_ms
            })
            .map(|(transfer_id, _)| *transfer_id)
            .collect();
        for transfer_id in &due {
            let status = TransferStatus::Expired {
                at_unix_ms: self.clock_unix_ms,
            };
            self.resolve(*transfer_id, status, None, effects);
        }
        due
    }

    /// The recorded answer when `op_id` is known: the result for the same request, else
    /// [`LedgerError::IdReused`].
    fn replay(&self, op_id: &str, request: &RecordedRequest) -> Option<LedgerResult> {
        self.ops.get(op_id).map(|record| {
            if record.request == *request {
                record.result.clone()
            } else {
                Err(LedgerError::IdReused {
                    op_id: op_id.to_owned(),
                })
            }
        })
    }

    /// Records a settled op (one that will not change again) and forgets the oldest beyond
    /// [`SETTLED_OPS_KEPT`].
    fn record_settled(&mut self, op_id: String, request: RecordedRequest, result: LedgerResult) {
        self.ops.insert(op_id.clone(), OpRecord { request, result });
        self.settle(op_id);
    }

    fn settle(&mut self, op_id: String) {
        self.settled_ops.push_back(op_id);
        while self.settled_ops.len() > SETTLED_OPS_KEPT {
            if let Some(forgotten) = self.settled_ops.pop_front() {
                self.ops.remove(&forgotten);
            }
        }
    }

    fn allocate(
        &mut self,
        request: &AllocateRequest,
        effects: &mut Vec<LedgerEffect>,
    ) -> LedgerResult {
        validate_op_id(&request.op_id).map_err(|problem| LedgerError::InvalidOpId {
            op_id: quoted(&request.op_id),
            problem,
        })?;
        validate_account_id(&request.account_id).map_err(|problem| {
            LedgerError::InvalidAccountId {
                account_id: quoted(&request.account_id),
                problem,
            }
        })?;
        if request.units == 0 || request.units > self.quota {
            return Err(LedgerError::UnitsOutOfRange {
                units: request.units,
                max_units: self.quota,
            });
        }
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&request.timeout_ms) {
            return Err(LedgerError::TimeoutOutOfRange {
                timeout_ms: request.timeout_ms,
                min_ms: MIN_TIMEOUT_MS,
                max_ms: MAX_TIMEOUT_MS,
            });
        }
        let op_id = request.op_id.clone();
        let recorded = RecordedRequest::Allocate(request.clone());
        if let Some(result) = self.replay(&op_id, &recorded) {
            return result;
        }
        let remaining = self.remaining();
        let refusal_opt = match self.live_by_account.get(&request.account_id) {
            Some(transfer_id) => Some(self.busy_account_error(*transfer_id)),
            None if request.units > remaining => Some(LedgerError::QuotaExceeded {
                requested: request.units,
                remaining,
            }),
            None => None,
        };
        let next_transfer_id = match (refusal_opt, self.next_transfer_id.checked_add(1)) {
            (None, Some(next_transfer_id)) => next_transfer_id,
            (refused_opt, _) => {
                let error = refused_opt.unwrap_or(LedgerError::Exhausted);
                self.record_settled(op_id, recorded, Err(error.clone()));
                return Err(error);
            }
        };
        let transfer_id = self.next_transfer_id;
        self.next_transfer_id = next_transfer_id;
        let expires_at_unix_ms = self.clock_unix_ms.saturating_add(request.timeout_ms);
        let transfer = Transfer {
            op_id: op_id.clone(),
            account_id: request.account_id.clone(),
            units: request.units,
            reserved_at_unix_ms: self.clock_unix_ms,
            expires_at_unix_ms,
            status: TransferStatus::Pending,
        };
        // Cannot saturate: the units are at most what remains of the quota.
        self.pending_units = self.pending_units.saturating_add(request.units);
        self.live_by_account
            .insert(request.account_id.clone(), transfer_id);
        self.journal(
            op_id.clone(),
            transfer_id,
            &transfer,
            JournalKind::Reserved { expires_at_unix_ms },
            effects,
        );
        effects.push(LedgerEffect::ToClaimBook(ClaimMessage::HoldClaim {
            transfer: self.transfer_ref(transfer_id, &transfer),
            units: request.units,
        }));
        let result = transfer.allocation_result(transfer_id);
        self.transfers.insert(transfer_id, transfer);
        // Not settled: kept while the transfer is pending or posted.
        self.ops.insert(
            op_id,
            OpRecord {
                request: recorded,
                result: result.clone(),
            },
        );
        result
    }

    fn busy_account_error(&self, transfer_id: TransferId) -> LedgerError {
        match self
            .transfers
            .get(&transfer_id)
            .map(|transfer| &transfer.status)
        {
            Some(TransferStatus::Pending) => LedgerError::AllocationInProgress { transfer_id },
            _ => LedgerError::AlreadyClaimed {
                holder_gateway: self.gateway_id.clone(),
            },
        }
    }

    fn void(&mut self, request: VoidRequest, effects: &mut Vec<LedgerEffect>) -> LedgerResult {
        validate_op_id(&request.op_id).map_err(|problem| LedgerError::InvalidOpId {
            op_id: quoted(&request.op_id),
            problem,
        })?;
        let transfer_id = request.transfer_id;
        let op_id = request.op_id.clone();
        let recorded = RecordedRequest::Void(request);
        if let Some(result) = self.replay(&op_id, &recorded) {
            return result;
        }
        let known = self
            .transfers
            .get(&transfer_id)
            .map(|transfer| (transfer.status.clone(), transfer.units));
        let result = match known {
            None => Err(LedgerError::UnknownTransfer { transfer_id }),
            Some((TransferStatus::Pending, units)) => {
                let status = TransferStatus::Cancelled {
                    at_unix_ms: self.clock_unix_ms,
                };
                self.resolve(transfer_id, status, Some(op_id.clone()), effects);
                Ok(LedgerOutcome::Voided { transfer_id, units })
            }
            Some((TransferStatus::Posted { .. }, _)) => {
                Err(LedgerError::AlreadyPosted { transfer_id })
            }
            Some((TransferStatus::Expired { .. }, _)) => Err(LedgerError::Expired { transfer_id }),
            Some((TransferStatus::Cancelled { .. } | TransferStatus::Refused { .. }, _)) => {
                Err(LedgerError::AlreadyVoided { transfer_id })
            }
        };
        self.record_settled(op_id, recorded, result.clone());
        result
    }

    fn claim_answer(
        &mut self,
        reply: &ClaimBookReply,
        effects: &mut Vec<LedgerEffect>,
    ) -> LedgerResult {
        let named = reply.transfer();
        if named.campaign_id != self.campaign_id || named.gateway_id != self.gateway_id {
            return Err(LedgerError::WrongLedger {
                campaign_id: named.campaign_id.clone(),
                gateway_id: named.gateway_id.clone(),
            });
        }
        let transfer_id = named.transfer_id;
        let known = self
            .transfers
            .get(&transfer_id)
            .filter(|transfer| transfer.account_id == named.account_id)
            .map(|transfer| transfer.status.clone());
        let Some(status) = known else {
            // Forgotten, so voided long ago: a claim held for it must be let go.
            if let ClaimBookReply::ClaimHeld { transfer } = reply {
                effects.push(LedgerEffect::ToClaimBook(ClaimMessage::ReleaseClaim {
                    transfer: transfer.clone(),
                }));
            }
            return Err(LedgerError::UnknownTransfer { transfer_id });
        };
        match (reply, status) {
            (ClaimBookReply::ClaimHeld { .. }, TransferStatus::Pending) => {
                let status = TransferStatus::Posted {
                    at_unix_ms: self.clock_unix_ms,
                };
                self.resolve(transfer_id, status, None, effects);
            }
            (ClaimBookReply::ClaimHeld { transfer }, TransferStatus::Posted { .. }) => {
                effects.push(LedgerEffect::ToClaimBook(ClaimMessage::ConfirmClaim {
                    transfer: transfer.clone(),
                }));
            }
            (ClaimBookReply::ClaimHeld { transfer }, _) => {
                effects.push(LedgerEffect::ToClaimBook(ClaimMessage::ReleaseClaim {
                    transfer: transfer.clone(),
                }));
            }
            (ClaimBookReply::ClaimRefused { holder_gateway, .. }, TransferStatus::Pending) => {
                let status = TransferStatus::Refused {
                    holder_gateway: holder_gateway.clone(),
                    at_unix_ms: self.clock_unix_ms,
                };
                self.resolve(transfer_id, status, None, effects);
            }
            (ClaimBookReply::ClaimRefused { .. }, _) => {}
        }
        self.transfers.get(&transfer_id).map_or(
            Err(LedgerError::UnknownTransfer { transfer_id }),
            |transfer| transfer.allocation_result(transfer_id),
        )
    }

    /// Moves a pending transfer to `status` (posted or voided): balances, journal, the message
    /// to the claim book, and the allocation's final result. Does nothing to a transfer that is
    /// not pending, so a transfer is resolved at most once.
    fn resolve(
        &mut self,
        transfer_id: TransferId,
        status: TransferStatus,
        cause_op_id_opt: Option<String>,
        effects: &mut Vec<LedgerEffect>,
    ) {
        let Some(kind) = status.journal_kind() else {
            return;
        };
        let Some(transfer) = self.transfers.get_mut(&transfer_id) else {
            return;
        };
        if transfer.status != TransferStatus::Pending {
            return;
        }
        transfer.status = status;
        let transfer = transfer.clone();
        // Cannot saturate: the transfer's units are counted in the pending total.
        self.pending_units = self.pending_units.saturating_sub(transfer.units);
        let transfer_ref = self.transfer_ref(transfer_id, &transfer);
        let message = match &transfer.status {
            TransferStatus::Posted { .. } => {
                // Cannot saturate: pending + posted never passes the quota.
                self.posted_units = self.posted_units.saturating_add(transfer.units);
                ClaimMessage::ConfirmClaim {
                    transfer: transfer_ref,
                }
            }
            // Even a refused transfer: the book then knows it is dead, so a late duplicate of
            // its hold cannot take the claim once the holder lets go.
            _ => ClaimMessage::ReleaseClaim {
                transfer: transfer_ref,
            },
        };
        let voided = !matches!(transfer.status, TransferStatus::Posted { .. });
        if voided {
            self.voided_units = self.voided_units.saturating_add(transfer.units);
            self.live_by_account.remove(&transfer.account_id);
        }
        let journal_op_id = cause_op_id_opt.unwrap_or_else(|| transfer.op_id.clone());
        self.journal(journal_op_id, transfer_id, &transfer, kind, effects);
        effects.push(LedgerEffect::ToClaimBook(message));
        let result = transfer.allocation_result(transfer_id);
        if let Some(record) = self.ops.get_mut(&transfer.op_id) {
            record.result = result.clone();
            if voided {
                self.settle(transfer.op_id.clone());
            }
        }
        effects.push(LedgerEffect::AllocationResolved {
            op_id: transfer.op_id,
            result,
        });
        if voided {
            self.voided_order.push_back(transfer_id);
            while self.voided_order.len() > VOIDED_TRANSFERS_KEPT {
                if let Some(forgotten) = self.voided_order.pop_front() {
                    self.transfers.remove(&forgotten);
                }
            }
        }
    }

    fn remaining(&self) -> u64 {
        self.quota
            .saturating_sub(self.pending_units)
            .saturating_sub(self.posted_units)
    }

    fn transfer_ref(&self, transfer_id: TransferId, transfer: &Transfer) -> TransferRef {
        TransferRef {
            campaign_id: self.campaign_id.clone(),
            account_id: transfer.account_id.clone(),
            gateway_id: self.gateway_id.clone(),
            transfer_id,
        }
    }

    fn journal(
        &mut self,
        op_id: String,
        transfer_id: TransferId,
        transfer: &Transfer,
        kind: JournalKind,
        effects: &mut Vec<LedgerEffect>,
    ) {
        let entry = JournalEntry {
            sequence: self.next_sequence,
            op_id,
            transfer_id,
            account_id: transfer.account_id.clone(),
            units: transfer.units,
            kind,
            at_unix_ms: self.clock_unix_ms,
        };
        // 2^64 entries cannot be written; were it reached, the repeated sequence would make
        // `rebuild` refuse the journal rather than pass silently.
        self.next_sequence = self.next_sequence.saturating_add(1);
        effects.push(LedgerEffect::Journal(entry));
    }
}

#[cfg(test)]
mod simulation_tests;
#[cfg(test)]
mod tests;
