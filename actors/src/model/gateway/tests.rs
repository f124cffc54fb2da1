//! Unit tests of the gateway model.

use super::*;
use crate::model::segment::{SegmentLimits, parse_segment};
use std::collections::BTreeSet;

const HOUR_MS: u64 = 3_600_000;
/// A day well after the epoch, as a start of day.
const DAY_10: u64 = 10 * DAY_MS;

fn registration(venue_name: &str) -> Registration {
    Registration {
        venue_name: venue_name.to_owned(),
        venue_address: "1 Main Street".to_owned(),
        admin_account: "admin".to_owned(),
        segments: vec![parse_segment("203.0.113.0/24", &SegmentLimits::default()).unwrap()],
    }
}

fn registered(now_unix_ms: u64) -> GatewayState {
    let mut state = GatewayState::default();
    state
        .register(
            registration("Cafe"),
            "$argon2id$hash".to_owned(),
            now_unix_ms,
        )
        .unwrap();
    state
}

fn key() -> KeyRecord {
    KeyRecord {
        hash: "key-hash".to_owned(),
        expires_at_unix_ms: u64::MAX,
    }
}

fn figures() -> WindowFigures {
    WindowFigures {
        client_logins: 120,
        distinct_accounts: 40,
        peak_concurrent_clients: 12,
        client_online_ms: 300 * HOUR_MS,
        gateway_online_ms: 100 * HOUR_MS,
        gateway_days_online: 7,
        window_days: 7,
    }
}

fn certified() -> CertificationOutcome {
    CertificationOutcome::Certified {
        tier: "silver".to_owned(),
        permissions: BTreeSet::from(["campaigns".to_owned()]),
        policy_version: 1,
    }
}

fn rejected() -> CertificationOutcome {
    CertificationOutcome::Rejected {
        reasons: Vec::new(),
        policy_version: 1,
    }
}

fn pushes(effects: &[GatewayEffect]) -> Vec<(&str, &GatewayPush)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            GatewayEffect::Push {
                session_id, push, ..
            } => Some((session_id.as_str(), push)),
            GatewayEffect::Audit { .. } => None,
        })
        .collect()
}

#[test]
fn registration_is_pending_and_its_window_starts_at_the_next_midnight() {
    let state = registered(DAY_10 + 5 * HOUR_MS);
    assert_eq!(state.status, GatewayStatus::Pending);
    assert_eq!(state.window_start_unix_ms, DAY_10 + DAY_MS);
    assert_eq!(state.revision, 1);
    assert_eq!(state.credential(), Ok("$argon2id$hash".to_owned()));
    // Exactly at midnight the window starts then.
    assert_eq!(registered(DAY_10).window_start_unix_ms, DAY_10);
}

#[test]
fn registering_again_is_allowed_only_after_a_rejection() {
    let mut state = registered(DAY_10);
    assert_eq!(
        state.register(registration("Other"), "h".to_owned(), DAY_10),
        Err(GatewayError::AlreadyRegistered {
            status: GatewayStatus::Pending
        })
    );
    state
        .record_certification(
            rejected(),
            figures(),
            DAY_10 + 7 * DAY_MS,
            DAY_10 + 7 * DAY_MS,
        )
        .unwrap();
    assert_eq!(state.status, GatewayStatus::Rejected);
    state
        .register(registration("Cafe 2"), "h2".to_owned(), DAY_10 + 8 * DAY_MS)
        .unwrap();
    assert_eq!(
        (state.status, state.revision, state.credential()),
        (GatewayStatus::Pending, 2, Ok("h2".to_owned()))
    );
}

#[test]
fn amending_restarts_the_window_but_a_certified_gateway_cannot_amend() {
    let mut state = registered(DAY_10);
    state
        .amend(registration("Cafe renamed"), DAY_10 + 2 * DAY_MS + 1)
        .unwrap();
    assert_eq!(state.window_start_unix_ms, DAY_10 + 3 * DAY_MS);
    assert_eq!(state.revision, 2);
    state
        .record_certification(
            certified(),
            figures(),
            DAY_10 + 10 * DAY_MS,
            DAY_10 + 10 * DAY_MS,
        )
        .unwrap();
    assert_eq!(
        state.amend(registration("x"), DAY_10 + 11 * DAY_MS),
        Err(GatewayError::Certified)
    );
    assert_eq!(
        GatewayState::default().amend(registration("x"), 1),
        Err(GatewayError::NotRegistered)
    );
}

