//! `lanmesh-load presence`: presence fan-out through one real node to widgets, and the memory
//! an idle connected session costs, with raw lapin request/reply on the same broker as the
//! baseline of the same run.
//!
//! Set-up: one node is spawned (RabbitMQ bus). `n_sessions` accounts are registered:
//! `n_publishers` publishers and the rest watchers; watcher `i` befriends publisher
//! `i mod n_publishers`. Every account then logs in on a WebSocket connection of its own
//! (watchers as widgets that select their publisher), so the node holds `n_sessions`
//! connected sessions. The node's resident memory is read before and after the sessions
//! connect.
//!
//! Measurement: publishers change status (alternating busy and away, so every change is a
//! change) at `changes_per_second` in all, round robin. Latency is from sending `presence.set`
//! to a watcher's widget receiving the `presence` push: client → node → the publisher's
//! shard queue → its user entity (state saved) → one push message for all the watching
//! sessions of the node, through its inbox queue → each session, which coalesces a contact's changes for
//! `edge.presence_coalesce_ms` → the socket. The baseline is the bare broker round trip:
//! raw lapin request/reply (two confirmed publishes, no storage).

use crate::edge::protocol::{
    ErrorBody, ErrorCode, FriendAnswerRequest, FriendRequestRequest, Mode, PresencePush,
    PresenceSetRequest, RegisterReply, RegisterRequest, SessionReply, WidgetReply,
    WidgetSetRequest, WireStatus,
};
use crate::load::entities::{EntityBenchSettings, raw_round};
use crate::load::local_cluster::{ClusterSpec, LocalCluster};
use crate::load::ws_client::{Empty, ImClient};
use crate::load::{LatencyMeasurement, spawn_local_cluster, stop_spawned};
use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the spawned node may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;
/// Requests pipelined on one set-up connection.
const SETUP_BATCH: usize = 200;
/// The password of every account of the run.
const PASSWORD: &str = "load-test-password";
/// How long set-up steps that wait for asynchronous effects may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(300);
/// How long pushes may still arrive after the last change.
const DRAIN: Duration = Duration::from_secs(5);

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct PresenceBenchSettings {
    /// Broker URL.
    pub amqp_url: String,
    /// Shards of the spawned cluster.
    pub n_shards: u16,
    /// Connected sessions (one account and one connection each).
    pub n_sessions: usize,
    /// Of those, accounts whose status changes; the others watch one each.
    pub n_publishers: usize,
    /// Status changes per second, over all publishers.
    pub changes_per_second: u32,
    /// How long changes are sent.
    pub duration: Duration,
    /// `edge.presence_coalesce_ms` of the node.
    pub coalesce_ms: u64,
    /// The `lanmesh-node` executable (default: beside this executable).
    pub node_binary_opt: Option<PathBuf>,
}

/// Memory of the node process (resident set).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFigures {
    /// Once the node settled, KiB.
    pub settled_kib: u64,
    /// After every account registered (their entity actors live), KiB.
    pub accounts_registered_kib: u64,
    /// With every session logged in and connected, idle, KiB.
    pub sessions_connected_kib: u64,
    /// `(sessions_connected - accounts_registered) / n_sessions`, KiB: the connection, the
    /// edge's session actor and the session record in the account's state.
    pub per_idle_session_kib: f64,
    /// `(accounts_registered - settled) / n_sessions`, KiB: a live account entity.
    pub per_live_account_kib: f64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceBenchReport {
    /// Connected sessions.
    pub n_sessions: usize,
    /// Publishers.
    pub n_publishers: usize,
    /// Watchers per publisher (at least).
    pub n_watchers_per_publisher: usize,
    /// Status changes sent.
    pub n_changes: u64,
    /// Pushes the watchers should have received.
    pub n_pushes_expected: u64,
    /// Status change → widget push.
    pub fan_out: LatencyMeasurement,
    /// The node's memory.
    pub memory: MemoryFigures,
    /// Raw lapin request/reply on the same broker.
    pub raw_lapin: LatencyMeasurement,
}

/// A publisher's last change: the status sent and when.
type LastChange = Option<(WireStatus, Instant)>;

