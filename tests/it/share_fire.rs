//! Traffic shares metered while a node is SIGKILLed (S4 under failure): eight requesters on the
//! surviving nodes report their usage without pause while the node holding a third of the
//! shares' (and accounts') entities is killed. A report that failed is sent again with the same
//! id and total. Afterwards every share must say exactly what was acknowledged: the whole amount
//! used, every reminder threshold recorded once, closed as exhausted, and the same bill for both
//! parties, rated from the used bytes.

#![allow(
    clippy::indexing_slicing,
    reason = "nodes are indexed by number in the test; a missing one is a failure"
)]

use crate::campaigns::{Player, player};
use crate::im::{address, finish, start_cluster};
use lanmesh::edge::protocol::ErrorCode;
use lanmesh::edge::share_wire::{OfferReply, RequestReply, ShareReplyBody, StartReply, UsageReply};
use lanmesh::load::ws_client::ImClient;
use lanmesh_actors::model::share::{Closing, ShareStatus};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const N_NODES: usize = 3;
const VICTIM: usize = 0;
const N_SHARES: usize = 8;
const MIB: u64 = 1 << 20;
const AMOUNT: u64 = 64 * MIB;
/// Each report adds this much to the total: 128 reports per share.
const STEP: u64 = MIB / 2;
const PRICE: u64 = 3;
/// How long one report may take to be acknowledged, retries and the takeover included.
const REPORT_DEADLINE: Duration = Duration::from_secs(60);

/// What one requester's run saw.
struct Run {
    share_id: String,
    requester: Player,
    n_retries: u64,
}

