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
use lanmesh::load::local_cluster::ClusterView;
use lanmesh::load::metrics_text::{
    METRIC_DUPLICATES_DROPPED, METRIC_HANDOFFS, METRIC_REDELIVERIES, METRIC_SHARDS_OWNED,
    METRIC_TAKEOVER_COUNT, METRIC_TAKEOVER_SUM,
};
use lanmesh::load::probe_client::ProbeClient;
use lanmesh_actors::entities::probe::ProbeReport;
use lanmesh_tests::TestCluster;
use std::collections::BTreeMap;
use std::future::Future;
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

    /// Waits until `n_more` replies have come back after the ones already counted.
    async fn wait_more_replies(&self, n_more: u64, timeout: Duration) {
        self.wait_replies(self.n_replies() + n_more, timeout).await;
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

/// Inspects every probe in `probe_ids` and asserts that each saw exactly the `Record`s it
/// acknowledged (`n_acknowledged` of its index), in order, with owners that never overlapped;
/// returns the reports.
async fn verify_probes(
    client: &ProbeClient,
    probe_ids: &[String],
    n_acknowledged: impl Fn(usize) -> u64,
) -> BTreeMap<String, ProbeReport> {
    let reports = inspect_all(client, probe_ids).await;
    let mut violations = Vec::new();
    for (probe_index, probe_id) in probe_ids.iter().enumerate() {
        match reports.get(probe_id) {
            Some(report) => violations.extend(probe_violations(
                probe_id,
                report,
                n_acknowledged(probe_index),
            )),
            None => violations.push(format!("{probe_id}: no report")),
        }
    }
    assert!(
        violations.is_empty(),
        "{} violations over {} probes, e.g. {:#?}",
        violations.len(),
        probe_ids.len(),
        violations.iter().take(10).collect::<Vec<_>>()
    );
    reports
}

fn probe_ids(prefix: &str, n_probes: usize) -> Vec<String> {
    (0..n_probes)
        .map(|index| format!("{prefix}-{index:04}"))
        .collect()
}

/// What each test starts from.
struct Fixture {
    /// A fresh cluster, balanced.
    cluster: TestCluster,
    /// A probe client connected to it.
    client: Arc<ProbeClient>,
    /// The probes the test talks to, `{prefix}-0000` and on.
    probe_ids: Vec<String>,
    /// The progress of the test's load, none yet.
    progress: Arc<LoadProgress>,
}

/// A fresh cluster of `n_nodes` nodes, balanced, a probe client and `n_probes` probe ids;
/// `None` when the test skips for want of a broker.
async fn balanced_cluster(
    test_name: &str,
    n_nodes: usize,
    probe_prefix: &str,
    n_probes: usize,
) -> Option<Fixture> {
    let url = lanmesh_tests::broker_url_or_skip(test_name)?;
    let mut cluster = TestCluster::start(&url, test_name, TestCluster::default_spec(), n_nodes)
        .await
        .expect("the nodes start");
    cluster
        .wait_balanced(SETTLE_TIMEOUT)
        .await
        .expect("the nodes settle");
    let client = cluster.probe_client().await.expect("probe client connects");
    Some(Fixture {
        cluster,
        client: Arc::new(client),
        probe_ids: probe_ids(probe_prefix, n_probes),
        progress: Arc::new(LoadProgress::default()),
    })
}

/// Starts one load task per probe in `probe_ids`, running `sequence(client, probe_id,
/// progress)`; a failure is reported to `progress` at once. Each task yields its probe's index
/// and the sequence's result, for [`join_load`].
fn spawn_load<T, F, Fut>(
    client: &Arc<ProbeClient>,
    probe_ids: &[String],
    progress: &Arc<LoadProgress>,
    sequence: F,
) -> JoinSet<(usize, anyhow::Result<T>)>
where
    T: Send + 'static,
    F: Fn(Arc<ProbeClient>, String, Arc<LoadProgress>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut load = JoinSet::new();
    for (probe_index, probe_id) in probe_ids.iter().cloned().enumerate() {
        let sequence = sequence(Arc::clone(client), probe_id, Arc::clone(progress));
        let progress = Arc::clone(progress);
        load.spawn(async move {
            let result = sequence.await;
            if let Err(error) = &result {
                progress.fail(error);
            }
            (probe_index, result)
        });
    }
    load
}

/// Sends `Record { seq }` to probe `probe_id`, checks that the probe has now applied exactly
/// `seq` records, and counts the reply.
async fn record_next(
    client: &ProbeClient,
    probe_id: &str,
    seq: u64,
    progress: &LoadProgress,
) -> anyhow::Result<()> {
    let n_applied = client.record(probe_id, seq).await?;
    anyhow::ensure!(
        n_applied == seq,
        "{probe_id}: Record {seq} answered n_applied {n_applied}"
    );
    progress.reply();
    Ok(())
}

/// Metric `name` added up over the running nodes of `cluster`, each of which must export it.
async fn sum_over_running(cluster: &TestCluster, name: &str) -> f64 {
    cluster
        .sum_over_running(name)
        .await
        .unwrap_or_else(|error| panic!("{name} over the running nodes: {error:#}"))
}

/// Closes the client, then stops the running nodes, which must exit cleanly.
async fn close_and_shut_down(client: Arc<ProbeClient>, cluster: TestCluster) {
    client.close().await;
    cluster.shutdown().await.expect("nodes stop cleanly");
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
    let Some(Fixture {
        mut cluster,
        client,
        probe_ids,
        progress,
    }) = balanced_cluster(test_name, 3, "crash", CRASH_N_PROBES).await
    else {
        return;
    };

    let load = spawn_load(
        &client,
        &probe_ids,
        &progress,
        |client, probe_id, progress| async move {
            for seq in 1..=CRASH_N_SEQ {
                record_next(&client, &probe_id, seq, &progress).await?;
            }
            Ok(())
        },
    );
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
    let n_replies_at_kill = progress.n_replies();
    let takeover = cluster
        .kill_and_await_takeover(victim, TAKEOVER_BOUND)
        .await
        .expect("survivors own every shard after the crash");
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

    let reports = verify_probes(&client, &probe_ids, |_probe_index| CRASH_N_SEQ).await;
    let n_probes_moved = reports
        .values()
        .filter(|report| report.owners.len() > 1)
        .count();
    assert!(
        n_probes_moved > 0,
        "some probes were mid-sequence on the killed node and finished on a survivor"
    );

    let n_takeovers = sum_over_running(&cluster, METRIC_TAKEOVER_COUNT).await;
    let takeover_seconds = sum_over_running(&cluster, METRIC_TAKEOVER_SUM).await;
    let n_redeliveries = sum_over_running(&cluster, METRIC_REDELIVERIES).await;
    let n_duplicates = sum_over_running(&cluster, METRIC_DUPLICATES_DROPPED).await;
    eprintln!(
        "{test_name}: takeover {:.2} s from SIGKILL of a node owning {victim_shards} of {} \
         shards until the survivors owned them all (target ≤ 5 s); survivors' \
         lanmesh_takeover_seconds: {n_takeovers} shards, mean {:.2} s since last heartbeat; \
         {n_replies_at_kill} of {n_requests} replies in at the kill; {n_probes_moved} probes \
         changed owner mid-sequence; survivors counted {n_redeliveries} redeliveries and \
         {n_duplicates} duplicates dropped",
        takeover.as_secs_f64(),
        cluster.n_shards(),
        takeover_seconds / n_takeovers.max(1.0),
    );
    assert!(
        n_takeovers >= 1.0,
        "the survivors recorded taking shards from the failed node"
    );
    assert!(takeover < TAKEOVER_BOUND, "takeover took {takeover:?}");

    close_and_shut_down(client, cluster).await;
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
    let Some(Fixture {
        mut cluster,
        client,
        probe_ids,
        progress,
    }) = balanced_cluster(test_name, 3, "scale", SCALE_N_PROBES).await
    else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));

    let load = spawn_load(
        &client,
        &probe_ids,
        &progress,
        |client, probe_id, progress| {
            let stop = Arc::clone(&stop);
            async move {
                let mut n_acknowledged = 0_u64;
                while !stop.load(Ordering::Acquire) {
                    let seq = n_acknowledged + 1;
                    record_next(&client, &probe_id, seq, &progress).await?;
                    n_acknowledged = seq;
                }
                Ok(n_acknowledged)
            }
        },
    );
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
    progress
        .wait_more_replies(SCALE_N_REPLIES_PER_STEP, PROGRESS_TIMEOUT)
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
    progress
        .wait_more_replies(SCALE_N_REPLIES_PER_STEP, PROGRESS_TIMEOUT)
        .await;

    stop.store(true, Ordering::Release);
    let n_acknowledged = join_load(load, LOAD_DRAIN_TIMEOUT).await;
    assert_eq!(n_acknowledged.len(), SCALE_N_PROBES);
    verify_probes(&client, &probe_ids, |probe_index| {
        n_acknowledged.get(&probe_index).copied().unwrap_or(0)
    })
    .await;

    let n_redeliveries = sum_over_running(&cluster, METRIC_REDELIVERIES).await;
    let n_duplicates = sum_over_running(&cluster, METRIC_DUPLICATES_DROPPED).await;
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

    close_and_shut_down(client, cluster).await;
}

const RELAY_N_PROBES: usize = 100;

/// Probe i asks probe i+1 (mod 100) for a bump through the cluster: each probe ends up with
/// exactly one bump, whichever nodes host the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_probes_relay_to_each_other_exactly_once() {
    let test_name = "cluster_probes_relay_to_each_other_exactly_once";
    let Some(Fixture {
        cluster,
        client,
        probe_ids,
        ..
    }) = balanced_cluster(test_name, 2, "relay", RELAY_N_PROBES).await
    else {
        return;
    };

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

    close_and_shut_down(client, cluster).await;
}
