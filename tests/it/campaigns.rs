//! Campaigns end to end (S0 steps 6–13) on two real nodes: three venues, two certified (silver
//! and bronze) and one rejected; a published campaign's notice reaches exactly the certified
//! venues' gateways and the clients inside them; enrolment and eligibility refusals say why;
//! a venue allocates up to its quota and is then refused; an account claims once, whether it
//! tries again at the same venue or at another; units show in the account; usage, rankings,
//! winners and their rewards; and the ledgers' stored journals replay to the live balances.

use crate::im::{EVENT_TIMEOUT, address, connect, finish, start_cluster};
use crate::venues::{
    OPERATOR_TOKEN, field, from, gateway_login, operator_get, operator_send, put_policy,
    register_gateway, sign_up, wait_for_figures, wait_for_index,
};
use lanmesh::edge::campaign_wire::{
    AllocateBatchRequest, AllocationResultsReply, AllocationStatus, CampaignListReply, CampaignRef,
    ClientCampaignReply, ClientCampaignsReply, EnrolReply, ReportUsageRequest, RequestUnitsRequest,
    UnitRequestsReply, UnitRequestsRequest, WireAllocation, WireAllocationResult,
    WireCampaignNotice,
};
use lanmesh::edge::protocol::{
    ErrorCode, LoginRequest, Mode, SessionReply, UnitsIssuedPush, WireReward,
};
use lanmesh::load::ws_client::{Empty, ImClient};
use serde_json::{Value, json};
use std::time::Duration;

/// How long a connection that should get nothing is watched.
const QUIET: Duration = Duration::from_millis(800);

/// A client logged in from `source_ip`, with its key.
pub(crate) struct Player {
    pub(crate) client: ImClient,
    pub(crate) key: String,
}

pub(crate) async fn player(node: &str, username: &str, source_ip: &str) -> Player {
    let mut client = ImClient::connect_with(node, &from(source_ip))
        .await
        .expect("connects");
    sign_up(&mut client, username).await;
    let session: SessionReply = client
        .request_ok(
            "session.login",
            None,
            &LoginRequest {
                username: username.to_owned(),
                password: "correct horse battery".to_owned(),
                device: "pc".to_owned(),
                mode: Mode::Client,
            },
        )
        .await
        .expect("logs in");
    Player {
        client,
        key: session.key.expect("a login has a key"),
    }
}

fn definition(title: &str, min_tier: &str, activity: &Value) -> Value {
    json!({
        "kind": "promotion",
        "title": title,
        "text": "Two free hours of the new game's closed test.",
        "enrol_opens_at_ms": 0,
        "enrol_closes_at_ms": 4_000_000_000_000_u64,
        "eligibility": {"min_tier": min_tier, "activity_days": 1, "activity": activity},
        "total_units": 10,
        "venue_quota": 3,
        "user_limit": 2,
        "scoring": {"points_per_unit_allocated": 10, "points_per_unit_used": 1,
                    "venue_points_per_user_served": 5},
        "winners": {"top_users": 1, "top_venues": 1,
                    "user_reward": "a month of premium", "venue_reward": "a new router"}
    })
}

fn allocation(op_id: &str, account: &str, units: u64) -> WireAllocation {
    WireAllocation {
        op_id: op_id.to_owned(),
        account: account.to_owned(),
        units,
        timeout_ms: Some(10_000),
    }
}

async fn allocate(
    gateway: &mut ImClient,
    key: &str,
    allocations: Vec<WireAllocation>,
) -> Vec<WireAllocationResult> {
    let reply: AllocationResultsReply = gateway
        .request_ok(
            "gateway.allocate",
            Some(key),
            &AllocateBatchRequest {
                campaign_id: "spring".to_owned(),
                allocations,
            },
        )
        .await
        .expect("the batch is answered");
    reply.results
}

fn statuses(results: &[WireAllocationResult]) -> Vec<(AllocationStatus, Option<&str>)> {
    results
        .iter()
        .map(|result| (result.status, result.error.as_deref()))
        .collect()
}

async fn no_push_of(client: &mut ImClient, op: &str, who: &str) {
    let pushes = client
        .pushes_until_quiet(QUIET, QUIET * 4)
        .await
        .expect("the connection stays open");
    assert!(
        pushes.iter().all(|push| push.op != op),
        "{who} got a {op} push"
    );
}

