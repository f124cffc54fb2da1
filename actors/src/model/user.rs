//! One IM account as a pure state machine: credentials, sessions and their auth keys,
//! friends, friend groups and requests, presence aggregated over sessions, the sessions that
//! watch this account's presence, and unread-message hints per contact.
//!
//! Every operation takes `now_unix_ms` and returns what it decided plus the [`UserEffect`]s the
//! shell must carry out (pushes to sessions, messages to other accounts, audit notes). Nothing
//! here does I/O or reads a clock.

use crate::model::reward::{Reward, keep_reward};
use crate::model::share::{Party, ShareEvent};
use crate::model::share_allowance::{AllowanceError, DailyShareCaps, ShareAllowance};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most auth keys one session holds at once (several connections of one device share it).
pub const MAX_KEYS_PER_SESSION: usize = 8;
/// Most sessions one account holds; the least recently active one is dropped beyond it.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 32;
/// Most contacts one widget shows.
pub const MAX_WIDGET_CONTACTS: usize = 64;
/// Most friends one account may have.
pub const MAX_FRIENDS: usize = 5_000;
/// Most friend groups per account.
pub const MAX_GROUPS: usize = 200;
/// Most unanswered friend requests an account keeps, received and sent (each): requests
/// beyond it are refused (sent) or dropped (received), so strangers cannot grow its state.
pub const MAX_PENDING_REQUESTS: usize = 1_000;
/// Characters of a message kept as its preview in a hint.
pub const PREVIEW_CHARS: usize = 64;
/// How many revoked key hashes are remembered, to tell "revoked" from "unknown".
const REMEMBERED_REVOKED_KEYS: usize = 32;
/// Campaign holdings one account keeps; the oldest is forgotten beyond it.
pub const CAMPAIGN_HOLDINGS_KEPT: usize = 256;

/// A status a session can choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Shown as offline to everyone.
    #[default]
    Offline,
    /// Connected but shown as offline.
    Invisible,
    /// Away from the device.
    Away,
    /// Do not disturb.
    Busy,
    /// Available.
    Online,
}

impl Status {
    /// How others see a session with this status (invisible looks offline).
    fn visible(self) -> Self {
        match self {
            Self::Invisible => Self::Offline,
            other => other,
        }
    }

    /// Rank when aggregating sessions: the most available session wins.
    fn rank(self) -> u8 {
        match self {
            Self::Offline | Self::Invisible => 0,
            Self::Away => 1,
            Self::Busy => 2,
            Self::Online => 3,
        }
    }
}

/// What a session's client wants pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// A full IM client: every message, friend request and receipt.
    Client,
    /// A widget: only what concerns the contacts it selected.
    Widget,
}

/// One issued auth key, stored as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// SHA-256 of the key's secret, hex.
    pub hash: String,
    /// When the key stops being accepted.
    pub expires_at_unix_ms: u64,
}

/// One session of the account (one per device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The device the session belongs to (chosen by the client).
    pub device: String,
    /// The node whose edge holds the session's connections.
    pub node_id: String,
    /// What the client wants pushed.
    pub mode: SessionMode,
    /// Live keys.
    pub keys: Vec<KeyRecord>,
    /// The status the session chose.
    pub status: Status,
    /// Whether a connection is attached (a disconnected session counts as offline).
    pub connected: bool,
    /// Contacts selected for the widget, in the client's order.
    pub widget: Vec<String>,
    /// Last time a request used the session.
    pub last_active_unix_ms: u64,
}

/// A friend as this account knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Friend {
    /// The friend's display name when the friendship began.
    pub display_name: String,
    /// When the friendship began.
    pub since_unix_ms: u64,
}

/// A friend request this account received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingRequest {
    /// The requester's display name.
    pub display_name: String,
    /// The requester's note.
    pub note: String,
    /// When it arrived.
    pub at_unix_ms: u64,
}

/// Unread messages from one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadHint {
    /// How many are unread.
    pub n_unread: u32,
    /// The start of the latest one.
    pub preview: String,
    /// The latest one's id.
    pub last_message_id: String,
    /// When the latest one was sent.
    pub last_at_unix_ms: u64,
}

/// A session watching this account's presence, on some node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watcher {
    /// The watching account.
    pub account: String,
    /// The node holding the watching session.
    pub node_id: String,
}

/// What an account holds in one campaign (S0 steps 8, 11 and 12): its enrolment through a
/// venue's gateway and the units the campaign's quota ledger issued to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignHolding {
    /// The campaign.
    pub campaign_id: String,
    /// The gateway (venue) the account enrolled through; the first enrolment is kept.
    pub enrolled_via_opt: Option<String>,
    /// When it enrolled.
    pub enrolled_at_unix_ms_opt: Option<u64>,
    /// The units issued to the account, once the ledger posted them.
    pub issued_opt: Option<IssuedUnits>,
}

/// Units a campaign's quota ledger issued to an account (one claim per campaign per account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedUnits {
    /// The gateway whose quota the units came from.
    pub gateway_id: String,
    /// The ledger's transfer that posted them (a redelivery names the same one).
    pub transfer_id: u64,
    /// How many.
    pub units: u64,
    /// How many the gateway reported used, never more than `units`, never decreasing.
    pub used_units: u64,
    /// When the account learnt of them.
    pub issued_at_unix_ms: u64,
}

/// The registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account id (the canonical username).
    pub id: String,
    /// Shown to friends.
    pub display_name: String,
    /// argon2id PHC string of the password (empty for an account linked to a partner site,
    /// which has no password here).
    pub password_hash: String,
    /// When it registered.
    pub created_unix_ms: u64,
    /// The partner-site identity this account was created for (S2); `None` for an account
    /// registered here.
    #[serde(default)]
    pub partner_link_opt: Option<PartnerLink>,
}

/// A user of a partner site, as the site names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerLink {
    /// The site.
    pub site_id: String,
    /// The site's canonical username.
    pub username: String,
}

/// What anyone may learn about an account: that it exists, its name, and its partner link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Shown to friends.
    pub display_name: String,
    /// The partner identity, if the account is linked to one.
    pub partner_link_opt: Option<PartnerLink>,
}

/// Everything one account's entity persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// `None` until registered.
    pub account_opt: Option<Account>,
    /// Friends by account id.
    pub friends: BTreeMap<String, Friend>,
    /// Friend groups by name.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Friend requests received, by requester.
    pub requests_in: BTreeMap<String, IncomingRequest>,
    /// Friend requests sent and not answered, by addressee (value: when sent).
    pub requests_out: BTreeMap<String, u64>,
    /// Sessions by session id.
    pub sessions: BTreeMap<String, SessionRecord>,
    /// Sessions of other accounts watching this one, by session id.
    pub watchers: BTreeMap<String, Watcher>,
    /// Unread hints by contact.
    pub unread: BTreeMap<String, UnreadHint>,
    /// The status others see.
    pub shown_status: Status,
    /// When the account was last seen (went offline, or last change while online).
    pub last_seen_unix_ms: u64,
    /// Recent failed logins (times), for the per-account limit.
    pub failed_logins: Vec<u64>,
    /// Hashes of recently revoked keys.
    pub revoked_keys: Vec<String>,
    /// Rewards won in campaigns (S0 step 13), oldest first, the last
    /// [`crate::model::reward::REWARDS_KEPT`].
    #[serde(default)]
    pub rewards: Vec<Reward>,
    /// What the account holds per campaign, oldest first, the last
    /// [`CAMPAIGN_HOLDINGS_KEPT`].
    #[serde(default)]
    pub campaign_holdings: Vec<CampaignHolding>,
    /// Today's traffic-share reservations against the daily caps (S4).
    #[serde(default)]
    pub share_allowance: ShareAllowance,
}

