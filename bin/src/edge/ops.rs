//! The operations of protocol version 1: each decodes its body, checks what the edge can
//! check on its own (shapes, sizes, the key's form), asks the account's user entity, and turns
//! the answer into a reply. Passwords are hashed and verified here, off the reactor.

use crate::edge::Edge;
use crate::edge::auth::{self, ParsedKey};
use crate::edge::protocol::{
    CallSignalRequest, ClientFrame, ContactsReply, ConversationKind, ConversationOpenReply,
    ConversationOpenRequest, ErrorBody, ErrorCode, FriendAnswerRequest, FriendRemoveRequest,
    FriendRequestRequest, FriendsAddManyReply, FriendsAddManyRequest, FriendsShareReply,
    FriendsShareRequest, GroupDeleteRequest, GroupSetRequest, HelloReply, HelloRequest, KeyReply,
    LoginRequest, MessageHistoryReply, MessageHistoryRequest, MessageReadRequest, MessageSendReply,
    MessageSendRequest, Mode, PresenceSetRequest, RegisterReply, RegisterRequest, RevokeRequest,
    SUPPORTED_VERSIONS, SessionReply, WidgetReply, WidgetSetRequest, WireFriend, WireMessage,
    WireOutgoingRequest, WireRequest, WireStatus, WireWidgetEntry,
};
use crate::edge::sessions::{ConnectionLink, SessionActor, wire_hint, wire_status};
use crate::edge::{campaign_ops, gateway_ops, partner_ops, share_ops};
use actix::Addr;
use lanmesh_actors::entities::gateway::GatewayRequest;
use lanmesh_actors::entities::segment::ClientEvent;
use lanmesh_actors::entities::user::{SessionAuth, SessionOp, UserReply, UserRequest};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::user::{
    IncomingRequest, KeyRecord, SessionMode, SessionOpening, SessionSnapshot, Status, UserError,
    WidgetEntry,
};
use lanmesh_storage::{ChatMessage, PageCursor, PageRequest, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use uuid::Uuid;

/// Largest call signal relayed.
const MAX_SIGNAL_BYTES: usize = 16 * 1024;
/// Largest friend-request note.
const MAX_NOTE_BYTES: usize = 256;
/// Messages returned when a conversation is opened.
const OPEN_CONVERSATION_PAGE: u32 = 20;
/// Largest history page.
const MAX_HISTORY_PAGE: u32 = 100;

/// What a connection knows about itself.
pub struct ConnectionContext {
    link: ConnectionLink,
    peer_ip_opt: Option<IpAddr>,
    version: OnceLock<u32>,
    attached: Mutex<Vec<(String, Addr<SessionActor>)>>,
    /// Accounts logged in or resumed on this connection (their session ends with it).
    accounts: Mutex<BTreeSet<String>>,
    /// The gateway logged in on this connection: (gateway id, session id).
    gateway_opt: Mutex<Option<(String, String)>>,
}

impl ConnectionContext {
    /// A fresh connection.
    pub fn new(link: ConnectionLink, peer_ip_opt: Option<IpAddr>) -> Self {
        Self {
            link,
            peer_ip_opt,
            version: OnceLock::new(),
            attached: Mutex::new(Vec::new()),
            accounts: Mutex::new(BTreeSet::new()),
            gateway_opt: Mutex::new(None),
        }
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, Vec<(String, Addr<SessionActor>)>> {
        self.attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the gateway logged in on this connection, and gives its session an actor so
    /// pushes (certification results) reach the connection. The gateway's entity hears of the
    /// connection's end from [`connection_closed`], not from the session actor.
    pub(super) fn set_gateway(&self, edge: &Edge, gateway_id: String, session_id: String) {
        let ignore_detach: crate::edge::sessions::DetachNotice = Arc::new(|_, _| {});
        let address = edge.registry.attach(
            &session_id,
            &gateway_id,
            self.link.clone(),
            edge.limits.session_timing,
            &ignore_detach,
        );
        edge.gateway_joins_notices(&self.link, &gateway_id);
        self.attached().push((session_id.clone(), address));
        *self
            .gateway_opt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((gateway_id, session_id));
    }

    /// The client's address.
    pub(super) fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_ip_opt
    }

    /// The gateway logged in on this connection: (gateway id, session id).
    pub(super) fn gateway(&self) -> Option<(String, String)> {
        self.gateway_opt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The session actors this connection is attached to.
    pub fn attached_sessions(&self) -> Vec<Addr<SessionActor>> {
        self.attached()
            .iter()
            .map(|(_, address)| address.clone())
            .collect()
    }
}

/// An encoded reply and whether it is an error.
pub struct FrameReply {
    /// The encoded frame.
    pub frame: Vec<u8>,
    /// Whether it reports an error.
    pub is_error: bool,
}

pub(super) type OpResult = Result<rmpv::Value, ErrorBody>;

pub(super) fn bad_request(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, message)
}

pub(super) fn body<T: DeserializeOwned>(op: &str, value: &rmpv::Value) -> Result<T, ErrorBody> {
    // Through bytes, so enums read from their names as everywhere else in the protocol.
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value)
        .map_err(|error| bad_request(format!("body of {op} does not encode: {error}")))?;
    // The path names the field at fault, e.g. `lat: invalid type: string "north", expected f64`.
    let mut deserializer = rmp_serde::Deserializer::new(bytes.as_slice());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let reason = error.into_inner();
        if path == "." {
            bad_request(format!("body of {op} does not fit: {reason}"))
        } else {
            bad_request(format!("body of {op} does not fit: {path}: {reason}"))
        }
    })
}

