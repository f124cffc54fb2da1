//! `lanmesh-load campaigns`: campaign allocations per second end to end (issue 8), for one
//! ledger and for many, next to the raw storage commit rates and the raw broker round trip
//! measured in the same run.
//!
//! Set-up, not timed: the scenario spawns its own cluster (`--nodes`, default 1; a per-run
//! cluster name and operator token), signs up an admin account, registers one gateway per
//! ledger (gateway `i` with segment `10.{i}.0.0/24`, registered data only: no traffic goes
//! there), puts a certification policy every venue passes at tier `bronze`, certifies every
//! gateway through the operator API, and creates and publishes one campaign whose venue quota
//! ([`VENUE_QUOTA`]) never runs out during a run.
//!
//! Two phases, each for `duration`, each on ledgers of its own:
//! - **one ledger**: one gateway logs in once (a newer `gateway.login` replaces the older
//!   session, so only one session per gateway is valid) and enrols; its key is then carried by
//!   `n_connections` WebSocket connections (the key names the session, not the connection),
//!   each a closed loop with one `gateway.allocate` outstanding;
//! - **many ledgers**: `n_venues` gateways each log in and enrol on a connection of their own,
//!   each a closed loop with one `gateway.allocate` outstanding.
//!
//! Each request is a batch of `batch_size` allocations of 1 unit to accounts never used before
//! in the run (accounts need not be registered). The clock of a batch runs from sending
//! `gateway.allocate` until every one of its results is final: the node answers once each is
//! final or `campaigns.allocation_wait_ms` is over, and any still `reserved` then are asked
//! about with `gateway.allocation_results` until they are final. Only `allocated` results count
//! as allocations; every other final result is a refusal, counted by code. Connections are
//! spread round robin over the nodes. The nodes' bus counters are read before and after each
//! phase, and each phase's ledgers are audited afterwards through the operator API (posted
//! units, and whether each stored journal replays to the live balances).
//!
//! Baselines, after the nodes have stopped (as in `venues`), on fresh SQLite files in the same
//! temporary filesystem as the nodes' file and with the same backend: ledger-journal appends of
//! one record per call in sequence (one commit each, as one ledger's single writer makes them)
//! and of `batch_size` records per call; entity-state compare-and-set saves of the size of a
//! claim book as stored in the run, one entity awaited in sequence and `n_venues` entities at
//! once, and of the size of the one-ledger phase's ledger record as stored at the end of the
//! run. Then raw lapin request/reply on the same broker (the `entities` scenario's baseline:
//! two confirmed persistent publishes per round trip), one and `n_venues` at once.

use crate::edge::campaign_wire::{
    AllocateBatchRequest, AllocationResultsReply, AllocationResultsRequest, AllocationStatus,
    CampaignRef, EnrolReply, WireAllocation, WireAllocationResult,
};
use crate::edge::protocol::{
    ErrorBody, GatewayLoginReply, GatewayLoginRequest, GatewayRegisterReply,
    GatewayRegisterRequest, RegisterReply, RegisterRequest,
};
use crate::load::entities::{EntityBenchSettings, raw_round};
use crate::load::local_cluster::{ClusterSpec, LocalCluster};
use crate::load::ws_client::ImClient;
use crate::load::{LatencyMeasurement, measure_on_spawned, percentile};
use anyhow::{Context, bail};
use lanmesh_actors::model::claim_book::claim_id;
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::ledger::{JournalEntry, JournalKind, ledger_id};
use lanmesh_storage::sqlite::SqliteStore;
use lanmesh_storage::{
    EntityKey, EntityStateStore, JournalRecord, LedgerJournalStore, SqliteConfig, StateVersion,
    StoredEntityState,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the spawned nodes may take to settle.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one WebSocket request may wait for its reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a batch's results may stay `reserved` before the run gives up on them.
const FINAL_TIMEOUT: Duration = Duration::from_secs(120);
/// First pause before asking again about results still `reserved`; it doubles.
const FIRST_RESULTS_POLL: Duration = Duration::from_millis(10);
/// Longest pause between two such questions.
const MAX_RESULTS_POLL: Duration = Duration::from_millis(200);
/// Pause after a refused `gateway.allocate` request, so that a refusal cannot spin.
const PAUSE_AFTER_REQUEST_ERROR: Duration = Duration::from_millis(100);
/// Each venue's quota: more units than a run on this machine can allocate.
pub const VENUE_QUOTA: u64 = 1_000_000_000;
/// Units per allocation (the campaign's per-user limit too).
const UNITS_PER_ALLOCATION: u64 = 1;
/// How long each allocation's units stay reserved waiting for the account's claim.
const ALLOCATION_TIMEOUT_MS: u64 = 60_000;
/// Most gateways a run registers (segments `10.0.0.0/24` to `10.254.0.0/24`).
pub const MAX_GATEWAYS: usize = 255;
/// Allocations one `gateway.allocate` may carry.
pub const MAX_BATCH: usize = 256;
/// How long each storage baseline runs.
const STORAGE_BASELINE_DURATION: Duration = Duration::from_secs(3);
/// How long each broker baseline runs.
const BROKER_BASELINE_DURATION: Duration = Duration::from_secs(5);
/// State size of the small compare-and-set baselines when no claim book could be read.
const FALLBACK_STATE_BYTES: usize = 512;
/// TigerBeetle's published design point: transfers per second on one core.
pub const TIGERBEETLE_TRANSFERS_PER_SECOND: u64 = 1_000_000;
/// The SQLite file the nodes of a local cluster share (see `local_cluster.rs`).
pub(crate) const CLUSTER_DATABASE_FILE: &str = "cluster.db";
/// The admin account every gateway of the run names.
const ADMIN_ACCOUNT: &str = "benchadmin";
/// The admin's password.
const ADMIN_PASSWORD: &str = "bench admin password";
/// Every gateway's password.
const GATEWAY_PASSWORD: &str = "bench gateway password";
/// The tier every venue reaches.
const TIER: &str = "bronze";

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct CampaignsBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// Nodes to spawn.
    pub n_nodes: usize,
    /// Shards of the cluster.
    pub n_shards: u16,
    /// How long each phase allocates.
    pub duration: Duration,
    /// Allocations per `gateway.allocate`, 1 to [`MAX_BATCH`].
    pub batch_size: usize,
    /// Connections allocating on the one ledger.
    pub n_connections: usize,
    /// Venues (ledgers, one connection each) of the many-ledgers phase.
    pub n_venues: usize,
    /// The `lanmesh-node` executable (default: beside this executable).
    pub node_binary_opt: Option<PathBuf>,
}

/// The nodes' bus counters (summed over the nodes), or their change over a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BusCounters {
    /// Messages published and confirmed (`lanmesh_bus_published_total`).
    pub n_published: u64,
    /// Deliveries acknowledged (`lanmesh_bus_acked_total`).
    pub n_acked: u64,
    /// Deliveries handed back for redelivery.
    pub n_retried: u64,
    /// Messages dead-lettered.
    pub n_dead_lettered: u64,
}

