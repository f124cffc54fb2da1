//! The IM protocol end to end: real `lanmesh-node` processes, real WebSockets
//! ([`ImClient`]), the real broker. Widgets see only their contacts, every auth refusal,
//! malformed frames, sharing friends, presence and messages across nodes, and sessions that
//! are reused and resumed.
//!
//! Each test starts its own cluster of one or two nodes (cheap argon2 parameters, and the
//! limits it exercises set low through `LANMESH__…` variables). One connection often carries
//! several accounts' sessions: each request's key selects the account, and the pushes of every
//! session attached to a connection arrive on it. Asynchronous effects (friend requests and
//! acceptances travel entity to entity) are awaited as pushes or by polling with a deadline;
//! the only fixed waits are the quiet periods that show that no more frames come.

use lanmesh::edge::protocol::{
    ContactsReply, ConversationKind, ConversationOpenRequest, ErrorBody, ErrorCode,
    FriendAcceptedPush, FriendAnswerRequest, FriendRequestRequest, FriendsAddManyReply,
    FriendsAddManyRequest, FriendsShareReply, FriendsShareRequest, FriendsSharedPush,
    GroupSetRequest, HelloRequest, KeyReply, LoginRequest, MessageHistoryReply,
    MessageHistoryRequest, MessageReadRequest, MessageSendReply, MessageSendRequest, Mode,
    PresencePush, PresenceSetRequest, ReceiptPush, RegisterReply, RegisterRequest, RevokeRequest,
    SessionEndedPush, SessionReply, WidgetReply, WidgetSetRequest, WireHint, WireMessage,
    WireRequest, WireStatus,
};
use lanmesh::load::http_client::http_get;
use lanmesh::load::ws_client::{ConnectOptions, Empty, ImClient, Push};
use lanmesh_tests::TestCluster;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// Every account's password.
const PASSWORD: &str = "correct horse battery";
/// How long a fresh cluster may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an asynchronous effect (a push, a friendship) may take to show.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence that counts as "no more frames are coming".
const QUIET: Duration = Duration::from_secs(2);
/// Longest a quiet-period count may take in all.
const QUIET_MAX_WAIT: Duration = Duration::from_secs(30);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Cheap password hashing, so tests register hundreds of accounts quickly.
const FAST_PASSWORDS: [(&str, &str); 2] = [
    ("LANMESH__AUTH__ARGON2_MEMORY_KIB", "64"),
    ("LANMESH__AUTH__ARGON2_ITERATIONS", "1"),
];

/// One logged-in session.
#[derive(Debug, Clone)]
struct Session {
    account: String,
    session: String,
    key: String,
}

impl Session {
    fn key(&self) -> Option<&str> {
        Some(self.key.as_str())
    }
}

/// Closes every connection, then stops the cluster (a node still serving WebSockets waits
/// for them for its whole HTTP shutdown timeout).
pub(crate) async fn finish(cluster: TestCluster, clients: Vec<ImClient>) {
    for client in clients {
        client.close().await.expect("closes");
    }
    cluster.shutdown().await.expect("nodes stop cleanly");
}

/// Starts a settled cluster of `n_nodes` with cheap passwords and `settings` as
/// `LANMESH__…` variables; `None` (after printing why) when no broker is configured.
pub(crate) async fn start_cluster(
    test_name: &str,
    n_nodes: usize,
    settings: &[(&str, &str)],
) -> Option<TestCluster> {
    let url = lanmesh_tests::broker_url_or_skip(test_name)?;
    let mut spec = TestCluster::default_spec();
    spec.extra_env = FAST_PASSWORDS
        .iter()
        .chain(settings)
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let mut cluster = TestCluster::start(&url, test_name, spec, n_nodes)
        .await
        .expect("cluster starts");
    cluster
        .wait_settled(SETTLE_TIMEOUT)
        .await
        .expect("cluster settles");
    Some(cluster)
}

pub(crate) fn address(cluster: &TestCluster, index: usize) -> String {
    cluster
        .node(index)
        .expect("node exists")
        .http_address
        .clone()
}

pub(crate) async fn connect(address: &str) -> ImClient {
    ImClient::connect(address)
        .await
        .expect("connects and says hello")
}

fn register_request(username: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        display_name: format!("User {username}"),
    }
}

fn login_request(username: &str, device: &str, mode: Mode) -> LoginRequest {
    LoginRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        device: device.to_owned(),
        mode,
    }
}

fn session_of(reply: SessionReply) -> Session {
    Session {
        account: reply.account,
        session: reply.session,
        key: reply.key.expect("a login returns a key"),
    }
}

async fn register(client: &mut ImClient, username: &str) {
    let reply: RegisterReply = client
        .request_ok("account.register", None, &register_request(username))
        .await
        .expect("registers");
    assert_eq!(reply.account, username);
}

async fn login(client: &mut ImClient, username: &str, device: &str, mode: Mode) -> Session {
    let reply: SessionReply = client
        .request_ok(
            "session.login",
            None,
            &login_request(username, device, mode),
        )
        .await
        .expect("logs in");
    assert_eq!(reply.account, username);
    session_of(reply)
}

/// Registers `username` and logs it in as a client on device `phone`.
async fn sign_up(client: &mut ImClient, username: &str) -> Session {
    register(client, username).await;
    login(client, username, "phone", Mode::Client).await
}

/// Registers and logs in every one of `usernames` (client mode), pipelined on one connection.
async fn sign_up_all(client: &mut ImClient, usernames: &[String]) -> Vec<Session> {
    let registered: Vec<Result<RegisterReply, ErrorBody>> = client
        .request_many(
            "account.register",
            usernames
                .iter()
                .map(|username| (None::<&str>, register_request(username))),
        )
        .await
        .expect("register replies");
    for (username, reply) in usernames.iter().zip(registered) {
        assert_eq!(reply.expect("registers").account, *username);
    }
    let logged_in: Vec<Result<SessionReply, ErrorBody>> = client
        .request_many(
            "session.login",
            usernames
                .iter()
                .map(|username| (None::<&str>, login_request(username, "phone", Mode::Client))),
        )
        .await
        .expect("login replies");
    logged_in
        .into_iter()
        .map(|reply| session_of(reply.expect("logs in")))
        .collect()
}

async fn contacts(client: &mut ImClient, session: &Session) -> ContactsReply {
    client
        .request_ok("contacts.list", session.key(), &Empty {})
        .await
        .expect("contacts.list")
}