/// A reply body as a MessagePack value with named fields (as every frame has).
pub(super) fn value<T: Serialize>(reply: &T) -> OpResult {
    let encoded = rmp_serde::to_vec_named(reply)
        .map_err(|error| error.to_string())
        .and_then(|bytes| {
            rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|error| error.to_string())
        });
    encoded.map_err(|error| {
        tracing::error!(error = %error, "cannot encode a reply body");
        ErrorBody::new(ErrorCode::Unavailable, "cannot encode the reply")
    })
}

fn empty() -> OpResult {
    Ok(rmpv::Value::Map(Vec::new()))
}

/// Maps an entity's refusal to a client error.
pub(super) fn refusal(error: UserError) -> ErrorBody {
    match error {
        UserError::NoSuchAccount => ErrorBody::new(ErrorCode::KeyInvalid, "no such account"),
        UserError::AccountExists => {
            ErrorBody::new(ErrorCode::AccountExists, "this username is taken")
        }
        UserError::LockedOut { retry_after_ms } => ErrorBody {
            retry_after_ms: Some(retry_after_ms),
            ..ErrorBody::new(
                ErrorCode::LockedOut,
                "too many failed logins for this account",
            )
        },
        UserError::KeyInvalid => ErrorBody::new(ErrorCode::KeyInvalid, "the key is not valid"),
        UserError::KeyExpired => {
            ErrorBody::new(ErrorCode::KeyExpired, "the key expired; log in again")
        }
        UserError::KeyRevoked => {
            ErrorBody::new(ErrorCode::KeyRevoked, "the key or its session was revoked")
        }
        UserError::NotFriends { accounts } => ErrorBody {
            accounts,
            ..ErrorBody::new(ErrorCode::NotFriends, "not friends of this account")
        },
        UserError::TooMany { what, limit } => ErrorBody::new(
            ErrorCode::TooMany,
            format!("too many {what}; the limit is {limit}"),
        ),
        UserError::Invalid { reason } => ErrorBody::new(ErrorCode::Invalid, reason),
        UserError::DailyCap { reason } => ErrorBody::new(ErrorCode::DailyCapReached, reason),
    }
}

pub(super) fn unexpected(reply: &UserReply) -> ErrorBody {
    tracing::error!(reply = ?reply, "unexpected reply from a user entity");
    ErrorBody::new(ErrorCode::Unavailable, "unexpected answer from the service")
}

/// Handles one binary frame and returns the encoded reply.
pub async fn handle_frame(edge: &Edge, context: &ConnectionContext, bytes: &[u8]) -> FrameReply {
    let (id_opt, result) = match rmp_serde::from_slice::<ClientFrame>(bytes) {
        Ok(ClientFrame { id, op, key, body }) => (
            Some(id),
            dispatch(edge, context, &op, key.as_deref(), body).await,
        ),
        Err(error) => (
            id_of(bytes),
            Err(ErrorBody::new(
                ErrorCode::BadFrame,
                format!("not a {{id, op, key, body}} MessagePack map: {error}"),
            )),
        ),
    };
    FrameReply {
        is_error: result.is_err(),
        frame: crate::edge::connection::encode_reply(id_opt, &result),
    }
}

/// The id of a frame, read without decoding its other parts (so an error can name it).
pub fn id_of(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: u64,
    }
    rmp_serde::from_slice::<IdOnly>(bytes)
        .ok()
        .map(|frame| frame.id)
}

