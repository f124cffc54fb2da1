//! Venue gateways and the first monitor end to end (S0 steps 1, 2 and 5): a gateway registers
//! over the WebSocket, an overlapping venue is refused naming the conflict, bad segments are
//! refused, the gateway logs in, and client logins count in the venue's segment only when they
//! come from inside it, from the socket's address or a trusted proxy's header; a forged header
//! from an untrusted peer counts nothing. Clients bind distinct 127.0.0.x source addresses.

use crate::im::{EVENT_TIMEOUT, address, connect, expect_error, finish, start_cluster};
use lanmesh::edge::protocol::{
    ErrorBody, ErrorCode, GatewayLoginReply, GatewayLoginRequest, GatewayRegisterReply,
    GatewayRegisterRequest, GatewayStatusReply, LoginRequest, Mode, RegisterReply, RegisterRequest,
    SessionReply, WireGatewayStatus,
};
use lanmesh::load::http_client::http_get;
use lanmesh::load::metrics_text::metric_value;
use lanmesh::load::ws_client::{ConnectOptions, Empty, ImClient};
use lanmesh_tests::TestCluster;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

const OPERATOR_TOKEN: &str = "operator-token-for-venue-tests-0123456789";
const PASSWORD: &str = "correct horse battery";
const GATEWAY_PASSWORD: &str = "gateway password 1";

fn gateway_request(name: &str, segments: &[&str], password: bool) -> GatewayRegisterRequest {
    GatewayRegisterRequest {
        venue_name: name.to_owned(),
        venue_address: "1 Main Street".to_owned(),
        admin_account: "venueadmin".to_owned(),
        segments: segments
            .iter()
            .map(|segment| (*segment).to_owned())
            .collect(),
        password: password.then(|| GATEWAY_PASSWORD.to_owned()),
    }
}

async fn register_gateway(
    client: &mut ImClient,
    name: &str,
    segments: &[&str],
) -> Result<GatewayRegisterReply, ErrorBody> {
    client
        .request(
            "gateway.register",
            None,
            &gateway_request(name, segments, true),
        )
        .await
        .expect("a reply")
}

async fn sign_up(client: &mut ImClient, username: &str) {
    let _: RegisterReply = client
        .request_ok(
            "account.register",
            None,
            &RegisterRequest {
                username: username.to_owned(),
                password: PASSWORD.to_owned(),
                display_name: username.to_owned(),
            },
        )
        .await
        .expect("registers");
}

/// Registers `username` and logs it in from a client connected as `options` say; returns the
/// connection (the session lasts while it is open).
async fn client_logs_in(address: &str, username: &str, options: &ConnectOptions) -> ImClient {
    let mut client = ImClient::connect_with(address, options)
        .await
        .expect("connects");
    sign_up(&mut client, username).await;
    let _: SessionReply = client
        .request_ok(
            "session.login",
            None,
            &LoginRequest {
                username: username.to_owned(),
                password: PASSWORD.to_owned(),
                device: "pc".to_owned(),
                mode: Mode::Client,
            },
        )
        .await
        .expect("logs in");
    client
}

fn from(source_ip: &str) -> ConnectOptions {
    ConnectOptions {
        source_ip_opt: Some(source_ip.parse().expect("an address")),
        forwarded_for_opt: None,
    }
}

/// From `source_ip`, with an `X-Forwarded-For` naming `client_ip`.
fn forwarding(source_ip: &str, client_ip: &str) -> ConnectOptions {
    ConnectOptions {
        forwarded_for_opt: Some(client_ip.to_owned()),
        ..from(source_ip)
    }
}

async fn operator_get(node_address: &str, path: &str) -> (u16, Value) {
    operator_send(node_address, reqwest::Method::GET, path, None).await
}

