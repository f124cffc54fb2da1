//! One venue gateway (S0 steps 1, 3, 4 and 5) as a pure state machine: its registration
//! (pending until a certification), the credential hash its admin logs it in with, the second
//! monitor (the gateway's own uptime, per UTC day), and its certification state with the
//! history of results. A result reached while the gateway is offline waits for its next login.
//!
//! Every operation takes `now_unix_ms` and returns the [`GatewayEffect`]s for the shell.

use crate::model::certification::{
    CertificationOutcome, CertificationPolicy, WindowFigures, evaluate,
};
use crate::model::reward::{Reward, keep_reward};
use crate::model::segment::Segment;
use crate::model::user::KeyRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// Days of uptime kept (longer than any certification window).
pub const UPTIME_DAYS_KEPT: u64 = 62;
/// Certification results kept in the history.
pub const HISTORY_KEPT: usize = 64;
/// Unit requests from clients a gateway keeps; the oldest is forgotten beyond it.
pub const UNIT_REQUESTS_KEPT: usize = 256;

/// What a gateway registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The venue's name.
    pub venue_name: String,
    /// The venue's postal address.
    pub venue_address: String,
    /// The IM account of the venue's admin.
    pub admin_account: String,
    /// The LAN's public segments (at least one, no two overlapping).
    pub segments: Vec<Segment>,
}

/// Where a gateway stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayStatus {
    /// Registered (or amended), being monitored.
    #[default]
    Pending,
    /// Certified at a tier by the last evaluation.
    Certified,
    /// Rejected by the last evaluation: amend or register again.
    Rejected,
}

/// One certification result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificationRecord {
    /// Certified at a tier, or rejected with reasons.
    pub outcome: CertificationOutcome,
    /// What the monitors measured.
    pub figures: WindowFigures,
    /// The window evaluated, `[start, end)`.
    pub window_start_unix_ms: u64,
    /// The window's end.
    pub window_end_unix_ms: u64,
    /// When it was decided.
    pub decided_unix_ms: u64,
}

/// A client's request for campaign units, addressed to its venue's gateway and shown to the
/// venue's admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRequestRecord {
    /// Chosen by the node that took the request; a redelivery carries the same one.
    pub request_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The asking account.
    pub account_id: String,
    /// How many units it asks for.
    pub units: u64,
    /// The client's note.
    pub note: String,
    /// When the gateway received it.
    pub at_unix_ms: u64,
}

/// What the first monitor measured over a window on all of a gateway's segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFigures {
    /// Client logins.
    pub logins: u64,
    /// Distinct accounts (summed over segments: an upper bound).
    pub distinct_accounts: u64,
    /// Most clients online at once (summed over segments: an upper bound).
    pub peak_concurrent: u64,
    /// Client online time.
    pub online_ms: u64,
}

/// The gateway's live connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConnection {
    /// The gateway's session.
    pub session_id: String,
    /// The key the session's requests carry (only its hash).
    pub key: KeyRecord,
    /// The node holding it.
    pub node_id: String,
    /// Since when it is online.
    pub since_unix_ms: u64,
}

