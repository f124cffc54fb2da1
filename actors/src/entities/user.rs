//! The user entity's wire messages and its behaviour: each request becomes one call on
//! [`crate::model::user::UserState`], and the model's effects become pushes to sessions,
//! messages to other accounts' entities and audit notes.
//!
//! Requests from a client carry [`SessionAuth`]; the entity checks the key on every one, so
//! a key revoked or expired anywhere in the cluster stops working at once.

use crate::host::behavior::{
    AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage, Outgoing, Push,
};
use crate::model::entity_kind::EntityKind;
use crate::model::reward::Reward;
use crate::model::share::{Party, ShareEvent};
use crate::model::share_allowance::DailyShareCaps;
use crate::model::user::{
    CampaignHolding, ContactList, KeyRecord, LoginLimit, PartnerLink, PeerEvent, Profile,
    SessionOpening, SessionSnapshot, Status, UserEffect, UserError, UserState, WidgetEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Proof that a request comes from a session: its id and the SHA-256 of the key's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAuth {
    /// The session.
    pub session_id: String,
    /// Hex SHA-256 of the presented key's secret.
    pub key_hash: String,
}

/// A request to a user entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRequest {
    /// Registers the account (the entity id is the account id).
    Register {
        /// Shown to friends.
        display_name: String,
        /// argon2id PHC string, hashed by the edge.
        password_hash: String,
    },
    /// Asks for the password hash to verify a login against.
    Credential {
        /// The per-account failure limit.
        limit: LoginLimit,
    },
    /// Records a failed login.
    LoginFailed {
        /// The per-account failure limit.
        limit: LoginLimit,
    },
    /// Opens (or joins) the device's session after a verified login.
    OpenSession(SessionOpening),
    /// Opens a session for a partner-site user the site just verified, creating the linked
    /// account on first use (the entity id is derived from the link).
    OpenPartnerSession {
        /// The verified identity.
        link: PartnerLink,
        /// The site's display name for the user.
        display_name: String,
        /// The session to open.
        opening: SessionOpening,
    },
    /// The account's public profile (whether it exists, its name, its partner link).
    Profile,
    /// The edge node lost the session's last connection.
    SessionDetached {
        /// The session.
        session_id: String,
        /// The node that lost it (ignored if the session has moved since).
        node_id: String,
    },
    /// The node `node_id` no longer holds this watcher session: stop pushing to it.
    DropWatcher {
        /// The watching session.
        session_id: String,
    },
    /// A client request, checked against the session's keys.
    Authed {
        /// The session and its key.
        auth: SessionAuth,
        /// What it asks.
        op: SessionOp,
    },
    /// An event from another user entity (the envelope names the sender).
    Peer(PeerEvent),
    /// A campaign closed and this account won `reward` (sent at least once by the campaign's
    /// entity): kept once per campaign and pushed to the account's connected client sessions.
    /// Answered `Done`, or `Refused(NoSuchAccount)` for an account that does not exist.
    GrantReward {
        /// What was won.
        reward: Reward,
    },
    /// A campaign's quota ledger posted units to this account (sent at least once by the
    /// ledger's entity): kept once per campaign and pushed to the connected client sessions.
    /// Answered `Done` (also for a redelivery, and for a conflicting transfer, which keeps the
    /// first and leaves an audit note), or `Refused(NoSuchAccount)` without any change for an
    /// account that does not exist.
    UnitsIssued {
        /// The campaign.
        campaign_id: String,
        /// The gateway whose quota the units came from.
        gateway_id: String,
        /// The ledger's transfer that posted them.
        transfer_id: u64,
        /// How many.
        units: u64,
    },
    /// The gateway's cumulative usage of the units issued for a campaign, forwarded by the
    /// ledger: the used units only grow, up to the units issued. Answered `Done`, or
    /// `Refused(NoSuchAccount)`.
    UnitsUsed {
        /// The campaign.
        campaign_id: String,
        /// Units used so far, in total.
        used_total: u64,
    },
    /// Something happened to a traffic share this account is a party to (sent at least once by
    /// the share's entity): pushed to the connected client sessions, nothing kept. Answered
    /// `Done`, or `Refused(NoSuchAccount)`.
    ShareNotice {
        /// The share.
        share_id: String,
        /// What happened.
        event: ShareEvent,
    },
}

