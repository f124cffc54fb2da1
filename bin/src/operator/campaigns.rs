//! The operator's campaign calls (S0 steps 6, 7, 11 and 13): create a campaign, publish it
//! (its notice goes to the certified venues that meet its minimum tier, and to the clients
//! inside them), read it, its rankings and each venue's ledger — with the ledger's journal
//! replayed from storage and compared with the live balances — and close it, which picks the
//! winners and delivers their rewards.

use crate::edge::Edge;
use crate::edge::campaign_ops::{
    ask_campaign, ask_ledger, campaign_view, noticed_gateways, policy_tier_names, unexpected_answer,
};
use crate::edge::protocol::{ErrorBody, ErrorCode};
use crate::operator::{OperatorAuth, error_response, unexpected_reply};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{StreamExt, TryStreamExt, stream};
use lanmesh_actors::entities::campaign::{CampaignReply, CampaignRequest, CampaignView};
use lanmesh_actors::entities::campaign_directory::{
    CampaignDirectoryReply, CampaignDirectoryRequest,
};
use lanmesh_actors::entities::claim_book::{ClaimBookEntityReply, ClaimBookRequest};
use lanmesh_actors::entities::ledger::{LedgerReply, LedgerRequest};
use lanmesh_actors::model::campaign::{CampaignDefinition, Rankings, UserStanding, rank};
use lanmesh_actors::model::claim_book::claim_id;
use lanmesh_actors::model::entity_kind::{CAMPAIGN_DIRECTORY_ID, EntityKind};
use lanmesh_actors::model::ledger::{Balances, JournalEntry, ledger_id, rebuild};
use lanmesh_storage::LedgerJournalStore;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

/// Ledgers asked at once when gathering a campaign's standings.
const LEDGERS_ASKED_AT_ONCE: usize = 16;
/// Journal records read per page when replaying a ledger.
const JOURNAL_PAGE: u32 = 5_000;

/// An entity's refusal or silence as an HTTP answer.
fn refused(error: &ErrorBody) -> HttpResponse {
    let status = match error.code {
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NoSuchCampaign => StatusCode::NOT_FOUND,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    };
    let code = serde_json::to_value(error.code)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    error_response(status, &code, &error.message)
}

/// `POST /api/v1/campaigns` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateCampaignBody {
    /// The campaign's id (`a-z 0-9 _ -`, up to 64); creating it again with the same definition
    /// answers the campaign, with another definition it is refused.
    campaign_id: String,
    /// What the campaign is.
    definition: CampaignDefinition,
}

/// Answers `outcome` as JSON with `status`, or its refusal.
fn respond<Body: Serialize>(status: StatusCode, outcome: Result<Body, ErrorBody>) -> HttpResponse {
    match outcome {
        Ok(body) => HttpResponse::build(status).json(body),
        Err(error) => refused(&error),
    }
}

fn expect_view(reply: CampaignReply) -> Result<CampaignView, ErrorBody> {
    match reply {
        CampaignReply::View(view) => Ok(view),
        other => Err(unexpected_answer("campaign", &other)),
    }
}

/// `POST /api/v1/campaigns`: creates a campaign as a draft.
pub(super) async fn create(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    body: web::Json<CreateCampaignBody>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let body = body.into_inner();
    let outcome = async {
        let create = CampaignRequest::Create {
            definition: body.definition,
            tier_names: policy_tier_names(&edge).await?,
        };
        expect_view(ask_campaign(&edge, &body.campaign_id, &create).await?)
    }
    .await;
    respond(StatusCode::CREATED, outcome)
}

/// `GET /api/v1/campaigns`: every campaign as the directory lists it.
pub(super) async fn list(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let outcome = match edge
        .ask_entity(
            EntityKind::CampaignDirectory,
            CAMPAIGN_DIRECTORY_ID,
            &CampaignDirectoryRequest::List,
            None,
        )
        .await
    {
        Ok(CampaignDirectoryReply::Listing {
            revision,
            campaigns,
        }) => Ok(serde_json::json!({"revision": revision, "campaigns": campaigns})),
        Ok(other) => Err(unexpected_answer("campaign directory", &other)),
        Err(error) => Err(error),
    };
    respond(StatusCode::OK, outcome)
}

/// `GET /api/v1/campaigns/{campaign_id}`.
pub(super) async fn get(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    campaign_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    respond(StatusCode::OK, campaign_view(&edge, &campaign_id).await)
}

/// `POST /api/v1/campaigns/{campaign_id}/publish`: publishes a draft; its notice goes out.
pub(super) async fn publish(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    campaign_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let outcome = async {
        let view = campaign_view(&edge, &campaign_id).await?;
        let notice_gateways = noticed_gateways(&edge, &view).await?;
        let publish = CampaignRequest::Publish { notice_gateways };
        let published = expect_view(ask_campaign(&edge, &campaign_id, &publish).await?)?;
        // This node's connections hear of it at once; the others within one poll.
        edge.refresh_campaigns().await;
        Ok(published)
    }
    .await;
    respond(StatusCode::OK, outcome)
}

/// Every account's standing at every venue enrolled in the campaign.
async fn gather_standings(
    edge: &Edge,
    view: &CampaignView,
) -> Result<Vec<UserStanding>, ErrorBody> {
    let per_venue: Vec<Vec<UserStanding>> = stream::iter(view.venues.keys().cloned())
        .map(|gateway_id| async move {
            match ask_ledger(
                edge,
                &view.campaign_id,
                &gateway_id,
                &LedgerRequest::Standings,
                None,
            )
            .await?
            {
                LedgerReply::Standings(standings) => Ok(standings
                    .into_iter()
                    .map(|standing| UserStanding {
                        account_id: standing.account_id,
                        gateway_id: gateway_id.clone(),
                        units_allocated: standing.units_allocated,
                        units_used: standing.units_used,
                    })
                    .collect()),
                other => Err(unexpected_answer("ledger", &other)),
            }
        })
        .buffer_unordered(LEDGERS_ASKED_AT_ONCE)
        .try_collect()
        .await?;
    Ok(per_venue.into_iter().flatten().collect())
}