impl BusCounters {
    /// What changed from `before` to `self`.
    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            n_published: self.n_published.saturating_sub(before.n_published),
            n_acked: self.n_acked.saturating_sub(before.n_acked),
            n_retried: self.n_retried.saturating_sub(before.n_retried),
            n_dead_lettered: self.n_dead_lettered.saturating_sub(before.n_dead_lettered),
        }
    }
}

/// The operator's audit of a phase's ledgers, after the phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerAudit {
    /// Ledgers audited.
    pub n_ledgers: usize,
    /// Units posted (issued to accounts), over those ledgers.
    pub posted_units: u64,
    /// Units still pending.
    pub pending_units: u64,
    /// Journal entries the ledgers numbered.
    pub n_journal_entries_expected: u64,
    /// Journal entries read back from storage.
    pub n_journal_entries_stored: u64,
    /// Whether every stored journal replays to its ledger's live balances.
    pub all_journals_match: bool,
}

/// The figures of one allocation phase.
#[derive(Debug, Clone, Serialize)]
pub struct AllocationPhase {
    /// The phase.
    pub name: String,
    /// Ledgers allocated from.
    pub n_ledgers: usize,
    /// Connections, each with one batch outstanding.
    pub n_connections: usize,
    /// Allocations per batch.
    pub batch_size: usize,
    /// Allocations sent in batches that got an answer.
    pub n_allocations_sent: u64,
    /// Allocations answered `allocated`.
    pub n_allocated: u64,
    /// From the first request to the last final result.
    pub elapsed_seconds: f64,
    /// `n_allocated / elapsed_seconds`.
    pub allocations_per_second: f64,
    /// Batch requests: count, failures, batches per second, p50, p99 and max latency (request
    /// sent → every result final).
    pub batches: LatencyMeasurement,
    /// 90th percentile batch latency in milliseconds.
    pub batch_p90_ms: f64,
    /// Results still `reserved` when `gateway.allocate` answered (then asked about again).
    pub n_reserved_at_reply: u64,
    /// `gateway.allocation_results` requests made for them.
    pub n_result_polls: u64,
    /// Final results other than `allocated`, by code (`refused` results by their error code).
    pub refusals_by_code: BTreeMap<String, u64>,
    /// Requests refused as a whole, by error code.
    pub request_errors_by_code: BTreeMap<String, u64>,
    /// Allocations answered `allocated` in each second of the phase (by the batch's end).
    pub allocated_by_second: Vec<u64>,
    /// The nodes' bus counters over the phase (heartbeats included).
    pub bus: BusCounters,
    /// `bus.n_published / n_allocated`.
    pub published_per_allocation: f64,
    /// `bus.n_acked / n_allocated`.
    pub acked_per_allocation: f64,
    /// The phase's ledgers, audited after it.
    pub ledgers: LedgerAudit,
}

/// One storage baseline: appends or saves straight to a fresh SQLite store.
#[derive(Debug, Clone, Serialize)]
pub struct CommitMeasurement {
    /// What was measured.
    pub name: String,
    /// `append` or `compare_and_set` calls made.
    pub n_calls: u64,
    /// Records written (journal records, or saves).
    pub n_records: u64,
    /// Bytes of each record's body or state.
    pub record_bytes: usize,
    /// Calls outstanding at once.
    pub concurrency: usize,
    /// Wall time.
    pub elapsed_seconds: f64,
    /// `n_calls / elapsed_seconds`.
    pub calls_per_second: f64,
    /// `n_records / elapsed_seconds`.
    pub records_per_second: f64,
    /// Transactions the store's writer committed.
    pub n_transactions: u64,
}

/// Sizes of records the nodes stored during the run, as read from their SQLite file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoredSizes {
    /// The one-ledger phase's ledger entity record at the end of the run.
    pub one_ledger_bytes_opt: Option<usize>,
    /// A many-ledgers phase ledger's record at the end of the run.
    pub many_ledger_bytes_opt: Option<usize>,
    /// A claim book's record (one account's claim).
    pub claim_book_bytes_opt: Option<usize>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignsBenchReport {
    /// The cluster measured.
    pub cluster_name: String,
    /// Nodes spawned.
    pub n_nodes: usize,
    /// Shards of the cluster.
    pub n_shards: u16,
    /// Seconds each phase allocated.
    pub duration_seconds: f64,
    /// One ledger, several connections.
    pub one_ledger: AllocationPhase,
    /// Many ledgers, one connection each.
    pub many_ledgers: AllocationPhase,
    /// What the nodes stored.
    pub stored_sizes: StoredSizes,
    /// Raw journal appends, one record per call, in sequence.
    pub journal_single: CommitMeasurement,
    /// Raw journal appends, `batch_size` records per call, in sequence.
    pub journal_batched: CommitMeasurement,
    /// Raw compare-and-set, claim-book-sized state, one entity, each save awaited.
    pub state_small_single: CommitMeasurement,
    /// Raw compare-and-set, claim-book-sized state, `n_venues` entities at once.
    pub state_small_concurrent: CommitMeasurement,
    /// Raw compare-and-set, one-ledger-sized state, one entity, each save awaited.
    pub state_ledger_single_opt: Option<CommitMeasurement>,
    /// Raw lapin request/reply (two confirmed publishes), one at a time.
    pub broker_single: LatencyMeasurement,
    /// Raw lapin request/reply, `n_venues` at once.
    pub broker_concurrent: LatencyMeasurement,
    /// TigerBeetle's design point, transfers per second on one core.
    pub tigerbeetle_transfers_per_second: u64,
}

/// The operator API of one node, with the run's token.
struct Operator {
    client: reqwest::Client,
    http_address: String,
    token: String,
}