async fn operator_post(node: &str, path: &str, body: &Value) -> (u16, Value) {
    operator_send(node, reqwest::Method::POST, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_notify_enrol_allocate_up_to_the_cap_once_per_account_and_reward_winners() {
    const N_NODES: usize = 2;
    let Some(cluster) = start_cluster(
        "campaigns::campaigns_notify_enrol_allocate_up_to_the_cap_once_per_account_and_reward_winners",
        N_NODES,
        &[
            ("LANMESH__OPERATOR__TOKEN", OPERATOR_TOKEN),
            ("LANMESH__VENUES__INDEX_REFRESH_MS", "200"),
            ("LANMESH__CAMPAIGNS__NOTICE_REFRESH_MS", "200"),
        ],
    )
    .await
    else {
        return;
    };
    let node_a = address(&cluster, 0);
    let node_b = address(&cluster, 1);
    let policy = json!({
        "version": 1, "window_days": 1,
        "pass": {"at_least": {"metric": "client_logins", "value": 1}},
        "tiers": [
            {"name": "bronze", "condition": {"at_least": {"metric": "client_logins", "value": 1}}},
            {"name": "silver", "condition": {"at_least": {"metric": "client_logins", "value": 2}}}]
    });
    let (status, body) = put_policy(&node_a, &policy).await;
    assert_eq!(status, 200, "{body}");

    // Three venues; their gateways log in on either node.
    let mut admin = connect(&node_a).await;
    sign_up(&mut admin, "venueadmin").await;
    let mut venue_ids = Vec::new();
    for (name, segment) in [
        ("Alpha", "127.0.0.16/28"),
        ("Beta", "127.0.0.32/28"),
        ("Gamma", "127.0.0.48/28"),
    ] {
        let registered = register_gateway(&mut admin, name, &[segment])
            .await
            .expect("registers");
        venue_ids.push(registered.gateway_id);
    }
    let [alpha, beta, gamma] = <[String; 3]>::try_from(venue_ids).expect("three venues");
    wait_for_index(&cluster, N_NODES, 3.0).await;
    let (mut alpha_gateway, alpha_login) = gateway_login(&node_a, &alpha).await;
    let (mut beta_gateway, beta_login) = gateway_login(&node_b, &beta).await;
    let (mut gamma_gateway, gamma_login) = gateway_login(&node_a, &gamma).await;
    let (alpha_key, beta_key, gamma_key) = (alpha_login.key, beta_login.key, gamma_login.key);

    // Clients: two inside Alpha, one inside Beta, one outside every venue.
    let mut ann = player(&node_a, "ann", "127.0.0.17").await;
    let mut abe = player(&node_b, "abe", "127.0.0.18").await;
    let mut bea = player(&node_a, "bea", "127.0.0.33").await;
    let mut out = player(&node_a, "out", "127.0.0.80").await;
    let day = (
        crate::venues::now_ms() - 3_600_000,
        crate::venues::now_ms() + 86_400_000,
    );
    wait_for_figures(&node_a, "127.0.0.16/28", day, 2, 2).await;
    wait_for_figures(&node_a, "127.0.0.32/28", day, 1, 1).await;

    // Certified on what was measured today: Alpha silver, Beta bronze, Gamma rejected.
    let today_ms = crate::venues::now_ms() / 86_400_000 * 86_400_000;
    let today = json!({"from_ms": today_ms, "to_ms": today_ms + 86_400_000});
    for (gateway_id, expected) in [(&alpha, "silver"), (&beta, "bronze")] {
        let path = format!("/api/v1/gateways/{gateway_id}/certify");
        let (status, result) = operator_post(&node_a, &path, &today).await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(field(&result, "tier"), expected, "{result}");
    }
    let path = format!("/api/v1/gateways/{gamma}/certify");
    let (status, result) = operator_post(&node_b, &path, &today).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(field(&result, "status"), "rejected", "{result}");
    // A client inside the rejected venue, from now on.
    let mut gus = player(&node_b, "gus", "127.0.0.49").await;

    // Two campaigns: "spring" for bronze and above with at least one login today; "elite"
    // for silver venues with 2 to 3 logins.
    let spring = definition(
        "Spring",
        "bronze",
        &json!({"at_least": {"metric": "client_logins", "value": 1}}),
    );
    let elite = definition(
        "Elite",
        "silver",
        &json!({"all": [{"at_least": {"metric": "client_logins", "value": 2}},
                         {"below": {"metric": "client_logins", "value": 4}}]}),
    );
    for (campaign_id, definition) in [("spring", &spring), ("elite", &elite)] {
        let body = json!({"campaign_id": campaign_id, "definition": definition});
        let (status, created) = operator_post(&node_a, "/api/v1/campaigns", &body).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(field(&created, "status"), "draft", "{created}");
    }
    let mut bad = spring.clone();
    bad["venue_quota"] = json!(11);
    let (status, refused) = operator_post(
        &node_a,
        "/api/v1/campaigns",
        &json!({"campaign_id": "bad", "definition": bad}),
    )
    .await;
    assert_eq!(status, 400, "a venue quota above the total: {refused}");
    let (status, refused) = operator_post(
        &node_a,
        "/api/v1/campaigns",
        &json!({"campaign_id": "spring", "definition": elite}),
    )
    .await;
    assert_eq!(status, 409, "another definition under a used id: {refused}");

    // A draft takes no enrolment.
    let enrol_spring = CampaignRef {
        campaign_id: "spring".to_owned(),
    };
    let refusal = alpha_gateway
        .request::<_, EnrolReply>("gateway.enrol", Some(&alpha_key), &enrol_spring)
        .await
        .expect("a reply")
        .expect_err("a draft refuses enrolment");
    assert_eq!(
        refusal.code,
        ErrorCode::CampaignNotOpen,
        "{}",
        refusal.message
    );

    // Publishing: the notice reaches the certified venues' gateways and their clients only.
    let (status, published) =
        operator_post(&node_b, "/api/v1/campaigns/spring/publish", &json!({})).await;
    assert_eq!(status, 200, "{published}");
    for (client, who) in [(&mut alpha_gateway, "alpha"), (&mut beta_gateway, "beta")] {
        let notice: WireCampaignNotice = client
            .wait_for_op("gateway.campaign_notice", EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("{who}'s gateway: {error:#}"));
        assert_eq!(notice.campaign_id, "spring", "{who}: the first published");
    }
    for (player, who) in [(&mut ann, "ann"), (&mut abe, "abe"), (&mut bea, "bea")] {
        let notice: WireCampaignNotice = player
            .client
            .wait_for_op("campaign.notice", EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("{who}: {error:#}"));
        assert_eq!(notice.campaign_id, "spring", "{who}");
    }
    no_push_of(
        &mut gamma_gateway,
        "gateway.campaign_notice",
        "gamma's gateway",
    )
    .await;
    no_push_of(&mut gus.client, "campaign.notice", "gus inside gamma").await;
    no_push_of(&mut out.client, "campaign.notice", "out").await;
    let (status, published) =
        operator_post(&node_a, "/api/v1/campaigns/elite/publish", &json!({})).await;
    assert_eq!(status, 200, "{published}");
    let notice: WireCampaignNotice = alpha_gateway
        .wait_for_op("gateway.campaign_notice", EVENT_TIMEOUT)
        .await
        .expect("alpha is silver");
    assert_eq!(notice.campaign_id, "elite");
    // Beta is bronze: it hears of spring only; Alpha (silver) of both.
    let listed: CampaignListReply = beta_gateway
        .request_ok("gateway.campaigns", Some(&beta_key), &Empty {})
        .await
        .expect("lists");
    let ids: Vec<&str> = listed
        .campaigns
        .iter()
        .map(|notice| notice.campaign_id.as_str())
        .collect();
    assert_eq!(ids, ["spring"]);
    let listed: CampaignListReply = alpha_gateway
        .request_ok("gateway.campaigns", Some(&alpha_key), &Empty {})
        .await
        .expect("lists");
    assert_eq!(listed.campaigns.len(), 2, "{listed:?}");
    // A gateway that logs in again is given the notices in force at once; its new login
    // replaces the old one.
    let (mut beta_gateway, beta_relogin) = {
        beta_gateway.close().await.expect("closes");
        gateway_login(&node_a, &beta).await
    };
    let beta_key = beta_relogin.key;
    let notice: WireCampaignNotice = beta_gateway
        .wait_for_op("gateway.campaign_notice", EVENT_TIMEOUT)
        .await
        .expect("given at login");
    assert_eq!(notice.campaign_id, "spring");

    // Enrolment: the rejected venue and a bronze venue in a silver campaign are refused, with
    // every reason; the certified venues enrol in spring.
    let refusal = gamma_gateway
        .request::<_, EnrolReply>("gateway.enrol", Some(&gamma_key), &enrol_spring)
        .await
        .expect("a reply")
        .expect_err("a rejected venue cannot enrol");
    assert_eq!(refusal.code, ErrorCode::NotEligible);
    assert!(
        refusal
            .reasons
            .iter()
            .any(|reason| reason.contains("not certified")),
        "{:?}",
        refusal.reasons
    );
    let enrol_elite = CampaignRef {
        campaign_id: "elite".to_owned(),
    };
    let refusal = beta_gateway
        .request::<_, EnrolReply>("gateway.enrol", Some(&beta_key), &enrol_elite)
        .await
        .expect("a reply")
        .expect_err("a bronze venue in a silver campaign");
    assert_eq!(refusal.code, ErrorCode::NotEligible);
    assert_eq!(
        refusal.reasons,
        [
            "certification tier bronze, at least silver required",
            "client_logins: measured 1, at least 2 required"
        ]
    );
    for (gateway, key) in [
        (&mut alpha_gateway, &alpha_key),
        (&mut beta_gateway, &beta_key),
    ] {
        let enrolled: EnrolReply = gateway
            .request_ok("gateway.enrol", Some(key), &enrol_spring)
            .await
            .expect("enrols");
        assert_eq!((enrolled.quota, enrolled.user_limit), (3, 2));
    }

    // Clients enrol through the venue they connect from, if it is enrolled and eligible.
    let enrolled: ClientCampaignReply = ann
        .client
        .request_ok("campaign.enrol", Some(&ann.key), &enrol_spring)
        .await
        .expect("ann enrols");
    assert_eq!(enrolled.gateway_id, alpha);
    for (player, who) in [(&mut out, "out"), (&mut gus, "gus")] {
        let refusal = player
            .client
            .request::<_, ClientCampaignReply>("campaign.enrol", Some(&player.key), &enrol_spring)
            .await
            .expect("a reply")
            .expect_err("not from an enrolled venue");
        assert_eq!(
            refusal.code,
            ErrorCode::NotEnrolled,
            "{who}: {}",
            refusal.message
        );
    }
    // A client asks its venue for units: the gateway's admin sees it at once and in the list.
    let ask = RequestUnitsRequest {
        campaign_id: "spring".to_owned(),
        units: 1,
        note: "for tonight's match".to_owned(),
        request_id: "abe-1".to_owned(),
    };
    let _: ClientCampaignReply = abe
        .client
        .request_ok("campaign.request_units", Some(&abe.key), &ask)
        .await
        .expect("abe asks");
    let pushed: lanmesh::edge::protocol::WireUnitRequest = alpha_gateway
        .wait_for_op("gateway.unit_request", EVENT_TIMEOUT)
        .await
        .expect("the admin is told");
    assert_eq!((pushed.account.as_str(), pushed.units), ("abe", 1));
    let listed: UnitRequestsReply = alpha_gateway
        .request_ok(
            "gateway.unit_requests",
            Some(&alpha_key),
            &UnitRequestsRequest { campaign_id: None },
        )
        .await
        .expect("lists");
    assert_eq!(listed.requests.len(), 1, "{listed:?}");

    // Alpha allocates: idempotent by op id, one claim per account, then the cap.
    let first = allocate(
        &mut alpha_gateway,
        &alpha_key,
        vec![allocation("a-1", "ann", 2)],
    )
    .await;
    assert_eq!(statuses(&first), [(AllocationStatus::Allocated, None)]);
    let again = allocate(
        &mut alpha_gateway,
        &alpha_key,
        vec![allocation("a-1", "ann", 2)],
    )
    .await;
    assert_eq!(again, first, "a resubmission answers the first result");
    let results = allocate(
        &mut alpha_gateway,
        &alpha_key,
        vec![
            allocation("a-1", "ann", 1),
            allocation("a-2", "ann", 1),
            allocation("a-3", "abe", 1),
            allocation("a-4", "bea", 1),
            allocation("a-5", "zed", 3),
        ],
    )
    .await;
    assert_eq!(
        statuses(&results),
        [
            (AllocationStatus::Refused, Some("id_reused")),
            (AllocationStatus::Refused, Some("already_claimed")),
            (AllocationStatus::Allocated, None),
            (AllocationStatus::Refused, Some("quota_exceeded")),
            (AllocationStatus::Refused, Some("units_out_of_range")),
        ],
        "{results:?}"
    );
    // Ann tries again at Beta: refused, her claim is Alpha's; Bea gets Beta's units.
    let results = allocate(
        &mut beta_gateway,
        &beta_key,
        vec![allocation("b-1", "ann", 1), allocation("b-2", "bea", 2)],
    )
    .await;
    assert_eq!(
        statuses(&results),
        [
            (AllocationStatus::Refused, Some("already_claimed")),
            (AllocationStatus::Allocated, None),
        ],
        "{results:?}"
    );
    let issued: UnitsIssuedPush = ann
        .client
        .wait_for_op("campaign.units_issued", EVENT_TIMEOUT)
        .await
        .expect("ann is told");
    assert_eq!(
        (issued.gateway_id.as_str(), issued.units),
        (alpha.as_str(), 2)
    );
    let usage = ReportUsageRequest {
        campaign_id: "spring".to_owned(),
        account: "ann".to_owned(),
        used_total: 1,
    };
    let _: Value = alpha_gateway
        .request_ok("gateway.report_usage", Some(&alpha_key), &usage)
        .await
        .expect("usage is reported");
    let too_much = ReportUsageRequest {
        used_total: 3,
        ..usage
    };
    let refusal = alpha_gateway
        .request::<_, Value>("gateway.report_usage", Some(&alpha_key), &too_much)
        .await
        .expect("a reply")
        .expect_err("more used than held");
    assert_eq!(refusal.code, ErrorCode::Invalid, "{}", refusal.message);

    // The account sees its units; the ledgers' journals replay to their live balances; the
    // claim books agree.
    let mine: ClientCampaignsReply = ann
        .client
        .request_ok("campaign.list", Some(&ann.key), &Empty {})
        .await
        .expect("lists");
    assert_eq!(mine.gateway_id.as_deref(), Some(alpha.as_str()));
    let holding = mine.holdings.first().expect("one holding");
    assert_eq!(
        (
            holding.units,
            holding.used_units,
            holding.enrolled_via.as_deref()
        ),
        (2, 1, Some(alpha.as_str()))
    );
    for (gateway_id, posted, n_claims) in [(&alpha, 3, 2), (&beta, 2, 1)] {
        let path = format!("/api/v1/campaigns/spring/ledgers/{gateway_id}");
        let (status, audit) = operator_get(&node_b, &path).await;
        assert_eq!(status, 200, "{audit}");
        assert_eq!(field(&audit, "journal_matches"), true, "{audit}");
        assert_eq!(
            field(&audit, "n_journal_entries_stored"),
            field(&audit, "n_journal_entries_expected"),
            "{audit}"
        );
        let balances = field(&audit, "balances");
        assert_eq!(field(balances, "posted_units"), posted, "{audit}");
        assert_eq!(field(balances, "pending_units"), 0, "{audit}");
        assert_eq!(
            field(balances, "claims")
                .as_object()
                .map(serde_json::Map::len),
            Some(n_claims),
            "{audit}"
        );
    }
    let (status, claim) = operator_get(&node_a, "/api/v1/campaigns/spring/claims/ann").await;
    assert_eq!(status, 200, "{claim}");
    let holder = claim
        .get("Confirmed")
        .and_then(|confirmed| confirmed.get("holder"))
        .expect("ann's claim is confirmed");
    assert_eq!(field(holder, "gateway_id"), alpha.as_str(), "{claim}");

    // Rankings, then closing: the winners' rewards reach the account and the gateway.
    let (status, standings) = operator_get(&node_a, "/api/v1/campaigns/spring/standings").await;
    assert_eq!(status, 200, "{standings}");
    let top_user = field(&standings, "users")
        .get(0)
        .cloned()
        .unwrap_or_default();
    assert_eq!(field(&top_user, "account_id"), "ann", "{standings}");
    assert_eq!(
        field(&top_user, "score"),
        21,
        "2 units × 10 + 1 used: {standings}"
    );
    let top_venue = field(&standings, "venues")
        .get(0)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        field(&top_venue, "gateway_id"),
        alpha.as_str(),
        "{standings}"
    );
    assert_eq!(
        field(&top_venue, "score"),
        41,
        "21 + 10 + 2 users × 5: {standings}"
    );
    let (status, results) =
        operator_post(&node_b, "/api/v1/campaigns/spring/close", &json!({})).await;
    assert_eq!(status, 200, "{results}");
    let reward: WireReward = ann
        .client
        .wait_for_op("campaign.reward", EVENT_TIMEOUT)
        .await
        .expect("the winner is told");
    assert_eq!(
        (reward.rank, reward.text.as_str()),
        (1, "a month of premium")
    );
    let reward: WireReward = alpha_gateway
        .wait_for_op("gateway.reward", EVENT_TIMEOUT)
        .await
        .expect("the winning venue is told");
    assert_eq!(reward.text, "a new router");
    let (status, again) =
        operator_post(&node_a, "/api/v1/campaigns/spring/close", &json!({})).await;
    assert_eq!(
        (status, &again),
        (200, &results),
        "closing again answers the same"
    );
    let mine: ClientCampaignsReply = ann
        .client
        .request_ok("campaign.list", Some(&ann.key), &Empty {})
        .await
        .expect("lists");
    assert_eq!(mine.rewards.len(), 1, "{mine:?}");

    finish(
        cluster,
        vec![
            admin,
            alpha_gateway,
            beta_gateway,
            gamma_gateway,
            ann.client,
            abe.client,
            bea.client,
            gus.client,
            out.client,
        ],
    )
    .await;
}