/// A message this entity pushes to one session's client (through the session's node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionPush {
    /// A watched contact's presence.
    Presence {
        /// The contact.
        account: String,
        /// What others see.
        status: Status,
        /// When last seen.
        last_seen_unix_ms: u64,
    },
    /// Unread messages from a contact changed.
    Hint {
        /// The contact.
        from: String,
        /// The hint (zero unread once read).
        hint: UnreadHint,
    },
    /// A message arrived (client sessions).
    Message {
        /// Its id.
        message_id: String,
        /// The sender.
        from: String,
        /// The text.
        text: String,
        /// When it was sent.
        sent_at_unix_ms: u64,
    },
    /// Someone asks to be a friend.
    FriendRequest {
        /// The requester.
        from: String,
        /// Their display name.
        display_name: String,
        /// Their note.
        note: String,
        /// When it arrived (as kept in the account's pending requests).
        at_unix_ms: u64,
    },
    /// A friend request was accepted; `by` is now a friend.
    FriendAccepted {
        /// Who accepted.
        by: String,
        /// Their display name.
        display_name: String,
    },
    /// A friend request was declined.
    FriendDeclined {
        /// Who declined.
        by: String,
    },
    /// A friend ended the friendship.
    FriendRemoved {
        /// Who.
        by: String,
    },
    /// A friend shared some of their friends as suggestions.
    FriendsShared {
        /// The sharer.
        from: String,
        /// The suggested accounts.
        accounts: Vec<String>,
    },
    /// A contact read messages up to one.
    Receipt {
        /// The reader.
        by: String,
        /// The last message read.
        up_to_message_id: String,
    },
    /// Call set-up signalling from a contact (opaque to the server).
    CallSignal {
        /// The caller or callee.
        from: String,
        /// The call.
        call_id: String,
        /// text, voice or video.
        kind: String,
        /// The signal (offer, answer, candidate, hang-up ...), relayed as is.
        signal: Vec<u8>,
    },
    /// The session was ended from elsewhere (logout, revoked, replaced).
    SessionEnded {
        /// Why.
        reason: String,
    },
    /// The account won a reward in a campaign (client sessions). Named apart from the
    /// gateway's `GatewayPush::Reward`: both travel in the same push envelope and the edge
    /// tells them apart by variant name.
    CampaignReward(Reward),
    /// Something happened to a traffic share the account is a party to (client sessions).
    Share {
        /// The share.
        share_id: String,
        /// What happened.
        event: ShareEvent,
    },
    /// A campaign's quota ledger issued units to the account (client sessions).
    UnitsIssued {
        /// The campaign.
        campaign_id: String,
        /// The gateway whose quota they came from.
        gateway_id: String,
        /// How many.
        units: u64,
    },
}

/// A message this account sends to another account's entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerEvent {
    /// Asks to become friends.
    FriendRequest {
        /// The requester's display name.
        display_name: String,
        /// A note.
        note: String,
    },
    /// Accepts the receiver's request.
    FriendAccepted {
        /// The accepter's display name.
        display_name: String,
    },
    /// Declines the receiver's request.
    FriendDeclined,
    /// Ends the friendship.
    FriendRemoved,
    /// A session of the sender watches the receiver's presence.
    Watch {
        /// The watching session.
        session_id: String,
        /// Its node.
        node_id: String,
    },
    /// A session of the sender stops watching.
    Unwatch {
        /// The session.
        session_id: String,
    },
    /// A message for the receiver.
    MessageArrived {
        /// Its id.
        message_id: String,
        /// Its text.
        text: String,
        /// When it was sent.
        sent_at_unix_ms: u64,
    },
    /// The sender read the receiver's messages up to one.
    ReadReceipt {
        /// The last message read.
        up_to_message_id: String,
    },
    /// Friends suggested by the sender.
    FriendsShared {
        /// The suggested accounts.
        accounts: Vec<String>,
    },
    /// Call signalling for the receiver.
    CallSignal {
        /// The call.
        call_id: String,
        /// text, voice or video.
        kind: String,
        /// The opaque signal.
        signal: Vec<u8>,
    },
}

/// Something the shell must do because of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEffect {
    /// Push to one session on its node (best effort).
    Push {
        /// The node holding the session.
        node_id: String,
        /// The session.
        session_id: String,
        /// What to push.
        push: SessionPush,
    },
    /// Send an event to another account's entity.
    Send {
        /// The receiving account.
        to: String,
        /// The event.
        event: PeerEvent,
    },
    /// Record an audit event.
    Audit {
        /// What happened, e.g. `friend.accepted`.
        action: &'static str,
        /// Details, human readable, never secret.
        detail: String,
    },
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserError {
    /// The account does not exist.
    NoSuchAccount,
    /// Registering a name that is taken.
    AccountExists,
    /// Too many failed logins; try again later.
    LockedOut {
        /// Milliseconds until the next attempt is accepted.
        retry_after_ms: u64,
    },
    /// The key is not one this account issued for that session.
    KeyInvalid,
    /// The key expired.
    KeyExpired,
    /// The key (or its session) was revoked.
    KeyRevoked,
    /// These accounts are not friends of this account.
    NotFriends {
        /// The offending ids.
        accounts: Vec<String>,
    },
    /// A limit was exceeded.
    TooMany {
        /// What.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// The request contradicts the state (e.g. befriending oneself).
    Invalid {
        /// Why.
        reason: String,
    },
    /// A daily traffic-sharing cap would be passed.
    DailyCap {
        /// Which cap, with the figures.
        reason: String,
    },
}

/// What a client learns when it opens or resumes a session: enough to rebuild its view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The account.
    pub account: String,
    /// Its display name.
    pub display_name: String,
    /// The session.
    pub session_id: String,
    /// Whether an existing session of the device was reused.
    pub reused: bool,
    /// The session's status.
    pub status: Status,
    /// The widget's contacts with their hints.
    pub widget: Vec<WidgetEntry>,
    /// Unread hints by contact.
    pub unread: BTreeMap<String, UnreadHint>,
    /// Pending friend requests received.
    pub requests_in: BTreeMap<String, IncomingRequest>,
}

