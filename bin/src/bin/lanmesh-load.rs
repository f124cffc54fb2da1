//! `lanmesh-load`: load scenarios and benchmarks against a broker and running nodes.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanmesh::load::bus::{BusBenchReport, BusBenchSettings};
use lanmesh::load::campaigns::{CampaignsBenchReport, CampaignsBenchSettings};
use lanmesh::load::entities::{EntityBenchReport, EntityBenchSettings};
use lanmesh::load::presence::{PresenceBenchReport, PresenceBenchSettings};
use lanmesh::load::shares::{SharesBenchReport, SharesBenchSettings};
use lanmesh::load::venues::{AppendMeasurement, VenuesBenchReport, VenuesBenchSettings};
use lanmesh::load::{LatencyMeasurement, Measurement};
use std::path::PathBuf;
use std::time::Duration;

/// Drives lanmesh (or its substrate) under load and reports figures beside a baseline
/// measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "lanmesh-load", version)]
struct Arguments {
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

/// The broker every scenario runs against.
#[derive(Debug, clap::Args)]
struct Broker {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "LANMESH_LOAD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
}

/// A cluster the scenario spawns for itself, on the broker.
#[derive(Debug, clap::Args)]
struct SpawnedNodes {
    #[command(flatten)]
    broker: Broker,
    /// Nodes to spawn.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Shards of the spawned cluster.
    #[arg(long, default_value_t = 64)]
    n_shards: u16,
    /// The `lanmesh-node` executable to spawn; default: beside this one.
    #[arg(long, alias = "node-binary")]
    node_bin: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Bus throughput over RabbitMQ against raw lapin, and of the in-process transport.
    Bus {
        #[command(flatten)]
        broker: Broker,
        /// Messages per broker round.
        #[arg(long, default_value_t = 50_000)]
        messages: u64,
        /// Messages per in-process round.
        #[arg(long, default_value_t = 2_000_000)]
        in_process_messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 200)]
        body_bytes: usize,
        /// Unconfirmed publishes allowed at once.
        #[arg(long, default_value_t = 512)]
        in_flight: usize,
        /// Consumer prefetch.
        #[arg(long, default_value_t = 512)]
        prefetch: u16,
        /// Rounds per measurement; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Entity request/reply through real nodes (probe entities, persisted) against raw lapin
    /// request/reply on the same broker.
    Entities {
        #[command(flatten)]
        broker: Broker,
        /// Cluster name; default: a unique one with --spawn-nodes, else `lanmesh`.
        #[arg(long)]
        cluster: Option<String>,
        /// Shards of the cluster (the nodes' `cluster.n_shards`).
        #[arg(long, default_value_t = 256)]
        n_shards: u16,
        /// Distinct probes (at least --concurrency: each gets its requests from one worker).
        #[arg(long, default_value_t = 1_000)]
        n_probes: usize,
        /// Closed-loop workers, each with one request outstanding.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds each side runs.
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
        /// Requests per side, instead of --duration-secs.
        #[arg(long)]
        n_requests: Option<u64>,
        /// Start this many `lanmesh-node` processes for the run (temporary directory, shared
        /// SQLite file), stop them after and delete the cluster's topology; 0 = use a running
        /// cluster.
        #[arg(long, default_value_t = 0)]
        spawn_nodes: usize,
        /// The `lanmesh-node` executable to spawn; default: beside this one.
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Presence fan-out (status change → widget push) and memory per idle session, through
    /// one spawned node with every session on its own WebSocket, against raw lapin
    /// request/reply on the same broker.
    Presence {
        #[command(flatten)]
        broker: Broker,
        /// Shards of the spawned node.
        #[arg(long, default_value_t = 64)]
        n_shards: u16,
        /// Connected sessions (one account and one connection each).
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Accounts whose status changes; every other account's widget watches one of them.
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        /// Status changes per second over all publishers.
        #[arg(long, default_value_t = 20)]
        changes_per_second: u32,
        /// Seconds of changes.
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
        /// The node's `edge.presence_coalesce_ms`.
        #[arg(long, default_value_t = 50)]
        coalesce_ms: u64,
        /// The `lanmesh-node` executable to spawn; default: beside this one.
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Venue presence samples ingested per second through one spawned node (login event told
    /// to the segment entity → sample in SQLite), against raw appends to a fresh SQLite store
    /// in the same run.
    Venues {
        #[command(flatten)]
        broker: Broker,
        /// Shards of the spawned node.
        #[arg(long, default_value_t = 64)]
        n_shards: u16,
        /// Login events to send (and samples per baseline).
        #[arg(long, default_value_t = 50_000)]
        events: u64,
        /// Publishes awaiting their confirm at once (and appends outstanding in the
        /// per-sample baseline).
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Segments (`127.0.{i}.0/24`) the events are spread over, 1 to 256.
        #[arg(long, default_value_t = 16)]
        segments: usize,
        /// Seconds the samples may take to be stored after the first publish.
        #[arg(long, default_value_t = 300)]
        visible_timeout_secs: u64,
        /// The `lanmesh-node` executable to spawn; default: beside this one.
        #[arg(long, alias = "node-binary")]
        node_bin: Option<PathBuf>,
    },
    /// Campaign allocations per second end to end (gateway WebSocket request → final
    /// `allocated`), for one ledger and for many, through a cluster it spawns, against raw
    /// ledger-journal appends, entity-state saves and broker round trips in the same run.
    Campaigns {
        #[command(flatten)]
        spawned: SpawnedNodes,
        /// Seconds each phase allocates.
        #[arg(long, alias = "duration-s", default_value_t = 20)]
        duration_secs: u64,
        /// Allocations per `gateway.allocate` batch, 1 to 256.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Connections allocating on the one ledger (one gateway session, its key on each).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Venues (ledgers, one connection each) of the many-ledgers phase.
        #[arg(long, default_value_t = 16)]
        venues: usize,
    },
    /// Traffic sharing (S4): proximity search in process (index against a scan of every
    /// offer), then offers, `share.find` and usage reports through a cluster it spawns, against
    /// raw broker round trips in the same run.
    Shares {
        #[command(flatten)]
        spawned: SpawnedNodes,
        /// Seconds of each timed part (each side of the proximity phase, the finds, the
        /// reports).
        #[arg(long, alias = "duration", default_value_t = 20)]
        duration_secs: u64,
        /// Offers of the in-process proximity phase.
        #[arg(long, default_value_t = 100_000)]
        offers: usize,
        /// Search radius in meters (also the nodes' `share.range_m`).
        #[arg(long, default_value_t = 500)]
        range_m: u64,
        /// Sharer accounts making the cluster's offers.
        #[arg(long, default_value_t = 50)]
        sharers: usize,
        /// Offers they make together.
        #[arg(long, default_value_t = 2_000)]
        cluster_offers: usize,
        /// Requester connections running `share.find`.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Requesters reporting usage, each on a share of its own.
        #[arg(long, default_value_t = 16)]
        shares: usize,
    },
}

/// One row of a throughput table.
fn print_throughput(measurement: &Measurement) {
    println!(
        "{:<26} {:>10} msgs {:>8.2} s {:>12.0} msg/s",
        measurement.name,
        measurement.n_messages,
        measurement.elapsed_seconds,
        measurement.messages_per_second
    );
}

/// One row of a latency table.
fn print_latency(measurement: &LatencyMeasurement) {
    println!(
        "{:<26} {:>10} {:>7} {:>8.2} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
        measurement.name,
        measurement.n_requests,
        measurement.n_errors,
        measurement.elapsed_seconds,
        measurement.requests_per_second,
        measurement.p50_ms,
        measurement.p99_ms,
        measurement.max_ms
    );
}

/// The row comparing a side with its baseline: `ratio` as a percentage of `baseline`.
fn print_ratio(label: &str, ratio: f64, baseline: &str) {
    println!("{label:<26} {:>10.1} % of {baseline}", ratio * 100.0);
}

fn print_bus(report: &BusBenchReport) {
    print_throughput(&report.raw_lapin);
    print_throughput(&report.bus_amqp);
    print_ratio("bus / raw", report.ratio, "raw lapin");
    print_throughput(&report.bus_in_process);
}

fn print_entities(report: &EntityBenchReport) {
    let spawned = match report.n_nodes_spawned {
        0 => "a running cluster".to_owned(),
        n_nodes => format!("{n_nodes} spawned nodes"),
    };
    println!(
        "cluster {} ({spawned}), {} shards, {} probes, {} workers",
        report.cluster_name, report.n_shards, report.n_probes, report.concurrency
    );
    println!(
        "{:<26} {:>10} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "", "requests", "errors", "seconds", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    print_latency(&report.entity);
    print_latency(&report.raw_lapin);
    print_ratio("entity / raw", report.ratio, "raw lapin throughput");
}

fn print_presence(report: &PresenceBenchReport) {
    println!(
        "{} sessions on one node: {} publishers, {} watching widgets each; {} changes, {} pushes due",
        report.n_sessions,
        report.n_publishers,
        report.n_watchers_per_publisher,
        report.n_changes,
        report.n_pushes_expected
    );
    println!(
        "{:<26} {:>10} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "", "received", "missing", "seconds", "per s", "p50 ms", "p99 ms", "max ms"
    );
    print_latency(&report.fan_out);
    print_latency(&report.raw_lapin);
    let memory = &report.memory;
    println!(
        "node memory (RSS): settled {} KiB, accounts registered {} KiB, sessions connected {} KiB",
        memory.settled_kib, memory.accounts_registered_kib, memory.sessions_connected_kib
    );
    println!(
        "per idle connected session {:.1} KiB; per live account entity {:.1} KiB",
        memory.per_idle_session_kib, memory.per_live_account_kib
    );
}

/// One row of the venues table.
fn print_samples_row(label: &str, measurement: &Measurement, commits_opt: Option<(u64, f64)>) {
    let commits = commits_opt.map_or_else(String::new, |(n_transactions, per_transaction)| {
        format!("{n_transactions:>9} {per_transaction:>11.1}")
    });
    println!(
        "{label:<44} {:>9} {:>8.2} {:>12.0} {commits}",
        measurement.n_messages, measurement.elapsed_seconds, measurement.messages_per_second
    );
}

fn print_append_row(measurement: &AppendMeasurement) {
    print_samples_row(
        &measurement.throughput.name,
        &measurement.throughput,
        Some((
            measurement.n_transactions,
            measurement.samples_per_transaction,
        )),
    );
}

fn print_venues(report: &VenuesBenchReport) {
    println!(
        "one node ({}), {} shards; {} login events over {} segments ({} shards with work), {} publishes in flight",
        report.cluster_name,
        report.n_shards,
        report.publish_confirmed.n_messages,
        report.n_segments,
        report.n_shards_with_work,
        report.in_flight
    );
    println!(
        "{:<44} {:>9} {:>8} {:>12} {:>9} {:>11}",
        "", "samples", "seconds", "samples/s", "commits", "per commit"
    );
    print_samples_row(
        "end to end: first publish → all stored",
        &report.end_to_end,
        None,
    );
    print_samples_row(
        "publish → broker confirm (events)",
        &report.publish_confirmed,
        None,
    );
    print_append_row(&report.raw_single_in_flight);
    print_append_row(&report.raw_single_per_shard);
    print_append_row(&report.raw_batched);
    println!(
        "{:<44} {:>9.1} % of raw append, 1 sample × {} at once",
        "end to end / raw",
        report.ratio_to_raw_single * 100.0,
        report.in_flight
    );
    let show = |value_opt: Option<u64>| value_opt.map_or("?".to_owned(), |value| value.to_string());
    println!(
        "node bus after the run: {} acked, {} retried, {} dead-lettered deliveries",
        show(report.node_bus.n_acked_opt),
        show(report.node_bus.n_retried_opt),
        show(report.node_bus.n_dead_lettered_opt)
    );
}

fn print_campaigns(report: &CampaignsBenchReport) {
    print!("{report}");
}

fn print_shares(report: &SharesBenchReport) {
    print!("{report}");
}

fn print_report<T: serde::Serialize>(
    report: &T,
    as_json: bool,
    print_human: fn(&T),
) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_human(report);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building runtime")?;
    match arguments.scenario {
        Scenario::Bus {
            broker,
            messages,
            in_process_messages,
            body_bytes,
            in_flight,
            prefetch,
            rounds,
        } => {
            let settings = BusBenchSettings {
                amqp_url: broker.amqp_url,
                n_messages: messages,
                n_in_process_messages: in_process_messages,
                body_bytes,
                in_flight,
                prefetch,
                n_rounds: rounds.max(1),
            };
            let report = runtime.block_on(lanmesh::load::bus::run(&settings))?;
            print_report(&report, arguments.json, print_bus)?;
        }
        Scenario::Entities {
            broker,
            cluster,
            n_shards,
            n_probes,
            concurrency,
            duration_secs,
            n_requests,
            spawn_nodes,
            node_bin,
        } => {
            let settings = EntityBenchSettings {
                amqp_url: broker.amqp_url,
                cluster_name_opt: cluster,
                n_shards,
                n_probes,
                concurrency,
                duration: Duration::from_secs(duration_secs),
                n_requests_opt: n_requests,
                spawn_nodes,
                node_binary_opt: node_bin,
            };
            let report = runtime.block_on(lanmesh::load::entities::run(&settings))?;
            print_report(&report, arguments.json, print_entities)?;
        }
        Scenario::Presence {
            broker,
            n_shards,
            sessions,
            publishers,
            changes_per_second,
            duration_secs,
            coalesce_ms,
            node_bin,
        } => {
            let settings = PresenceBenchSettings {
                amqp_url: broker.amqp_url,
                n_shards,
                n_sessions: sessions,
                n_publishers: publishers,
                changes_per_second,
                duration: Duration::from_secs(duration_secs),
                coalesce_ms,
                node_binary_opt: node_bin,
            };
            let report = runtime.block_on(lanmesh::load::presence::run(&settings))?;
            print_report(&report, arguments.json, print_presence)?;
        }
        Scenario::Venues {
            broker,
            n_shards,
            events,
            in_flight,
            segments,
            visible_timeout_secs,
            node_bin,
        } => {
            let settings = VenuesBenchSettings {
                amqp_url: broker.amqp_url,
                n_shards,
                n_events: events,
                in_flight,
                n_segments: segments,
                visible_timeout: Duration::from_secs(visible_timeout_secs),
                node_binary_opt: node_bin,
            };
            let report = runtime.block_on(lanmesh::load::venues::run(&settings))?;
            print_report(&report, arguments.json, print_venues)?;
        }
        Scenario::Campaigns {
            spawned,
            duration_secs,
            batch,
            connections,
            venues,
        } => {
            let settings = CampaignsBenchSettings {
                amqp_url: spawned.broker.amqp_url,
                n_nodes: spawned.nodes,
                n_shards: spawned.n_shards,
                duration: Duration::from_secs(duration_secs),
                batch_size: batch,
                n_connections: connections,
                n_venues: venues,
                node_binary_opt: spawned.node_bin,
            };
            let report = runtime.block_on(lanmesh::load::campaigns::run(&settings))?;
            print_report(&report, arguments.json, print_campaigns)?;
        }
        Scenario::Shares {
            spawned,
            duration_secs,
            offers,
            range_m,
            sharers,
            cluster_offers,
            connections,
            shares,
        } => {
            let settings = SharesBenchSettings {
                amqp_url: spawned.broker.amqp_url,
                n_nodes: spawned.nodes,
                n_shards: spawned.n_shards,
                duration: Duration::from_secs(duration_secs),
                n_offers: offers,
                range_m,
                n_sharers: sharers,
                n_cluster_offers: cluster_offers,
                n_connections: connections,
                n_shares: shares,
                node_binary_opt: spawned.node_bin,
            };
            let report = runtime.block_on(lanmesh::load::shares::run(&settings))?;
            print_report(&report, arguments.json, print_shares)?;
        }
    }
    Ok(())
}