/// `GET /api/v1/campaigns/{campaign_id}/standings`: every user's and venue's score and rank
/// now, by the campaign's scoring rules.
pub(super) async fn standings(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    campaign_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let outcome: Result<Rankings, ErrorBody> = async {
        let view = campaign_view(&edge, &campaign_id).await?;
        let standings = gather_standings(&edge, &view).await?;
        let enrolled = view.venues.keys().map(String::as_str);
        Ok(rank(&view.definition.scoring, enrolled, &standings))
    }
    .await;
    respond(StatusCode::OK, outcome)
}

/// `POST /api/v1/campaigns/{campaign_id}/close`: closes the campaign on the standings now;
/// the winners' rewards go to their accounts and gateways. Closing again answers the same
/// results.
pub(super) async fn close(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    campaign_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let outcome = async {
        let view = campaign_view(&edge, &campaign_id).await?;
        let standings = gather_standings(&edge, &view).await?;
        match ask_campaign(&edge, &campaign_id, &CampaignRequest::Close { standings }).await? {
            CampaignReply::Closed(results) => {
                edge.refresh_campaigns().await;
                Ok(results)
            }
            other => Err(unexpected_answer("campaign", &other)),
        }
    }
    .await;
    respond(StatusCode::OK, outcome)
}

/// A venue's ledger with its journal checked.
#[derive(Debug, Serialize)]
struct LedgerAudit {
    /// The live balances.
    balances: Balances,
    /// Units left.
    remaining_units: u64,
    /// The most units one account may receive.
    user_limit: u64,
    /// Entries the journal should hold (the ledger's next sequence minus one).
    n_journal_entries_expected: u64,
    /// Entries read back from storage.
    n_journal_entries_stored: u64,
    /// Whether the balances replayed from the stored journal equal the live ones.
    journal_matches: bool,
    /// Why the stored journal could not be replayed, if it could not.
    journal_problem: Option<String>,
}

/// Reads a ledger's whole journal from storage and replays it.
async fn replay_journal(
    journal: &dyn LedgerJournalStore,
    ledger: &str,
    quota: u64,
) -> Result<(u64, Result<Balances, String>), String> {
    let mut entries: Vec<JournalEntry> = Vec::new();
    let mut after = 0;
    loop {
        let page = journal
            .read(ledger, after, JOURNAL_PAGE)
            .await
            .map_err(|error| error.to_string())?;
        let n_read = page.len();
        for record in page {
            after = record.sequence;
            let entry: JournalEntry = lanmesh_actors::entities::decode(&record.body)
                .map_err(|error| format!("entry {} does not decode: {error}", record.sequence))?;
            entries.push(entry);
        }
        if n_read < JOURNAL_PAGE as usize {
            break;
        }
    }
    let n_stored = u64::try_from(entries.len()).unwrap_or(u64::MAX);
    Ok((
        n_stored,
        rebuild(quota, &entries).map_err(|error| error.to_string()),
    ))
}

/// `GET /api/v1/campaigns/{campaign_id}/ledgers/{gateway_id}`: a venue's live balances, and
/// whether the journal in storage replays to exactly them.
pub(super) async fn get_ledger(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    journal: web::Data<Arc<dyn LedgerJournalStore>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let (campaign_id, gateway_id) = path.into_inner();
    let (balances, next_sequence, user_limit) = match ask_ledger(
        &edge,
        &campaign_id,
        &gateway_id,
        &LedgerRequest::Inspect,
        None,
    )
    .await
    {
        Ok(LedgerReply::Balances {
            balances,
            next_sequence,
            user_limit,
        }) => (balances, next_sequence, user_limit),
        Ok(other) => return unexpected_reply("ledger", &other),
        Err(error) => return refused(&error),
    };
    let ledger = ledger_id(&campaign_id, &gateway_id);
    let (n_stored, replayed) =
        match replay_journal(journal.get_ref().as_ref(), &ledger, balances.quota).await {
            Ok(read) => read,
            Err(problem) => {
                tracing::warn!(ledger = %ledger, problem = %problem, "ledger journal not readable");
                return error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &problem);
            }
        };
    let (journal_matches, journal_problem) = match replayed {
        Ok(rebuilt) => (rebuilt == balances, None),
        Err(problem) => (false, Some(problem)),
    };
    HttpResponse::Ok().json(LedgerAudit {
        remaining_units: balances.remaining(),
        balances,
        user_limit,
        n_journal_entries_expected: next_sequence.saturating_sub(1),
        n_journal_entries_stored: n_stored,
        journal_matches,
        journal_problem,
    })
}

/// `GET /api/v1/campaigns/{campaign_id}/claims/{account_id}`: where an account's one claim on
/// the campaign stands (free, held by a pending transfer, or confirmed, naming the venue).
pub(super) async fn get_claim(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    if let Some(refusal) = auth.refusal(&request) {
        return refusal;
    }
    let (campaign_id, account_id) = path.into_inner();
    let outcome = match edge
        .ask_entity(
            EntityKind::ClaimBook,
            &claim_id(&campaign_id, &account_id),
            &ClaimBookRequest::Inspect,
            None,
        )
        .await
    {
        Ok(ClaimBookEntityReply::State(state)) => Ok(state),
        Ok(other) => Err(unexpected_answer("claim book", &other)),
        Err(error) => Err(error),
    };
    respond(StatusCode::OK, outcome)
}