/// Waits until every node's segment index holds at least `revision` of the directory.
async fn wait_for_index(cluster: &TestCluster, n_nodes: usize, revision: f64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    for index in 0..n_nodes {
        loop {
            let (_, metrics) = http_get(&address(cluster, index), "/metrics")
                .await
                .expect("metrics");
            let held = metric_value(&metrics, "lanmesh_edge_venue_index_revision").unwrap_or(0.0);
            if held >= revision {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {index} holds revision {held}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A field of a JSON object (`null` when absent).
fn field<'a>(object: &'a Value, name: &str) -> &'a Value {
    object.get(name).unwrap_or(&Value::Null)
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// Polls the segment's figures over the last hour until `logins` and `distinct` show.
async fn wait_for_figures(node_address: &str, segment: &str, logins: u64, distinct: u64) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let now = now_ms();
        let path = format!(
            "/api/v1/segment-figures?segment={segment}&from_ms={}&to_ms={}",
            now - 3_600_000,
            now + 60_000
        );
        let (status, figures) = operator_get(node_address, &path).await;
        assert_eq!(status, 200, "{figures}");
        if field(&figures, "logins") == logins && field(&figures, "distinct_accounts") == distinct {
            return figures;
        }
        assert!(
            Instant::now() < deadline,
            "{segment}: expected {logins} logins of {distinct} accounts, have {figures}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_register_log_in_and_count_clients_from_inside_their_segments() {
    let Some(cluster) = start_cluster(
        "venues::gateways_register_log_in_and_count_clients_from_inside_their_segments",
        2,
        &[
            ("LANMESH__OPERATOR__TOKEN", OPERATOR_TOKEN),
            ("LANMESH__EDGE__TRUSTED_PROXIES", "127.0.0.2"),
            ("LANMESH__VENUES__INDEX_REFRESH_MS", "200"),
        ],
    )
    .await
    else {
        return;
    };
    let node_a = address(&cluster, 0);
    let node_b = address(&cluster, 1);
    let mut admin = connect(&node_a).await;
    sign_up(&mut admin, "venueadmin").await;

    // Registration: pending; then every kind of bad registration is refused.
    let mut gateway = connect(&node_a).await;
    let registered = register_gateway(&mut gateway, "Cafe One", &["127.0.0.16/28"])
        .await
        .expect("registers");
    assert_eq!(registered.status, WireGatewayStatus::Pending);
    let conflict =
        register_gateway(&mut gateway, "Cafe Two", &["127.0.0.24/29", "127.0.1.0/24"]).await;
    let conflict = expect_error("overlapping segment", conflict, ErrorCode::SegmentConflict);
    assert!(
        conflict.message.contains("127.0.0.16/28")
            && conflict.message.contains(&registered.gateway_id),
        "names the conflict: {}",
        conflict.message
    );
    for (segments, what, fragment) in [
        (vec!["127.0.0.0/8"], "a huge segment", "at most"),
        (vec!["127.0.1.17/28"], "host bits", "127.0.1.16/28"),
        (vec!["not a cidr"], "not a CIDR", "CIDR"),
        (vec!["224.0.0.0/24"], "multicast", "multicast"),
        (vec![], "no segment", "1 to 16"),
    ] {
        let reply = register_gateway(&mut gateway, "Bad Cafe", &segments).await;
        let error = expect_error(what, reply, ErrorCode::BadRequest);
        assert!(
            error.message.contains(fragment),
            "{what}: {}",
            error.message
        );
    }
    let mut no_admin = gateway_request("Cafe", &["127.0.2.0/24"], true);
    no_admin.admin_account = "nobody".to_owned();
    let reply: Result<GatewayRegisterReply, ErrorBody> = gateway
        .request("gateway.register", None, &no_admin)
        .await
        .expect("a reply");
    expect_error(
        "an admin account that does not exist",
        reply,
        ErrorCode::Invalid,
    );

    // Gateway login (on the other node): a wrong password fails; the right one gives a key.
    let mut gateway_b = connect(&node_b).await;
    let wrong: Result<GatewayLoginReply, ErrorBody> = gateway_b
        .request(
            "gateway.login",
            None,
            &GatewayLoginRequest {
                gateway_id: registered.gateway_id.clone(),
                password: "not the password".to_owned(),
            },
        )
        .await
        .expect("a reply");
    expect_error("wrong gateway password", wrong, ErrorCode::LoginFailed);
    let login: GatewayLoginReply = gateway_b
        .request_ok(
            "gateway.login",
            None,
            &GatewayLoginRequest {
                gateway_id: registered.gateway_id.clone(),
                password: GATEWAY_PASSWORD.to_owned(),
            },
        )
        .await
        .expect("the gateway logs in");
    assert_eq!(login.gateway.segments, ["127.0.0.16/28"]);
    assert_eq!(login.gateway.status, WireGatewayStatus::Pending);
    let (status, view) = operator_get(
        &node_a,
        &format!("/api/v1/gateways/{}", registered.gateway_id),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(field(&view, "online"), true);
    assert_eq!(field(&view, "venue_name"), "Cafe One");

    wait_for_index(&cluster, 2, 1.0).await;
    // Clients: two inside the segment (one directly, one behind the trusted proxy), one
    // outside, and one outside forging a header that names an inside address.
    let inside_direct = client_logs_in(&node_a, "inside1", &from("127.0.0.17")).await;
    let inside_proxied =
        client_logs_in(&node_b, "inside2", &forwarding("127.0.0.2", "127.0.0.18")).await;
    let outside = client_logs_in(&node_a, "outside1", &from("127.0.0.40")).await;
    let forged = client_logs_in(&node_b, "forger1", &forwarding("127.0.0.41", "127.0.0.19")).await;
    let figures = wait_for_figures(&node_a, "127.0.0.16/28", 2, 2).await;
    assert!(
        field(&figures, "peak_concurrent")
            .as_u64()
            .expect("a count")
            >= 1,
        "{figures}"
    );
    // Nothing more arrives: the outside and forged logins were not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_figures(&node_b, "127.0.0.16/28", 2, 2).await;

    // Amending moves the venue: its new segment counts from then on.
    let amended: GatewayStatusReply = gateway_b
        .request_ok(
            "gateway.amend",
            Some(login.key.as_str()),
            &gateway_request("Cafe One", &["127.0.0.32/28"], false),
        )
        .await
        .expect("amends");
    assert_eq!(amended.segments, ["127.0.0.32/28"]);
    assert_eq!(amended.revision, 2);
    let status: GatewayStatusReply = gateway_b
        .request_ok("gateway.status", Some(login.key.as_str()), &Empty {})
        .await
        .expect("status");
    assert_eq!(status.segments, ["127.0.0.32/28"]);
    // The old segment is free again: another venue may take it.
    let second = register_gateway(&mut gateway, "Cafe Two", &["127.0.0.16/28"])
        .await
        .expect("the freed segment registers");
    assert_ne!(second.gateway_id, registered.gateway_id);
    let moved = {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client =
                client_logs_in(&node_a, &format!("mover{attempt}"), &from("127.0.0.33")).await;
            let now = now_ms();
            let (_, figures) = operator_get(
                &node_a,
                &format!(
                    "/api/v1/segment-figures?segment=127.0.0.32/28&from_ms={}&to_ms={}",
                    now - 3_600_000,
                    now + 60_000
                ),
            )
            .await;
            if field(&figures, "logins").as_u64().unwrap_or(0) >= 1 {
                break client;
            }
            assert!(Instant::now() < deadline, "the new segment never counted");
            client.close().await.expect("closes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // When the gateway's connection goes, it is offline.
    gateway_b.close().await.expect("closes");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, view) = operator_get(
            &node_a,
            &format!("/api/v1/gateways/{}", registered.gateway_id),
        )
        .await;
        if field(&view, "online") == false {
            break;
        }
        assert!(Instant::now() < deadline, "still online: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = operator_get(&node_a, "/api/v1/gateways/g000000000000000000000000").await;
    assert_eq!(status, 404);

    finish(
        cluster,
        vec![
            admin,
            gateway,
            inside_direct,
            inside_proxied,
            outside,
            forged,
            moved,
        ],
    )
    .await;
}

async fn operator_send(
    node_address: &str,
    method: reqwest::Method,
    path: &str,
    body_opt: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{node_address}{path}"))
        .bearer_auth(OPERATOR_TOKEN);
    if let Some(body) = body_opt {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the operator API answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn gateway_login(address: &str, gateway_id: &str) -> (ImClient, GatewayLoginReply) {
    let mut client = connect(address).await;
    let reply = client
        .request_ok(
            "gateway.login",
            None,
            &GatewayLoginRequest {
                gateway_id: gateway_id.to_owned(),
                password: GATEWAY_PASSWORD.to_owned(),
            },
        )
        .await
        .expect("the gateway logs in");
    (client, reply)
}

/// Certification on demand under an operator's versioned policy: one venue reaches the silver
/// tier and is told at once (online); another is rejected with the measured-vs-required reason
/// and is told at its next login (offline when decided).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certification_certifies_at_the_right_tier_and_rejects_with_reasons() {
    let Some(cluster) = start_cluster(
        "venues::certification_certifies_at_the_right_tier_and_rejects_with_reasons",
        1,
        &[
            ("LANMESH__OPERATOR__TOKEN", OPERATOR_TOKEN),
            ("LANMESH__VENUES__INDEX_REFRESH_MS", "200"),
        ],
    )
    .await
    else {
        return;
    };
    let node = address(&cluster, 0);
    let policy = serde_json::json!({
        "version": 1, "window_days": 1,
        "pass": {"any": [
            {"at_least": {"metric": "client_logins", "value": 2}},
            {"at_least": {"metric": "gateway_online_hours", "value": 100}}]},
        "tiers": [
            {"name": "bronze", "condition": {"at_least": {"metric": "client_logins", "value": 2}}, "permissions": ["campaign.view"]},
            {"name": "silver", "condition": {"at_least": {"metric": "client_logins", "value": 3}}, "permissions": ["campaign.enrol", "campaign.view"]}]
    });
    let (status, body) = operator_get(&node, "/api/v1/certification-policy").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = operator_send(
        &node,
        reqwest::Method::PUT,
        "/api/v1/certification-policy",
        Some(&policy),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = operator_send(
        &node,
        reqwest::Method::PUT,
        "/api/v1/certification-policy",
        Some(&policy),
    )
    .await;
    assert_eq!(status, 409, "the same version again: {body}");
    let mut invalid = policy.clone();
    invalid["version"] = 2.into();
    invalid["window_days"] = 0.into();
    let (status, body) = operator_send(
        &node,
        reqwest::Method::PUT,
        "/api/v1/certification-policy",
        Some(&invalid),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let mut admin = connect(&node).await;
    sign_up(&mut admin, "venueadmin").await;
    let busy = register_gateway(&mut admin, "Busy Cafe", &["127.0.0.48/28"])
        .await
        .expect("registers");
    let quiet = register_gateway(&mut admin, "Quiet Cafe", &["127.0.0.64/28"])
        .await
        .expect("registers");
    let (mut busy_gateway, _) = gateway_login(&node, &busy.gateway_id).await;
    let (quiet_gateway, _) = gateway_login(&node, &quiet.gateway_id).await;
    quiet_gateway.close().await.expect("closes");
    wait_for_index(&cluster, 1, 2.0).await;

    // The window covers every UTC day the activity may fall on (a test may run over midnight).
    let first_day = u64::try_from(now_ms()).expect("after 1970") / 86_400_000 * 86_400_000;
    let mut clients = Vec::new();
    for (index, source_ip) in ["127.0.0.49", "127.0.0.50", "127.0.0.51", "127.0.0.65"]
        .into_iter()
        .enumerate()
    {
        clients.push(client_logs_in(&node, &format!("player{index}"), &from(source_ip)).await);
    }
    wait_for_figures(&node, "127.0.0.48/28", 3, 3).await;
    wait_for_figures(&node, "127.0.0.64/28", 1, 1).await;

    let last_day = u64::try_from(now_ms()).expect("after 1970") / 86_400_000 * 86_400_000;
    let window = serde_json::json!({"from_ms": first_day, "to_ms": last_day + 86_400_000});
    let (status, body) = operator_send(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/gateways/{}/certify", busy.gateway_id),
        Some(&serde_json::json!({"from_ms": first_day + 1})),
    )
    .await;
    assert_eq!(status, 400, "a window not on midnights: {body}");
    let (status, certified) = operator_send(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/gateways/{}/certify", busy.gateway_id),
        Some(&window),
    )
    .await;
    assert_eq!(status, 200, "{certified}");
    assert_eq!(field(&certified, "status"), "certified");
    assert_eq!(field(&certified, "tier"), "silver");
    assert_eq!(field(&certified, "policy_version"), 1);
    let pushed: lanmesh::edge::protocol::WireCertification = busy_gateway
        .wait_for_op("gateway.certification", EVENT_TIMEOUT)
        .await
        .expect("the online gateway is told at once");
    assert_eq!(pushed.tier.as_deref(), Some("silver"));
    assert_eq!(pushed.permissions, ["campaign.enrol", "campaign.view"]);

    let (status, rejected) = operator_send(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/gateways/{}/certify", quiet.gateway_id),
        Some(&window),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(field(&rejected, "status"), "rejected");
    let reasons = field(&rejected, "reasons").to_string();
    assert!(
        reasons.contains("client_logins: measured 1, at least 2 required"),
        "{reasons}"
    );
    // The quiet venue was offline: its next login brings the result.
    let (quiet_gateway, login) = gateway_login(&node, &quiet.gateway_id).await;
    let undelivered = login.undelivered.expect("the result waits for the login");
    assert_eq!(undelivered.status, WireGatewayStatus::Rejected);
    assert_eq!(login.gateway.status, WireGatewayStatus::Rejected);
    let (_, view) = operator_get(&node, &format!("/api/v1/gateways/{}", busy.gateway_id)).await;
    assert_eq!(field(&view, "status"), "certified");
    assert!(
        field(&view, "history")
            .as_array()
            .is_some_and(|history| history.len() == 1),
        "{view}"
    );

    clients.extend([admin, busy_gateway, quiet_gateway]);
    finish(cluster, clients).await;
}
