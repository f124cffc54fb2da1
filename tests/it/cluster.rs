//! Sharded probe entities across real `lanmesh-node` processes: a crash under load (takeover),
//! a node joining and one leaving gracefully under load (handoff), and probe-to-probe messages.
//!
//! Each test starts its own cluster (2 to 4 node processes, one shared SQLite file, a unique
//! cluster name) with [`lanmesh_tests::TEST_N_SHARDS`] shards and the nodes' default heartbeat
//! (1 s, 3 missed), so the takeover time it prints is the one production would see. Between
//! steps a test waits until the cluster is balanced: every node sees the others and owns exactly
//! its rendezvous share. Every check goes through the probes' own records (sequence numbers,
//! owner spans with epochs) and the nodes' `/metrics`.

use futures_util::StreamExt;
use lanmesh_actors::entities::probe::ProbeReport;
use lanmesh_tests::{
    ClusterSpec, ClusterView, METRIC_DUPLICATES_DROPPED, METRIC_HANDOFFS, METRIC_REDELIVERIES,
    METRIC_SHARDS_OWNED, METRIC_TAKEOVER_COUNT, METRIC_TAKEOVER_SUM, ProbeClient, TestCluster,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a fresh cluster may take to settle (join, assign, take every lease).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Loose sanity bound on a crash takeover; the target (≤ 5 s) is printed, not asserted.
const TAKEOVER_BOUND: Duration = Duration::from_secs(20);
/// How long a node given SIGTERM may take to hand its shards off and exit.
const GRACEFUL_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the load may take to finish once nothing disturbs it any more.
const LOAD_DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long to wait for load to make progress between two steps.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Probe requests in flight at once while inspecting or relaying.
const N_REQUESTS_IN_FLIGHT: usize = 32;

/// Replies received by the load tasks, and the first failure, so the test's waits stop at once
/// when a request fails rather than at their deadline.
#[derive(Default)]
struct LoadProgress {
    n_replies: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl LoadProgress {
    fn reply(&self) {
        self.n_replies.fetch_add(1, Ordering::AcqRel);
    }

    fn n_replies(&self) -> u64 {
        self.n_replies.load(Ordering::Acquire)
    }

    fn fail(&self, error: &anyhow::Error) {
        let mut first_error = self.first_error.lock().expect("lock");
        if first_error.is_none() {
            *first_error = Some(format!("{error:#}"));
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("lock").clone()
    }

    /// Waits until at least `n_replies` replies have come back.
    async fn wait_replies(&self, n_replies: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(error) = self.first_error() {
                panic!("a load request failed: {error}");
            }
            if self.n_replies() >= n_replies {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of the {n_replies} replies awaited within {timeout:?}",
                self.n_replies()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits for every load task; returns each task's value by probe index, panicking on the
/// first failure.
async fn join_load<T: 'static>(
    mut load: JoinSet<(usize, anyhow::Result<T>)>,
    timeout: Duration,
) -> BTreeMap<usize, T> {
    let drained = tokio::time::timeout(timeout, async {
        let mut results = BTreeMap::new();
        let mut failures = Vec::new();
        while let Some(joined) = load.join_next().await {
            let (probe_index, result) = joined.expect("load task ran to completion");
            match result {
                Ok(value) => {
                    results.insert(probe_index, value);
                }
                Err(error) => failures.push(format!("probe #{probe_index}: {error:#}")),
            }
        }
        (results, failures)
    })
    .await;
    let (results, failures) =
        drained.unwrap_or_else(|_| panic!("the load did not finish within {timeout:?}"));
    assert!(
        failures.is_empty(),
        "{} load tasks failed, e.g. {:?}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    results
}

/// Inspects every probe in `probe_ids`, a few at a time.
async fn inspect_all(client: &ProbeClient, probe_ids: &[String]) -> BTreeMap<String, ProbeReport> {
    futures_util::stream::iter(probe_ids)
        .map(|probe_id| async move {
            let report = client.inspect(probe_id).await.expect("inspect answers");
            (probe_id.clone(), report)
        })
        .buffer_unordered(N_REQUESTS_IN_FLIGHT)
        .collect()
        .await
}

/// What is wrong with one probe's record, given the number of `Record`s it acknowledged; an
/// empty list when it saw each of 1..=n_acknowledged exactly once, in order, and its owners
/// never overlapped (every new owner span has a higher epoch than the one before).
fn probe_violations(probe_id: &str, report: &ProbeReport, n_acknowledged: u64) -> Vec<String> {
    let mut violations = Vec::new();
    if report.n_applied != n_acknowledged || report.last_seq != n_acknowledged {
        violations.push(format!(
            "{probe_id}: n_applied {} and last_seq {}, expected {n_acknowledged} (acknowledged)",
            report.n_applied, report.last_seq
        ));
    }
    if !report.gaps.is_empty() {
        violations.push(format!("{probe_id}: gaps {:?}", report.gaps));
    }
    if report.owners_overlap {
        violations.push(format!("{probe_id}: owners overlap {:?}", report.owners));
    }
    let epochs_rise = report
        .owners
        .windows(2)
        .all(|pair| matches!(pair, [earlier, later] if later.epoch > earlier.epoch));
    if !epochs_rise {
        violations.push(format!(
            "{probe_id}: owner epochs do not strictly rise {:?}",
            report.owners
        ));
    }
    let n_attributed: u64 = report.owners.iter().map(|span| span.n_applied).sum();
    if n_attributed != report.n_applied + report.n_bumps {
        violations.push(format!(
            "{probe_id}: owner spans account for {n_attributed} messages, applied {}",
            report.n_applied + report.n_bumps
        ));
    }
    violations
}

fn assert_no_violations(violations: &[String], n_probes: usize) {
    assert!(
        violations.is_empty(),
        "{} violations over {n_probes} probes, e.g. {:#?}",
        violations.len(),
        violations.iter().take(10).collect::<Vec<_>>()
    );
}

fn probe_ids(prefix: &str, n_probes: usize) -> Vec<String> {
    (0..n_probes)
        .map(|index| format!("{prefix}-{index:04}"))
        .collect()
}

async fn connect_client(cluster: &TestCluster) -> Arc<ProbeClient> {
    Arc::new(
        ProbeClient::connect(cluster.url(), cluster.cluster_name(), cluster.n_shards())
            .await
            .expect("probe client connects"),
    )
}

const CRASH_N_PROBES: usize = 500;
const CRASH_N_SEQ: u64 = 20;

/// Three nodes; 500 probes each get `Record` 1..=20 in order (10,000 requests); a node is
/// killed with SIGKILL a third of the way through. Every request gets its reply, every probe
/// applied each number exactly once and in order, and the survivors took the dead node's
/// shards within the sanity bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigkill_under_load_loses_and_repeats_nothing() {
    let test_name = "cluster_sigkill_under_load_loses_and_repeats_nothing";
    let Some(url) = lanmesh_tests::broker_url_or_skip(test_name) else {
        return;
    };
    let mut cluster = TestCluster::start(&url, test_name, ClusterSpec::default(), 3)
        .await
        .expect("three nodes start");
    cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("three nodes settle");
    let client = connect_client(&cluster).await;
    let probe_ids = probe_ids("crash", CRASH_N_PROBES);
    let progress = Arc::new(LoadProgress::default());

    let mut load = JoinSet::new();
    for (probe_index, probe_id) in probe_ids.iter().cloned().enumerate() {
        let client = Arc::clone(&client);
        let progress = Arc::clone(&progress);
        load.spawn(async move {
            let sequence = async {
                for seq in 1..=CRASH_N_SEQ {
                    let n_applied = client.record(&probe_id, seq).await?;
                    anyhow::ensure!(
                        n_applied == seq,
                        "{probe_id}: Record {seq} answered n_applied {n_applied}"
                    );
                    progress.reply();
                }
                Ok(())
            };
            let result = sequence.await;
            if let Err(error) = &result {
                progress.fail(error);
            }
            (probe_index, result)
        });
    }
    let n_requests = CRASH_N_PROBES as u64 * CRASH_N_SEQ;
    progress
        .wait_replies(n_requests / 3, PROGRESS_TIMEOUT)
        .await;

    let victim = 1;
    let victim_shards = cluster
        .metric(victim, METRIC_SHARDS_OWNED)
        .await
        .expect("victim's shards");
    assert!(
        victim_shards > 0.0,
        "the victim owns shards before the crash"
    );
    let killed_at = Instant::now();
    cluster.kill(victim).expect("SIGKILL");
    let n_replies_at_kill = progress.n_replies();
    let n_shards = f64::from(cluster.n_shards());
    cluster
        .wait_for(
            "survivors own every shard after the crash",
            TAKEOVER_BOUND,
            |view| view.n_shards_owned() == n_shards,
        )
        .await
        .expect("takeover");
    let takeover = killed_at.elapsed();
    cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("two survivors settle");

    let results = join_load(load, LOAD_DRAIN_TIMEOUT).await;
    assert_eq!(results.len(), CRASH_N_PROBES);
    assert_eq!(
        progress.n_replies(),
        n_requests,
        "every request got its reply"
    );

    let reports = inspect_all(&client, &probe_ids).await;
    let mut violations = Vec::new();
    for (probe_id, report) in &reports {
        violations.extend(probe_violations(probe_id, report, CRASH_N_SEQ));
    }
    assert_no_violations(&violations, reports.len());
    let n_probes_moved = reports
        .values()
        .filter(|report| report.owners.len() > 1)
        .count();
    assert!(
        n_probes_moved > 0,
        "some probes were mid-sequence on the killed node and finished on a survivor"
    );

    let n_takeovers = cluster
        .sum_over_running(METRIC_TAKEOVER_COUNT)
        .await
        .expect("takeover histogram count");
    let takeover_seconds = cluster
        .sum_over_running(METRIC_TAKEOVER_SUM)
        .await
        .expect("takeover histogram sum");
    let n_redeliveries = cluster
        .sum_over_running(METRIC_REDELIVERIES)
        .await
        .expect("redeliveries readable");
    let n_duplicates = cluster
        .sum_over_running(METRIC_DUPLICATES_DROPPED)
        .await
        .expect("duplicates readable");
    eprintln!(
        "{test_name}: takeover {:.2} s from SIGKILL of a node owning {victim_shards} of {n_shards} \
         shards until the survivors owned them all (target ≤ 5 s); survivors' \
         lanmesh_takeover_seconds: {n_takeovers} shards, mean {:.2} s since last heartbeat; \
         {n_replies_at_kill} of {n_requests} replies in at the kill; {n_probes_moved} probes \
         changed owner mid-sequence; survivors counted {n_redeliveries} redeliveries and \
         {n_duplicates} duplicates dropped",
        takeover.as_secs_f64(),
        takeover_seconds / n_takeovers.max(1.0),
    );
    assert!(
        n_takeovers >= 1.0,
        "the survivors recorded taking shards from the failed node"
    );
    assert!(takeover < TAKEOVER_BOUND, "takeover took {takeover:?}");

    client.close().await;
    cluster.shutdown().await.expect("survivors stop cleanly");
}

const SCALE_N_PROBES: usize = 200;
/// Replies to wait for between the steps, so each step happens under load.
const SCALE_N_REPLIES_PER_STEP: u64 = 500;

/// Three nodes under continuous load; a fourth joins and takes its share by graceful handoff;
/// then one of the first three leaves on SIGTERM. Every probe applied exactly the numbers it
/// acknowledged, in order, with no overlapping owners, and the moves caused no redelivery
/// storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scale_out_and_graceful_leave_under_load() {
    let test_name = "cluster_scale_out_and_graceful_leave_under_load";
    let Some(url) = lanmesh_tests::broker_url_or_skip(test_name) else {
        return;
    };
    let mut cluster = TestCluster::start(&url, test_name, ClusterSpec::default(), 3)
        .await
        .expect("three nodes start");
    cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("three nodes settle");
    let client = connect_client(&cluster).await;
    let probe_ids = probe_ids("scale", SCALE_N_PROBES);
    let progress = Arc::new(LoadProgress::default());
    let stop = Arc::new(AtomicBool::new(false));

    let mut load = JoinSet::new();
    for (probe_index, probe_id) in probe_ids.iter().cloned().enumerate() {
        let client = Arc::clone(&client);
        let progress = Arc::clone(&progress);
        let stop = Arc::clone(&stop);
        load.spawn(async move {
            let sequence = async {
                let mut n_acknowledged = 0_u64;
                while !stop.load(Ordering::Acquire) {
                    let seq = n_acknowledged + 1;
                    let n_applied = client.record(&probe_id, seq).await?;
                    anyhow::ensure!(
                        n_applied == seq,
                        "{probe_id}: Record {seq} answered n_applied {n_applied}"
                    );
                    n_acknowledged = seq;
                    progress.reply();
                }
                Ok(n_acknowledged)
            };
            let result = sequence.await;
            if let Err(error) = &result {
                progress.fail(error);
            }
            (probe_index, result)
        });
    }
    progress
        .wait_replies(SCALE_N_REPLIES_PER_STEP, PROGRESS_TIMEOUT)
        .await;

    let before_scale_out = cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("still settled under load");
    let mut handoffs_before = Vec::new();
    for index in 0..3 {
        let n_handoffs = cluster
            .metric(index, METRIC_HANDOFFS)
            .await
            .expect("handoffs readable");
        handoffs_before.push(n_handoffs);
    }
    let newcomer = cluster.add_node().await.expect("fourth node starts");
    let after_scale_out = cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("scale-out settles with the fourth node's share moved to it");
    let newcomer_shards = after_scale_out
        .node(newcomer)
        .and_then(|node| node.shards_owned_opt)
        .unwrap_or(0.0);
    assert!(newcomer_shards > 0.0, "the fourth node owns shards");
    let shards_of = |view: &ClusterView, index: usize| {
        view.node(index)
            .and_then(|node| node.shards_owned_opt)
            .unwrap_or(0.0)
    };
    // (node, shards it gave to the newcomer, shards it handed off meanwhile)
    let mut handoffs_by_giver = Vec::new();
    for (index, n_handoffs_before) in handoffs_before.iter().enumerate() {
        let n_given = shards_of(&before_scale_out, index) - shards_of(&after_scale_out, index);
        if n_given <= 0.0 {
            continue;
        }
        let n_handoffs = cluster
            .metric(index, METRIC_HANDOFFS)
            .await
            .expect("handoffs readable")
            - n_handoffs_before;
        handoffs_by_giver.push((index, n_given, n_handoffs));
        assert!(
            n_handoffs >= n_given,
            "node #{index} gave {n_given} shards to the newcomer but counted {n_handoffs} handoffs"
        );
    }
    let n_given: f64 = handoffs_by_giver
        .iter()
        .map(|(_, n_given, _)| n_given)
        .sum();
    assert_eq!(
        n_given, newcomer_shards,
        "the shards the newcomer owns came from the first three: {handoffs_by_giver:?}"
    );
    let mark = progress.n_replies();
    progress
        .wait_replies(mark + SCALE_N_REPLIES_PER_STEP, PROGRESS_TIMEOUT)
        .await;

    let leaver = 0;
    let left_at = Instant::now();
    let status = cluster
        .terminate(leaver, GRACEFUL_EXIT_TIMEOUT)
        .await
        .expect("the leaver exits on SIGTERM within the bound");
    let leave_time = left_at.elapsed();
    assert!(status.success(), "the leaver exited with {status}");
    cluster
        .wait_balanced(GRACEFUL_EXIT_TIMEOUT)
        .await
        .expect("the remaining three own every shard");
    let mark = progress.n_replies();
    progress
        .wait_replies(mark + SCALE_N_REPLIES_PER_STEP, PROGRESS_TIMEOUT)
        .await;

    stop.store(true, Ordering::Release);
    let n_acknowledged = join_load(load, LOAD_DRAIN_TIMEOUT).await;
    assert_eq!(n_acknowledged.len(), SCALE_N_PROBES);
    let reports = inspect_all(&client, &probe_ids).await;
    let mut violations = Vec::new();
    for (probe_index, probe_id) in probe_ids.iter().enumerate() {
        let acknowledged = n_acknowledged.get(&probe_index).copied().unwrap_or(0);
        match reports.get(probe_id) {
            Some(report) => violations.extend(probe_violations(probe_id, report, acknowledged)),
            None => violations.push(format!("{probe_id}: no report")),
        }
    }
    assert_no_violations(&violations, reports.len());

    let n_redeliveries = cluster
        .sum_over_running(METRIC_REDELIVERIES)
        .await
        .expect("redeliveries readable");
    let n_duplicates = cluster
        .sum_over_running(METRIC_DUPLICATES_DROPPED)
        .await
        .expect("duplicates readable");
    eprintln!(
        "{test_name}: {} requests acknowledged; (node, shards given to the newcomer, handoffs \
         counted) {handoffs_by_giver:?}; graceful leave took {:.2} s; survivors counted \
         {n_redeliveries} redeliveries and {n_duplicates} duplicates dropped over \
         {SCALE_N_PROBES} probes",
        progress.n_replies(),
        leave_time.as_secs_f64(),
    );
    assert!(
        n_redeliveries <= 2.0 * SCALE_N_PROBES as f64,
        "redelivery storm: {n_redeliveries} redeliveries for {SCALE_N_PROBES} probes"
    );

    client.close().await;
    cluster.shutdown().await.expect("nodes stop cleanly");
}

const RELAY_N_PROBES: usize = 100;

/// Probe i asks probe i+1 (mod 100) for a bump through the cluster: each probe ends up with
/// exactly one bump, whichever nodes host the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_probes_relay_to_each_other_exactly_once() {
    let test_name = "cluster_probes_relay_to_each_other_exactly_once";
    let Some(url) = lanmesh_tests::broker_url_or_skip(test_name) else {
        return;
    };
    let mut cluster = TestCluster::start(&url, test_name, ClusterSpec::default(), 2)
        .await
        .expect("two nodes start");
    cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("two nodes settle");
    let client = connect_client(&cluster).await;
    let probe_ids = probe_ids("relay", RELAY_N_PROBES);

    let relays: Vec<(&String, &String)> = probe_ids
        .iter()
        .zip(probe_ids.iter().cycle().skip(1))
        .collect();
    futures_util::stream::iter(relays)
        .map(|(probe_id, target_id)| {
            let client = &client;
            async move {
                client
                    .relay(probe_id, target_id)
                    .await
                    .expect("relay answers Relayed");
            }
        })
        .buffer_unordered(N_REQUESTS_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;

    // The bump travels after the reply: wait until every probe has seen one.
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    let reports = loop {
        let reports = inspect_all(&client, &probe_ids).await;
        if reports.values().all(|report| report.n_bumps >= 1) {
            break reports;
        }
        let n_waiting = reports
            .values()
            .filter(|report| report.n_bumps == 0)
            .count();
        assert!(
            Instant::now() < deadline,
            "{n_waiting} probes still without their bump after {PROGRESS_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wrong: Vec<_> = reports
        .iter()
        .filter(|(_, report)| report.n_bumps != 1 || report.owners_overlap)
        .map(|(probe_id, report)| (probe_id, report.n_bumps, report.owners_overlap))
        .collect();
    assert!(
        wrong.is_empty(),
        "probes with other than one bump, or overlapping owners: {wrong:?}"
    );
    assert_eq!(reports.len(), RELAY_N_PROBES);

    client.close().await;
    cluster.shutdown().await.expect("nodes stop cleanly");
}