#[test]
fn uptime_is_split_at_midnight_and_counts_the_open_interval() {
    let mut state = registered(DAY_10);
    state
        .online(
            "g1".to_owned(),
            "node-a".to_owned(),
            key(),
            DAY_10 + 23 * HOUR_MS,
        )
        .unwrap();
    state.offline("g1", DAY_10 + DAY_MS + HOUR_MS).unwrap();
    assert_eq!(
        state.online_ms_by_day,
        BTreeMap::from([(10, HOUR_MS), (11, HOUR_MS)])
    );
    // Open again on day 13, counted up to now.
    state
        .online(
            "g2".to_owned(),
            "node-a".to_owned(),
            key(),
            DAY_10 + 3 * DAY_MS,
        )
        .unwrap();
    let now = DAY_10 + 3 * DAY_MS + 2 * HOUR_MS;
    assert_eq!(
        state.uptime(DAY_10, DAY_10 + 7 * DAY_MS, now),
        (4 * HOUR_MS, 3)
    );
    assert_eq!(
        state.uptime(DAY_10 + DAY_MS, DAY_10 + 2 * DAY_MS, now),
        (HOUR_MS, 1)
    );
    // A stale session's end changes nothing.
    state.offline("g1", now).unwrap();
    assert!(state.connection_opt.is_some());
    assert_eq!(
        GatewayState::default().uptime(0, 7 * DAY_MS, now),
        (0, 0),
        "an empty window"
    );
}

#[test]
fn a_result_is_pushed_when_online_and_kept_for_the_next_login_when_offline() {
    let mut state = registered(DAY_10);
    let ((), effects) = state
        .record_certification(
            rejected(),
            figures(),
            DAY_10 + 7 * DAY_MS,
            DAY_10 + 7 * DAY_MS,
        )
        .unwrap();
    assert!(pushes(&effects).is_empty());
    assert!(state.undelivered_opt.is_some());
    let ((), effects) = state
        .online(
            "g1".to_owned(),
            "node-a".to_owned(),
            key(),
            DAY_10 + 8 * DAY_MS,
        )
        .unwrap();
    let delivered = pushes(&effects);
    assert!(matches!(
        delivered.as_slice(),
        [("g1", GatewayPush::Certification(record))] if matches!(record.outcome, CertificationOutcome::Rejected { .. })
    ));
    assert!(state.undelivered_opt.is_none());

    state
        .register(registration("Cafe"), "h".to_owned(), DAY_10 + 8 * DAY_MS)
        .unwrap();
    let ((), effects) = state
        .record_certification(
            certified(),
            figures(),
            DAY_10 + 16 * DAY_MS,
            DAY_10 + 16 * DAY_MS,
        )
        .unwrap();
    assert!(matches!(
        pushes(&effects).as_slice(),
        [("g1", GatewayPush::Certification(record))] if record.window_start_unix_ms == DAY_10 + 8 * DAY_MS
    ));
    assert_eq!(state.status, GatewayStatus::Certified);
    assert_eq!(state.history.len(), 2);
}

#[test]
fn history_is_bounded() {
    let mut state = registered(0);
    for index in 0..(HISTORY_KEPT as u64 + 5) {
        state
            .record_certification(rejected(), figures(), index * DAY_MS, index * DAY_MS)
            .unwrap();
    }
    assert_eq!(state.history.len(), HISTORY_KEPT);
    assert_eq!(
        state.history.first().map(|record| record.decided_unix_ms),
        Some(5 * DAY_MS)
    );
}

#[test]
fn only_the_current_sessions_key_is_accepted() {
    let mut state = registered(DAY_10);
    assert_eq!(
        state.check_key("g1", "key-hash", DAY_10),
        Err(GatewayError::KeyInvalid)
    );
    state
        .online("g1".to_owned(), "node-a".to_owned(), key(), DAY_10)
        .unwrap();
    assert_eq!(state.check_key("g1", "key-hash", DAY_10), Ok(()));
    assert_eq!(
        state.check_key("g1", "other-hash", DAY_10),
        Err(GatewayError::KeyInvalid)
    );
    state
        .online("g2".to_owned(), "node-b".to_owned(), key(), DAY_10 + 1)
        .unwrap();
    assert_eq!(
        state.check_key("g1", "key-hash", DAY_10 + 1),
        Err(GatewayError::KeyInvalid),
        "a newer login replaces the older session"
    );
}

