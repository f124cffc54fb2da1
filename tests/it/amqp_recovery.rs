//! The AMQP transport recovers by itself when the broker drops its connections or restarts,
//! and no confirmed message is lost across it.
//!
//! These tests disrupt the whole local broker with `rabbitmqctl`, so nextest runs them alone
//! (`.config/nextest.toml` gives them every test thread).

use crate::amqp_conformance::{connected_transport, delete_cluster};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lanmesh_bus::conformance::CONFORMANCE_N_SHARDS;
use lanmesh_bus::transport::TransportStats;
use lanmesh_bus::{
    Delivery, Destination, EntityAddress, Envelope, HandlerOutcome, NodeId, PublishOptions,
    ShardId, Source, Transport, handler_fn,
};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const N_MESSAGES: u32 = 600;
const N_IN_FLIGHT: usize = 16;

fn rabbitmqctl(arguments: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(arguments)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn rabbitmqctl_available(test_name: &str) -> bool {
    let found = Command::new("rabbitmqctl").arg("--help").output().is_ok();
    if !found {
        let required =
            std::env::var(lanmesh_tests::REQUIRE_BROKER_VAR).is_ok_and(|value| value == "1");
        assert!(
            !required,
            "{test_name}: rabbitmqctl is needed to disrupt the broker"
        );
        eprintln!("skipped {test_name}: rabbitmqctl is not on PATH (the broker must be local)");
    }
    found
}

/// Restarts the broker app if a test stopped it and then failed.
struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
    }
}

/// Publishes `N_MESSAGES` (at most `N_IN_FLIGHT` awaiting confirms) while `disrupt` runs once a
/// third of them are confirmed; then checks every confirmed message was consumed.
async fn confirmed_messages_survive(test_name: &str, disrupt: fn()) {
    let Some(url) = lanmesh_tests::broker_url_or_skip(test_name) else {
        return;
    };
    if !rabbitmqctl_available(test_name) {
        return;
    }
    let cluster_name = lanmesh_tests::unique_cluster_name(test_name);
    let publisher = connected_transport(&url, &cluster_name).await;
    let consumer = connected_transport(&url, &cluster_name).await;
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let subscription = {
        let received = Arc::clone(&received);
        consumer
            .subscribe(
                Source::Shard(ShardId(0)),
                handler_fn(move |delivery: Delivery| {
                    received
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&delivery.envelope.payload).into_owned());
                    async { HandlerOutcome::Ack }
                }),
            )
            .await
            .expect("subscribe")
    };

    let sender = NodeId::new("publisher").expect("node id");
    let destination = Destination::Shard(ShardId(0));
    let options = PublishOptions {
        expiration_opt: None,
        timeout: Duration::from_secs(60),
    };
    let mut confirmed = BTreeSet::new();
    let mut n_failed = 0;
    let mut in_flight = FuturesUnordered::new();
    let mut disrupted = false;
    for index in 0..N_MESSAGES {
        let label = format!("m{index:05}");
        let envelope = Envelope::new(
            EntityAddress::new("probe", "recovery").expect("address"),
            sender.clone(),
            label.clone().into_bytes(),
        );
        let publisher = publisher.clone();
        let destination = destination.clone();
        let options = options.clone();
        in_flight.push(async move {
            let result = publisher.publish(&destination, envelope, &options).await;
            (label, result)
        });
        while in_flight.len() >= N_IN_FLIGHT {
            let Some((label, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(()) => {
                    confirmed.insert(label);
                }
                Err(_) => n_failed += 1,
            }
        }
        if !disrupted && confirmed.len() as u32 >= N_MESSAGES / 3 {
            tokio::task::spawn_blocking(disrupt)
                .await
                .expect("disruption ran");
            disrupted = true;
        }
    }
    while let Some((label, result)) = in_flight.next().await {
        match result {
            Ok(()) => {
                confirmed.insert(label);
            }
            Err(_) => n_failed += 1,
        }
    }
    assert!(disrupted, "the disruption happened mid-run");
    assert_eq!(
        n_failed, 0,
        "publishes retry across the outage instead of failing"
    );
    assert_eq!(confirmed.len() as u32, N_MESSAGES);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let seen: BTreeSet<String> = received.lock().expect("lock").iter().cloned().collect();
        let missing: Vec<_> = confirmed.difference(&seen).cloned().collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        missing.is_empty(),
        "confirmed but never consumed: {missing:?}"
    );
    let n_received = received.lock().expect("lock").len();
    eprintln!(
        "{test_name}: {} confirmed, {n_received} deliveries ({} duplicates from redelivery)",
        confirmed.len(),
        n_received - confirmed.len()
    );
    for transport in [&publisher, &consumer] {
        assert!(transport.is_ready(), "transport reconnected");
        assert!(TransportStats::read(&transport.stats().reconnects) >= 1);
    }
    subscription.cancel().await;
    publisher.close().await;
    consumer.close().await;
    delete_cluster(&url, &cluster_name, CONFORMANCE_N_SHARDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_disruption_close_all_connections() {
    confirmed_messages_survive("broker_disruption_close_all_connections", || {
        rabbitmqctl(&["close_all_connections", "lanmesh recovery test"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_disruption_stop_and_start_app() {
    confirmed_messages_survive("broker_disruption_stop_and_start_app", || {
        let _restart_on_failure = StartAppOnDrop;
        rabbitmqctl(&["stop_app"]);
        std::thread::sleep(Duration::from_secs(1));
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await;
}