/// Everything a gateway entity persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayState {
    /// `None` until registered.
    pub registration_opt: Option<Registration>,
    /// argon2id PHC string of the gateway's password.
    pub credential_hash: String,
    /// Bumped by every registration or amendment.
    pub revision: u64,
    /// Where it stands.
    pub status: GatewayStatus,
    /// Start of the current monitoring window.
    pub window_start_unix_ms: u64,
    /// The live connection, when online.
    pub connection_opt: Option<GatewayConnection>,
    /// Closed online time per UTC day (days since the epoch), the last [`UPTIME_DAYS_KEPT`].
    pub online_ms_by_day: BTreeMap<u64, u64>,
    /// Results, oldest first, the last [`HISTORY_KEPT`].
    pub history: Vec<CertificationRecord>,
    /// A result decided while the gateway was offline, delivered at its next login.
    pub undelivered_opt: Option<CertificationRecord>,
    /// Rewards the venue won in campaigns (S0 step 13), oldest first, the last
    /// [`crate::model::reward::REWARDS_KEPT`].
    #[serde(default)]
    pub rewards: Vec<Reward>,
    /// Clients' unit requests, oldest first, the last [`UNIT_REQUESTS_KEPT`].
    #[serde(default)]
    pub unit_requests: Vec<UnitRequestRecord>,
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayError {
    /// The gateway is not registered.
    NotRegistered,
    /// Registering again is allowed only after a rejection.
    AlreadyRegistered {
        /// Where it stands.
        status: GatewayStatus,
    },
    /// A certified gateway's registration cannot be amended (register a new gateway).
    Certified,
    /// The key is not this gateway's current session key, or it expired.
    KeyInvalid,
    /// The window named is not the gateway's current one, has not ended, or the gateway waits
    /// for an amendment (rejected): nothing to certify at a window's end.
    WindowNotDue {
        /// The gateway's current window start.
        window_start_unix_ms: u64,
        /// Where it stands.
        status: GatewayStatus,
    },
    /// The request contradicts the state.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// What a gateway is pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayPush {
    /// A certification result.
    Certification(CertificationRecord),
    /// The venue won a reward in a campaign.
    Reward(Reward),
    /// A client asks the venue for campaign units.
    UnitRequest(UnitRequestRecord),
}

/// What the shell must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEffect {
    /// Push to the gateway's session.
    Push {
        /// The node holding the session.
        node_id: String,
        /// The session.
        session_id: String,
        /// What.
        push: GatewayPush,
    },
    /// Record an audit event.
    Audit {
        /// What happened.
        action: &'static str,
        /// Details, never secret.
        detail: String,
    },
}

/// Shorthand for an operation's result.
pub type GatewayResult<T> = Result<(T, Vec<GatewayEffect>), GatewayError>;

fn audit(action: &'static str, detail: String) -> GatewayEffect {
    GatewayEffect::Audit { action, detail }
}

/// An audit detail naming what was registered.
fn registration_detail(registration: &Registration) -> String {
    let segments: Vec<String> = registration
        .segments
        .iter()
        .map(ToString::to_string)
        .collect();
    format!(
        "venue={} admin={} segments={}",
        registration.venue_name,
        registration.admin_account,
        segments.join(",")
    )
}

/// Whether `[from, to)` is one or more whole UTC days.
pub fn is_whole_days(from_unix_ms: u64, to_unix_ms: u64) -> bool {
    from_unix_ms.is_multiple_of(DAY_MS)
        && to_unix_ms.is_multiple_of(DAY_MS)
        && from_unix_ms < to_unix_ms
}

/// When a window of `window_days` that started at `window_start` ends and should be certified,
/// for a registered gateway in `status`; `None` for a rejected one, which waits for an
/// amendment to start a new window.
pub fn window_due_unix_ms(
    status: GatewayStatus,
    window_start_unix_ms: u64,
    window_days: u32,
) -> Option<u64> {
    (status != GatewayStatus::Rejected)
        .then(|| window_start_unix_ms.saturating_add(u64::from(window_days).saturating_mul(DAY_MS)))
}

/// Adds the time `[from, to)` to the per-day totals, split at UTC midnights.
fn accrue(online_ms_by_day: &mut BTreeMap<u64, u64>, from_unix_ms: u64, to_unix_ms: u64) {
    let mut start = from_unix_ms;
    while start < to_unix_ms {
        let day = start / DAY_MS;
        let day_end = (day + 1) * DAY_MS;
        let end = to_unix_ms.min(day_end);
        *online_ms_by_day.entry(day).or_insert(0) += end - start;
        start = end;
    }
}

impl GatewayState {
    fn registration(&self) -> Result<&Registration, GatewayError> {
        self.registration_opt
            .as_ref()
            .ok_or(GatewayError::NotRegistered)
    }

    /// Registers the gateway (or registers it again after a rejection); it is pending and a
    /// new monitoring window starts.
    pub fn register(
        &mut self,
        registration: Registration,
        credential_hash: String,
        now_unix_ms: u64,
    ) -> GatewayResult<()> {
        if self.registration_opt.is_some() && self.status != GatewayStatus::Rejected {
            return Err(GatewayError::AlreadyRegistered {
                status: self.status,
            });
        }
        let detail = registration_detail(&registration);
        self.registration_opt = Some(registration);
        self.credential_hash = credential_hash;
        self.start_window(now_unix_ms);
        Ok(((), vec![audit("gateway.registered", detail)]))
    }