#[test]
fn certify_evaluates_both_monitors_over_whole_days() {
    use crate::model::certification::{Condition, Metric, Tier};
    let policy = CertificationPolicy {
        version: 3,
        window_days: 1,
        pass: Condition::at_least(Metric::GatewayOnlineHours, 2),
        tiers: vec![Tier {
            name: "bronze".to_owned(),
            condition: Condition::at_least(Metric::ClientLogins, 2),
            permissions: BTreeSet::from(["campaigns".to_owned()]),
        }],
    };
    let client = ClientFigures {
        logins: 2,
        distinct_accounts: 2,
        peak_concurrent: 1,
        online_ms: HOUR_MS,
    };
    let mut state = registered(DAY_10);
    state
        .online(
            "g1".to_owned(),
            "node-a".to_owned(),
            key(),
            DAY_10 + HOUR_MS,
        )
        .unwrap();
    assert!(matches!(
        state.certify(
            &policy,
            client,
            DAY_10 + 1,
            DAY_10 + DAY_MS,
            DAY_10 + 2 * HOUR_MS
        ),
        Err(GatewayError::Invalid { .. })
    ));
    // One hour online so far: pass fails on the gateway's own uptime.
    let (record, effects) = state
        .certify(
            &policy,
            client,
            DAY_10,
            DAY_10 + DAY_MS,
            DAY_10 + 2 * HOUR_MS,
        )
        .unwrap();
    assert_eq!(record.figures.gateway_online_ms, HOUR_MS);
    assert_eq!(
        record.outcome.reasons_text(),
        ["gateway_online_hours: measured 1, at least 2 required"]
    );
    assert_eq!(state.status, GatewayStatus::Rejected);
    assert_eq!(pushes(&effects).len(), 1, "pushed to the online gateway");
    // Two more hours: certified at bronze, version named.
    let (record, _) = state
        .certify(
            &policy,
            client,
            DAY_10,
            DAY_10 + DAY_MS,
            DAY_10 + 4 * HOUR_MS,
        )
        .unwrap();
    assert!(matches!(
        &record.outcome,
        CertificationOutcome::Certified { tier, policy_version: 3, .. } if tier == "bronze"
    ));
    assert_eq!(state.status, GatewayStatus::Certified);
    assert_eq!(state.window_start_unix_ms, DAY_10 + DAY_MS);
}

/// A two-day policy passing on two client logins.
fn two_day_policy() -> CertificationPolicy {
    use crate::model::certification::{Condition, Metric, Tier};
    CertificationPolicy {
        version: 1,
        window_days: 2,
        pass: Condition::at_least(Metric::ClientLogins, 2),
        tiers: vec![Tier {
            name: "bronze".to_owned(),
            condition: Condition::at_least(Metric::ClientLogins, 2),
            permissions: BTreeSet::from(["campaigns".to_owned()]),
        }],
    }
}

fn client_logins(logins: u64) -> ClientFigures {
    ClientFigures {
        logins,
        ..ClientFigures::default()
    }
}

