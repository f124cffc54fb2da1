//! The venue routes of the operator API (S0): the certification policy in force, a gateway's
//! registration, status and tier history, certification on demand, and the first monitor's
//! figures of one segment over a window.

use super::{OperatorAuth, bad_request, error_response, unavailable, unexpected_reply};
use crate::edge::Edge;
use crate::edge::certification_sweep::client_figures;
use crate::edge::gateway_ops::wire_certification;
use crate::edge::gateway_ops::wire_gateway;
use crate::edge::protocol::GatewayStatusReply;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use lanmesh_actors::entities::certification_policy::{PolicyReply, PolicyRequest};
use lanmesh_actors::entities::gateway::{GatewayReply, GatewayRequest, GatewayStatusView};
use lanmesh_actors::model::certification::{CertificationPolicy, MAX_WINDOW_DAYS};
use lanmesh_actors::model::entity_kind::{CERTIFICATION_POLICY_ID, EntityKind};
use lanmesh_actors::model::gateway::{DAY_MS, GatewayError, is_whole_days};
use lanmesh_actors::model::policy_registry::PolicyChangeError;
use lanmesh_actors::model::segment::Segment;
use lanmesh_storage::{PresenceSampleStore, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `GET /api/v1/gateways/{gateway_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// Registration, status and history.
    #[serde(flatten)]
    pub gateway: GatewayStatusReply,
    /// Whether the gateway is logged in now.
    pub online: bool,
    /// The second monitor: the gateway's online time per UTC day, oldest first.
    pub uptime_by_day: Vec<DayUptime>,
}

/// A gateway's online time on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUptime {
    /// The day's start, Unix milliseconds (a UTC midnight).
    pub day_start_ms: u64,
    /// Online time that day.
    pub online_ms: u64,
}

pub(super) async fn get_gateway(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    gateway_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let gateway_id = gateway_id.into_inner();
    match inspect_gateway(&edge, &gateway_id).await {
        Ok(view) => HttpResponse::Ok().json(GatewayView {
            gateway: wire_gateway(&gateway_id, &view),
            online: view.online,
            uptime_by_day: view
                .online_ms_by_day
                .iter()
                .map(|(day, online_ms)| DayUptime {
                    day_start_ms: day.saturating_mul(DAY_MS),
                    online_ms: *online_ms,
                })
                .collect(),
        }),
        Err(response) => response,
    }
}

/// A gateway's state, or the operator's answer when there is none.
async fn inspect_gateway(edge: &Edge, gateway_id: &str) -> Result<GatewayStatusView, HttpResponse> {
    match crate::edge::gateway_ops::inspect_gateway(edge, gateway_id).await {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(GatewayError::NotRegistered)) => Err(error_response(
            StatusCode::NOT_FOUND,
            "unknown_gateway",
            &format!("no gateway {gateway_id:?} is registered"),
        )),
        Ok(Err(other)) => Err(unexpected_reply("gateway", &other)),
        Err(error) => Err(unavailable(&error)),
    }
}

/// The query of `GET /api/v1/segment-figures`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct FiguresQuery {
    segment: String,
    from_ms: i64,
    to_ms: i64,
}

/// `GET /api/v1/segment-figures`: the first monitor's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFiguresView {
    /// The segment, canonical.
    pub segment: String,
    /// The window, `[from_ms, to_ms)`.
    pub from_ms: i64,
    /// The window's end.
    pub to_ms: i64,
    /// Logins in the window.
    pub logins: u64,
    /// Distinct accounts seen.
    pub distinct_accounts: u64,
    /// Most clients online at once.
    pub peak_concurrent: u64,
    /// Client online time, summed.
    pub online_ms: u64,
}

pub(super) async fn get_segment_figures(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    presence: web::Data<Arc<dyn PresenceSampleStore>>,
    query: web::Query<FiguresQuery>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let query = query.into_inner();
    let segment = match Segment::from_canonical_str(&query.segment) {
        Ok(segment) => segment,
        Err(error) => return bad_request(&format!("segment: {error}")),
    };
    match presence
        .window_figures(&segment.to_string(), query.from_ms, query.to_ms)
        .await
    {
        Ok(figures) => HttpResponse::Ok().json(SegmentFiguresView {
            segment: segment.to_string(),
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            logins: figures.n_logins,
            distinct_accounts: figures.n_distinct_accounts,
            peak_concurrent: figures.peak_concurrent,
            online_ms: figures.online_ms,
        }),
        Err(error @ StoreError::InvalidValue { .. }) => bad_request(&error.to_string()),
        Err(error) => {
            tracing::warn!(error = %error, "segment figures not readable");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the presence store cannot answer now",
            )
        }
    }
}

async fn ask_policy(edge: &Edge, request: &PolicyRequest) -> Result<PolicyReply, HttpResponse> {
    edge.ask_entity(
        EntityKind::CertificationPolicy,
        CERTIFICATION_POLICY_ID,
        request,
        None,
    )
    .await
    .map_err(|error| unavailable(&error))
}

fn no_policy() -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        "no_policy",
        "no certification policy is in force; PUT one first",
    )
}

/// `GET /api/v1/certification-policy`.
pub(super) async fn get_policy(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    match ask_policy(&edge, &PolicyRequest::Current).await {
        Ok(PolicyReply::Current(Some(policy))) => HttpResponse::Ok().json(policy),
        Ok(PolicyReply::Current(None)) => no_policy(),
        Ok(other) => unexpected_reply("policy registry", &other),
        Err(response) => response,
    }
}

/// `PUT /api/v1/certification-policy`: a valid policy with a greater version.
pub(super) async fn put_policy(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    policy: web::Json<CertificationPolicy>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    match ask_policy(&edge, &PolicyRequest::Replace(policy.into_inner())).await {
        Ok(PolicyReply::Current(Some(policy))) => {
            tracing::info!(version = policy.version, "certification policy replaced");
            HttpResponse::Ok().json(policy)
        }
        Ok(PolicyReply::Refused(PolicyChangeError::Invalid(error))) => {
            bad_request(&error.to_string())
        }
        Ok(PolicyReply::Refused(PolicyChangeError::VersionNotNewer { current, given })) => {
            error_response(
                StatusCode::CONFLICT,
                "version_not_newer",
                &format!("version {given} is not greater than the version in force, {current}"),
            )
        }
        Ok(other) => unexpected_reply("policy registry", &other),
        Err(response) => response,
    }
}

/// The body of `POST /api/v1/gateways/{gateway_id}/certify`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertifyBody {
    /// The window's first day (start of a UTC day); default: the gateway's current window.
    #[serde(default)]
    from_ms: Option<u64>,
    /// The window's end (start of a UTC day); default: `from_ms` plus the policy's window.
    #[serde(default)]
    to_ms: Option<u64>,
}

/// `POST /api/v1/gateways/{gateway_id}/certify`: evaluates the gateway now under the policy in
/// force; the result is pushed to the gateway if it is online, else kept for its next login.
pub(super) async fn certify(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    presence: web::Data<Arc<dyn PresenceSampleStore>>,
    gateway_id: web::Path<String>,
    body: web::Json<CertifyBody>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let gateway_id = gateway_id.into_inner();
    let policy = match ask_policy(&edge, &PolicyRequest::Current).await {
        Ok(PolicyReply::Current(Some(policy))) => policy,
        Ok(PolicyReply::Current(None)) => return no_policy(),
        Ok(other) => return unexpected_reply("policy registry", &other),
        Err(response) => return response,
    };
    let view = match inspect_gateway(&edge, &gateway_id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let from_ms = body.from_ms.unwrap_or(view.window_start_unix_ms);
    let to_ms = body
        .to_ms
        .unwrap_or(from_ms + u64::from(policy.window_days) * DAY_MS);
    if !is_whole_days(from_ms, to_ms) || to_ms - from_ms > u64::from(MAX_WINDOW_DAYS) * DAY_MS {
        return bad_request(&format!(
            "the window is 1 to {MAX_WINDOW_DAYS} whole UTC days: from_ms and to_ms are midnights"
        ));
    }
    let client = match client_figures(
        presence.get_ref().as_ref(),
        &view.registration.segments,
        from_ms,
        to_ms,
    )
    .await
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(error = %error, "segment figures not readable");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the presence store cannot answer now",
            );
        }
    };
    let certify = GatewayRequest::Certify {
        policy,
        client,
        window_start_unix_ms: from_ms,
        window_end_unix_ms: to_ms,
    };
    match edge
        .ask_entity(EntityKind::Gateway, &gateway_id, &certify, None)
        .await
    {
        Ok(GatewayReply::Certified(record)) => HttpResponse::Ok().json(wire_certification(&record)),
        Ok(GatewayReply::Refused(error)) => bad_request(&format!("{error:?}")),
        Ok(other) => unexpected_reply("gateway", &other),
        Err(error) => unavailable(&error),
    }
}