    /// Amends a pending or rejected registration; it is pending again and a new window starts.
    pub fn amend(&mut self, registration: Registration, now_unix_ms: u64) -> GatewayResult<()> {
        self.registration()?;
        if self.status == GatewayStatus::Certified {
            return Err(GatewayError::Certified);
        }
        let detail = registration_detail(&registration);
        self.registration_opt = Some(registration);
        self.start_window(now_unix_ms);
        Ok(((), vec![audit("gateway.amended", detail)]))
    }

    /// A new window starts at the first UTC midnight from `now`: windows are whole days, so
    /// both monitors' day totals cover them exactly.
    fn start_window(&mut self, now_unix_ms: u64) {
        self.revision += 1;
        self.status = GatewayStatus::Pending;
        self.window_start_unix_ms = now_unix_ms.div_ceil(DAY_MS) * DAY_MS;
    }

    /// The password hash to verify a gateway login against.
    pub fn credential(&self) -> Result<String, GatewayError> {
        self.registration()?;
        Ok(self.credential_hash.clone())
    }

    /// Checks a key presented for the gateway's session.
    pub fn check_key(
        &self,
        session_id: &str,
        key_hash: &str,
        now_unix_ms: u64,
    ) -> Result<(), GatewayError> {
        self.registration()?;
        match &self.connection_opt {
            Some(connection)
                if connection.session_id == session_id
                    && connection.key.hash == key_hash
                    && connection.key.expires_at_unix_ms > now_unix_ms =>
            {
                Ok(())
            }
            _ => Err(GatewayError::KeyInvalid),
        }
    }

    /// The gateway logged in on `node_id` (a newer login replaces an older connection); a
    /// result decided while it was offline is pushed.
    pub fn online(
        &mut self,
        session_id: String,
        node_id: String,
        key: KeyRecord,
        now_unix_ms: u64,
    ) -> GatewayResult<()> {
        self.registration()?;
        self.close_uptime(now_unix_ms);
        let mut effects = vec![audit("gateway.online", format!("session={session_id}"))];
        if let Some(record) = self.undelivered_opt.take() {
            effects.push(GatewayEffect::Push {
                node_id: node_id.clone(),
                session_id: session_id.clone(),
                push: GatewayPush::Certification(record),
            });
        }
        self.connection_opt = Some(GatewayConnection {
            session_id,
            key,
            node_id,
            since_unix_ms: now_unix_ms,
        });
        Ok(((), effects))
    }

    /// The gateway's session `session_id` ended (ignored when another replaced it).
    pub fn offline(&mut self, session_id: &str, now_unix_ms: u64) -> GatewayResult<()> {
        self.registration()?;
        let current = self
            .connection_opt
            .as_ref()
            .is_some_and(|connection| connection.session_id == session_id);
        if !current {
            return Ok(((), Vec::new()));
        }
        self.close_uptime(now_unix_ms);
        Ok((
            (),
            vec![audit("gateway.offline", format!("session={session_id}"))],
        ))
    }

    /// Ends the open online interval (if any) at `now` and forgets days beyond the kept span.
    fn close_uptime(&mut self, now_unix_ms: u64) {
        if let Some(connection) = self.connection_opt.take() {
            accrue(
                &mut self.online_ms_by_day,
                connection.since_unix_ms,
                now_unix_ms.max(connection.since_unix_ms),
            );
        }
        let oldest_kept = (now_unix_ms / DAY_MS).saturating_sub(UPTIME_DAYS_KEPT);
        self.online_ms_by_day = self.online_ms_by_day.split_off(&oldest_kept);
    }

    /// Online time per UTC day (days since the epoch), counting the open interval up to `now`.
    pub fn uptime_by_day(&self, now_unix_ms: u64) -> BTreeMap<u64, u64> {
        let mut by_day = self.online_ms_by_day.clone();
        if let Some(connection) = &self.connection_opt {
            accrue(&mut by_day, connection.since_unix_ms, now_unix_ms);
        }
        by_day
    }

