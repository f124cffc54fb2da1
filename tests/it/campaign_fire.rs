//! The quota ledger under fire (issue 8): three nodes, fifty venue gateways allocating as fast
//! as they can to 10,000 accounts, one node SIGKILLed a third of the way in. Afterwards every
//! venue's journal, read back from storage, replays to its live balances; no venue is over its
//! quota; no account holds two claims; every allocation a gateway was told is `allocated` is in
//! its venue's ledger, and the accounts' claim books agree.
//!
//! Each gateway connects from its own 127.0.1.x address (as venues do), to node `index % 3`,
//! sends a batch, follows the ops still `reserved` with `gateway.allocation_results` until each
//! is final, then sends the next. When its connection dies it reconnects to the next node that
//! answers, logs in again and resubmits the same batch with the same op ids (or, once the
//! ledger had answered, asks again for the results): the ledger answers each op's recorded
//! result, so nothing is applied twice.

use crate::im::{EVENT_TIMEOUT, address, finish, start_cluster};
use crate::venues::{OPERATOR_TOKEN, field, operator_get, operator_send};
use lanmesh::edge::campaign_wire::{
    AllocateBatchRequest, AllocationResultsReply, AllocationResultsRequest, AllocationStatus,
    CampaignRef, EnrolReply, WireAllocation, WireAllocationResult,
};
use lanmesh::edge::protocol::{
    ErrorBody, ErrorCode, GatewayLoginReply, GatewayLoginRequest, GatewayRegisterReply,
    GatewayRegisterRequest, RegisterReply, RegisterRequest,
};
use lanmesh::load::ws_client::{ConnectOptions, ImClient};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const ADMIN_PASSWORD: &str = "correct horse battery";
const GATEWAY_PASSWORD: &str = "gateway password 1";
const CAMPAIGN_ID: &str = "fire";

const N_NODES: usize = 3;
/// The node SIGKILLed mid-run (not node 0, which the operator calls go to).
const VICTIM: usize = 1;
const N_GATEWAYS: usize = 50;
/// Accounts the gateways allocate to: more than the venues' quotas can serve together.
const N_ACCOUNTS: u64 = 10_000;
const VENUE_QUOTA: u64 = 150;
/// Units per allocation are 1 to this.
const USER_LIMIT: u64 = 3;
const N_ALLOCATIONS_PER_BATCH: usize = 16;
/// How long a reservation waits for its claim: a few times the claim round trip of this
/// overloaded 2-core cluster, so that most reservations are decided by the claim books, and
/// short enough that one whose claim answer is stuck behind the kill expires within the run.
const ALLOCATION_TIMEOUT_MS: u64 = 15_000;
/// The kill comes once the gateways were told this share of the total quota is allocated.
const KILL_AT_SHARE_OF_QUOTA: u64 = 3;
/// Longest a gateway keeps allocating.
const RUN_TIMEOUT: Duration = Duration::from_secs(50);
/// Longest one batch may take to get a final result for each op, reconnections included.
const BATCH_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the client waits for one reply (the node itself waits up to its request timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the survivors may take to own every shard after the kill.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before asking again after a refusal that says "try again".
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Pause between two questions about the ops of a batch still reserved.
const FOLLOW_UP_PAUSE: Duration = Duration::from_millis(200);
/// Accounts whose claim book is read at the end: claimed ones, and unclaimed ones (first those
/// whose reservation expired, so whose claim was held and must have been let go).
const N_CLAIMED_SAMPLED: usize = 200;
const N_UNCLAIMED_SAMPLED: usize = 100;

/// A small deterministic generator (Knuth's MMIX LCG), one per gateway.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn account_name(number: u64) -> String {
    format!("user{number:05}")
}

fn count(object: &Value, name: &str) -> u64 {
    field(object, name)
        .as_u64()
        .unwrap_or_else(|| panic!("{name} is not a count in {object}"))
}

/// A `POST` that must answer `expected`; returns the body.
async fn operator_post(node_address: &str, path: &str, body: &Value, expected: u16) -> Value {
    let (status, answer) =
        operator_send(node_address, reqwest::Method::POST, path, Some(body)).await;
    assert_eq!(status, expected, "POST {path}: {answer}");
    answer
}

