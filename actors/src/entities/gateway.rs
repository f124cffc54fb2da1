//! The gateway entity's wire messages and behaviour: registration, the credential its admin
//! logs in with, its connection (the second monitor counts the time it is online), amendments
//! and status. Requests from a logged-in gateway carry its session's key hash, checked here
//! on every one.

use crate::entities::{decode_request, encode};
use crate::host::behavior::{
    AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage, Push,
};
use crate::model::certification::CertificationPolicy;
use crate::model::entity_kind::EntityKind;
use crate::model::gateway::{
    CertificationRecord, ClientFigures, GatewayEffect, GatewayError, GatewayPush, GatewayState,
    GatewayStatus, Registration,
};
use crate::model::user::KeyRecord;
use serde::{Deserialize, Serialize};

/// A request to a gateway entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayRequest {
    /// Registers the gateway (its segments are already claimed in the directory).
    Register {
        /// What it registers.
        registration: Registration,
        /// argon2id PHC string of its password.
        credential_hash: String,
    },
    /// The password hash to verify a login against.
    Credential,
    /// The gateway logged in.
    Online {
        /// Its new session.
        session_id: String,
        /// The node holding the connection.
        node_id: String,
        /// The session's key.
        key: KeyRecord,
    },
    /// The gateway's connection went away.
    Offline {
        /// The session that ended.
        session_id: String,
    },
    /// Where the gateway stands, for an operator (no key).
    Inspect,
    /// Certify the gateway over any whole-day window (an operator's request).
    Certify {
        /// The policy in force.
        policy: CertificationPolicy,
        /// What the first monitor measured on the gateway's segments over the window.
        client: ClientFigures,
        /// The window's first day (start of a UTC day).
        window_start_unix_ms: u64,
        /// The window's end (start of a UTC day).
        window_end_unix_ms: u64,
    },
    /// Certify the window that started at `window_start_unix_ms` if it has ended and is still
    /// the gateway's current one (the automatic certification at a window's end).
    CertifyWindowEnd {
        /// The policy in force.
        policy: CertificationPolicy,
        /// What the first monitor measured on the gateway's segments over the window.
        client: ClientFigures,
        /// The window's first day, as the sender read it from the gateway.
        window_start_unix_ms: u64,
    },
    /// A request of the logged-in gateway.
    Authed {
        /// Its session.
        session_id: String,
        /// SHA-256 of the presented key's secret.
        key_hash: String,
        /// What it asks.
        op: GatewayOp,
    },
}

/// What a logged-in gateway asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayOp {
    /// Replace the registration (pending or rejected only); a new window starts.
    Amend {
        /// The new registration.
        registration: Registration,
    },
    /// Where the gateway stands.
    Status,
}

/// Where a gateway stands, as it and the operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatusView {
    /// The registration.
    pub registration: Registration,
    /// Pending, certified or rejected.
    pub status: GatewayStatus,
    /// Bumped by every registration or amendment.
    pub revision: u64,
    /// Start of the current monitoring window.
    pub window_start_unix_ms: u64,
    /// Whether the gateway is online.
    pub online: bool,
    /// The second monitor: online time per UTC day (days since the epoch), the last
    /// [`crate::model::gateway::UPTIME_DAYS_KEPT`] days, up to now.
    pub online_ms_by_day: std::collections::BTreeMap<u64, u64>,
    /// Certification results, oldest first.
    pub history: Vec<CertificationRecord>,
}

/// A gateway entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayReply {
    /// Done.
    Done,
    /// The password hash.
    Credential {
        /// argon2id PHC string.
        credential_hash: String,
    },
    /// Logged in; a result decided while the gateway was offline comes with it.
    Online {
        /// The gateway's state.
        status: GatewayStatusView,
        /// The result it had not received.
        undelivered_opt: Option<CertificationRecord>,
    },
    /// The gateway's state.
    Status(GatewayStatusView),
    /// The certification decided.
    Certified(CertificationRecord),
    /// Refused.
    Refused(GatewayError),
}

/// The gateway behaviour.
#[derive(Debug)]
pub struct GatewayEntity;

