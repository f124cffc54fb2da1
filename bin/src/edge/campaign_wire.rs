//! Wire types of the campaign operations (S0 steps 7–12) for gateways and clients, separate
//! from the domain types and converted explicitly (docs/protocol.md, "Campaigns").

use lanmesh_actors::model::campaign::CampaignKind;
use lanmesh_actors::model::campaign_directory::CampaignListing;
use lanmesh_actors::model::ledger::{LedgerError, LedgerOutcome, LedgerResult};
use serde::{Deserialize, Serialize};

/// A campaign's notice, pushed on publication (`campaign.notice` to clients,
/// `gateway.campaign_notice` to gateways) and again at every login while it is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCampaignNotice {
    /// The campaign.
    pub campaign_id: String,
    /// `activity`, `promotion` or `special_grant`.
    pub kind: CampaignKind,
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
    /// The lowest certification tier it is for, if any.
    pub min_tier: Option<String>,
    /// Enrolment opens.
    pub enrol_opens_at_ms: u64,
    /// Enrolment closes.
    pub enrol_closes_at_ms: u64,
}

impl WireCampaignNotice {
    /// The notice of a listing.
    pub fn of(listing: &CampaignListing) -> Self {
        Self {
            campaign_id: listing.campaign_id.clone(),
            kind: listing.kind,
            title: listing.title.clone(),
            text: listing.text.clone(),
            min_tier: listing.min_tier_opt.clone(),
            enrol_opens_at_ms: listing.enrol_opens_at_ms,
            enrol_closes_at_ms: listing.enrol_closes_at_ms,
        }
    }
}

/// Reply to `campaign.list` and `gateway.campaigns`: the notices in force for the venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignListReply {
    /// The venue's gateway (none for a client outside every venue).
    pub gateway_id: Option<String>,
    /// The notices.
    pub campaigns: Vec<WireCampaignNotice>,
}

/// A request naming one campaign (`gateway.enrol`, `gateway.ledger`, `campaign.enrol`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRef {
    /// The campaign.
    pub campaign_id: String,
}

/// Reply to `gateway.enrol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolReply {
    /// The campaign.
    pub campaign_id: String,
    /// The units the venue may allocate.
    pub quota: u64,
    /// The most units one account may receive.
    pub user_limit: u64,
}

/// One allocation a gateway asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAllocation {
    /// The gateway's id for it: resubmitting the same id with the same fields answers the
    /// first result; with other fields it is refused (`id_reused`).
    pub op_id: String,
    /// The account the units are for.
    pub account: String,
    /// How many units.
    pub units: u64,
    /// How long the units stay reserved waiting for the account's claim (default 30 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `gateway.allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateBatchRequest {
    /// The campaign.
    pub campaign_id: String,
    /// The allocations, applied in order.
    pub allocations: Vec<WireAllocation>,
}

/// `gateway.void`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidAllocationRequest {
    /// The campaign.
    pub campaign_id: String,
    /// The gateway's id for this cancellation.
    pub op_id: String,
    /// The pending transfer.
    pub transfer_id: u64,
}

/// `gateway.allocation_results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationResultsRequest {
    /// The campaign.
    pub campaign_id: String,
    /// The allocations' op ids.
    pub op_ids: Vec<String>,
}

/// Where an allocation (or a cancellation) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    /// Units reserved; the account's claim is being checked.
    Reserved,
    /// Final: the units are issued to the account.
    Allocated,
    /// Final: a cancellation released the units.
    Voided,
    /// Final for this op: refused (`error` says why).
    Refused,
    /// The ledger does not know the op (never seen, or refused from its request alone).
    Unknown,
}

/// The result of one allocation or cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAllocationResult {
    /// The op.
    pub op_id: String,
    /// Where it stands.
    pub status: AllocationStatus,
    /// The transfer, when there is one.
    pub transfer_id: Option<u64>,
    /// Its units.
    pub units: Option<u64>,
    /// When a reservation lapses unless the claim is confirmed.
    pub expires_at_ms: Option<u64>,
    /// Why it was refused: a stable code (`quota_exceeded`, `already_claimed`,
    /// `allocation_in_progress`, `units_out_of_range`, `id_reused`, …).
    pub error: Option<String>,
    /// The refusal for people, e.g. `3 units requested, 2 remaining`.
    pub message: Option<String>,
}

impl WireAllocationResult {
    /// The wire form of one ledger result of op `op_id` (`None`: the ledger does not know it).
    pub fn of(op_id: &str, result_opt: Option<&LedgerResult>) -> Self {
        let mut wire = Self {
            op_id: op_id.to_owned(),
            status: AllocationStatus::Unknown,
            transfer_id: None,
            units: None,
            expires_at_ms: None,
            error: None,
            message: None,
        };
        match result_opt {
            None => {}
            Some(Ok(LedgerOutcome::Reserved {
                transfer_id,
                units,
                expires_at_unix_ms,
            })) => {
                wire.status = AllocationStatus::Reserved;
                wire.transfer_id = Some(*transfer_id);
                wire.units = Some(*units);
                wire.expires_at_ms = Some(*expires_at_unix_ms);
            }
            Some(Ok(LedgerOutcome::Allocated { transfer_id, units })) => {
                wire.status = AllocationStatus::Allocated;
                wire.transfer_id = Some(*transfer_id);
                wire.units = Some(*units);
            }
            Some(Ok(LedgerOutcome::Voided { transfer_id, units })) => {
                wire.status = AllocationStatus::Voided;
                wire.transfer_id = Some(*transfer_id);
                wire.units = Some(*units);
            }
            Some(Ok(LedgerOutcome::Swept { .. })) => {}
            Some(Err(error)) => {
                wire.status = AllocationStatus::Refused;
                wire.error = Some(ledger_error_code(error).to_owned());
                wire.message = Some(error.to_string());
            }
        }
        wire
    }