    /// The second monitor over the whole UTC days `[from, to)`: online time, and the days with
    /// any uptime, counting the open interval up to `now`.
    pub fn uptime(&self, from_unix_ms: u64, to_unix_ms: u64, now_unix_ms: u64) -> (u64, u32) {
        let by_day = self.uptime_by_day(now_unix_ms);
        // Windows are whole UTC days (see `start_window`), so day totals are exact.
        let first_day = from_unix_ms / DAY_MS;
        let end_day = to_unix_ms.div_ceil(DAY_MS);
        let in_window = by_day.range(first_day..end_day).map(|(_, online)| *online);
        let online_ms = in_window.clone().sum();
        let days_online = in_window.filter(|online| *online > 0).count();
        (online_ms, u32::try_from(days_online).unwrap_or(u32::MAX))
    }

    /// Certifies the gateway for the whole UTC days `[window_start, window_end)` under
    /// `policy`, from the first monitor's `client` figures and its own uptime; the result is
    /// recorded like [`Self::record_certification`]'s.
    pub fn certify(
        &mut self,
        policy: &CertificationPolicy,
        client: ClientFigures,
        window_start_unix_ms: u64,
        window_end_unix_ms: u64,
        now_unix_ms: u64,
    ) -> GatewayResult<CertificationRecord> {
        self.registration()?;
        if !is_whole_days(window_start_unix_ms, window_end_unix_ms) {
            return Err(GatewayError::Invalid {
                reason: "a certification window is one or more whole UTC days".to_owned(),
            });
        }
        let (gateway_online_ms, gateway_days_online) =
            self.uptime(window_start_unix_ms, window_end_unix_ms, now_unix_ms);
        let figures = WindowFigures {
            client_logins: client.logins,
            distinct_accounts: client.distinct_accounts,
            peak_concurrent_clients: client.peak_concurrent,
            client_online_ms: client.online_ms,
            gateway_online_ms,
            gateway_days_online,
            window_days: u32::try_from((window_end_unix_ms - window_start_unix_ms) / DAY_MS)
                .unwrap_or(u32::MAX),
        };
        let outcome = evaluate(policy, &figures);
        self.window_start_unix_ms = window_start_unix_ms;
        let ((), effects) =
            self.record_certification(outcome, figures, window_end_unix_ms, now_unix_ms)?;
        let record = self
            .history
            .last()
            .cloned()
            .ok_or(GatewayError::NotRegistered)?;
        Ok((record, effects))
    }

    /// When the current window of `window_days` ends and should be certified; `None` while
    /// nothing is due by time (not registered, or rejected: an amendment starts a new window).
    pub fn window_due_unix_ms(&self, window_days: u32) -> Option<u64> {
        self.registration_opt.as_ref()?;
        window_due_unix_ms(self.status, self.window_start_unix_ms, window_days)
    }

    /// Certifies the window that started at `window_start` once it has ended under `policy`:
    /// the automatic certification at a window's end. It is refused unless that window is
    /// still the current one and is over, so a repeated or late request (two sweeps racing, a
    /// redelivery after the window moved on) certifies nothing twice.
    pub fn certify_window_end(
        &mut self,
        policy: &CertificationPolicy,
        client: ClientFigures,
        window_start_unix_ms: u64,
        now_unix_ms: u64,
    ) -> GatewayResult<CertificationRecord> {
        self.registration()?;
        let not_due = GatewayError::WindowNotDue {
            window_start_unix_ms: self.window_start_unix_ms,
            status: self.status,
        };
        match self.window_due_unix_ms(policy.window_days) {
            Some(due_unix_ms)
                if self.window_start_unix_ms == window_start_unix_ms
                    && due_unix_ms <= now_unix_ms =>
            {
                self.certify(
                    policy,
                    client,
                    window_start_unix_ms,
                    due_unix_ms,
                    now_unix_ms,
                )
            }
            _ => Err(not_due),
        }
    }

