//! The node's HTTP listener: the client WebSocket `/ws`, the operator API
//! ([`crate::operator`]), health, readiness and metrics.

use crate::edge::Edge;
use crate::operator::OperatorAuth;
use actix_web::dev::ServerHandle;
use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};
use lanmesh_storage::{LedgerJournalStore, PresenceSampleStore, Stores};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// What `/readyz` asks: every dependency the node needs to serve.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

struct HttpState {
    registry: Registry,
    readiness: ReadinessCheck,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    match (state.readiness)() {
        Ok(()) => HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body(format!("not ready: {reason}\n")),
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    match crate::metrics::render(&state.registry) {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().body("cannot render metrics\n"),
    }
}

/// Binds `listen` and starts serving; returns the handle that stops the server and the future
/// that runs it.
pub fn serve(
    listen: SocketAddr,
    registry: Registry,
    readiness: ReadinessCheck,
    edge: Arc<Edge>,
    operator_auth: OperatorAuth,
    stores: &Stores,
    clock_simulation: crate::operator::clock::ClockSimulation,
) -> std::io::Result<(ServerHandle, actix_web::dev::Server)> {
    let state = web::Data::new(HttpState {
        registry,
        readiness,
    });
    let edge = web::Data::new(edge);
    let operator_auth = web::Data::new(operator_auth);
    // The operator API reads presence figures and ledger journals directly.
    let presence: web::Data<Arc<dyn PresenceSampleStore>> =
        web::Data::new(Arc::clone(&stores.presence));
    let journal: web::Data<Arc<dyn LedgerJournalStore>> =
        web::Data::new(Arc::clone(&stores.ledger_journal));
    let clock_simulation = web::Data::new(clock_simulation);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(edge.clone())
            .app_data(operator_auth.clone())
            .app_data(presence.clone())
            .app_data(journal.clone())
            .app_data(clock_simulation.clone())
            .configure(crate::operator::configure)
            .route("/ws", web::get().to(crate::edge::connection::websocket))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10)
    .bind(listen)?
    .run();
    Ok((server.handle(), server))
}
