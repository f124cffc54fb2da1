//! Unit tests of the user model.

use super::*;
use std::collections::VecDeque;

const LIMIT: LoginLimit = LoginLimit {
    max_failures: 3,
    window_ms: 60_000,
};
/// Expiry of keys that must not expire during a test.
const FAR_FUTURE_MS: u64 = 1_000_000_000_000;

// ---------------------------------------------------------------------------------------------
// Fixtures and effect helpers
// ---------------------------------------------------------------------------------------------

fn display_name_of(account: &str) -> String {
    format!("{account} (display)")
}

fn password_hash_of(account: &str) -> String {
    format!("$argon2id$hash-of-{account}")
}

fn registered(account: &str) -> UserState {
    let mut state = UserState::default();
    state
        .register(
            account.to_owned(),
            display_name_of(account),
            password_hash_of(account),
            1,
        )
        .unwrap();
    state
}

/// A registered account whose friend list is set directly (for single-state tests).
fn with_friends(account: &str, friends: &[&str]) -> UserState {
    let mut state = registered(account);
    for friend in friends {
        state.friends.insert(
            (*friend).to_owned(),
            Friend {
                display_name: display_name_of(friend),
                since_unix_ms: 1,
            },
        );
    }
    state
}

fn key(hash: &str, expires_at_unix_ms: u64) -> KeyRecord {
    KeyRecord {
        hash: hash.to_owned(),
        expires_at_unix_ms,
    }
}

fn opening(
    new_session_id: &str,
    device: &str,
    node_id: &str,
    mode: SessionMode,
    key_record: KeyRecord,
) -> SessionOpening {
    SessionOpening {
        new_session_id: new_session_id.to_owned(),
        device: device.to_owned(),
        node_id: node_id.to_owned(),
        mode,
        key: key_record,
    }
}

/// Opens a session whose device is named after the session and whose key never expires.
fn open(
    state: &mut UserState,
    session_id: &str,
    node_id: &str,
    mode: SessionMode,
    now_unix_ms: u64,
) -> (SessionSnapshot, Vec<UserEffect>) {
    state
        .open_session(
            opening(
                session_id,
                &format!("device-{session_id}"),
                node_id,
                mode,
                key(&format!("key-{session_id}"), FAR_FUTURE_MS),
            ),
            now_unix_ms,
        )
        .unwrap()
}

fn push(node_id: &str, session_id: &str, session_push: SessionPush) -> UserEffect {
    UserEffect::Push {
        node_id: node_id.to_owned(),
        session_id: session_id.to_owned(),
        push: session_push,
    }
}

fn send(to: &str, event: PeerEvent) -> UserEffect {
    UserEffect::Send {
        to: to.to_owned(),
        event,
    }
}

fn watch(session_id: &str, node_id: &str) -> PeerEvent {
    PeerEvent::Watch {
        session_id: session_id.to_owned(),
        node_id: node_id.to_owned(),
    }
}

fn unwatch(session_id: &str) -> PeerEvent {
    PeerEvent::Unwatch {
        session_id: session_id.to_owned(),
    }
}

fn message(message_id: &str, text: &str, sent_at_unix_ms: u64) -> PeerEvent {
    PeerEvent::MessageArrived {
        message_id: message_id.to_owned(),
        text: text.to_owned(),
        sent_at_unix_ms,
    }
}

fn presence(account: &str, status: Status, last_seen_unix_ms: u64) -> SessionPush {
    SessionPush::Presence {
        account: account.to_owned(),
        status,
        last_seen_unix_ms,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn not_friends(accounts: &[&str]) -> UserError {
    UserError::NotFriends {
        accounts: strings(accounts),
    }
}

/// The effects without audit notes, in order.
fn without_audits(effects: &[UserEffect]) -> Vec<UserEffect> {
    effects
        .iter()
        .filter(|effect| !matches!(effect, UserEffect::Audit { .. }))
        .cloned()
        .collect()
}

fn audit_actions(effects: &[UserEffect]) -> Vec<&'static str> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::Audit { action, .. } => Some(*action),
            _ => None,
        })
        .collect()
}

/// The (session, push) pairs among the effects, in order.
fn pushes_in(effects: &[UserEffect]) -> Vec<(String, SessionPush)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::Push {
                session_id, push, ..
            } => Some((session_id.clone(), push.clone())),
            _ => None,
        })
        .collect()
}

/// The sends among the effects, sorted so that tests do not depend on their order.
fn sorted_sends(effects: &[UserEffect]) -> Vec<(String, PeerEvent)> {
    let mut sends: Vec<(String, PeerEvent)> = effects
        .iter()
        .filter_map(|effect| match effect {
            UserEffect::Send { to, event } => Some((to.clone(), event.clone())),
            _ => None,
        })
        .collect();
    sends.sort_by(|left, right| format!("{left:?}").cmp(&format!("{right:?}")));
    sends
}

fn sorted_pairs(pairs: &[(&str, PeerEvent)]) -> Vec<(String, PeerEvent)> {
    let mut owned: Vec<(String, PeerEvent)> = pairs
        .iter()
        .map(|(to, event)| ((*to).to_owned(), event.clone()))
        .collect();
    owned.sort_by(|left, right| format!("{left:?}").cmp(&format!("{right:?}")));
    owned
}

// ---------------------------------------------------------------------------------------------
// A tiny mesh routing peer events between accounts
// ---------------------------------------------------------------------------------------------

/// Several accounts whose `Send` effects are delivered to each other's `on_peer_event`, so
/// that flows between accounts run as they would in the cluster (in FIFO order).
struct Mesh {
    users: BTreeMap<String, UserState>,
}

/// Every effect a step produced, tagged with the account that produced it.
type Log = Vec<(String, UserEffect)>;

impl Mesh {
    fn new(accounts: &[&str]) -> Self {
        Self {
            users: accounts
                .iter()
                .map(|account| ((*account).to_owned(), registered(account)))
                .collect(),
        }
    }

    fn user(&self, account: &str) -> &UserState {
        self.users.get(account).unwrap()
    }

    fn user_mut(&mut self, account: &str) -> &mut UserState {
        self.users.get_mut(account).unwrap()
    }

    /// Runs an operation on `account` and delivers its sends until the mesh is quiet.
    fn act<T>(
        &mut self,
        account: &str,
        now_unix_ms: u64,
        operation: impl FnOnce(&mut UserState) -> UserResult<T>,
    ) -> (T, Log) {
        let (value, effects) = operation(self.user_mut(account)).unwrap();
        (value, self.deliver(account, effects, now_unix_ms))
    }

    /// Delivers `effects` produced by `from`, and everything they cause, until quiet.
    fn deliver(&mut self, from: &str, effects: Vec<UserEffect>, now_unix_ms: u64) -> Log {
        let mut queue: VecDeque<(String, UserEffect)> = effects
            .into_iter()
            .map(|effect| (from.to_owned(), effect))
            .collect();
        let mut log = Vec::new();
        while let Some((sender, effect)) = queue.pop_front() {
            assert!(log.len() < 10_000, "peer events keep bouncing: {log:?}");
            if let UserEffect::Send { to, event } = &effect
                && let Some(receiver) = self.users.get_mut(to)
            {
                let caused = receiver.on_peer_event(&sender, event.clone(), now_unix_ms);
                queue.extend(caused.into_iter().map(|caused| (to.clone(), caused)));
            }
            log.push((sender, effect));
        }
        log
    }

    /// Makes `left` and `right` friends through a request and its acceptance.
    fn befriend(&mut self, left: &str, right: &str, now_unix_ms: u64) {
        self.act(left, now_unix_ms, |state| {
            state.request_friend(right, String::new(), now_unix_ms)
        });
        self.act(right, now_unix_ms, |state| {
            state.answer_request(left, true, now_unix_ms)
        });
        assert!(self.user(left).friends.contains_key(right));
        assert!(self.user(right).friends.contains_key(left));
    }
}

/// The (session, push) pairs `account` produced in a log.
fn pushes_by(log: &[(String, UserEffect)], account: &str) -> Vec<(String, SessionPush)> {
    let effects: Vec<UserEffect> = log
        .iter()
        .filter(|(producer, _)| producer == account)
        .map(|(_, effect)| effect.clone())
        .collect();
    pushes_in(&effects)
}

fn audits_by(log: &[(String, UserEffect)], account: &str) -> Vec<&'static str> {
    let effects: Vec<UserEffect> = log
        .iter()
        .filter(|(producer, _)| producer == account)
        .map(|(_, effect)| effect.clone())
        .collect();
    audit_actions(&effects)
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

#[test]
fn register_once_then_account_exists() {
    let mut state = UserState::default();
    let ((), effects) = state
        .register("alice".to_owned(), "Alice".to_owned(), "phc".to_owned(), 42)
        .unwrap();
    assert_eq!(
        effects,
        vec![UserEffect::Audit {
            action: "account.registered",
            detail: "display_name=Alice".to_owned(),
        }]
    );
    let expected_account = Account {
        id: "alice".to_owned(),
        display_name: "Alice".to_owned(),
        password_hash: "phc".to_owned(),
        created_unix_ms: 42,
        partner_link_opt: None,
    };
    assert_eq!(state.account_opt.as_ref(), Some(&expected_account));
    assert_eq!(state.shown_status, Status::Offline);

    let again = state.register("alice".to_owned(), "Other".to_owned(), "x".to_owned(), 43);
    assert_eq!(again, Err(UserError::AccountExists));
    assert_eq!(state.account_opt, Some(expected_account));
}

#[test]
fn operations_on_an_unregistered_account_are_refused() {
    fn check(name: &str, operation: impl FnOnce(&mut UserState) -> Result<(), UserError>) {
        let mut state = UserState::default();
        assert_eq!(
            operation(&mut state),
            Err(UserError::NoSuchAccount),
            "{name}"
        );
        assert_eq!(state, UserState::default(), "{name} changed the state");
    }
    check("credential", |state| state.credential(LIMIT, 10).map(drop));
    check("login_failed", |state| {
        state.login_failed(LIMIT, 10).map(drop)
    });
    check("open_session", |state| {
        state
            .open_session(
                opening("s1", "d1", "n1", SessionMode::Client, key("k", 100)),
                10,
            )
            .map(drop)
    });
    check("check_key", |state| state.check_key("s1", "k", 10));

    let mut state = UserState::default();
    let effects = state.on_peer_event(
        "bob",
        PeerEvent::FriendRequest {
            display_name: "Bob".to_owned(),
            note: String::new(),
        },
        10,
    );
    assert_eq!(effects, Vec::new());
    assert_eq!(state, UserState::default());
}

