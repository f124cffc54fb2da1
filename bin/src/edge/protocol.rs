//! The client protocol on `/ws`, version 1: binary MessagePack frames `{id, op, key, body}`
//! from the client; `{id, op: "ok" | "error", body}` replies and `{op, body}` pushes from the
//! server. These are the wire types; docs/protocol.md describes them with examples.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Protocol versions this server speaks.
pub const SUPPORTED_VERSIONS: [u32; 1] = [1];

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ClientFrame {
    /// Chosen by the client; the reply carries it.
    pub id: u64,
    /// The operation, e.g. `message.send`.
    pub op: String,
    /// The auth key, on every operation after login.
    #[serde(default)]
    pub key: Option<String>,
    /// The operation's arguments (an empty map when absent).
    #[serde(default = "empty_body")]
    pub body: rmpv::Value,
}

fn empty_body() -> rmpv::Value {
    rmpv::Value::Map(Vec::new())
}

/// A frame from the server: a reply (with `id`) or a push (without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame<Body> {
    /// The request's id; absent on pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// `ok`, `error`, or the push's name.
    pub op: String,
    /// The result, the error or the push.
    pub body: Body,
}

/// The body of an `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (see [`ErrorCode`]).
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Offending account ids (`not_friends`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// When to try again (`rate_limited`, `locked_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Why a venue is not eligible (`not_eligible`), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Every error a client can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a MessagePack `{id, op, key, body}` map.
    BadFrame,
    /// The frame exceeds the size cap (the connection is closed).
    FrameTooLarge,
    /// `hello` must come first.
    HelloRequired,
    /// No common protocol version.
    UnsupportedVersion,
    /// No such operation.
    UnknownOp,
    /// The body does not fit the operation.
    BadRequest,
    /// The operation needs a key and none was given.
    Unauthenticated,
    /// The key is not a key this service issued.
    KeyInvalid,
    /// The key expired; log in again.
    KeyExpired,
    /// The key or its session was revoked.
    KeyRevoked,
    /// The accounts named are not the caller's friends.
    NotFriends,
    /// A limit was exceeded.
    TooMany,
    /// The request contradicts the account's state.
    Invalid,
    /// Too many requests; slow down.
    RateLimited,
    /// Too many failed logins for the account.
    LockedOut,
    /// Wrong username or password.
    LoginFailed,
    /// The username is taken.
    AccountExists,
    /// A message id was already used for another message.
    MessageIdReused,
    /// The service could not answer in time; retrying is safe.
    Unavailable,
    /// No partner site has this id.
    UnknownSite,
    /// The partner site is registered but disabled.
    SiteDisabled,
    /// The partner site has not authorised this IM server.
    PartnerRejectedServer,
    /// The partner site found the request's signature wrong.
    PartnerBadSignature,
    /// The partner site found the request's timestamp outside its window.
    PartnerStaleTimestamp,
    /// The partner site saw the request's nonce before (a replay).
    PartnerReplayedNonce,
    /// The partner site refused the request as malformed or for an unknown user.
    PartnerRejectedRequest,
    /// The partner site did not answer in time.
    PartnerTimeout,
    /// The partner site cannot be reached or failed (HTTP 5xx).
    PartnerUnreachable,
    /// The partner site failed recently; calls to it resume after `retry_after_ms`.
    PartnerCircuitOpen,
    /// The partner site's answer was too large, malformed, unsigned or not for this request.
    PartnerBadAnswer,
    /// A registered segment overlaps another venue's (the message names them).
    SegmentConflict,
    /// No campaign has this id.
    NoSuchCampaign,
    /// The campaign does not take this request now (not published, closed, enrolment not
    /// open; the message says which).
    CampaignNotOpen,
    /// The venue does not meet the campaign's eligibility now (`reasons` says why).
    NotEligible,
    /// The venue is not enrolled in the campaign.
    NotEnrolled,
    /// The campaign has no units left for another venue.
    BudgetExhausted,
    /// No traffic share has this id.
    NoSuchShare,
    /// The account is not the share's sharer or requester, or not the party this needs.
    NotAParty,
    /// The share is not in a state that allows this (the message says which).
    WrongStatus,
    /// The offer is farther away than the range.
    OutOfRange,
    /// No offer within range has the amount asked for.
    NoOfferInRange,
    /// The share password is wrong (the message says how many attempts are left).
    WrongPassword,
    /// Too many wrong passwords: the share is blocked.
    ShareBlocked,
    /// A daily traffic-sharing cap would be passed.
    DailyCapReached,
}

