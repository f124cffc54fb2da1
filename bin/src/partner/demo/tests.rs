//! The reference site end to end: real HTTP to a started site, every refusal and answer
//! checked for its signature.

use super::*;
use crate::edge::auth::{PasswordCost, hash_password};
use crate::partner::signing;
use crate::partner::wire::{
    AnswerResult, ContactsPage, MAX_CONTACTS_PAGE, MAX_POSTS_PAGE, MAX_REQUEST_BYTES, PageRequest,
    PartnerContact, PartnerPost, PostsPage, Refusal, RefusalReason, SIGNATURE_HEADER,
    VerifyAdmitted, VerifyRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a test secret of 32 bytes.......";
const SITE_ID: &str = "forum";
const SERVER_ID: &str = "im-1";
const MAX_SKEW_SECS: u64 = 60;
/// Cheap enough for tests; the site reads the cost from each hash.
const CHEAP_COST: PasswordCost = PasswordCost {
    memory_kib: 64,
    iterations: 1,
};

/// Four users (Alice with three contacts) and five posts, two published at the same time.
async fn test_users() -> DemoUsers {
    let mut text = String::new();
    for (username, contacts) in [
        ("Alice", r#"["bob", "carol", "dave"]"#),
        ("bob", r#"["Alice"]"#),
        ("carol", "[]"),
        ("dave", "[]"),
    ] {
        let password_hash = hash_password(format!("{username} password"), CHEAP_COST)
            .await
            .unwrap();
        text.push_str(&format!(
            "[[users]]\nusername = {username:?}\ndisplay_name = \"{username} Display\"\n\
             password_hash = {password_hash:?}\ncontacts = {contacts}\n"
        ));
    }
    for (post_id, author, published_at) in [
        ("p1", "alice", 100),
        ("p2", "bob", 300),
        ("p3", "carol", 200),
        ("p4b", "dave", 400),
        ("p4a", "bob", 400),
    ] {
        text.push_str(&format!(
            "[[posts]]\npost_id = {post_id:?}\nauthor = {author:?}\n\
             text = \"post {post_id}\"\npublished_at = {published_at}\n"
        ));
    }
    DemoUsers::from_toml_str(&text).unwrap()
}

async fn start_site(clock_offset_secs: i64) -> DemoSite {
    let config = DemoSiteConfig {
        site_id: SITE_ID.to_owned(),
        secret: SECRET.to_vec(),
        authorised_server_ids: BTreeSet::from([SERVER_ID.to_owned(), "im-2".to_owned()]),
        users: test_users().await,
        max_skew_secs: MAX_SKEW_SECS,
        clock_offset_secs,
    };
    start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn verify_request(username: &str, password: &str) -> VerifyRequest {
    VerifyRequest {
        server_id: SERVER_ID.to_owned(),
        site_id: SITE_ID.to_owned(),
        timestamp: now(),
        nonce: signing::new_nonce().unwrap(),
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

fn page_request(username: &str, cursor: Option<&str>, limit: u32) -> PageRequest {
    PageRequest {
        server_id: SERVER_ID.to_owned(),
        site_id: SITE_ID.to_owned(),
        timestamp: now(),
        nonce: signing::new_nonce().unwrap(),
        username: username.to_owned(),
        cursor: cursor.map(str::to_owned),
        limit,
    }
}

/// An answer as received; every test asserts it is signed.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn decode<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Expects a refusal with `status` and `reason`, echoing `nonce_opt`.
    fn check_refused(&self, status: u16, reason: RefusalReason, nonce_opt: Option<&str>) {
        let refusal: Refusal = self.decode();
        assert_eq!(
            (self.status, refusal.reason),
            (status, reason),
            "{}",
            refusal.message
        );
        assert_eq!(refusal.result, AnswerResult::Refused);
        assert_eq!(refusal.nonce.as_deref(), nonce_opt);
    }
}

/// Posts `body` with `signature` to `route` and checks the answer's signature.
async fn post_raw(site: &DemoSite, route: &str, body: Vec<u8>, signature: &str) -> Reply {
    let response = reqwest::Client::new()
        .post(format!("http://{}/{route}", site.local_addr()))
        .header(SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").cloned();
    let answer_signature = response
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.unwrap().to_vec();
    assert!(
        signing::verify(SECRET, &body, &answer_signature),
        "answer to /{route} ({status}) is not signed: {answer_signature:?}"
    );
    assert_eq!(content_type.unwrap(), "application/json");
    Reply { status, body }
}

/// Posts `request`, signed with the shared secret.
async fn post<T: Serialize>(site: &DemoSite, route: &str, request: &T) -> Reply {
    let body = serde_json::to_vec(request).unwrap();
    let signature = signing::sign(SECRET, &body);
    post_raw(site, route, body, &signature).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_credentials_are_admitted_under_the_canonical_name() {
    let site = start_site(0).await;
    let request = verify_request("ALICE", "Alice password");
    let reply = post(&site, "verify", &request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.decode::<VerifyAdmitted>(),
        VerifyAdmitted {
            result: AnswerResult::Ok,
            nonce: request.nonce,
            username: "Alice".to_owned(),
            display_name: "Alice Display".to_owned(),
        }
    );
    site.stop().await;
}

#[tokio::test]
async fn a_site_started_in_a_plain_tokio_test_stops_gracefully() {
    let site = start_site(0).await;
    let address = site.local_addr();
    assert_ne!(address.port(), 0);
    let reply = post(&site, "verify", &verify_request("bob", "bob password")).await;
    assert_eq!(reply.status, 200);
    site.stop().await;
    let after_stop = reqwest::Client::new()
        .post(format!("http://{address}/verify"))
        .body("{}")
        .send()
        .await;
    assert!(after_stop.is_err(), "still answering: {after_stop:?}");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_bad_credentials() {
    let site = start_site(0).await;
    let wrong_password = verify_request("Alice", "bob password");
    post(&site, "verify", &wrong_password).await.check_refused(
        401,
        RefusalReason::BadCredentials,
        Some(&wrong_password.nonce),
    );
    let unknown_user = verify_request("mallory", "Alice password");
    post(&site, "verify", &unknown_user).await.check_refused(
        401,
        RefusalReason::BadCredentials,
        Some(&unknown_user.nonce),
    );
    site.stop().await;
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused() {
    let site = start_site(0).await;
    let request = verify_request("Alice", "Alice password");
    let body = serde_json::to_vec(&request).unwrap();
    let other_secret = signing::sign(b"another secret, 32 bytes long...", &body);
    post_raw(&site, "verify", body.clone(), &other_secret)
        .await
        .check_refused(401, RefusalReason::BadSignature, Some(&request.nonce));
    let mut tampered = body.clone();
    tampered.push(b' ');
    let original_signature = signing::sign(SECRET, &body);
    post_raw(&site, "verify", tampered, &original_signature)
        .await
        .check_refused(401, RefusalReason::BadSignature, Some(&request.nonce));
    post_raw(&site, "verify", body, "").await.check_refused(
        401,
        RefusalReason::BadSignature,
        Some(&request.nonce),
    );
    site.stop().await;
}

#[tokio::test]
async fn unknown_servers_are_refused() {
    let site = start_site(0).await;
    let mut request = verify_request("Alice", "Alice password");
    request.server_id = "im-9".to_owned();
    post(&site, "verify", &request).await.check_refused(
        403,
        RefusalReason::UnknownServer,
        Some(&request.nonce),
    );
    request.server_id = "im-2".to_owned();
    assert_eq!(post(&site, "verify", &request).await.status, 200);
    site.stop().await;
}

#[tokio::test]
async fn timestamps_outside_the_window_are_stale() {
    let ahead = MAX_SKEW_SECS as i64 + 5;
    let site = start_site(ahead).await;
    let request = verify_request("Alice", "Alice password");
    post(&site, "verify", &request).await.check_refused(
        401,
        RefusalReason::StaleTimestamp,
        Some(&request.nonce),
    );
    let mut in_window = verify_request("Alice", "Alice password");
    in_window.timestamp = now() + ahead.unsigned_abs();
    assert_eq!(post(&site, "verify", &in_window).await.status, 200);
    site.stop().await;
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let site = start_site(0).await;
    let request = verify_request("Alice", "Alice password");
    let body = serde_json::to_vec(&request).unwrap();
    let signature = signing::sign(SECRET, &body);
    let first = post_raw(&site, "verify", body.clone(), &signature).await;
    assert_eq!(first.status, 200);
    post_raw(&site, "verify", body, &signature)
        .await
        .check_refused(409, RefusalReason::ReplayedNonce, Some(&request.nonce));
    site.stop().await;
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let site = start_site(0).await;
    let mut request = verify_request("Alice", "Alice password");
    request.password = "x".repeat(MAX_REQUEST_BYTES);
    let body = serde_json::to_vec(&request).unwrap();
    let signature = signing::sign(SECRET, &body);
    post_raw(&site, "verify", body, &signature)
        .await
        .check_refused(413, RefusalReason::BadRequest, None);
    site.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let site = start_site(0).await;
    let not_json = b"{\"nonce\": ".to_vec();
    let signature = signing::sign(SECRET, &not_json);
    post_raw(&site, "verify", not_json, &signature)
        .await
        .check_refused(400, RefusalReason::BadRequest, None);
    let mut bad_nonce = verify_request("Alice", "Alice password");
    bad_nonce.nonce = "not-a-nonce".to_owned();
    post(&site, "verify", &bad_nonce)
        .await
        .check_refused(400, RefusalReason::BadRequest, None);
    let mut other_site = verify_request("Alice", "Alice password");
    other_site.site_id = "elsewhere".to_owned();
    post(&site, "verify", &other_site).await.check_refused(
        400,
        RefusalReason::BadRequest,
        Some(&other_site.nonce),
    );
    for (limit, cursor) in [(0, None), (MAX_CONTACTS_PAGE + 1, None), (10, Some("x"))] {
        let request = page_request("Alice", cursor, limit);
        post(&site, "contacts", &request).await.check_refused(
            400,
            RefusalReason::BadRequest,
            Some(&request.nonce),
        );
    }
    let too_many_posts = page_request("Alice", None, MAX_POSTS_PAGE + 1);
    post(&site, "posts", &too_many_posts).await.check_refused(
        400,
        RefusalReason::BadRequest,
        Some(&too_many_posts.nonce),
    );
    site.stop().await;
}

#[tokio::test]
async fn contacts_come_in_pages() {
    let site = start_site(0).await;
    let first_request = page_request("alice", None, 2);
    let first_reply = post(&site, "contacts", &first_request).await;
    assert_eq!(first_reply.status, 200);
    let first: ContactsPage = first_reply.decode();
    assert_eq!(first.nonce, first_request.nonce);
    let contact = |username: &str| PartnerContact {
        username: username.to_owned(),
        display_name: format!("{username} Display"),
    };
    assert_eq!(first.contacts, [contact("bob"), contact("carol")]);
    let cursor = first.next_cursor.expect("a second page");
    let second: ContactsPage = post(&site, "contacts", &page_request("alice", Some(&cursor), 2))
        .await
        .decode();
    assert_eq!(
        (second.contacts, second.next_cursor),
        (vec![contact("dave")], None)
    );
    let unknown = page_request("mallory", None, 2);
    post(&site, "contacts", &unknown).await.check_refused(
        404,
        RefusalReason::UnknownUser,
        Some(&unknown.nonce),
    );
    site.stop().await;
}

#[tokio::test]
async fn posts_come_newest_first_in_pages() {
    let site = start_site(0).await;
    let mut post_ids = Vec::new();
    let mut cursor_opt: Option<String> = None;
    let mut n_pages = 0;
    loop {
        let request = page_request("carol", cursor_opt.as_deref(), 2);
        let page: PostsPage = post(&site, "posts", &request).await.decode();
        assert_eq!(page.nonce, request.nonce);
        assert!(page.posts.len() <= 2);
        n_pages += 1;
        post_ids.extend(page.posts.iter().map(|post| post.post_id.clone()));
        if n_pages == 1 {
            assert_eq!(
                page.posts.first(),
                Some(&PartnerPost {
                    post_id: "p4a".to_owned(),
                    author: "bob".to_owned(),
                    text: "post p4a".to_owned(),
                    published_at: 400,
                })
            );
        }
        match page.next_cursor {
            Some(next) => cursor_opt = Some(next),
            None => break,
        }
    }
    assert_eq!(n_pages, 3);
    assert_eq!(post_ids, ["p4a", "p4b", "p2", "p3", "p1"]);
    let unknown = page_request("mallory", None, 2);
    post(&site, "posts", &unknown).await.check_refused(
        404,
        RefusalReason::UnknownUser,
        Some(&unknown.nonce),
    );
    site.stop().await;
}

#[test]
fn configs_with_short_secrets_or_no_servers_are_refused() {
    let config = |secret: &[u8], server_ids: &[&str]| DemoSiteConfig {
        site_id: SITE_ID.to_owned(),
        secret: secret.to_vec(),
        authorised_server_ids: server_ids.iter().map(|id| (*id).to_owned()).collect(),
        users: DemoUsers::from_toml_str("").unwrap(),
        max_skew_secs: MAX_SKEW_SECS,
        clock_offset_secs: 0,
    };
    assert!(config(SECRET, &[SERVER_ID]).validate().is_ok());
    let short = config(b"fifteen bytes..", &[SERVER_ID])
        .validate()
        .unwrap_err();
    assert_eq!(
        short.to_string(),
        "the shared secret is 15 bytes; it must be at least 16"
    );
    assert!(matches!(
        config(SECRET, &[]).validate(),
        Err(DemoError::NoAuthorisedServer)
    ));
    let mut bad_site = config(SECRET, &[SERVER_ID]);
    bad_site.site_id = "Forum!".to_owned();
    assert!(matches!(
        bad_site.validate(),
        Err(DemoError::InvalidSiteId { .. })
    ));
}

/// The worked example of docs/partner-api.md: the same bytes and signatures.
#[test]
fn the_documented_example_is_signed_as_shown() {
    let secret = b"demo-shared-secret-0123456789";
    let nonce = "5f2b9c0e8a7d4c3b2a1f0e9d8c7b6a59";
    let request = serde_json::to_vec(&VerifyRequest {
        server_id: "im-1".to_owned(),
        site_id: "demo".to_owned(),
        timestamp: 1_767_225_600,
        nonce: nonce.to_owned(),
        username: "alice".to_owned(),
        password: "wonderland-42".to_owned(),
    })
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&request),
        r#"{"server_id":"im-1","site_id":"demo","timestamp":1767225600,"nonce":"5f2b9c0e8a7d4c3b2a1f0e9d8c7b6a59","username":"alice","password":"wonderland-42"}"#
    );
    assert_eq!(
        signing::sign(secret, &request),
        "v1=5b0befabf53d311d73c04ef4d62a373e5dd6bcf52add1cccd8550f077ee42f1f"
    );
    let answer = serde_json::to_vec(&VerifyAdmitted {
        result: AnswerResult::Ok,
        nonce: nonce.to_owned(),
        username: "Alice".to_owned(),
        display_name: "Alice Liddell".to_owned(),
    })
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        r#"{"result":"ok","nonce":"5f2b9c0e8a7d4c3b2a1f0e9d8c7b6a59","username":"Alice","display_name":"Alice Liddell"}"#
    );
    assert_eq!(
        signing::sign(secret, &answer),
        "v1=c43ce07b134bc0295e6e9b7150506d34042079afc1f05acd8976da0781073b4c"
    );
    let refusal = serde_json::to_vec(&Refusal {
        result: AnswerResult::Refused,
        nonce: Some(nonce.to_owned()),
        reason: RefusalReason::BadCredentials,
        message: "wrong username or password".to_owned(),
    })
    .unwrap();
    assert_eq!(
        signing::sign(secret, &refusal),
        "v1=018fd7e60919c361434c71f31de6abaf521cb3fea20fca52576d55e6e6531cae"
    );
}