// ---------------------------------------------------------------------------------------------
// Credentials and the login limit
// ---------------------------------------------------------------------------------------------

#[test]
fn credential_locks_out_after_max_failures_within_the_window() {
    #[track_caller]
    fn check(failures: &[u64], now_unix_ms: u64, expected: Result<(), u64>) {
        let mut state = registered("alice");
        for at in failures {
            let ((), effects) = state.login_failed(LIMIT, *at).unwrap();
            assert_eq!(audit_actions(&effects), vec!["login.failed"]);
        }
        let expected = match expected {
            Ok(()) => Ok(password_hash_of("alice")),
            Err(retry_after_ms) => Err(UserError::LockedOut { retry_after_ms }),
        };
        assert_eq!(
            state.credential(LIMIT, now_unix_ms),
            expected,
            "failures {failures:?} at {now_unix_ms}"
        );
    }
    check(&[], 10_000, Ok(()));
    check(&[1_000, 2_000], 3_000, Ok(()));
    // retry_after = oldest + window - now.
    check(&[1_000, 2_000, 3_000], 3_000, Err(58_000));
    check(&[1_000, 2_000, 3_000], 30_000, Err(31_000));
    check(&[1_000, 2_000, 3_000], 60_999, Err(1));
    // A failure exactly one window old no longer counts.
    check(&[1_000, 2_000, 3_000], 61_000, Ok(()));
    check(&[1_000, 2_000, 3_000, 4_000], 61_000, Err(1_000));
    // Old failures do not count towards a lockout.
    check(&[1_000, 2_000, 70_000, 71_000], 71_000, Ok(()));
    check(&[1_000, 70_000, 71_000, 72_000], 72_000, Err(58_000));
}

#[test]
fn login_failed_forgets_failures_older_than_the_window() {
    let mut state = registered("alice");
    for at in [1_000, 2_000, 61_500, 70_000] {
        state.login_failed(LIMIT, at).unwrap();
    }
    assert_eq!(state.failed_logins, vec![61_500, 70_000]);
}

