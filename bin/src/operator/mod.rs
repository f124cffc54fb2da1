//! The operator HTTP API (`/api/v1/...`, JSON), for the IM provider's staff. Every call needs
//! `Authorization: Bearer <operator.token>`; without a configured token the API answers 503.
//!
//! - `GET  /api/v1/partner-registry`: this server's partner id and every partner site;
//! - `PUT  /api/v1/partner-registry/server-id`: set this server's id as partner sites know it;
//! - `GET  /api/v1/partner-registry/sites/{site_id}`: one site;
//! - `PUT  /api/v1/partner-registry/sites/{site_id}`: add or change a site (its shared secret
//!   is sealed here and never returned).
//!
//! - `GET`, `PUT /api/v1/certification-policy`: the certification policy in force (a
//!   replacement must validate and carry a greater version);
//! - `GET  /api/v1/gateways/{gateway_id}`: a gateway's registration, status and tier history;
//! - `POST /api/v1/gateways/{gateway_id}/certify`: certify it now (`from_ms`/`to_ms`: whole
//!   UTC days; default the gateway's current window);
//! - `GET  /api/v1/segment-figures?segment=CIDR&from_ms=..&to_ms=..`: the first monitor's
//!   figures of one segment over a window.
//!
//! - `POST /api/v1/campaigns`: create a campaign (a draft); `GET /api/v1/campaigns`: all;
//! - `GET  /api/v1/campaigns/{campaign_id}`: one, with its enrolled venues and results;
//! - `POST /api/v1/campaigns/{campaign_id}/publish`: publish it; its notice goes out;
//! - `GET  /api/v1/campaigns/{campaign_id}/standings`: users' and venues' scores and ranks;
//! - `POST /api/v1/campaigns/{campaign_id}/close`: close it, pick winners, deliver rewards;
//! - `GET  /api/v1/campaigns/{campaign_id}/ledgers/{gateway_id}`: a venue's balances and
//!   whether its stored journal replays to them;
//! - `GET  /api/v1/campaigns/{campaign_id}/claims/{account_id}`: an account's one claim.
//!
//! - `GET  /api/v1/clock`: this node's domain clock;
//! - `POST /api/v1/clock/advance`: move it forward (`clock.allow_simulation` nodes only).
//!
//! Changes go to the entities concerned, which record an audit event for each.

use crate::config::SecretText;
use crate::edge::protocol::ErrorBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use sha2::{Digest, Sha256};

mod campaigns;
pub mod clock;
mod partners;
mod venues;

/// Largest JSON body the operator API reads.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Who may call the operator API.
pub struct OperatorAuth {
    token_hash_opt: Option<[u8; 32]>,
}

impl OperatorAuth {
    /// From `operator.token` (only its SHA-256 is kept).
    pub fn new(token_opt: Option<&SecretText>) -> Self {
        Self {
            token_hash_opt: token_opt.map(|token| Sha256::digest(token.0.as_bytes()).into()),
        }
    }

    /// The refusal of a request that does not carry the operator token, if it does not.
    pub(super) fn refusal(&self, request: &HttpRequest) -> Option<HttpResponse> {
        let Some(expected) = &self.token_hash_opt else {
            return Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "operator_api_disabled",
                "the operator API is off; set operator.token to turn it on",
            ));
        };
        let presented_opt = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        // Comparing digests: timing reveals nothing about the token itself.
        let matches = presented_opt
            .is_some_and(|presented| Sha256::digest(presented.as_bytes()).as_slice() == expected);
        if matches {
            None
        } else {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorised",
                "present the operator token as Authorization: Bearer <token>",
            );
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
            Some(response)
        }
    }
}

#[derive(Debug, Serialize)]
struct ApiError<'a> {
    error: &'a str,
    message: &'a str,
}

pub(super) fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ApiError {
        error: code,
        message,
    })
}

/// An entity answered something its caller does not expect (a bug, logged).
pub(super) fn unexpected_reply(what: &str, reply: &impl std::fmt::Debug) -> HttpResponse {
    tracing::error!(reply = ?reply, what, "unexpected answer from an entity");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "unexpected",
        &format!("unexpected answer from the {what}"),
    )
}

pub(super) fn bad_request(message: &str) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

pub(super) fn unavailable(error: &ErrorBody) -> HttpResponse {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &error.message,
    )
}

/// Adds the operator API's routes.
pub fn configure(config: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|error, _request| {
            let message = format!("the body is not acceptable JSON: {error}");
            actix_web::error::InternalError::from_response(error, bad_request(&message)).into()
        });
    config.app_data(json);
    config.service(
        web::scope("/api/v1/partner-registry")
            .route("", web::get().to(partners::get_registry))
            .route("/server-id", web::put().to(partners::put_server_id))
            .route("/sites/{site_id}", web::get().to(partners::get_site))
            .route("/sites/{site_id}", web::put().to(partners::put_site)),
    );
    config
        .route(
            "/api/v1/gateways/{gateway_id}",
            web::get().to(venues::get_gateway),
        )
        .route(
            "/api/v1/gateways/{gateway_id}/certify",
            web::post().to(venues::certify),
        )
        .route(
            "/api/v1/certification-policy",
            web::get().to(venues::get_policy),
        )
        .route(
            "/api/v1/certification-policy",
            web::put().to(venues::put_policy),
        )
        .route(
            "/api/v1/segment-figures",
            web::get().to(venues::get_segment_figures),
        )
        .route("/api/v1/campaigns", web::post().to(campaigns::create))
        .route("/api/v1/campaigns", web::get().to(campaigns::list))
        .route(
            "/api/v1/campaigns/{campaign_id}",
            web::get().to(campaigns::get),
        )
        .route(
            "/api/v1/campaigns/{campaign_id}/publish",
            web::post().to(campaigns::publish),
        )
        .route(
            "/api/v1/campaigns/{campaign_id}/standings",
            web::get().to(campaigns::standings),
        )
        .route(
            "/api/v1/campaigns/{campaign_id}/close",
            web::post().to(campaigns::close),
        )
        .route(
            "/api/v1/campaigns/{campaign_id}/ledgers/{gateway_id}",
            web::get().to(campaigns::get_ledger),
        )
        .route(
            "/api/v1/campaigns/{campaign_id}/claims/{account_id}",
            web::get().to(campaigns::get_claim),
        )
        .route("/api/v1/clock", web::get().to(clock::get_clock))
        .route(
            "/api/v1/clock/advance",
            web::post().to(clock::advance_clock),
        );
}