/// Polls `session`'s contact list until `condition` holds.
async fn wait_contacts(
    client: &mut ImClient,
    session: &Session,
    what: &str,
    condition: impl Fn(&ContactsReply) -> bool,
) -> ContactsReply {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let list = contacts(client, session).await;
        if condition(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {EVENT_TIMEOUT:?}; {}'s contacts: {} friends, requests in {:?}, out {:?}",
            session.account,
            list.friends.len(),
            list.requests_in
                .iter()
                .map(|request| &request.from)
                .collect::<Vec<_>>(),
            list.requests_out
                .iter()
                .map(|request| &request.to)
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn has_friend(list: &ContactsReply, account: &str) -> bool {
    list.friends.iter().any(|friend| friend.account == account)
}

/// Makes `requester` and `addressee` friends (any connection can carry both keys) and waits
/// until both contact lists show it. Their sessions' pushes are left queued.
async fn befriend(client: &mut ImClient, requester: &Session, addressee: &Session) {
    let request = FriendRequestRequest {
        to: addressee.account.clone(),
        note: "hi".to_owned(),
    };
    let _: Empty = client
        .request_ok("friend.request", requester.key(), &request)
        .await
        .expect("friend.request");
    wait_contacts(client, addressee, "the request arrives", |list| {
        list.requests_in
            .iter()
            .any(|request| request.from == requester.account)
    })
    .await;
    answer(client, addressee, &requester.account, true).await;
    wait_contacts(client, requester, "the acceptance arrives", |list| {
        has_friend(list, &addressee.account)
    })
    .await;
}

async fn answer(client: &mut ImClient, session: &Session, from: &str, accept: bool) {
    let request = FriendAnswerRequest {
        from: from.to_owned(),
        accept,
    };
    let _: Empty = client
        .request_ok("friend.answer", session.key(), &request)
        .await
        .expect("friend.answer");
}

/// A message id for `message.send`: a version 7 UUID, which the node needs today (see
/// [`message_send_accepts_a_v4_message_id`]).
fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn send_message(client: &mut ImClient, from: &Session, to: &str, text: &str) -> String {
    let message_id = new_message_id();
    let request = MessageSendRequest {
        to: to.to_owned(),
        message_id: message_id.clone(),
        text: text.to_owned(),
    };
    let reply: MessageSendReply = client
        .request_ok("message.send", from.key(), &request)
        .await
        .expect("message.send");
    assert_eq!(reply.message_id, message_id);
    message_id
}

async fn set_status(client: &mut ImClient, session: &Session, status: WireStatus) {
    let _: Empty = client
        .request_ok(
            "presence.set",
            session.key(),
            &PresenceSetRequest { status },
        )
        .await
        .expect("presence.set");
}

/// Asserts that `reply` is the error `code` and returns it.
pub(crate) fn expect_error<R: std::fmt::Debug>(
    what: &str,
    reply: Result<R, ErrorBody>,
    code: ErrorCode,
) -> ErrorBody {
    match reply {
        Ok(value) => panic!("{what}: expected {code:?}, got ok {value:?}"),
        Err(error) => {
            assert_eq!(error.code, code, "{what}: {error:?}");
            error
        }
    }
}

/// Sends `contacts.list` with `key_opt` and checks it is refused with `code`.
async fn check_key_refused(
    client: &mut ImClient,
    what: &str,
    key_opt: Option<&str>,
    code: ErrorCode,
) {
    let reply: Result<ContactsReply, ErrorBody> = client
        .request("contacts.list", key_opt, &Empty {})
        .await
        .expect("a reply");
    expect_error(what, reply, code);
}

/// Checks that a request naming non-friends is refused with `not_friends` naming exactly
/// `offending`.
fn check_not_friends<R: std::fmt::Debug>(
    what: &str,
    reply: Result<R, ErrorBody>,
    offending: &[&str],
) {
    let error = expect_error(what, reply, ErrorCode::NotFriends);
    assert_eq!(error.accounts, offending, "{what}: {error:?}");
}

/// Every frame `client` receives until it is quiet.
async fn frames_until_quiet(client: &mut ImClient) -> Vec<Push> {
    client
        .pushes_until_quiet(QUIET, QUIET_MAX_WAIT)
        .await
        .expect("reading pushes")
}

/// The presence pushes among `pushes`, asserting that there is nothing else.
fn only_presence(what: &str, pushes: &[Push]) -> Vec<PresencePush> {
    let ops: Vec<&str> = pushes.iter().map(|push| push.op.as_str()).collect();
    assert!(
        ops.iter().all(|op| *op == "presence"),
        "{what}: frames other than presence: {ops:?}"
    );
    pushes
        .iter()
        .map(|push| push.decode().expect("a presence push"))
        .collect()
}

/// Every session of `connection` sends `op` with a body from `body`, pipelined; each must be
/// accepted.
async fn every_session_does<B: serde::Serialize>(
    connection: &mut FriendConnection,
    op: &str,
    body: impl Fn() -> B,
) {
    let replies: Vec<Result<Empty, ErrorBody>> = connection
        .client
        .request_many(
            op,
            connection
                .sessions
                .iter()
                .map(|session| (session.key(), body())),
        )
        .await
        .unwrap_or_else(|error| panic!("{op} replies: {error:#}"));
    for reply in replies {
        reply.unwrap_or_else(|error| panic!("{op} refused: {error:?}"));
    }
}

/// Asserts that `pushes` are exactly one presence frame per account of `accounts`, each
/// showing `status`, and nothing else.
fn expect_one_presence_each(
    what: &str,
    pushes: &[Push],
    accounts: &BTreeSet<String>,
    status: WireStatus,
) {
    let presences = only_presence(what, pushes);
    assert_eq!(presences.len(), accounts.len(), "{what}: {presences:?}");
    let shown: BTreeSet<String> = presences.iter().map(|push| push.account.clone()).collect();
    assert_eq!(&shown, accounts, "{what}");
    assert!(
        presences.iter().all(|push| push.status == status),
        "{what}: {presences:?}"
    );
}

/// Friends of the widget owner in the widget test.
const N_FRIENDS: usize = 200;
/// Connections carrying the friends' sessions.
const N_FRIEND_CONNECTIONS: usize = 8;

/// One connection carrying several friends' sessions.
struct FriendConnection {
    client: ImClient,
    sessions: Vec<Session>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_receives_only_selected_contacts() {
    let test_name = "im::widget_receives_only_selected_contacts";
    let Some(cluster) = start_cluster(
        test_name,
        1,
        &[("LANMESH__AUTH__LOGINS_PER_MINUTE_PER_ADDRESS", "100000")],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let started = Instant::now();

    let mut owner_client = connect(&address).await;
    let owner = sign_up(&mut owner_client, "wendy").await;
    let usernames: Vec<String> = (0..N_FRIENDS).map(|index| format!("f{index:03}")).collect();
    let mut connections = Vec::new();
    for chunk in usernames.chunks(N_FRIENDS.div_ceil(N_FRIEND_CONNECTIONS)) {
        let mut client = connect(&address).await;
        let sessions = sign_up_all(&mut client, chunk).await;
        connections.push(FriendConnection { client, sessions });
    }

    // One combined request per 100 (the default batch limit), answered by every friend.
    for batch in usernames.chunks(100) {
        let request = FriendsAddManyRequest {
            accounts: batch.to_vec(),
            note: "widget test".to_owned(),
        };
        let reply: FriendsAddManyReply = owner_client
            .request_ok("friends.add_many", owner.key(), &request)
            .await
            .expect("friends.add_many");
        assert_eq!(reply.sent, batch);
        assert!(reply.skipped.is_empty(), "{reply:?}");
    }
    futures_util::future::join_all(connections.iter_mut().map(|connection| async move {
        for _ in &connection.sessions {
            let request: WireRequest = connection
                .client
                .wait_for_op("friend.request", EVENT_TIMEOUT)
                .await
                .expect("a friend.request push");
            assert_eq!(request.from, "wendy");
            assert_eq!(request.note, "widget test");
        }
        every_session_does(connection, "friend.answer", || FriendAnswerRequest {
            from: "wendy".to_owned(),
            accept: true,
        })
        .await;
    }))
    .await;
    let list = wait_contacts(&mut owner_client, &owner, "200 friends", |list| {
        list.friends.len() == N_FRIENDS
    })
    .await;
    let friends: BTreeSet<&str> = list
        .friends
        .iter()
        .map(|friend| friend.account.as_str())
        .collect();
    assert_eq!(
        friends,
        usernames
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    eprintln!(
        "{test_name}: 201 accounts befriended in {:?}",
        started.elapsed()
    );

    // The widget, on its own connection, selects three friends: each pushes its presence once.
    let selected: Vec<String> = ["f007", "f099", "f180"].map(str::to_owned).to_vec();
    let mut widget_client = connect(&address).await;
    let widget = login(&mut widget_client, "wendy", "wendy-widget", Mode::Widget).await;
    assert_ne!(widget.session, owner.session);
    let reply: WidgetReply = widget_client
        .request_ok(
            "widget.set",
            widget.key(),
            &WidgetSetRequest {
                contacts: selected.clone(),
            },
        )
        .await
        .expect("widget.set");
    let shown: Vec<&str> = reply
        .contacts
        .iter()
        .map(|entry| entry.account.as_str())
        .collect();
    assert_eq!(shown, selected);
    let selected_set: BTreeSet<String> = selected.iter().cloned().collect();
    let initial = frames_until_quiet(&mut widget_client).await;
    expect_one_presence_each(
        "initial presence",
        &initial,
        &selected_set,
        WireStatus::Online,
    );

    // Every friend changes status once: the widget hears exactly the three it selected.
    futures_util::future::join_all(connections.iter_mut().map(|connection| {
        every_session_does(connection, "presence.set", || PresenceSetRequest {
            status: WireStatus::Busy,
        })
    }))
    .await;
    let changes = frames_until_quiet(&mut widget_client).await;
    expect_one_presence_each(
        "after 200 status changes",
        &changes,
        &selected_set,
        WireStatus::Busy,
    );

    // A message from a selected friend and one from another: one hint, for the selected one.
    let selected_friend = connections
        .iter()
        .flat_map(|connection| &connection.sessions)
        .find(|session| session.account == "f007")
        .expect("f007 exists")
        .clone();
    let other_friend = connections
        .iter()
        .flat_map(|connection| &connection.sessions)
        .find(|session| session.account == "f001")
        .expect("f001 exists")
        .clone();
    let selected_message_id = send_message(
        &mut owner_client,
        &selected_friend,
        "wendy",
        "from a selected friend",
    )
    .await;
    send_message(
        &mut owner_client,
        &other_friend,
        "wendy",
        "from another friend",
    )
    .await;
    // Both reached the account: its client session got both messages.
    for from in ["f007", "f001"] {
        let message: WireMessage = owner_client
            .wait_for_push(EVENT_TIMEOUT, |push| {
                push.op == "message"
                    && push
                        .decode::<WireMessage>()
                        .is_ok_and(|message| message.from == from)
            })
            .await
            .and_then(|push| push.decode::<WireMessage>())
            .expect("the client session gets the message");
        assert_eq!(message.to, "wendy");
    }
    let frames = frames_until_quiet(&mut widget_client).await;
    let ops: Vec<&str> = frames.iter().map(|push| push.op.as_str()).collect();
    assert_eq!(ops, ["hint"], "the widget gets one hint and nothing else");
    let hint: WireHint = frames[0].decode().expect("a hint");
    assert_eq!(hint.from, "f007");
    assert_eq!(hint.unread, 1);
    assert_eq!(hint.preview, "from a selected friend");
    assert_eq!(hint.message_id, selected_message_id);

    eprintln!("{test_name}: done in {:?}", started.elapsed());
    let mut clients = vec![owner_client, widget_client];
    clients.extend(connections.into_iter().map(|connection| connection.client));
    finish(cluster, clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusals() {
    let Some(cluster) = start_cluster(
        "im::auth_refusals",
        1,
        &[("LANMESH__AUTH__MAX_FAILED_LOGINS", "3")],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let mut client = connect(&address).await;
    for username in ["alice", "bob", "carol", "dave"] {
        register(&mut client, username).await;
    }
    let alice = login(&mut client, "alice", "laptop", Mode::Client).await;
    let bob = login(&mut client, "bob", "phone", Mode::Client).await;

    // Keys that are missing, malformed or not issued.
    check_key_refused(&mut client, "no key", None, ErrorCode::Unauthenticated).await;
    let zero_secret = "0".repeat(64);
    let not_issued = [
        ("not a key", "not-a-key".to_owned()),
        ("short secret", format!("alice:{}:abc", alice.session)),
        (
            "secret of another session",
            format!(
                "alice:{}:{}",
                bob.session,
                alice.key.rsplit(':').next().expect("key has a secret")
            ),
        ),
        (
            "unknown secret",
            format!("alice:{}:{zero_secret}", alice.session),
        ),
        ("unknown account", format!("nobody:s1:{zero_secret}")),
    ];
    for (what, key) in &not_issued {
        check_key_refused(&mut client, what, Some(key), ErrorCode::KeyInvalid).await;
    }
    contacts(&mut client, &alice).await;

    // Logged out: the key is revoked, and the session's connection hears that it ended.
    let tablet = login(&mut client, "alice", "tablet", Mode::Client).await;
    let _: Empty = client
        .request_ok("session.logout", tablet.key(), &Empty {})
        .await
        .expect("session.logout");
    check_key_refused(
        &mut client,
        "key after logout",
        tablet.key(),
        ErrorCode::KeyRevoked,
    )
    .await;
    let ended: SessionEndedPush = client
        .wait_for_push(EVENT_TIMEOUT, |push| {
            push.op == "session.ended"
                && push
                    .decode::<SessionEndedPush>()
                    .is_ok_and(|ended| ended.session == tablet.session)
        })
        .await
        .and_then(|push| push.decode::<SessionEndedPush>())
        .expect("session.ended after logout");
    assert_eq!(ended.reason, "logged out");

    // Revoked by another session of the account.
    let mut desktop_client = connect(&address).await;
    let desktop = login(&mut desktop_client, "alice", "desktop", Mode::Client).await;
    contacts(&mut desktop_client, &desktop).await;
    let _: Empty = client
        .request_ok(
            "session.revoke",
            alice.key(),
            &RevokeRequest {
                session: desktop.session.clone(),
            },
        )
        .await
        .expect("session.revoke");
    let ended: SessionEndedPush = desktop_client
        .wait_for_op("session.ended", EVENT_TIMEOUT)
        .await
        .expect("a session.ended push");
    assert_eq!(ended.session, desktop.session);
    assert!(ended.reason.contains("revoked"), "{ended:?}");
    check_key_refused(
        &mut desktop_client,
        "key of a revoked session",
        desktop.key(),
        ErrorCode::KeyRevoked,
    )
    .await;
    let reply: Result<Empty, ErrorBody> = client
        .request(
            "session.revoke",
            alice.key(),
            &RevokeRequest {
                session: "nosuchsession".to_owned(),
            },
        )
        .await
        .expect("a reply");
    expect_error("revoking an unknown session", reply, ErrorCode::Invalid);

    // Refreshed: the old key is revoked, the new one works.
    let refreshed: KeyReply = client
        .request_ok("session.refresh", alice.key(), &Empty {})
        .await
        .expect("session.refresh");
    assert_ne!(refreshed.key, alice.key);
    check_key_refused(
        &mut client,
        "key replaced by refresh",
        alice.key(),
        ErrorCode::KeyRevoked,
    )
    .await;
    let alice = Session {
        key: refreshed.key,
        ..alice
    };
    contacts(&mut client, &alice).await;

    // Another account's data: only friends' conversations, widgets and calls.
    befriend(&mut client, &alice, &bob).await;
    let history = MessageHistoryRequest {
        with: "carol".to_owned(),
        limit: None,
        cursor: None,
    };
    let reply: Result<MessageHistoryReply, ErrorBody> = client
        .request("message.history", alice.key(), &history)
        .await
        .expect("a reply");
    check_not_friends("message.history with a stranger", reply, &["carol"]);
    let widget = WidgetSetRequest {
        contacts: vec!["bob".to_owned(), "carol".to_owned(), "dave".to_owned()],
    };
    let reply: Result<WidgetReply, ErrorBody> = client
        .request("widget.set", alice.key(), &widget)
        .await
        .expect("a reply");
    check_not_friends("widget.set with strangers", reply, &["carol", "dave"]);
    for kind in [ConversationKind::Text, ConversationKind::Video] {
        let open = ConversationOpenRequest {
            with: "carol".to_owned(),
            kind,
        };
        let reply: Result<Empty, ErrorBody> = client
            .request("conversation.open", alice.key(), &open)
            .await
            .expect("a reply");
        check_not_friends(&format!("conversation.open {kind:?}"), reply, &["carol"]);
    }
    let message = MessageSendRequest {
        to: "carol".to_owned(),
        message_id: new_message_id(),
        text: "hello".to_owned(),
    };
    let reply: Result<MessageSendReply, ErrorBody> = client
        .request("message.send", alice.key(), &message)
        .await
        .expect("a reply");
    check_not_friends("message.send to a stranger", reply, &["carol"]);
    let history = MessageHistoryRequest {
        with: "bob".to_owned(),
        ..history
    };
    let reply: MessageHistoryReply = client
        .request_ok("message.history", alice.key(), &history)
        .await
        .expect("a friend's history");
    assert!(reply.messages.is_empty());

    // Wrong passwords; an unknown account looks the same.
    let reply = client
        .login("alice", "wrong password", "laptop", Mode::Client)
        .await
        .expect("a reply");
    expect_error("wrong password", reply, ErrorCode::LoginFailed);
    let reply = client
        .login("nobody", PASSWORD, "laptop", Mode::Client)
        .await
        .expect("a reply");
    expect_error("unknown account", reply, ErrorCode::LoginFailed);

    // Per-account lock-out after three failures, even with the right password; other
    // accounts are not affected.
    for attempt in 1..=3 {
        let reply = client
            .login("dave", "wrong password", "phone", Mode::Client)
            .await
            .expect("a reply");
        expect_error(
            &format!("dave's failure #{attempt}"),
            reply,
            ErrorCode::LoginFailed,
        );
    }
    let reply = client
        .login("dave", PASSWORD, "phone", Mode::Client)
        .await
        .expect("a reply");
    let locked = expect_error("dave locked out", reply, ErrorCode::LockedOut);
    let retry_after_ms = locked.retry_after_ms.expect("locked_out says when");
    assert!(
        retry_after_ms > 0 && retry_after_ms <= 15 * 60_000,
        "{locked:?}"
    );
    login(&mut client, "alice", "laptop", Mode::Client).await;

    finish(cluster, vec![desktop_client, client]).await;
}

/// Keys that expire (`auth.key_ttl_ms` of 1.5 s) and the per-address login rate limit, on a
/// node of their own so the short key lifetime and the small login budget touch nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusals_key_expiry_and_address_rate_limit() {
    const KEY_TTL_MS: u64 = 1500;
    const LOGINS_PER_MINUTE: usize = 4;
    let Some(cluster) = start_cluster(
        "im::auth_refusals_key_expiry_and_address_rate_limit",
        1,
        &[
            ("LANMESH__AUTH__KEY_TTL_MS", "1500"),
            ("LANMESH__AUTH__LOGINS_PER_MINUTE_PER_ADDRESS", "4"),
        ],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let mut client = connect(&address).await;
    register(&mut client, "erin").await;
    let reply: SessionReply = client
        .request_ok(
            "session.login",
            None,
            &login_request("erin", "phone", Mode::Client),
        )
        .await
        .expect("first login");
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let expires_at_ms = reply
        .expires_at_ms
        .expect("a login says when its key expires");
    assert!(
        expires_at_ms <= now_ms + KEY_TTL_MS + 1000,
        "expires at {expires_at_ms}, now {now_ms}"
    );
    let erin = session_of(reply);

    // The key works until it expires, then it is refused as expired.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let expired = loop {
        let reply: Result<ContactsReply, ErrorBody> = client
            .request("contacts.list", erin.key(), &Empty {})
            .await
            .expect("a reply");
        match reply {
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "key still accepted {EVENT_TIMEOUT:?} after login"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => break error,
        }
    };
    assert_eq!(expired.code, ErrorCode::KeyExpired, "{expired:?}");
    let reply: Result<KeyReply, ErrorBody> = client
        .request("session.refresh", erin.key(), &Empty {})
        .await
        .expect("a reply");
    expect_error("refreshing an expired key", reply, ErrorCode::KeyExpired);

    // Four logins a minute from one address (one refill at most during the test), then
    // rate_limited, before the password is even looked at.
    let mut n_accepted = 1;
    let refusal = loop {
        match client
            .login("erin", PASSWORD, "phone", Mode::Client)
            .await
            .expect("a reply")
        {
            Ok(_) => n_accepted += 1,
            Err(error) => break error,
        }
        assert!(n_accepted <= LOGINS_PER_MINUTE + 1, "never rate limited");
    };
    assert_eq!(refusal.code, ErrorCode::RateLimited, "{refusal:?}");
    assert!(
        (LOGINS_PER_MINUTE..=LOGINS_PER_MINUTE + 1).contains(&n_accepted),
        "{n_accepted} logins accepted"
    );
    let retry_after_ms = refusal.retry_after_ms.expect("rate_limited says when");
    assert!(
        retry_after_ms > 0 && retry_after_ms <= 15_000,
        "{refusal:?}"
    );
    let reply = client
        .login("erin", "wrong password", "phone", Mode::Client)
        .await
        .expect("a reply");
    expect_error(
        "a wrong password while rate limited",
        reply,
        ErrorCode::RateLimited,
    );

    finish(cluster, vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_kill_the_node() {
    const MAX_FRAME_BYTES: usize = 4096;
    let Some(cluster) = start_cluster(
        "im::malformed_frames_do_not_kill_the_node",
        1,
        &[("LANMESH__EDGE__MAX_FRAME_BYTES", "4096")],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let mut client = ImClient::connect_raw(&address).await.expect("connects");

    // Garbage: an id-less error, and the connection stays.
    client
        .send_raw(vec![0xc1, 0xff, 0x00, 0x13])
        .await
        .expect("sends");
    let error: ErrorBody = client
        .wait_for_op("error", EVENT_TIMEOUT)
        .await
        .expect("a error push");
    assert_eq!(error.code, ErrorCode::BadFrame, "{error:?}");

    // Before hello, and hello without a common version.
    let reply: Result<RegisterReply, ErrorBody> = client
        .request("account.register", None, &register_request("mallory"))
        .await
        .expect("a reply");
    expect_error("register before hello", reply, ErrorCode::HelloRequired);
    let reply = client.hello(&[99]).await.expect("a reply");
    expect_error(
        "hello with version 99",
        reply,
        ErrorCode::UnsupportedVersion,
    );
    let hello = client
        .hello(&[1, 99])
        .await
        .expect("a reply")
        .expect("hello with version 1");
    assert_eq!(hello.version, 1);
    assert_eq!(hello.max_frame_bytes, MAX_FRAME_BYTES);
    let mallory = sign_up(&mut client, "mallory").await;

    // Unknown operation, bodies that do not fit.
    let reply: Result<Empty, ErrorBody> = client
        .request("message.teleport", mallory.key(), &Empty {})
        .await
        .expect("a reply");
    expect_error("unknown op", reply, ErrorCode::UnknownOp);
    let reply: Result<Empty, ErrorBody> = client
        .request("presence.set", mallory.key(), "busy")
        .await
        .expect("a reply");
    expect_error("body that is a string", reply, ErrorCode::BadRequest);
    let reply: Result<Empty, ErrorBody> = client
        .request(
            "presence.set",
            mallory.key(),
            &HelloRequest { versions: vec![1] },
        )
        .await
        .expect("a reply");
    expect_error("body of another op", reply, ErrorCode::BadRequest);
    let reply: Result<RegisterReply, ErrorBody> = client
        .request("account.register", None, &42_u32)
        .await
        .expect("a reply");
    expect_error("register with a number", reply, ErrorCode::BadRequest);

    // A map with an id whose op is not a string: an error naming the id.
    let bad_op = [
        0x82, 0xa2, b'i', b'd', 0xcd, 0x03, 0xe8, 0xa2, b'o', b'p', 0x05,
    ];
    client.send_raw(bad_op.to_vec()).await.expect("sends");
    let reply: Result<Empty, ErrorBody> = client.reply(1000).await.expect("a reply");
    expect_error("op that is a number", reply, ErrorCode::BadFrame);

    // A text frame.
    client.send_text("{\"op\":\"hello\"}").await.expect("sends");
    let error: ErrorBody = client
        .wait_for_op("error", EVENT_TIMEOUT)
        .await
        .expect("a error push");
    assert_eq!(error.code, ErrorCode::BadFrame, "{error:?}");

    // The connection still serves requests after all that.
    contacts(&mut client, &mallory).await;

    // Too large: an error, then the server closes the connection.
    client
        .send_raw(vec![0x90; MAX_FRAME_BYTES + 1000])
        .await
        .expect("sends");
    let error: ErrorBody = client
        .wait_for_op("error", EVENT_TIMEOUT)
        .await
        .expect("a error push");
    assert_eq!(error.code, ErrorCode::FrameTooLarge, "{error:?}");
    assert!(
        client
            .wait_closed(EVENT_TIMEOUT)
            .await
            .expect("reads until closed"),
        "the connection stays open after a frame too large"
    );

    // The node is fine: a new connection registers and logs in, and it is healthy.
    let mut fresh = connect(&address).await;
    let trent = sign_up(&mut fresh, "trent").await;
    contacts(&mut fresh, &trent).await;
    contacts(&mut fresh, &mallory).await;
    let (status, _) = http_get(&address, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);

    finish(cluster, vec![client, fresh]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_sharing() {
    const MAX_SHARED: &str = "3";
    let Some(cluster) = start_cluster(
        "im::friend_sharing",
        1,
        &[("LANMESH__EDGE__MAX_SHARED_FRIENDS", MAX_SHARED)],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    // ann and eve share a connection (xan and yul, never ann's friends, do not log in); tom,
    // bea, cat and dan have one each, to tell their pushes apart.
    let mut client = connect(&address).await;
    let ann = sign_up(&mut client, "ann").await;
    let eve = sign_up(&mut client, "eve").await;
    register(&mut client, "xan").await;
    register(&mut client, "yul").await;
    let mut tom_client = connect(&address).await;
    let tom = sign_up(&mut tom_client, "tom").await;
    let mut picked_clients = Vec::new();
    for username in ["bea", "cat", "dan"] {
        let mut picked_client = connect(&address).await;
        let session = sign_up(&mut picked_client, username).await;
        picked_clients.push((picked_client, session));
    }
    let [(bea_client, bea), (cat_client, cat), (dan_client, dan)] = &mut picked_clients[..] else {
        unreachable!("three picked accounts");
    };
    for friend in [&*bea, &*cat, &*dan, &eve, &tom] {
        befriend(&mut client, &ann, friend).await;
    }
    for friend_client in [
        &mut *bea_client,
        &mut *cat_client,
        &mut *dan_client,
        &mut tom_client,
    ] {
        let request: WireRequest = friend_client
            .wait_for_op("friend.request", EVENT_TIMEOUT)
            .await
            .expect("a friend.request push");
        assert_eq!(request.from, "ann");
    }
    let group = GroupSetRequest {
        name: "team".to_owned(),
        members: vec!["cat".to_owned(), "dan".to_owned()],
    };
    let _: Empty = client
        .request_ok("group.set", ann.key(), &group)
        .await
        .expect("group.set");

    // A friend and a group, shared with a friend.
    let share = |to: &str, friends: &[&str], groups: &[&str]| FriendsShareRequest {
        to: to.to_owned(),
        friends: friends.iter().map(|name| (*name).to_owned()).collect(),
        groups: groups.iter().map(|name| (*name).to_owned()).collect(),
    };
    let reply: FriendsShareReply = client
        .request_ok(
            "friends.share",
            ann.key(),
            &share("tom", &["bea"], &["team"]),
        )
        .await
        .expect("friends.share");
    assert_eq!(reply.accounts, ["bea", "cat", "dan"]);
    let shared: FriendsSharedPush = tom_client
        .wait_for_op("friends.shared", EVENT_TIMEOUT)
        .await
        .expect("a friends.shared push");
    assert_eq!(shared.from, "ann");
    assert_eq!(shared.accounts, ["bea", "cat", "dan"]);

    // Refusals name exactly what is wrong, and send nothing.
    let refused = [
        (
            "a stranger shared",
            share("tom", &["bea", "xan"], &[]),
            vec!["xan"],
        ),
        (
            "a stranger as target",
            share("xan", &["bea"], &[]),
            vec!["xan"],
        ),
        (
            "both",
            share("yul", &["bea", "xan"], &[]),
            vec!["xan", "yul"],
        ),
        (
            "unknown group",
            share("tom", &["bea"], &["nope"]),
            vec!["group:nope"],
        ),
    ];
    for (what, request, offending) in &refused {
        let reply: Result<FriendsShareReply, ErrorBody> = client
            .request("friends.share", ann.key(), request)
            .await
            .expect("a reply");
        check_not_friends(what, reply, offending);
    }
    let too_many = [
        (
            "a group beyond the limit",
            share("tom", &["bea", "eve"], &["team"]),
        ),
        (
            "friends beyond the limit",
            share("tom", &["bea", "cat", "dan", "eve"], &[]),
        ),
    ];
    for (what, request) in &too_many {
        let reply: Result<FriendsShareReply, ErrorBody> = client
            .request("friends.share", ann.key(), request)
            .await
            .expect("a reply");
        expect_error(what, reply, ErrorCode::TooMany);
    }
    let after_refusals = frames_until_quiet(&mut tom_client).await;
    assert!(
        after_refusals.is_empty(),
        "refused shares reached the target: {after_refusals:?}"
    );

    // The target asks every suggested account at once; one accepts, one declines.
    let request = FriendsAddManyRequest {
        accounts: shared.accounts.clone(),
        note: "a says hi".to_owned(),
    };
    let reply: FriendsAddManyReply = tom_client
        .request_ok("friends.add_many", tom.key(), &request)
        .await
        .expect("friends.add_many");
    assert_eq!(reply.sent, ["bea", "cat", "dan"]);
    assert!(reply.skipped.is_empty(), "{reply:?}");
    for picked_client in [&mut *bea_client, &mut *cat_client, &mut *dan_client] {
        let request: WireRequest = picked_client
            .wait_for_op("friend.request", EVENT_TIMEOUT)
            .await
            .expect("a friend.request push");
        assert_eq!(request.from, "tom");
        assert_eq!(request.note, "a says hi");
    }
    answer(bea_client, bea, "tom", true).await;
    answer(cat_client, cat, "tom", false).await;
    let accepted: FriendAcceptedPush = tom_client
        .wait_for_op("friend.accepted", EVENT_TIMEOUT)
        .await
        .expect("a friend.accepted push");
    assert_eq!(accepted.by, "bea");
    let declined = tom_client
        .wait_for_push(EVENT_TIMEOUT, |push| push.op == "friend.declined")
        .await
        .expect("friend.declined");
    assert_eq!(
        declined.body.as_map().map(|entries| entries.len()),
        Some(1),
        "{declined:?}"
    );
    let tom_list = wait_contacts(&mut tom_client, &tom, "t befriends b", |list| {
        has_friend(list, "bea")
    })
    .await;
    assert!(!has_friend(&tom_list, "cat"), "{tom_list:?}");
    assert!(
        tom_list
            .requests_out
            .iter()
            .any(|request| request.to == "dan"),
        "{tom_list:?}"
    );
    let bea_list = contacts(bea_client, bea).await;
    assert!(has_friend(&bea_list, "tom"), "{bea_list:?}");
    let cat_list = contacts(cat_client, cat).await;
    assert!(!has_friend(&cat_list, "tom"), "{cat_list:?}");
    let dan_list = contacts(dan_client, dan).await;
    assert!(
        dan_list
            .requests_in
            .iter()
            .any(|request| request.from == "tom"),
        "{dan_list:?}"
    );

    let mut clients = vec![client, tom_client];
    clients.extend(
        picked_clients
            .into_iter()
            .map(|(picked_client, _)| picked_client),
    );
    finish(cluster, clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_presence_and_messages() {
    let Some(cluster) = start_cluster("im::cross_node_presence_and_messages", 2, &[]).await else {
        return;
    };
    let (address_0, address_1) = (address(&cluster, 0), address(&cluster, 1));
    let mut alice_client = connect(&address_0).await;
    let mut bob_client = connect(&address_1).await;
    assert_ne!(
        alice_client
            .hello_reply()
            .map(|hello| hello.node_id.clone()),
        bob_client.hello_reply().map(|hello| hello.node_id.clone())
    );
    let alice = sign_up(&mut alice_client, "alice").await;
    let bob = sign_up(&mut bob_client, "bob").await;

    // Friends, each side hearing of it on its own node.
    let request = FriendRequestRequest {
        to: "bob".to_owned(),
        note: "across nodes".to_owned(),
    };
    let _: Empty = alice_client
        .request_ok("friend.request", alice.key(), &request)
        .await
        .expect("friend.request");
    let request: WireRequest = bob_client
        .wait_for_op("friend.request", EVENT_TIMEOUT)
        .await
        .expect("a friend.request push");
    assert_eq!(request.from, "alice");
    assert_eq!(request.note, "across nodes");
    answer(&mut bob_client, &bob, "alice", true).await;
    let accepted: FriendAcceptedPush = alice_client
        .wait_for_op("friend.accepted", EVENT_TIMEOUT)
        .await
        .expect("a friend.accepted push");
    assert_eq!(accepted.by, "bob");
    assert_eq!(accepted.display_name, "User bob");

    // Alice's widget (node 0) watches bob (node 1).
    let mut widget_client = connect(&address_0).await;
    let widget = login(&mut widget_client, "alice", "alice-widget", Mode::Widget).await;
    let _: WidgetReply = widget_client
        .request_ok(
            "widget.set",
            widget.key(),
            &WidgetSetRequest {
                contacts: vec!["bob".to_owned()],
            },
        )
        .await
        .expect("widget.set");
    let presence: PresencePush = widget_client
        .wait_for_op("presence", EVENT_TIMEOUT)
        .await
        .expect("a presence push");
    assert_eq!(presence.account, "bob");
    assert_eq!(presence.status, WireStatus::Online);
    set_status(&mut bob_client, &bob, WireStatus::Away).await;
    let presence: PresencePush = widget_client
        .wait_for_op("presence", EVENT_TIMEOUT)
        .await
        .expect("a presence push");
    assert_eq!(presence.account, "bob");
    assert_eq!(presence.status, WireStatus::Away);

    // Bob writes: alice's client gets the message, her widget a hint.
    let text = "hello from the other node";
    let message_id = send_message(&mut bob_client, &bob, "alice", text).await;
    let message: WireMessage = alice_client
        .wait_for_op("message", EVENT_TIMEOUT)
        .await
        .expect("a message push");
    assert_eq!(
        (
            message.message_id.as_str(),
            message.from.as_str(),
            message.to.as_str(),
            message.text.as_str()
        ),
        (message_id.as_str(), "bob", "alice", text)
    );
    let hint: WireHint = widget_client
        .wait_for_op("hint", EVENT_TIMEOUT)
        .await
        .expect("a hint push");
    assert_eq!((hint.from.as_str(), hint.unread), ("bob", 1));
    assert_eq!(hint.message_id, message_id);

    // Alice reads it: bob gets a receipt, the widget's hint drops to zero.
    let read = MessageReadRequest {
        with: "bob".to_owned(),
        up_to_message_id: message_id.clone(),
    };
    let _: Empty = alice_client
        .request_ok("message.read", alice.key(), &read)
        .await
        .expect("message.read");
    let receipt: ReceiptPush = bob_client
        .wait_for_op("receipt", EVENT_TIMEOUT)
        .await
        .expect("a receipt push");
    assert_eq!(receipt.by, "alice");
    assert_eq!(receipt.up_to_message_id, message_id);
    let hint: WireHint = widget_client
        .wait_for_op("hint", EVENT_TIMEOUT)
        .await
        .expect("a hint push");
    assert_eq!((hint.from.as_str(), hint.unread), ("bob", 0));

    // Both histories hold the message.
    for (client, session, with) in [
        (&mut alice_client, &alice, "bob"),
        (&mut bob_client, &bob, "alice"),
    ] {
        let history = MessageHistoryRequest {
            with: with.to_owned(),
            limit: Some(10),
            cursor: None,
        };
        let reply: MessageHistoryReply = client
            .request_ok("message.history", session.key(), &history)
            .await
            .expect("message.history");
        let found: Vec<(&str, &str, &str)> = reply
            .messages
            .iter()
            .map(|message| {
                (
                    message.message_id.as_str(),
                    message.from.as_str(),
                    message.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [(message_id.as_str(), "bob", text)],
            "{}",
            session.account
        );
    }

    finish(cluster, vec![alice_client, bob_client, widget_client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reuse_and_resume() {
    let Some(cluster) = start_cluster("im::session_reuse_and_resume", 1, &[]).await else {
        return;
    };
    let address = address(&cluster, 0);
    let mut pat_client = connect(&address).await;
    let pat = sign_up(&mut pat_client, "pat").await;

    // Two logins from one device: one session, two keys that both work.
    let mut first_client = connect(&address).await;
    register(&mut first_client, "sam").await;
    let first: SessionReply = first_client
        .request_ok(
            "session.login",
            None,
            &login_request("sam", "laptop", Mode::Client),
        )
        .await
        .expect("first login");
    assert!(!first.reused);
    let mut second_client = connect(&address).await;
    let second: SessionReply = second_client
        .request_ok(
            "session.login",
            None,
            &login_request("sam", "laptop", Mode::Client),
        )
        .await
        .expect("second login");
    assert!(second.reused);
    assert_eq!(second.session, first.session);
    assert_ne!(second.key, first.key);
    let first = session_of(first);
    let second = session_of(second);
    contacts(&mut first_client, &first).await;
    contacts(&mut second_client, &second).await;
    contacts(&mut pat_client, &first).await;
    befriend(&mut pat_client, &pat, &second).await;

    // Both connections drop; pat writes twice meanwhile.
    drop(first_client);
    drop(second_client);
    send_message(&mut pat_client, &pat, "sam", "are you there?").await;
    let last_id = send_message(&mut pat_client, &pat, "sam", "call me back").await;

    // Resumed on a new connection: the session, and the hint of what arrived meanwhile.
    let mut resumed_client = connect(&address).await;
    let resumed: SessionReply = resumed_client
        .request_ok("session.resume", first.key(), &Empty {})
        .await
        .expect("session.resume");
    assert_eq!(resumed.session, first.session);
    assert!(resumed.reused);
    assert_eq!(resumed.key, None);
    let hints: Vec<(&str, u32, &str, &str)> = resumed
        .unread
        .iter()
        .map(|hint| {
            (
                hint.from.as_str(),
                hint.unread,
                hint.preview.as_str(),
                hint.message_id.as_str(),
            )
        })
        .collect();
    assert_eq!(hints, [("pat", 2, "call me back", last_id.as_str())]);

    // The resumed connection gets the session's pushes again.
    let next_id = send_message(&mut pat_client, &pat, "sam", "third").await;
    let message: WireMessage = resumed_client
        .wait_for_op("message", EVENT_TIMEOUT)
        .await
        .expect("a message push");
    assert_eq!(message.message_id, next_id);
    contacts(&mut resumed_client, &second).await;

    finish(cluster, vec![resumed_client, pat_client]).await;
}

/// Any UUID is a valid `message_id` (most clients make version 4 ones); resending a message
/// delivers it once, and reusing its id for another text is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_send_accepts_a_v4_message_id() {
    let Some(cluster) = start_cluster("im::message_send_accepts_a_v4_message_id", 1, &[]).await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let mut client = connect(&address).await;
    let uma = sign_up(&mut client, "uma").await;
    let vic = sign_up(&mut client, "vic").await;
    befriend(&mut client, &uma, &vic).await;
    let message_id = uuid::Uuid::new_v4().to_string();
    let request = MessageSendRequest {
        to: "vic".to_owned(),
        message_id: message_id.clone(),
        text: "a v4 id".to_owned(),
    };
    let reply: Result<MessageSendReply, ErrorBody> = client
        .request("message.send", uma.key(), &request)
        .await
        .expect("a reply");
    let sent = reply.expect("a version 4 message_id is accepted");
    assert_eq!(sent.message_id, message_id);
    let message: WireMessage = client
        .wait_for_op("message", EVENT_TIMEOUT)
        .await
        .expect("a message push");
    assert_eq!(message.message_id, message_id);

    let resent: Result<MessageSendReply, ErrorBody> = client
        .request("message.send", uma.key(), &request)
        .await
        .expect("a reply");
    assert_eq!(resent.expect("a resend is accepted").message_id, message_id);
    let reused = MessageSendRequest {
        text: "another text".to_owned(),
        ..request
    };
    let refused: Result<MessageSendReply, ErrorBody> = client
        .request("message.send", uma.key(), &reused)
        .await
        .expect("a reply");
    assert_eq!(
        refused.expect_err("another text under the same id").code,
        ErrorCode::MessageIdReused
    );
    let extra = client
        .pushes_until_quiet(Duration::from_secs(1), Duration::from_secs(5))
        .await
        .expect("reading pushes");
    assert!(
        extra.iter().all(|push| push.op != "message"),
        "a resent message is delivered once: {:?}",
        extra.iter().map(|push| &push.op).collect::<Vec<_>>()
    );

    finish(cluster, vec![client]).await;
}

/// A node stopping with SIGTERM closes its WebSockets ("going away") instead of waiting for
/// its clients, and a client resumes its session on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_node_closes_websockets_and_sessions_resume_elsewhere() {
    let Some(mut cluster) = start_cluster("im::stopping_node_closes_websockets", 2, &[]).await
    else {
        return;
    };
    let mut leaving_client = connect(&address(&cluster, 1)).await;
    let kim = sign_up(&mut leaving_client, "kim").await;

    let started = Instant::now();
    let status = cluster
        .terminate(1, Duration::from_secs(30))
        .await
        .expect("node 1 stops");
    let stop_time = started.elapsed();
    assert!(status.success(), "node 1 exits cleanly: {status}");
    // The HTTP server's own shutdown waits 10 s for open connections; closing them first
    // must make the stop quicker than that.
    assert!(
        stop_time < Duration::from_secs(8),
        "stopping took {stop_time:?}"
    );
    assert!(
        leaving_client
            .wait_closed(Duration::from_secs(5))
            .await
            .expect("reading until closed"),
        "the connection is closed"
    );
    let reason = leaving_client.close_reason();
    assert!(
        reason.contains("1001") && reason.contains("node stopping"),
        "{reason}"
    );

    let mut staying_client = connect(&address(&cluster, 0)).await;
    let resumed: SessionReply = staying_client
        .request_ok("session.resume", kim.key(), &Empty {})
        .await
        .expect("session.resume on the other node");
    assert_eq!(resumed.session, kim.session);
    finish(cluster, vec![staying_client]).await;
}

/// Logs in with a wrong password from a client connected as `options` say, once; true when
/// the attempt was refused by the per-address rate limit.
async fn login_rate_limited(address: &str, options: &ConnectOptions) -> bool {
    let mut client = ImClient::connect_with(address, options)
        .await
        .expect("connects");
    let mut request = login_request("frank", "phone", Mode::Client);
    request.password = "not the password".to_owned();
    let reply: Result<SessionReply, ErrorBody> = client
        .request("session.login", None, &request)
        .await
        .expect("a reply");
    let error = reply.expect_err("a wrong password never logs in");
    client.close().await.expect("closes");
    match error.code {
        ErrorCode::RateLimited => true,
        ErrorCode::LoginFailed => false,
        other => panic!("unexpected refusal {other:?}: {}", error.message),
    }
}

/// `X-Forwarded-For` names the client only when a trusted proxy sends it: a client that forges
/// it still counts against its own address, while a trusted proxy's clients count apart. A
/// trusted proxy's malformed header is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let Some(cluster) = start_cluster(
        "im::forwarded_addresses_are_believed_only_from_trusted_proxies",
        1,
        &[
            ("LANMESH__AUTH__LOGINS_PER_MINUTE_PER_ADDRESS", "2"),
            ("LANMESH__EDGE__TRUSTED_PROXIES", "127.0.0.2, 127.0.0.3"),
        ],
    )
    .await
    else {
        return;
    };
    let address = address(&cluster, 0);
    let mut client = connect(&address).await;
    register(&mut client, "frank").await;
    client.close().await.expect("closes");

    let untrusted = |forged: &str| ConnectOptions {
        source_ip_opt: Some("127.0.0.4".parse().expect("an address")),
        forwarded_for_opt: Some(forged.to_owned()),
    };
    let through_proxy = |client_ip: &str| ConnectOptions {
        source_ip_opt: Some("127.0.0.2".parse().expect("an address")),
        forwarded_for_opt: Some(format!("{client_ip}, 127.0.0.3")),
    };
    // A forged header from an untrusted peer changes nothing: its third attempt is limited.
    let forged: Vec<bool> = futures_util::future::join_all(
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|forged| async { login_rate_limited(&address, &untrusted(forged)).await }),
    )
    .await;
    assert_eq!(
        forged.iter().filter(|limited| **limited).count(),
        1,
        "{forged:?}"
    );
    // Behind the trusted proxies, each client has its own budget.
    for client_ip in ["10.0.1.1", "10.0.1.1"] {
        assert!(!login_rate_limited(&address, &through_proxy(client_ip)).await);
    }
    assert!(login_rate_limited(&address, &through_proxy("10.0.1.1")).await);
    assert!(!login_rate_limited(&address, &through_proxy("10.0.1.2")).await);

    let malformed = ImClient::connect_raw_with(
        &address,
        &ConnectOptions {
            source_ip_opt: Some("127.0.0.2".parse().expect("an address")),
            forwarded_for_opt: Some("not-an-address".to_owned()),
        },
    )
    .await;
    let error = malformed
        .err()
        .expect("a trusted proxy's malformed header is refused");
    assert!(format!("{error:#}").contains("400"), "{error:#}");

    cluster.shutdown().await.expect("nodes stop cleanly");
}
