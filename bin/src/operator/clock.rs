//! The clock routes of the operator API: read a node's domain clock, and advance it on a node
//! that allows simulation (`clock.allow_simulation`; rehearsal and test clusters). Advancing
//! lets a cluster live through monitoring windows in seconds: windows end, the certification
//! sweep runs, keys age. Time only moves forward; every node of a cluster must be advanced
//! alike, or their entities disagree about the time.

use super::{OperatorAuth, bad_request, error_response};
use crate::edge::Edge;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Whether this node's clock may be advanced (`clock.allow_simulation`).
#[derive(Debug, Clone, Copy)]
pub struct ClockSimulation {
    /// Advancing is allowed.
    pub allowed: bool,
}

/// `GET /api/v1/clock` and the answer to an advance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockView {
    /// The node's domain time, Unix milliseconds.
    pub now_ms: u64,
    /// How far it runs ahead of the wall clock.
    pub offset_ms: u64,
    /// Whether it may be advanced.
    pub simulation_allowed: bool,
}

/// The body of `POST /api/v1/clock/advance`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdvanceBody {
    /// How far to move the clock forward.
    by_ms: u64,
}

fn clock_view(edge: &Edge, simulation: ClockSimulation) -> ClockView {
    ClockView {
        now_ms: edge.clock().now_unix_ms(),
        offset_ms: edge.clock().offset_ms(),
        simulation_allowed: simulation.allowed,
    }
}

/// `GET /api/v1/clock`.
pub(super) async fn get_clock(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    simulation: web::Data<ClockSimulation>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    HttpResponse::Ok().json(clock_view(&edge, **simulation))
}

/// `POST /api/v1/clock/advance`: `{"by_ms": N}`, N ≥ 1.
pub(super) async fn advance_clock(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    simulation: web::Data<ClockSimulation>,
    body: web::Json<AdvanceBody>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    if !simulation.allowed {
        return error_response(
            StatusCode::FORBIDDEN,
            "clock_not_simulated",
            "this node's clock follows the wall clock; set clock.allow_simulation to advance it",
        );
    }
    if body.by_ms == 0 {
        return bad_request("by_ms must be at least 1");
    }
    match edge.clock().advance(body.by_ms) {
        Ok(offset_ms) => {
            tracing::warn!(
                by_ms = body.by_ms,
                offset_ms,
                "domain clock advanced by an operator"
            );
            HttpResponse::Ok().json(clock_view(&edge, **simulation))
        }
        Err(error) => bad_request(&error.to_string()),
    }
}