/// One contact as a widget shows it (presence arrives by push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetEntry {
    /// The contact.
    pub account: String,
    /// Their display name.
    pub display_name: String,
    /// Unread messages from them.
    pub hint_opt: Option<UnreadHint>,
}

/// The contact list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactList {
    /// Friends by account.
    pub friends: BTreeMap<String, Friend>,
    /// Groups by name.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Requests received.
    pub requests_in: BTreeMap<String, IncomingRequest>,
    /// Requests sent, by addressee.
    pub requests_out: BTreeMap<String, u64>,
}

/// The per-account login limit: at most `max_failures` failed logins within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLimit {
    /// Failures allowed in the window.
    pub max_failures: u32,
    /// The window.
    pub window_ms: u64,
}

/// A new session to open (or a key to add to the device's existing session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpening {
    /// The id to use when no session of the device exists.
    pub new_session_id: String,
    /// The device.
    pub device: String,
    /// The node whose edge holds the connection.
    pub node_id: String,
    /// What the client wants pushed.
    pub mode: SessionMode,
    /// The new key.
    pub key: KeyRecord,
}

/// Shorthand for an operation's result.
pub type UserResult<T> = Result<(T, Vec<UserEffect>), UserError>;

fn audit(action: &'static str, detail: String) -> UserEffect {
    UserEffect::Audit { action, detail }
}