/// Gateway `index`'s own source address, 127.0.1.(index + 1).
fn gateway_source(index: usize) -> ConnectOptions {
    let last = u8::try_from(index + 1).expect("at most 254 gateways");
    ConnectOptions {
        source_ip_opt: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, last))),
        forwarded_for_opt: None,
    }
}

async fn connect_from(node_address: &str, options: &ConnectOptions) -> anyhow::Result<ImClient> {
    let mut client = ImClient::connect_with(node_address, options).await?;
    client.set_reply_timeout(REPLY_TIMEOUT);
    Ok(client)
}

/// One venue's gateway, connected and logged in.
struct Gateway {
    index: usize,
    gateway_id: String,
    options: ConnectOptions,
    node_addresses: Vec<String>,
    node_index: usize,
    client: ImClient,
    key: String,
    n_reconnects: u64,
    /// Batches sent again (same op ids) after a lost connection or a "try again".
    n_resubmissions: u64,
}

impl Gateway {
    /// Logs in on the connection; `Ok(None)` when the node says to try again.
    async fn log_in(client: &mut ImClient, gateway_id: &str) -> anyhow::Result<Option<String>> {
        let reply: Result<GatewayLoginReply, ErrorBody> = client
            .request(
                "gateway.login",
                None,
                &GatewayLoginRequest {
                    gateway_id: gateway_id.to_owned(),
                    password: GATEWAY_PASSWORD.to_owned(),
                },
            )
            .await?;
        match reply {
            Ok(login) => Ok(Some(login.key)),
            Err(error) if error.code == ErrorCode::Unavailable => Ok(None),
            Err(error) => panic!("{gateway_id}: gateway.login refused: {error:?}"),
        }
    }

    /// Connects to node `node_index` and logs in there.
    async fn connect(
        index: usize,
        gateway_id: String,
        node_addresses: Vec<String>,
        node_index: usize,
    ) -> Self {
        let options = gateway_source(index);
        let node_address = node_addresses.get(node_index).expect("a node");
        let mut client = connect_from(node_address, &options)
            .await
            .expect("the gateway connects");
        let key = Self::log_in(&mut client, &gateway_id)
            .await
            .expect("a login reply")
            .expect("the gateway logs in");
        Self {
            index,
            gateway_id,
            options,
            node_addresses,
            node_index,
            client,
            key,
            n_reconnects: 0,
            n_resubmissions: 0,
        }
    }

