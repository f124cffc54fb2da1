//! Client sessions on this node: one actix actor per session, holding the connections
//! attached to it (one device may open several, and they share the session), turning pushes
//! from user entities into frames, coalescing presence churn, and telling the account when
//! the last connection has been gone for the resume grace period.

use crate::edge::protocol::{
    ByPush, CallSignalPush, FriendAcceptedPush, FriendsSharedPush, PresencePush, ReceiptPush,
    ServerFrame, SessionEndedPush, UnitsIssuedPush, WireHint, WireMessage, WireRequest, WireReward,
    WireStatus, WireUnitRequest,
};
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SpawnHandle};
use lanmesh_actors::model::gateway::UnitRequestRecord;
use lanmesh_actors::model::reward::Reward;
use lanmesh_actors::model::user::{SessionPush, Status, UnreadHint};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Frames queued for one connection before it counts as too slow and is closed.
pub const CONNECTION_QUEUE: usize = 1024;

/// One attached connection: where its frames go, and how to close it.
#[derive(Debug, Clone)]
pub struct ConnectionLink {
    /// Unique within the node.
    pub connection_id: u64,
    /// Encoded frames for the socket writer.
    pub frames: mpsc::Sender<Vec<u8>>,
    /// Notified when the connection must close (too slow, session ended).
    pub kick: Arc<Notify>,
}

/// What the session tells the node when it ends on its own.
pub type DetachNotice = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Limits of session actors.
#[derive(Debug, Clone, Copy)]
pub struct SessionTiming {
    /// Presence pushes for one contact within this window are merged into the latest.
    pub presence_coalesce: Duration,
    /// How long a session without connections waits for one before it counts as gone.
    pub resume_grace: Duration,
}

/// The actor of one session.
pub struct SessionActor {
    session_id: String,
    account: String,
    connections: Vec<ConnectionLink>,
    pending_presence: BTreeMap<String, PresencePush>,
    flush_opt: Option<SpawnHandle>,
    grace_opt: Option<SpawnHandle>,
    timing: SessionTiming,
    registry: SessionRegistry,
    on_detached: DetachNotice,
}

impl Actor for SessionActor {
    type Context = Context<Self>;
}

/// Attaches a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub ConnectionLink);

/// Detaches a connection (it closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach(pub u64);

/// A push for the session's clients.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub SessionPush);

/// An encoded push frame for the session's clients (pushes that do not come from entities).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendFrame(pub Vec<u8>);

impl Handler<SendFrame> for SessionActor {
    type Result = ();

    fn handle(&mut self, SendFrame(frame): SendFrame, _context: &mut Context<Self>) {
        self.send_frame(&frame);
    }
}

impl SessionActor {
    fn send_frame(&mut self, frame: &[u8]) {
        self.connections.retain(
            |connection| match connection.frames.try_send(frame.to_vec()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(
                        connection = connection.connection_id,
                        "closing a connection that does not keep up with its pushes"
                    );
                    connection.kick.notify_one();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        );
    }

    fn flush_presence(&mut self) {
        self.flush_opt = None;
        for push in std::mem::take(&mut self.pending_presence).into_values() {
            if let Some(frame) = encode_push("presence", &push) {
                self.send_frame(&frame);
            }
        }
    }

    fn end(&mut self, context: &mut Context<Self>) {
        self.registry.remove(&self.session_id, &context.address());
        context.stop();
    }
}

impl Handler<Attach> for SessionActor {
    type Result = ();

    fn handle(&mut self, Attach(link): Attach, context: &mut Context<Self>) {
        if let Some(grace) = self.grace_opt.take() {
            context.cancel_future(grace);
        }
        self.connections
            .retain(|connection| connection.connection_id != link.connection_id);
        self.connections.push(link);
    }
}

impl Handler<Detach> for SessionActor {
    type Result = ();

