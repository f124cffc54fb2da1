//! Login with a partner site's account (S2) end to end, over real HTTP on loopback: real
//! `lanmesh-node` processes and the reference partner site (`lanmesh partner-demo`) as real
//! processes, the operator API over HTTP, clients over WebSockets, the real broker.
//!
//! Between a node and the site sits, where a test needs it, a small HTTP proxy in this test
//! ([`SiteProxy`]) that can replay the first verification request, hang, or spoil answers
//! (oversize, malformed, unsigned), so every refusal the issue lists is provoked for real.

use crate::im::{EVENT_TIMEOUT, address, connect, expect_error, finish, start_cluster};
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use lanmesh::edge::auth::{PasswordCost, hash_password};
use lanmesh::edge::protocol::{
    ErrorBody, ErrorCode, FriendRequestRequest, LoginRequest, Mode, PartnerContactsReply,
    PartnerLoginRequest, PartnerPageRequest, PartnerPostsReply, RegisterReply, RegisterRequest,
    SessionReply,
};
use lanmesh::load::http_client::http_get;
use lanmesh::load::ws_client::{Empty, ImClient};
use lanmesh::partner::wire::SIGNATURE_HEADER;
use serde_json::json;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789abcdef";
const SECRETS_KEY: &str = "6c616e6d6573682d746573742d6b65792d3030303030303030303030303030ff";
const SITE_SECRET: &str = "forum-shared-secret-0123456789";
const SERVER_ID: &str = "im-test";
/// Passwords on the partner site: each user's is `<username>-password`.
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn node_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LANMESH__PARTNERS__SECRETS_KEY", SECRETS_KEY),
        ("LANMESH__OPERATOR__TOKEN", OPERATOR_TOKEN),
    ]
}

fn password_of(username: &str) -> String {
    format!("{username}-password")
}

/// The partner site's users file: alice's contacts are bob, carol and dave; three posts.
async fn write_users_file(path: &Path) {
    let cheap = PasswordCost {
        memory_kib: 64,
        iterations: 1,
    };
    let mut text = String::new();
    for username in USERS {
        let hash = hash_password(password_of(username), cheap)
            .await
            .expect("hashes");
        let contacts = if username == "alice" {
            r#"["bob", "carol", "dave"]"#
        } else {
            r#"["alice"]"#
        };
        let mut letters = username.chars();
        let display_name: String = letters
            .next()
            .map(|first| first.to_ascii_uppercase())
            .into_iter()
            .chain(letters)
            .collect();
        text.push_str(&format!(
            "[[users]]\nusername = \"{username}\"\ndisplay_name = \"{display_name}\"\npassword_hash = \"{hash}\"\ncontacts = {contacts}\n\n"
        ));
    }
    for (index, (author, published_at)) in [
        ("bob", 1_700_000_100),
        ("carol", 1_700_000_300),
        ("bob", 1_700_000_200),
    ]
    .into_iter()
    .enumerate()
    {
        text.push_str(&format!(
            "[[posts]]\npost_id = \"p{index}\"\nauthor = \"{author}\"\ntext = \"post {index} by {author}\"\npublished_at = {published_at}\n\n"
        ));
    }
    std::fs::write(path, text).expect("writes the users file");
}

/// A `lanmesh partner-demo` process.
struct DemoSite {
    _process: tokio::process::Child,
    url: String,
}

async fn start_demo(users_file: &Path, site_id: &str, server_id: &str, extra: &[&str]) -> DemoSite {
    let mut process = tokio::process::Command::new(lanmesh_tests::cli_binary().expect("cli"))
        .args([
            "partner-demo",
            "--listen",
            "127.0.0.1:0",
            "--site-id",
            site_id,
        ])
        .args(["--server-id", server_id, "--users"])
        .arg(users_file)
        .args(extra)
        .env("LANMESH_PARTNER_SECRET", SITE_SECRET)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts the partner demo");
    let stdout = process.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the demo says where it listens in time")
        .expect("reads stdout")
        .expect("a line");
    let address = line
        .strip_prefix("partner-demo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    DemoSite {
        _process: process,
        url: format!("http://{address}"),
    }
}

