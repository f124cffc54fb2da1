//! The campaign operations of protocol version 1 (S0 steps 7–12).
//!
//! Gateways: `gateway.campaigns` (the notices in force for the venue), `gateway.enrol` (the
//! venue's current figures are measured and the campaign decides; an enrolled venue's ledger is
//! credited with its quota), `gateway.allocate` (a batch of allocations to accounts, answered
//! once each is final or the wait is over), `gateway.void`, `gateway.allocation_results`,
//! `gateway.ledger` and `gateway.report_usage`.
//!
//! Clients: `campaign.list` (the notices for the client's venue and what the account holds),
//! `campaign.enrol` and `campaign.request_units`, both allowed only from inside a venue enrolled
//! in the campaign that still meets the campaign's eligibility now: every request re-checks
//! the venue's current figures (S0 step 9) and a refusal lists the reasons.

use crate::edge::Edge;
use crate::edge::auth::ParsedKey;
use crate::edge::campaign_wire::{
    AllocateBatchRequest, AllocationResultsReply, AllocationResultsRequest, AllocationStatus,
    CampaignListReply, CampaignRef, ClientCampaignReply, ClientCampaignsReply, EnrolReply,
    LedgerReplyBody, ReportUsageRequest, RequestUnitsRequest, UnitRequestsReply,
    UnitRequestsRequest, VoidAllocationRequest, WireAllocationResult, WireCampaignNotice,
    WireHolding,
};
use crate::edge::certification_sweep::client_figures;
use crate::edge::gateway_ops::{gateway_status_view, inspect_gateway};
use crate::edge::ops::{ConnectionContext, OpResult, ask_session, bad_request, unexpected, value};
use crate::edge::protocol::{ErrorBody, ErrorCode};
use crate::edge::sessions::{wire_reward, wire_unit_request};
use futures_util::{StreamExt, TryStreamExt, stream};
use lanmesh_actors::entities::campaign::{CampaignReply, CampaignRequest, CampaignView};
use lanmesh_actors::entities::certification_policy::{PolicyReply, PolicyRequest};
use lanmesh_actors::entities::gateway::{
    GatewayOp, GatewayReply, GatewayRequest, GatewayStatusView,
};
use lanmesh_actors::entities::ledger::{
    LedgerEntityError, LedgerReply, LedgerRequest, MAX_ALLOCATIONS_PER_BATCH, MAX_RESULTS_PER_QUERY,
};
use lanmesh_actors::entities::user::{SessionOp, UserReply};
use lanmesh_actors::model::campaign::{
    CampaignError, CampaignStatus, Eligibility, check_eligibility, validate_campaign_id,
};
use lanmesh_actors::model::certification::{CertificationOutcome, WindowFigures};
use lanmesh_actors::model::entity_kind::{CERTIFICATION_POLICY_ID, EntityKind};
use lanmesh_actors::model::gateway::{DAY_MS, GatewayStatus};
use lanmesh_actors::model::ledger::{AllocateRequest, LedgerResult, VoidRequest, ledger_id};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a reservation waits for its claim when the gateway names no timeout.
const DEFAULT_ALLOCATION_TIMEOUT_MS: u64 = 30_000;
/// First pause before asking a ledger again for results still reserved; it doubles.
const FIRST_RESULTS_POLL: Duration = Duration::from_millis(5);
/// Longest pause between two such questions.
const MAX_RESULTS_POLL: Duration = Duration::from_millis(200);

/// A campaign's refusal as a client error.
pub fn campaign_refusal(error: CampaignError) -> ErrorBody {
    let message = error.to_string();
    let code = match error {
        CampaignError::InvalidId { .. }
        | CampaignError::Invalid { .. }
        | CampaignError::InvalidActivity { .. } => ErrorCode::BadRequest,
        CampaignError::NoSuchCampaign => ErrorCode::NoSuchCampaign,
        CampaignError::AlreadyExists => ErrorCode::Invalid,
        CampaignError::NotPublished
        | CampaignError::Closed
        | CampaignError::EnrolmentNotOpen { .. } => ErrorCode::CampaignNotOpen,
        CampaignError::NotEligible { reasons } => {
            return ErrorBody {
                reasons,
                ..ErrorBody::new(ErrorCode::NotEligible, message)
            };
        }
        CampaignError::BudgetExhausted { .. } => ErrorCode::BudgetExhausted,
        CampaignError::NotEnrolled { .. } => ErrorCode::NotEnrolled,
    };
    ErrorBody::new(code, message)
}

