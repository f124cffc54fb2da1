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
    GatewayStatus, Registration, UnitRequestRecord,
};
use crate::model::reward::Reward;
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
    /// A campaign closed and the venue won `reward` (sent at least once by the campaign's
    /// entity): kept once per campaign and pushed to the gateway when online. Answered `Done`,
    /// or `Refused(NotRegistered)` for a gateway that does not exist.
    GrantReward {
        /// What was won.
        reward: Reward,
    },
    /// A client asks the venue for campaign units (sent by the node after its own checks;
    /// a redelivery carries the same `request_id` and changes nothing): kept and pushed to the
    /// gateway when online. Answered `Done`, or `Refused(NotRegistered)`.
    UnitRequest {
        /// The campaign.
        campaign_id: String,
        /// The asking account.
        account_id: String,
        /// How many units it asks for.
        units: u64,
        /// The client's note.
        note: String,
        /// Chosen by the node; the de-duplication key.
        request_id: String,
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
    /// The clients' unit requests, newest first, of one campaign or of all.
    UnitRequests {
        /// The campaign, or `None` for all.
        campaign_id_opt: Option<String>,
    },
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
    /// Rewards the venue won in campaigns, oldest first.
    #[serde(default)]
    pub rewards: Vec<Reward>,
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
    /// The clients' unit requests, newest first.
    UnitRequests(Vec<UnitRequestRecord>),
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
        rewards: state.rewards.clone(),
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
        let outcome: Result<(GatewayReply, Vec<GatewayEffect>, bool), GatewayError> = match request
        {
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
                        GatewayEffect::Push { .. } | GatewayEffect::Audit { .. } => None,
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
            GatewayRequest::Inspect => {
                status_view(state, now).map(|view| (GatewayReply::Status(view), Vec::new(), false))
            }
            GatewayRequest::Offline { session_id } => state
                .offline(&session_id, now)
                .map(|((), effects)| (GatewayReply::Done, effects, true)),
            GatewayRequest::GrantReward { reward } => state
                .grant_reward(reward)
                .map(|(changed, effects)| (GatewayReply::Done, effects, changed)),
            GatewayRequest::UnitRequest {
                campaign_id,
                account_id,
                units,
                note,
                request_id,
            } => state
                .record_unit_request(request_id, campaign_id, account_id, units, note, now)
                .map(|(changed, effects)| (GatewayReply::Done, effects, changed)),
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
                    GatewayOp::UnitRequests { campaign_id_opt } => Ok((
                        GatewayReply::UnitRequests(state.unit_requests(campaign_id_opt.as_deref())),
                        Vec::new(),
                        false,
                    )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::decode;
    use crate::entities::test_support::{handle_request, pushed};

    use crate::model::segment::{SegmentLimits, parse_segment};
    use crate::model::user::SessionPush;

    const NOW: u64 = 5_000;

    fn handle(state: &mut GatewayState, request: &GatewayRequest) -> (GatewayReply, Effects) {
        handle_request::<GatewayEntity, _, _>(state, "gw-1", request, NOW)
    }

    /// A registered gateway, online in session `gs-1` with key hash `key-1` when `online`.
    fn gateway(online: bool) -> GatewayState {
        let mut state = GatewayState::default();
        let register = GatewayRequest::Register {
            registration: Registration {
                venue_name: "Cafe".to_owned(),
                venue_address: "1 Main Street".to_owned(),
                admin_account: "admin".to_owned(),
                segments: vec![parse_segment("203.0.113.0/24", &SegmentLimits::default()).unwrap()],
            },
            credential_hash: "$argon2id$hash".to_owned(),
        };
        assert_eq!(handle(&mut state, &register).0, GatewayReply::Done);
        if online {
            let login = GatewayRequest::Online {
                session_id: "gs-1".to_owned(),
                node_id: "node-a".to_owned(),
                key: KeyRecord {
                    hash: "key-1".to_owned(),
                    expires_at_unix_ms: u64::MAX,
                },
            };
            assert!(matches!(
                handle(&mut state, &login).0,
                GatewayReply::Online { .. }
            ));
        }
        state
    }

    fn reward(campaign_id: &str) -> Reward {
        Reward {
            campaign_id: campaign_id.to_owned(),
            campaign_title: "Best venue".to_owned(),
            rank: 1,
            score: 1_234,
            text: "a new router".to_owned(),
            granted_at_unix_ms: 4_000,
        }
    }

    fn unit_request(request_id: &str, campaign_id: &str) -> GatewayRequest {
        GatewayRequest::UnitRequest {
            campaign_id: campaign_id.to_owned(),
            account_id: "alice".to_owned(),
            units: 3,
            note: "please".to_owned(),
            request_id: request_id.to_owned(),
        }
    }

    #[test]
    fn a_reward_is_kept_once_pushed_when_online_and_shown_in_the_status() {
        let mut state = gateway(true);
        let grant = GatewayRequest::GrantReward {
            reward: reward("c-1"),
        };
        let (reply, effects) = handle(&mut state, &grant);
        assert_eq!(reply, GatewayReply::Done);
        assert!(effects.state_changed);
        assert_eq!(
            pushed(&effects),
            vec![("gs-1".to_owned(), GatewayPush::Reward(reward("c-1")))]
        );
        assert_eq!(effects.audit.len(), 1);
        let (reply, effects) = handle(&mut state, &grant);
        assert_eq!(reply, GatewayReply::Done);
        assert!(!effects.state_changed && effects.pushes.is_empty() && effects.audit.is_empty());

        let (reply, _) = handle(&mut state, &GatewayRequest::Inspect);
        assert!(
            matches!(reply, GatewayReply::Status(ref view) if view.rewards == vec![reward("c-1")]),
            "{reply:?}"
        );
    }

    #[test]
    fn campaign_messages_to_an_unregistered_gateway_are_refused_without_change() {
        for request in [
            GatewayRequest::GrantReward {
                reward: reward("c-1"),
            },
            unit_request("r-1", "c-1"),
        ] {
            let mut state = GatewayState::default();
            let (reply, effects) = handle(&mut state, &request);
            assert_eq!(reply, GatewayReply::Refused(GatewayError::NotRegistered));
            assert!(!effects.state_changed && effects.pushes.is_empty());
            assert_eq!(state, GatewayState::default());
        }
    }

    #[test]
    fn unit_requests_are_kept_once_pushed_and_listed_for_the_gateway() {
        let mut state = gateway(true);
        let (reply, effects) = handle(&mut state, &unit_request("r-1", "c-1"));
        assert_eq!(reply, GatewayReply::Done);
        assert!(effects.state_changed);
        let record = UnitRequestRecord {
            request_id: "r-1".to_owned(),
            campaign_id: "c-1".to_owned(),
            account_id: "alice".to_owned(),
            units: 3,
            note: "please".to_owned(),
            at_unix_ms: NOW,
        };
        assert_eq!(
            pushed(&effects),
            vec![("gs-1".to_owned(), GatewayPush::UnitRequest(record))]
        );
        let (reply, effects) = handle(&mut state, &unit_request("r-1", "c-1"));
        assert_eq!(reply, GatewayReply::Done);
        assert!(!effects.state_changed && effects.pushes.is_empty());
        handle(&mut state, &unit_request("r-2", "c-2"));

        let list = |campaign_id_opt: Option<&str>| GatewayRequest::Authed {
            session_id: "gs-1".to_owned(),
            key_hash: "key-1".to_owned(),
            op: GatewayOp::UnitRequests {
                campaign_id_opt: campaign_id_opt.map(str::to_owned),
            },
        };
        let request_ids = |reply: GatewayReply| match reply {
            GatewayReply::UnitRequests(records) => records
                .into_iter()
                .map(|record| record.request_id)
                .collect::<Vec<_>>(),
            other => panic!("unexpected reply {other:?}"),
        };
        let (reply, effects) = handle(&mut state, &list(None));
        assert_eq!(request_ids(reply), vec!["r-2", "r-1"]);
        assert!(!effects.state_changed);
        let (reply, _) = handle(&mut state, &list(Some("c-1")));
        assert_eq!(request_ids(reply), vec!["r-1"]);
    }

    #[test]
    fn an_offline_gateway_keeps_unit_requests_without_a_push() {
        let mut state = gateway(false);
        let (reply, effects) = handle(&mut state, &unit_request("r-1", "c-1"));
        assert_eq!(reply, GatewayReply::Done);
        assert!(effects.state_changed && effects.pushes.is_empty());
        assert_eq!(state.unit_requests.len(), 1);
    }

    /// Gateway and user pushes share one envelope and the edge tries `SessionPush` first, so
    /// no gateway push may also decode as a user's push.
    #[test]
    fn gateway_pushes_never_decode_as_session_pushes() {
        let record = UnitRequestRecord {
            request_id: "r-1".to_owned(),
            campaign_id: "c-1".to_owned(),
            account_id: "alice".to_owned(),
            units: 3,
            note: String::new(),
            at_unix_ms: NOW,
        };
        for push in [
            GatewayPush::Reward(reward("c-1")),
            GatewayPush::UnitRequest(record),
        ] {
            let payload = encode(&push).unwrap();
            assert!(decode::<SessionPush>(&payload).is_err(), "{push:?}");
            assert_eq!(decode::<GatewayPush>(&payload).unwrap(), push);
        }
    }
}