/// `hello`: negotiates the protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HelloRequest {
    /// Versions the client speaks.
    pub versions: Vec<u32>,
}

/// Reply to `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The version both speak (the highest).
    pub version: u32,
    /// The node serving the connection.
    pub node_id: String,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// The connection is closed after this long without a frame.
    pub idle_timeout_ms: u64,
}

/// `account.register`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RegisterRequest {
    /// 3–32 characters of `a-z 0-9 . _ -`, case-insensitive; becomes the account id.
    pub username: String,
    /// 8–256 bytes.
    pub password: String,
    /// Shown to friends; 1–64 characters.
    pub display_name: String,
}

/// Reply to `account.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The account id.
    pub account: String,
}

/// `session.login`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LoginRequest {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// A stable id of the device (one session per account per device).
    pub device: String,
    /// `client` (default) or `widget`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_mode() -> Mode {
    Mode::Client
}

/// What a session wants pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every message, request and receipt.
    Client,
    /// Only what concerns the widget's contacts.
    Widget,
}

/// Presence as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireStatus {
    /// Offline (or invisible, to others).
    Offline,
    /// Connected, shown offline.
    Invisible,
    /// Away.
    Away,
    /// Busy.
    Busy,
    /// Online.
    Online,
}

/// Unread messages from one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHint {
    /// The contact.
    pub from: String,
    /// Unread messages (0 once read).
    pub unread: u32,
    /// The start of the latest.
    pub preview: String,
    /// The latest's id.
    pub message_id: String,
    /// When the latest was sent.
    pub at_ms: u64,
}

/// A widget contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWidgetEntry {
    /// The contact.
    pub account: String,
    /// Their display name.
    pub display_name: String,
    /// Unread messages from them, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<WireHint>,
}

/// A friend request received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    /// The requester.
    pub from: String,
    /// Their display name.
    pub display_name: String,
    /// Their note.
    pub note: String,
    /// When it arrived.
    pub at_ms: u64,
}

/// Reply to `session.login` and `session.resume`: the session and what to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReply {
    /// The account.
    pub account: String,
    /// Its display name.
    pub display_name: String,
    /// The session.
    pub session: String,
    /// A new key (login only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When the key expires (login only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Whether the device's existing session was joined.
    pub reused: bool,
    /// The session's status.
    pub status: WireStatus,
    /// The widget's contacts.
    pub widget: Vec<WireWidgetEntry>,
    /// Every unread hint.
    pub unread: Vec<WireHint>,
    /// Friend requests waiting for an answer.
    pub requests_in: Vec<WireRequest>,
    /// Partner login only: whether this login created the linked account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub account_created: bool,
}

/// `session.partner_login`: log in with a partner site's account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PartnerLoginRequest {
    /// The partner site's id.
    pub site: String,
    /// The username on the site.
    pub username: String,
    /// The password on the site (sent to the site only, never stored).
    pub password: String,
    /// A stable id of the device.
    pub device: String,
    /// `client` (default) or `widget`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