/// What an authenticated session asks of its own account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Re-attach the session on `node_id`.
    Resume {
        /// The node holding the new connection.
        node_id: String,
    },
    /// Replace the presented key.
    RefreshKey {
        /// The new key.
        new_key: KeyRecord,
    },
    /// End this session.
    Logout,
    /// End another session of the account.
    RevokeSession {
        /// The session to end.
        session_id: String,
    },
    /// The contact list.
    Contacts,
    /// Set this session's status.
    SetStatus {
        /// The new status.
        status: Status,
    },
    /// Select the widget's contacts.
    SetWidget {
        /// The contacts, in display order.
        contacts: Vec<String>,
    },
    /// Ask `to` to be a friend.
    RequestFriend {
        /// The addressee.
        to: String,
        /// A note.
        note: String,
    },
    /// Answer a friend request.
    AnswerRequest {
        /// The requester.
        from: String,
        /// Accept or decline.
        accept: bool,
    },
    /// End a friendship.
    RemoveFriend {
        /// The friend.
        account: String,
    },
    /// Create or replace a group.
    SetGroup {
        /// The group's name.
        name: String,
        /// Its members (friends).
        members: BTreeSet<String>,
    },
    /// Delete a group.
    DeleteGroup {
        /// The group's name.
        name: String,
    },
    /// Share friends and groups with the friend `to`.
    ShareFriends {
        /// The target friend.
        to: String,
        /// Single friends.
        friends: Vec<String>,
        /// Whole groups.
        groups: Vec<String>,
        /// Most suggestions allowed.
        max_suggestions: usize,
    },
    /// One combined add-friend request fanned out to several accounts.
    RequestFriends {
        /// The picked accounts.
        targets: Vec<String>,
        /// A note.
        note: String,
        /// Most targets allowed.
        max_targets: usize,
    },
    /// Send a message to a friend (stored by the edge once accepted).
    SendMessage {
        /// The friend.
        to: String,
        /// The message id.
        message_id: String,
        /// The text.
        text: String,
        /// When it was sent.
        sent_at_unix_ms: u64,
    },
    /// Mark messages from a friend read.
    MarkRead {
        /// The friend.
        with: String,
        /// The last message read.
        up_to_message_id: String,
    },
    /// Relay call signalling to a friend.
    Signal {
        /// The friend.
        to: String,
        /// The call.
        call_id: String,
        /// text, voice or video.
        kind: String,
        /// The opaque signal.
        signal: Vec<u8>,
    },
    /// Check that `with` is a friend (before reading the conversation).
    CheckFriend {
        /// The other account.
        with: String,
    },
    /// The account's own profile.
    Profile,
    /// Enrol in a campaign through a venue's gateway (the node checked that the venue may
    /// run it). The first enrolment is kept; enrolling again answers with it.
    EnrolCampaign {
        /// The campaign.
        campaign_id: String,
        /// The gateway of the venue the client is in.
        gateway_id: String,
    },
    /// What the account holds in campaigns and the rewards it won.
    Campaigns,
    /// Reserve `bytes` of today's traffic-sharing caps for `role` under `key` (an offer's share
    /// id, or a request's id) before the offer is made or the request matched. Answered `Done`
    /// (also for a repeat), or refused with `DailyCap`.
    ReserveShare {
        /// The reservation's key.
        key: String,
        /// Offering or asking.
        role: Party,
        /// Bytes offered or asked for.
        bytes: u64,
        /// The caps in force.
        caps: DailyShareCaps,
    },
    /// Give back today's reservation `key` (a request that matched no offer). Answered `Done`.
    ReleaseShare {
        /// The reservation's key.
        key: String,
    },
}

/// A user entity's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserReply {
    /// Done; nothing to return.
    Done,
    /// The password hash to verify against.
    Credential {
        /// argon2id PHC string.
        password_hash: String,
    },
    /// The session, opened or resumed.
    Session(SessionSnapshot),
    /// A partner user's session, and whether its account was created by this login.
    PartnerSession {
        /// The session.
        snapshot: SessionSnapshot,
        /// Whether the linked account was created now.
        created: bool,
    },
    /// An account's public profile.
    Profile(Profile),
    /// The contact list.
    Contacts(ContactList),
    /// The widget's contacts.
    Widget(Vec<WidgetEntry>),
    /// The suggestions sent.
    Shared {
        /// The accounts suggested.
        accounts: Vec<String>,
    },
    /// The friend requests sent by a combined request.
    RequestsSent {
        /// Requests sent.
        sent: Vec<String>,
        /// Accounts skipped (already friends, oneself, unknown state).
        skipped: Vec<String>,
    },
    /// The message was accepted; a resend gets the first acceptance again.
    MessageAccepted {
        /// When it was first accepted (the time it is stored with).
        sent_at_unix_ms: u64,
    },
    /// The account's holding in the campaign it enrolled in (the first enrolment).
    Enrolled(CampaignHolding),
    /// What the account holds in campaigns and the rewards it won, both oldest first.
    Campaigns {
        /// One per campaign, the last [`crate::model::user::CAMPAIGN_HOLDINGS_KEPT`].
        holdings: Vec<CampaignHolding>,
        /// The last [`crate::model::reward::REWARDS_KEPT`].
        rewards: Vec<Reward>,
    },
    /// Refused.
    Refused(UserError),
}