    /// Whether the result will not change any more.
    pub fn is_final(&self) -> bool {
        self.status != AllocationStatus::Reserved
    }
}

/// The stable code of a ledger refusal.
pub fn ledger_error_code(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::ZeroQuota => "zero_quota",
        LedgerError::InvalidOpId { .. } => "invalid_op_id",
        LedgerError::InvalidAccountId { .. } => "invalid_account",
        LedgerError::UnitsOutOfRange { .. } => "units_out_of_range",
        LedgerError::TimeoutOutOfRange { .. } => "timeout_out_of_range",
        LedgerError::IdReused { .. } => "id_reused",
        LedgerError::QuotaExceeded { .. } => "quota_exceeded",
        LedgerError::AllocationInProgress { .. } => "allocation_in_progress",
        LedgerError::AlreadyClaimed { .. } => "already_claimed",
        LedgerError::UnknownTransfer { .. } => "unknown_transfer",
        LedgerError::AlreadyPosted { .. } => "already_posted",
        LedgerError::AlreadyVoided { .. } => "already_voided",
        LedgerError::Expired { .. } => "expired",
        LedgerError::Cancelled { .. } => "cancelled",
        LedgerError::WrongLedger { .. } => "wrong_ledger",
        LedgerError::Exhausted => "exhausted",
    }
}

/// Reply to `gateway.allocate`, `gateway.void` and `gateway.allocation_results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationResultsReply {
    /// One result per op, in the request's order.
    pub results: Vec<WireAllocationResult>,
}

/// Reply to `gateway.ledger`: the venue's balances in one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReplyBody {
    /// The campaign.
    pub campaign_id: String,
    /// The venue's quota.
    pub quota: u64,
    /// Units reserved and not yet confirmed.
    pub pending_units: u64,
    /// Units issued to accounts.
    pub posted_units: u64,
    /// Units left.
    pub remaining_units: u64,
    /// Accounts holding units of this venue.
    pub n_accounts: u64,
}

/// `gateway.report_usage`: how many of an account's units the venue has used so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportUsageRequest {
    /// The campaign.
    pub campaign_id: String,
    /// The account.
    pub account: String,
    /// Units used in total so far (a lower total than one already reported changes nothing).
    pub used_total: u64,
}

/// `campaign.request_units`: a client asks its venue's gateway for units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestUnitsRequest {
    /// The campaign.
    pub campaign_id: String,
    /// How many units.
    pub units: u64,
    /// A note for the venue's admin (at most 256 characters).
    #[serde(default)]
    pub note: String,
    /// The client's id for this request (a retry with the same id is shown once).
    pub request_id: String,
}

/// Reply to `campaign.enrol` and `campaign.request_units`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCampaignReply {
    /// The campaign.
    pub campaign_id: String,
    /// The venue's gateway the request went through.
    pub gateway_id: String,
}

/// What an account holds in one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHolding {
    /// The campaign.
    pub campaign_id: String,
    /// The venue's gateway the account enrolled through, if it enrolled.
    pub enrolled_via: Option<String>,
    /// When it enrolled.
    pub enrolled_at_ms: Option<u64>,
    /// The gateway whose quota the units came from, once issued.
    pub issued_by: Option<String>,
    /// Units issued to the account (0 before).
    pub units: u64,
    /// Units the venue reported used.
    pub used_units: u64,
}

impl WireHolding {
    /// The wire form of a holding.
    pub fn of(holding: &lanmesh_actors::model::user::CampaignHolding) -> Self {
        let issued_opt = holding.issued_opt.as_ref();
        Self {
            campaign_id: holding.campaign_id.clone(),
            enrolled_via: holding.enrolled_via_opt.clone(),
            enrolled_at_ms: holding.enrolled_at_unix_ms_opt,
            issued_by: issued_opt.map(|issued| issued.gateway_id.clone()),
            units: issued_opt.map_or(0, |issued| issued.units),
            used_units: issued_opt.map_or(0, |issued| issued.used_units),
        }
    }
}

/// Reply to `campaign.list`: the notices for the client's venue, what the account holds and
/// the rewards it won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCampaignsReply {
    /// The venue the connection comes from (none outside every venue).
    pub gateway_id: Option<String>,
    /// The notices in force for that venue.
    pub campaigns: Vec<WireCampaignNotice>,
    /// The account's holdings, oldest first.
    pub holdings: Vec<WireHolding>,
    /// The rewards it won, oldest first.
    pub rewards: Vec<crate::edge::protocol::WireReward>,
}

/// `gateway.unit_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRequestsRequest {
    /// Only this campaign's requests (all when left out).
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// Reply to `gateway.unit_requests`: clients' requests for units, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRequestsReply {
    /// The requests.
    pub requests: Vec<crate::edge::protocol::WireUnitRequest>,
}