#[test]
fn open_session_clears_failed_logins() {
    let mut state = registered("alice");
    for at in [1_000, 2_000, 3_000] {
        state.login_failed(LIMIT, at).unwrap();
    }
    assert_eq!(
        state.credential(LIMIT, 4_000),
        Err(UserError::LockedOut {
            retry_after_ms: 57_000
        })
    );
    open(&mut state, "s1", "n1", SessionMode::Client, 4_000);
    assert_eq!(state.failed_logins, Vec::<u64>::new());
    assert_eq!(
        state.credential(LIMIT, 4_001),
        Ok(password_hash_of("alice"))
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions and keys
// ---------------------------------------------------------------------------------------------

#[test]
fn open_session_creates_then_reuses_the_device_session() {
    let mut state = registered("alice");
    let (snapshot, effects) = state
        .open_session(
            opening(
                "s1",
                "laptop",
                "n1",
                SessionMode::Client,
                key("k1", FAR_FUTURE_MS),
            ),
            1_000,
        )
        .unwrap();
    assert_eq!(
        snapshot,
        SessionSnapshot {
            account: "alice".to_owned(),
            display_name: display_name_of("alice"),
            session_id: "s1".to_owned(),
            reused: false,
            status: Status::Online,
            widget: Vec::new(),
            unread: BTreeMap::new(),
            requests_in: BTreeMap::new(),
        }
    );
    assert_eq!(audit_actions(&effects), vec!["session.opened"]);
    assert_eq!(state.shown_status, Status::Online);
    assert_eq!(state.last_seen_unix_ms, 1_000);

    let (snapshot, effects) = state
        .open_session(
            opening(
                "s2",
                "laptop",
                "n1",
                SessionMode::Client,
                key("k2", FAR_FUTURE_MS),
            ),
            2_000,
        )
        .unwrap();
    assert!(snapshot.reused);
    assert_eq!(snapshot.session_id, "s1");
    assert_eq!(audit_actions(&effects), vec!["session.key_added"]);
    assert_eq!(state.sessions.keys().collect::<Vec<_>>(), vec!["s1"]);
    assert_eq!(state.check_key("s1", "k1", 2_001), Ok(()));
    assert_eq!(state.check_key("s1", "k2", 2_001), Ok(()));
    assert_eq!(
        state.check_key("s2", "k2", 2_001),
        Err(UserError::KeyInvalid)
    );
    assert_eq!(state.sessions["s1"].last_active_unix_ms, 2_000);

    // Another device gets its own session.
    let (snapshot, _) = state
        .open_session(
            opening(
                "s3",
                "phone",
                "n2",
                SessionMode::Widget,
                key("k3", FAR_FUTURE_MS),
            ),
            3_000,
        )
        .unwrap();
    assert!(!snapshot.reused);
    assert_eq!(snapshot.session_id, "s3");
    assert_eq!(state.sessions.len(), 2);
    assert_eq!(state.sessions["s3"].mode, SessionMode::Widget);
    assert_eq!(state.sessions["s3"].node_id, "n2");
}

#[test]
fn a_session_keeps_at_most_max_keys_dropping_the_oldest() {
    let mut state = registered("alice");
    let hashes: Vec<String> = (0..=MAX_KEYS_PER_SESSION)
        .map(|index| format!("k{index}"))
        .collect();
    for (index, hash) in hashes.iter().enumerate() {
        let at = 1_000 + index as u64;
        state
            .open_session(
                opening(
                    &format!("new-{index}"),
                    "laptop",
                    "n1",
                    SessionMode::Client,
                    key(hash, FAR_FUTURE_MS),
                ),
                at,
            )
            .unwrap();
    }
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.sessions["new-0"].keys.len(), MAX_KEYS_PER_SESSION);
    assert!(state.check_key("new-0", &hashes[0], 2_000).is_err());
    for hash in &hashes[1..] {
        assert_eq!(state.check_key("new-0", hash, 2_000), Ok(()), "{hash}");
    }
}

#[test]
fn open_session_drops_expired_keys_of_the_device_session() {
    let mut state = registered("alice");
    state
        .open_session(
            opening(
                "s1",
                "laptop",
                "n1",
                SessionMode::Client,
                key("short", 5_000),
            ),
            1_000,
        )
        .unwrap();
    state
        .open_session(
            opening(
                "s1",
                "laptop",
                "n1",
                SessionMode::Client,
                key("long", 9_000),
            ),
            6_000,
        )
        .unwrap();
    assert_eq!(state.sessions["s1"].keys, vec![key("long", 9_000)]);
}

#[test]
fn too_many_sessions_end_the_least_recently_active_one() {
    let mut state = registered("alice");
    for index in 0..MAX_SESSIONS_PER_ACCOUNT {
        open(
            &mut state,
            &format!("s{index:02}"),
            "n1",
            SessionMode::Client,
            1_000 + index as u64,
        );
    }
    // s00 is used again, so s01 becomes the least recently active.
    state.resume("s00", "n1", 5_000).unwrap();
    assert_eq!(state.sessions.len(), MAX_SESSIONS_PER_ACCOUNT);

    let (snapshot, effects) = open(&mut state, "s99", "n9", SessionMode::Client, 6_000);
    assert!(!snapshot.reused);
    assert_eq!(state.sessions.len(), MAX_SESSIONS_PER_ACCOUNT);
    assert!(!state.sessions.contains_key("s01"));
    assert!(state.sessions.contains_key("s00"));
    assert!(state.sessions.contains_key("s99"));
    assert_eq!(
        pushes_in(&effects),
        vec![(
            "s01".to_owned(),
            SessionPush::SessionEnded {
                reason: "too many sessions; the oldest was ended".to_owned(),
            }
        )]
    );
    assert_eq!(
        audit_actions(&effects),
        vec!["session.opened", "session.ended"]
    );
    assert_eq!(
        state.check_key("s01", "key-s01", 6_001),
        Err(UserError::KeyRevoked)
    );
}

#[test]
fn the_session_cap_never_ends_the_session_being_opened() {
    // All sessions equally (in)active: the one being opened must still survive.
    let mut state = registered("alice");
    for index in 0..MAX_SESSIONS_PER_ACCOUNT {
        open(
            &mut state,
            &format!("s{index:02}"),
            "n1",
            SessionMode::Client,
            1_000,
        );
    }
    let (snapshot, effects) = state
        .open_session(
            opening(
                "a-new",
                "new-device",
                "n1",
                SessionMode::Client,
                key("k-new", FAR_FUTURE_MS),
            ),
            1_000,
        )
        .unwrap();
    assert_eq!(snapshot.session_id, "a-new");
    assert!(state.sessions.contains_key("a-new"));
    assert_eq!(state.sessions.len(), MAX_SESSIONS_PER_ACCOUNT);
    assert_eq!(state.check_key("a-new", "k-new", 1_001), Ok(()));
    let ended: Vec<(String, SessionPush)> = pushes_in(&effects);
    assert_eq!(ended.len(), 1);
    assert_ne!(ended[0].0, "a-new");
}

#[test]
fn check_key_tells_valid_invalid_expired_and_revoked_keys() {
    let mut state = registered("alice");
    let client = SessionMode::Client;
    state
        .open_session(
            opening("s1", "laptop", "n1", client, key("live", FAR_FUTURE_MS)),
            1_000,
        )
        .unwrap();
    state
        .open_session(
            opening("s1", "laptop", "n1", client, key("short", 5_000)),
            1_100,
        )
        .unwrap();
    state
        .open_session(
            opening(
                "s1",
                "laptop",
                "n1",
                client,
                key("to-refresh", FAR_FUTURE_MS),
            ),
            1_200,
        )
        .unwrap();
    state
        .open_session(
            opening("s2", "phone", "n1", client, key("phone-key", FAR_FUTURE_MS)),
            1_300,
        )
        .unwrap();
    state
        .open_session(
            opening(
                "s3",
                "tablet",
                "n1",
                client,
                key("tablet-key", FAR_FUTURE_MS),
            ),
            1_400,
        )
        .unwrap();
    let ((), effects) = state
        .refresh_key("s1", "to-refresh", key("refreshed", FAR_FUTURE_MS))
        .unwrap();
    assert_eq!(audit_actions(&effects), vec!["session.key_refreshed"]);
    let ((), effects) = state.logout("s2", "s2", 2_000).unwrap();
    assert_eq!(
        pushes_in(&effects),
        vec![(
            "s2".to_owned(),
            SessionPush::SessionEnded {
                reason: "logged out".to_owned()
            }
        )]
    );

    use UserError::{KeyExpired, KeyInvalid, KeyRevoked};
    let cases: [(&str, &str, u64, Result<(), UserError>); 12] = [
        ("s1", "live", 3_000, Ok(())),
        ("s1", "short", 4_999, Ok(())),
        ("s1", "short", 5_000, Err(KeyExpired)),
        ("s1", "unknown", 3_000, Err(KeyInvalid)),
        ("s1", "to-refresh", 3_000, Err(KeyRevoked)),
        ("s1", "refreshed", 3_000, Ok(())),
        // A live key of another session does not open this one.
        ("s3", "live", 3_000, Err(KeyInvalid)),
        ("s3", "tablet-key", 3_000, Ok(())),
        // Logged out: the session is gone and its keys are remembered as revoked.
        ("s2", "phone-key", 3_000, Err(KeyRevoked)),
        ("s2", "unknown", 3_000, Err(KeyInvalid)),
        ("no-such-session", "phone-key", 3_000, Err(KeyRevoked)),
        ("no-such-session", "unknown", 3_000, Err(KeyInvalid)),
    ];
    for (session_id, key_hash, now_unix_ms, expected) in cases {
        assert_eq!(
            state.check_key(session_id, key_hash, now_unix_ms),
            expected,
            "{session_id} {key_hash} at {now_unix_ms}"
        );
    }
}

#[test]
fn only_the_most_recent_revoked_keys_are_remembered() {
    let mut state = registered("alice");
    state
        .open_session(
            opening(
                "s1",
                "laptop",
                "n1",
                SessionMode::Client,
                key("r0", FAR_FUTURE_MS),
            ),
            1_000,
        )
        .unwrap();
    for index in 0..=REMEMBERED_REVOKED_KEYS {
        state
            .refresh_key(
                "s1",
                &format!("r{index}"),
                key(&format!("r{}", index + 1), FAR_FUTURE_MS),
            )
            .unwrap();
    }
    assert_eq!(state.revoked_keys.len(), REMEMBERED_REVOKED_KEYS);
    assert_eq!(
        state.check_key("s1", "r0", 2_000),
        Err(UserError::KeyInvalid)
    );
    assert_eq!(
        state.check_key("s1", "r1", 2_000),
        Err(UserError::KeyRevoked)
    );
    let newest = format!("r{}", REMEMBERED_REVOKED_KEYS + 1);
    assert_eq!(state.check_key("s1", &newest, 2_000), Ok(()));
}

#[test]
fn logout_ends_own_or_another_session_and_refuses_unknown_ones() {
    let mut state = with_friends("alice", &["bob"]);
    open(&mut state, "s1", "n1", SessionMode::Client, 1_000);
    open(&mut state, "s2", "n2", SessionMode::Widget, 1_000);
    state.set_widget("s2", strings(&["bob"])).unwrap();

    let ((), effects) = state.logout("s1", "s2", 2_000).unwrap();
    assert_eq!(
        without_audits(&effects),
        vec![
            send("bob", unwatch("s2")),
            push(
                "n2",
                "s2",
                SessionPush::SessionEnded {
                    reason: "revoked by another session of the account".to_owned()
                }
            ),
        ]
    );
    assert_eq!(audit_actions(&effects), vec!["session.ended"]);
    assert!(!state.sessions.contains_key("s2"));
    assert_eq!(state.shown_status, Status::Online);

    let before = state.clone();
    assert_eq!(
        state.logout("s1", "s2", 2_100),
        Err(UserError::Invalid {
            reason: "no session s2 on this account".to_owned()
        })
    );
    assert_eq!(state, before);

    state.logout("s1", "s1", 3_000).unwrap();
    assert!(state.sessions.is_empty());
    assert_eq!(state.shown_status, Status::Offline);
    assert_eq!(state.last_seen_unix_ms, 3_000);
}

#[test]
fn operations_on_unknown_sessions_are_refused_as_revoked() {
    #[track_caller]
    fn check(name: &str, operation: impl FnOnce(&mut UserState) -> Result<(), UserError>) {
        let mut state = with_friends("alice", &["bob"]);
        open(&mut state, "s1", "n1", SessionMode::Client, 1_000);
        let before = state.clone();
        assert_eq!(operation(&mut state), Err(UserError::KeyRevoked), "{name}");
        assert_eq!(state, before, "{name} changed the state");
    }
    check("resume", |state| {
        state.resume("gone", "n1", 2_000).map(drop)
    });
    check("refresh_key", |state| {
        state.refresh_key("gone", "key-s1", key("k", 9)).map(drop)
    });
    check("disconnected", |state| {
        state.disconnected("gone", 2_000).map(drop)
    });
    check("set_status", |state| {
        state.set_status("gone", Status::Busy, 2_000).map(drop)
    });
    check("set_widget", |state| {
        state.set_widget("gone", strings(&["bob"])).map(drop)
    });
}

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

#[test]
fn shown_status_aggregates_connected_sessions() {
    #[track_caller]
    fn check(sessions: &[(Status, bool)], expected: Status) {
        let mut state = registered("alice");
        for (index, (status, connected)) in sessions.iter().enumerate() {
            let session_id = format!("s{index}");
            open(&mut state, &session_id, "n1", SessionMode::Client, 1_000);
            state.set_status(&session_id, *status, 1_001).unwrap();
            if !connected {
                state.disconnected(&session_id, 1_002).unwrap();
            }
        }
        assert_eq!(state.shown_status, expected, "sessions {sessions:?}");
    }
    use Status::{Away, Busy, Invisible, Offline, Online};
    check(&[], Offline);
    check(&[(Online, true)], Online);
    check(&[(Away, true)], Away);
    check(&[(Busy, true)], Busy);
    check(&[(Offline, true)], Offline);
    check(&[(Away, true), (Busy, true)], Busy);
    check(&[(Busy, true), (Away, true)], Busy);
    check(&[(Busy, true), (Online, true), (Away, true)], Online);
    check(&[(Away, true), (Invisible, true)], Away);
    check(&[(Invisible, true)], Offline);
    check(&[(Invisible, true), (Offline, true)], Offline);
    check(&[(Online, false), (Away, true)], Away);
    check(&[(Online, false), (Busy, false)], Offline);
    check(&[(Online, false), (Invisible, true)], Offline);
}

#[test]
fn watchers_get_one_presence_push_per_change_of_the_shown_status() {
    enum Step {
        Open(&'static str),
        SetStatus(&'static str, Status),
        Disconnect(&'static str),
        Resume(&'static str),
        Logout(&'static str),
    }
    let mut state = with_friends("alice", &["bob", "carol"]);
    assert_eq!(state.on_peer_event("bob", watch("b1", "nb"), 500).len(), 1);
    assert_eq!(
        state.on_peer_event("carol", watch("c1", "nc"), 500).len(),
        1
    );

    #[track_caller]
    fn check(state: &mut UserState, step: &Step, now_unix_ms: u64, expected: Option<Status>) {
        let status_before = state.shown_status;
        let last_seen_before = state.last_seen_unix_ms;
        let effects = match step {
            Step::Open(session_id) => {
                open(state, session_id, "na", SessionMode::Client, now_unix_ms).1
            }
            Step::SetStatus(session_id, status) => {
                state
                    .set_status(session_id, *status, now_unix_ms)
                    .unwrap()
                    .1
            }
            Step::Disconnect(session_id) => state.disconnected(session_id, now_unix_ms).unwrap().1,
            Step::Resume(session_id) => state.resume(session_id, "na", now_unix_ms).unwrap().1,
            Step::Logout(session_id) => {
                state.logout(session_id, session_id, now_unix_ms).unwrap().1
            }
        };
        let presence_pushes: Vec<UserEffect> = effects
            .into_iter()
            .filter(|effect| {
                matches!(
                    effect,
                    UserEffect::Push {
                        push: SessionPush::Presence { .. },
                        ..
                    }
                )
            })
            .collect();
        match expected {
            Some(status) => {
                let shown = presence("alice", status, now_unix_ms);
                assert_eq!(
                    presence_pushes,
                    vec![push("nb", "b1", shown.clone()), push("nc", "c1", shown)],
                    "at {now_unix_ms}"
                );
                assert_eq!(state.shown_status, status, "at {now_unix_ms}");
                assert_eq!(state.last_seen_unix_ms, now_unix_ms);
            }
            None => {
                assert_eq!(presence_pushes, Vec::new(), "at {now_unix_ms}");
                assert_eq!(state.shown_status, status_before, "at {now_unix_ms}");
                assert_eq!(state.last_seen_unix_ms, last_seen_before);
            }
        }
    }

    use Status::{Away, Busy, Invisible, Offline, Online};
    check(&mut state, &Step::Open("a1"), 1_000, Some(Online));
    check(&mut state, &Step::SetStatus("a1", Busy), 2_000, Some(Busy));
    check(&mut state, &Step::SetStatus("a1", Busy), 2_100, None);
    assert_eq!(state.last_seen_unix_ms, 2_000);
    check(&mut state, &Step::Open("a2"), 2_200, Some(Online));
    check(
        &mut state,
        &Step::SetStatus("a2", Invisible),
        2_300,
        Some(Busy),
    );
    check(&mut state, &Step::SetStatus("a1", Away), 2_400, Some(Away));
    check(&mut state, &Step::SetStatus("a2", Offline), 2_450, None);
    check(&mut state, &Step::Disconnect("a1"), 2_500, Some(Offline));
    check(&mut state, &Step::Disconnect("a2"), 2_600, None);
    assert_eq!(state.last_seen_unix_ms, 2_500);
    check(&mut state, &Step::Resume("a1"), 2_700, Some(Away));
    check(&mut state, &Step::Resume("a2"), 2_800, None);
    check(
        &mut state,
        &Step::SetStatus("a2", Online),
        2_900,
        Some(Online),
    );
    check(&mut state, &Step::Logout("a2"), 3_000, Some(Away));
    check(&mut state, &Step::Logout("a1"), 3_100, Some(Offline));
}

// ---------------------------------------------------------------------------------------------
// Friends
// ---------------------------------------------------------------------------------------------

#[test]
fn a_friend_request_accepted_makes_both_friends() {
    let mut mesh = Mesh::new(&["alice", "bob"]);
    open(mesh.user_mut("alice"), "a1", "na", SessionMode::Client, 100);
    open(mesh.user_mut("bob"), "b1", "nb", SessionMode::Client, 100);
    open(mesh.user_mut("bob"), "b2", "nb", SessionMode::Widget, 100);

    let ((), log) = mesh.act("alice", 1_000, |state| {
        state.request_friend("bob", "hi bob".to_owned(), 1_000)
    });
    assert_eq!(audits_by(&log, "alice"), vec!["friend.requested"]);
    assert_eq!(mesh.user("alice").requests_out.get("bob"), Some(&1_000));
    assert_eq!(
        mesh.user("bob").requests_in.get("alice"),
        Some(&IncomingRequest {
            display_name: display_name_of("alice"),
            note: "hi bob".to_owned(),
            at_unix_ms: 1_000,
        })
    );
    // Only the client session hears of it, not the widget.
    assert_eq!(
        pushes_by(&log, "bob"),
        vec![(
            "b1".to_owned(),
            SessionPush::FriendRequest {
                from: "alice".to_owned(),
                display_name: display_name_of("alice"),
                note: "hi bob".to_owned(),
                at_unix_ms: 1_000,
            }
        )]
    );

    let ((), log) = mesh.act("bob", 2_000, |state| {
        state.answer_request("alice", true, 2_000)
    });
    assert_eq!(audits_by(&log, "bob"), vec!["friend.accepted"]);
    assert_eq!(audits_by(&log, "alice"), vec!["friend.became"]);
    assert_eq!(
        pushes_by(&log, "alice"),
        vec![(
            "a1".to_owned(),
            SessionPush::FriendAccepted {
                by: "bob".to_owned(),
                display_name: display_name_of("bob"),
            }
        )]
    );
    for (account, friend) in [("alice", "bob"), ("bob", "alice")] {
        let state = mesh.user(account);
        assert_eq!(
            state.friends.get(friend),
            Some(&Friend {
                display_name: display_name_of(friend),
                since_unix_ms: 2_000,
            }),
            "{account}"
        );
        assert!(state.requests_in.is_empty(), "{account}");
        assert!(state.requests_out.is_empty(), "{account}");
    }

    // Answering again is refused: there is no request any more.
    assert_eq!(
        mesh.user_mut("bob").answer_request("alice", true, 3_000),
        Err(UserError::Invalid {
            reason: "no friend request from alice".to_owned()
        })
    );
}

#[test]
fn a_declined_friend_request_leaves_both_strangers() {
    let mut mesh = Mesh::new(&["alice", "bob"]);
    open(mesh.user_mut("alice"), "a1", "na", SessionMode::Client, 100);
    mesh.act("alice", 1_000, |state| {
        state.request_friend("bob", String::new(), 1_000)
    });
    let ((), log) = mesh.act("bob", 2_000, |state| {
        state.answer_request("alice", false, 2_000)
    });
    assert_eq!(audits_by(&log, "bob"), vec!["friend.declined"]);
    assert_eq!(
        pushes_by(&log, "alice"),
        vec![(
            "a1".to_owned(),
            SessionPush::FriendDeclined {
                by: "bob".to_owned()
            }
        )]
    );
    for account in ["alice", "bob"] {
        let state = mesh.user(account);
        assert!(state.friends.is_empty(), "{account}");
        assert!(state.requests_in.is_empty(), "{account}");
        assert!(state.requests_out.is_empty(), "{account}");
    }
}

#[test]
fn mutual_friend_requests_become_a_friendship() {
    // Bob asks back after receiving Alice's request.
    let mut mesh = Mesh::new(&["alice", "bob"]);
    mesh.act("alice", 1_000, |state| {
        state.request_friend("bob", String::new(), 1_000)
    });
    mesh.act("bob", 2_000, |state| {
        state.request_friend("alice", String::new(), 2_000)
    });
    for (account, friend) in [("alice", "bob"), ("bob", "alice")] {
        let state = mesh.user(account);
        assert!(state.friends.contains_key(friend), "{account}");
        assert!(state.requests_in.is_empty(), "{account}");
        assert!(state.requests_out.is_empty(), "{account}");
    }

    // Both ask before either request arrives.
    let mut mesh = Mesh::new(&["alice", "bob"]);
    let ((), alice_effects) = mesh
        .user_mut("alice")
        .request_friend("bob", String::new(), 1_000)
        .unwrap();
    let ((), bob_effects) = mesh
        .user_mut("bob")
        .request_friend("alice", String::new(), 1_000)
        .unwrap();
    mesh.deliver("alice", alice_effects, 1_100);
    mesh.deliver("bob", bob_effects, 1_100);
    for (account, friend) in [("alice", "bob"), ("bob", "alice")] {
        let state = mesh.user(account);
        assert!(state.friends.contains_key(friend), "{account}");
        assert!(state.requests_in.is_empty(), "{account}");
        assert!(state.requests_out.is_empty(), "{account}");
    }
}

#[test]
fn a_repeated_request_crossing_our_own_leaves_no_stale_request() {
    let mut mesh = Mesh::new(&["alice", "bob"]);
    // Bob asks; Alice receives it but asks back instead of answering; Bob asks again before
    // Alice's request reaches him.
    mesh.act("bob", 1_000, |state| {
        state.request_friend("alice", String::new(), 1_000)
    });
    let ((), alice_effects) = mesh
        .user_mut("alice")
        .request_friend("bob", String::new(), 2_000)
        .unwrap();
    mesh.act("bob", 3_000, |state| {
        state.request_friend("alice", String::new(), 3_000)
    });
    mesh.deliver("alice", alice_effects, 3_100);
    for (account, friend) in [("alice", "bob"), ("bob", "alice")] {
        let state = mesh.user(account);
        assert!(state.friends.contains_key(friend), "{account}");
        assert!(state.requests_in.is_empty(), "{account}");
        assert!(state.requests_out.is_empty(), "{account}");
    }
}

#[test]
fn a_request_from_someone_who_lost_us_is_accepted_again() {
    let mut mesh = Mesh::new(&["alice", "bob"]);
    mesh.befriend("alice", "bob", 1_000);
    // Bob lost Alice (e.g. restored an old state) and asks again.
    mesh.user_mut("bob").friends.clear();
    let ((), log) = mesh.act("bob", 2_000, |state| {
        state.request_friend("alice", String::new(), 2_000)
    });
    assert!(mesh.user("bob").friends.contains_key("alice"));
    assert!(mesh.user("alice").requests_in.is_empty());
    assert!(pushes_by(&log, "alice").is_empty());
}

#[test]
fn friend_requests_to_oneself_or_a_friend_are_refused() {
    let mut state = with_friends("alice", &["bob"]);
    let before = state.clone();
    assert_eq!(
        state.request_friend("alice", String::new(), 1_000),
        Err(UserError::Invalid {
            reason: "cannot befriend oneself".to_owned()
        })
    );
    assert_eq!(
        state.request_friend("bob", String::new(), 1_000),
        Err(UserError::Invalid {
            reason: "bob is already a friend".to_owned()
        })
    );
    assert_eq!(state, before);
}

#[test]
fn removing_a_friend_clears_groups_widgets_watchers_and_hints_on_both_sides() {
    let mut mesh = Mesh::new(&["alice", "bob", "carol"]);
    mesh.befriend("alice", "bob", 1_000);
    mesh.befriend("alice", "carol", 1_000);
    mesh.befriend("bob", "carol", 1_000);
    open(
        mesh.user_mut("alice"),
        "a-client",
        "na",
        SessionMode::Client,
        1_100,
    );
    open(
        mesh.user_mut("alice"),
        "a-widget",
        "na",
        SessionMode::Widget,
        1_100,
    );
    open(
        mesh.user_mut("bob"),
        "b-client",
        "nb",
        SessionMode::Client,
        1_100,
    );
    open(
        mesh.user_mut("bob"),
        "b-widget",
        "nb",
        SessionMode::Widget,
        1_100,
    );
    mesh.act("alice", 1_200, |state| {
        state.set_widget("a-widget", strings(&["bob", "carol"]))
    });
    mesh.act("bob", 1_200, |state| {
        state.set_widget("b-widget", strings(&["alice", "carol"]))
    });
    mesh.act("alice", 1_300, |state| {
        state.set_group(
            "team".to_owned(),
            ["bob", "carol"].map(str::to_owned).into(),
        )
    });
    mesh.act("bob", 1_300, |state| {
        state.set_group(
            "team".to_owned(),
            ["alice", "carol"].map(str::to_owned).into(),
        )
    });
    mesh.act("bob", 1_400, |state| {
        state.send_message("alice", "m1".to_owned(), "hello".to_owned(), 1_400)
    });
    assert!(mesh.user("alice").unread.contains_key("bob"));
    assert_eq!(mesh.user("alice").watchers["b-widget"].account, "bob");
    assert_eq!(mesh.user("bob").watchers["a-widget"].account, "alice");

    let ((), log) = mesh.act("alice", 2_000, |state| state.remove_friend("bob"));
    let alice_sends: Vec<UserEffect> = log
        .iter()
        .filter(|(producer, effect)| {
            producer == "alice" && matches!(effect, UserEffect::Send { .. })
        })
        .map(|(_, effect)| effect.clone())
        .collect();
    assert_eq!(
        alice_sends,
        vec![
            send("bob", unwatch("a-widget")),
            send("bob", PeerEvent::FriendRemoved)
        ]
    );
    let bob_sends: Vec<UserEffect> = log
        .iter()
        .filter(|(producer, effect)| producer == "bob" && matches!(effect, UserEffect::Send { .. }))
        .map(|(_, effect)| effect.clone())
        .collect();
    assert_eq!(bob_sends, vec![send("alice", unwatch("b-widget"))]);
    assert_eq!(audits_by(&log, "alice"), vec!["friend.removed"]);
    assert_eq!(audits_by(&log, "bob"), vec!["friend.removed_by"]);
    assert_eq!(
        pushes_by(&log, "bob"),
        vec![(
            "b-client".to_owned(),
            SessionPush::FriendRemoved {
                by: "alice".to_owned()
            }
        )]
    );

    for (account, former, widget_session) in
        [("alice", "bob", "a-widget"), ("bob", "alice", "b-widget")]
    {
        let state = mesh.user(account);
        assert!(!state.friends.contains_key(former), "{account}");
        assert!(state.friends.contains_key("carol"), "{account}");
        assert_eq!(
            state.groups["team"],
            BTreeSet::from(["carol".to_owned()]),
            "{account}"
        );
        assert_eq!(
            state.sessions[widget_session].widget,
            strings(&["carol"]),
            "{account}"
        );
        assert!(
            state
                .watchers
                .values()
                .all(|watcher| watcher.account != former),
            "{account} still pushes to {former}"
        );
        assert!(!state.unread.contains_key(former), "{account}");
    }
    // Carol's watchers are untouched.
    assert_eq!(mesh.user("carol").watchers.len(), 2);

    // A second removal is refused: no longer friends.
    assert_eq!(
        mesh.user_mut("alice").remove_friend("bob"),
        Err(not_friends(&["bob"]))
    );
}

#[test]
fn events_from_non_friends_are_ignored() {
    #[track_caller]
    fn check(from: &str, event: PeerEvent) {
        let mut state = with_friends("alice", &["bob"]);
        open(&mut state, "a-client", "na", SessionMode::Client, 1_000);
        open(&mut state, "a-widget", "na", SessionMode::Widget, 1_000);
        state.set_widget("a-widget", strings(&["bob"])).unwrap();
        let before = state.clone();
        let description = format!("{from} {event:?}");
        let effects = state.on_peer_event(from, event, 2_000);
        assert_eq!(effects, Vec::new(), "{description}");
        assert_eq!(state, before, "{description} changed the state");
    }
    let mallory = "mallory";
    check(mallory, message("m1", "buy now", 1_500));
    check(mallory, watch("m-session", "nm"));
    check(
        mallory,
        PeerEvent::CallSignal {
            call_id: "c1".to_owned(),
            kind: "video".to_owned(),
            signal: vec![1, 2, 3],
        },
    );
    check(
        mallory,
        PeerEvent::FriendsShared {
            accounts: strings(&["eve"]),
        },
    );
    check(
        mallory,
        PeerEvent::ReadReceipt {
            up_to_message_id: "m1".to_owned(),
        },
    );
    // Answers to requests never sent, and removals of a friendship that does not exist.
    check(
        mallory,
        PeerEvent::FriendAccepted {
            display_name: "Mallory".to_owned(),
        },
    );
    check(mallory, PeerEvent::FriendDeclined);
    check(mallory, PeerEvent::FriendRemoved);
    // Events claiming to come from the account itself.
    check("alice", message("m2", "me", 1_500));
    check(
        "alice",
        PeerEvent::FriendRequest {
            display_name: "Alice".to_owned(),
            note: String::new(),
        },
    );
}

#[test]
fn events_from_friends_reach_client_sessions() {
    let mut state = with_friends("alice", &["bob"]);
    open(&mut state, "a-client", "na", SessionMode::Client, 1_000);
    open(&mut state, "a-widget", "nw", SessionMode::Widget, 1_000);
    state.set_widget("a-widget", strings(&["bob"])).unwrap();

    #[track_caller]
    fn check(state: &mut UserState, event: PeerEvent, expected: SessionPush) {
        let effects = state.on_peer_event("bob", event, 2_000);
        assert_eq!(effects, vec![push("na", "a-client", expected)]);
    }
    check(
        &mut state,
        PeerEvent::CallSignal {
            call_id: "c1".to_owned(),
            kind: "voice".to_owned(),
            signal: vec![7],
        },
        SessionPush::CallSignal {
            from: "bob".to_owned(),
            call_id: "c1".to_owned(),
            kind: "voice".to_owned(),
            signal: vec![7],
        },
    );
    check(
        &mut state,
        PeerEvent::ReadReceipt {
            up_to_message_id: "m9".to_owned(),
        },
        SessionPush::Receipt {
            by: "bob".to_owned(),
            up_to_message_id: "m9".to_owned(),
        },
    );
    check(
        &mut state,
        PeerEvent::FriendsShared {
            accounts: strings(&["carol"]),
        },
        SessionPush::FriendsShared {
            from: "bob".to_owned(),
            accounts: strings(&["carol"]),
        },
    );
}

#[test]
fn messages_signals_and_groups_need_friends() {
    let mut state = with_friends("alice", &["bob"]);
    assert_eq!(
        state.send_message("bob", "m1".to_owned(), "hi".to_owned(), 5),
        Ok(((), vec![send("bob", message("m1", "hi", 5))]))
    );
    assert_eq!(
        state.send_message("eve", "m1".to_owned(), "hi".to_owned(), 5),
        Err(not_friends(&["eve"]))
    );
    assert_eq!(
        state.signal("eve", "c".to_owned(), "voice".to_owned(), Vec::new()),
        Err(not_friends(&["eve"]))
    );
    assert_eq!(
        state.mark_read("eve", "m1".to_owned()),
        Err(not_friends(&["eve"]))
    );
    assert_eq!(state.require_friend("bob"), Ok(()));
    assert_eq!(
        state.set_group(
            "g".to_owned(),
            ["zed", "bob", "amy"].map(str::to_owned).into()
        ),
        Err(not_friends(&["amy", "zed"]))
    );
    assert!(state.groups.is_empty());
    state
        .set_group("g".to_owned(), BTreeSet::from(["bob".to_owned()]))
        .unwrap();
    assert_eq!(state.contacts().groups["g"].len(), 1);
    assert_eq!(
        audit_actions(&state.delete_group("g").unwrap().1),
        vec!["group.deleted"]
    );
    assert_eq!(
        state.delete_group("g"),
        Err(UserError::Invalid {
            reason: "no group \"g\"".to_owned()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// The widget (S1)
// ---------------------------------------------------------------------------------------------

#[test]
fn set_widget_refuses_non_friends_and_too_many_contacts() {
    let friends: Vec<String> = (0..=MAX_WIDGET_CONTACTS)
        .map(|index| format!("f{index:03}"))
        .collect();
    let friend_refs: Vec<&str> = friends.iter().map(String::as_str).collect();

    #[track_caller]
    fn check(friend_refs: &[&str], contacts: &[String], expected: Result<usize, UserError>) {
        let mut state = with_friends("alice", friend_refs);
        open(&mut state, "w", "n1", SessionMode::Widget, 1_000);
        let before = state.clone();
        let result = state.set_widget("w", contacts.to_vec());
        match expected {
            Ok(n_entries) => {
                let (entries, effects) = result.unwrap();
                assert_eq!(entries.len(), n_entries);
                assert_eq!(sorted_sends(&effects).len(), n_entries);
            }
            Err(error) => {
                assert_eq!(result, Err(error));
                assert_eq!(state, before);
            }
        }
    }
    check(
        &friend_refs,
        &strings(&["f001", "zed", "f002", "amy", "zed"]),
        Err(not_friends(&["amy", "zed"])),
    );
    check(
        &friend_refs,
        &strings(&["mallory"]),
        Err(not_friends(&["mallory"])),
    );
    check(
        &friend_refs,
        &friends,
        Err(UserError::TooMany {
            what: "widget contacts".to_owned(),
            limit: MAX_WIDGET_CONTACTS,
        }),
    );
    check(
        &friend_refs,
        &friends[..MAX_WIDGET_CONTACTS],
        Ok(MAX_WIDGET_CONTACTS),
    );
    check(&friend_refs, &[], Ok(0));
}

#[test]
fn changing_the_widget_watches_added_and_unwatches_removed_contacts() {
    let mut state = with_friends("alice", &["bob", "carol", "dave"]);
    open(&mut state, "w", "n1", SessionMode::Widget, 1_000);

    #[track_caller]
    fn check(state: &mut UserState, contacts: &[&str], expected: &[(&str, PeerEvent)]) {
        let (entries, effects) = state.set_widget("w", strings(contacts)).unwrap();
        assert_eq!(
            sorted_sends(&effects),
            sorted_pairs(expected),
            "{contacts:?}"
        );
        assert_eq!(audit_actions(&effects), vec!["widget.selected"]);
        let mut deduped: Vec<&str> = Vec::new();
        for contact in contacts {
            if !deduped.contains(contact) {
                deduped.push(*contact);
            }
        }
        assert_eq!(state.sessions["w"].widget, strings(&deduped));
        let entry_accounts: Vec<&str> =
            entries.iter().map(|entry| entry.account.as_str()).collect();
        assert_eq!(entry_accounts, deduped);
    }
    check(
        &mut state,
        &["bob", "carol"],
        &[("bob", watch("w", "n1")), ("carol", watch("w", "n1"))],
    );
    check(
        &mut state,
        &["carol", "dave"],
        &[("bob", unwatch("w")), ("dave", watch("w", "n1"))],
    );
    // Reordering and duplicates change nothing for the contacts.
    check(&mut state, &["dave", "dave", "carol"], &[]);
    check(
        &mut state,
        &[],
        &[("carol", unwatch("w")), ("dave", unwatch("w"))],
    );
}

#[test]
fn a_watch_from_a_friend_registers_and_pushes_presence_to_that_session_only() {
    let mut state = with_friends("alice", &["bob", "carol"]);
    open(&mut state, "a1", "na", SessionMode::Client, 1_000);
    state.on_peer_event("carol", watch("c1", "nc"), 1_100);

    let effects = state.on_peer_event("bob", watch("b-widget", "nb"), 2_000);
    assert_eq!(
        effects,
        vec![push(
            "nb",
            "b-widget",
            presence("alice", Status::Online, 1_000)
        )]
    );
    assert_eq!(
        state.watchers.get("b-widget"),
        Some(&Watcher {
            account: "bob".to_owned(),
            node_id: "nb".to_owned(),
        })
    );
    assert_eq!(state.watchers.len(), 2);

    // Unwatch and drop_watcher stop the pushes.
    assert_eq!(
        state.on_peer_event("bob", unwatch("b-widget"), 2_100),
        Vec::new()
    );
    state.drop_watcher("c1").unwrap();
    assert!(state.watchers.is_empty());
    let ((), effects) = state.set_status("a1", Status::Busy, 2_200).unwrap();
    assert_eq!(effects, Vec::new());
}

#[test]
fn messages_push_hints_to_selecting_widgets_and_messages_to_clients() {
    let mut state = with_friends("alice", &["bob", "carol", "dave"]);
    open(&mut state, "client", "n1", SessionMode::Client, 1_000);
    open(&mut state, "widget-bob", "n2", SessionMode::Widget, 1_000);
    open(&mut state, "widget-carol", "n3", SessionMode::Widget, 1_000);
    state
        .set_widget("widget-bob", strings(&["bob", "carol"]))
        .unwrap();
    state
        .set_widget("widget-carol", strings(&["carol"]))
        .unwrap();

    let hint = |n_unread: u32, preview: &str, message_id: &str, at: u64| UnreadHint {
        n_unread,
        preview: preview.to_owned(),
        last_message_id: message_id.to_owned(),
        last_at_unix_ms: at,
    };
    let message_push = |message_id: &str, from: &str, text: &str, at: u64| SessionPush::Message {
        message_id: message_id.to_owned(),
        from: from.to_owned(),
        text: text.to_owned(),
        sent_at_unix_ms: at,
    };

    let effects = state.on_peer_event("bob", message("m1", "hello", 1_500), 2_000);
    assert_eq!(
        effects,
        vec![
            push(
                "n2",
                "widget-bob",
                SessionPush::Hint {
                    from: "bob".to_owned(),
                    hint: hint(1, "hello", "m1", 1_500),
                }
            ),
            push("n1", "client", message_push("m1", "bob", "hello", 1_500)),
        ]
    );

    // The preview keeps the first PREVIEW_CHARS characters (not bytes).
    let long_text: String = "é".repeat(PREVIEW_CHARS + 10);
    let effects = state.on_peer_event("bob", message("m2", &long_text, 1_600), 2_100);
    let expected_hint = hint(2, &"é".repeat(PREVIEW_CHARS), "m2", 1_600);
    assert_eq!(
        pushes_in(&effects),
        vec![
            (
                "widget-bob".to_owned(),
                SessionPush::Hint {
                    from: "bob".to_owned(),
                    hint: expected_hint.clone(),
                }
            ),
            (
                "client".to_owned(),
                message_push("m2", "bob", &long_text, 1_600)
            ),
        ]
    );
    assert_eq!(state.unread.get("bob"), Some(&expected_hint));

    // A friend no widget selected: only the client hears of it.
    let effects = state.on_peer_event("dave", message("m3", "yo", 1_700), 2_200);
    assert_eq!(
        effects,
        vec![push(
            "n1",
            "client",
            message_push("m3", "dave", "yo", 1_700)
        )]
    );
    assert_eq!(state.unread["dave"].n_unread, 1);

    // A friend selected by both widgets.
    let effects = state.on_peer_event("carol", message("m4", "hey", 1_800), 2_300);
    let sessions: Vec<String> = pushes_in(&effects)
        .into_iter()
        .map(|(session_id, _)| session_id)
        .collect();
    assert_eq!(sessions, strings(&["widget-bob", "widget-carol", "client"]));

    // A snapshot carries the hints.
    let (snapshot, _) = state.resume("widget-bob", "n2", 2_400).unwrap();
    assert_eq!(
        snapshot.widget,
        vec![
            WidgetEntry {
                account: "bob".to_owned(),
                display_name: display_name_of("bob"),
                hint_opt: Some(expected_hint.clone()),
            },
            WidgetEntry {
                account: "carol".to_owned(),
                display_name: display_name_of("carol"),
                hint_opt: Some(hint(1, "hey", "m4", 1_800)),
            },
        ]
    );
    assert_eq!(snapshot.unread.len(), 3);

    // Reading clears the hint everywhere it shows and tells the sender.
    let ((), effects) = state.mark_read("bob", "m2".to_owned()).unwrap();
    let cleared = SessionPush::Hint {
        from: "bob".to_owned(),
        hint: UnreadHint {
            n_unread: 0,
            ..expected_hint
        },
    };
    assert_eq!(
        effects,
        vec![
            push("n1", "client", cleared.clone()),
            push("n2", "widget-bob", cleared),
            send(
                "bob",
                PeerEvent::ReadReceipt {
                    up_to_message_id: "m2".to_owned()
                }
            ),
        ]
    );
    assert!(!state.unread.contains_key("bob"));
    // Nothing unread any more: only the receipt.
    let ((), effects) = state.mark_read("bob", "m2".to_owned()).unwrap();
    assert_eq!(
        effects,
        vec![send(
            "bob",
            PeerEvent::ReadReceipt {
                up_to_message_id: "m2".to_owned()
            }
        )]
    );
}

#[test]
fn widget_sessions_see_presence_of_their_contacts_through_the_mesh() {
    let mut mesh = Mesh::new(&["alice", "bob"]);
    mesh.befriend("alice", "bob", 1_000);
    open(mesh.user_mut("bob"), "b1", "nb", SessionMode::Client, 1_100);
    open(
        mesh.user_mut("alice"),
        "w",
        "na",
        SessionMode::Widget,
        1_200,
    );
    let (_, log) = mesh.act("alice", 1_300, |state| {
        state.set_widget("w", strings(&["bob"]))
    });
    assert_eq!(
        pushes_by(&log, "bob"),
        vec![("w".to_owned(), presence("bob", Status::Online, 1_100))]
    );
    let (_, log) = mesh.act("bob", 1_400, |state| {
        state.set_status("b1", Status::Away, 1_400)
    });
    assert_eq!(
        log,
        vec![(
            "bob".to_owned(),
            push("na", "w", presence("bob", Status::Away, 1_400))
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Friend sharing (S3)
// ---------------------------------------------------------------------------------------------

#[test]
fn share_friends_sends_the_union_or_names_every_offender() {
    let mut state = with_friends("alice", &["bob", "carol", "dave", "erin"]);
    state
        .set_group(
            "work".to_owned(),
            ["carol", "dave"].map(str::to_owned).into(),
        )
        .unwrap();
    state
        .set_group("home".to_owned(), ["bob", "erin"].map(str::to_owned).into())
        .unwrap();

    #[track_caller]
    fn check(
        state: &UserState,
        to: &str,
        friends: &[&str],
        groups: &[&str],
        max_suggestions: usize,
        expected: Result<&[&str], UserError>,
    ) {
        let result = state.share_friends(to, &strings(friends), &strings(groups), max_suggestions);
        let expected = expected.map(|accounts| {
            let accounts = strings(accounts);
            let effects = vec![
                send(
                    to,
                    PeerEvent::FriendsShared {
                        accounts: accounts.clone(),
                    },
                ),
                UserEffect::Audit {
                    action: "friends.shared",
                    detail: format!("to={to} n_accounts={}", accounts.len()),
                },
            ];
            (accounts, effects)
        });
        assert_eq!(
            result, expected,
            "to {to} friends {friends:?} groups {groups:?}"
        );
    }
    check(&state, "bob", &["carol"], &[], 10, Ok(&["carol"]));
    check(
        &state,
        "bob",
        &["erin", "carol", "erin"],
        &["work"],
        10,
        Ok(&["carol", "dave", "erin"]),
    );
    // The target is never suggested to itself, even through a group.
    check(
        &state,
        "bob",
        &["bob", "carol"],
        &["home"],
        10,
        Ok(&["carol", "erin"]),
    );
    check(
        &state,
        "bob",
        &[],
        &["work", "home"],
        3,
        Ok(&["carol", "dave", "erin"]),
    );
    check(
        &state,
        "bob",
        &["zed", "carol", "amy", "zed"],
        &[],
        10,
        Err(not_friends(&["amy", "zed"])),
    );
    check(
        &state,
        "mallory",
        &["carol"],
        &[],
        10,
        Err(not_friends(&["mallory"])),
    );
    check(
        &state,
        "mallory",
        &["zed", "carol"],
        &["work", "nope"],
        10,
        Err(not_friends(&["mallory", "zed", "group:nope"])),
    );
    check(
        &state,
        "bob",
        &["carol"],
        &["nope"],
        10,
        Err(not_friends(&["group:nope"])),
    );
    check(
        &state,
        "bob",
        &["carol", "dave", "erin"],
        &[],
        2,
        Err(UserError::TooMany {
            what: "shared friends".to_owned(),
            limit: 2,
        }),
    );
    check(
        &state,
        "bob",
        &["carol", "dave"],
        &[],
        2,
        Ok(&["carol", "dave"]),
    );
    check(
        &state,
        "bob",
        &["bob"],
        &[],
        10,
        Err(UserError::Invalid {
            reason: "nothing to share".to_owned(),
        }),
    );
}

#[test]
fn request_friends_fans_out_and_skips_self_friends_and_duplicates() {
    #[track_caller]
    fn check(
        targets: &[&str],
        max_targets: usize,
        expected: Result<(&[&str], &[&str]), UserError>,
    ) {
        let mut state = with_friends("alice", &["bob"]);
        state.requests_out.insert("erin".to_owned(), 10);
        let before = state.clone();
        let result = state.request_friends(&strings(targets), "join us", max_targets, 1_000);
        match expected {
            Ok((sent, skipped)) => {
                let ((actual_sent, actual_skipped), effects) = result.unwrap();
                assert_eq!(actual_sent, strings(sent), "{targets:?}");
                assert_eq!(actual_skipped, strings(skipped), "{targets:?}");
                let expected_sends: Vec<(&str, PeerEvent)> = sent
                    .iter()
                    .map(|to| {
                        (
                            *to,
                            PeerEvent::FriendRequest {
                                display_name: display_name_of("alice"),
                                note: "join us".to_owned(),
                            },
                        )
                    })
                    .collect();
                assert_eq!(sorted_sends(&effects), sorted_pairs(&expected_sends));
                for to in sent {
                    assert_eq!(state.requests_out.get(*to), Some(&1_000), "{to}");
                }
                assert_eq!(state.friends, before.friends);
            }
            Err(error) => {
                assert_eq!(result, Err(error));
                assert_eq!(state, before);
            }
        }
    }
    check(&["carol", "dave"], 5, Ok((&["carol", "dave"], &[])));
    check(
        &["carol", "alice", "bob", "carol", "dave", "bob", "alice"],
        7,
        Ok((&["carol", "dave"], &["alice", "bob"])),
    );
    // A pending request is sent again.
    check(&["erin"], 1, Ok((&["erin"], &[])));
    check(&[], 0, Ok((&[], &[])));
    check(
        &["carol", "dave", "erin"],
        2,
        Err(UserError::TooMany {
            what: "friend requests in one go".to_owned(),
            limit: 2,
        }),
    );
}

#[test]
fn shared_friends_become_requests_through_the_mesh() {
    let mut mesh = Mesh::new(&["alice", "bob", "carol", "dave"]);
    mesh.befriend("alice", "bob", 1_000);
    mesh.befriend("alice", "carol", 1_000);
    mesh.befriend("alice", "dave", 1_000);
    open(mesh.user_mut("bob"), "b1", "nb", SessionMode::Client, 1_100);

    let (accounts, log) = mesh.act("alice", 2_000, |state| {
        state.share_friends("bob", &strings(&["carol", "dave"]), &[], 10)
    });
    assert_eq!(
        pushes_by(&log, "bob"),
        vec![(
            "b1".to_owned(),
            SessionPush::FriendsShared {
                from: "alice".to_owned(),
                accounts: accounts.clone(),
            }
        )]
    );
    let ((sent, skipped), _) = mesh.act("bob", 3_000, |state| {
        state.request_friends(&accounts, "alice says hi", 10, 3_000)
    });
    assert_eq!(sent, strings(&["carol", "dave"]));
    assert!(skipped.is_empty());
    for account in ["carol", "dave"] {
        assert_eq!(
            mesh.user(account).requests_in["bob"].note,
            "alice says hi",
            "{account}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rehoming
// ---------------------------------------------------------------------------------------------

#[test]
fn resuming_on_another_node_rewatches_every_widget_contact() {
    let mut mesh = Mesh::new(&["alice", "bob", "carol"]);
    mesh.befriend("alice", "bob", 1_000);
    mesh.befriend("alice", "carol", 1_000);
    open(mesh.user_mut("bob"), "b1", "nb", SessionMode::Client, 1_100);
    open(
        mesh.user_mut("alice"),
        "client",
        "n1",
        SessionMode::Client,
        1_200,
    );
    open(
        mesh.user_mut("alice"),
        "w",
        "n1",
        SessionMode::Widget,
        1_200,
    );
    mesh.act("alice", 1_300, |state| {
        state.set_widget("w", strings(&["bob", "carol"]))
    });

    #[track_caller]
    fn check(
        state: &mut UserState,
        session_id: &str,
        node_id: &str,
        expected: &[(&str, PeerEvent)],
    ) {
        let (snapshot, effects) = state.resume(session_id, node_id, 2_000).unwrap();
        assert!(snapshot.reused);
        assert_eq!(snapshot.session_id, session_id);
        assert_eq!(
            sorted_sends(&effects),
            sorted_pairs(expected),
            "{session_id} -> {node_id}"
        );
        assert_eq!(state.sessions[session_id].node_id, node_id);
        assert!(state.sessions[session_id].connected);
    }
    let alice = mesh.user_mut("alice");
    check(
        alice,
        "w",
        "n2",
        &[("bob", watch("w", "n2")), ("carol", watch("w", "n2"))],
    );
    check(alice, "w", "n2", &[]);
    check(alice, "client", "n3", &[]);

    // Opening the same device's session from another node rehomes it too.
    let (_, effects) = alice
        .open_session(
            opening(
                "ignored",
                "device-w",
                "n4",
                SessionMode::Widget,
                key("k2", FAR_FUTURE_MS),
            ),
            2_500,
        )
        .unwrap();
    assert_eq!(
        sorted_sends(&effects),
        sorted_pairs(&[("bob", watch("w", "n4")), ("carol", watch("w", "n4"))])
    );
    mesh.deliver("alice", effects, 2_500);
    assert_eq!(mesh.user("bob").watchers["w"].node_id, "n4");
    assert_eq!(mesh.user("carol").watchers["w"].node_id, "n4");

    // Bob's next change reaches the widget on its new node.
    let (_, log) = mesh.act("bob", 3_000, |state| {
        state.set_status("b1", Status::Busy, 3_000)
    });
    assert_eq!(
        log,
        vec![(
            "bob".to_owned(),
            push("n4", "w", presence("bob", Status::Busy, 3_000))
        )]
    );
}

#[test]
fn pending_requests_are_capped_both_ways() {
    let mut asker = registered("asker");
    for index in 0..MAX_PENDING_REQUESTS {
        asker
            .request_friend(&format!("target{index}"), String::new(), 1_000)
            .unwrap();
    }
    // Asking again someone already asked is fine; a new one is over the cap.
    asker
        .request_friend("target0", String::new(), 1_001)
        .unwrap();
    let refused = asker.request_friend("one-more", String::new(), 1_002);
    assert!(
        matches!(refused, Err(UserError::TooMany { limit, .. }) if limit == MAX_PENDING_REQUESTS),
        "{refused:?}"
    );
    assert_eq!(asker.requests_out.len(), MAX_PENDING_REQUESTS);

    let mut popular = registered("popular");
    for index in 0..=MAX_PENDING_REQUESTS {
        let request = PeerEvent::FriendRequest {
            display_name: format!("stranger {index}"),
            note: String::new(),
        };
        popular.on_peer_event(&format!("stranger{index}"), request, 1_000);
    }
    assert_eq!(popular.requests_in.len(), MAX_PENDING_REQUESTS);
    assert!(
        !popular
            .requests_in
            .contains_key(&format!("stranger{MAX_PENDING_REQUESTS}"))
    );
}

// ---------------------------------------------------------------------------------------------
// Partner-site accounts (S2)
// ---------------------------------------------------------------------------------------------

fn forum_link(username: &str) -> PartnerLink {
    PartnerLink {
        site_id: "forum".to_owned(),
        username: username.to_owned(),
    }
}

fn partner_opening(session_id: &str) -> SessionOpening {
    opening(
        session_id,
        session_id,
        "node-a",
        SessionMode::Client,
        key(&format!("key-{session_id}"), FAR_FUTURE_MS),
    )
}

/// Opens a session for forum user `username` on account `forum~Bob`.
fn open_as_forum_user(
    state: &mut UserState,
    username: &str,
    session_id: &str,
    now_unix_ms: u64,
) -> UserResult<(SessionSnapshot, bool)> {
    state.open_partner_session(
        "forum~Bob".to_owned(),
        forum_link(username),
        username.to_owned(),
        partner_opening(session_id),
        now_unix_ms,
    )
}

#[test]
fn a_partner_login_creates_the_linked_account_once_and_reuses_it() {
    let mut state = UserState::default();
    let ((snapshot, created), effects) = open_as_forum_user(&mut state, "Bob", "s1", 10).unwrap();
    assert!(created);
    assert_eq!(snapshot.account, "forum~Bob");
    assert!(effects.iter().any(|effect| matches!(
        effect,
        UserEffect::Audit { action: "account.linked", detail } if detail == "site=forum username=Bob"
    )));
    // A linked account has no password here: native login finds nothing to verify.
    assert_eq!(state.credential(LIMIT, 11), Err(UserError::NoSuchAccount));

    let ((snapshot, created), effects) = state
        .open_partner_session(
            "forum~Bob".to_owned(),
            forum_link("Bob"),
            "Bob B.".to_owned(),
            partner_opening("s2"),
            20,
        )
        .unwrap();
    assert!(!created);
    assert_eq!(snapshot.display_name, "Bob B.");
    assert!(!effects.iter().any(|effect| matches!(
        effect,
        UserEffect::Audit {
            action: "account.linked",
            ..
        }
    )));
    assert_eq!(state.sessions.len(), 2);
    assert_eq!(
        state.profile(),
        Ok(Profile {
            display_name: "Bob B.".to_owned(),
            partner_link_opt: Some(forum_link("Bob")),
        })
    );
}

#[test]
fn a_partner_login_never_takes_over_another_account() {
    let mut native = registered("bob");
    let before = native.clone();
    assert!(matches!(
        native.open_partner_session(
            "bob".to_owned(),
            forum_link("bob"),
            "Bob".to_owned(),
            partner_opening("s1"),
            10,
        ),
        Err(UserError::Invalid { .. })
    ));
    assert_eq!(native, before);
    let mut linked = UserState::default();
    open_as_forum_user(&mut linked, "Bob", "s1", 10).unwrap();
    assert!(matches!(
        open_as_forum_user(&mut linked, "Alice", "s2", 11),
        Err(UserError::Invalid { .. })
    ));
    assert_eq!(
        UserState::default().profile(),
        Err(UserError::NoSuchAccount)
    );
}

// ---------------------------------------------------------------------------------------------
// Campaigns: rewards, issued units, usage and enrolments (S0 steps 8, 11, 12 and 13)
// ---------------------------------------------------------------------------------------------

fn reward(campaign_id: &str, rank: u32) -> Reward {
    Reward {
        campaign_id: campaign_id.to_owned(),
        campaign_title: format!("{campaign_id} title"),
        rank,
        score: 90,
        text: "a free hour".to_owned(),
        granted_at_unix_ms: 500,
    }
}

/// Alice with a connected client session `c1`, a disconnected client session `c2` and a
/// widget session `w1`: campaign news goes to `c1` only.
fn alice_with_three_sessions() -> UserState {
    let mut state = registered("alice");
    open(&mut state, "c1", "n1", SessionMode::Client, 10);
    open(&mut state, "c2", "n2", SessionMode::Client, 11);
    open(&mut state, "w1", "n1", SessionMode::Widget, 12);
    state.disconnected("c2", 13).unwrap();
    state
}

fn units_issued_push(campaign_id: &str, gateway_id: &str, units: u64) -> SessionPush {
    SessionPush::UnitsIssued {
        campaign_id: campaign_id.to_owned(),
        gateway_id: gateway_id.to_owned(),
        units,
    }
}

fn issued(gateway_id: &str, transfer_id: u64, units: u64, used_units: u64) -> IssuedUnits {
    IssuedUnits {
        gateway_id: gateway_id.to_owned(),
        transfer_id,
        units,
        used_units,
        issued_at_unix_ms: 100,
    }
}

fn holding_of<'a>(state: &'a UserState, campaign_id: &str) -> Option<&'a CampaignHolding> {
    state
        .campaign_holdings
        .iter()
        .find(|holding| holding.campaign_id == campaign_id)
}

#[test]
fn a_reward_is_kept_once_and_pushed_to_connected_client_sessions() {
    let mut state = alice_with_three_sessions();
    let (changed, effects) = state.grant_reward(reward("c-1", 2)).unwrap();
    assert!(changed);
    assert_eq!(
        without_audits(&effects),
        vec![push(
            "n1",
            "c1",
            SessionPush::CampaignReward(reward("c-1", 2))
        )]
    );
    assert!(effects.contains(&UserEffect::Audit {
        action: "campaign.reward",
        detail: "campaign=c-1 rank=2".to_owned(),
    }));
    assert_eq!(state.rewards, vec![reward("c-1", 2)]);

    // A redelivery, or another grant of the same campaign, changes nothing.
    let before = state.clone();
    assert_eq!(
        state.grant_reward(reward("c-1", 2)),
        Ok((false, Vec::new()))
    );
    assert_eq!(
        state.grant_reward(reward("c-1", 1)),
        Ok((false, Vec::new()))
    );
    assert_eq!(state, before);

    let (changed, _) = state.grant_reward(reward("c-2", 1)).unwrap();
    assert!(changed);
    assert_eq!(state.rewards, vec![reward("c-1", 2), reward("c-2", 1)]);
}

#[test]
fn campaign_messages_to_an_account_that_does_not_exist_change_nothing() {
    let mut state = UserState::default();
    assert_eq!(
        state.grant_reward(reward("c-1", 1)),
        Err(UserError::NoSuchAccount)
    );
    assert_eq!(
        state.units_issued("c-1", "g-1", 7, 30, 100),
        Err(UserError::NoSuchAccount)
    );
    assert_eq!(state.units_used("c-1", 5), Err(UserError::NoSuchAccount));
    assert_eq!(
        state.enrol_campaign("c-1", "g-1", 100),
        Err(UserError::NoSuchAccount)
    );
    assert_eq!(state, UserState::default());
}

#[test]
fn issued_units_are_kept_pushed_and_a_redelivery_changes_nothing() {
    let mut state = alice_with_three_sessions();
    let (changed, effects) = state.units_issued("c-1", "g-1", 7, 30, 100).unwrap();
    assert!(changed);
    assert_eq!(
        without_audits(&effects),
        vec![push("n1", "c1", units_issued_push("c-1", "g-1", 30))]
    );
    assert_eq!(audit_actions(&effects), vec!["campaign.units_issued"]);
    assert_eq!(
        holding_of(&state, "c-1"),
        Some(&CampaignHolding {
            campaign_id: "c-1".to_owned(),
            enrolled_via_opt: None,
            enrolled_at_unix_ms_opt: None,
            issued_opt: Some(issued("g-1", 7, 30, 0)),
        })
    );

    let before = state.clone();
    assert_eq!(
        state.units_issued("c-1", "g-1", 7, 30, 200),
        Ok((false, Vec::new()))
    );
    assert_eq!(state, before);
}

#[test]
fn another_transfer_for_the_same_campaign_keeps_the_first_and_is_audited() {
    fn check(gateway_id: &str, transfer_id: u64) {
        let mut state = registered("alice");
        state.units_issued("c-1", "g-1", 7, 30, 100).unwrap();
        let before = state.clone();
        let (changed, effects) = state
            .units_issued("c-1", gateway_id, transfer_id, 50, 200)
            .unwrap();
        assert!(!changed, "{gateway_id} {transfer_id}");
        assert_eq!(state, before, "{gateway_id} {transfer_id}");
        let [UserEffect::Audit { action, detail }] = effects.as_slice() else {
            panic!("one audit note: {effects:?}");
        };
        assert_eq!(*action, "campaign.units_conflict");
        assert_eq!(
            detail,
            &format!(
                "campaign=c-1 kept_gateway=g-1 kept_transfer=7 kept_units=30 \
                 other_gateway={gateway_id} other_transfer={transfer_id} other_units=50"
            )
        );
    }
    check("g-1", 8);
    check("g-2", 7);
    check("g-2", 9);
}

#[test]
fn usage_only_grows_and_never_exceeds_the_units_issued() {
    /// Reports `used_total` on a holding of 30 units of which `used_before` were used.
    fn check(used_before: u64, used_total: u64, expected_used: u64) {
        let mut state = registered("alice");
        state.units_issued("c-1", "g-1", 7, 30, 100).unwrap();
        if used_before > 0 {
            state.units_used("c-1", used_before).unwrap();
        }
        let (changed, effects) = state.units_used("c-1", used_total).unwrap();
        let used = holding_of(&state, "c-1")
            .and_then(|holding| holding.issued_opt.as_ref())
            .map(|issued| issued.used_units);
        assert_eq!(used, Some(expected_used), "{used_before} then {used_total}");
        assert_eq!(changed, expected_used != used_before);
        assert!(effects.is_empty(), "usage pushes nothing: {effects:?}");
    }
    check(0, 10, 10);
    check(10, 10, 10); // a redelivery
    check(10, 4, 10); // a late, lower report
    check(10, 25, 25);
    check(10, 45, 30); // more than issued counts as all of it
    check(30, 45, 30);
    check(0, 0, 0);
}

#[test]
fn usage_of_a_campaign_without_issued_units_is_ignored() {
    let mut state = registered("alice");
    assert_eq!(state.units_used("c-1", 5), Ok((false, Vec::new())));
    state.enrol_campaign("c-1", "g-1", 100).unwrap();
    let before = state.clone();
    assert_eq!(state.units_used("c-1", 5), Ok((false, Vec::new())));
    assert_eq!(state, before);
}

#[test]
fn the_first_enrolment_is_kept_and_repeats_answer_it() {
    let mut state = registered("alice");
    let ((holding, changed), effects) = state.enrol_campaign("c-1", "g-1", 100).unwrap();
    let enrolled = CampaignHolding {
        campaign_id: "c-1".to_owned(),
        enrolled_via_opt: Some("g-1".to_owned()),
        enrolled_at_unix_ms_opt: Some(100),
        issued_opt: None,
    };
    assert!(changed);
    assert_eq!(holding, enrolled);
    assert_eq!(
        effects,
        vec![UserEffect::Audit {
            action: "campaign.enrolled",
            detail: "campaign=c-1 gateway=g-1".to_owned(),
        }]
    );

    let before = state.clone();
    for gateway_id in ["g-1", "g-2"] {
        assert_eq!(
            state.enrol_campaign("c-1", gateway_id, 200),
            Ok(((enrolled.clone(), false), Vec::new())),
            "{gateway_id}"
        );
    }
    assert_eq!(state, before);

    for (campaign_id, gateway_id) in [("", "g-1"), ("c-2", "")] {
        assert!(matches!(
            state.enrol_campaign(campaign_id, gateway_id, 300),
            Err(UserError::Invalid { .. })
        ));
    }
    assert_eq!(state, before);
}

#[test]
fn units_and_enrolment_share_one_holding_in_either_order() {
    let mut units_first = registered("alice");
    units_first.units_issued("c-1", "g-2", 7, 30, 100).unwrap();
    let ((holding, changed), _) = units_first.enrol_campaign("c-1", "g-1", 150).unwrap();
    assert!(changed);
    assert_eq!(
        holding,
        CampaignHolding {
            campaign_id: "c-1".to_owned(),
            enrolled_via_opt: Some("g-1".to_owned()),
            enrolled_at_unix_ms_opt: Some(150),
            issued_opt: Some(issued("g-2", 7, 30, 0)),
        }
    );

    let mut enrolled_first = registered("alice");
    enrolled_first.enrol_campaign("c-1", "g-1", 150).unwrap();
    enrolled_first
        .units_issued("c-1", "g-2", 7, 30, 100)
        .unwrap();
    assert_eq!(enrolled_first.campaign_holdings, vec![holding]);
    assert_eq!(
        units_first.campaign_holdings,
        enrolled_first.campaign_holdings
    );
}

#[test]
fn holdings_are_bounded_and_the_oldest_is_forgotten() {
    let mut state = registered("alice");
    for index in 0..CAMPAIGN_HOLDINGS_KEPT {
        state
            .enrol_campaign(&format!("c-{index}"), "g-1", 100)
            .unwrap();
    }
    assert_eq!(state.campaign_holdings.len(), CAMPAIGN_HOLDINGS_KEPT);
    assert!(holding_of(&state, "c-0").is_some());

    // The 257th holding (here through issued units) forgets the oldest.
    state.units_issued("c-new", "g-1", 1, 5, 200).unwrap();
    assert_eq!(state.campaign_holdings.len(), CAMPAIGN_HOLDINGS_KEPT);
    assert!(holding_of(&state, "c-0").is_none());
    assert_eq!(
        state
            .campaign_holdings
            .first()
            .map(|holding| holding.campaign_id.as_str()),
        Some("c-1")
    );
    assert_eq!(
        state
            .campaign_holdings
            .last()
            .map(|holding| holding.campaign_id.as_str()),
        Some("c-new")
    );

    // Updating a kept holding forgets nothing.
    state.units_issued("c-1", "g-1", 2, 5, 300).unwrap();
    assert_eq!(state.campaign_holdings.len(), CAMPAIGN_HOLDINGS_KEPT);
    assert!(holding_of(&state, "c-2").is_some());
}

#[test]
fn campaigns_lists_holdings_and_rewards_oldest_first() {
    let mut state = registered("alice");
    assert_eq!(state.campaigns(), (Vec::new(), Vec::new()));
    state.enrol_campaign("c-1", "g-1", 100).unwrap();
    state.units_issued("c-2", "g-1", 3, 10, 110).unwrap();
    state.grant_reward(reward("c-1", 1)).unwrap();
    let (holdings, rewards) = state.campaigns();
    let campaign_ids: Vec<&str> = holdings
        .iter()
        .map(|holding| holding.campaign_id.as_str())
        .collect();
    assert_eq!(campaign_ids, vec!["c-1", "c-2"]);
    assert_eq!(rewards, vec![reward("c-1", 1)]);
}

#[test]
fn a_state_saved_before_campaigns_still_loads() {
    let mut state = registered("alice");
    state.grant_reward(reward("c-1", 1)).unwrap();
    state.enrol_campaign("c-1", "g-1", 100).unwrap();
    let mut json = serde_json::to_value(&state).unwrap();
    let fields = json.as_object_mut().unwrap();
    fields.remove("rewards");
    fields.remove("campaign_holdings");
    let loaded: UserState = serde_json::from_value(json).unwrap();
    assert!(loaded.rewards.is_empty() && loaded.campaign_holdings.is_empty());
    assert_eq!(loaded.account_opt, state.account_opt);
}