/// What the proxy does with verification requests (other paths are always forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Forward,
    /// Forward the first request and remember it; send it again instead of every later one.
    ReplayFirst,
    /// Never answer.
    Hang,
    /// Answer 200 with a body over the node's cap.
    Oversize,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Forward, but drop the answer's signature.
    Unsigned,
}

struct ProxyState {
    upstream: String,
    mode: Mutex<ProxyMode>,
    recorded: Mutex<Option<(web::Bytes, String)>>,
    n_verify_requests: AtomicU64,
    http: reqwest::Client,
}

async fn proxy(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ProxyState>,
) -> HttpResponse {
    let path = request.path().to_owned();
    let mut signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = body;
    let mode = if path == "/verify" {
        state.n_verify_requests.fetch_add(1, Ordering::SeqCst);
        *state.mode.lock().unwrap()
    } else {
        ProxyMode::Forward
    };
    match mode {
        ProxyMode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return HttpResponse::GatewayTimeout().finish();
        }
        ProxyMode::Oversize => return HttpResponse::Ok().body(vec![b' '; 600 * 1024]),
        ProxyMode::Malformed => return HttpResponse::Ok().body("{\"result\": \"ok\", \"nonce\": "),
        ProxyMode::ReplayFirst => {
            let mut recorded = state.recorded.lock().unwrap();
            match &*recorded {
                Some((first_body, first_signature)) => {
                    body = first_body.clone();
                    signature = first_signature.clone();
                }
                None => *recorded = Some((body.clone(), signature.clone())),
            }
        }
        ProxyMode::Forward | ProxyMode::Unsigned => {}
    }
    let answer = state
        .http
        .post(format!("{}{path}", state.upstream))
        .header(SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the demo answers the proxy");
    let status = answer.status().as_u16();
    let answer_signature = answer
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answer_body = answer.bytes().await.expect("reads the answer");
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status"));
    if mode != ProxyMode::Unsigned {
        response.insert_header((SIGNATURE_HEADER, answer_signature));
    }
    response.content_type("application/json").body(answer_body)
}

/// An HTTP proxy in front of a partner site.
struct SiteProxy {
    state: web::Data<ProxyState>,
    handle: ServerHandle,
    url: String,
}