/// `partner.contacts` and `partner.posts`: one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PartnerPageRequest {
    /// Where to continue (`next_cursor` of the previous page); absent for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most items wanted; default and maximum depend on the operation.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A contact of the user on the partner site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePartnerContact {
    /// Their username on the site.
    pub username: String,
    /// Their display name on the site.
    pub display_name: String,
    /// Their IM account when they have logged in here too: a friend suggestion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Reply to `partner.contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerContactsReply {
    /// The page.
    pub contacts: Vec<WirePartnerContact>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A post published on the partner site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePartnerPost {
    /// The site's id of the post.
    pub post_id: String,
    /// The author's username on the site.
    pub author: String,
    /// The text.
    pub text: String,
    /// When it was published (Unix ms).
    pub published_at_ms: u64,
}

/// Reply to `partner.posts`, and the `partner.posts` push after a partner login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPostsReply {
    /// The site.
    pub site: String,
    /// The page, newest first.
    pub posts: Vec<WirePartnerPost>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Reply to `session.refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReply {
    /// The new key (the presented one stops working).
    pub key: String,
    /// When it expires.
    pub expires_at_ms: u64,
}

/// `session.revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RevokeRequest {
    /// Another session of the account.
    pub session: String,
}

/// A friend in the contact list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFriend {
    /// The friend.
    pub account: String,
    /// Their display name.
    pub display_name: String,
    /// Friends since.
    pub since_ms: u64,
}

/// A friend request sent and not answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOutgoingRequest {
    /// The addressee.
    pub to: String,
    /// When sent.
    pub at_ms: u64,
}

/// Reply to `contacts.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactsReply {
    /// Friends.
    pub friends: Vec<WireFriend>,
    /// Groups by name.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Requests received.
    pub requests_in: Vec<WireRequest>,
    /// Requests sent.
    pub requests_out: Vec<WireOutgoingRequest>,
}

/// `friend.request`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FriendRequestRequest {
    /// The addressee.
    pub to: String,
    /// A note (≤ 256 bytes).
    #[serde(default)]
    pub note: String,
}

/// `friend.answer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FriendAnswerRequest {
    /// The requester.
    pub from: String,
    /// Accept (true) or decline.
    pub accept: bool,
}

/// `friend.remove`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FriendRemoveRequest {
    /// The friend.
    pub account: String,
}

/// `group.set`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupSetRequest {
    /// 1–64 characters.
    pub name: String,
    /// Friends.
    pub members: Vec<String>,
}

/// `group.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupDeleteRequest {
    /// The group.
    pub name: String,
}

/// `presence.set`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PresenceSetRequest {
    /// `online`, `away`, `busy` or `invisible` (`offline` is logging out).
    pub status: WireStatus,
}

/// `widget.set`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WidgetSetRequest {
    /// The chosen friends, in display order.
    pub contacts: Vec<String>,
}

/// Reply to `widget.set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetReply {
    /// The widget's contacts (their presence follows as pushes).
    pub contacts: Vec<WireWidgetEntry>,
}

/// `message.send`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MessageSendRequest {
    /// The friend.
    pub to: String,
    /// A UUID chosen by the client; resending the same id is safe.
    pub message_id: String,
    /// The text.
    pub text: String,
}

/// Reply to `message.send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSendReply {
    /// The message id.
    pub message_id: String,
    /// When the server accepted it.
    pub sent_at_ms: u64,
}

/// `message.history`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MessageHistoryRequest {
    /// The friend.
    pub with: String,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Its id.
    pub message_id: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Text.
    pub text: String,
    /// When sent.
    pub sent_at_ms: u64,
}

/// Reply to `message.history`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHistoryReply {
    /// The page.
    pub messages: Vec<WireMessage>,
    /// Where the next (older) page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `message.read`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MessageReadRequest {
    /// The friend whose messages were read.
    pub with: String,
    /// The last message read.
    pub up_to_message_id: String,
}

/// The kind of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Text messages.
    Text,
    /// A voice call (the server relays the set-up signalling).
    Voice,
    /// A video call (the server relays the set-up signalling).
    Video,
}

impl ConversationKind {
    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Voice => "voice",
            Self::Video => "video",
        }
    }
}