    /// Keeps a reward a campaign granted the venue and pushes it to the gateway's session
    /// when online. A redelivered grant, or a second grant of the same campaign, changes
    /// nothing and pushes nothing. Returns whether the reward was new.
    pub fn grant_reward(&mut self, reward: Reward) -> GatewayResult<bool> {
        self.registration()?;
        let detail = format!("campaign={} rank={}", reward.campaign_id, reward.rank);
        let push = GatewayPush::Reward(reward.clone());
        if !keep_reward(&mut self.rewards, reward) {
            return Ok((false, Vec::new()));
        }
        let mut effects = self.pushes_to_session(push);
        effects.push(audit("campaign.reward", detail));
        Ok((true, effects))
    }

    /// Keeps a client's request for units (the node checked it) and pushes it to the
    /// gateway's session when online. A redelivery (the same `request_id`) changes nothing
    /// and pushes nothing. Returns whether it was new.
    pub fn record_unit_request(
        &mut self,
        request_id: String,
        campaign_id: String,
        account_id: String,
        units: u64,
        note: String,
        now_unix_ms: u64,
    ) -> GatewayResult<bool> {
        self.registration()?;
        if self
            .unit_requests
            .iter()
            .any(|kept| kept.request_id == request_id)
        {
            return Ok((false, Vec::new()));
        }
        let record = UnitRequestRecord {
            request_id,
            campaign_id,
            account_id,
            units,
            note,
            at_unix_ms: now_unix_ms,
        };
        let detail = format!(
            "request={} campaign={} account={} units={}",
            record.request_id, record.campaign_id, record.account_id, record.units
        );
        self.unit_requests.push(record.clone());
        if self.unit_requests.len() > UNIT_REQUESTS_KEPT {
            let n_over = self.unit_requests.len() - UNIT_REQUESTS_KEPT;
            self.unit_requests.drain(..n_over);
        }
        let mut effects = self.pushes_to_session(GatewayPush::UnitRequest(record));
        effects.push(audit("campaign.unit_request", detail));
        Ok((true, effects))
    }

    /// The kept unit requests, newest first, of one campaign or of all.
    pub fn unit_requests(&self, campaign_id_opt: Option<&str>) -> Vec<UnitRequestRecord> {
        self.unit_requests
            .iter()
            .rev()
            .filter(|record| {
                campaign_id_opt.is_none_or(|campaign_id| record.campaign_id == campaign_id)
            })
            .cloned()
            .collect()
    }

    /// A push to the gateway's session when it is online; nothing otherwise.
    fn pushes_to_session(&self, push: GatewayPush) -> Vec<GatewayEffect> {
        match &self.connection_opt {
            Some(connection) => vec![GatewayEffect::Push {
                node_id: connection.node_id.clone(),
                session_id: connection.session_id.clone(),
                push,
            }],
            None => Vec::new(),
        }
    }

    /// Records a certification decided for the window `[start, end)`: pushed to the gateway
    /// when online, else kept for its next login.
    pub fn record_certification(
        &mut self,
        outcome: CertificationOutcome,
        figures: WindowFigures,
        window_end_unix_ms: u64,
        now_unix_ms: u64,
    ) -> GatewayResult<()> {
        self.registration()?;
        let (status, detail) = match &outcome {
            CertificationOutcome::Certified { tier, .. } => {
                (GatewayStatus::Certified, format!("certified tier={tier}"))
            }
            CertificationOutcome::Rejected { reasons, .. } => (
                GatewayStatus::Rejected,
                format!("rejected n_reasons={}", reasons.len()),
            ),
        };
        let record = CertificationRecord {
            outcome,
            figures,
            window_start_unix_ms: self.window_start_unix_ms,
            window_end_unix_ms,
            decided_unix_ms: now_unix_ms,
        };
        self.status = status;
        self.window_start_unix_ms = window_end_unix_ms;
        self.history.push(record.clone());
        if self.history.len() > HISTORY_KEPT {
            self.history.remove(0);
        }
        let mut effects = vec![audit("gateway.certification", detail)];
        match &self.connection_opt {
            Some(connection) => effects.push(GatewayEffect::Push {
                node_id: connection.node_id.clone(),
                session_id: connection.session_id.clone(),
                push: GatewayPush::Certification(record),
            }),
            None => self.undelivered_opt = Some(record),
        }
        Ok(((), effects))
    }
}

#[cfg(test)]
mod tests;