use super::decode_request;
pub use super::{decode, encode};

/// The user behaviour.
#[derive(Debug)]
pub struct UserEntity;

impl EntityBehavior for UserEntity {
    const KIND: EntityKind = EntityKind::User;
    type State = UserState;

    fn handle(
        state: &mut UserState,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: UserRequest = decode_request(message)?;
        let now = message.now_unix_ms;
        let account = message.entity_id;
        let mutating = !matches!(
            request,
            UserRequest::Credential { .. }
                | UserRequest::Profile
                | UserRequest::ShareNotice { .. }
                | UserRequest::Authed {
                    op: SessionOp::Contacts
                        | SessionOp::CheckFriend { .. }
                        | SessionOp::Profile
                        | SessionOp::Campaigns,
                    ..
                }
        );
        // Set by requests that are redeliveries by design and found nothing to change.
        let mut unchanged = false;
        let (reply_opt, effects) = match request {
            UserRequest::Register {
                display_name,
                password_hash,
            } => answer(
                state.register(account.to_owned(), display_name, password_hash, now),
                |()| UserReply::Done,
            ),
            UserRequest::Credential { limit } => (
                Some(match state.credential(limit, now) {
                    Ok(password_hash) => UserReply::Credential { password_hash },
                    Err(error) => UserReply::Refused(error),
                }),
                Vec::new(),
            ),
            UserRequest::LoginFailed { limit } => {
                answer(state.login_failed(limit, now), |()| UserReply::Done)
            }
            UserRequest::OpenSession(opening) => {
                answer(state.open_session(opening, now), UserReply::Session)
            }
            UserRequest::OpenPartnerSession {
                link,
                display_name,
                opening,
            } => answer(
                state.open_partner_session(account.to_owned(), link, display_name, opening, now),
                |(snapshot, created)| UserReply::PartnerSession { snapshot, created },
            ),
            UserRequest::Profile => (Some(profile_reply(state)), Vec::new()),
            UserRequest::SessionDetached {
                session_id,
                node_id,
            } => {
                let still_there = state
                    .sessions
                    .get(&session_id)
                    .is_some_and(|session| session.node_id == node_id);
                if still_there {
                    answer(state.disconnected(&session_id, now), |()| UserReply::Done)
                } else {
                    (Some(UserReply::Done), Vec::new())
                }
            }
            UserRequest::DropWatcher { session_id } => {
                answer(state.drop_watcher(&session_id), |()| UserReply::Done)
            }
            UserRequest::Authed { auth, op } => {
                match state.check_key(&auth.session_id, &auth.key_hash, now) {
                    Ok(()) => apply_session_op(state, &auth, op, now, &mut unchanged),
                    Err(error) => (Some(UserReply::Refused(error)), Vec::new()),
                }
            }
            UserRequest::Peer(event) => {
                let from_opt = message
                    .sender_entity_opt
                    .filter(|sender| sender.kind == EntityKind::User.as_str());
                let Some(from) = from_opt else {
                    return Err(HandleError::Malformed {
                        reason: "peer event not sent by a user entity".to_owned(),
                    });
                };
                (None, state.on_peer_event(&from.id, event, now))
            }
            UserRequest::GrantReward { reward } => answer(state.grant_reward(reward), |changed| {
                unchanged = !changed;
                UserReply::Done
            }),
            UserRequest::UnitsIssued {
                campaign_id,
                gateway_id,
                transfer_id,
                units,
            } => answer(
                state.units_issued(&campaign_id, &gateway_id, transfer_id, units, now),
                |changed| {
                    unchanged = !changed;
                    UserReply::Done
                },
            ),
            UserRequest::UnitsUsed {
                campaign_id,
                used_total,
            } => answer(state.units_used(&campaign_id, used_total), |changed| {
                unchanged = !changed;
                UserReply::Done
            }),
            UserRequest::ShareNotice { share_id, event } => {
                answer(state.share_notice(&share_id, &event), |()| UserReply::Done)
            }
        };
        let mut result = translate(effects)?;
        // The model refuses before it changes anything, so a refusal leaves the state as it was.
        result.state_changed =
            mutating && !unchanged && !matches!(reply_opt, Some(UserReply::Refused(_)));
        result.reply_opt = match reply_opt {
            Some(reply) => Some(encode(&reply)?),
            None => None,
        };
        Ok(result)
    }
}