impl Operator {
    /// Sends `method path` with an optional JSON body; fails unless the answer is 2xx.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body_opt: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(
                method.clone(),
                format!("http://{}{path}", self.http_address),
            )
            .bearer_auth(&self.token);
        if let Some(body) = body_opt {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// The certification policy of the run: every venue passes, at tier [`TIER`].
fn pass_everyone_policy() -> Value {
    let anything = json!({"at_least": {"metric": "client_logins", "value": 0}});
    json!({
        "version": 1,
        "window_days": 1,
        "pass": anything,
        "tiers": [{"name": TIER, "condition": anything}],
    })
}

/// The campaign of the run: enrolment open now, for `n_venues` venues of [`VENUE_QUOTA`].
fn campaign_definition(now_unix_ms: u64, n_venues: usize) -> Value {
    json!({
        "kind": "promotion",
        "title": "Allocation benchmark",
        "text": "Units for the allocation benchmark (lanmesh-load campaigns).",
        "enrol_opens_at_ms": now_unix_ms.saturating_sub(60_000),
        "enrol_closes_at_ms": now_unix_ms + 86_400_000,
        "eligibility": {"min_tier": TIER, "activity_days": 1},
        "total_units": VENUE_QUOTA.saturating_mul(n_venues as u64),
        "venue_quota": VENUE_QUOTA,
        "user_limit": UNITS_PER_ALLOCATION,
        "scoring": {
            "points_per_unit_allocated": 1,
            "points_per_unit_used": 0,
            "venue_points_per_user_served": 0,
        },
        "winners": {"top_users": 0, "top_venues": 0, "user_reward": "", "venue_reward": ""},
    })
}

/// The registration of gateway `index`.
fn gateway_registration(index: usize) -> GatewayRegisterRequest {
    GatewayRegisterRequest {
        venue_name: format!("Bench Venue {index}"),
        venue_address: format!("{index} Bench Street"),
        admin_account: ADMIN_ACCOUNT.to_owned(),
        segments: vec![format!("10.{index}.0.0/24")],
        password: Some(GATEWAY_PASSWORD.to_owned()),
    }
}

/// The `seq`-th allocation of lane `lane` of phase `phase`: its op id is also its account,
/// distinct across lanes and phases of the run.
fn allocation(phase: &str, lane: usize, seq: u64) -> WireAllocation {
    let id = format!("{phase}w{lane}n{seq}");
    WireAllocation {
        op_id: id.clone(),
        account: id,
        units: UNITS_PER_ALLOCATION,
        timeout_ms: Some(ALLOCATION_TIMEOUT_MS),
    }
}

/// Allocations counted per whole second since the phase started, by when their batch ended.
fn per_second(completions: &[(Duration, u64)]) -> Vec<u64> {
    let mut seconds: Vec<u64> = Vec::new();
    for (at, n_allocated) in completions {
        let second = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
        if seconds.len() <= second {
            seconds.resize(second + 1, 0);
        }
        if let Some(slot) = seconds.get_mut(second) {
            *slot += n_allocated;
        }
    }
    seconds
}

/// The stable name of an error code, as the protocol spells it.
pub(crate) fn code_name(error: &ErrorBody) -> String {
    serde_json::to_value(error.code)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", error.code))
}

/// The key under which a final result other than `allocated` is counted.
fn refusal_code(result: &WireAllocationResult) -> String {
    match (result.status, &result.error) {
        (AllocationStatus::Refused, Some(code)) => code.clone(),
        (status, _) => format!("{status:?}").to_lowercase(),
    }
}

/// One connection of a phase, with the key of the gateway it allocates for.
struct Lane {
    client: ImClient,
    key: String,
}

/// What one lane did.
#[derive(Default)]
struct LaneTally {
    latencies: Vec<Duration>,
    completions: Vec<(Duration, u64)>,
    n_sent: u64,
    n_allocated: u64,
    n_reserved_at_reply: u64,
    n_result_polls: u64,
    n_failed_requests: u64,
    first_failure_opt: Option<String>,
    refusals: BTreeMap<String, u64>,
    request_errors: BTreeMap<String, u64>,
    finished: Duration,
}

/// What a lane needs to know about its phase.
#[derive(Clone)]
struct LanePlan {
    phase: &'static str,
    lane: usize,
    campaign_id: String,
    batch_size: usize,
    started: Instant,
    deadline: Instant,
}

/// Asks about `results` still `reserved` until each is final; returns the questions asked.
async fn wait_final(
    client: &mut ImClient,
    key: &str,
    campaign_id: &str,
    results: &mut [WireAllocationResult],
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + FINAL_TIMEOUT;
    let mut pause = FIRST_RESULTS_POLL;
    let mut n_polls = 0;
    loop {
        let waiting: Vec<String> = results
            .iter()
            .filter(|result| !result.is_final())
            .map(|result| result.op_id.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(n_polls);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} results still reserved after {FINAL_TIMEOUT:?}",
                waiting.len()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RESULTS_POLL);
        let query = AllocationResultsRequest {
            campaign_id: campaign_id.to_owned(),
            op_ids: waiting,
        };
        let reply: AllocationResultsReply = client
            .request_ok("gateway.allocation_results", Some(key), &query)
            .await?;
        n_polls += 1;
        for fresh in reply.results {
            if let Some(slot) = results
                .iter_mut()
                .find(|result| result.op_id == fresh.op_id)
            {
                *slot = fresh;
            }
        }
    }
}

/// A closed loop: one batch outstanding until the deadline. Gives the connection back.
async fn run_lane(mut lane: Lane, plan: LanePlan) -> (ImClient, LaneTally) {
    let mut tally = LaneTally::default();
    let mut seq = 0_u64;
    while Instant::now() < plan.deadline {
        let allocations: Vec<WireAllocation> = (0..plan.batch_size)
            .map(|offset| allocation(plan.phase, plan.lane, seq + offset as u64))
            .collect();
        seq += plan.batch_size as u64;
        let request = AllocateBatchRequest {
            campaign_id: plan.campaign_id.clone(),
            allocations,
        };
        let sent = Instant::now();
        let answered: anyhow::Result<Result<AllocationResultsReply, ErrorBody>> = lane
            .client
            .request("gateway.allocate", Some(&lane.key), &request)
            .await;
        let mut results = match answered {
            Ok(Ok(reply)) => reply.results,
            Ok(Err(error)) => {
                *tally.request_errors.entry(code_name(&error)).or_default() += 1;
                tally
                    .first_failure_opt
                    .get_or_insert_with(|| format!("{}: {}", code_name(&error), error.message));
                tokio::time::sleep(PAUSE_AFTER_REQUEST_ERROR).await;
                continue;
            }
            Err(error) => {
                tally.n_failed_requests += 1;
                tally.first_failure_opt.get_or_insert(format!("{error:#}"));
                break;
            }
        };
        tally.n_sent += plan.batch_size as u64;
        tally.n_reserved_at_reply +=
            results.iter().filter(|result| !result.is_final()).count() as u64;
        match wait_final(&mut lane.client, &lane.key, &plan.campaign_id, &mut results).await {
            Ok(n_polls) => tally.n_result_polls += n_polls,
            Err(error) => {
                tally.n_failed_requests += 1;
                tally.first_failure_opt.get_or_insert(format!("{error:#}"));
                break;
            }
        }
        tally.latencies.push(sent.elapsed());
        let mut n_allocated = 0;
        for result in &results {
            if result.status == AllocationStatus::Allocated {
                n_allocated += 1;
            } else {
                *tally.refusals.entry(refusal_code(result)).or_default() += 1;
            }
        }
        tally.n_allocated += n_allocated;
        tally
            .completions
            .push((plan.started.elapsed(), n_allocated));
    }
    tally.finished = plan.started.elapsed();
    (lane.client, tally)
}