fn preview_of(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

impl UserState {
    fn account(&self) -> Result<&Account, UserError> {
        self.account_opt.as_ref().ok_or(UserError::NoSuchAccount)
    }

    fn own_id(&self) -> String {
        self.account_opt
            .as_ref()
            .map(|account| account.id.clone())
            .unwrap_or_default()
    }

    fn display_name(&self) -> String {
        self.account_opt
            .as_ref()
            .map(|account| account.display_name.clone())
            .unwrap_or_default()
    }

    /// Registers the account.
    pub fn register(
        &mut self,
        account_id: String,
        display_name: String,
        password_hash: String,
        now_unix_ms: u64,
    ) -> UserResult<()> {
        if self.account_opt.is_some() {
            return Err(UserError::AccountExists);
        }
        let detail = format!("display_name={display_name}");
        self.account_opt = Some(Account {
            id: account_id,
            display_name,
            password_hash,
            created_unix_ms: now_unix_ms,
            partner_link_opt: None,
        });
        Ok(((), vec![audit("account.registered", detail)]))
    }

    /// Opens a session for a partner-site user whose credentials the site just verified,
    /// creating the account linked to that identity on first use. Returns the session and
    /// whether the account was created. The display name follows the site's.
    pub fn open_partner_session(
        &mut self,
        account_id: String,
        link: PartnerLink,
        display_name: String,
        opening: SessionOpening,
        now_unix_ms: u64,
    ) -> UserResult<(SessionSnapshot, bool)> {
        let mut effects = Vec::new();
        let created = match &mut self.account_opt {
            Some(account) if account.partner_link_opt.as_ref() == Some(&link) => {
                account.display_name.clone_from(&display_name);
                false
            }
            Some(_) => {
                return Err(UserError::Invalid {
                    reason: "the account is not linked to this partner identity".to_owned(),
                });
            }
            None => {
                effects.push(audit(
                    "account.linked",
                    format!("site={} username={}", link.site_id, link.username),
                ));
                self.account_opt = Some(Account {
                    id: account_id,
                    display_name,
                    password_hash: String::new(),
                    created_unix_ms: now_unix_ms,
                    partner_link_opt: Some(link),
                });
                true
            }
        };
        match self.open_session(opening, now_unix_ms) {
            Ok((snapshot, session_effects)) => {
                effects.extend(session_effects);
                Ok(((snapshot, created), effects))
            }
            Err(error) => {
                if created {
                    self.account_opt = None;
                }
                Err(error)
            }
        }
    }

    /// The account's public profile.
    pub fn profile(&self) -> Result<Profile, UserError> {
        let account = self.account()?;
        Ok(Profile {
            display_name: account.display_name.clone(),
            partner_link_opt: account.partner_link_opt.clone(),
        })
    }

    /// The password hash to verify a login against, unless the account is locked out.
    /// An account linked to a partner site has no password here: it logs in through its site.
    pub fn credential(&self, limit: LoginLimit, now_unix_ms: u64) -> Result<String, UserError> {
        let account = self.account()?;
        if account.partner_link_opt.is_some() {
            return Err(UserError::NoSuchAccount);
        }
        let window_start = now_unix_ms.saturating_sub(limit.window_ms);
        let recent: Vec<u64> = self
            .failed_logins
            .iter()
            .copied()
            .filter(|at| *at > window_start)
            .collect();
        if recent.len() >= limit.max_failures as usize
            && let Some(oldest) = recent.iter().min()
        {
            let retry_after_ms = oldest.saturating_add(limit.window_ms) - now_unix_ms;
            return Err(UserError::LockedOut { retry_after_ms });
        }
        Ok(account.password_hash.clone())
    }

    /// Records a failed login (the password did not verify).
    pub fn login_failed(&mut self, limit: LoginLimit, now_unix_ms: u64) -> UserResult<()> {
        self.account()?;
        let window_start = now_unix_ms.saturating_sub(limit.window_ms);
        self.failed_logins.retain(|at| *at > window_start);
        self.failed_logins.push(now_unix_ms);
        Ok(((), vec![audit("login.failed", String::new())]))
    }

    /// Opens a session for a device after a verified login, or adds a key to the device's
    /// session when it has one (one session per account per device, shared by connections).
    pub fn open_session(
        &mut self,
        opening: SessionOpening,
        now_unix_ms: u64,
    ) -> UserResult<SessionSnapshot> {
        self.account()?;
        self.failed_logins.clear();
        let existing_opt = self
            .sessions
            .iter()
            .find(|(_, session)| session.device == opening.device)
            .map(|(session_id, _)| session_id.clone());
        let reused = existing_opt.is_some();
        let session_id = existing_opt.unwrap_or(opening.new_session_id);
        let mut effects = Vec::new();
        let session = self
            .sessions
            .entry(session_id.clone())
            .or_insert_with(|| SessionRecord {
                device: opening.device.clone(),
                node_id: opening.node_id.clone(),
                mode: opening.mode,
                keys: Vec::new(),
                status: Status::Online,
                connected: true,
                widget: Vec::new(),
                last_active_unix_ms: now_unix_ms,
            });
        if session.node_id != opening.node_id {
            effects.extend(rehome_watches(&session_id, session, &opening.node_id));
        }
        session.node_id = opening.node_id;
        session.connected = true;
        session.last_active_unix_ms = now_unix_ms;
        session
            .keys
            .retain(|key| key.expires_at_unix_ms > now_unix_ms);
        session.keys.push(opening.key);
        if session.keys.len() > MAX_KEYS_PER_SESSION {
            session.keys.remove(0);
        }
        effects.push(audit(
            if reused {
                "session.key_added"
            } else {
                "session.opened"
            },
            format!("session={session_id} device={}", opening.device),
        ));
        self.drop_least_active_sessions(&session_id, &mut effects);
        effects.extend(self.update_shown_status(now_unix_ms));
        let snapshot = self.snapshot(&session_id, reused)?;
        Ok((snapshot, effects))
    }

    /// Ends the least recently active sessions beyond the cap, never `keep_session_id`.
    fn drop_least_active_sessions(&mut self, keep_session_id: &str, effects: &mut Vec<UserEffect>) {
        while self.sessions.len() > MAX_SESSIONS_PER_ACCOUNT {
            let Some(oldest) = self
                .sessions
                .iter()
                .filter(|(session_id, _)| session_id.as_str() != keep_session_id)
                .min_by_key(|(_, session)| session.last_active_unix_ms)
                .map(|(session_id, _)| session_id.clone())
            else {
                return;
            };
            effects.extend(self.end_session(&oldest, "too many sessions; the oldest was ended"));
        }
    }

    /// Checks a key presented for a session; the caller refuses the request on error.
    pub fn check_key(
        &self,
        session_id: &str,
        key_hash: &str,
        now_unix_ms: u64,
    ) -> Result<(), UserError> {
        self.account()?;
        let Some(session) = self.sessions.get(session_id) else {
            return Err(if self.revoked_keys.iter().any(|hash| hash == key_hash) {
                UserError::KeyRevoked
            } else {
                UserError::KeyInvalid
            });
        };
        match session.keys.iter().find(|key| key.hash == key_hash) {
            Some(key) if key.expires_at_unix_ms > now_unix_ms => Ok(()),
            Some(_) => Err(UserError::KeyExpired),
            None if self.revoked_keys.iter().any(|hash| hash == key_hash) => {
                Err(UserError::KeyRevoked)
            }
            None => Err(UserError::KeyInvalid),
        }
    }

    /// Re-attaches a session on `node_id` (after a dropped connection or on another node).
    pub fn resume(
        &mut self,
        session_id: &str,
        node_id: &str,
        now_unix_ms: u64,
    ) -> UserResult<SessionSnapshot> {
        let mut effects = Vec::new();
        let session = self.session_mut(session_id)?;
        if session.node_id != node_id {
            effects.extend(rehome_watches(session_id, session, node_id));
        }
        session.node_id = node_id.to_owned();
        session.connected = true;
        session.last_active_unix_ms = now_unix_ms;
        effects.extend(self.update_shown_status(now_unix_ms));
        let snapshot = self.snapshot(session_id, true)?;
        Ok((snapshot, effects))
    }

    /// Replaces the presented key by a new one.
    pub fn refresh_key(
        &mut self,
        session_id: &str,
        old_hash: &str,
        new_key: KeyRecord,
    ) -> UserResult<()> {
        let session = self.session_mut(session_id)?;
        session.keys.retain(|key| key.hash != old_hash);
        session.keys.push(new_key);
        self.remember_revoked(vec![old_hash.to_owned()]);
        Ok((
            (),
            vec![audit(
                "session.key_refreshed",
                format!("session={session_id}"),
            )],
        ))
    }

    /// The session's last connection went away; it stays resumable but counts as offline.
    pub fn disconnected(&mut self, session_id: &str, now_unix_ms: u64) -> UserResult<()> {
        let session = self.session_mut(session_id)?;
        session.connected = false;
        Ok(((), self.update_shown_status(now_unix_ms)))
    }

    /// Ends a session (logout, or revoked by another session of the account).
    pub fn logout(
        &mut self,
        session_id: &str,
        ended_session_id: &str,
        now_unix_ms: u64,
    ) -> UserResult<()> {
        if !self.sessions.contains_key(ended_session_id) {
            return Err(UserError::Invalid {
                reason: format!("no session {ended_session_id} on this account"),
            });
        }
        let reason = if session_id == ended_session_id {
            "logged out"
        } else {
            "revoked by another session of the account"
        };
        let mut effects = self.end_session(ended_session_id, reason);
        effects.extend(self.update_shown_status(now_unix_ms));
        Ok(((), effects))
    }

    fn end_session(&mut self, session_id: &str, reason: &str) -> Vec<UserEffect> {
        let Some(session) = self.sessions.remove(session_id) else {
            return Vec::new();
        };
        self.remember_revoked(session.keys.iter().map(|key| key.hash.clone()).collect());
        let mut effects: Vec<UserEffect> = session
            .widget
            .iter()
            .map(|contact| UserEffect::Send {
                to: contact.clone(),
                event: PeerEvent::Unwatch {
                    session_id: session_id.to_owned(),
                },
            })
            .collect();
        effects.push(UserEffect::Push {
            node_id: session.node_id,
            session_id: session_id.to_owned(),
            push: SessionPush::SessionEnded {
                reason: reason.to_owned(),
            },
        });
        effects.push(audit(
            "session.ended",
            format!("session={session_id} reason={reason}"),
        ));
        effects
    }

    fn remember_revoked(&mut self, hashes: Vec<String>) {
        self.revoked_keys.extend(hashes);
        let excess = self
            .revoked_keys
            .len()
            .saturating_sub(REMEMBERED_REVOKED_KEYS);
        self.revoked_keys.drain(..excess);
    }

    fn session_mut(&mut self, session_id: &str) -> Result<&mut SessionRecord, UserError> {
        self.sessions
            .get_mut(session_id)
            .ok_or(UserError::KeyRevoked)
    }

    /// Sets a session's chosen status.
    pub fn set_status(
        &mut self,
        session_id: &str,
        status: Status,
        now_unix_ms: u64,
    ) -> UserResult<()> {
        self.session_mut(session_id)?.status = status;
        Ok(((), self.update_shown_status(now_unix_ms)))
    }

    /// The status others see: the most available connected session's.
    fn aggregate_status(&self) -> Status {
        self.sessions
            .values()
            .filter(|session| session.connected)
            .map(|session| session.status.visible())
            .max_by_key(|status| status.rank())
            .unwrap_or(Status::Offline)
    }

    /// Recomputes the shown status and pushes a change to every watcher.
    fn update_shown_status(&mut self, now_unix_ms: u64) -> Vec<UserEffect> {
        let status = self.aggregate_status();
        if status == self.shown_status {
            return Vec::new();
        }
        self.shown_status = status;
        self.last_seen_unix_ms = now_unix_ms;
        self.watchers
            .iter()
            .map(|(session_id, watcher)| UserEffect::Push {
                node_id: watcher.node_id.clone(),
                session_id: session_id.clone(),
                push: self.presence_push(),
            })
            .collect()
    }

    fn presence_push(&self) -> SessionPush {
        SessionPush::Presence {
            account: self.own_id(),
            status: self.shown_status,
            last_seen_unix_ms: self.last_seen_unix_ms,
        }
    }

    fn snapshot(&self, session_id: &str, reused: bool) -> Result<SessionSnapshot, UserError> {
        let session = self.sessions.get(session_id).ok_or(UserError::KeyRevoked)?;
        Ok(SessionSnapshot {
            account: self.own_id(),
            display_name: self.display_name(),
            session_id: session_id.to_owned(),
            reused,
            status: session.status,
            widget: self.widget_entries(&session.widget),
            unread: self.unread.clone(),
            requests_in: self.requests_in.clone(),
        })
    }

    fn widget_entries(&self, contacts: &[String]) -> Vec<WidgetEntry> {
        contacts
            .iter()
            .filter_map(|contact| {
                self.friends.get(contact).map(|friend| WidgetEntry {
                    account: contact.clone(),
                    display_name: friend.display_name.clone(),
                    hint_opt: self.unread.get(contact).cloned(),
                })
            })
            .collect()
    }

    /// The contact list.
    pub fn contacts(&self) -> ContactList {
        ContactList {
            friends: self.friends.clone(),
            groups: self.groups.clone(),
            requests_in: self.requests_in.clone(),
            requests_out: self.requests_out.clone(),
        }
    }

    fn not_friends<'a>(&self, accounts: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut offending: Vec<String> = accounts
            .into_iter()
            .filter(|account| !self.friends.contains_key(*account))
            .cloned()
            .collect();
        offending.sort();
        offending.dedup();
        offending
    }

    /// Checks that `account` is a friend.
    pub fn require_friend(&self, account: &str) -> Result<(), UserError> {
        if self.friends.contains_key(account) {
            Ok(())
        } else {
            Err(UserError::NotFriends {
                accounts: vec![account.to_owned()],
            })
        }
    }

    /// Selects a widget's contacts: watches the new ones, stops watching the dropped ones.
    pub fn set_widget(
        &mut self,
        session_id: &str,
        contacts: Vec<String>,
    ) -> UserResult<Vec<WidgetEntry>> {
        if contacts.len() > MAX_WIDGET_CONTACTS {
            return Err(UserError::TooMany {
                what: "widget contacts".to_owned(),
                limit: MAX_WIDGET_CONTACTS,
            });
        }
        let offending = self.not_friends(&contacts);
        if !offending.is_empty() {
            return Err(UserError::NotFriends {
                accounts: offending,
            });
        }
        let mut selected: Vec<String> = Vec::with_capacity(contacts.len());
        for contact in contacts {
            if !selected.contains(&contact) {
                selected.push(contact);
            }
        }
        let session = self.session_mut(session_id)?;
        let node_id = session.node_id.clone();
        let previous = std::mem::replace(&mut session.widget, selected.clone());
        let mut effects: Vec<UserEffect> = previous
            .iter()
            .filter(|contact| !selected.contains(contact))
            .map(|contact| UserEffect::Send {
                to: contact.clone(),
                event: PeerEvent::Unwatch {
                    session_id: session_id.to_owned(),
                },
            })
            .collect();
        effects.extend(
            selected
                .iter()
                .filter(|contact| !previous.contains(contact))
                .map(|contact| UserEffect::Send {
                    to: contact.clone(),
                    event: PeerEvent::Watch {
                        session_id: session_id.to_owned(),
                        node_id: node_id.clone(),
                    },
                }),
        );
        effects.push(audit(
            "widget.selected",
            format!("session={session_id} contacts={}", selected.join(",")),
        ));
        Ok((self.widget_entries(&selected), effects))
    }

    /// Sends a friend request to `to`.
    pub fn request_friend(&mut self, to: &str, note: String, now_unix_ms: u64) -> UserResult<()> {
        if to == self.own_id() {
            return Err(UserError::Invalid {
                reason: "cannot befriend oneself".to_owned(),
            });
        }
        if self.friends.contains_key(to) {
            return Err(UserError::Invalid {
                reason: format!("{to} is already a friend"),
            });
        }
        if self.friends.len() >= MAX_FRIENDS {
            return Err(UserError::TooMany {
                what: "friends".to_owned(),
                limit: MAX_FRIENDS,
            });
        }
        if !self.requests_out.contains_key(to) && self.requests_out.len() >= MAX_PENDING_REQUESTS {
            return Err(UserError::TooMany {
                what: "unanswered friend requests".to_owned(),
                limit: MAX_PENDING_REQUESTS,
            });
        }
        self.requests_out.insert(to.to_owned(), now_unix_ms);
        let effects = vec![
            UserEffect::Send {
                to: to.to_owned(),
                event: PeerEvent::FriendRequest {
                    display_name: self.display_name(),
                    note,
                },
            },
            audit("friend.requested", format!("to={to}")),
        ];
        Ok(((), effects))
    }

    /// Answers a received friend request.
    pub fn answer_request(&mut self, from: &str, accept: bool, now_unix_ms: u64) -> UserResult<()> {
        let Some(request) = self.requests_in.remove(from) else {
            return Err(UserError::Invalid {
                reason: format!("no friend request from {from}"),
            });
        };
        if !accept {
            let effects = vec![
                UserEffect::Send {
                    to: from.to_owned(),
                    event: PeerEvent::FriendDeclined,
                },
                audit("friend.declined", format!("from={from}")),
            ];
            return Ok(((), effects));
        }
        self.friends.insert(
            from.to_owned(),
            Friend {
                display_name: request.display_name,
                since_unix_ms: now_unix_ms,
            },
        );
        self.requests_out.remove(from);
        let effects = vec![
            UserEffect::Send {
                to: from.to_owned(),
                event: PeerEvent::FriendAccepted {
                    display_name: self.display_name(),
                },
            },
            audit("friend.accepted", format!("from={from}")),
        ];
        Ok(((), effects))
    }

    /// Ends a friendship.
    pub fn remove_friend(&mut self, account: &str) -> UserResult<()> {
        self.require_friend(account)?;
        let mut effects = self.forget_friend(account);
        effects.push(UserEffect::Send {
            to: account.to_owned(),
            event: PeerEvent::FriendRemoved,
        });
        effects.push(audit("friend.removed", format!("account={account}")));
        Ok(((), effects))
    }

    /// Drops every trace of a friend: groups, widgets (unwatching), watchers, hints.
    fn forget_friend(&mut self, account: &str) -> Vec<UserEffect> {
        self.friends.remove(account);
        for members in self.groups.values_mut() {
            members.remove(account);
        }
        self.unread.remove(account);
        self.watchers
            .retain(|_, watcher| watcher.account != account);
        let mut effects = Vec::new();
        for (session_id, session) in &mut self.sessions {
            if session.widget.iter().any(|contact| contact == account) {
                session.widget.retain(|contact| contact != account);
                effects.push(UserEffect::Send {
                    to: account.to_owned(),
                    event: PeerEvent::Unwatch {
                        session_id: session_id.clone(),
                    },
                });
            }
        }
        effects
    }

    /// Creates or replaces a friend group.
    pub fn set_group(&mut self, name: String, members: BTreeSet<String>) -> UserResult<()> {
        let offending = self.not_friends(&members);
        if !offending.is_empty() {
            return Err(UserError::NotFriends {
                accounts: offending,
            });
        }
        if !self.groups.contains_key(&name) && self.groups.len() >= MAX_GROUPS {
            return Err(UserError::TooMany {
                what: "groups".to_owned(),
                limit: MAX_GROUPS,
            });
        }
        let detail = format!("group={name} n_members={}", members.len());
        self.groups.insert(name, members);
        Ok(((), vec![audit("group.set", detail)]))
    }

    /// Deletes a friend group (its members stay friends).
    pub fn delete_group(&mut self, name: &str) -> UserResult<()> {
        if self.groups.remove(name).is_none() {
            return Err(UserError::Invalid {
                reason: format!("no group {name:?}"),
            });
        }
        Ok(((), vec![audit("group.deleted", format!("group={name}"))]))
    }

    /// Shares friends (single ones and whole groups) with the friend `to`. Every shared
    /// friend, every group and `to` must be valid, else nothing is sent and the error names
    /// the offending ids.
    pub fn share_friends(
        &self,
        to: &str,
        friends: &[String],
        groups: &[String],
        max_suggestions: usize,
    ) -> UserResult<Vec<String>> {
        let mut offending = self.not_friends(friends.iter().chain(std::iter::once(&to.to_owned())));
        let mut suggestions: BTreeSet<String> = friends.iter().cloned().collect();
        for group in groups {
            match self.groups.get(group) {
                Some(members) => suggestions.extend(members.iter().cloned()),
                None => offending.push(format!("group:{group}")),
            }
        }
        if !offending.is_empty() {
            return Err(UserError::NotFriends {
                accounts: offending,
            });
        }
        suggestions.remove(to);
        if suggestions.is_empty() {
            return Err(UserError::Invalid {
                reason: "nothing to share".to_owned(),
            });
        }
        if suggestions.len() > max_suggestions {
            return Err(UserError::TooMany {
                what: "shared friends".to_owned(),
                limit: max_suggestions,
            });
        }
        let accounts: Vec<String> = suggestions.into_iter().collect();
        let effects = vec![
            UserEffect::Send {
                to: to.to_owned(),
                event: PeerEvent::FriendsShared {
                    accounts: accounts.clone(),
                },
            },
            audit(
                "friends.shared",
                format!("to={to} n_accounts={}", accounts.len()),
            ),
        ];
        Ok((accounts, effects))
    }

    /// One combined add-friend request fanned out to every picked account; accounts that
    /// are already friends, oneself, or duplicates are skipped and returned as such.
    pub fn request_friends(
        &mut self,
        targets: &[String],
        note: &str,
        max_targets: usize,
        now_unix_ms: u64,
    ) -> UserResult<(Vec<String>, Vec<String>)> {
        if targets.len() > max_targets {
            return Err(UserError::TooMany {
                what: "friend requests in one go".to_owned(),
                limit: max_targets,
            });
        }
        let mut sent = Vec::new();
        let mut skipped = Vec::new();
        let mut effects = Vec::new();
        for target in targets {
            if sent.contains(target) || skipped.contains(target) {
                continue;
            }
            match self.request_friend(target, note.to_owned(), now_unix_ms) {
                Ok(((), request_effects)) => {
                    sent.push(target.clone());
                    effects.extend(request_effects);
                }
                Err(_) => skipped.push(target.clone()),
            }
        }
        Ok(((sent, skipped), effects))
    }

    /// A message to the friend `to`.
    pub fn send_message(
        &self,
        to: &str,
        message_id: String,
        text: String,
        sent_at_unix_ms: u64,
    ) -> UserResult<()> {
        self.to_friend(
            to,
            PeerEvent::MessageArrived {
                message_id,
                text,
                sent_at_unix_ms,
            },
        )
    }

    /// Sends `event` to `to`, who must be a friend.
    fn to_friend(&self, to: &str, event: PeerEvent) -> UserResult<()> {
        self.require_friend(to)?;
        let effects = vec![UserEffect::Send {
            to: to.to_owned(),
            event,
        }];
        Ok(((), effects))
    }

    /// Marks messages from `with` read: clears the hint on every session and tells `with`.
    pub fn mark_read(&mut self, with: &str, up_to_message_id: String) -> UserResult<()> {
        self.require_friend(with)?;
        let mut effects = Vec::new();
        if let Some(mut hint) = self.unread.remove(with) {
            hint.n_unread = 0;
            effects.extend(self.pushes_about(
                with,
                |_| true,
                &SessionPush::Hint {
                    from: with.to_owned(),
                    hint,
                },
            ));
        }
        effects.push(UserEffect::Send {
            to: with.to_owned(),
            event: PeerEvent::ReadReceipt { up_to_message_id },
        });
        Ok(((), effects))
    }

    /// Call signalling to the friend `to`.
    pub fn signal(
        &self,
        to: &str,
        call_id: String,
        kind: String,
        signal: Vec<u8>,
    ) -> UserResult<()> {
        self.to_friend(
            to,
            PeerEvent::CallSignal {
                call_id,
                kind,
                signal,
            },
        )
    }

    /// Keeps a reward a campaign granted this account and pushes it to the connected client
    /// sessions. A redelivered grant, or a second grant of the same campaign, changes nothing
    /// and pushes nothing. Returns whether the reward was new.
    pub fn grant_reward(&mut self, reward: Reward) -> UserResult<bool> {
        self.account()?;
        let detail = format!("campaign={} rank={}", reward.campaign_id, reward.rank);
        let push = SessionPush::CampaignReward(reward.clone());
        if !keep_reward(&mut self.rewards, reward) {
            return Ok((false, Vec::new()));
        }
        let mut effects = self.pushes_to_connected_clients(&push);
        effects.push(audit("campaign.reward", detail));
        Ok((true, effects))
    }

    /// Reserves `bytes` of today's traffic-sharing caps for `role` under `key` (an offer's
    /// share id or a request's id). Reserving the same again changes nothing. Returns whether
    /// the allowance changed.
    pub fn reserve_share(
        &mut self,
        key: &str,
        role: Party,
        bytes: u64,
        caps: DailyShareCaps,
        now_unix_ms: u64,
    ) -> UserResult<bool> {
        self.account()?;
        match self
            .share_allowance
            .reserve(key, role, bytes, caps, now_unix_ms)
        {
            Ok(changed) => Ok((changed, Vec::new())),
            Err(error @ AllowanceError::KeyReused { .. }) => Err(UserError::Invalid {
                reason: error.to_string(),
            }),
            Err(error) => Err(UserError::DailyCap {
                reason: error.to_string(),
            }),
        }
    }

    /// Gives back today's reservation `key` (a request that matched no offer). Returns
    /// whether it was there.
    pub fn release_share(&mut self, key: &str, now_unix_ms: u64) -> UserResult<bool> {
        self.account()?;
        Ok((self.share_allowance.release(key, now_unix_ms), Vec::new()))
    }

    /// Tells the account's connected clients what happened to share `share_id`; changes
    /// nothing (the share keeps its own record, which either party can read).
    pub fn share_notice(&self, share_id: &str, event: &ShareEvent) -> UserResult<()> {
        self.account()?;
        let push = SessionPush::Share {
            share_id: share_id.to_owned(),
            event: event.clone(),
        };
        Ok(((), self.pushes_to_connected_clients(&push)))
    }

    /// A watcher's session is gone (its node no longer holds it).
    pub fn drop_watcher(&mut self, session_id: &str) -> UserResult<()> {
        self.watchers.remove(session_id);
        Ok(((), Vec::new()))
    }

    /// Pushes to own sessions: widget sessions only when `about` is on their widget,
    /// client sessions when `to_clients` says so.
    fn pushes_about(
        &self,
        about: &str,
        to_clients: impl Fn(&SessionRecord) -> bool,
        push: &SessionPush,
    ) -> Vec<UserEffect> {
        self.sessions
            .iter()
            .filter(|(_, session)| match session.mode {
                SessionMode::Client => to_clients(session),
                SessionMode::Widget => session.widget.iter().any(|contact| contact == about),
            })
            .map(|(session_id, session)| UserEffect::Push {
                node_id: session.node_id.clone(),
                session_id: session_id.clone(),
                push: push.clone(),
            })
            .collect()
    }

    fn pushes_to_clients(&self, push: &SessionPush) -> Vec<UserEffect> {
        self.sessions
            .iter()
            .filter(|(_, session)| session.mode == SessionMode::Client)
            .map(|(session_id, session)| UserEffect::Push {
                node_id: session.node_id.clone(),
                session_id: session_id.clone(),
                push: push.clone(),
            })
            .collect()
    }

    /// Keeps a new holding, forgetting the oldest beyond [`CAMPAIGN_HOLDINGS_KEPT`].
    fn keep_holding(&mut self, holding: CampaignHolding) {
        self.campaign_holdings.push(holding);
        if self.campaign_holdings.len() > CAMPAIGN_HOLDINGS_KEPT {
            let n_over = self.campaign_holdings.len() - CAMPAIGN_HOLDINGS_KEPT;
            self.campaign_holdings.drain(..n_over);
        }
    }

    /// Records that the account enrolled in `campaign_id` through the venue's gateway
    /// `gateway_id` (the node checked that the venue may run it). The first enrolment is
    /// kept: enrolling again, through the same or another gateway, changes nothing and
    /// answers with the holding as it is. Returns the holding and whether it changed.
    pub fn enrol_campaign(
        &mut self,
        campaign_id: &str,
        gateway_id: &str,
        now_unix_ms: u64,
    ) -> UserResult<(CampaignHolding, bool)> {
        self.account()?;
        if campaign_id.is_empty() || gateway_id.is_empty() {
            return Err(UserError::Invalid {
                reason: "a campaign and a gateway are needed to enrol".to_owned(),
            });
        }
        let holding = match self
            .campaign_holdings
            .iter_mut()
            .find(|holding| holding.campaign_id == campaign_id)
        {
            Some(holding) if holding.enrolled_via_opt.is_some() => {
                return Ok(((holding.clone(), false), Vec::new()));
            }
            Some(holding) => {
                // Units came first (an enrolment through another node raced them).
                holding.enrolled_via_opt = Some(gateway_id.to_owned());
                holding.enrolled_at_unix_ms_opt = Some(now_unix_ms);
                holding.clone()
            }
            None => {
                let holding = CampaignHolding {
                    campaign_id: campaign_id.to_owned(),
                    enrolled_via_opt: Some(gateway_id.to_owned()),
                    enrolled_at_unix_ms_opt: Some(now_unix_ms),
                    issued_opt: None,
                };
                self.keep_holding(holding.clone());
                holding
            }
        };
        let effects = vec![audit(
            "campaign.enrolled",
            format!("campaign={campaign_id} gateway={gateway_id}"),
        )];
        Ok(((holding, true), effects))
    }

    /// Records units a campaign's quota ledger posted to the account (sent at least once,
    /// one claim per campaign per account upstream) and pushes them to the connected client
    /// sessions. The same transfer again changes nothing. Another transfer for a campaign
    /// that already has units is an anomaly: the first is kept and an audit note
    /// `campaign.units_conflict` names both. Returns whether the holding changed.
    ///
    /// An account that does not exist is refused with [`UserError::NoSuchAccount`] and keeps
    /// no state: the ledger, whose journal holds the posting, stays the record of the units.
    pub fn units_issued(
        &mut self,
        campaign_id: &str,
        gateway_id: &str,
        transfer_id: u64,
        units: u64,
        now_unix_ms: u64,
    ) -> UserResult<bool> {
        self.account()?;
        let issued = IssuedUnits {
            gateway_id: gateway_id.to_owned(),
            transfer_id,
            units,
            used_units: 0,
            issued_at_unix_ms: now_unix_ms,
        };
        match self
            .campaign_holdings
            .iter_mut()
            .find(|holding| holding.campaign_id == campaign_id)
        {
            Some(CampaignHolding {
                issued_opt: Some(kept),
                ..
            }) => {
                if kept.gateway_id == gateway_id && kept.transfer_id == transfer_id {
                    return Ok((false, Vec::new()));
                }
                let detail = format!(
                    "campaign={campaign_id} kept_gateway={} kept_transfer={} kept_units={} \
                     other_gateway={gateway_id} other_transfer={transfer_id} other_units={units}",
                    kept.gateway_id, kept.transfer_id, kept.units
                );
                return Ok((false, vec![audit("campaign.units_conflict", detail)]));
            }
            Some(holding) => holding.issued_opt = Some(issued),
            None => self.keep_holding(CampaignHolding {
                campaign_id: campaign_id.to_owned(),
                enrolled_via_opt: None,
                enrolled_at_unix_ms_opt: None,
                issued_opt: Some(issued),
            }),
        }
        let mut effects = self.pushes_to_connected_clients(&SessionPush::UnitsIssued {
            campaign_id: campaign_id.to_owned(),
            gateway_id: gateway_id.to_owned(),
            units,
        });
        effects.push(audit(
            "campaign.units_issued",
            format!(
                "campaign={campaign_id} gateway={gateway_id} transfer={transfer_id} units={units}"
            ),
        ));
        Ok((true, effects))
    }

    /// Records the gateway's cumulative usage of the units issued for `campaign_id`, as the
    /// ledger forwards it: the used units only grow and never exceed the units issued, so a
    /// redelivered or late report changes nothing. A report for a campaign without issued
    /// units is ignored (the ledger's next cumulative report carries it again). Returns
    /// whether the holding changed.
    pub fn units_used(&mut self, campaign_id: &str, used_total: u64) -> UserResult<bool> {
        self.account()?;
        let issued_opt = self
            .campaign_holdings
            .iter_mut()
            .find(|holding| holding.campaign_id == campaign_id)
            .and_then(|holding| holding.issued_opt.as_mut());
        let Some(issued) = issued_opt else {
            return Ok((false, Vec::new()));
        };
        let used_units = issued.used_units.max(used_total.min(issued.units));
        if used_units == issued.used_units {
            return Ok((false, Vec::new()));
        }
        issued.used_units = used_units;
        Ok((true, Vec::new()))
    }

    /// What the account holds in campaigns and the rewards it won, both oldest first.
    pub fn campaigns(&self) -> (Vec<CampaignHolding>, Vec<Reward>) {
        (self.campaign_holdings.clone(), self.rewards.clone())
    }

    /// Pushes to the client sessions that have a connection attached (campaign news: a
    /// disconnected session reads it with the `Campaigns` op when it is back).
    fn pushes_to_connected_clients(&self, push: &SessionPush) -> Vec<UserEffect> {
        self.sessions
            .iter()
            .filter(|(_, session)| session.mode == SessionMode::Client && session.connected)
            .map(|(session_id, session)| UserEffect::Push {
                node_id: session.node_id.clone(),
                session_id: session_id.clone(),
                push: push.clone(),
            })
            .collect()
    }

    /// Applies an event from another account. Events from non-friends that need a
    /// friendship are dropped (an empty effect list), never an error: the sender cannot
    /// be answered.
    pub fn on_peer_event(
        &mut self,
        from: &str,
        event: PeerEvent,
        now_unix_ms: u64,
    ) -> Vec<UserEffect> {
        if self.account_opt.is_none() || from == self.own_id() {
            return Vec::new();
        }
        let is_friend = self.friends.contains_key(from);
        match event {
            PeerEvent::FriendRequest { display_name, note } => {
                if is_friend {
                    // They lost us (e.g. removed and re-added): accept silently again.
                    return vec![UserEffect::Send {
                        to: from.to_owned(),
                        event: PeerEvent::FriendAccepted {
                            display_name: self.display_name(),
                        },
                    }];
                }
                if self.requests_out.contains_key(from) {
                    // Both asked: that is agreement.
                    self.requests_out.remove(from);
                    self.requests_in.remove(from);
                    self.friends.insert(
                        from.to_owned(),
                        Friend {
                            display_name: display_name.clone(),
                            since_unix_ms: now_unix_ms,
                        },
                    );
                    let mut effects = vec![UserEffect::Send {
                        to: from.to_owned(),
                        event: PeerEvent::FriendAccepted {
                            display_name: self.display_name(),
                        },
                    }];
                    effects.extend(self.pushes_to_clients(&SessionPush::FriendAccepted {
                        by: from.to_owned(),
                        display_name,
                    }));
                    return effects;
                }
                if !self.requests_in.contains_key(from)
                    && self.requests_in.len() >= MAX_PENDING_REQUESTS
                {
                    return Vec::new();
                }
                let push = SessionPush::FriendRequest {
                    from: from.to_owned(),
                    display_name: display_name.clone(),
                    note: note.clone(),
                    at_unix_ms: now_unix_ms,
                };
                self.requests_in.insert(
                    from.to_owned(),
                    IncomingRequest {
                        display_name,
                        note,
                        at_unix_ms: now_unix_ms,
                    },
                );
                self.pushes_to_clients(&push)
            }
            PeerEvent::FriendAccepted { display_name } => {
                if self.requests_out.remove(from).is_none() || is_friend {
                    return Vec::new();
                }
                self.requests_in.remove(from);
                self.friends.insert(
                    from.to_owned(),
                    Friend {
                        display_name: display_name.clone(),
                        since_unix_ms: now_unix_ms,
                    },
                );
                let mut effects = self.pushes_to_clients(&SessionPush::FriendAccepted {
                    by: from.to_owned(),
                    display_name,
                });
                effects.push(audit("friend.became", format!("account={from}")));
                effects
            }
            PeerEvent::FriendDeclined => {
                if self.requests_out.remove(from).is_none() {
                    return Vec::new();
                }
                self.pushes_to_clients(&SessionPush::FriendDeclined {
                    by: from.to_owned(),
                })
            }
            PeerEvent::FriendRemoved => {
                if !is_friend {
                    return Vec::new();
                }
                let mut effects = self.forget_friend(from);
                effects.extend(self.pushes_to_clients(&SessionPush::FriendRemoved {
                    by: from.to_owned(),
                }));
                effects.push(audit("friend.removed_by", format!("account={from}")));
                effects
            }
            PeerEvent::Watch {
                session_id,
                node_id,
            } => {
                if !is_friend {
                    return Vec::new();
                }
                self.watchers.insert(
                    session_id.clone(),
                    Watcher {
                        account: from.to_owned(),
                        node_id: node_id.clone(),
                    },
                );
                vec![UserEffect::Push {
                    node_id,
                    session_id,
                    push: self.presence_push(),
                }]
            }
            PeerEvent::Unwatch { session_id } => {
                self.watchers.remove(&session_id);
                Vec::new()
            }
            PeerEvent::MessageArrived {
                message_id,
                text,
                sent_at_unix_ms,
            } => {
                if !is_friend {
                    return Vec::new();
                }
                let hint = {
                    let entry = self
                        .unread
                        .entry(from.to_owned())
                        .or_insert_with(|| UnreadHint {
                            n_unread: 0,
                            preview: String::new(),
                            last_message_id: String::new(),
                            last_at_unix_ms: 0,
                        });
                    entry.n_unread = entry.n_unread.saturating_add(1);
                    entry.preview = preview_of(&text);
                    entry.last_message_id.clone_from(&message_id);
                    entry.last_at_unix_ms = sent_at_unix_ms;
                    entry.clone()
                };
                let mut effects = self.pushes_about(
                    from,
                    |_| false,
                    &SessionPush::Hint {
                        from: from.to_owned(),
                        hint,
                    },
                );
                effects.extend(self.pushes_to_clients(&SessionPush::Message {
                    message_id,
                    from: from.to_owned(),
                    text,
                    sent_at_unix_ms,
                }));
                effects
            }
            PeerEvent::ReadReceipt { up_to_message_id } => {
                if !is_friend {
                    return Vec::new();
                }
                self.pushes_to_clients(&SessionPush::Receipt {
                    by: from.to_owned(),
                    up_to_message_id,
                })
            }
            PeerEvent::FriendsShared { accounts } => {
                if !is_friend {
                    return Vec::new();
                }
                self.pushes_to_clients(&SessionPush::FriendsShared {
                    from: from.to_owned(),
                    accounts,
                })
            }
            PeerEvent::CallSignal {
                call_id,
                kind,
                signal,
            } => {
                if !is_friend {
                    return Vec::new();
                }
                self.pushes_to_clients(&SessionPush::CallSignal {
                    from: from.to_owned(),
                    call_id,
                    kind,
                    signal,
                })
            }
        }
    }
}

/// Moving a session to another node: its widget's contacts must push to the new node.
fn rehome_watches(session_id: &str, session: &SessionRecord, node_id: &str) -> Vec<UserEffect> {
    session
        .widget
        .iter()
        .map(|contact| UserEffect::Send {
            to: contact.clone(),
            event: PeerEvent::Watch {
                session_id: session_id.to_owned(),
                node_id: node_id.to_owned(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;