    /// After its connection failed: connects to the next node that answers (the failed one
    /// last) and logs in again, until `deadline`.
    async fn reconnect(&mut self, deadline: Instant, why: &anyhow::Error) {
        self.n_reconnects += 1;
        let n_nodes = self.node_addresses.len();
        let mut candidate = self.node_index;
        loop {
            assert!(
                Instant::now() < deadline,
                "gateway {} ({}) could not reconnect in time after: {why:#}",
                self.index,
                self.gateway_id
            );
            candidate = (candidate + 1) % n_nodes;
            let node_address = self.node_addresses.get(candidate).expect("a node");
            let Ok(mut client) = connect_from(node_address, &self.options).await else {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            loop {
                match Self::log_in(&mut client, &self.gateway_id).await {
                    Ok(Some(key)) => {
                        self.client = client;
                        self.key = key;
                        self.node_index = candidate;
                        return;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// Asks on the current connection; `None` when the connection failed (after reconnecting)
    /// or the node said to try again (after a pause): the caller asks again.
    async fn ask<B: serde::Serialize>(
        &mut self,
        op: &str,
        body: &B,
        deadline: Instant,
    ) -> Option<AllocationResultsReply> {
        let reply: anyhow::Result<Result<AllocationResultsReply, ErrorBody>> =
            self.client.request(op, Some(self.key.as_str()), body).await;
        match reply {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(error)) if error.code == ErrorCode::Unavailable => {
                tokio::time::sleep(RETRY_PAUSE).await;
                None
            }
            Ok(Err(error)) => panic!(
                "gateway {} ({}): {op} refused: {error:?}",
                self.index, self.gateway_id
            ),
            Err(lost) => {
                self.reconnect(deadline, &lost).await;
                None
            }
        }
    }

    /// Submits `allocations` (again with the same op ids until the ledger has answered: after
    /// a lost connection, on another node), then follows the ops still `reserved` with
    /// `gateway.allocation_results` until each is final; panics after [`BATCH_TIMEOUT`].
    async fn allocate(&mut self, allocations: &[WireAllocation]) -> Vec<WireAllocationResult> {
        let deadline = Instant::now() + BATCH_TIMEOUT;
        let batch = allocations
            .first()
            .map_or_else(String::new, |first| first.op_id.clone());
        let request = AllocateBatchRequest {
            campaign_id: CAMPAIGN_ID.to_owned(),
            allocations: allocations.to_vec(),
        };
        let mut results = loop {
            self.check_deadline(deadline, &batch);
            if let Some(reply) = self.ask("gateway.allocate", &request, deadline).await {
                break reply.results;
            }
            self.n_resubmissions += 1;
        };
        assert_eq!(
            results.len(),
            allocations.len(),
            "one result per allocation: {results:?}"
        );
        for (allocation, result) in allocations.iter().zip(&results) {
            assert_eq!(result.op_id, allocation.op_id, "results in order");
        }
        loop {
            let waiting: Vec<String> = results
                .iter()
                .filter(|result| !result.is_final())
                .map(|result| result.op_id.clone())
                .collect();
            if waiting.is_empty() {
                return results;
            }
            self.check_deadline(deadline, &batch);
            tokio::time::sleep(FOLLOW_UP_PAUSE).await;
            let query = AllocationResultsRequest {
                campaign_id: CAMPAIGN_ID.to_owned(),
                op_ids: waiting.clone(),
            };
            let Some(reply) = self
                .ask("gateway.allocation_results", &query, deadline)
                .await
            else {
                continue;
            };
            for (op_id, fresh) in waiting.iter().zip(reply.results) {
                assert_eq!(&fresh.op_id, op_id, "results in order");
                assert_ne!(
                    fresh.status,
                    AllocationStatus::Unknown,
                    "gateway {}: the ledger forgot op {op_id}, which it had reserved",
                    self.index
                );
                if let Some(slot) = results.iter_mut().find(|result| result.op_id == *op_id) {
                    *slot = fresh;
                }
            }
        }
    }

    fn check_deadline(&self, deadline: Instant, batch: &str) {
        assert!(
            Instant::now() < deadline,
            "gateway {} ({}): batch {batch} not final within {BATCH_TIMEOUT:?}",
            self.index,
            self.gateway_id
        );
    }
}

/// An allocation a gateway was told is `allocated`.
#[derive(Debug, Clone)]
struct Acknowledged {
    op_id: String,
    account: String,
    transfer_id: u64,
    units: u64,
}

/// What one gateway's run gave.
struct GatewayOutcome {
    gateway: Gateway,
    acknowledged: Vec<Acknowledged>,
    /// Every refusal, as (code, account).
    refused: Vec<(String, String)>,
    n_batches: u64,
}

/// Counters shared by the gateways' runs.
#[derive(Default)]
struct Progress {
    n_units_acknowledged: AtomicU64,
    n_batches: AtomicU64,
}

/// Allocates in batches to random accounts until the venue's quota is gone (a batch with no
/// allocation and at least one `quota_exceeded`, every refusal being for the quota or a claim
/// elsewhere) or [`RUN_TIMEOUT`] passes.
async fn run_gateway(mut gateway: Gateway, progress: Arc<Progress>) -> GatewayOutcome {
    let index = gateway.index;
    let mut random = Lcg(0x5eed_0000 + u64::try_from(index).expect("fits"));
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    let stop_at = Instant::now() + RUN_TIMEOUT;
    let mut n_batches = 0_u64;
    while Instant::now() < stop_at {
        let allocations: Vec<WireAllocation> = (0..N_ALLOCATIONS_PER_BATCH)
            .map(|position| WireAllocation {
                op_id: format!("g{index:02}-b{n_batches:04}-{position:02}"),
                account: account_name(random.below(N_ACCOUNTS)),
                units: 1 + random.below(USER_LIMIT),
                timeout_ms: Some(ALLOCATION_TIMEOUT_MS),
            })
            .collect();
        let results = gateway.allocate(&allocations).await;
        n_batches += 1;
        progress.n_batches.fetch_add(1, Ordering::Relaxed);
        let mut n_allocated = 0;
        let mut quota_gone = false;
        let mut only_quota_or_claimed = true;
        for (allocation, result) in allocations.iter().zip(&results) {
            match result.status {
                AllocationStatus::Allocated => {
                    let transfer_id = result.transfer_id.expect("an allocation has a transfer");
                    let units = result.units.expect("an allocation has units");
                    assert_eq!(units, allocation.units, "{result:?}");
                    acknowledged.push(Acknowledged {
                        op_id: allocation.op_id.clone(),
                        account: allocation.account.clone(),
                        transfer_id,
                        units,
                    });
                    progress
                        .n_units_acknowledged
                        .fetch_add(units, Ordering::Relaxed);
                    n_allocated += 1;
                }
                AllocationStatus::Refused => {
                    let code = result.error.clone().unwrap_or_default();
                    quota_gone |= code == "quota_exceeded";
                    only_quota_or_claimed &= code == "quota_exceeded" || code == "already_claimed";
                    refused.push((code, allocation.account.clone()));
                }
                AllocationStatus::Reserved
                | AllocationStatus::Voided
                | AllocationStatus::Unknown => {
                    panic!("gateway {index}: an allocation ended {result:?}")
                }
            }
        }
        if n_allocated == 0 && quota_gone && only_quota_or_claimed {
            break;
        }
    }
    GatewayOutcome {
        gateway,
        acknowledged,
        refused,
        n_batches,
    }
}

/// Registers, certifies, logs in and enrols gateway `index`, on node `index % 3`.
async fn prepare_gateway(index: usize, node_addresses: Vec<String>) -> Gateway {
    let node_index = index % N_NODES;
    let node_address = node_addresses.get(node_index).expect("a node").clone();
    let mut client = connect_from(&node_address, &gateway_source(index))
        .await
        .expect("connects");
    let registered: GatewayRegisterReply = client
        .request_ok(
            "gateway.register",
            None,
            &GatewayRegisterRequest {
                venue_name: format!("Venue {index}"),
                venue_address: format!("{index} Main Street"),
                admin_account: "venueadmin".to_owned(),
                segments: vec![format!("10.{index}.0.0/24")],
                password: Some(GATEWAY_PASSWORD.to_owned()),
            },
        )
        .await
        .expect("the gateway registers");
    client.close().await.expect("closes");
    let certified = operator_post(
        &node_address,
        &format!("/api/v1/gateways/{}/certify", registered.gateway_id),
        &serde_json::json!({}),
        200,
    )
    .await;
    assert_eq!(field(&certified, "status"), "certified", "{certified}");
    let mut gateway =
        Gateway::connect(index, registered.gateway_id, node_addresses, node_index).await;
    let enrolled: EnrolReply = gateway
        .client
        .request_ok(
            "gateway.enrol",
            Some(gateway.key.as_str()),
            &CampaignRef {
                campaign_id: CAMPAIGN_ID.to_owned(),
            },
        )
        .await
        .expect("the venue enrols");
    assert_eq!(
        (enrolled.quota, enrolled.user_limit),
        (VENUE_QUOTA, USER_LIMIT)
    );
    gateway
}

/// Polls every venue's ledger audit until none has units pending; returns the audits by
/// gateway id.
async fn settled_ledgers(node_address: &str, gateway_ids: &[String]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let mut audits = BTreeMap::new();
        for gateway_id in gateway_ids {
            let path = format!("/api/v1/campaigns/{CAMPAIGN_ID}/ledgers/{gateway_id}");
            let (status, audit) = operator_get(node_address, &path).await;
            assert_eq!(status, 200, "{path}: {audit}");
            audits.insert(gateway_id.clone(), audit);
        }
        let pending: Vec<(&String, u64)> = audits
            .iter()
            .map(|(gateway_id, audit)| {
                (gateway_id, count(field(audit, "balances"), "pending_units"))
            })
            .filter(|(_, pending_units)| *pending_units > 0)
            .collect();
        if pending.is_empty() {
            return audits;
        }
        assert!(
            Instant::now() < deadline,
            "units still pending after {EVENT_TIMEOUT:?} (reservations expire after \
             {ALLOCATION_TIMEOUT_MS} ms): {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where an account's claim book says its claim stands, as (state, holder's gateway,
/// transfer, units).
async fn claim_state(node_address: &str, account: &str) -> (String, Option<(String, u64, u64)>) {
    let path = format!("/api/v1/campaigns/{CAMPAIGN_ID}/claims/{account}");
    let (status, state) = operator_get(node_address, &path).await;
    assert_eq!(status, 200, "{path}: {state}");
    if state == "Free" {
        return ("Free".to_owned(), None);
    }
    let (name, inner) = ["Held", "Confirmed"]
        .into_iter()
        .find_map(|name| state.get(name).map(|inner| (name, inner)))
        .unwrap_or_else(|| panic!("{account}: an unknown claim state {state}"));
    let holder = field(inner, "holder");
    let gateway_id = field(holder, "gateway_id")
        .as_str()
        .unwrap_or_else(|| panic!("a holder's gateway in {state}"))
        .to_owned();
    (
        name.to_owned(),
        Some((
            gateway_id,
            count(holder, "transfer_id"),
            count(holder, "units"),
        )),
    )
}

/// Polls `account`'s claim book until it says `expected` (`None`: free); fails after
/// [`EVENT_TIMEOUT`] with what it says.
async fn wait_for_claim(node_address: &str, account: &str, expected: Option<(String, u64, u64)>) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let wanted = match &expected {
        None => "Free",
        Some(_) => "Confirmed",
    };
    loop {
        let (state, holder_opt) = claim_state(node_address, account).await;
        if state == wanted && holder_opt == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{account}: the claim book says {state} {holder_opt:?}, the ledgers say {wanted} \
             {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_ledgers_stay_exact_while_fifty_gateways_allocate_and_a_node_is_killed() {
    let Some(mut cluster) = start_cluster(
        "campaign_fire::quota_ledgers_stay_exact_while_fifty_gateways_allocate_and_a_node_is_killed",
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
    let started = Instant::now();
    let node_addresses: Vec<String> = (0..N_NODES).map(|index| address(&cluster, index)).collect();
    let operator_node = node_addresses.first().expect("node 0").clone();

    // The policy certifies every venue (at least 0 logins); the campaign has room for every
    // venue's quota, and the venues together for fewer accounts than there are.
    let policy = serde_json::json!({
        "version": 1, "window_days": 1,
        "pass": {"at_least": {"metric": "client_logins", "value": 0}},
        "tiers": [{"name": "bronze", "condition": {"at_least": {"metric": "client_logins", "value": 0}}}]
    });
    let (status, body) = operator_send(
        &operator_node,
        reqwest::Method::PUT,
        "/api/v1/certification-policy",
        Some(&policy),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let total_quota = VENUE_QUOTA * u64::try_from(N_GATEWAYS).expect("fits");
    let campaign = serde_json::json!({
        "campaign_id": CAMPAIGN_ID,
        "definition": {
            "kind": "activity", "title": "Fire", "text": "Under fire",
            "enrol_opens_at_ms": 0, "enrol_closes_at_ms": 4_102_444_800_000_u64,
            "eligibility": {"min_tier": "bronze", "activity_days": 1},
            "total_units": total_quota, "venue_quota": VENUE_QUOTA, "user_limit": USER_LIMIT,
            "scoring": {"points_per_unit_allocated": 1, "points_per_unit_used": 0,
                        "venue_points_per_user_served": 0},
            "winners": {"top_users": 0, "top_venues": 0, "user_reward": "", "venue_reward": ""}
        }
    });
    operator_post(&operator_node, "/api/v1/campaigns", &campaign, 201).await;
    operator_post(
        &operator_node,
        &format!("/api/v1/campaigns/{CAMPAIGN_ID}/publish"),
        &serde_json::json!({}),
        200,
    )
    .await;

    let mut admin = connect_from(&operator_node, &ConnectOptions::default())
        .await
        .expect("connects");
    let _: RegisterReply = admin
        .request_ok(
            "account.register",
            None,
            &RegisterRequest {
                username: "venueadmin".to_owned(),
                password: ADMIN_PASSWORD.to_owned(),
                display_name: "Venue admin".to_owned(),
            },
        )
        .await
        .expect("the venues' admin signs up");

    let preparing: Vec<_> = (0..N_GATEWAYS)
        .map(|index| tokio::spawn(prepare_gateway(index, node_addresses.clone())))
        .collect();
    let mut gateways = Vec::new();
    for task in preparing {
        gateways.push(task.await.expect("a gateway is ready"));
    }
    let gateway_ids: Vec<String> = gateways
        .iter()
        .map(|gateway| gateway.gateway_id.clone())
        .collect();
    let prepared_in = started.elapsed();

    // Fire: every gateway allocates as fast as it can.
    let fire_started = Instant::now();
    let progress = Arc::new(Progress::default());
    let runs: Vec<_> = gateways
        .into_iter()
        .map(|gateway| tokio::spawn(run_gateway(gateway, Arc::clone(&progress))))
        .collect();
    let kill_deadline = Instant::now() + RUN_TIMEOUT;
    while progress.n_units_acknowledged.load(Ordering::Relaxed)
        < total_quota / KILL_AT_SHARE_OF_QUOTA
    {
        assert!(
            Instant::now() < kill_deadline,
            "a third of the quota was never allocated: {} units in {} batches",
            progress.n_units_acknowledged.load(Ordering::Relaxed),
            progress.n_batches.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n_units_at_kill = progress.n_units_acknowledged.load(Ordering::Relaxed);
    let n_batches_at_kill = progress.n_batches.load(Ordering::Relaxed);
    let takeover = cluster
        .kill_and_await_takeover(VICTIM, TAKEOVER_TIMEOUT)
        .await
        .expect("takeover");

    let mut outcomes = Vec::new();
    for run in runs {
        outcomes.push(run.await.expect("a gateway's run ends"));
    }
    let fire_elapsed = fire_started.elapsed();

    // Every reservation is resolved (posted, or voided when its claim was refused or its
    // timeout passed).
    let audits = settled_ledgers(&operator_node, &gateway_ids).await;

    // 1. Each venue: the journal replays to the live balances; within the quota; the posted
    //    units are its claims' units.
    let mut claim_holders: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    let mut n_posted_units = 0;
    for (gateway_id, audit) in &audits {
        let balances = field(audit, "balances");
        assert_eq!(
            field(audit, "journal_matches"),
            true,
            "{gateway_id}: {audit}"
        );
        assert_eq!(
            field(audit, "journal_problem"),
            &Value::Null,
            "{gateway_id}"
        );
        assert_eq!(
            count(audit, "n_journal_entries_stored"),
            count(audit, "n_journal_entries_expected"),
            "{gateway_id}: every journal entry is in storage"
        );
        let posted_units = count(balances, "posted_units");
        let pending_units = count(balances, "pending_units");
        assert_eq!(count(balances, "quota"), VENUE_QUOTA, "{gateway_id}");
        assert!(
            posted_units + pending_units <= VENUE_QUOTA,
            "{gateway_id} is over its quota: {posted_units} posted, {pending_units} pending"
        );
        let claims = field(balances, "claims")
            .as_object()
            .unwrap_or_else(|| panic!("{gateway_id}: claims are an object: {balances}"));
        let mut claimed_units = 0;
        for (account, claim) in claims {
            let units = count(claim, "units");
            assert!(
                (1..=USER_LIMIT).contains(&units),
                "{gateway_id}: {account} holds {units} units"
            );
            claimed_units += units;
            let holder = (gateway_id.clone(), count(claim, "transfer_id"), units);
            // 2. No account has claims at two venues.
            if let Some(other) = claim_holders.insert(account.clone(), holder) {
                panic!("{account} holds claims at {gateway_id} and at {}", other.0);
            }
        }
        assert_eq!(
            posted_units, claimed_units,
            "{gateway_id}: posted units are the claims' units"
        );
        n_posted_units += posted_units;
    }

    // 3. Every acknowledged allocation is in its venue's ledger; and every claim was
    //    acknowledged (each batch was driven until every op was final).
    let mut n_acknowledged = 0;
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    let mut n_reconnects = 0;
    let mut n_resubmissions = 0;
    let mut n_batches = 0;
    let mut expired_accounts = BTreeSet::new();
    let mut n_claimed_elsewhere = 0;
    let mut clients = vec![admin];
    for outcome in outcomes {
        let gateway_id = &outcome.gateway.gateway_id;
        for acknowledged in &outcome.acknowledged {
            let expected = (
                gateway_id.clone(),
                acknowledged.transfer_id,
                acknowledged.units,
            );
            assert_eq!(
                claim_holders.get(&acknowledged.account),
                Some(&expected),
                "op {} of {gateway_id} was acknowledged as {acknowledged:?} but its ledger's \
                 claim of {} is otherwise",
                acknowledged.op_id,
                acknowledged.account
            );
        }
        let n_claims_here = claim_holders
            .values()
            .filter(|(holder, _, _)| holder == gateway_id)
            .count();
        assert_eq!(
            n_claims_here,
            outcome.acknowledged.len(),
            "{gateway_id}: every claim in the ledger was acknowledged to the gateway"
        );
        n_acknowledged += outcome.acknowledged.len();
        for (code, account) in outcome.refused {
            let holder_opt = claim_holders.get(&account).map(|(holder, _, _)| holder);
            if code == "already_claimed" && holder_opt.is_some_and(|holder| holder != gateway_id) {
                n_claimed_elsewhere += 1;
            }
            if code == "expired" {
                expired_accounts.insert(account);
            }
            *refusals.entry(code).or_default() += 1;
        }
        n_reconnects += outcome.gateway.n_reconnects;
        n_resubmissions += outcome.gateway.n_resubmissions;
        n_batches += outcome.n_batches;
        // A gateway that finished before the kill may still hold its dead connection.
        if outcome.gateway.node_index != VICTIM {
            clients.push(outcome.gateway.client);
        }
    }

    // 4. The claim books agree: confirmed at the venue whose ledger holds the claim; free for
    //    accounts no venue holds, first those whose reservation expired.
    let claimed_sample: Vec<(String, (String, u64, u64))> = claim_holders
        .iter()
        .take(N_CLAIMED_SAMPLED)
        .map(|(account, holder)| (account.clone(), holder.clone()))
        .collect();
    let unclaimed_sample: Vec<String> = expired_accounts
        .iter()
        .cloned()
        .chain((0..N_ACCOUNTS).map(account_name))
        .filter(|account| !claim_holders.contains_key(account))
        .take(N_UNCLAIMED_SAMPLED)
        .collect();
    for (account, holder) in claimed_sample {
        wait_for_claim(&operator_node, &account, Some(holder)).await;
    }
    for account in &unclaimed_sample {
        wait_for_claim(&operator_node, account, None).await;
    }

    // 5. The run exercised what it claims to: quotas ran out, accounts collided across
    //    venues, units were posted, and gateways of the killed node moved.
    let n_refused = |code: &str| refusals.get(code).copied().unwrap_or(0);
    println!(
        "campaign_fire: {n_acknowledged} allocations acknowledged ({n_posted_units} of \
         {total_quota} units posted) in {n_batches} batches of {N_ALLOCATIONS_PER_BATCH}; \
         refusals {refusals:?} ({n_claimed_elsewhere} for accounts claimed at another \
         venue); node {VICTIM} SIGKILLed after {n_batches_at_kill} batches \
         ({n_units_at_kill} units), survivors owned every shard {:.2} s later; \
         {n_reconnects} reconnections, {n_resubmissions} batches resubmitted; set-up {:.1} s, allocating {:.1} s, whole test {:.1} s",
        takeover.as_secs_f64(),
        prepared_in.as_secs_f64(),
        fire_elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        n_refused("quota_exceeded") > 0,
        "no quota ran out: {refusals:?}"
    );
    assert!(
        n_claimed_elsewhere > 0,
        "no allocation was refused for an account claimed at another venue: {refusals:?}"
    );
    assert!(n_posted_units > 0, "nothing was posted");
    assert!(
        n_reconnects > 0,
        "no gateway lost its connection to the killed node"
    );

    finish(cluster, clients).await;
}