/// `conversation.open`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConversationOpenRequest {
    /// The friend.
    pub with: String,
    /// text (default), voice or video.
    #[serde(default = "default_kind")]
    pub kind: ConversationKind,
}

fn default_kind() -> ConversationKind {
    ConversationKind::Text
}

/// Reply to `conversation.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationOpenReply {
    /// The kind opened.
    pub kind: ConversationKind,
    /// The newest messages.
    pub messages: Vec<WireMessage>,
    /// The call's id (voice and video); the friend got a `call.signal` invite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// `call.signal`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CallSignalRequest {
    /// The friend.
    pub to: String,
    /// The call.
    pub call_id: String,
    /// voice or video.
    pub kind: ConversationKind,
    /// The signal (SDP offer/answer, ICE candidate, hang-up ...), opaque, ≤ 16 KiB.
    #[serde(with = "serde_bytes")]
    pub signal: Vec<u8>,
}

/// `friends.share`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FriendsShareRequest {
    /// The friend to share with.
    pub to: String,
    /// Single friends.
    #[serde(default)]
    pub friends: Vec<String>,
    /// Whole groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Reply to `friends.share`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendsShareReply {
    /// The accounts sent to the target.
    pub accounts: Vec<String>,
}

/// `friends.add_many`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FriendsAddManyRequest {
    /// The picked accounts.
    pub accounts: Vec<String>,
    /// A note.
    #[serde(default)]
    pub note: String,
}

/// Reply to `friends.add_many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendsAddManyReply {
    /// Requests sent.
    pub sent: Vec<String>,
    /// Skipped (already friends, oneself, duplicates).
    pub skipped: Vec<String>,
}

/// Push `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresencePush {
    /// The contact.
    pub account: String,
    /// Their status.
    pub status: WireStatus,
    /// When last seen.
    pub last_seen_ms: u64,
}

/// Push `message`.
pub type MessagePush = WireMessage;

/// Push `friend.request`.
pub type FriendRequestPush = WireRequest;

/// Push `friend.accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendAcceptedPush {
    /// The new friend.
    pub by: String,
    /// Their display name.
    pub display_name: String,
}

/// Push `friend.declined` and `friend.removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByPush {
    /// Who.
    pub by: String,
}

/// Push `friends.shared`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendsSharedPush {
    /// The sharer.
    pub from: String,
    /// Suggested accounts; answer with `friends.add_many`.
    pub accounts: Vec<String>,
}

/// Push `receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptPush {
    /// The reader.
    pub by: String,
    /// The last message they read.
    pub up_to_message_id: String,
}

/// Push `call.signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSignalPush {
    /// The other party.
    pub from: String,
    /// The call.
    pub call_id: String,
    /// voice or video.
    pub kind: String,
    /// The signal as sent.
    #[serde(with = "serde_bytes")]
    pub signal: Vec<u8>,
}

/// Push `session.ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEndedPush {
    /// The session.
    pub session: String,
    /// Why.
    pub reason: String,
}

/// `gateway.register` (and, without `password`, `gateway.amend`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GatewayRegisterRequest {
    /// The venue's name, 1–128 characters.
    pub venue_name: String,
    /// The venue's postal address, 1–256 characters.
    pub venue_address: String,
    /// The IM account of the venue's admin (must exist).
    pub admin_account: String,
    /// The LAN's public segments as CIDR blocks, 1–16.
    pub segments: Vec<String>,
    /// The gateway's password, 8–256 bytes (`gateway.register` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Reply to `gateway.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRegisterReply {
    /// The new gateway's id (it logs in with it).
    pub gateway_id: String,
    /// Always `pending`.
    pub status: WireGatewayStatus,
    /// When the first monitoring window starts (the next UTC midnight).
    pub window_starts_at_ms: u64,
}

/// `gateway.login`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct GatewayLoginRequest {
    /// The gateway.
    pub gateway_id: String,
    /// Its password.
    pub password: String,
}

