//! `lanmesh-load`: load scenarios and benchmarks against a broker and running nodes.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanmesh::load::bus::{BusBenchSettings, run};

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

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Bus throughput over RabbitMQ against raw lapin, and of the in-process transport.
    Bus {
        /// RabbitMQ URL.
        #[arg(
            long,
            env = "LANMESH_LOAD_AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
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
}

fn print_human(report: &lanmesh::load::bus::BusBenchReport) {
    let line = |measurement: &lanmesh::load::Measurement| {
        println!(
            "{:<26} {:>10} msgs {:>8.2} s {:>12.0} msg/s",
            measurement.name,
            measurement.n_messages,
            measurement.elapsed_seconds,
            measurement.messages_per_second
        );
    };
    line(&report.raw_lapin);
    line(&report.bus_amqp);
    println!(
        "{:<26} {:>10.1} % of raw lapin",
        "bus / raw",
        report.ratio * 100.0
    );
    line(&report.bus_in_process);
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
            amqp_url,
            messages,
            in_process_messages,
            body_bytes,
            in_flight,
            prefetch,
            rounds,
        } => {
            let settings = BusBenchSettings {
                amqp_url,
                n_messages: messages,
                n_in_process_messages: in_process_messages,
                body_bytes,
                in_flight,
                prefetch,
                n_rounds: rounds.max(1),
            };
            let report = runtime.block_on(run(&settings))?;
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_human(&report);
            }
        }
    }
    Ok(())
}