async fn dispatch(
    edge: &Edge,
    context: &ConnectionContext,
    op: &str,
    key_opt: Option<&str>,
    body_value: rmpv::Value,
) -> OpResult {
    if op == "hello" {
        return hello(edge, context, &body(op, &body_value)?);
    }
    if context.version.get().is_none() {
        return Err(ErrorBody::new(
            ErrorCode::HelloRequired,
            "send hello with the protocol versions you speak first",
        ));
    }
    match op {
        "account.register" => register(edge, body(op, &body_value)?).await,
        "session.login" => login(edge, context, body(op, &body_value)?).await,
        "session.partner_login" => {
            partner_ops::partner_login(edge, context, body(op, &body_value)?).await
        }
        "gateway.register" => gateway_ops::register(edge, context, body(op, &body_value)?).await,
        "gateway.login" => gateway_ops::login(edge, context, body(op, &body_value)?).await,
        "gateway.amend" => {
            let key = authenticate(key_opt)?;
            gateway_ops::amend(edge, &key, body(op, &body_value)?).await
        }
        "gateway.status" => {
            let key = authenticate(key_opt)?;
            gateway_ops::status(edge, &key).await
        }
        "gateway.campaigns" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_campaigns(edge, &key).await
        }
        "gateway.enrol" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_enrol(edge, &key, body(op, &body_value)?).await
        }
        "gateway.allocate" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_allocate(edge, &key, body(op, &body_value)?).await
        }
        "gateway.void" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_void(edge, &key, body(op, &body_value)?).await
        }
        "gateway.allocation_results" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_allocation_results(edge, &key, body(op, &body_value)?).await
        }
        "gateway.ledger" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_ledger(edge, &key, body(op, &body_value)?).await
        }
        "gateway.unit_requests" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_unit_requests(edge, &key, body(op, &body_value)?).await
        }
        "share.offer" => {
            let key = authenticate(key_opt)?;
            share_ops::offer(edge, &key, body(op, &body_value)?).await
        }
        "share.find" => {
            let key = authenticate(key_opt)?;
            share_ops::find(edge, &key, body(op, &body_value)?).await
        }
        "share.request" => {
            let key = authenticate(key_opt)?;
            share_ops::request(edge, &key, body(op, &body_value)?).await
        }
        "share.cancel" => {
            let key = authenticate(key_opt)?;
            share_ops::cancel(edge, &key, body(op, &body_value)?).await
        }
        "share.start" => {
            let key = authenticate(key_opt)?;
            share_ops::start(edge, &key, body(op, &body_value)?).await
        }
        "share.report_usage" => {
            let key = authenticate(key_opt)?;
            share_ops::report_usage(edge, &key, body(op, &body_value)?).await
        }
        "share.end" => {
            let key = authenticate(key_opt)?;
            share_ops::end(edge, &key, body(op, &body_value)?).await
        }
        "share.get" => {
            let key = authenticate(key_opt)?;
            share_ops::get(edge, &key, body(op, &body_value)?).await
        }
        "gateway.report_usage" => {
            let key = authenticate(key_opt)?;
            campaign_ops::gateway_report_usage(edge, &key, body(op, &body_value)?).await
        }
        _ => {
            let key = authenticate(key_opt)?;
            authed(edge, context, op, &key, body_value).await
        }
    }
}

pub(super) fn authenticate(key_opt: Option<&str>) -> Result<ParsedKey, ErrorBody> {
    let text = key_opt.ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::Unauthenticated,
            "this operation needs the key from session.login",
        )
    })?;
    auth::parse_key(text)
        .ok_or_else(|| ErrorBody::new(ErrorCode::KeyInvalid, "the key is not valid"))
}

fn hello(edge: &Edge, context: &ConnectionContext, request: &HelloRequest) -> OpResult {
    let Some(version) = SUPPORTED_VERSIONS
        .iter()
        .copied()
        .filter(|version| request.versions.contains(version))
        .max()
    else {
        return Err(ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!("this server speaks protocol versions {SUPPORTED_VERSIONS:?}"),
        ));
    };
    if context.version.set(version).is_err() && context.version.get() != Some(&version) {
        return Err(bad_request(
            "hello was already answered with another version",
        ));
    }
    value(&HelloReply {
        version,
        node_id: edge.deps.node_id.to_string(),
        max_frame_bytes: edge.limits.max_frame_bytes,
        idle_timeout_ms: u64::try_from(edge.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX),
    })
}

