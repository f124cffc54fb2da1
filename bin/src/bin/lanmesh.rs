//! `lanmesh`: the operator command line — the reference partner site and password hashing
//! for its users file.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lanmesh::config::LogFormat;
use lanmesh::edge::auth::{PasswordCost, hash_password};
use lanmesh::partner::demo::{self, DemoSiteConfig, MIN_SECRET_BYTES};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The environment variable holding the partner secret unless `--secret-env` names another.
const DEFAULT_SECRET_ENV: &str = lanmesh::env_vars::PARTNER_DEMO_SECRET;

/// The argon2id cost of `hash-password` (OWASP's minimum for argon2id).
const USERS_FILE_PASSWORD_COST: PasswordCost = PasswordCost {
    memory_kib: 19_456,
    iterations: 2,
};

/// Operator tools for lanmesh.
#[derive(Debug, Parser)]
#[command(name = "lanmesh", version)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the reference partner site (docs/partner-api.md) until SIGTERM or ctrl-c; prints
    /// `partner-demo listening on ADDRESS` once it listens.
    PartnerDemo {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// This site's id, as registered at the IM server.
        #[arg(long)]
        site_id: String,
        /// Name of the environment variable holding the shared secret (at least 16 bytes);
        /// the secret itself never goes on the command line.
        #[arg(long, default_value = DEFAULT_SECRET_ENV, value_name = "VARIABLE")]
        secret_env: String,
        /// An IM server id allowed to ask; repeat for several.
        #[arg(long = "server-id", value_name = "ID", required = true)]
        server_ids: Vec<String>,
        /// The users file (TOML; see ops/partner-demo/users.toml).
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
        /// How far a request's timestamp may be from the site's clock, seconds.
        #[arg(long, default_value_t = 60)]
        max_skew_secs: u64,
        /// Seconds added to the site's clock, to try the timestamp window.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        clock_offset_secs: i64,
    },
    /// Reads one password line from stdin and prints its argon2id PHC string, for a users
    /// file.
    HashPassword,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    lanmesh::telemetry::init_logging(LogFormat::Human, "info");
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the runtime")
        .and_then(|runtime| runtime.block_on(run(arguments.command)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lanmesh: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::PartnerDemo {
            listen,
            site_id,
            secret_env,
            server_ids,
            users,
            max_skew_secs,
            clock_offset_secs,
        } => {
            let secret = read_secret(&secret_env)?;
            let users = demo::load_users(&users)
                .with_context(|| format!("cannot load users from {}", users.display()))?;
            let config = DemoSiteConfig {
                site_id,
                secret,
                authorised_server_ids: server_ids.into_iter().collect::<BTreeSet<_>>(),
                users,
                max_skew_secs,
                clock_offset_secs,
            };
            config.validate()?;
            run_partner_demo(config, listen).await
        }
        Command::HashPassword => print_password_hash().await,
    }
}

/// The shared secret from the environment variable `variable`.
fn read_secret(variable: &str) -> anyhow::Result<Vec<u8>> {
    let Some(secret) = std::env::var_os(variable) else {
        bail!("environment variable {variable} must hold the shared secret (it is not set)");
    };
    let secret = secret.into_encoded_bytes();
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "the shared secret in {variable} is {} bytes; it must be at least {MIN_SECRET_BYTES}",
            secret.len()
        );
    }
    Ok(secret)
}

async fn run_partner_demo(config: DemoSiteConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let site = demo::start(config, listen)
        .await
        .with_context(|| format!("cannot start the partner demo site on {listen}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "partner-demo listening on {}", site.local_addr())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);
    let signal = lanmesh::node::shutdown_signal().await;
    match &signal {
        Ok(name) => tracing::info!(signal = name, "shutting down"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "cannot wait for signals"),
    }
    site.stop().await;
    signal.map(|_| ())
}

async fn print_password_hash() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on stdin (give one line)");
    }
    let phc = hash_password(password.to_owned(), USERS_FILE_PASSWORD_COST).await?;
    println!("{phc}");
    Ok(())
}
