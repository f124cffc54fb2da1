//! `lanmesh-node`: runs one lanmesh node (HTTP edge + entity host) until SIGTERM.

use clap::Parser;
use lanmesh::config::NodeConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs one lanmesh node. With no configuration it is a complete single-machine service
/// (in-process bus, SQLite under ./data); set bus.amqp_url to join a cluster over RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "lanmesh-node", version)]
struct Arguments {
    /// TOML configuration file; LANMESH__SECTION__KEY environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Exit status for an unusable configuration (as sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let config = match NodeConfig::load(arguments.config.as_deref(), std::env::vars())
        .and_then(NodeConfig::validate)
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lanmesh-node: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    lanmesh::telemetry::init_logging(config.log_format, &config.raw.log.filter);
    let outcome = actix_web::rt::System::new().block_on(lanmesh::node::run(config));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "node failed");
            eprintln!("lanmesh-node: {error:#}");
            ExitCode::FAILURE
        }
    }
}