/// Connects `n_per_gateway` lanes for each of `gateway_ids`, round robin over `addresses`: the
/// first lane of a gateway logs it in and enrols it in the campaign; the others carry the same
/// key (a newer login would replace the session).
async fn open_lanes(
    addresses: &[String],
    gateway_ids: &[String],
    n_per_gateway: usize,
    campaign_id: &str,
) -> anyhow::Result<Vec<Lane>> {
    let mut lanes = Vec::with_capacity(gateway_ids.len() * n_per_gateway);
    for gateway_id in gateway_ids {
        let mut key_opt: Option<String> = None;
        for _ in 0..n_per_gateway {
            let address = addresses
                .get(lanes.len() % addresses.len().max(1))
                .context("no node to connect to")?;
            let mut client = ImClient::connect(address).await?;
            client.set_reply_timeout(REPLY_TIMEOUT);
            let key = match &key_opt {
                Some(key) => key.clone(),
                None => {
                    let login: GatewayLoginReply = client
                        .request_ok(
                            "gateway.login",
                            None,
                            &GatewayLoginRequest {
                                gateway_id: gateway_id.clone(),
                                password: GATEWAY_PASSWORD.to_owned(),
                            },
                        )
                        .await?;
                    let enrolled: EnrolReply = client
                        .request_ok(
                            "gateway.enrol",
                            Some(&login.key),
                            &CampaignRef {
                                campaign_id: campaign_id.to_owned(),
                            },
                        )
                        .await
                        .with_context(|| format!("enrolling gateway {gateway_id}"))?;
                    if enrolled.quota != VENUE_QUOTA {
                        bail!(
                            "gateway {gateway_id} enrolled with quota {}, not {VENUE_QUOTA}",
                            enrolled.quota
                        );
                    }
                    key_opt = Some(login.key.clone());
                    login.key
                }
            };
            lanes.push(Lane { client, key });
        }
    }
    Ok(lanes)
}

/// The nodes' bus counters now, summed over the running nodes.
pub(crate) async fn bus_counters(cluster: &LocalCluster) -> anyhow::Result<BusCounters> {
    let read = |name: &'static str| async move {
        cluster
            .sum_over_running(name)
            .await
            .map(|value| value as u64)
    };
    Ok(BusCounters {
        n_published: read("lanmesh_bus_published_total").await?,
        n_acked: read("lanmesh_bus_acked_total").await?,
        n_retried: read("lanmesh_bus_retried_total").await?,
        n_dead_lettered: read("lanmesh_bus_dead_lettered_total").await?,
    })
}

/// Audits the ledgers of `gateway_ids` in the campaign through the operator API.
async fn audit_ledgers(
    operator: &Operator,
    campaign_id: &str,
    gateway_ids: &[String],
) -> anyhow::Result<LedgerAudit> {
    let mut audit = LedgerAudit {
        all_journals_match: true,
        ..LedgerAudit::default()
    };
    for gateway_id in gateway_ids {
        let view = operator
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/campaigns/{campaign_id}/ledgers/{gateway_id}"),
                None,
            )
            .await?;
        let number = |path: &[&str]| {
            path.iter()
                .try_fold(&view, |value, name| value.get(name))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        audit.n_ledgers += 1;
        audit.posted_units += number(&["balances", "posted_units"]);
        audit.pending_units += number(&["balances", "pending_units"]);
        audit.n_journal_entries_expected += number(&["n_journal_entries_expected"]);
        audit.n_journal_entries_stored += number(&["n_journal_entries_stored"]);
        audit.all_journals_match &=
            view.get("journal_matches").and_then(Value::as_bool) == Some(true);
    }
    Ok(audit)
}

/// One allocation phase: who allocates from which ledgers.
struct PhaseSpec<'a> {
    name: &'static str,
    /// Prefix of the phase's op ids and accounts.
    tag: &'static str,
    gateway_ids: &'a [String],
    n_per_gateway: usize,
}

/// What a phase runs against.
struct PhaseContext<'a> {
    cluster: &'a LocalCluster,
    addresses: &'a [String],
    operator: &'a Operator,
    campaign_id: &'a str,
    settings: &'a CampaignsBenchSettings,
}

/// Connects the phase's lanes, lets them allocate for the run's duration and adds up what they
/// did; then audits the phase's ledgers.
async fn run_phase(
    context: &PhaseContext<'_>,
    spec: &PhaseSpec<'_>,
) -> anyhow::Result<AllocationPhase> {
    let settings = context.settings;
    let lanes = open_lanes(
        context.addresses,
        spec.gateway_ids,
        spec.n_per_gateway,
        context.campaign_id,
    )
    .await?;
    let n_connections = lanes.len();
    tracing::info!(phase = spec.name, n_connections, "allocating");
    let before = bus_counters(context.cluster).await?;
    let started = Instant::now();
    let deadline = started + settings.duration;
    let mut running = JoinSet::new();
    for (index, lane) in lanes.into_iter().enumerate() {
        let plan = LanePlan {
            phase: spec.tag,
            lane: index,
            campaign_id: context.campaign_id.to_owned(),
            batch_size: settings.batch_size,
            started,
            deadline,
        };
        running.spawn(run_lane(lane, plan));
    }
    let mut clients = Vec::with_capacity(n_connections);
    let mut total = LaneTally::default();
    while let Some(joined) = running.join_next().await {
        let (client, tally) = joined.context("an allocating lane panicked")?;
        clients.push(client);
        total.latencies.extend(tally.latencies);
        total.completions.extend(tally.completions);
        total.n_sent += tally.n_sent;
        total.n_allocated += tally.n_allocated;
        total.n_reserved_at_reply += tally.n_reserved_at_reply;
        total.n_result_polls += tally.n_result_polls;
        total.n_failed_requests += tally.n_failed_requests;
        total.first_failure_opt = total.first_failure_opt.or(tally.first_failure_opt);
        for (code, n) in tally.refusals {
            *total.refusals.entry(code).or_default() += n;
        }
        for (code, n) in tally.request_errors {
            *total.request_errors.entry(code).or_default() += n;
        }
        total.finished = total.finished.max(tally.finished);
    }
    let bus = bus_counters(context.cluster).await?.since(before);
    for client in clients {
        if let Err(error) = client.close().await {
            tracing::debug!(error = %format!("{error:#}"), "closing a lane");
        }
    }
    if let Some(failure) = &total.first_failure_opt {
        tracing::warn!(phase = spec.name, failure = %failure, "some requests failed");
    }
    let ledgers = audit_ledgers(context.operator, context.campaign_id, spec.gateway_ids).await?;
    let elapsed = total.finished.max(Duration::from_millis(1));
    let mut sorted = total.latencies.clone();
    sorted.sort_unstable();
    let n_request_errors: u64 = total.request_errors.values().sum();
    let allocated = total.n_allocated as f64;
    Ok(AllocationPhase {
        name: spec.name.to_owned(),
        n_ledgers: spec.gateway_ids.len(),
        n_connections,
        batch_size: settings.batch_size,
        n_allocations_sent: total.n_sent,
        n_allocated: total.n_allocated,
        elapsed_seconds: elapsed.as_secs_f64(),
        allocations_per_second: allocated / elapsed.as_secs_f64(),
        batches: LatencyMeasurement::new(
            format!("{} batches", spec.name),
            total.latencies,
            total.n_failed_requests + n_request_errors,
            elapsed,
        ),
        batch_p90_ms: percentile(&sorted, 0.90).as_secs_f64() * 1_000.0,
        n_reserved_at_reply: total.n_reserved_at_reply,
        n_result_polls: total.n_result_polls,
        refusals_by_code: total.refusals,
        request_errors_by_code: total.request_errors,
        allocated_by_second: per_second(&total.completions),
        bus,
        published_per_allocation: bus.n_published as f64 / allocated.max(1.0),
        acked_per_allocation: bus.n_acked as f64 / allocated.max(1.0),
        ledgers,
    })
}