/// Where a gateway stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireGatewayStatus {
    /// Being monitored.
    Pending,
    /// Certified at a tier.
    Certified,
    /// Rejected: amend the registration.
    Rejected,
}

/// One certification result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCertification {
    /// `certified` or `rejected`.
    pub status: WireGatewayStatus,
    /// The tier, when certified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// What the tier grants.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Why it was rejected: each condition, measured against required.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The policy version that decided it.
    pub policy_version: u64,
    /// The window evaluated.
    pub window_start_ms: u64,
    /// The window's end.
    pub window_end_ms: u64,
    /// When it was decided.
    pub decided_at_ms: u64,
    /// What both monitors measured over the window.
    pub figures: WireWindowFigures,
}

/// What both monitors measured over a certification window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWindowFigures {
    /// Client logins from the venue's segments.
    pub client_logins: u64,
    /// Distinct accounts among them (summed over segments: an upper bound).
    pub distinct_accounts: u64,
    /// Most clients online at once (summed over segments: an upper bound).
    pub peak_concurrent_clients: u64,
    /// Client online time.
    pub client_online_ms: u64,
    /// The gateway's own online time.
    pub gateway_online_ms: u64,
    /// Days on which the gateway was online at all.
    pub gateway_days_online: u32,
    /// The window's length.
    pub window_days: u32,
}

/// Reply to `gateway.status`, and part of the `gateway.login` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatusReply {
    /// The gateway.
    pub gateway_id: String,
    /// The venue's name.
    pub venue_name: String,
    /// The venue's address.
    pub venue_address: String,
    /// The admin's account.
    pub admin_account: String,
    /// The registered segments, canonical.
    pub segments: Vec<String>,
    /// Where it stands.
    pub status: WireGatewayStatus,
    /// Bumped by every registration or amendment.
    pub revision: u64,
    /// Start of the current monitoring window.
    pub window_starts_at_ms: u64,
    /// Results, oldest first.
    pub history: Vec<WireCertification>,
    /// Rewards the venue won in campaigns, oldest first.
    #[serde(default)]
    pub rewards: Vec<WireReward>,
}

/// Reply to `gateway.login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLoginReply {
    /// The key for `gateway.amend` and `gateway.status`, valid while this login lasts.
    pub key: String,
    /// When the key expires.
    pub expires_at_ms: u64,
    /// The gateway's state.
    pub gateway: GatewayStatusReply,
    /// A result decided while the gateway was offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undelivered: Option<WireCertification>,
}

/// A reward won in a campaign: push `campaign.reward` to the winning account's client
/// sessions and `gateway.reward` to the winning venue's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReward {
    /// The campaign that granted it (one reward per campaign per winner).
    pub campaign_id: String,
    /// The campaign's title.
    pub campaign_title: String,
    /// The winner's place in the ranking, from 1.
    pub rank: u32,
    /// The winner's score.
    pub score: u64,
    /// What is granted, as the operator wrote it.
    pub text: String,
    /// When the campaign closed.
    pub granted_at_ms: u64,
}

/// Push `campaign.reward` and `gateway.reward`.
pub type RewardPush = WireReward;

/// Push `campaign.units_issued`: a campaign's quota ledger issued units to the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitsIssuedPush {
    /// The campaign.
    pub campaign_id: String,
    /// The venue's gateway whose quota the units came from.
    pub gateway_id: String,
    /// How many units.
    pub units: u64,
}

/// A client's request for campaign units, as its venue's gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUnitRequest {
    /// The client's id for the request.
    pub request_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The asking account.
    pub account: String,
    /// How many units it asks for.
    pub units: u64,
    /// Its note for the venue's admin.
    pub note: String,
    /// When the gateway received it.
    pub at_ms: u64,
}

/// Push `gateway.unit_request`.
pub type UnitRequestPush = WireUnitRequest;
