//! One WebSocket connection: reads frames under the size cap, enforces the request rate,
//! the `hello` handshake and the idle timeout, pings, runs requests (a few at once) and
//! writes their replies and the pushes of the sessions attached to it.

use crate::edge::Edge;
use crate::edge::client_address::{TrustedProxies, client_address};
use crate::edge::ops::{self, ConnectionContext};
use crate::edge::protocol::{ErrorBody, ErrorCode, ServerFrame};
use crate::edge::sessions::{CONNECTION_QUEUE, ConnectionLink, Detach};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Notify, Semaphore, mpsc};

/// `GET /ws`: upgrades to a WebSocket and serves it.
pub async fn websocket(
    request: HttpRequest,
    body: web::Payload,
    edge: web::Data<Arc<Edge>>,
) -> Result<HttpResponse, actix_web::Error> {
    let client_ip_opt = match request.peer_addr() {
        Some(peer) => match client_ip(&request, peer.ip(), &edge.deps.trusted_proxies) {
            Ok(client_ip) => Some(client_ip),
            Err(problem) => {
                tracing::info!(peer = %peer, problem = %problem, "websocket refused");
                return Ok(HttpResponse::BadRequest().body(format!("{problem}\n")));
            }
        },
        None => None,
    };
    let (response, session, stream) = actix_ws::handle(&request, body)?;
    let max_frame_bytes = edge.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_frame_bytes);
    let edge = Arc::clone(edge.get_ref());
    actix_web::rt::spawn(serve(edge, session, stream, client_ip_opt));
    Ok(response)
}

/// The client's address: the peer, or what a trusted proxy forwarded.
fn client_ip(
    request: &HttpRequest,
    peer_ip: IpAddr,
    trusted_proxies: &TrustedProxies,
) -> Result<IpAddr, String> {
    let mut forwarded_for_values = Vec::new();
    for value in request.headers().get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => forwarded_for_values.push(text),
            // Read only from a trusted proxy: anyone else's header is ignored anyway.
            Err(_) if trusted_proxies.contains(peer_ip) => {
                return Err("X-Forwarded-For is not printable ASCII".to_owned());
            }
            Err(_) => {}
        }
    }
    client_address(peer_ip, &forwarded_for_values, trusted_proxies)
        .map_err(|error| error.to_string())
}

/// Token bucket for one connection's requests.
struct RequestRate {
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

impl RequestRate {
    fn try_take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Encodes a reply or error frame.
pub fn encode_reply(id_opt: Option<u64>, result: &Result<rmpv::Value, ErrorBody>) -> Vec<u8> {
    let encoded = match result {
        Ok(body) => rmp_serde::to_vec_named(&ServerFrame {
            id: id_opt,
            op: "ok".to_owned(),
            body,
        }),
        Err(error) => rmp_serde::to_vec_named(&ServerFrame {
            id: id_opt,
            op: "error".to_owned(),
            body: error,
        }),
    };
    encoded.unwrap_or_else(|error| {
        tracing::error!(error = %error, "cannot encode a reply");
        Vec::new()
    })
}

async fn serve(
    edge: Arc<Edge>,
    mut socket: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    peer_ip_opt: Option<IpAddr>,
) {
    let limits = edge.limits.clone();
    let connection_id = edge.next_connection_id();
    let (frames_sender, mut frames) = mpsc::channel::<Vec<u8>>(CONNECTION_QUEUE);
    let kick = Arc::new(Notify::new());
    let context = Arc::new(ConnectionContext::new(
        ConnectionLink {
            connection_id,
            frames: frames_sender.clone(),
            kick: Arc::clone(&kick),
        },
        peer_ip_opt,
    ));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut rate = RequestRate {
        tokens: f64::from(limits.request_burst),
        last: Instant::now(),
        per_second: f64::from(limits.requests_per_second),
        burst: f64::from(limits.request_burst),
    };
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut stopping = edge.stopping.subscribe();
    edge.deps.metrics.connections_open.inc();
    tracing::debug!(connection = connection_id, peer = ?peer_ip_opt, "websocket opened");

    let close_reason: Option<CloseReason> = loop {
        let idle_deadline = last_heard + limits.idle_timeout;
        tokio::select! {
            message = stream.recv() => {
                last_heard = tokio::time::Instant::now();
                match message {
                    Some(Ok(AggregatedMessage::Binary(bytes))) => {
                        edge.deps.metrics.requests.inc();
                        if !rate.try_take(Instant::now()) {
                            edge.deps.metrics.requests_rate_limited.inc();
                            let refusal = ErrorBody {
                                retry_after_ms: Some(1000 / u64::from(limits.requests_per_second.max(1)) + 1),
                                ..ErrorBody::new(ErrorCode::RateLimited, "too many requests on this connection; slow down")
                            };
                            edge.deps.metrics.error_replies.inc();
                            let id_opt = ops::id_of(&bytes);
                            if frames_sender.send(encode_reply(id_opt, &Err(refusal))).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                            break None;
                        };
                        let edge = Arc::clone(&edge);
                        let context = Arc::clone(&context);
                        let replies = frames_sender.clone();
                        actix_web::rt::spawn(async move {
                            let reply = ops::handle_frame(&edge, &context, &bytes).await;
                            if reply.is_error {
                                edge.deps.metrics.error_replies.inc();
                            }
                            // The connection may have closed meanwhile; nobody to answer then.
                            let _ = replies.send(reply.frame).await;
                            drop(permit);
                        });
                    }
                    Some(Ok(AggregatedMessage::Text(_))) => {
                        let refusal = ErrorBody::new(ErrorCode::BadFrame, "text frames are not spoken here; send binary MessagePack frames");
                        if frames_sender.send(encode_reply(None, &Err(refusal))).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        if socket.pong(&payload).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                    Some(Err(ProtocolError::Overflow)) => {
                        let refusal = ErrorBody::new(ErrorCode::FrameTooLarge, format!("frames are limited to {} bytes", limits.max_frame_bytes));
                        let _ = socket.binary(encode_reply(None, &Err(refusal))).await;
                        break Some(CloseReason { code: CloseCode::Size, description: Some("frame too large".to_owned()) });
                    }
                    Some(Err(error)) => {
                        tracing::debug!(connection = connection_id, error = %error, "websocket protocol error");
                        break Some(CloseReason { code: CloseCode::Protocol, description: None });
                    }
                }
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { break None };
                if socket.binary(frame).await.is_err() {
                    break None;
                }
            }
            _ = ping.tick() => {
                if socket.ping(b"").await.is_err() {
                    break None;
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                break Some(CloseReason { code: CloseCode::Normal, description: Some("idle timeout".to_owned()) });
            }
            _ = stopping.wait_for(|stopping| *stopping) => {
                break Some(CloseReason { code: CloseCode::Away, description: Some("node stopping; reconnect and resume".to_owned()) });
            }
            () = kick.notified() => {
                break Some(CloseReason { code: CloseCode::Policy, description: Some("too slow to receive its pushes".to_owned()) });
            }
        }
    };
    for session in context.attached_sessions() {
        session.do_send(Detach(connection_id));
    }
    ops::connection_closed(&edge, &context).await;
    edge.deps.metrics.connections_open.dec();
    tracing::debug!(connection = connection_id, reason = ?close_reason, "websocket closed");
    let _ = socket.close(close_reason).await;
}