/// An entity's answer that does not fit the request, logged, as a client error.
pub fn unexpected_answer(from: &str, reply: &impl std::fmt::Debug) -> ErrorBody {
    tracing::error!(from, reply = ?reply, "unexpected answer from an entity");
    ErrorBody::new(ErrorCode::Unavailable, "unexpected answer from the service")
}

/// Asks a campaign entity; its refusals become client errors.
pub async fn ask_campaign(
    edge: &Edge,
    campaign_id: &str,
    request: &CampaignRequest,
) -> Result<CampaignReply, ErrorBody> {
    validate_campaign_id(campaign_id).map_err(campaign_refusal)?;
    match edge
        .ask_entity(EntityKind::Campaign, campaign_id, request, None)
        .await?
    {
        CampaignReply::Refused(error) => Err(campaign_refusal(error)),
        reply => Ok(reply),
    }
}

/// A campaign as its entity tells it.
pub async fn campaign_view(edge: &Edge, campaign_id: &str) -> Result<CampaignView, ErrorBody> {
    match ask_campaign(edge, campaign_id, &CampaignRequest::Inspect).await? {
        CampaignReply::View(view) => Ok(view),
        other => Err(unexpected_answer("campaign", &other)),
    }
}

/// Asks the ledger of `gateway_id` in `campaign_id`; "not open" is "not enrolled".
pub async fn ask_ledger(
    edge: &Edge,
    campaign_id: &str,
    gateway_id: &str,
    request: &LedgerRequest,
    msg_id_opt: Option<Uuid>,
) -> Result<LedgerReply, ErrorBody> {
    let ledger = ledger_id(campaign_id, gateway_id);
    match edge
        .ask_entity(EntityKind::Ledger, &ledger, request, msg_id_opt)
        .await?
    {
        LedgerReply::Refused(LedgerEntityError::NotOpen) => Err(ErrorBody::new(
            ErrorCode::NotEnrolled,
            "the venue is not enrolled in this campaign",
        )),
        LedgerReply::Refused(error) => Err(ErrorBody::new(ErrorCode::Invalid, error.to_string())),
        reply => Ok(reply),
    }
}

/// The tier names of the certification policy in force, lowest first (none without one).
pub async fn policy_tier_names(edge: &Edge) -> Result<Vec<String>, ErrorBody> {
    match edge
        .ask_entity(
            EntityKind::CertificationPolicy,
            CERTIFICATION_POLICY_ID,
            &PolicyRequest::Current,
            None,
        )
        .await?
    {
        PolicyReply::Current(policy_opt) => Ok(policy_opt
            .map(|policy| policy.tiers.into_iter().map(|tier| tier.name).collect())
            .unwrap_or_default()),
        other => Err(unexpected_answer("certification policy", &other)),
    }
}

/// The tier a gateway is certified at now, if it is.
pub fn current_tier(view: &GatewayStatusView) -> Option<String> {
    if view.status != GatewayStatus::Certified {
        return None;
    }
    view.history
        .iter()
        .rev()
        .find_map(|record| match &record.outcome {
            CertificationOutcome::Certified { tier, .. } => Some(tier.clone()),
            CertificationOutcome::Rejected { .. } => None,
        })
}

/// What both monitors measured for a venue over its last `days` UTC days up to now (today
/// included, so far).
async fn venue_figures(
    edge: &Edge,
    view: &GatewayStatusView,
    days: u32,
) -> Result<WindowFigures, ErrorBody> {
    let now = edge.clock().now_unix_ms();
    let first_day = (now / DAY_MS).saturating_sub(u64::from(days.max(1)) - 1);
    let from_ms = first_day * DAY_MS;
    let client = client_figures(
        edge.deps.presence.as_ref(),
        &view.registration.segments,
        from_ms,
        now,
    )
    .await
    .map_err(|error| {
        tracing::warn!(error = %error, "segment figures not readable");
        ErrorBody::new(
            ErrorCode::Unavailable,
            "the venue's figures cannot be read now",
        )
    })?;
    let uptime_days: Vec<u64> = view
        .online_ms_by_day
        .range(first_day..)
        .map(|(_, online_ms)| *online_ms)
        .collect();
    Ok(WindowFigures {
        client_logins: client.logins,
        distinct_accounts: client.distinct_accounts,
        peak_concurrent_clients: client.peak_concurrent,
        client_online_ms: client.online_ms,
        gateway_online_ms: uptime_days.iter().sum(),
        gateway_days_online: u32::try_from(uptime_days.iter().filter(|ms| **ms > 0).count())
            .unwrap_or(u32::MAX),
        window_days: days,
    })
}