async fn register(edge: &Edge, request: RegisterRequest) -> OpResult {
    let account = auth::validate_username(&request.username).map_err(bad_request)?;
    check_password(&request.password)?;
    let n_chars = request.display_name.chars().count();
    if !(1..=64).contains(&n_chars) || request.display_name.chars().any(char::is_control) {
        return Err(bad_request(
            "display_name is 1 to 64 characters without control characters",
        ));
    }
    let password_hash = auth::hash_password(request.password, edge.limits.password_cost)
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "password hashing failed");
            ErrorBody::new(ErrorCode::Unavailable, "cannot hash the password now")
        })?;
    let user_request = UserRequest::Register {
        display_name: request.display_name,
        password_hash,
    };
    match edge.ask_user(&account, &user_request, None).await? {
        UserReply::Done => value(&RegisterReply { account }),
        UserReply::Refused(error) => Err(refusal(error)),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn login_failed() -> ErrorBody {
    ErrorBody::new(ErrorCode::LoginFailed, "wrong username or password")
}

/// Refuses a login from an address that tried too often.
pub(super) fn check_login_rate(edge: &Edge, context: &ConnectionContext) -> Result<(), ErrorBody> {
    if let Some(peer_ip) = context.peer_ip_opt
        && let Err(wait) = edge
            .address_limiter
            .try_acquire(peer_ip, std::time::Instant::now())
    {
        edge.deps.metrics.login_failures.inc();
        return Err(ErrorBody {
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ..ErrorBody::new(ErrorCode::RateLimited, "too many logins from this address")
        });
    }
    Ok(())
}

pub(super) fn check_password(password: &str) -> Result<(), ErrorBody> {
    if (8..=256).contains(&password.len()) {
        Ok(())
    } else {
        Err(bad_request("passwords are 8 to 256 bytes long"))
    }
}

pub(super) fn check_device(device: &str) -> Result<(), ErrorBody> {
    let device_ok =
        (1..=64).contains(&device.len()) && device.chars().all(|c| c.is_ascii_graphic());
    if device_ok {
        Ok(())
    } else {
        Err(bad_request("device is 1 to 64 printable ASCII characters"))
    }
}

/// A session about to be opened for a verified login, with its new key.
pub(super) struct PendingLogin {
    /// What the account's entity is asked to open.
    pub opening: SessionOpening,
    issued: auth::IssuedKey,
    expires_at_ms: u64,
}

/// Issues a key for `account` and describes the session to open on `device`.
pub(super) fn prepare_login(
    edge: &Edge,
    account: &str,
    device: String,
    mode: Mode,
) -> Result<PendingLogin, ErrorBody> {
    let new_session_id = Uuid::new_v4().simple().to_string();
    let issued = auth::issue_key(account, &new_session_id)
        .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "no randomness for a key"))?;
    let expires_at_ms = edge.key_expiry_unix_ms();
    let opening = SessionOpening {
        new_session_id,
        device,
        node_id: edge.deps.node_id.to_string(),
        mode: match mode {
            Mode::Client => SessionMode::Client,
            Mode::Widget => SessionMode::Widget,
        },
        key: KeyRecord {
            hash: issued.secret_hash.clone(),
            expires_at_unix_ms: expires_at_ms,
        },
    };
    Ok(PendingLogin {
        opening,
        issued,
        expires_at_ms,
    })
}

/// The connection went away: its accounts' sessions end here (the first monitor counts it)
/// and its gateway goes offline (the second monitor).
pub async fn connection_closed(edge: &Edge, context: &ConnectionContext) {
    let accounts: Vec<String> = context
        .accounts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    if let Some(client_ip) = context.peer_ip_opt {
        for account in accounts {
            edge.tell_segment(&account, client_ip, ClientEvent::SessionEnd)
                .await;
        }
    }
    edge.campaigns.leave(context.link.connection_id);
    if let Some((gateway_id, session_id)) = context.gateway() {
        let request = GatewayRequest::Offline { session_id };
        edge.tell_entity(EntityKind::Gateway, &gateway_id, &request)
            .await;
    }
}

/// Attaches the opened session to the connection, counts the login in the client's venue
/// segment, and answers the login.
pub(super) async fn complete_login(
    edge: &Edge,
    context: &ConnectionContext,
    account: &str,
    pending: PendingLogin,
    snapshot: SessionSnapshot,
) -> SessionReply {
    // A reused session has its own id: the key must name it.
    let new_session_id = &pending.opening.new_session_id;
    let key_text = if snapshot.session_id == *new_session_id {
        pending.issued.text
    } else {
        pending.issued.text.replacen(
            &format!(":{new_session_id}:"),
            &format!(":{}:", snapshot.session_id),
            1,
        )
    };
    attach(edge, context, account, &snapshot.session_id);
    if let Some(client_ip) = context.peer_ip_opt {
        edge.tell_segment(account, client_ip, ClientEvent::Login)
            .await;
    }
    session_reply(account, snapshot, Some((key_text, pending.expires_at_ms)))
}