fn answer<T>(
    result: Result<(T, Vec<UserEffect>), UserError>,
    into_reply: impl FnOnce(T) -> UserReply,
) -> (Option<UserReply>, Vec<UserEffect>) {
    match result {
        Ok((value, effects)) => (Some(into_reply(value)), effects),
        Err(error) => (Some(UserReply::Refused(error)), Vec::new()),
    }
}

/// Applies an authenticated session's op; sets `unchanged` when an op that usually changes
/// the state found nothing to change.
fn apply_session_op(
    state: &mut UserState,
    auth: &SessionAuth,
    op: SessionOp,
    now: u64,
    unchanged: &mut bool,
) -> (Option<UserReply>, Vec<UserEffect>) {
    let session_id = auth.session_id.as_str();
    let done = |()| UserReply::Done;
    match op {
        SessionOp::Resume { node_id } => {
            answer(state.resume(session_id, &node_id, now), UserReply::Session)
        }
        SessionOp::RefreshKey { new_key } => {
            answer(state.refresh_key(session_id, &auth.key_hash, new_key), done)
        }
        SessionOp::Logout => answer(state.logout(session_id, session_id, now), done),
        SessionOp::RevokeSession {
            session_id: revoked,
        } => answer(state.logout(session_id, &revoked, now), done),
        SessionOp::Contacts => (Some(UserReply::Contacts(state.contacts())), Vec::new()),
        SessionOp::SetStatus { status } => answer(state.set_status(session_id, status, now), done),
        SessionOp::SetWidget { contacts } => {
            answer(state.set_widget(session_id, contacts), UserReply::Widget)
        }
        SessionOp::RequestFriend { to, note } => answer(state.request_friend(&to, note, now), done),
        SessionOp::AnswerRequest { from, accept } => {
            answer(state.answer_request(&from, accept, now), done)
        }
        SessionOp::RemoveFriend { account } => answer(state.remove_friend(&account), done),
        SessionOp::SetGroup { name, members } => answer(state.set_group(name, members), done),
        SessionOp::DeleteGroup { name } => answer(state.delete_group(&name), done),
        SessionOp::ShareFriends {
            to,
            friends,
            groups,
            max_suggestions,
        } => answer(
            state.share_friends(&to, &friends, &groups, max_suggestions),
            |accounts| UserReply::Shared { accounts },
        ),
        SessionOp::RequestFriends {
            targets,
            note,
            max_targets,
        } => answer(
            state.request_friends(&targets, &note, max_targets, now),
            |(sent, skipped)| UserReply::RequestsSent { sent, skipped },
        ),
        SessionOp::SendMessage {
            to,
            message_id,
            text,
            sent_at_unix_ms,
        } => answer(
            state.send_message(&to, message_id, text, sent_at_unix_ms),
            |()| UserReply::MessageAccepted { sent_at_unix_ms },
        ),
        SessionOp::MarkRead {
            with,
            up_to_message_id,
        } => answer(state.mark_read(&with, up_to_message_id), done),
        SessionOp::Signal {
            to,
            call_id,
            kind,
            signal,
        } => answer(state.signal(&to, call_id, kind, signal), done),
        SessionOp::CheckFriend { with } => match state.require_friend(&with) {
            Ok(()) => (Some(UserReply::Done), Vec::new()),
            Err(error) => (Some(UserReply::Refused(error)), Vec::new()),
        },
        SessionOp::Profile => (Some(profile_reply(state)), Vec::new()),
        SessionOp::EnrolCampaign {
            campaign_id,
            gateway_id,
        } => answer(
            state.enrol_campaign(&campaign_id, &gateway_id, now),
            |(holding, changed)| {
                *unchanged = !changed;
                UserReply::Enrolled(holding)
            },
        ),
        SessionOp::Campaigns => {
            let (holdings, rewards) = state.campaigns();
            (Some(UserReply::Campaigns { holdings, rewards }), Vec::new())
        }
        SessionOp::ReserveShare {
            key,
            role,
            bytes,
            caps,
        } => answer(
            state.reserve_share(&key, role, bytes, caps, now),
            |changed| {
                *unchanged = !changed;
                UserReply::Done
            },
        ),
        SessionOp::ReleaseShare { key } => answer(state.release_share(&key, now), |changed| {
            *unchanged = !changed;
            UserReply::Done
        }),
    }
}