/// Refuses a request about a campaign this node knows to be closed.
fn check_not_closed(edge: &Edge, campaign_id: &str) -> Result<(), ErrorBody> {
    match edge.campaigns.listing(campaign_id) {
        Some(listing) if listing.status == CampaignStatus::Closed => Err(ErrorBody::new(
            ErrorCode::CampaignNotOpen,
            "the campaign is closed",
        )),
        _ => Ok(()),
    }
}

/// Gateways inspected at once when a campaign's notice set is worked out.
const GATEWAYS_INSPECTED_AT_ONCE: usize = 16;

/// The venues a campaign's notice goes to: every registered gateway whose certification meets
/// the campaign's tier rule now (the model's own rule, activity aside: that is checked at
/// enrolment against the figures of the day).
pub async fn noticed_gateways(
    edge: &Edge,
    view: &CampaignView,
) -> Result<BTreeSet<String>, ErrorBody> {
    let tier_names = policy_tier_names(edge).await?;
    let tier_rule = Eligibility {
        activity_opt: None,
        ..view.definition.eligibility.clone()
    };
    let inspected: Vec<(String, Option<String>)> = stream::iter(edge.venues.gateway_ids())
        .map(|gateway_id| async move {
            let tier_opt = inspect_gateway(edge, &gateway_id)
                .await?
                .ok()
                .and_then(|gateway| current_tier(&gateway));
            Ok::<_, ErrorBody>((gateway_id, tier_opt))
        })
        .buffer_unordered(GATEWAYS_INSPECTED_AT_ONCE)
        .try_collect()
        .await?;
    Ok(inspected
        .into_iter()
        .filter(|(_, tier_opt)| {
            check_eligibility(
                &tier_rule,
                &tier_names,
                tier_opt.as_deref(),
                &WindowFigures::default(),
            )
            .is_ok()
        })
        .map(|(gateway_id, _)| gateway_id)
        .collect())
}

/// `gateway.campaigns`.
pub(super) async fn gateway_campaigns(edge: &Edge, key: &ParsedKey) -> OpResult {
    gateway_status_view(edge, key).await?;
    let campaigns = edge
        .campaigns
        .published_for(&key.account)
        .iter()
        .map(WireCampaignNotice::of)
        .collect();
    value(&CampaignListReply {
        gateway_id: Some(key.account.clone()),
        campaigns,
    })
}

/// `gateway.enrol`: the campaign decides on the venue's figures measured now; the venue's
/// ledger is then credited with its quota (both steps are idempotent, so a retry after a
/// failure in between completes the enrolment).
pub(super) async fn gateway_enrol(edge: &Edge, key: &ParsedKey, request: CampaignRef) -> OpResult {
    let gateway = gateway_status_view(edge, key).await?;
    let campaign = campaign_view(edge, &request.campaign_id).await?;
    let figures = venue_figures(
        edge,
        &gateway,
        campaign.definition.eligibility.activity_days,
    )
    .await?;
    let enrol = CampaignRequest::EnrolVenue {
        gateway_id: key.account.clone(),
        tier_opt: current_tier(&gateway),
        tier_names: policy_tier_names(edge).await?,
        figures,
    };
    let quota = match ask_campaign(edge, &request.campaign_id, &enrol).await? {
        CampaignReply::VenueEnrolled { quota } => quota,
        other => return Err(unexpected_answer("campaign", &other)),
    };
    let user_limit = campaign.definition.user_limit;
    let open = LedgerRequest::Open {
        campaign_id: request.campaign_id.clone(),
        gateway_id: key.account.clone(),
        quota,
        user_limit,
    };
    match ask_ledger(edge, &request.campaign_id, &key.account, &open, None).await? {
        LedgerReply::Opened { quota, user_limit } => value(&EnrolReply {
            campaign_id: request.campaign_id,
            quota,
            user_limit,
        }),
        other => Err(unexpected_answer("ledger", &other)),
    }
}