/// Signs up the admin, registers `n_gateways` gateways, puts the policy, certifies every
/// gateway, and creates and publishes the campaign; returns the gateways' ids.
async fn set_up(
    addresses: &[String],
    operator: &Operator,
    campaign_id: &str,
    n_gateways: usize,
) -> anyhow::Result<Vec<String>> {
    let address = addresses.first().context("no node")?;
    let mut admin = ImClient::connect(address).await?;
    admin.set_reply_timeout(REPLY_TIMEOUT);
    let _: RegisterReply = admin
        .request_ok(
            "account.register",
            None,
            &RegisterRequest {
                username: ADMIN_ACCOUNT.to_owned(),
                password: ADMIN_PASSWORD.to_owned(),
                display_name: "Bench admin".to_owned(),
            },
        )
        .await?;
    let mut gateway_ids = Vec::with_capacity(n_gateways);
    for index in 0..n_gateways {
        let registered: GatewayRegisterReply = admin
            .request_ok("gateway.register", None, &gateway_registration(index))
            .await
            .with_context(|| format!("registering gateway {index}"))?;
        gateway_ids.push(registered.gateway_id);
    }
    admin.close().await?;
    operator
        .send(
            reqwest::Method::PUT,
            "/api/v1/certification-policy",
            Some(&pass_everyone_policy()),
        )
        .await?;
    for gateway_id in &gateway_ids {
        let record = operator
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/gateways/{gateway_id}/certify"),
                Some(&json!({})),
            )
            .await?;
        if record.get("status").and_then(Value::as_str) != Some("certified") {
            bail!("gateway {gateway_id} was not certified: {record}");
        }
    }
    let now_unix_ms = lanmesh_bus::envelope::now_unix_ms();
    operator
        .send(
            reqwest::Method::POST,
            "/api/v1/campaigns",
            Some(&json!({
                "campaign_id": campaign_id,
                "definition": campaign_definition(now_unix_ms, n_gateways),
            })),
        )
        .await?;
    operator
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/campaigns/{campaign_id}/publish"),
            None,
        )
        .await?;
    Ok(gateway_ids)
}

/// The size of an entity's stored record, if it has one.
pub(crate) async fn stored_bytes(store: &SqliteStore, kind: EntityKind, id: &str) -> Option<usize> {
    let key = EntityKey::new(kind.as_str(), id);
    match store.load(&key).await {
        Ok(stored_opt) => stored_opt.map(|stored| stored.state.len()),
        Err(error) => {
            tracing::warn!(entity = %key, error = %error, "stored record not readable");
            None
        }
    }
}