#[test]
fn a_window_is_certified_once_at_its_end_and_never_early_or_twice() {
    let policy = two_day_policy();
    // Registered mid-day 9: the window is days 10 and 11.
    let mut state = registered(DAY_10 - 5 * HOUR_MS);
    assert_eq!(state.window_due_unix_ms(2), Some(DAY_10 + 2 * DAY_MS));
    let not_due = |state: &GatewayState| GatewayError::WindowNotDue {
        window_start_unix_ms: state.window_start_unix_ms,
        status: state.status,
    };
    // One millisecond early: nothing happens.
    let early =
        state.certify_window_end(&policy, client_logins(5), DAY_10, DAY_10 + 2 * DAY_MS - 1);
    assert_eq!(early.unwrap_err(), not_due(&state));
    assert!(state.history.is_empty());
    // A window that is not the current one: nothing happens.
    let other = state.certify_window_end(
        &policy,
        client_logins(5),
        DAY_10 - DAY_MS,
        DAY_10 + 9 * DAY_MS,
    );
    assert_eq!(other.unwrap_err(), not_due(&state));
    // At the end: certified over exactly the window, and the next window starts.
    let (record, _) = state
        .certify_window_end(&policy, client_logins(5), DAY_10, DAY_10 + 2 * DAY_MS)
        .unwrap();
    assert_eq!(
        (record.window_start_unix_ms, record.window_end_unix_ms),
        (DAY_10, DAY_10 + 2 * DAY_MS)
    );
    assert_eq!(record.figures.window_days, 2);
    assert_eq!(state.status, GatewayStatus::Certified);
    // The same request again (a second sweep, a redelivery) decides nothing more.
    let again = state.certify_window_end(&policy, client_logins(5), DAY_10, DAY_10 + 3 * DAY_MS);
    assert_eq!(again.unwrap_err(), not_due(&state));
    assert_eq!(state.history.len(), 1);
    // The next window is certified at its own end: activity fell, so it is rejected, and a
    // rejected gateway waits for an amendment rather than being swept again.
    assert_eq!(state.window_due_unix_ms(2), Some(DAY_10 + 4 * DAY_MS));
    let (record, _) = state
        .certify_window_end(
            &policy,
            client_logins(1),
            DAY_10 + 2 * DAY_MS,
            DAY_10 + 5 * DAY_MS,
        )
        .unwrap();
    assert_eq!(record.window_end_unix_ms, DAY_10 + 4 * DAY_MS);
    assert_eq!(state.status, GatewayStatus::Rejected);
    assert_eq!(state.window_due_unix_ms(2), None);
    let rejected_again = state.certify_window_end(
        &policy,
        client_logins(9),
        DAY_10 + 4 * DAY_MS,
        DAY_10 + 9 * DAY_MS,
    );
    assert_eq!(rejected_again.unwrap_err(), not_due(&state));
    // An amendment starts a new window, due again.
    state
        .amend(registration("Cafe"), DAY_10 + 9 * DAY_MS + HOUR_MS)
        .unwrap();
    assert_eq!(state.window_due_unix_ms(2), Some(DAY_10 + 12 * DAY_MS));
    assert_eq!(GatewayState::default().window_due_unix_ms(2), None);
}

// ---------------------------------------------------------------------------------------------
// Campaigns: rewards and clients' unit requests (S0 steps 11 and 13)
// ---------------------------------------------------------------------------------------------

fn reward(campaign_id: &str) -> Reward {
    Reward {
        campaign_id: campaign_id.to_owned(),
        campaign_title: format!("{campaign_id} title"),
        rank: 1,
        score: 400,
        text: "a new router".to_owned(),
        granted_at_unix_ms: DAY_10,
    }
}

fn online(now_unix_ms: u64) -> GatewayState {
    let mut state = registered(now_unix_ms);
    state
        .online("g1".to_owned(), "node-a".to_owned(), key(), now_unix_ms)
        .unwrap();
    state
}

/// Records the request `request_id` of `account_id` for 5 units of `campaign_id`.
fn request_units(
    state: &mut GatewayState,
    request_id: &str,
    campaign_id: &str,
    account_id: &str,
    now_unix_ms: u64,
) -> GatewayResult<bool> {
    state.record_unit_request(
        request_id.to_owned(),
        campaign_id.to_owned(),
        account_id.to_owned(),
        5,
        "for the weekend".to_owned(),
        now_unix_ms,
    )
}

fn unit_request(request_id: &str, campaign_id: &str, at_unix_ms: u64) -> UnitRequestRecord {
    UnitRequestRecord {
        request_id: request_id.to_owned(),
        campaign_id: campaign_id.to_owned(),
        account_id: "alice".to_owned(),
        units: 5,
        note: "for the weekend".to_owned(),
        at_unix_ms,
    }
}

fn request_ids(records: &[UnitRequestRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|record| record.request_id.as_str())
        .collect()
}