    fn handle(&mut self, Detach(connection_id): Detach, context: &mut Context<Self>) {
        self.connections
            .retain(|connection| connection.connection_id != connection_id);
        if self.connections.is_empty() && self.grace_opt.is_none() {
            let grace = context.run_later(self.timing.resume_grace, |actor, context| {
                actor.grace_opt = None;
                if actor.connections.is_empty() {
                    (actor.on_detached)(&actor.account, &actor.session_id);
                    actor.end(context);
                }
            });
            self.grace_opt = Some(grace);
        }
    }
}

impl Handler<Deliver> for SessionActor {
    type Result = ();

    fn handle(&mut self, Deliver(push): Deliver, context: &mut Context<Self>) {
        if let SessionPush::Presence {
            account,
            status,
            last_seen_unix_ms,
        } = push
        {
            let presence = wire_presence(account.clone(), status, last_seen_unix_ms);
            self.pending_presence.insert(account, presence);
            if self.flush_opt.is_none() {
                let flush = context.run_later(self.timing.presence_coalesce, |actor, _| {
                    actor.flush_presence();
                });
                self.flush_opt = Some(flush);
            }
            return;
        }
        let ended = matches!(push, SessionPush::SessionEnded { .. });
        if let Some(frame) = push_frame(&self.session_id, &self.account, push) {
            self.send_frame(&frame);
        }
        if ended {
            // The connections stay open (they may carry other sessions); this one is over.
            self.connections.clear();
            self.end(context);
        }
    }
}

/// The sessions this node holds, by id.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    sessions: Arc<Mutex<HashMap<String, Addr<SessionActor>>>>,
}

impl SessionRegistry {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Addr<SessionActor>>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session's actor, if this node holds it.
    pub fn get(&self, session_id: &str) -> Option<Addr<SessionActor>> {
        self.sessions()
            .get(session_id)
            .filter(|address| address.connected())
            .cloned()
    }

    /// Attaches `link` to the session, starting its actor if this node did not hold it.
    pub fn attach(
        &self,
        session_id: &str,
        account: &str,
        link: ConnectionLink,
        timing: SessionTiming,
        on_detached: &DetachNotice,
    ) -> Addr<SessionActor> {
        let mut sessions = self.sessions();
        let address = match sessions
            .get(session_id)
            .filter(|address| address.connected())
        {
            Some(address) => address.clone(),
            None => {
                let actor = SessionActor {
                    session_id: session_id.to_owned(),
                    account: account.to_owned(),
                    connections: Vec::new(),
                    pending_presence: BTreeMap::new(),
                    flush_opt: None,
                    grace_opt: None,
                    timing,
                    registry: self.clone(),
                    on_detached: Arc::clone(on_detached),
                };
                let address = actor.start();
                sessions.insert(session_id.to_owned(), address.clone());
                address
            }
        };
        address.do_send(Attach(link));
        address
    }

    fn remove(&self, session_id: &str, address: &Addr<SessionActor>) {
        let mut sessions = self.sessions();
        if sessions.get(session_id) == Some(address) {
            sessions.remove(session_id);
        }
    }
}

/// Encodes a push frame; `None` only if encoding fails (logged).
pub fn encode_push<Body: Serialize>(op: &str, body: &Body) -> Option<Vec<u8>> {
    let frame = ServerFrame {
        id: None,
        op: op.to_owned(),
        body,
    };
    match rmp_serde::to_vec_named(&frame) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(op, error = %error, "cannot encode push");
            None
        }
    }
}

/// The client's view of a status.
pub fn wire_status(status: Status) -> WireStatus {
    match status {
        Status::Offline => WireStatus::Offline,
        Status::Invisible => WireStatus::Invisible,
        Status::Away => WireStatus::Away,
        Status::Busy => WireStatus::Busy,
        Status::Online => WireStatus::Online,
    }
}

/// The client's view of a contact's presence.
fn wire_presence(account: String, status: Status, last_seen_unix_ms: u64) -> PresencePush {
    PresencePush {
        account,
        status: wire_status(status),
        last_seen_ms: last_seen_unix_ms,
    }
}