async fn login(edge: &Edge, context: &ConnectionContext, request: LoginRequest) -> OpResult {
    check_login_rate(edge, context)?;
    check_device(&request.device)?;
    let Ok(account) = auth::validate_username(&request.username) else {
        edge.deps.metrics.login_failures.inc();
        return Err(login_failed());
    };
    let limit = edge.limits.login_limit;
    let phc_opt = match edge
        .ask_user(&account, &UserRequest::Credential { limit }, None)
        .await?
    {
        UserReply::Credential { password_hash } => Some(password_hash),
        UserReply::Refused(UserError::NoSuchAccount) => None,
        UserReply::Refused(error) => {
            edge.deps.metrics.login_failures.inc();
            return Err(refusal(error));
        }
        other => return Err(unexpected(&other)),
    };
    let exists = phc_opt.is_some();
    let phc = phc_opt.unwrap_or_else(|| edge.dummy_hash.clone());
    let verified = auth::verify_password(request.password, phc)
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "cannot verify the password now"))?;
    if !(verified && exists) {
        edge.deps.metrics.login_failures.inc();
        if exists {
            edge.ask_user(&account, &UserRequest::LoginFailed { limit }, None)
                .await?;
        }
        return Err(login_failed());
    }
    let pending = prepare_login(edge, &account, request.device, request.mode)?;
    let snapshot = match edge
        .ask_user(
            &account,
            &UserRequest::OpenSession(pending.opening.clone()),
            None,
        )
        .await?
    {
        UserReply::Session(snapshot) => snapshot,
        UserReply::Refused(error) => return Err(refusal(error)),
        other => return Err(unexpected(&other)),
    };
    value(&complete_login(edge, context, &account, pending, snapshot).await)
}

fn attach(edge: &Edge, context: &ConnectionContext, account: &str, session_id: &str) {
    context
        .accounts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(account.to_owned());
    let mut attached = context.attached();
    if attached
        .iter()
        .any(|(id, address)| id == session_id && address.connected())
    {
        return;
    }
    let address = edge.registry.attach(
        session_id,
        account,
        context.link.clone(),
        edge.limits.session_timing,
        &edge.on_detached,
    );
    edge.client_joins_notices(&context.link, context.peer_ip_opt);
    attached.retain(|(id, _)| id != session_id);
    attached.push((session_id.to_owned(), address));
}

fn wire_widget(entries: Vec<WidgetEntry>) -> Vec<WireWidgetEntry> {
    entries
        .into_iter()
        .map(|entry| WireWidgetEntry {
            hint: entry.hint_opt.map(|hint| wire_hint(&entry.account, &hint)),
            account: entry.account,
            display_name: entry.display_name,
        })
        .collect()
}

fn session_reply(
    account: &str,
    snapshot: SessionSnapshot,
    key_opt: Option<(String, u64)>,
) -> SessionReply {
    let (key, expires_at_ms) = key_opt.unzip();
    SessionReply {
        account: account.to_owned(),
        display_name: snapshot.display_name,
        session: snapshot.session_id,
        key,
        expires_at_ms,
        reused: snapshot.reused,
        status: wire_status(snapshot.status),
        widget: wire_widget(snapshot.widget),
        unread: snapshot
            .unread
            .iter()
            .map(|(from, hint)| wire_hint(from, hint))
            .collect(),
        requests_in: wire_requests(snapshot.requests_in),
        account_created: false,
    }
}

/// The client's view of the friend requests an account received.
fn wire_requests(requests: BTreeMap<String, IncomingRequest>) -> Vec<WireRequest> {
    requests
        .into_iter()
        .map(|(from, request)| WireRequest {
            from,
            display_name: request.display_name,
            note: request.note,
            at_ms: request.at_unix_ms,
        })
        .collect()
}

fn check_account(account: &str) -> Result<String, ErrorBody> {
    auth::validate_account_id(account).map_err(bad_request)
}

fn check_accounts(accounts: &[String], limit: usize, what: &str) -> Result<(), ErrorBody> {
    if accounts.len() > limit {
        return Err(ErrorBody::new(
            ErrorCode::TooMany,
            format!("too many {what}; the limit is {limit}"),
        ));
    }
    accounts
        .iter()
        .try_for_each(|account| check_account(account).map(drop))
}

/// Asks the key's account to do `op` on behalf of the key's session.
pub(super) async fn ask_session(
    edge: &Edge,
    key: &ParsedKey,
    op: SessionOp,
    msg_id_opt: Option<Uuid>,
) -> Result<UserReply, ErrorBody> {
    let request = UserRequest::Authed {
        auth: SessionAuth {
            session_id: key.session_id.clone(),
            key_hash: key.secret_hash.clone(),
        },
        op,
    };
    match edge.ask_user(&key.account, &request, msg_id_opt).await? {
        UserReply::Refused(error) => Err(refusal(error)),
        reply => Ok(reply),
    }
}

async fn ask_done(edge: &Edge, key: &ParsedKey, op: SessionOp) -> OpResult {
    match ask_session(edge, key, op, None).await? {
        UserReply::Done => empty(),
        other => Err(unexpected(&other)),
    }
}