#[test]
fn a_reward_is_kept_once_and_pushed_when_online() {
    let mut state = online(DAY_10);
    let (changed, effects) = state.grant_reward(reward("c-1")).unwrap();
    assert!(changed);
    assert_eq!(
        pushes(&effects),
        vec![("g1", &GatewayPush::Reward(reward("c-1")))]
    );
    assert!(effects.contains(&GatewayEffect::Audit {
        action: "campaign.reward",
        detail: "campaign=c-1 rank=1".to_owned(),
    }));

    let before = state.clone();
    assert_eq!(state.grant_reward(reward("c-1")), Ok((false, Vec::new())));
    assert_eq!(state, before);

    // Offline: kept, shown in the status, nothing pushed.
    state.offline("g1", DAY_10 + 1).unwrap();
    let (changed, effects) = state.grant_reward(reward("c-2")).unwrap();
    assert!(changed);
    assert!(pushes(&effects).is_empty());
    assert_eq!(state.rewards, vec![reward("c-1"), reward("c-2")]);
}

#[test]
fn campaign_messages_to_an_unregistered_gateway_are_refused() {
    let mut state = GatewayState::default();
    assert_eq!(
        state.grant_reward(reward("c-1")),
        Err(GatewayError::NotRegistered)
    );
    assert_eq!(
        request_units(&mut state, "r-1", "c-1", "alice", DAY_10),
        Err(GatewayError::NotRegistered)
    );
    assert_eq!(state, GatewayState::default());
}

#[test]
fn a_unit_request_is_kept_once_and_pushed_when_online() {
    let mut state = online(DAY_10);
    let (changed, effects) = request_units(&mut state, "r-1", "c-1", "alice", DAY_10 + 5).unwrap();
    assert!(changed);
    assert_eq!(
        pushes(&effects),
        vec![(
            "g1",
            &GatewayPush::UnitRequest(unit_request("r-1", "c-1", DAY_10 + 5))
        )]
    );
    assert!(effects.contains(&GatewayEffect::Audit {
        action: "campaign.unit_request",
        detail: "request=r-1 campaign=c-1 account=alice units=5".to_owned(),
    }));

    // A redelivery (same id, even a later one) changes nothing and pushes nothing.
    let before = state.clone();
    assert_eq!(
        request_units(&mut state, "r-1", "c-1", "alice", DAY_10 + 9),
        Ok((false, Vec::new()))
    );
    assert_eq!(state, before);

    state.offline("g1", DAY_10 + 10).unwrap();
    let (changed, effects) = request_units(&mut state, "r-2", "c-2", "alice", DAY_10 + 11).unwrap();
    assert!(changed);
    assert!(pushes(&effects).is_empty());
    assert_eq!(
        state.unit_requests,
        vec![
            unit_request("r-1", "c-1", DAY_10 + 5),
            unit_request("r-2", "c-2", DAY_10 + 11)
        ]
    );
}

#[test]
fn unit_requests_are_listed_newest_first_by_campaign() {
    let mut state = registered(DAY_10);
    for (index, (request_id, campaign_id)) in [("r-1", "c-1"), ("r-2", "c-2"), ("r-3", "c-1")]
        .into_iter()
        .enumerate()
    {
        request_units(
            &mut state,
            request_id,
            campaign_id,
            "alice",
            DAY_10 + index as u64,
        )
        .unwrap();
    }
    fn check(state: &GatewayState, campaign_id_opt: Option<&str>, expected: &[&str]) {
        assert_eq!(
            request_ids(&state.unit_requests(campaign_id_opt)),
            expected,
            "{campaign_id_opt:?}"
        );
    }
    check(&state, None, &["r-3", "r-2", "r-1"]);
    check(&state, Some("c-1"), &["r-3", "r-1"]);
    check(&state, Some("c-2"), &["r-2"]);
    check(&state, Some("c-9"), &[]);
}

#[test]
fn unit_requests_are_bounded_and_the_oldest_is_forgotten() {
    let mut state = registered(DAY_10);
    for index in 0..=UNIT_REQUESTS_KEPT {
        request_units(&mut state, &format!("r-{index}"), "c-1", "alice", DAY_10).unwrap();
    }
    assert_eq!(state.unit_requests.len(), UNIT_REQUESTS_KEPT);
    assert_eq!(
        state
            .unit_requests
            .first()
            .map(|record| record.request_id.as_str()),
        Some("r-1")
    );
    let newest = format!("r-{UNIT_REQUESTS_KEPT}");
    assert_eq!(
        state
            .unit_requests
            .last()
            .map(|record| record.request_id.as_str()),
        Some(newest.as_str())
    );
}