/// One account's connection and key.
struct Account {
    client: ImClient,
    key: String,
}

fn username(role: &str, index: usize) -> String {
    format!("{role}{index:05}")
}

/// Runs the scenario on a node it spawns, then stops the node.
pub async fn run(settings: &PresenceBenchSettings) -> anyhow::Result<PresenceBenchReport> {
    if settings.n_publishers == 0 || settings.n_sessions <= settings.n_publishers {
        bail!("--sessions must exceed --publishers, which must be positive");
    }
    let cluster_name = format!(
        "lanmesh-presence-{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or("x")
    );
    let mut spec = ClusterSpec::new(settings.n_shards);
    spec.extra_env = crate::load::load_node_env();
    spec.extra_env.extend(
        [
            ("LANMESH__EDGE__MAX_IN_FLIGHT", "256".to_owned()),
            (
                "LANMESH__EDGE__PRESENCE_COALESCE_MS",
                settings.coalesce_ms.to_string(),
            ),
        ]
        .map(|(key, value)| (key.to_owned(), value)),
    );
    let mut cluster = spawn_local_cluster(
        &settings.amqp_url,
        &cluster_name,
        spec,
        1,
        settings.node_binary_opt.as_deref(),
    )?;
    let measured = measure(settings, &mut cluster).await;
    stop_spawned(cluster, measured.is_err()).await?;
    let (n_changes, fan_out, memory) = measured?;
    let raw_lapin = raw_round(&EntityBenchSettings {
        amqp_url: settings.amqp_url.clone(),
        cluster_name_opt: None,
        n_shards: settings.n_shards,
        n_probes: 16,
        concurrency: 16,
        duration: Duration::from_secs(10),
        n_requests_opt: None,
        spawn_nodes: 0,
        node_binary_opt: None,
    })
    .await?;
    let n_watchers = settings.n_sessions - settings.n_publishers;
    Ok(PresenceBenchReport {
        n_sessions: settings.n_sessions,
        n_publishers: settings.n_publishers,
        n_watchers_per_publisher: n_watchers / settings.n_publishers,
        n_changes,
        n_pushes_expected: expected_pushes(n_changes, settings),
        fan_out,
        memory,
        raw_lapin,
    })
}

/// Pushes due for `n_changes` round-robin changes: each reaches its publisher's watchers.
fn expected_pushes(n_changes: u64, settings: &PresenceBenchSettings) -> u64 {
    let n_publishers = settings.n_publishers as u64;
    let n_watchers = (settings.n_sessions - settings.n_publishers) as u64;
    (0..n_changes)
        .map(|change| {
            let publisher = change % n_publishers;
            // Watchers i with i mod n_publishers == publisher.
            n_watchers / n_publishers + u64::from(publisher < n_watchers % n_publishers)
        })
        .sum()
}