async fn authed(
    edge: &Edge,
    context: &ConnectionContext,
    op: &str,
    key: &ParsedKey,
    body_value: rmpv::Value,
) -> OpResult {
    match op {
        "campaign.list" => campaign_ops::client_campaigns(edge, context, key).await,
        "campaign.enrol" => {
            campaign_ops::client_enrol(edge, context, key, body(op, &body_value)?).await
        }
        "campaign.request_units" => {
            campaign_ops::client_request_units(edge, context, key, body(op, &body_value)?).await
        }
        "partner.contacts" => {
            partner_ops::partner_contacts(edge, key, body(op, &body_value)?).await
        }
        "partner.posts" => partner_ops::partner_posts(edge, key, body(op, &body_value)?).await,
        "session.resume" => {
            let resume = SessionOp::Resume {
                node_id: edge.deps.node_id.to_string(),
            };
            match ask_session(edge, key, resume, None).await? {
                UserReply::Session(snapshot) => {
                    attach(edge, context, &key.account, &key.session_id);
                    if let Some(client_ip) = context.peer_ip_opt {
                        edge.tell_segment(&key.account, client_ip, ClientEvent::Login)
                            .await;
                    }
                    value(&session_reply(&key.account, snapshot, None))
                }
                other => Err(unexpected(&other)),
            }
        }
        "session.refresh" => {
            let issued = auth::issue_key(&key.account, &key.session_id)
                .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "no randomness for a key"))?;
            let expires_at_ms = edge.key_expiry_unix_ms();
            let new_key = KeyRecord {
                hash: issued.secret_hash,
                expires_at_unix_ms: expires_at_ms,
            };
            ask_done(edge, key, SessionOp::RefreshKey { new_key }).await?;
            value(&KeyReply {
                key: issued.text,
                expires_at_ms,
            })
        }
        "session.logout" => {
            let reply = ask_done(edge, key, SessionOp::Logout).await?;
            if let Some(client_ip) = context.peer_ip_opt {
                edge.tell_segment(&key.account, client_ip, ClientEvent::Logout)
                    .await;
            }
            context
                .accounts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key.account);
            Ok(reply)
        }
        "session.revoke" => {
            let request: RevokeRequest = body(op, &body_value)?;
            ask_done(
                edge,
                key,
                SessionOp::RevokeSession {
                    session_id: request.session,
                },
            )
            .await
        }
        "contacts.list" => match ask_session(edge, key, SessionOp::Contacts, None).await? {
            UserReply::Contacts(list) => value(&ContactsReply {
                friends: list
                    .friends
                    .into_iter()
                    .map(|(account, friend)| WireFriend {
                        account,
                        display_name: friend.display_name,
                        since_ms: friend.since_unix_ms,
                    })
                    .collect(),
                groups: list
                    .groups
                    .into_iter()
                    .map(|(name, members)| (name, members.into_iter().collect()))
                    .collect(),
                requests_in: wire_requests(list.requests_in),
                requests_out: list
                    .requests_out
                    .into_iter()
                    .map(|(to, at_ms)| WireOutgoingRequest { to, at_ms })
                    .collect(),
            }),
            other => Err(unexpected(&other)),
        },
        "friend.request" => {
            let request: FriendRequestRequest = body(op, &body_value)?;
            let to = check_account(&request.to)?;
            if request.note.len() > MAX_NOTE_BYTES {
                return Err(bad_request(format!(
                    "note is at most {MAX_NOTE_BYTES} bytes"
                )));
            }
            ask_done(
                edge,
                key,
                SessionOp::RequestFriend {
                    to,
                    note: request.note,
                },
            )
            .await
        }
        "friend.answer" => {
            let request: FriendAnswerRequest = body(op, &body_value)?;
            ask_done(
                edge,
                key,
                SessionOp::AnswerRequest {
                    from: check_account(&request.from)?,
                    accept: request.accept,
                },
            )
            .await
        }
        "friend.remove" => {
            let request: FriendRemoveRequest = body(op, &body_value)?;
            ask_done(
                edge,
                key,
                SessionOp::RemoveFriend {
                    account: check_account(&request.account)?,
                },
            )
            .await
        }
        "group.set" => {
            let request: GroupSetRequest = body(op, &body_value)?;
            if !(1..=64).contains(&request.name.chars().count()) {
                return Err(bad_request("group names are 1 to 64 characters"));
            }
            check_accounts(
                &request.members,
                lanmesh_actors::model::user::MAX_FRIENDS,
                "members",
            )?;
            ask_done(
                edge,
                key,
                SessionOp::SetGroup {
                    name: request.name,
                    members: request.members.into_iter().collect(),
                },
            )
            .await
        }
        "group.delete" => {
            let request: GroupDeleteRequest = body(op, &body_value)?;
            ask_done(edge, key, SessionOp::DeleteGroup { name: request.name }).await
        }
        "presence.set" => {
            let request: PresenceSetRequest = body(op, &body_value)?;
            let status = match request.status {
                WireStatus::Online => Status::Online,
                WireStatus::Away => Status::Away,
                WireStatus::Busy => Status::Busy,
                WireStatus::Invisible => Status::Invisible,
                WireStatus::Offline => {
                    return Err(bad_request(
                        "to go offline, log out or close the connection",
                    ));
                }
            };
            ask_done(edge, key, SessionOp::SetStatus { status }).await
        }
        "widget.set" => {
            let request: WidgetSetRequest = body(op, &body_value)?;
            check_accounts(
                &request.contacts,
                lanmesh_actors::model::user::MAX_WIDGET_CONTACTS,
                "widget contacts",
            )?;
            match ask_session(
                edge,
                key,
                SessionOp::SetWidget {
                    contacts: request.contacts,
                },
                None,
            )
            .await?
            {
                UserReply::Widget(entries) => value(&WidgetReply {
                    contacts: wire_widget(entries),
                }),
                other => Err(unexpected(&other)),
            }
        }
        "message.send" => send_message(edge, key, body(op, &body_value)?).await,
        "message.history" => {
            let request: MessageHistoryRequest = body(op, &body_value)?;
            let limit = request.limit.unwrap_or(50);
            if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
                return Err(bad_request(format!("limit is 1 to {MAX_HISTORY_PAGE}")));
            }
            let with = check_account(&request.with)?;
            ask_done(edge, key, SessionOp::CheckFriend { with: with.clone() }).await?;
            let page = PageRequest {
                limit,
                cursor_opt: request.cursor.map(PageCursor::from_string),
            };
            history(edge, &key.account, &with, page).await
        }
        "message.read" => {
            let request: MessageReadRequest = body(op, &body_value)?;
            ask_done(
                edge,
                key,
                SessionOp::MarkRead {
                    with: check_account(&request.with)?,
                    up_to_message_id: request.up_to_message_id,
                },
            )
            .await
        }
        "conversation.open" => {
            let request: ConversationOpenRequest = body(op, &body_value)?;
            let with = check_account(&request.with)?;
            ask_done(edge, key, SessionOp::CheckFriend { with: with.clone() }).await?;
            let page = PageRequest::first(OPEN_CONVERSATION_PAGE);
            let (messages, _) = load_history(edge, &key.account, &with, page).await?;
            let call_id = match request.kind {
                ConversationKind::Text => None,
                kind => {
                    let call_id = Uuid::new_v4().simple().to_string();
                    ask_done(
                        edge,
                        key,
                        SessionOp::Signal {
                            to: with,
                            call_id: call_id.clone(),
                            kind: kind.as_str().to_owned(),
                            signal: b"invite".to_vec(),
                        },
                    )
                    .await?;
                    Some(call_id)
                }
            };
            value(&ConversationOpenReply {
                kind: request.kind,
                messages,
                call_id,
            })
        }
        "call.signal" => {
            let request: CallSignalRequest = body(op, &body_value)?;
            if request.signal.len() > MAX_SIGNAL_BYTES || request.kind == ConversationKind::Text {
                return Err(bad_request(format!(
                    "signals are voice or video and at most {MAX_SIGNAL_BYTES} bytes"
                )));
            }
            if request.call_id.is_empty() || request.call_id.len() > 64 {
                return Err(bad_request("call_id is 1 to 64 characters"));
            }
            ask_done(
                edge,
                key,
                SessionOp::Signal {
                    to: check_account(&request.to)?,
                    call_id: request.call_id,
                    kind: request.kind.as_str().to_owned(),
                    signal: request.signal,
                },
            )
            .await
        }
        "friends.share" => {
            let request: FriendsShareRequest = body(op, &body_value)?;
            let max = edge.limits.max_shared_friends;
            check_accounts(&request.friends, max, "shared friends")?;
            if request.groups.len() > lanmesh_actors::model::user::MAX_GROUPS {
                return Err(bad_request("too many groups"));
            }
            match ask_session(
                edge,
                key,
                SessionOp::ShareFriends {
                    to: check_account(&request.to)?,
                    friends: request.friends,
                    groups: request.groups,
                    max_suggestions: max,
                },
                None,
            )
            .await?
            {
                UserReply::Shared { accounts } => value(&FriendsShareReply { accounts }),
                other => Err(unexpected(&other)),
            }
        }
        "friends.add_many" => {
            let request: FriendsAddManyRequest = body(op, &body_value)?;
            let max = edge.limits.max_friend_requests_per_batch;
            check_accounts(&request.accounts, max, "accounts")?;
            if request.note.len() > MAX_NOTE_BYTES {
                return Err(bad_request(format!(
                    "note is at most {MAX_NOTE_BYTES} bytes"
                )));
            }
            let targets = request
                .accounts
                .iter()
                .map(|account| check_account(account))
                .collect::<Result<Vec<_>, _>>()?;
            match ask_session(
                edge,
                key,
                SessionOp::RequestFriends {
                    targets,
                    note: request.note,
                    max_targets: max,
                },
                None,
            )
            .await?
            {
                UserReply::RequestsSent { sent, skipped } => {
                    value(&FriendsAddManyReply { sent, skipped })
                }
                other => Err(unexpected(&other)),
            }
        }
        other => Err(ErrorBody::new(
            ErrorCode::UnknownOp,
            format!("no operation {other:?} in protocol version 1"),
        )),
    }
}

