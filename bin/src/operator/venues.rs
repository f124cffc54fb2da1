//! The venue routes of the operator API (S0): a gateway's registration, status and tier
//! history, and the first monitor's figures of one segment over a window.

use super::{OperatorAuth, bad_request, error_response, unavailable};
use crate::edge::Edge;
use crate::edge::gateway_ops::wire_gateway;
use crate::edge::protocol::GatewayStatusReply;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use lanmesh_actors::entities::gateway::{GatewayReply, GatewayRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::gateway::GatewayError;
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
    let query = GatewayRequest::Inspect;
    match edge
        .ask_entity::<_, GatewayReply>(EntityKind::Gateway, &gateway_id, &query, None)
        .await
    {
        Ok(GatewayReply::Status(view)) => HttpResponse::Ok().json(GatewayView {
            gateway: wire_gateway(&gateway_id, &view),
            online: view.online,
        }),
        Ok(GatewayReply::Refused(GatewayError::NotRegistered)) => error_response(
            StatusCode::NOT_FOUND,
            "unknown_gateway",
            &format!("no gateway {gateway_id:?} is registered"),
        ),
        Ok(other) => {
            tracing::error!(reply = ?other, "unexpected answer from a gateway entity");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected",
                "unexpected answer from the gateway",
            )
        }
        Err(error) => unavailable(&error),
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