fn resident_kib(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let pid = cluster.node(0)?.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

async fn measure(
    settings: &PresenceBenchSettings,
    cluster: &mut LocalCluster,
) -> anyhow::Result<(u64, LatencyMeasurement, MemoryFigures)> {
    cluster.wait_settled(SETTLE_TIMEOUT).await?;
    let address = cluster.node(0)?.http_address.clone();
    let n_publishers = settings.n_publishers;
    let n_watchers = settings.n_sessions - n_publishers;
    let names: Vec<String> = (0..n_publishers)
        .map(|index| username("p", index))
        .chain((0..n_watchers).map(|index| username("w", index)))
        .collect();

    let settled_kib = resident_kib(cluster)?;
    tracing::info!(n_accounts = names.len(), "registering");
    register_all(&address, &names).await?;
    let accounts_registered_kib = resident_kib(cluster)?;
    tracing::info!("logging every account in on a connection of its own");
    let (publisher_names, watcher_names) = names.split_at(n_publishers);
    let publishers = connect_all(&address, publisher_names, Mode::Client).await?;
    let watchers = connect_all(&address, watcher_names, Mode::Widget).await?;
    let sessions_connected_kib = resident_kib(cluster)?;
    let n_sessions = settings.n_sessions as f64;
    let memory = MemoryFigures {
        settled_kib,
        accounts_registered_kib,
        sessions_connected_kib,
        per_idle_session_kib: sessions_connected_kib.saturating_sub(accounts_registered_kib) as f64
            / n_sessions,
        per_live_account_kib: accounts_registered_kib.saturating_sub(settled_kib) as f64
            / n_sessions,
    };

    tracing::info!("befriending and selecting widgets");
    let watchers = ask_publishers(watchers, n_publishers).await?;
    let mut publishers = accept_watchers(publishers, n_watchers).await?;
    let watchers = select_widgets(watchers, n_publishers).await?;

    tracing::info!("measuring fan-out");
    let sent_at: Arc<Mutex<Vec<LastChange>>> = Arc::new(Mutex::new(vec![None; n_publishers]));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut listeners = JoinSet::new();
    for (index, mut watcher) in watchers.into_iter().enumerate() {
        let publisher_index = index % n_publishers;
        let publisher = username("p", publisher_index);
        let sent_at = Arc::clone(&sent_at);
        let latencies = Arc::clone(&latencies);
        let listen_for = settings.duration + DRAIN;
        listeners.spawn(async move {
            let deadline = Instant::now() + listen_for;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let Ok(Some(push)) = watcher.client.next_push(remaining).await else {
                    break;
                };
                let Ok(presence) = push.decode::<PresencePush>() else {
                    continue;
                };
                let sent_opt = sent_at
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(publisher_index)
                    .copied()
                    .flatten();
                if presence.account == publisher
                    && let Some((status, at)) = sent_opt
                    && status == presence.status
                {
                    latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(at.elapsed());
                }
            }
            watcher
        });
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(settings.changes_per_second.max(1)));
    let mut ticker = tokio::time::interval(interval);
    let started = Instant::now();
    let mut n_changes = 0_u64;
    while started.elapsed() < settings.duration {
        ticker.tick().await;
        let publisher_index = usize::try_from(n_changes % n_publishers as u64).unwrap_or(0);
        // Busy in even rounds, away in odd ones: every change changes what watchers see.
        let status = if (n_changes / n_publishers as u64).is_multiple_of(2) {
            WireStatus::Busy
        } else {
            WireStatus::Away
        };
        let Some(publisher) = publishers.get_mut(publisher_index) else {
            break;
        };
        if let Some(slot) = sent_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(publisher_index)
        {
            *slot = Some((status, Instant::now()));
        }
        // Replies are not awaited: a change waits for nothing but the socket.
        publisher
            .client
            .send_request(
                "presence.set",
                Some(&publisher.key),
                &PresenceSetRequest { status },
            )
            .await?;
        n_changes += 1;
    }
    let elapsed = started.elapsed();
    let mut n_listener_failures = 0_u64;
    while let Some(joined) = listeners.join_next().await {
        if joined.is_err() {
            n_listener_failures += 1;
        }
    }
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(PoisonError::into_inner));
    let n_missing = expected_pushes(n_changes, settings).saturating_sub(latencies.len() as u64);
    let fan_out = LatencyMeasurement::new(
        "presence fan-out",
        latencies,
        n_missing + n_listener_failures,
        elapsed,
    );
    Ok((n_changes, fan_out, memory))
}