fn results_of(reply: LedgerReply) -> Result<Vec<LedgerResult>, ErrorBody> {
    match reply {
        LedgerReply::Results(results) => Ok(results),
        other => Err(unexpected_answer("ledger", &other)),
    }
}

/// Asks the ledger about the results still reserved until each is final or `wait` is over.
async fn wait_until_final(
    edge: &Edge,
    campaign_id: &str,
    gateway_id: &str,
    results: &mut [WireAllocationResult],
    wait: Duration,
) -> Result<(), ErrorBody> {
    let deadline = Instant::now() + wait;
    let mut pause = FIRST_RESULTS_POLL;
    loop {
        let waiting: Vec<String> = results
            .iter()
            .filter(|result| !result.is_final())
            .map(|result| result.op_id.clone())
            .collect();
        if waiting.is_empty() || Instant::now() + pause > deadline {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RESULTS_POLL);
        let query = LedgerRequest::Results {
            op_ids: waiting.clone(),
        };
        let recorded = match ask_ledger(edge, campaign_id, gateway_id, &query, None).await? {
            LedgerReply::Recorded(recorded) => recorded,
            other => return Err(unexpected_answer("ledger", &other)),
        };
        for (op_id, result_opt) in waiting.iter().zip(recorded) {
            let fresh = WireAllocationResult::of(op_id, result_opt.as_ref());
            if let Some(slot) = results.iter_mut().find(|result| result.op_id == *op_id)
                && fresh.status != AllocationStatus::Unknown
            {
                *slot = fresh;
            }
        }
    }
}

/// `gateway.allocate`.
pub(super) async fn gateway_allocate(
    edge: &Edge,
    key: &ParsedKey,
    request: AllocateBatchRequest,
) -> OpResult {
    if !(1..=MAX_ALLOCATIONS_PER_BATCH).contains(&request.allocations.len()) {
        return Err(bad_request(format!(
            "a batch holds 1 to {MAX_ALLOCATIONS_PER_BATCH} allocations"
        )));
    }
    check_not_closed(edge, &request.campaign_id)?;
    gateway_status_view(edge, key).await?;
    let requests: Vec<AllocateRequest> = request
        .allocations
        .iter()
        .map(|allocation| AllocateRequest {
            op_id: allocation.op_id.clone(),
            account_id: allocation.account.clone(),
            units: allocation.units,
            timeout_ms: allocation
                .timeout_ms
                .unwrap_or(DEFAULT_ALLOCATION_TIMEOUT_MS),
        })
        .collect();
    let metrics = &edge.deps.metrics;
    metrics
        .allocations_requested
        .inc_by(u64::try_from(requests.len()).unwrap_or(u64::MAX));
    let batch = LedgerRequest::Allocate { requests };
    // One message id for every attempt: a retried batch is applied once.
    let reply = ask_ledger(
        edge,
        &request.campaign_id,
        &key.account,
        &batch,
        Some(Uuid::now_v7()),
    )
    .await?;
    let mut results: Vec<WireAllocationResult> = request
        .allocations
        .iter()
        .zip(results_of(reply)?)
        .map(|(allocation, result)| WireAllocationResult::of(&allocation.op_id, Some(&result)))
        .collect();
    wait_until_final(
        edge,
        &request.campaign_id,
        &key.account,
        &mut results,
        edge.limits.allocation_wait,
    )
    .await?;
    let n_final = results.iter().filter(|result| result.is_final()).count();
    metrics
        .allocations_final
        .inc_by(u64::try_from(n_final).unwrap_or(u64::MAX));
    value(&AllocationResultsReply { results })
}

/// `gateway.void`.
pub(super) async fn gateway_void(
    edge: &Edge,
    key: &ParsedKey,
    request: VoidAllocationRequest,
) -> OpResult {
    gateway_status_view(edge, key).await?;
    let void = LedgerRequest::Void(VoidRequest {
        op_id: request.op_id.clone(),
        transfer_id: request.transfer_id,
    });
    let reply = ask_ledger(edge, &request.campaign_id, &key.account, &void, None).await?;
    let results = results_of(reply)?
        .iter()
        .map(|result| WireAllocationResult::of(&request.op_id, Some(result)))
        .collect();
    value(&AllocationResultsReply { results })
}