fn status_view(state: &GatewayState, now_unix_ms: u64) -> Result<GatewayStatusView, GatewayError> {
    let registration = state
        .registration_opt
        .clone()
        .ok_or(GatewayError::NotRegistered)?;
    Ok(GatewayStatusView {
        registration,
        status: state.status,
        revision: state.revision,
        window_start_unix_ms: state.window_start_unix_ms,
        online: state.connection_opt.is_some(),
        online_ms_by_day: state.uptime_by_day(now_unix_ms),
        history: state.history.clone(),
    })
}

impl EntityBehavior for GatewayEntity {
    const KIND: EntityKind = EntityKind::Gateway;
    type State = GatewayState;

    fn handle(
        state: &mut GatewayState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: GatewayRequest = decode_request(message)?;
        let now = message.now_unix_ms;
        let is_login = matches!(request, GatewayRequest::Online { .. });
        let outcome: Result<(GatewayReply, Vec<GatewayEffect>, bool), GatewayError> =
            match request {
                GatewayRequest::Register {
                    registration,
                    credential_hash,
                } => state
                    .register(registration, credential_hash, now)
                    .map(|((), effects)| (GatewayReply::Done, effects, true)),
                GatewayRequest::Credential => state.credential().map(|credential_hash| {
                    (
                        GatewayReply::Credential { credential_hash },
                        Vec::new(),
                        false,
                    )
                }),
                GatewayRequest::Online {
                    session_id,
                    node_id,
                    key,
                } => state
                    .online(session_id, node_id, key, now)
                    .and_then(|((), effects)| {
                        // The login's reply carries what waited for it.
                        let undelivered_opt = effects.iter().find_map(|effect| match effect {
                            GatewayEffect::Push {
                                push: GatewayPush::Certification(record),
                                ..
                            } => Some(record.clone()),
                            GatewayEffect::Audit { .. } => None,
                        });
                        let reply = GatewayReply::Online {
                            status: status_view(state, now)?,
                            undelivered_opt,
                        };
                        Ok((reply, effects, true))
                    }),
                GatewayRequest::Certify {
                    policy,
                    client,
                    window_start_unix_ms,
                    window_end_unix_ms,
                } => state
                    .certify(
                        &policy,
                        client,
                        window_start_unix_ms,
                        window_end_unix_ms,
                        now,
                    )
                    .map(|(record, effects)| (GatewayReply::Certified(record), effects, true)),
                GatewayRequest::CertifyWindowEnd {
                    policy,
                    client,
                    window_start_unix_ms,
                } => state
                    .certify_window_end(&policy, client, window_start_unix_ms, now)
                    .map(|(record, effects)| (GatewayReply::Certified(record), effects, true)),
                GatewayRequest::Inspect => status_view(state, now)
                    .map(|view| (GatewayReply::Status(view), Vec::new(), false)),
                GatewayRequest::Offline { session_id } => state
                    .offline(&session_id, now)
                    .map(|((), effects)| (GatewayReply::Done, effects, true)),
                GatewayRequest::Authed {
                    session_id,
                    key_hash,
                    op,
                } => state
                    .check_key(&session_id, &key_hash, now)
                    .and_then(|()| match op {
                        GatewayOp::Amend { registration } => state
                            .amend(registration, now)
                            .map(|((), effects)| (GatewayReply::Done, effects, true)),
                        GatewayOp::Status => status_view(state, now)
                            .map(|view| (GatewayReply::Status(view), Vec::new(), false)),
                    }),
            };
        let (reply, model_effects, state_changed) = match outcome {
            Ok(done) => done,
            // The model refuses before it changes anything.
            Err(error) => (GatewayReply::Refused(error), Vec::new(), false),
        };
        let mut effects = Effects {
            state_changed,
            reply_opt: Some(encode(&reply)?),
            ..Effects::default()
        };
        for effect in model_effects {
            match effect {
                GatewayEffect::Audit { action, detail } => effects.audit.push(AuditNote {
                    action: action.to_owned(),
                    detail,
                }),
                // What waited for a login travels in its reply (see `Online`).
                GatewayEffect::Push { .. } if is_login => {}
                GatewayEffect::Push {
                    node_id,
                    session_id,
                    push,
                } => effects.pushes.push(Push {
                    node_id,
                    session_id,
                    payload: encode(&push)?,
                }),
            }
        }
        Ok(effects)
    }
}