async fn send_message(edge: &Edge, key: &ParsedKey, request: MessageSendRequest) -> OpResult {
    let to = check_account(&request.to)?;
    let message_id = Uuid::parse_str(&request.message_id)
        .map_err(|_| bad_request("message_id must be a UUID chosen by the client"))?;
    if request.text.is_empty() || request.text.len() > edge.limits.max_message_bytes {
        return Err(bad_request(format!(
            "text is 1 to {} bytes",
            edge.limits.max_message_bytes
        )));
    }
    let sent_at_ms = edge.clock().now_unix_ms();
    let op = SessionOp::SendMessage {
        to: to.clone(),
        message_id: message_id.to_string(),
        text: request.text.clone(),
        sent_at_unix_ms: sent_at_ms,
    };
    // The request's id follows from the message id: a resend is recognised and delivered once.
    // A resend is answered with the first acceptance, so it is stored with the same time.
    let sent_at_ms =
        match ask_session(edge, key, op, Some(request_id_of_message(message_id))).await? {
            UserReply::MessageAccepted { sent_at_unix_ms } => sent_at_unix_ms,
            other => return Err(unexpected(&other)),
        };
    let stored = ChatMessage {
        message_id,
        sender: key.account.clone(),
        recipient: to,
        text: request.text,
        sent_at_unix_ms: i64::try_from(sent_at_ms).unwrap_or(i64::MAX),
    };
    match edge.deps.messages.append(vec![stored]).await {
        Ok(()) => value(&MessageSendReply {
            message_id: message_id.to_string(),
            sent_at_ms,
        }),
        Err(StoreError::MessageIdReused { .. }) => Err(ErrorBody::new(
            ErrorCode::MessageIdReused,
            "this message_id was already used for a different message",
        )),
        Err(error) => {
            tracing::warn!(error = %error, "message not stored");
            Err(ErrorBody::new(
                ErrorCode::Unavailable,
                "the message could not be stored; resending it is safe",
            ))
        }
    }
}