/// Runs `step` on every account, `CONNECT_CONCURRENCY` at a time, keeping their order.
async fn for_each_account<F, Fut>(accounts: Vec<Account>, step: F) -> anyhow::Result<Vec<Account>>
where
    F: Fn(usize, Account) -> Fut,
    Fut: Future<Output = anyhow::Result<Account>>,
{
    let results: Vec<anyhow::Result<Account>> = stream::iter(accounts.into_iter().enumerate())
        .map(|(index, account)| step(index, account))
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn register_all(address: &str, names: &[String]) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(names.chunks(SETUP_BATCH))
        .map(|chunk| async move {
            let mut client = ImClient::connect(address).await?;
            client.set_reply_timeout(SETUP_DEADLINE);
            let requests = chunk.iter().map(|name| {
                let request = RegisterRequest {
                    username: name.clone(),
                    password: PASSWORD.to_owned(),
                    display_name: name.clone(),
                };
                (None::<String>, request)
            });
            let replies: Vec<Result<RegisterReply, _>> =
                client.request_many("account.register", requests).await?;
            if let Some(Err(error)) = replies.into_iter().find(Result::is_err) {
                bail!("registration refused: {error:?}");
            }
            client.close().await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn connect_all(address: &str, names: &[String], mode: Mode) -> anyhow::Result<Vec<Account>> {
    let results: Vec<anyhow::Result<Account>> = stream::iter(names.iter().cloned())
        .map(|name| async move {
            let mut client = ImClient::connect(address).await?;
            client.set_reply_timeout(SETUP_DEADLINE);
            let reply: SessionReply = match client.login(&name, PASSWORD, "load", mode).await? {
                Ok(reply) => reply,
                Err(error) => bail!("login of {name} refused: {error:?}"),
            };
            let key = reply.key.context("login reply without a key")?;
            Ok(Account { client, key })
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Watcher `i` asks publisher `i mod n_publishers` to be friends.
async fn ask_publishers(
    watchers: Vec<Account>,
    n_publishers: usize,
) -> anyhow::Result<Vec<Account>> {
    for_each_account(watchers, |index, mut watcher| async move {
        let request = FriendRequestRequest {
            to: username("p", index % n_publishers),
            note: String::new(),
        };
        let _: Empty = watcher
            .client
            .request_ok("friend.request", Some(&watcher.key), &request)
            .await?;
        Ok(watcher)
    })
    .await
}

/// Each publisher accepts its watchers' requests, retrying those that have not arrived yet.
async fn accept_watchers(
    publishers: Vec<Account>,
    n_watchers: usize,
) -> anyhow::Result<Vec<Account>> {
    let n_publishers = publishers.len();
    for_each_account(publishers, |index, mut publisher| async move {
        let mut waiting: Vec<String> = (index..n_watchers)
            .step_by(n_publishers)
            .map(|watcher| username("w", watcher))
            .collect();
        let deadline = Instant::now() + SETUP_DEADLINE;
        while !waiting.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "friend requests from {} watchers never arrived",
                    waiting.len()
                );
            }
            let key = publisher.key.clone();
            let requests = waiting.iter().map(|from| {
                let answer = FriendAnswerRequest {
                    from: from.clone(),
                    accept: true,
                };
                (Some(key.clone()), answer)
            });
            let replies: Vec<Result<Empty, ErrorBody>> = publisher
                .client
                .request_many("friend.answer", requests)
                .await?;
            waiting = waiting
                .into_iter()
                .zip(replies)
                .filter_map(|(from, reply)| match reply {
                    Err(error) if error.code == ErrorCode::Invalid => Some(Ok(from)),
                    Err(error) => Some(Err(anyhow::anyhow!("accepting {from}: {error:?}"))),
                    Ok(_) => None,
                })
                .collect::<anyhow::Result<_>>()?;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(publisher)
    })
    .await
}

/// Every watcher's widget selects its publisher (once the friendship reached the watcher),
/// and receives the publisher's current presence.
async fn select_widgets(
    watchers: Vec<Account>,
    n_publishers: usize,
) -> anyhow::Result<Vec<Account>> {
    for_each_account(watchers, |index, mut watcher| async move {
        let publisher = username("p", index % n_publishers);
        let request = WidgetSetRequest {
            contacts: vec![publisher.clone()],
        };
        let deadline = Instant::now() + SETUP_DEADLINE;
        loop {
            let reply: Result<WidgetReply, ErrorBody> = watcher
                .client
                .request("widget.set", Some(&watcher.key), &request)
                .await?;
            match reply {
                Ok(_) => break,
                Err(error) if error.code == ErrorCode::NotFriends && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => bail!("widget of {index} refused: {error:?}"),
            }
        }
        let _: PresencePush = watcher
            .client
            .wait_for_op("presence", SETUP_DEADLINE)
            .await?;
        Ok(watcher)
    })
    .await
}