fn profile_reply(state: &UserState) -> UserReply {
    match state.profile() {
        Ok(profile) => UserReply::Profile(profile),
        Err(error) => UserReply::Refused(error),
    }
}

/// Turns the model's effects into the host's.
fn translate(effects: Vec<UserEffect>) -> Result<Effects, HandleError> {
    let mut result = Effects::default();
    for effect in effects {
        match effect {
            UserEffect::Push {
                node_id,
                session_id,
                push,
            } => {
                result.pushes.push(Push {
                    node_id,
                    session_id,
                    payload: encode(&push)?,
                });
            }
            UserEffect::Send { to, event } => {
                let Ok(target) = EntityKind::User.address(to) else {
                    continue;
                };
                result.outgoing.push(Outgoing {
                    target,
                    payload: encode(&UserRequest::Peer(event))?,
                });
            }
            UserEffect::Audit { action, detail } => result.audit.push(AuditNote {
                action: action.to_owned(),
                detail,
            }),
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::test_support::{audit_actions, handle_request, pushed};

    use crate::model::user::{CampaignHolding, SessionMode, SessionPush};

    const NOW: u64 = 1_000;

    fn handle(state: &mut UserState, request: &UserRequest) -> (UserReply, Effects) {
        handle_request::<UserEntity, _, _>(state, "alice", request, NOW)
    }

    /// Alice registered, with a client session `s1` on `node-a` whose key hash is `key-1`.
    fn alice() -> UserState {
        let mut state = UserState::default();
        let register = UserRequest::Register {
            display_name: "Alice".to_owned(),
            password_hash: "$argon2id$hash".to_owned(),
        };
        assert_eq!(handle(&mut state, &register).0, UserReply::Done);
        let open = UserRequest::OpenSession(SessionOpening {
            new_session_id: "s1".to_owned(),
            device: "phone".to_owned(),
            node_id: "node-a".to_owned(),
            mode: SessionMode::Client,
            key: KeyRecord {
                hash: "key-1".to_owned(),
                expires_at_unix_ms: u64::MAX,
            },
        });
        assert!(matches!(handle(&mut state, &open).0, UserReply::Session(_)));
        state
    }

    fn authed(op: SessionOp) -> UserRequest {
        UserRequest::Authed {
            auth: SessionAuth {
                session_id: "s1".to_owned(),
                key_hash: "key-1".to_owned(),
            },
            op,
        }
    }

    fn reward(campaign_id: &str) -> Reward {
        Reward {
            campaign_id: campaign_id.to_owned(),
            campaign_title: "Summer league".to_owned(),
            rank: 3,
            score: 77,
            text: "two free hours".to_owned(),
            granted_at_unix_ms: 900,
        }
    }

    #[test]
    fn a_reward_is_kept_pushed_and_audited_once() {
        let mut state = alice();
        let grant = UserRequest::GrantReward {
            reward: reward("c-1"),
        };
        let (reply, effects) = handle(&mut state, &grant);
        assert_eq!(reply, UserReply::Done);
        assert!(effects.state_changed);
        assert_eq!(
            pushed(&effects),
            vec![("s1".to_owned(), SessionPush::CampaignReward(reward("c-1")))]
        );
        assert_eq!(audit_actions(&effects), vec!["campaign.reward"]);

        let (reply, effects) = handle(&mut state, &grant);
        assert_eq!(reply, UserReply::Done);
        assert!(!effects.state_changed, "a redelivery changes nothing");
        assert!(effects.pushes.is_empty() && effects.audit.is_empty());
    }

    #[test]
    fn campaign_messages_to_an_unknown_account_are_refused_without_change() {
        let requests = [
            UserRequest::GrantReward {
                reward: reward("c-1"),
            },
            UserRequest::UnitsIssued {
                campaign_id: "c-1".to_owned(),
                gateway_id: "g-1".to_owned(),
                transfer_id: 4,
                units: 10,
            },
            UserRequest::UnitsUsed {
                campaign_id: "c-1".to_owned(),
                used_total: 3,
            },
        ];
        for request in &requests {
            let mut state = UserState::default();
            let (reply, effects) = handle(&mut state, request);
            assert_eq!(
                reply,
                UserReply::Refused(UserError::NoSuchAccount),
                "{request:?}"
            );
            assert!(!effects.state_changed, "{request:?}");
            assert!(effects.pushes.is_empty() && effects.audit.is_empty());
            assert_eq!(state, UserState::default());
        }
    }

    #[test]
    fn issued_and_used_units_change_the_state_only_when_they_change_the_holding() {
        let mut state = alice();
        let issued = UserRequest::UnitsIssued {
            campaign_id: "c-1".to_owned(),
            gateway_id: "g-1".to_owned(),
            transfer_id: 4,
            units: 10,
        };
        let (reply, effects) = handle(&mut state, &issued);
        assert_eq!(reply, UserReply::Done);
        assert!(effects.state_changed);
        assert_eq!(
            pushed(&effects),
            vec![(
                "s1".to_owned(),
                SessionPush::UnitsIssued {
                    campaign_id: "c-1".to_owned(),
                    gateway_id: "g-1".to_owned(),
                    units: 10,
                }
            )]
        );
        assert_eq!(audit_actions(&effects), vec!["campaign.units_issued"]);
        let (_, effects) = handle(&mut state, &issued);
        assert!(!effects.state_changed && effects.pushes.is_empty());

        let conflicting = UserRequest::UnitsIssued {
            campaign_id: "c-1".to_owned(),
            gateway_id: "g-1".to_owned(),
            transfer_id: 5,
            units: 10,
        };
        let (reply, effects) = handle(&mut state, &conflicting);
        assert_eq!(reply, UserReply::Done);
        assert!(!effects.state_changed && effects.pushes.is_empty());
        assert_eq!(audit_actions(&effects), vec!["campaign.units_conflict"]);

        let used = |used_total| UserRequest::UnitsUsed {
            campaign_id: "c-1".to_owned(),
            used_total,
        };
        for (used_total, expect_changed) in [(4, true), (4, false), (2, false), (15, true)] {
            let (reply, effects) = handle(&mut state, &used(used_total));
            assert_eq!(reply, UserReply::Done);
            assert_eq!(effects.state_changed, expect_changed, "{used_total}");
            assert!(effects.pushes.is_empty());
        }
        let used_units = state
            .campaign_holdings
            .first()
            .and_then(|holding| holding.issued_opt.as_ref())
            .map(|issued| issued.used_units);
        assert_eq!(used_units, Some(10));
    }

    #[test]
    fn a_session_enrols_once_and_lists_its_campaigns() {
        let mut state = alice();
        let enrol = |gateway_id: &str| {
            authed(SessionOp::EnrolCampaign {
                campaign_id: "c-1".to_owned(),
                gateway_id: gateway_id.to_owned(),
            })
        };
        let holding = CampaignHolding {
            campaign_id: "c-1".to_owned(),
            enrolled_via_opt: Some("g-1".to_owned()),
            enrolled_at_unix_ms_opt: Some(NOW),
            issued_opt: None,
        };
        let (reply, effects) = handle(&mut state, &enrol("g-1"));
        assert_eq!(reply, UserReply::Enrolled(holding.clone()));
        assert!(effects.state_changed);
        assert_eq!(audit_actions(&effects), vec!["campaign.enrolled"]);
        let (reply, effects) = handle(&mut state, &enrol("g-2"));
        assert_eq!(reply, UserReply::Enrolled(holding.clone()));
        assert!(!effects.state_changed && effects.audit.is_empty());

        handle(
            &mut state,
            &UserRequest::GrantReward {
                reward: reward("c-1"),
            },
        );
        let (reply, effects) = handle(&mut state, &authed(SessionOp::Campaigns));
        assert_eq!(
            reply,
            UserReply::Campaigns {
                holdings: vec![holding],
                rewards: vec![reward("c-1")],
            }
        );
        assert!(!effects.state_changed);

        let wrong_key = UserRequest::Authed {
            auth: SessionAuth {
                session_id: "s1".to_owned(),
                key_hash: "stolen".to_owned(),
            },
            op: SessionOp::Campaigns,
        };
        assert_eq!(
            handle(&mut state, &wrong_key).0,
            UserReply::Refused(UserError::KeyInvalid)
        );
    }
}