/// `gateway.allocation_results`.
pub(super) async fn gateway_allocation_results(
    edge: &Edge,
    key: &ParsedKey,
    request: AllocationResultsRequest,
) -> OpResult {
    if !(1..=MAX_RESULTS_PER_QUERY).contains(&request.op_ids.len()) {
        return Err(bad_request(format!(
            "ask about 1 to {MAX_RESULTS_PER_QUERY} op ids"
        )));
    }
    gateway_status_view(edge, key).await?;
    let query = LedgerRequest::Results {
        op_ids: request.op_ids.clone(),
    };
    match ask_ledger(edge, &request.campaign_id, &key.account, &query, None).await? {
        LedgerReply::Recorded(recorded) => value(&AllocationResultsReply {
            results: request
                .op_ids
                .iter()
                .zip(recorded)
                .map(|(op_id, result_opt)| WireAllocationResult::of(op_id, result_opt.as_ref()))
                .collect(),
        }),
        other => Err(unexpected_answer("ledger", &other)),
    }
}

/// `gateway.ledger`.
pub(super) async fn gateway_ledger(edge: &Edge, key: &ParsedKey, request: CampaignRef) -> OpResult {
    gateway_status_view(edge, key).await?;
    match ask_ledger(
        edge,
        &request.campaign_id,
        &key.account,
        &LedgerRequest::Inspect,
        None,
    )
    .await?
    {
        LedgerReply::Balances { balances, .. } => value(&LedgerReplyBody {
            campaign_id: request.campaign_id,
            quota: balances.quota,
            pending_units: balances.pending_units,
            posted_units: balances.posted_units,
            remaining_units: balances.remaining(),
            n_accounts: u64::try_from(balances.claims.len()).unwrap_or(u64::MAX),
        }),
        other => Err(unexpected_answer("ledger", &other)),
    }
}

/// `gateway.report_usage`.
pub(super) async fn gateway_report_usage(
    edge: &Edge,
    key: &ParsedKey,
    request: ReportUsageRequest,
) -> OpResult {
    gateway_status_view(edge, key).await?;
    let report = LedgerRequest::ReportUsage {
        account_id: request.account,
        used_total: request.used_total,
    };
    match ask_ledger(edge, &request.campaign_id, &key.account, &report, None).await? {
        LedgerReply::Done => Ok(rmpv::Value::Map(Vec::new())),
        other => Err(unexpected_answer("ledger", &other)),
    }
}

/// The venue a client request comes from, checked against the campaign now: the venue is
/// enrolled in the open campaign and still meets its eligibility. Returns the venue's gateway
/// and the campaign's per-user limit.
async fn check_client_venue(
    edge: &Edge,
    address_opt: Option<std::net::IpAddr>,
    campaign_id: &str,
) -> Result<(String, u64), ErrorBody> {
    let Some((_, gateway_id)) = address_opt.and_then(|address| edge.venues.venue_of(address))
    else {
        return Err(ErrorBody::new(
            ErrorCode::NotEnrolled,
            "this connection does not come from a registered venue",
        ));
    };
    check_not_closed(edge, campaign_id)?;
    let check = CampaignRequest::CheckVenue {
        gateway_id: gateway_id.clone(),
    };
    let (eligibility, user_limit) = match ask_campaign(edge, campaign_id, &check).await? {
        CampaignReply::VenueChecked {
            eligibility,
            user_limit,
            ..
        } => (eligibility, user_limit),
        other => return Err(unexpected_answer("campaign", &other)),
    };
    let gateway = match inspect_gateway(edge, &gateway_id).await? {
        Ok(view) => view,
        Err(error) => {
            return Err(ErrorBody::new(
                ErrorCode::Unavailable,
                format!("the venue's gateway cannot be read: {error:?}"),
            ));
        }
    };
    let figures = venue_figures(edge, &gateway, eligibility.activity_days).await?;
    let tier_names = policy_tier_names(edge).await?;
    let tier_opt = current_tier(&gateway);
    check_eligibility(&eligibility, &tier_names, tier_opt.as_deref(), &figures)
        .map_err(|reasons| campaign_refusal(CampaignError::NotEligible { reasons }))?;
    Ok((gateway_id, user_limit))
}

/// Longest note a client may send with a request for units, in characters.
const MAX_UNIT_REQUEST_NOTE_CHARS: usize = 256;
/// Longest client-chosen id of a request for units, in characters.
const MAX_UNIT_REQUEST_ID_CHARS: usize = 64;