/// The client's view of a hint.
pub fn wire_hint(from: &str, hint: &UnreadHint) -> WireHint {
    WireHint {
        from: from.to_owned(),
        unread: hint.n_unread,
        preview: hint.preview.clone(),
        message_id: hint.last_message_id.clone(),
        at_ms: hint.last_at_unix_ms,
    }
}

/// The client's (and the gateway's) view of a reward won in a campaign.
pub fn wire_reward(reward: &Reward) -> WireReward {
    WireReward {
        campaign_id: reward.campaign_id.clone(),
        campaign_title: reward.campaign_title.clone(),
        rank: reward.rank,
        score: reward.score,
        text: reward.text.clone(),
        granted_at_ms: reward.granted_at_unix_ms,
    }
}

/// The gateway's view of a client's request for campaign units.
pub fn wire_unit_request(record: &UnitRequestRecord) -> WireUnitRequest {
    WireUnitRequest {
        request_id: record.request_id.clone(),
        campaign_id: record.campaign_id.clone(),
        account: record.account_id.clone(),
        units: record.units,
        note: record.note.clone(),
        at_ms: record.at_unix_ms,
    }
}

/// Encodes a push (other than presence, which is coalesced) as a frame.
fn push_frame(session_id: &str, account: &str, push: SessionPush) -> Option<Vec<u8>> {
    match push {
        SessionPush::Presence {
            account,
            status,
            last_seen_unix_ms,
        } => encode_push(
            "presence",
            &wire_presence(account, status, last_seen_unix_ms),
        ),
        SessionPush::Hint { from, hint } => encode_push("hint", &wire_hint(&from, &hint)),
        SessionPush::Message {
            message_id,
            from,
            text,
            sent_at_unix_ms,
        } => encode_push(
            "message",
            &WireMessage {
                message_id,
                from,
                to: account.to_owned(),
                text,
                sent_at_ms: sent_at_unix_ms,
            },
        ),
        SessionPush::FriendRequest {
            from,
            display_name,
            note,
            at_unix_ms,
        } => encode_push(
            "friend.request",
            &WireRequest {
                from,
                display_name,
                note,
                at_ms: at_unix_ms,
            },
        ),
        SessionPush::FriendAccepted { by, display_name } => {
            encode_push("friend.accepted", &FriendAcceptedPush { by, display_name })
        }
        SessionPush::FriendDeclined { by } => encode_push("friend.declined", &ByPush { by }),
        SessionPush::FriendRemoved { by } => encode_push("friend.removed", &ByPush { by }),
        SessionPush::FriendsShared { from, accounts } => {
            encode_push("friends.shared", &FriendsSharedPush { from, accounts })
        }
        SessionPush::Receipt {
            by,
            up_to_message_id,
        } => encode_push(
            "receipt",
            &ReceiptPush {
                by,
                up_to_message_id,
            },
        ),
        SessionPush::CallSignal {
            from,
            call_id,
            kind,
            signal,
        } => encode_push(
            "call.signal",
            &CallSignalPush {
                from,
                call_id,
                kind,
                signal,
            },
        ),
        SessionPush::SessionEnded { reason } => encode_push(
            "session.ended",
            &SessionEndedPush {
                session: session_id.to_owned(),
                reason,
            },
        ),
        SessionPush::CampaignReward(reward) => {
            encode_push("campaign.reward", &wire_reward(&reward))
        }
        SessionPush::Share { share_id, event } => {
            let (op, body) = crate::edge::share_wire::share_push(&share_id, &event)?;
            encode_push(op, &body)
        }
        SessionPush::UnitsIssued {
            campaign_id,
            gateway_id,
            units,
        } => encode_push(
            "campaign.units_issued",
            &UnitsIssuedPush {
                campaign_id,
                gateway_id,
                units,
            },
        ),
    }
}