/// Reads the sizes of a few records the nodes stored in their SQLite file at `database`.
async fn read_stored_sizes(
    database: &Path,
    campaign_id: &str,
    one_gateway: &str,
    many_gateway_opt: Option<&String>,
) -> anyhow::Result<StoredSizes> {
    let store = SqliteStore::open(&SqliteConfig {
        path: database.to_path_buf(),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("opening the nodes' database {}", database.display()))?;
    let first_account = allocation("one", 0, 0).account;
    let sizes = StoredSizes {
        one_ledger_bytes_opt: stored_bytes(
            &store,
            EntityKind::Ledger,
            &ledger_id(campaign_id, one_gateway),
        )
        .await,
        many_ledger_bytes_opt: match many_gateway_opt {
            Some(gateway_id) => {
                stored_bytes(
                    &store,
                    EntityKind::Ledger,
                    &ledger_id(campaign_id, gateway_id),
                )
                .await
            }
            None => None,
        },
        claim_book_bytes_opt: stored_bytes(
            &store,
            EntityKind::ClaimBook,
            &claim_id(campaign_id, &first_account),
        )
        .await,
    };
    store.close().await;
    Ok(sizes)
}

/// Waits for the cluster, sets the campaign up, runs both phases and reads what was stored.
async fn measure(
    settings: &CampaignsBenchSettings,
    cluster: &mut LocalCluster,
    token: &str,
) -> anyhow::Result<(AllocationPhase, AllocationPhase, StoredSizes)> {
    cluster.wait_settled(SETTLE_TIMEOUT).await?;
    let addresses = cluster
        .running_nodes()
        .into_iter()
        .map(|index| cluster.node(index).map(|node| node.http_address.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let operator = Operator {
        client: reqwest::Client::new(),
        http_address: addresses.first().context("no node")?.clone(),
        token: token.to_owned(),
    };
    let campaign_id = format!("bench-{}", short_id());
    tracing::info!(
        n_gateways = settings.n_venues + 1,
        "setting the campaign up"
    );
    let gateway_ids = set_up(&addresses, &operator, &campaign_id, settings.n_venues + 1).await?;
    let (one_gateway, many_gateways) = gateway_ids.split_first().context("no gateway")?;
    let context = PhaseContext {
        cluster,
        addresses: &addresses,
        operator: &operator,
        campaign_id: &campaign_id,
        settings,
    };
    let one_ledger = run_phase(
        &context,
        &PhaseSpec {
            name: "one ledger",
            tag: "one",
            gateway_ids: std::slice::from_ref(one_gateway),
            n_per_gateway: settings.n_connections,
        },
    )
    .await?;
    let many_ledgers = run_phase(
        &context,
        &PhaseSpec {
            name: "many ledgers",
            tag: "many",
            gateway_ids: many_gateways,
            n_per_gateway: 1,
        },
    )
    .await?;
    let sizes = read_stored_sizes(
        &cluster.directory().join(CLUSTER_DATABASE_FILE),
        &campaign_id,
        one_gateway,
        many_gateways.first(),
    )
    .await?;
    Ok((one_ledger, many_ledgers, sizes))
}

/// Eight hex digits, unique enough to tell runs apart.
pub(crate) fn short_id() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .get(..8)
        .unwrap_or("x")
        .to_owned()
}

/// A fresh store at `path`.
async fn open_fresh(path: &Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(&SqliteConfig {
        path: path.to_path_buf(),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("opening {}", path.display()))
}

/// A journal record as a ledger makes it: an encoded posting of one unit.
fn journal_record(sequence: u64, at_unix_ms: u64) -> anyhow::Result<JournalRecord> {
    let account_id = format!("onew0n{sequence}");
    let entry = JournalEntry {
        sequence,
        op_id: account_id.clone(),
        transfer_id: sequence,
        account_id,
        units: UNITS_PER_ALLOCATION,
        kind: JournalKind::Posted,
        at_unix_ms,
    };
    Ok(JournalRecord {
        sequence,
        at_unix_ms: i64::try_from(at_unix_ms)?,
        body: lanmesh_actors::entities::encode(&entry)?,
    })
}

/// Appends journal records to one ledger of a fresh store at `path`, `records_per_call` per
/// `append`, each awaited before the next, for [`STORAGE_BASELINE_DURATION`].
async fn journal_baseline(
    path: &Path,
    records_per_call: usize,
) -> anyhow::Result<CommitMeasurement> {
    let store = open_fresh(path).await?;
    let ledger = ledger_id("bench-baseline", "g-baseline");
    let at_unix_ms = lanmesh_bus::envelope::now_unix_ms();
    let mut next_sequence = 1_u64;
    let mut n_calls = 0_u64;
    let mut record_bytes = 0;
    let stats_before = store.writer_stats();
    let started = Instant::now();
    let deadline = started + STORAGE_BASELINE_DURATION;
    let appended = async {
        while Instant::now() < deadline {
            let records = (0..records_per_call as u64)
                .map(|offset| journal_record(next_sequence + offset, at_unix_ms))
                .collect::<anyhow::Result<Vec<_>>>()?;
            record_bytes = records.first().map_or(0, |record| record.body.len());
            next_sequence += records_per_call as u64;
            LedgerJournalStore::append(&store, &ledger, &records)
                .await
                .context("raw journal append")?;
            n_calls += 1;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let elapsed = started.elapsed();
    let stats_after = store.writer_stats();
    store.close().await;
    appended?;
    let n_records = n_calls * records_per_call as u64;
    let name = if records_per_call == 1 {
        "journal append, 1 record per call".to_owned()
    } else {
        format!("journal append, {records_per_call} records per call")
    };
    Ok(commit_measurement(
        name,
        (n_calls, n_records),
        record_bytes,
        1,
        elapsed,
        stats_after
            .n_committed_transactions
            .saturating_sub(stats_before.n_committed_transactions),
    ))
}

fn commit_measurement(
    name: String,
    (n_calls, n_records): (u64, u64),
    record_bytes: usize,
    concurrency: usize,
    elapsed: Duration,
    n_transactions: u64,
) -> CommitMeasurement {
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    CommitMeasurement {
        name,
        n_calls,
        n_records,
        record_bytes,
        concurrency,
        elapsed_seconds: seconds,
        calls_per_second: n_calls as f64 / seconds,
        records_per_second: n_records as f64 / seconds,
        n_transactions,
    }
}

/// Saves states of `state_bytes` with compare-and-set to `n_entities` entities of a fresh store
/// at `path`, each entity's saves in sequence and the entities at once, for
/// [`STORAGE_BASELINE_DURATION`].
async fn state_baseline(
    path: &Path,
    name: String,
    state_bytes: usize,
    n_entities: usize,
) -> anyhow::Result<CommitMeasurement> {
    let store = open_fresh(path).await?;
    let state = vec![0x5a_u8; state_bytes];
    let stats_before = store.writer_stats();
    let started = Instant::now();
    let deadline = started + STORAGE_BASELINE_DURATION;
    let chains = (0..n_entities).map(|entity| {
        let store = &store;
        let state = &state;
        async move {
            let key = EntityKey::new("bench", format!("entity-{entity}"));
            let mut expected_opt = None;
            let mut n_saves = 0_u64;
            while Instant::now() < deadline {
                let version = StateVersion::new(1, n_saves + 1);
                let new = StoredEntityState {
                    version,
                    state: state.clone(),
                };
                store
                    .compare_and_set(&key, expected_opt, new)
                    .await
                    .context("raw compare-and-set")?;
                expected_opt = Some(version);
                n_saves += 1;
            }
            Ok::<_, anyhow::Error>(n_saves)
        }
    });
    let saved = futures_util::future::join_all(chains).await;
    let elapsed = started.elapsed();
    let stats_after = store.writer_stats();
    store.close().await;
    let n_saves = saved
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .iter()
        .sum();
    Ok(commit_measurement(
        name,
        (n_saves, n_saves),
        state_bytes,
        n_entities,
        elapsed,
        stats_after
            .n_committed_transactions
            .saturating_sub(stats_before.n_committed_transactions),
    ))
}

/// The storage baselines, on fresh files in `directory`.
struct StorageBaselines {
    journal_single: CommitMeasurement,
    journal_batched: CommitMeasurement,
    state_small_single: CommitMeasurement,
    state_small_concurrent: CommitMeasurement,
    state_ledger_single_opt: Option<CommitMeasurement>,
}

async fn storage_baselines(
    directory: &Path,
    settings: &CampaignsBenchSettings,
    sizes: &StoredSizes,
) -> anyhow::Result<StorageBaselines> {
    let journal_single = journal_baseline(&directory.join("journal-single.db"), 1).await?;
    let journal_batched =
        journal_baseline(&directory.join("journal-batched.db"), settings.batch_size).await?;
    let small_bytes = sizes.claim_book_bytes_opt.unwrap_or(FALLBACK_STATE_BYTES);
    let state_small_single = state_baseline(
        &directory.join("state-single.db"),
        format!("compare_and_set, 1 entity, {small_bytes} B"),
        small_bytes,
        1,
    )
    .await?;
    let state_small_concurrent = state_baseline(
        &directory.join("state-concurrent.db"),
        format!(
            "compare_and_set, {} entities at once, {small_bytes} B",
            settings.n_venues
        ),
        small_bytes,
        settings.n_venues,
    )
    .await?;
    let state_ledger_single_opt = match sizes.one_ledger_bytes_opt {
        Some(ledger_bytes) => Some(
            state_baseline(
                &directory.join("state-ledger.db"),
                format!(
                    "compare_and_set, 1 entity, {:.0} KiB (the one ledger)",
                    ledger_bytes as f64 / 1024.0
                ),
                ledger_bytes,
                1,
            )
            .await?,
        ),
        None => None,
    };
    Ok(StorageBaselines {
        journal_single,
        journal_batched,
        state_small_single,
        state_small_concurrent,
        state_ledger_single_opt,
    })
}

/// Raw lapin request/reply on the run's broker with `concurrency` requests outstanding.
pub(crate) async fn broker_baseline(
    amqp_url: &str,
    concurrency: usize,
) -> anyhow::Result<LatencyMeasurement> {
    let mut measured = raw_round(&EntityBenchSettings {
        amqp_url: amqp_url.to_owned(),
        cluster_name_opt: None,
        n_shards: 1,
        n_probes: concurrency,
        concurrency,
        duration: BROKER_BASELINE_DURATION,
        n_requests_opt: None,
        spawn_nodes: 0,
        node_binary_opt: None,
    })
    .await?;
    measured.name = format!("raw lapin request/reply × {concurrency}");
    Ok(measured)
}

/// Runs both phases on a cluster it spawns, stops the cluster, then measures the baselines.
pub async fn run(settings: &CampaignsBenchSettings) -> anyhow::Result<CampaignsBenchReport> {
    if settings.n_nodes == 0 || settings.n_connections == 0 || settings.n_venues == 0 {
        bail!("--nodes, --connections and --venues must be positive");
    }
    if settings.n_venues + 1 > MAX_GATEWAYS {
        bail!("--venues is at most {}", MAX_GATEWAYS - 1);
    }
    if !(1..=MAX_BATCH).contains(&settings.batch_size) {
        bail!("--batch must be between 1 and {MAX_BATCH}");
    }
    if settings.duration.is_zero() {
        bail!("--duration-secs must be positive");
    }
    let cluster_name = format!("lanmesh-campaigns-{}", short_id());
    let token = format!("lanmesh-load-operator-{}", uuid::Uuid::new_v4().simple());
    let mut spec = ClusterSpec::new(settings.n_shards);
    spec.extra_env = crate::load::load_node_env();
    spec.extra_env
        .push(("LANMESH__OPERATOR__TOKEN".to_owned(), token.clone()));
    let (one_ledger, many_ledgers, stored_sizes) = measure_on_spawned(
        &settings.amqp_url,
        &cluster_name,
        spec,
        (settings.n_nodes, settings.node_binary_opt.as_deref()),
        async |cluster| Box::pin(measure(settings, cluster, &token)).await,
    )
    .await?;

    tracing::info!("storage baselines");
    let raw_directory = std::env::temp_dir().join(format!(
        "lanmesh-campaigns-raw-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let storage = Box::pin(storage_baselines(&raw_directory, settings, &stored_sizes)).await;
    if raw_directory.exists() {
        std::fs::remove_dir_all(&raw_directory)
            .with_context(|| format!("removing {}", raw_directory.display()))?;
    }
    let storage = storage?;
    tracing::info!("broker baselines");
    let broker_single = broker_baseline(&settings.amqp_url, 1).await?;
    let broker_concurrent = broker_baseline(&settings.amqp_url, settings.n_venues).await?;
    Ok(CampaignsBenchReport {
        cluster_name,
        n_nodes: settings.n_nodes,
        n_shards: settings.n_shards,
        duration_seconds: settings.duration.as_secs_f64(),
        one_ledger,
        many_ledgers,
        stored_sizes,
        journal_single: storage.journal_single,
        journal_batched: storage.journal_batched,
        state_small_single: storage.state_small_single,
        state_small_concurrent: storage.state_small_concurrent,
        state_ledger_single_opt: storage.state_ledger_single_opt,
        broker_single,
        broker_concurrent,
        tigerbeetle_transfers_per_second: TIGERBEETLE_TRANSFERS_PER_SECOND,
    })
}

/// `n` per code, or `none`.
pub(crate) fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(code, n)| format!("{code}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn size_text(bytes_opt: Option<usize>) -> String {
    match bytes_opt {
        Some(bytes) if bytes >= 1024 * 1024 => format!("{:.2} MiB", bytes as f64 / 1_048_576.0),
        Some(bytes) if bytes >= 1024 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        Some(bytes) => format!("{bytes} B"),
        None => "?".to_owned(),
    }
}

impl AllocationPhase {
    fn label(&self) -> String {
        format!(
            "{} ({} ledger{}, {} conn.)",
            self.name,
            self.n_ledgers,
            if self.n_ledgers == 1 { "" } else { "s" },
            self.n_connections
        )
    }

    fn write_row(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "{:<40} {:>9} {:>8.2} {:>10.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            self.label(),
            self.n_allocated,
            self.elapsed_seconds,
            self.allocations_per_second,
            self.batches.requests_per_second,
            self.batches.p50_ms,
            self.batch_p90_ms,
            self.batches.p99_ms,
            self.batches.max_ms
        )
    }

    fn write_details(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_second: Vec<String> = self
            .allocated_by_second
            .iter()
            .map(ToString::to_string)
            .collect();
        writeln!(formatter, "{}:", self.name)?;
        writeln!(formatter, "  allocated per second: {}", by_second.join(" "))?;
        writeln!(
            formatter,
            "  {} sent, {} allocated; refusals: {}; requests refused: {}; failed requests: {}",
            self.n_allocations_sent,
            self.n_allocated,
            counts_text(&self.refusals_by_code),
            counts_text(&self.request_errors_by_code),
            self.batches.n_errors
        )?;
        writeln!(
            formatter,
            "  still reserved when gateway.allocate answered: {} ({} gateway.allocation_results asked)",
            self.n_reserved_at_reply, self.n_result_polls
        )?;
        writeln!(
            formatter,
            "  node bus over the phase: {} published ({:.2} per allocation), {} acked ({:.2} per allocation), {} retried, {} dead-lettered",
            self.bus.n_published,
            self.published_per_allocation,
            self.bus.n_acked,
            self.acked_per_allocation,
            self.bus.n_retried,
            self.bus.n_dead_lettered
        )?;
        let ledgers = &self.ledgers;
        writeln!(
            formatter,
            "  ledger audit: {} posted, {} pending; journal {} of {} entries stored, replays to the live balances: {}",
            ledgers.posted_units,
            ledgers.pending_units,
            ledgers.n_journal_entries_stored,
            ledgers.n_journal_entries_expected,
            if ledgers.all_journals_match {
                "yes"
            } else {
                "NO"
            }
        )
    }
}

impl CommitMeasurement {
    fn write_row(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "{:<52} {:>9} {:>8.2} {:>11.0} {:>11.0} {:>9}",
            self.name,
            self.n_calls,
            self.elapsed_seconds,
            self.calls_per_second,
            self.records_per_second,
            self.n_transactions
        )
    }
}

/// The table of the broker baselines: a header, then one row each.
pub(crate) fn write_broker_baselines(
    formatter: &mut fmt::Formatter<'_>,
    single: &LatencyMeasurement,
    concurrent: &LatencyMeasurement,
) -> fmt::Result {
    writeln!(
        formatter,
        "{:<52} {:>9} {:>8} {:>11} {:>9} {:>9}",
        "baselines: the same broker", "requests", "seconds", "req/s", "p50 ms", "p99 ms"
    )?;
    write_broker_row(formatter, single)?;
    write_broker_row(formatter, concurrent)
}

fn write_broker_row(
    formatter: &mut fmt::Formatter<'_>,
    measurement: &LatencyMeasurement,
) -> fmt::Result {
    writeln!(
        formatter,
        "{:<52} {:>9} {:>8.2} {:>11.0} {:>9.2} {:>9.2}",
        measurement.name,
        measurement.n_requests,
        measurement.elapsed_seconds,
        measurement.requests_per_second,
        measurement.p50_ms,
        measurement.p99_ms
    )
}

impl fmt::Display for CampaignsBenchReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "cluster {} ({} node{}, {} shards); batches of {}, {:.0} s per phase",
            self.cluster_name,
            self.n_nodes,
            if self.n_nodes == 1 { "" } else { "s" },
            self.n_shards,
            self.one_ledger.batch_size,
            self.duration_seconds
        )?;
        writeln!(
            formatter,
            "{:<40} {:>9} {:>8} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "end to end (request → all final)",
            "allocated",
            "seconds",
            "allocs/s",
            "batches/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        )?;
        self.one_ledger.write_row(formatter)?;
        self.many_ledgers.write_row(formatter)?;
        self.one_ledger.write_details(formatter)?;
        self.many_ledgers.write_details(formatter)?;
        let sizes = &self.stored_sizes;
        writeln!(
            formatter,
            "stored records at the end: the one ledger {}, a many-ledgers ledger {}, a claim book {}",
            size_text(sizes.one_ledger_bytes_opt),
            size_text(sizes.many_ledger_bytes_opt),
            size_text(sizes.claim_book_bytes_opt)
        )?;
        writeln!(
            formatter,
            "{:<52} {:>9} {:>8} {:>11} {:>11} {:>9}",
            "baselines: raw SQLite (fresh files)",
            "calls",
            "seconds",
            "calls/s",
            "records/s",
            "commits"
        )?;
        self.journal_single.write_row(formatter)?;
        self.journal_batched.write_row(formatter)?;
        self.state_small_single.write_row(formatter)?;
        self.state_small_concurrent.write_row(formatter)?;
        if let Some(ledger) = &self.state_ledger_single_opt {
            ledger.write_row(formatter)?;
        }
        write_broker_baselines(formatter, &self.broker_single, &self.broker_concurrent)?;
        let design = self.tigerbeetle_transfers_per_second as f64;
        for phase in [&self.one_ledger, &self.many_ledgers] {
            writeln!(
                formatter,
                "{}: {:.0} allocations/s = 1/{:.0} of TigerBeetle's {} transfers/s on one core",
                phase.name,
                phase.allocations_per_second,
                design / phase.allocations_per_second.max(f64::MIN_POSITIVE),
                self.tigerbeetle_transfers_per_second
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanmesh_actors::model::campaign::CampaignDefinition;
    use lanmesh_actors::model::certification::CertificationPolicy;
    use lanmesh_actors::model::ledger::{validate_account_id, validate_op_id};
    use std::collections::HashSet;

    #[test]
    fn the_campaign_and_the_policy_validate() {
        let policy: CertificationPolicy = serde_json::from_value(pass_everyone_policy()).unwrap();
        policy.validate().unwrap();
        let tiers: Vec<String> = policy.tiers.iter().map(|tier| tier.name.clone()).collect();
        for n_venues in [1, 17, MAX_GATEWAYS] {
            let definition: CampaignDefinition =
                serde_json::from_value(campaign_definition(1_800_000_000_000, n_venues)).unwrap();
            definition.validate(&tiers).unwrap();
            assert_eq!(definition.venue_quota, VENUE_QUOTA);
            assert!(definition.total_units >= VENUE_QUOTA * n_venues as u64);
        }
    }

    #[test]
    fn allocations_are_valid_and_never_repeat_an_account() {
        let mut accounts = HashSet::new();
        for phase in ["one", "many"] {
            for lane in 0..20 {
                for seq in 0..300 {
                    let allocation = allocation(phase, lane, seq);
                    validate_op_id(&allocation.op_id).unwrap();
                    validate_account_id(&allocation.account).unwrap();
                    EntityKind::User.address(&allocation.account).unwrap();
                    assert!(accounts.insert(allocation.account), "{phase} {lane} {seq}");
                }
            }
        }
    }

    #[test]
    fn gateways_get_distinct_segments() {
        let segments: HashSet<Vec<String>> = (0..MAX_GATEWAYS)
            .map(|index| gateway_registration(index).segments)
            .collect();
        assert_eq!(segments.len(), MAX_GATEWAYS);
    }

    #[test]
    fn allocations_are_counted_in_the_second_their_batch_ended() {
        let check = |completions: &[(u64, u64)], expected: &[u64]| {
            let completions: Vec<(Duration, u64)> = completions
                .iter()
                .map(|(ms, n)| (Duration::from_millis(*ms), *n))
                .collect();
            assert_eq!(per_second(&completions), expected, "{completions:?}");
        };
        check(&[], &[]);
        check(&[(999, 64)], &[64]);
        check(&[(1_000, 64)], &[0, 64]);
        check(&[(2_500, 1), (10, 2), (20, 3)], &[5, 0, 1]);
    }

    #[test]
    fn refusals_are_counted_by_their_code() {
        let result = |status: AllocationStatus, error: Option<&str>| WireAllocationResult {
            op_id: "x".to_owned(),
            status,
            transfer_id: None,
            units: None,
            expires_at_ms: None,
            error: error.map(str::to_owned),
            message: None,
        };
        assert_eq!(
            refusal_code(&result(AllocationStatus::Refused, Some("quota_exceeded"))),
            "quota_exceeded"
        );
        assert_eq!(
            refusal_code(&result(AllocationStatus::Voided, None)),
            "voided"
        );
        assert_eq!(
            refusal_code(&result(AllocationStatus::Unknown, None)),
            "unknown"
        );
    }

    #[test]
    fn bus_counters_subtract_without_wrapping() {
        let before = BusCounters {
            n_published: 10,
            n_acked: 7,
            n_retried: 1,
            n_dead_lettered: 0,
        };
        let after = BusCounters {
            n_published: 25,
            n_acked: 20,
            n_retried: 1,
            n_dead_lettered: 0,
        };
        assert_eq!(
            after.since(before),
            BusCounters {
                n_published: 15,
                n_acked: 13,
                n_retried: 0,
                n_dead_lettered: 0,
            }
        );
        assert_eq!(before.since(after).n_published, 0);
    }
}