/// `campaign.list`.
pub(super) async fn client_campaigns(
    edge: &Edge,
    context: &ConnectionContext,
    key: &ParsedKey,
) -> OpResult {
    let (holdings, rewards) = match ask_session(edge, key, SessionOp::Campaigns, None).await? {
        UserReply::Campaigns { holdings, rewards } => (holdings, rewards),
        other => return Err(unexpected(&other)),
    };
    let (gateway_id, campaigns) = edge.client_notices(context.peer_ip());
    value(&ClientCampaignsReply {
        gateway_id,
        campaigns,
        holdings: holdings.iter().map(WireHolding::of).collect(),
        rewards: rewards.iter().map(wire_reward).collect(),
    })
}

/// `campaign.enrol`: the client enrols through the venue it connects from.
pub(super) async fn client_enrol(
    edge: &Edge,
    context: &ConnectionContext,
    key: &ParsedKey,
    request: CampaignRef,
) -> OpResult {
    let (gateway_id, _) = check_client_venue(edge, context.peer_ip(), &request.campaign_id).await?;
    let enrol = SessionOp::EnrolCampaign {
        campaign_id: request.campaign_id.clone(),
        gateway_id,
    };
    match ask_session(edge, key, enrol, None).await? {
        UserReply::Enrolled(holding) => value(&ClientCampaignReply {
            campaign_id: request.campaign_id,
            gateway_id: holding.enrolled_via_opt.unwrap_or_default(),
        }),
        other => Err(unexpected(&other)),
    }
}

/// `campaign.request_units`: the client asks its venue's gateway for units; the request is
/// kept by the gateway and pushed to its admin.
pub(super) async fn client_request_units(
    edge: &Edge,
    context: &ConnectionContext,
    key: &ParsedKey,
    request: RequestUnitsRequest,
) -> OpResult {
    let id_chars = request.request_id.chars().count();
    if !(1..=MAX_UNIT_REQUEST_ID_CHARS).contains(&id_chars)
        || request.request_id.chars().any(char::is_control)
    {
        return Err(bad_request(format!(
            "request_id is 1 to {MAX_UNIT_REQUEST_ID_CHARS} characters without control characters"
        )));
    }
    if request.note.chars().count() > MAX_UNIT_REQUEST_NOTE_CHARS
        || request.note.chars().any(char::is_control)
    {
        return Err(bad_request(format!(
            "note is at most {MAX_UNIT_REQUEST_NOTE_CHARS} characters without control characters"
        )));
    }
    // The key is checked by the account before anything reaches the gateway.
    match ask_session(edge, key, SessionOp::Campaigns, None).await? {
        UserReply::Campaigns { .. } => {}
        other => return Err(unexpected(&other)),
    }
    let (gateway_id, user_limit) =
        check_client_venue(edge, context.peer_ip(), &request.campaign_id).await?;
    if !(1..=user_limit).contains(&request.units) {
        return Err(bad_request(format!(
            "units is 1 to {user_limit}, the campaign's limit per user"
        )));
    }
    let ask = GatewayRequest::UnitRequest {
        campaign_id: request.campaign_id.clone(),
        account_id: key.account.clone(),
        units: request.units,
        note: request.note,
        request_id: request.request_id,
    };
    match edge
        .ask_entity(EntityKind::Gateway, &gateway_id, &ask, None)
        .await?
    {
        GatewayReply::Done => value(&ClientCampaignReply {
            campaign_id: request.campaign_id,
            gateway_id,
        }),
        other => Err(unexpected_answer("gateway", &other)),
    }
}

/// `gateway.unit_requests`.
pub(super) async fn gateway_unit_requests(
    edge: &Edge,
    key: &ParsedKey,
    request: UnitRequestsRequest,
) -> OpResult {
    let ask = GatewayRequest::Authed {
        session_id: key.session_id.clone(),
        key_hash: key.secret_hash.clone(),
        op: GatewayOp::UnitRequests {
            campaign_id_opt: request.campaign_id,
        },
    };
    match edge
        .ask_entity(EntityKind::Gateway, &key.account, &ask, None)
        .await?
    {
        GatewayReply::UnitRequests(records) => value(&UnitRequestsReply {
            requests: records.iter().map(wire_unit_request).collect(),
        }),
        GatewayReply::Refused(error) => Err(ErrorBody::new(
            ErrorCode::KeyInvalid,
            format!("refused by the gateway: {error:?}"),
        )),
        other => Err(unexpected_answer("gateway", &other)),
    }
}