impl SiteProxy {
    async fn start(upstream: &str) -> Self {
        let state = web::Data::new(ProxyState {
            upstream: upstream.to_owned(),
            mode: Mutex::new(ProxyMode::Forward),
            recorded: Mutex::new(None),
            n_verify_requests: AtomicU64::new(0),
            http: reqwest::Client::new(),
        });
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .default_service(web::post().to(proxy))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind("127.0.0.1:0")
        .expect("binds");
        let bound = *server.addrs().first().expect("a bound address");
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            state,
            handle,
            url: format!("http://{bound}"),
        }
    }

    fn set_mode(&self, mode: ProxyMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn n_verify_requests(&self) -> u64 {
        self.state.n_verify_requests.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// The operator API of one node.
struct Operator {
    http: reqwest::Client,
    base: String,
}

impl Operator {
    fn new(node_address: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{node_address}/api/v1/partner-registry"),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token_opt: Option<&str>,
        body_opt: Option<serde_json::Value>,
    ) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token_opt {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body_opt {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the operator API answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        self.send(reqwest::Method::PUT, path, Some(OPERATOR_TOKEN), Some(body))
            .await
    }

    async fn set_server_id(&self) {
        let (status, text) = self
            .put("/server-id", json!({ "server_id": SERVER_ID }))
            .await;
        assert_eq!(status, 204, "{text}");
    }

    async fn add_site(&self, site_id: &str, url: &str, secret: &str, enabled: bool) {
        let body = json!({
            "display_name": format!("Site {site_id}"),
            "endpoint_url": url,
            "secret": secret,
            "enabled": enabled,
        });
        let (status, text) = self.put(&format!("/sites/{site_id}"), body).await;
        assert_eq!(status, 200, "adding {site_id}: {text}");
    }
}

fn partner_login_request(
    site: &str,
    username: &str,
    password: &str,
    device: &str,
) -> PartnerLoginRequest {
    PartnerLoginRequest {
        site: site.to_owned(),
        username: username.to_owned(),
        password: password.to_owned(),
        device: device.to_owned(),
        mode: Mode::Client,
    }
}

async fn partner_login(
    client: &mut ImClient,
    site: &str,
    username: &str,
    password: &str,
) -> Result<SessionReply, ErrorBody> {
    client
        .request(
            "session.partner_login",
            None,
            &partner_login_request(site, username, password, "phone"),
        )
        .await
        .expect("a reply")
}

async fn expect_refused(
    client: &mut ImClient,
    what: &str,
    site: &str,
    username: &str,
    code: ErrorCode,
) -> ErrorBody {
    let reply = partner_login(client, site, username, &password_of(username)).await;
    expect_error(what, reply, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_login_links_an_account_and_imports_contacts_and_posts() {
    let test_name = "partner_login_links_an_account_and_imports_contacts_and_posts";
    let Some(cluster) = start_cluster(test_name, 2, &node_settings()).await else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let users_file = directory.path().join("users.toml");
    write_users_file(&users_file).await;
    let demo = start_demo(&users_file, "forum", SERVER_ID, &[]).await;

    // The operator API: refused without the token, then the registry is filled.
    let operator = Operator::new(&address(&cluster, 0));
    let (status, _) = operator.send(reqwest::Method::GET, "", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = operator
        .send(
            reqwest::Method::GET,
            "",
            Some("not-the-operator-token-at-all-0000"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, text) = operator
        .put(
            "/sites/forum",
            json!({"display_name": "Forum", "endpoint_url": "http://user:pw@127.0.0.1:1", "secret": SITE_SECRET, "enabled": true}),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("credentials"), "{text}");
    let (status, text) = operator
        .put(
            "/sites/forum",
            json!({"display_name": "Forum", "endpoint_url": demo.url, "enabled": true}),
        )
        .await;
    assert_eq!(status, 400, "a new site without a secret: {text}");
    operator.set_server_id().await;
    operator
        .add_site("forum", &demo.url, SITE_SECRET, true)
        .await;
    let (status, text) = operator
        .send(reqwest::Method::GET, "", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{text}");
    let registry: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(registry["server_id"], SERVER_ID);
    assert_eq!(registry["sites"][0]["site_id"], "forum");
    assert_eq!(registry["sites"][0]["revision"], 1);
    assert!(
        !text.contains(SITE_SECRET),
        "the secret is never returned: {text}"
    );

    let mut alice_phone = connect(&address(&cluster, 0)).await;
    let mut alice_laptop = connect(&address(&cluster, 1)).await;
    let mut bob_client = connect(&address(&cluster, 1)).await;

    let wrong = partner_login(&mut alice_phone, "forum", "alice", "not-her-password").await;
    expect_error("wrong password", wrong, ErrorCode::LoginFailed);

    // Bob logs in first, so alice's contact list can suggest him.
    let bob = partner_login(&mut bob_client, "forum", "bob", &password_of("bob"))
        .await
        .expect("bob logs in");
    assert_eq!(bob.account, "forum~bob");
    assert!(bob.account_created);

    let first = partner_login(&mut alice_phone, "forum", "ALICE", &password_of("alice"))
        .await
        .expect("alice logs in");
    assert_eq!(
        first.account, "forum~alice",
        "linked to the site's canonical username"
    );
    assert_eq!(first.display_name, "Alice");
    assert!(first.account_created);
    let pushed: PartnerPostsReply = alice_phone
        .wait_for_op("partner.posts", EVENT_TIMEOUT)
        .await
        .expect("the site's posts are pushed after login");
    assert_eq!(pushed.site, "forum");
    let post_ids: Vec<&str> = pushed
        .posts
        .iter()
        .map(|post| post.post_id.as_str())
        .collect();
    assert_eq!(post_ids, ["p1", "p2", "p0"], "newest first");
    assert_eq!(
        pushed.posts.first().map(|post| post.published_at_ms),
        Some(1_700_000_300_000)
    );

    // A second login, on another node and device, reuses the account.
    let second: SessionReply = alice_laptop
        .request_ok(
            "session.partner_login",
            None,
            &partner_login_request("forum", "alice", &password_of("alice"), "laptop"),
        )
        .await
        .expect("alice logs in again");
    assert_eq!(second.account, "forum~alice");
    assert!(!second.account_created);
    assert_ne!(second.session, first.session);

    // Contacts, paged, with bob (who has logged in here) as a friend suggestion.
    let page_one: PartnerContactsReply = alice_phone
        .request_ok(
            "partner.contacts",
            first.key.as_deref(),
            &PartnerPageRequest {
                cursor: None,
                limit: Some(2),
            },
        )
        .await
        .expect("first page");
    let names: Vec<(&str, Option<&str>)> = page_one
        .contacts
        .iter()
        .map(|contact| (contact.username.as_str(), contact.account.as_deref()))
        .collect();
    assert_eq!(names, [("bob", Some("forum~bob")), ("carol", None)]);
    let page_two: PartnerContactsReply = alice_phone
        .request_ok(
            "partner.contacts",
            first.key.as_deref(),
            &PartnerPageRequest {
                cursor: page_one.next_cursor.clone(),
                limit: Some(2),
            },
        )
        .await
        .expect("second page");
    let rest: Vec<&str> = page_two
        .contacts
        .iter()
        .map(|contact| contact.username.as_str())
        .collect();
    assert_eq!(rest, ["dave"]);
    assert_eq!(page_two.next_cursor, None);
    let too_big: Result<PartnerContactsReply, ErrorBody> = alice_phone
        .request(
            "partner.contacts",
            first.key.as_deref(),
            &PartnerPageRequest {
                cursor: None,
                limit: Some(101),
            },
        )
        .await
        .expect("a reply");
    expect_error("a page over the limit", too_big, ErrorCode::BadRequest);

    let posts: PartnerPostsReply = alice_laptop
        .request_ok(
            "partner.posts",
            second.key.as_deref(),
            &PartnerPageRequest {
                cursor: None,
                limit: Some(2),
            },
        )
        .await
        .expect("posts");
    assert_eq!(posts.posts.len(), 2);
    assert!(posts.next_cursor.is_some());

    // A linked account is a full IM account: alice befriends the suggested bob.
    let _: Empty = alice_phone
        .request_ok(
            "friend.request",
            first.key.as_deref(),
            &FriendRequestRequest {
                to: "forum~bob".to_owned(),
                note: String::new(),
            },
        )
        .await
        .expect("friend request to a linked account");
    bob_client
        .wait_for_push(EVENT_TIMEOUT, |push| push.op == "friend.request")
        .await
        .expect("bob hears of it");

    // A native account has no partner contacts.
    let mut native = connect(&address(&cluster, 0)).await;
    let _: RegisterReply = native
        .request_ok(
            "account.register",
            None,
            &RegisterRequest {
                username: "native1".to_owned(),
                password: "native password".to_owned(),
                display_name: "Native".to_owned(),
            },
        )
        .await
        .expect("registers");
    let native_session: SessionReply = native
        .request_ok(
            "session.login",
            None,
            &LoginRequest {
                username: "native1".to_owned(),
                password: "native password".to_owned(),
                device: "pc".to_owned(),
                mode: Mode::Client,
            },
        )
        .await
        .expect("logs in");
    let refused: Result<PartnerContactsReply, ErrorBody> = native
        .request(
            "partner.contacts",
            native_session.key.as_deref(),
            &PartnerPageRequest::default(),
        )
        .await
        .expect("a reply");
    expect_error(
        "a native account's partner contacts",
        refused,
        ErrorCode::Invalid,
    );

    finish(cluster, vec![alice_phone, alice_laptop, bob_client, native]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_login_refusals_are_distinct_and_create_no_account() {
    let test_name = "partner_login_refusals_are_distinct_and_create_no_account";
    let Some(cluster) = start_cluster(test_name, 1, &node_settings()).await else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let users_file = directory.path().join("users.toml");
    write_users_file(&users_file).await;
    let forum = start_demo(&users_file, "forum", SERVER_ID, &[]).await;
    let strict = start_demo(&users_file, "strict", "another-im-server", &[]).await;
    let skewed = start_demo(
        &users_file,
        "skewed",
        SERVER_ID,
        &["--clock-offset-secs", "3600"],
    )
    .await;
    let proxy = SiteProxy::start(&forum.url).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("address").port()
    };

    let operator = Operator::new(&address(&cluster, 0));
    operator
        .add_site("forum", &proxy.url, SITE_SECRET, true)
        .await;
    operator
        .add_site("closed", &proxy.url, SITE_SECRET, false)
        .await;
    operator
        .add_site("strict", &strict.url, SITE_SECRET, true)
        .await;
    operator
        .add_site("skewed", &skewed.url, SITE_SECRET, true)
        .await;
    operator
        .add_site(
            "wrongkey",
            &forum.url,
            "a-different-secret-0123456789",
            true,
        )
        .await;
    operator
        .add_site(
            "down",
            &format!("http://127.0.0.1:{closed_port}"),
            SITE_SECRET,
            true,
        )
        .await;
    let mut client = connect(&address(&cluster, 0)).await;

    let error = expect_refused(
        &mut client,
        "no server id yet",
        "forum",
        "alice",
        ErrorCode::Unavailable,
    )
    .await;
    assert!(error.message.contains("partner id"), "{error:?}");
    operator.set_server_id().await;

    // Refused at once, with no call out.
    expect_refused(
        &mut client,
        "unknown site",
        "nowhere",
        "alice",
        ErrorCode::UnknownSite,
    )
    .await;
    expect_refused(
        &mut client,
        "malformed site id",
        "No Such Site",
        "alice",
        ErrorCode::UnknownSite,
    )
    .await;
    expect_refused(
        &mut client,
        "disabled site",
        "closed",
        "alice",
        ErrorCode::SiteDisabled,
    )
    .await;
    assert_eq!(
        proxy.n_verify_requests(),
        0,
        "no call out for unknown or disabled sites"
    );

    // Refused by the site, each for its own reason.
    expect_refused(
        &mut client,
        "server not authorised",
        "strict",
        "alice",
        ErrorCode::PartnerRejectedServer,
    )
    .await;
    expect_refused(
        &mut client,
        "bad signature",
        "wrongkey",
        "alice",
        ErrorCode::PartnerBadSignature,
    )
    .await;
    expect_refused(
        &mut client,
        "stale timestamp",
        "skewed",
        "alice",
        ErrorCode::PartnerStaleTimestamp,
    )
    .await;
    let wrong = partner_login(&mut client, "forum", "alice", "wrong-password").await;
    expect_error("wrong password", wrong, ErrorCode::LoginFailed);
    expect_refused(
        &mut client,
        "site down",
        "down",
        "alice",
        ErrorCode::PartnerUnreachable,
    )
    .await;

    // Answers the node must not accept.
    for (mode, what) in [
        (ProxyMode::Oversize, "oversize answer"),
        (ProxyMode::Malformed, "malformed answer"),
        (ProxyMode::Unsigned, "unsigned answer"),
    ] {
        proxy.set_mode(mode);
        let error = expect_refused(
            &mut client,
            what,
            "forum",
            "alice",
            ErrorCode::PartnerBadAnswer,
        )
        .await;
        println!("{what}: {}", error.message);
    }

    // A replayed verification request: bob's first login goes through, the replay of it is
    // refused by the site.
    proxy.set_mode(ProxyMode::ReplayFirst);
    partner_login(&mut client, "forum", "bob", &password_of("bob"))
        .await
        .expect("bob's first login");
    expect_refused(
        &mut client,
        "replayed nonce",
        "forum",
        "bob",
        ErrorCode::PartnerReplayedNonce,
    )
    .await;

    // Disabling a site takes effect at once; enabling it again restores logins.
    let (status, text) = operator
        .put(
            "/sites/forum",
            json!({"display_name": "Forum", "endpoint_url": proxy.url, "enabled": false, "expected_revision": 1}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    expect_refused(
        &mut client,
        "disabled now",
        "forum",
        "alice",
        ErrorCode::SiteDisabled,
    )
    .await;
    let (status, text) = operator
        .put(
            "/sites/forum",
            json!({"display_name": "Forum", "endpoint_url": proxy.url, "enabled": true, "expected_revision": 1}),
        )
        .await;
    assert_eq!(status, 409, "a stale revision: {text}");
    let (status, text) = operator
        .put(
            "/sites/forum",
            json!({"display_name": "Forum", "endpoint_url": proxy.url, "enabled": true, "expected_revision": 2}),
        )
        .await;
    assert_eq!(status, 200, "{text}");

    // None of the refusals created alice's account: her first success does.
    proxy.set_mode(ProxyMode::Forward);
    let alice = partner_login(&mut client, "forum", "alice", &password_of("alice"))
        .await
        .expect("alice logs in");
    assert!(
        alice.account_created,
        "an earlier refusal created the account"
    );

    proxy.stop().await;
    finish(cluster, vec![client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_breaker_opens_on_a_slow_site_and_closes_again() {
    let test_name = "partner_breaker_opens_on_a_slow_site_and_closes_again";
    let open_for = Duration::from_millis(2_000);
    let mut settings = node_settings();
    settings.extend([
        ("LANMESH__PARTNERS__REQUEST_TIMEOUT_MS", "500"),
        ("LANMESH__PARTNERS__BREAKER_FAILURES", "3"),
        ("LANMESH__PARTNERS__BREAKER_OPEN_MS", "2000"),
    ]);
    let Some(cluster) = start_cluster(test_name, 1, &settings).await else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let users_file = directory.path().join("users.toml");
    write_users_file(&users_file).await;
    let forum = start_demo(&users_file, "forum", SERVER_ID, &[]).await;
    let proxy = SiteProxy::start(&forum.url).await;
    let operator = Operator::new(&address(&cluster, 0));
    operator.set_server_id().await;
    operator
        .add_site("forum", &proxy.url, SITE_SECRET, true)
        .await;
    let mut client = connect(&address(&cluster, 0)).await;

    proxy.set_mode(ProxyMode::Hang);
    for attempt in 0..3 {
        let started = Instant::now();
        expect_refused(
            &mut client,
            &format!("slow site, attempt {attempt}"),
            "forum",
            "alice",
            ErrorCode::PartnerTimeout,
        )
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
    let calls_before = proxy.n_verify_requests();
    let started = Instant::now();
    let open = expect_refused(
        &mut client,
        "breaker open",
        "forum",
        "alice",
        ErrorCode::PartnerCircuitOpen,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "fails fast: {:?}",
        started.elapsed()
    );
    let retry_after_ms = open.retry_after_ms.expect("retry_after_ms");
    assert!(
        retry_after_ms <= 2_000 && retry_after_ms > 0,
        "{retry_after_ms}"
    );
    assert_eq!(
        proxy.n_verify_requests(),
        calls_before,
        "an open breaker calls nothing"
    );

    // The site recovers: after the open period one trial goes through and closes the breaker.
    proxy.set_mode(ProxyMode::Forward);
    let deadline = Instant::now() + open_for + EVENT_TIMEOUT;
    let recovered_at = loop {
        match partner_login(&mut client, "forum", "alice", &password_of("alice")).await {
            Ok(_) => break Instant::now(),
            Err(error)
                if error.code == ErrorCode::PartnerCircuitOpen && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("login after recovery: {error:?}"),
        }
    };
    assert!(recovered_at.duration_since(started) >= open_for - Duration::from_millis(300));
    partner_login(&mut client, "forum", "alice", &password_of("alice"))
        .await
        .expect("closed again: the next login goes straight through");

    let (status, metrics) = http_get(&address(&cluster, 0), "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    for outcome in ["timeout", "circuit_open", "ok"] {
        assert!(
            metrics.contains(&format!(
                "lanmesh_partner_calls_total{{site=\"forum\",outcome=\"{outcome}\"}}"
            )),
            "no {outcome} in {metrics}"
        );
    }

    proxy.stop().await;
    finish(cluster, vec![client]).await;
}
