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

pub(crate) const OPERATOR_TOKEN: &str = "operator-token-for-venue-tests-0123456789";
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

pub(crate) async fn register_gateway(
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

pub(crate) async fn sign_up(client: &mut ImClient, username: &str) {
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
pub(crate) async fn client_logs_in(
    address: &str,
    username: &str,
    options: &ConnectOptions,
) -> ImClient {
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

pub(crate) fn from(source_ip: &str) -> ConnectOptions {
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

pub(crate) async fn operator_get(node_address: &str, path: &str) -> (u16, Value) {
    operator_send(node_address, reqwest::Method::GET, path, None).await
}

/// Waits until every node's segment index holds at least `revision` of the directory.
pub(crate) async fn wait_for_index(cluster: &TestCluster, n_nodes: usize, revision: f64) {
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
pub(crate) fn field<'a>(object: &'a Value, name: &str) -> &'a Value {
    object.get(name).unwrap_or(&Value::Null)
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// The last hour and the next minute, on the wall clock.
fn recent_window() -> (i64, i64) {
    let now = now_ms();
    (now - 3_600_000, now + 60_000)
}

/// Polls the segment's figures over `[from, to)` until `logins` and `distinct` show.
pub(crate) async fn wait_for_figures(
    node_address: &str,
    segment: &str,
    (from_ms, to_ms): (i64, i64),
    logins: u64,
    distinct: u64,
) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let path =
            format!("/api/v1/segment-figures?segment={segment}&from_ms={from_ms}&to_ms={to_ms}");
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
    let figures = wait_for_figures(&node_a, "127.0.0.16/28", recent_window(), 2, 2).await;
    assert!(
        field(&figures, "peak_concurrent")
            .as_u64()
            .expect("a count")
            >= 1,
        "{figures}"
    );
    // Nothing more arrives: the outside and forged logins were not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_figures(&node_b, "127.0.0.16/28", recent_window(), 2, 2).await;

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
            let (from_ms, to_ms) = recent_window();
            let (_, figures) = operator_get(
                &node_a,
                &format!(
                    "/api/v1/segment-figures?segment=127.0.0.32/28&from_ms={from_ms}&to_ms={to_ms}"
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
    // This cluster's clocks follow the wall clock: they cannot be advanced.
    let (status, body) = operator_send(
        &node_a,
        reqwest::Method::POST,
        "/api/v1/clock/advance",
        Some(&serde_json::json!({"by_ms": 86_400_000})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, clock) = operator_get(&node_a, "/api/v1/clock").await;
    assert_eq!(field(&clock, "offset_ms"), 0, "{clock}");

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

pub(crate) async fn operator_send(
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

pub(crate) async fn gateway_login(
    address: &str,
    gateway_id: &str,
) -> (ImClient, GatewayLoginReply) {
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

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;

/// Moves every node's domain clock `by_ms` forward; returns the new domain time of node 0.
async fn advance_clocks(cluster: &TestCluster, n_nodes: usize, by_ms: u64) -> u64 {
    let mut offsets = Vec::new();
    for index in 0..n_nodes {
        let (status, clock) = operator_send(
            &address(cluster, index),
            reqwest::Method::POST,
            "/api/v1/clock/advance",
            Some(&serde_json::json!({ "by_ms": by_ms })),
        )
        .await;
        assert_eq!(status, 200, "{clock}");
        offsets.push(field(&clock, "offset_ms").as_u64().expect("an offset"));
    }
    assert!(
        offsets.windows(2).all(|pair| pair.first() == pair.last()),
        "every node runs at the same offset: {offsets:?}"
    );
    domain_now(&address(cluster, 0)).await
}

async fn domain_now(node_address: &str) -> u64 {
    let (status, clock) = operator_get(node_address, "/api/v1/clock").await;
    assert_eq!(status, 200, "{clock}");
    field(&clock, "now_ms").as_u64().expect("a time")
}

pub(crate) async fn put_policy(node_address: &str, policy: &Value) -> (u16, Value) {
    operator_send(
        node_address,
        reqwest::Method::PUT,
        "/api/v1/certification-policy",
        Some(policy),
    )
    .await
}

/// Polls a gateway's operator view until its status is `status`.
async fn wait_for_gateway_status(node_address: &str, gateway_id: &str, status: &str) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, view) = operator_get(node_address, &format!("/api/v1/gateways/{gateway_id}")).await;
        if field(&view, "status") == status {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{gateway_id} never became {status}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Certification at the window's end, on two nodes whose clocks the test advances: a busy
/// venue whose gateway stays online reaches the silver tier (logins and days online combined)
/// and is told at once; a quiet venue whose gateway is offline is rejected with measured vs
/// required and is told at its next login. Only logins from inside each segment count; each
/// window is decided once although both nodes sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_are_certified_at_their_window_end_on_a_simulated_clock() {
    const N_NODES: usize = 2;
    let Some(cluster) = start_cluster(
        "venues::gateways_are_certified_at_their_window_end_on_a_simulated_clock",
        N_NODES,
        &[
            ("LANMESH__OPERATOR__TOKEN", OPERATOR_TOKEN),
            ("LANMESH__VENUES__INDEX_REFRESH_MS", "200"),
            ("LANMESH__VENUES__CERTIFICATION_SWEEP_MS", "200"),
            ("LANMESH__CLOCK__ALLOW_SIMULATION", "true"),
        ],
    )
    .await
    else {
        return;
    };
    let node_a = address(&cluster, 0);
    let node_b = address(&cluster, 1);
    let policy = serde_json::json!({
        "version": 1, "window_days": 2,
        "pass": {"any": [
            {"at_least": {"metric": "client_logins", "value": 2}},
            {"at_least": {"metric": "gateway_online_hours", "value": 100}}]},
        "tiers": [
            {"name": "bronze", "condition": {"at_least": {"metric": "client_logins", "value": 2}}, "permissions": ["campaign.view"]},
            {"name": "silver", "condition": {"all": [
                {"at_least": {"metric": "client_logins", "value": 3}},
                {"at_least": {"metric": "gateway_days_online", "value": 2}}]},
             "permissions": ["campaign.enrol", "campaign.view"]}]
    });
    let (status, body) = operator_get(&node_a, "/api/v1/certification-policy").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = put_policy(&node_a, &policy).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put_policy(&node_a, &policy).await;
    assert_eq!(status, 409, "the same version again: {body}");
    let mut invalid = policy.clone();
    invalid["version"] = 2.into();
    invalid["window_days"] = 0.into();
    let (status, body) = put_policy(&node_a, &invalid).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = operator_send(
        &node_b,
        reqwest::Method::POST,
        "/api/v1/clock/advance",
        Some(&serde_json::json!({"by_ms": 0})),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let mut admin = connect(&node_a).await;
    sign_up(&mut admin, "venueadmin").await;
    let busy = register_gateway(&mut admin, "Busy Cafe", &["127.0.0.48/28"])
        .await
        .expect("registers");
    let quiet = register_gateway(&mut admin, "Quiet Cafe", &["127.0.0.64/28"])
        .await
        .expect("registers");
    let window_start = busy.window_starts_at_ms;
    assert_eq!(quiet.window_starts_at_ms, window_start);
    assert_eq!(window_start % DAY_MS, 0, "windows start at a midnight");
    wait_for_index(&cluster, N_NODES, 2.0).await;

    // Into the window's first day, one hour after its midnight.
    let now = domain_now(&node_a).await;
    let now = advance_clocks(&cluster, N_NODES, window_start + HOUR_MS - now).await;
    assert!((window_start + HOUR_MS..window_start + 2 * HOUR_MS).contains(&now));
    let (mut busy_gateway, _) = gateway_login(&node_b, &busy.gateway_id).await;
    let (quiet_gateway, _) = gateway_login(&node_a, &quiet.gateway_id).await;
    quiet_gateway.close().await.expect("closes");
    let mut clients = Vec::new();
    for (index, (node, source_ip)) in [
        (&node_a, "127.0.0.49"),
        (&node_b, "127.0.0.50"),
        (&node_a, "127.0.0.51"),
        (&node_b, "127.0.0.65"),
        (&node_a, "127.0.0.40"),
    ]
    .into_iter()
    .enumerate()
    {
        clients.push(client_logs_in(node, &format!("player{index}"), &from(source_ip)).await);
    }
    let window = (
        i64::try_from(window_start).expect("fits"),
        i64::try_from(window_start + 2 * DAY_MS).expect("fits"),
    );
    wait_for_figures(&node_a, "127.0.0.48/28", window, 3, 3).await;
    wait_for_figures(&node_b, "127.0.0.64/28", window, 1, 1).await;

    // Most of the window passes: nothing is decided before its end.
    advance_clocks(&cluster, N_NODES, DAY_MS).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, view) = operator_get(&node_a, &format!("/api/v1/gateways/{}", busy.gateway_id)).await;
    assert_eq!(field(&view, "status"), "pending", "{view}");

    // The window ends: the sweep certifies both.
    advance_clocks(&cluster, N_NODES, DAY_MS).await;
    let pushed: lanmesh::edge::protocol::WireCertification = busy_gateway
        .wait_for_op("gateway.certification", EVENT_TIMEOUT)
        .await
        .expect("the online gateway is told at once");
    assert_eq!(pushed.status, WireGatewayStatus::Certified);
    assert_eq!(pushed.tier.as_deref(), Some("silver"));
    assert_eq!(pushed.permissions, ["campaign.enrol", "campaign.view"]);
    let view = wait_for_gateway_status(&node_a, &busy.gateway_id, "certified").await;
    let history = field(&view, "history")
        .as_array()
        .cloned()
        .unwrap_or_default();
    let record = history.first().expect("one result");
    assert_eq!(field(record, "window_start_ms"), window_start, "{record}");
    assert_eq!(
        field(record, "window_end_ms"),
        window_start + 2 * DAY_MS,
        "{record}"
    );
    let figures = field(record, "figures");
    assert_eq!(
        field(figures, "client_logins"),
        3,
        "only inside logins: {figures}"
    );
    assert_eq!(field(figures, "gateway_days_online"), 2, "{figures}");
    // The second monitor, per day: the whole of the window's second day online.
    let second_day =
        serde_json::json!({"day_start_ms": window_start + DAY_MS, "online_ms": DAY_MS});
    assert!(
        field(&view, "uptime_by_day")
            .as_array()
            .is_some_and(|days| days.contains(&second_day)),
        "{view}"
    );

    let rejected = wait_for_gateway_status(&node_b, &quiet.gateway_id, "rejected").await;
    let (quiet_gateway, login) = gateway_login(&node_b, &quiet.gateway_id).await;
    let undelivered = login.undelivered.expect("the result waits for the login");
    assert_eq!(undelivered.status, WireGatewayStatus::Rejected);
    assert_eq!(
        undelivered.reasons,
        [
            "client_logins: measured 1, at least 2 required",
            "gateway_online_hours: measured 0, at least 100 required"
        ],
        "{rejected}"
    );

    // Both nodes went on sweeping: each window was decided exactly once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut decided = 0.0;
    for index in 0..N_NODES {
        let (_, metrics) = http_get(&address(&cluster, index), "/metrics")
            .await
            .expect("metrics");
        decided += metric_value(&metrics, "lanmesh_edge_window_end_certified_total").unwrap_or(0.0);
        decided += metric_value(&metrics, "lanmesh_edge_window_end_rejected_total").unwrap_or(0.0);
    }
    assert_eq!(decided, 2.0);
    let (_, view) = operator_get(&node_a, &format!("/api/v1/gateways/{}", busy.gateway_id)).await;
    assert_eq!(
        field(&view, "history").as_array().map(Vec::len),
        Some(1),
        "{view}"
    );
    // On demand, an operator may still certify any whole days; other windows are refused.
    let (status, body) = operator_send(
        &node_a,
        reqwest::Method::POST,
        &format!("/api/v1/gateways/{}/certify", busy.gateway_id),
        Some(&serde_json::json!({"from_ms": window_start + 1})),
    )
    .await;
    assert_eq!(status, 400, "a window not on midnights: {body}");

    clients.extend([admin, busy_gateway, quiet_gateway]);
    finish(cluster, clients).await;
}