/// Reports `AMOUNT` in steps, each until it is acknowledged; a report that failed is sent
/// again with the same id and total. Every acknowledged total must be the one sent.
async fn meter(mut run: Run, node: String, acknowledged: Arc<AtomicU64>) -> Run {
    let n_reports = AMOUNT / STEP;
    for report_id in 1..=n_reports {
        let total = report_id * STEP;
        let body = json!({"share_id": run.share_id, "report_id": report_id, "used_bytes": total});
        let deadline = Instant::now() + REPORT_DEADLINE;
        loop {
            assert!(
                Instant::now() < deadline,
                "report {report_id} never acknowledged"
            );
            let answer = run
                .requester
                .client
                .request::<_, UsageReply>("share.report_usage", Some(&run.requester.key), &body)
                .await;
            match answer {
                Ok(Ok(reply)) => {
                    assert_eq!(reply.used_bytes, total, "report {report_id}: {reply:?}");
                    assert_eq!(reply.bill.is_some(), total == AMOUNT, "{reply:?}");
                    break;
                }
                Ok(Err(error)) if error.code == ErrorCode::Unavailable => run.n_retries += 1,
                Ok(Err(error)) => panic!("report {report_id} refused: {error:?}"),
                Err(_) => {
                    // The connection failed: connect again (the key names the session).
                    run.n_retries += 1;
                    pause_before_retry().await;
                    if let Ok(client) = ImClient::connect(&node).await {
                        run.requester.client = client;
                    }
                }
            }
            pause_before_retry().await;
        }
        acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    run
}

async fn pause_before_retry() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_meter_exactly_through_a_node_kill() {
    let Some(mut cluster) = start_cluster(
        "share_fire::shares_meter_exactly_through_a_node_kill",
        N_NODES,
        &[("LANMESH__SHARE__SLICE_BYTES", "8388608")],
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let nodes: Vec<String> = (0..N_NODES).map(|index| address(&cluster, index)).collect();

    // Sharers on every node, the victim included; requesters on the survivors only, so their
    // connections stay while the entities they use move.
    let mut runs = Vec::new();
    let mut sharers = Vec::new();
    for index in 0..N_SHARES {
        let sharer_node = &nodes[index % N_NODES];
        let requester_node = nodes[1 + index % (N_NODES - 1)].clone();
        let mut sharer = player(sharer_node, &format!("sharer{index}"), "127.0.0.1").await;
        let lat = 31.0 + 0.01 * f64::from(u8::try_from(index).unwrap());
        let offered: OfferReply = sharer
            .client
            .request_ok(
                "share.offer",
                Some(&sharer.key),
                &json!({"amount_bytes": AMOUNT, "price_minor_per_unit": PRICE, "currency": "CNY",
                        "validity_ms": 3_600_000, "lat": lat, "lon": 121.47}),
            )
            .await
            .expect("offers");
        let mut requester =
            player(&requester_node, &format!("requester{index}"), "127.0.0.1").await;
        let matched: RequestReply = requester
            .client
            .request_ok(
                "share.request",
                Some(&requester.key),
                &json!({"lat": lat, "lon": 121.47, "amount_bytes": AMOUNT,
                        "share_id": offered.share_id}),
            )
            .await
            .expect("matches");
        let _: StartReply = requester
            .client
            .request_ok(
                "share.start",
                Some(&requester.key),
                &json!({"share_id": offered.share_id, "password": matched.password}),
            )
            .await
            .expect("starts");
        sharers.push((sharer.key.clone(), sharer.client));
        runs.push((
            Run {
                share_id: offered.share_id,
                requester,
                n_retries: 0,
            },
            requester_node,
        ));
    }
    let set_up = started.elapsed();

    let acknowledged = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(run, node)| tokio::spawn(meter(run, node, Arc::clone(&acknowledged))))
        .collect();
    let n_reports_total = u64::try_from(N_SHARES).unwrap() * (AMOUNT / STEP);
    let kill_deadline = Instant::now() + REPORT_DEADLINE;
    while acknowledged.load(Ordering::Relaxed) < n_reports_total / 3 {
        assert!(
            Instant::now() < kill_deadline,
            "the reports did not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n_at_kill = acknowledged.load(Ordering::Relaxed);
    let takeover = cluster
        .kill_and_await_takeover(VICTIM, REPORT_DEADLINE)
        .await
        .expect("takeover");
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.expect("a requester's run ends"));
    }

    // Every share: the whole amount used, each threshold once, the same bill on both sides.
    let survivor = &nodes[1];
    let mut n_retries = 0;
    let mut clients = Vec::new();
    for (run, (sharer_key, sharer_client)) in finished.into_iter().zip(sharers) {
        n_retries += run.n_retries;
        let mut requester = run.requester;
        let seen_by_requester: ShareReplyBody = requester
            .client
            .request_ok(
                "share.get",
                Some(&requester.key),
                &json!({"share_id": run.share_id}),
            )
            .await
            .expect("the requester reads the share");
        let mut reader = ImClient::connect(survivor).await.expect("connects");
        let seen_by_sharer: ShareReplyBody = reader
            .request_ok(
                "share.get",
                Some(&sharer_key),
                &json!({"share_id": run.share_id}),
            )
            .await
            .expect("the sharer reads the share");
        assert_eq!(
            (
                seen_by_requester.status,
                seen_by_requester.closing,
                seen_by_requester.used_bytes
            ),
            (ShareStatus::Closed, Some(Closing::Exhausted), AMOUNT),
            "{seen_by_requester:?}"
        );
        assert_eq!(
            seen_by_requester
                .reminded_percents
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![50, 80, 100]
        );
        let bill = seen_by_requester.bill.clone().expect("billed");
        assert_eq!(bill.fee_minor, 64 * PRICE);
        assert_eq!(seen_by_sharer.bill, Some(bill));
        clients.push(requester.client);
        clients.push(reader);
        // A sharer's connection to the victim is gone; one to a survivor just ends here.
        drop(sharer_client);
    }
    println!(
        "{N_SHARES} shares metered to the end ({n_reports_total} reports); node {VICTIM} \
         SIGKILLed after {n_at_kill} acknowledged reports, survivors owned every shard {:.2} s \
         later; {n_retries} reports sent again; set-up {:.1} s, whole test {:.1} s",
        takeover.as_secs_f64(),
        set_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    finish(cluster, clients).await;
}