/// The bus id of the request that sends a message: the client's UUID, of whatever version,
/// marked as version 7 (the bus's message ids), so the same message always gives the same id.
fn request_id_of_message(message_id: Uuid) -> Uuid {
    uuid::Builder::from_bytes(message_id.into_bytes())
        .with_version(uuid::Version::SortRand)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
}

async fn load_history(
    edge: &Edge,
    account: &str,
    with: &str,
    page: PageRequest,
) -> Result<(Vec<WireMessage>, Option<String>), ErrorBody> {
    let page = edge
        .deps
        .messages
        .conversation(account, with, page)
        .await
        .map_err(|error| match error {
            StoreError::InvalidCursor { .. } => bad_request("cursor is not valid"),
            other => {
                tracing::warn!(error = %other, "history not read");
                ErrorBody::new(ErrorCode::Unavailable, "history cannot be read now")
            }
        })?;
    let messages = page
        .items
        .into_iter()
        .map(|message| WireMessage {
            message_id: message.message_id.to_string(),
            from: message.sender,
            to: message.recipient,
            text: message.text,
            sent_at_ms: u64::try_from(message.sent_at_unix_ms).unwrap_or(0),
        })
        .collect();
    Ok((
        messages,
        page.next_cursor_opt
            .map(|cursor| cursor.as_str().to_owned()),
    ))
}

async fn history(edge: &Edge, account: &str, with: &str, page: PageRequest) -> OpResult {
    let (messages, next_cursor) = load_history(edge, account, with, page).await?;
    value(&MessageHistoryReply {
        messages,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_of_any_version_give_one_stable_bus_id() {
        for message_id in [Uuid::new_v4(), Uuid::now_v7(), Uuid::nil()] {
            let request_id = request_id_of_message(message_id);
            assert_eq!(request_id.get_version_num(), 7, "{message_id}");
            assert_eq!(request_id, request_id_of_message(message_id));
        }
        assert_ne!(
            request_id_of_message(Uuid::new_v4()),
            request_id_of_message(Uuid::new_v4())
        );
    }
}
