//! The storage conformance suite: every case runs against SQLite always and against ScyllaDB
//! when one is configured, so both backends are held to the same behaviour.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use lanmesh_storage::{
    AuditEvent, ChatMessage, EntityKey, JournalRecord, MAX_JOURNAL_BATCH_RECORDS,
    MAX_JOURNAL_BODY_BYTES, MAX_JOURNAL_READ_LIMIT, MAX_LEDGER_ID_BYTES, MAX_MESSAGE_TEXT_BYTES,
    MAX_PAGE_LIMIT, PageCursor, PageRequest, PresenceEvent, PresenceSample, SegmentWindowFigures,
    StateVersion, StoreError, StoredEntityState, Stores,
};
use tokio::sync::Barrier;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per conformance case for a backend, opening fresh stores with
/// `$open(test_name) -> Option<Harness>` (`None` = skipped, reason already printed).
macro_rules! storage_conformance_suite {
    ($backend:ident, $open:path) => {
        storage_conformance_suite!(
            @cases $backend, $open,
            [
                entity_state_load_of_missing_entity_is_none,
                entity_state_first_save_then_updates_round_trip,
                entity_state_conflict_reports_current_version,
                entity_state_update_of_missing_entity_conflicts_with_none,
                entity_state_stale_epoch_is_fenced,
                entity_state_non_increasing_version_is_rejected,
                entity_state_racing_writers_exactly_one_wins,
                entity_state_keys_are_independent,
                presence_empty_window_is_all_zero,
                presence_figures_match_hand_computed_scenarios,
                presence_window_bounds_and_segment_filter,
                presence_duplicate_append_changes_nothing,
                presence_window_across_midnight,
                presence_samples_round_trip_all_fields,
                presence_concurrent_appends_are_all_visible,
                presence_invalid_windows_are_typed_errors,
                audit_append_then_query_round_trips,
                audit_append_is_idempotent,
                audit_paging_visits_every_event_once_in_order,
                audit_time_range_and_entity_filter,
                audit_paging_across_months,
                audit_full_last_page_has_no_next_cursor,
                audit_cursor_outside_the_window_is_clamped,
                audit_invalid_page_requests_are_typed_errors,
                messages_empty_conversation_is_an_empty_page,
                messages_paging_visits_a_conversation_newest_first,
                messages_paging_across_months,
                messages_append_is_idempotent,
                messages_reused_id_refuses_the_whole_batch,
                messages_invalid_inputs_are_typed_errors,
                ledger_journal_append_then_replay_in_pages,
                ledger_journal_identical_reappend_is_stored_once,
                ledger_journal_conflict_refuses_the_whole_batch,
                ledger_journal_largest_batch_is_all_or_nothing,
                ledger_journal_invalid_inputs_are_typed_errors,
                ledger_journal_last_sequence_follows_appends,
                ledger_journal_ledgers_are_independent,
                ledger_journal_concurrent_identical_appends_converge,
                ledger_journal_random_appends_match_a_model,
            ]
        );
    };
    (@cases $backend:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = $open(stringify!($case)).await else {
                        return;
                    };
                    super::cases::$case(&harness.stores).await;
                    harness.cleanup().await;
                }
            )*
        }
    };
}

storage_conformance_suite!(sqlite, crate::harness::open_sqlite);
storage_conformance_suite!(scylla, crate::harness::open_scylla);

/// 2026-11-20T00:00:00Z: a base instant for the cases.
const BASE_UNIX_MS: i64 = 1_795_132_800_000;
const DAY_MS: i64 = 86_400_000;

fn state(epoch: u64, version: u64, bytes: &[u8]) -> StoredEntityState {
    StoredEntityState {
        version: StateVersion::new(epoch, version),
        state: bytes.to_vec(),
    }
}

fn sample(
    segment: &str,
    at_offset_ms: i64,
    account: &str,
    octet: u8,
    event: PresenceEvent,
) -> PresenceSample {
    PresenceSample {
        segment: segment.to_owned(),
        address: IpAddr::from([10, 1, 2, octet]),
        account: account.to_owned(),
        event,
        at_unix_ms: BASE_UNIX_MS + at_offset_ms,
    }
}

fn audit_event(entity: &EntityKey, at_unix_ms: i64, action: &str) -> AuditEvent {
    AuditEvent {
        event_id: Uuid::now_v7(),
        actor: "operator:ops".to_owned(),
        entity: entity.clone(),
        action: action.to_owned(),
        detail: action.as_bytes().to_vec(),
        at_unix_ms,
        msg_id_opt: Some(Uuid::now_v7()),
    }
}

/// Follows `next_cursor_opt` until the end; returns every page's items.
async fn all_pages(
    stores: &Stores,
    entity: &EntityKey,
    from_unix_ms: i64,
    to_unix_ms: i64,
    limit: u32,
) -> Vec<Vec<AuditEvent>> {
    let mut pages = Vec::new();
    let mut cursor_opt = None;
    loop {
        let page = stores
            .audit
            .query(
                entity,
                from_unix_ms,
                to_unix_ms,
                PageRequest { limit, cursor_opt },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= limit as usize);
        pages.push(page.items);
        match page.next_cursor_opt {
            Some(next) => cursor_opt = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 1000, "paging does not terminate");
    }
}

/// Sort order promised by the audit store: time, then event id bytes.
fn sorted_by_time_then_id(mut events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    events.sort_by(|left, right| {
        (left.at_unix_ms, left.event_id.as_bytes())
            .cmp(&(right.at_unix_ms, right.event_id.as_bytes()))
    });
    events
}

/// A message with a random (v4) id, so ids of the same millisecond sort in no particular
/// creation order.
fn chat_message(sender: &str, recipient: &str, sent_at_unix_ms: i64, text: &str) -> ChatMessage {
    ChatMessage {
        message_id: Uuid::new_v4(),
        sender: sender.to_owned(),
        recipient: recipient.to_owned(),
        text: text.to_owned(),
        sent_at_unix_ms,
    }
}

/// Follows `next_cursor_opt` through a conversation until the end; returns every page's items.
async fn all_message_pages(
    stores: &Stores,
    account_a: &str,
    account_b: &str,
    limit: u32,
) -> Vec<Vec<ChatMessage>> {
    let mut pages = Vec::new();
    let mut cursor_opt = None;
    loop {
        let page = stores
            .messages
            .conversation(account_a, account_b, PageRequest { limit, cursor_opt })
            .await
            .unwrap();
        assert!(page.items.len() <= limit as usize);
        pages.push(page.items);
        match page.next_cursor_opt {
            Some(next) => cursor_opt = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 1000, "paging does not terminate");
    }
}

/// A journal record whose time and body derive from its sequence and `tag`.
fn journal_record(sequence: u64, tag: &str) -> JournalRecord {
    JournalRecord {
        sequence,
        at_unix_ms: BASE_UNIX_MS + i64::try_from(sequence % 1_000_000_000).unwrap(),
        body: format!("{tag}-{sequence}").into_bytes(),
    }
}

/// [`journal_record`] for each sequence.
fn journal_records(sequences: impl IntoIterator<Item = u64>, tag: &str) -> Vec<JournalRecord> {
    sequences
        .into_iter()
        .map(|sequence| journal_record(sequence, tag))
        .collect()
}

/// Replays a journal from the start, `limit` records at a time, until a short page; returns
/// every page. Each page must be ascending and follow the previous one.
async fn replay_pages(stores: &Stores, ledger_id: &str, limit: u32) -> Vec<Vec<JournalRecord>> {
    let mut pages = Vec::new();
    let mut after_sequence = 0;
    loop {
        let page = stores
            .ledger_journal
            .read(ledger_id, after_sequence, limit)
            .await
            .unwrap();
        assert!(page.len() <= limit as usize);
        let mut previous = after_sequence;
        for record in &page {
            assert!(record.sequence > previous, "{ledger_id}: {page:?}");
            previous = record.sequence;
        }
        let is_last = page.len() < limit as usize;
        after_sequence = previous;
        pages.push(page);
        if is_last {
            return pages;
        }
        assert!(pages.len() < 10_000, "replay does not terminate");
    }
}

/// The whole journal of `ledger_id`.
async fn replay(stores: &Stores, ledger_id: &str) -> Vec<JournalRecord> {
    replay_pages(stores, ledger_id, MAX_JOURNAL_READ_LIMIT)
        .await
        .concat()
}

/// Asserts that `error` is a journal conflict on `sequence` of `ledger_id`.
fn assert_journal_conflict(error: &StoreError, ledger_id: &str, sequence: u64) {
    assert!(
        matches!(
            error,
            StoreError::JournalConflict { ledger_id: conflict_ledger_id, sequence: conflict_sequence }
                if conflict_ledger_id == ledger_id && *conflict_sequence == sequence
        ),
        "expected a conflict on {ledger_id} {sequence}, got {error:?}"
    );
}

/// Order promised by the message store: newest first, then message id bytes descending.
fn newest_first(mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    messages.sort_by(|left, right| {
        (right.sent_at_unix_ms, right.message_id.as_bytes())
            .cmp(&(left.sent_at_unix_ms, left.message_id.as_bytes()))
    });
    messages
}

mod cases {
    use super::*;

    pub async fn entity_state_load_of_missing_entity_is_none(stores: &Stores) {
        let key = EntityKey::new("user", "nobody");
        assert_eq!(stores.entity_state.load(&key).await.unwrap(), None);
    }

    pub async fn entity_state_first_save_then_updates_round_trip(stores: &Stores) {
        let key = EntityKey::new("user", "alice");
        stores
            .entity_state
            .compare_and_set(&key, None, state(1, 1, b"v1"))
            .await
            .unwrap();
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(1, 1, b"v1"))
        );
        stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 1)), state(1, 2, b"v2"))
            .await
            .unwrap();
        let big = vec![7_u8; 256 * 1024];
        stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 2)), state(1, 3, &big))
            .await
            .unwrap();
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(1, 3, &big))
        );
        // The whole u64 range is usable.
        stores
            .entity_state
            .compare_and_set(
                &key,
                Some(StateVersion::new(1, 3)),
                state(u64::MAX, u64::MAX, b"max"),
            )
            .await
            .unwrap();
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(u64::MAX, u64::MAX, b"max"))
        );
    }

    pub async fn entity_state_conflict_reports_current_version(stores: &Stores) {
        let key = EntityKey::new("gateway", "g-1");
        stores
            .entity_state
            .compare_and_set(&key, None, state(1, 1, b"first"))
            .await
            .unwrap();

        let error = stores
            .entity_state
            .compare_and_set(&key, None, state(1, 1, b"again"))
            .await
            .unwrap_err();
        match error {
            StoreError::Conflict {
                key: conflict_key,
                expected_opt,
                current_opt,
            } => {
                assert_eq!(conflict_key, key);
                assert_eq!(expected_opt, None);
                assert_eq!(current_opt, Some(StateVersion::new(1, 1)));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        let error = stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 5)), state(1, 6, b"stale"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Conflict { current_opt: Some(current), expected_opt: Some(expected), .. }
                    if current == StateVersion::new(1, 1) && expected == StateVersion::new(1, 5)
            ),
            "{error:?}"
        );
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(1, 1, b"first"))
        );
    }

    pub async fn entity_state_update_of_missing_entity_conflicts_with_none(stores: &Stores) {
        let key = EntityKey::new("share", "never-saved");
        let error = stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 1)), state(1, 2, b"x"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Conflict {
                    current_opt: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(stores.entity_state.load(&key).await.unwrap(), None);
    }

    pub async fn entity_state_stale_epoch_is_fenced(stores: &Stores) {
        let key = EntityKey::new("ledger", "campaign-1:gateway-9");
        // Owner A (epoch 1) saves twice.
        stores
            .entity_state
            .compare_and_set(&key, None, state(1, 1, b"a1"))
            .await
            .unwrap();
        stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 1)), state(1, 2, b"a2"))
            .await
            .unwrap();
        // Owner B takes over with epoch 2 after loading A's latest state.
        let loaded = stores.entity_state.load(&key).await.unwrap().unwrap();
        stores
            .entity_state
            .compare_and_set(&key, Some(loaded.version), state(2, 1, b"b1"))
            .await
            .unwrap();
        // A, unaware, saves on top of what it last wrote: fenced.
        let error = stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(1, 2)), state(1, 3, b"a3"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Conflict { current_opt: Some(current), .. }
                    if current == StateVersion::new(2, 1)
            ),
            "{error:?}"
        );
        // B continues normally.
        stores
            .entity_state
            .compare_and_set(&key, Some(StateVersion::new(2, 1)), state(2, 2, b"b2"))
            .await
            .unwrap();
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(2, 2, b"b2"))
        );
    }

    pub async fn entity_state_non_increasing_version_is_rejected(stores: &Stores) {
        let key = EntityKey::new("user", "bob");
        stores
            .entity_state
            .compare_and_set(&key, None, state(2, 5, b"x"))
            .await
            .unwrap();
        for new in [
            StateVersion::new(2, 5),
            StateVersion::new(2, 4),
            StateVersion::new(1, 9),
        ] {
            let error = stores
                .entity_state
                .compare_and_set(
                    &key,
                    Some(StateVersion::new(2, 5)),
                    StoredEntityState {
                        version: new,
                        state: b"y".to_vec(),
                    },
                )
                .await
                .unwrap_err();
            assert!(
                matches!(error, StoreError::NonIncreasingVersion { new: rejected, .. } if rejected == new),
                "{error:?}"
            );
        }
        assert_eq!(
            stores.entity_state.load(&key).await.unwrap(),
            Some(state(2, 5, b"x"))
        );
    }

    pub async fn entity_state_racing_writers_exactly_one_wins(stores: &Stores) {
        for round in 0..20_u64 {
            let key = EntityKey::new("user", format!("racer-{round}"));
            // Round 0.. alternates between racing on a missing row and on an existing one.
            let expected_opt = if round % 2 == 0 {
                None
            } else {
                stores
                    .entity_state
                    .compare_and_set(&key, None, state(1, 1, b"base"))
                    .await
                    .unwrap();
                Some(StateVersion::new(1, 1))
            };
            let barrier = Arc::new(Barrier::new(2));
            let writers: Vec<_> = [(2_u64, b"writer-a"), (3_u64, b"writer-b")]
                .into_iter()
                .map(|(epoch, bytes)| {
                    let store = Arc::clone(&stores.entity_state);
                    let key = key.clone();
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let outcome = store
                            .compare_and_set(&key, expected_opt, state(epoch, 1, bytes))
                            .await;
                        (epoch, bytes, outcome)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut losers = Vec::new();
            for writer in writers {
                let (epoch, bytes, outcome) = writer.await.unwrap();
                match outcome {
                    Ok(()) => winners.push((epoch, bytes)),
                    Err(StoreError::Conflict { current_opt, .. }) => losers.push(current_opt),
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let (winner_epoch, winner_bytes) = winners[0];
            assert_eq!(losers, vec![Some(StateVersion::new(winner_epoch, 1))]);
            assert_eq!(
                stores.entity_state.load(&key).await.unwrap(),
                Some(state(winner_epoch, 1, winner_bytes))
            );
        }
    }

    pub async fn entity_state_keys_are_independent(stores: &Stores) {
        let user = EntityKey::new("user", "same-id");
        let gateway = EntityKey::new("gateway", "same-id");
        stores
            .entity_state
            .compare_and_set(&user, None, state(1, 1, b"user"))
            .await
            .unwrap();
        stores
            .entity_state
            .compare_and_set(&gateway, None, state(7, 7, b"gateway"))
            .await
            .unwrap();
        assert_eq!(
            stores.entity_state.load(&user).await.unwrap(),
            Some(state(1, 1, b"user"))
        );
        assert_eq!(
            stores.entity_state.load(&gateway).await.unwrap(),
            Some(state(7, 7, b"gateway"))
        );
    }

    async fn check_figures(
        stores: &Stores,
        segment: &str,
        (from_offset_ms, to_offset_ms): (i64, i64),
        expected: (u64, u64, u64, u64),
    ) {
        let figures = stores
            .presence
            .window_figures(
                segment,
                BASE_UNIX_MS + from_offset_ms,
                BASE_UNIX_MS + to_offset_ms,
            )
            .await
            .unwrap();
        let (n_logins, n_distinct_accounts, peak_concurrent, online_ms) = expected;
        assert_eq!(
            figures,
            SegmentWindowFigures {
                n_logins,
                n_distinct_accounts,
                peak_concurrent,
                online_ms
            },
            "segment {segment}, window {from_offset_ms}..{to_offset_ms}"
        );
    }

    pub async fn presence_empty_window_is_all_zero(stores: &Stores) {
        check_figures(stores, "10.9.9.0/24", (0, DAY_MS), (0, 0, 0, 0)).await;
    }

    pub async fn presence_figures_match_hand_computed_scenarios(stores: &Stores) {
        use PresenceEvent::{Login, Logout, SessionEnd};
        // Scenario 1, segment A, window [0, 10_000):
        //   a@1: login 1_000, logout 4_000            -> [1_000, 4_000)   3_000 ms
        //   b@2: login 2_000, session end 2_500       -> [2_000, 2_500)     500 ms
        //   c@3: login 3_000, never leaves            -> [3_000, 10_000)  7_000 ms
        //   a@4: login 3_500 (same account, 2nd host) -> [3_500, 10_000)  6_500 ms
        //   peak: at 3_500..4_000 a@1, c@3, a@4 -> 3 (b left at 2_500)
        //   logins 4, accounts {a, b, c} = 3, online 17_000
        let segment_a = "10.1.2.0/24";
        stores
            .presence
            .append(vec![
                sample(segment_a, 1_000, "a", 1, Login),
                sample(segment_a, 2_000, "b", 2, Login),
                sample(segment_a, 2_500, "b", 2, SessionEnd),
                sample(segment_a, 3_000, "c", 3, Login),
                sample(segment_a, 3_500, "a", 4, Login),
                sample(segment_a, 4_000, "a", 1, Logout),
            ])
            .await
            .unwrap();
        check_figures(stores, segment_a, (0, 10_000), (4, 3, 3, 17_000)).await;
        // The same samples through a narrower window [2_200, 3_200):
        //   b's close at 2_500 has no login inside -> [2_200, 2_500)  300
        //   c opens at 3_000                        -> [3_000, 3_200)  200
        //   a@1's login (1_000) and logout (4_000) are outside: invisible
        //   peak 1, logins 1 (c), accounts {b, c}, online 500
        check_figures(stores, segment_a, (2_200, 3_200), (1, 2, 1, 500)).await;

        // Scenario 2, segment B: a reconnect at the same instant and a late orphan logout.
        //   d@5: login 0, session end 5_000 + login 5_000 (replaced), logout 8_000 -> [0, 8_000)
        //   e@6: logout 6_000 with no login in the window -> [0, 6_000)
        //   peak 2 over [0, 6_000), logins 2, accounts 2, online 14_000
        let segment_b = "192.168.7.0/24";
        stores
            .presence
            .append(vec![
                sample(segment_b, 0, "d", 5, Login),
                sample(segment_b, 5_000, "d", 5, SessionEnd),
                sample(segment_b, 5_000, "d", 5, Login),
                sample(segment_b, 6_000, "e", 6, Logout),
                sample(segment_b, 8_000, "d", 5, Logout),
            ])
            .await
            .unwrap();
        check_figures(stores, segment_b, (0, 10_000), (2, 2, 2, 14_000)).await;
    }

    pub async fn presence_window_bounds_and_segment_filter(stores: &Stores) {
        use PresenceEvent::Login;
        let segment = "10.50.0.0/16";
        stores
            .presence
            .append(vec![
                sample(segment, 999, "before", 1, Login),
                sample(segment, 1_000, "at-from", 2, Login),
                sample(segment, 1_999, "last-ms", 3, Login),
                sample(segment, 2_000, "at-to", 4, Login),
                sample("10.51.0.0/16", 1_500, "other-segment", 5, Login),
            ])
            .await
            .unwrap();
        // [1_000, 2_000): at-from online 1_000 ms, last-ms online 1 ms.
        check_figures(stores, segment, (1_000, 2_000), (2, 2, 2, 1_001)).await;
        let samples = stores
            .presence
            .samples_in_window(segment, BASE_UNIX_MS + 1_000, BASE_UNIX_MS + 2_000)
            .await
            .unwrap();
        let accounts: BTreeSet<String> = samples.into_iter().map(|s| s.account).collect();
        assert_eq!(
            accounts,
            BTreeSet::from(["at-from".to_owned(), "last-ms".to_owned()])
        );
    }

    pub async fn presence_duplicate_append_changes_nothing(stores: &Stores) {
        use PresenceEvent::{Login, Logout};
        let segment = "172.16.0.0/24";
        let batch = vec![
            sample(segment, 100, "a", 1, Login),
            sample(segment, 300, "a", 1, Logout),
            sample(segment, 200, "b", 2, Login),
        ];
        stores.presence.append(batch.clone()).await.unwrap();
        check_figures(stores, segment, (0, 1_000), (2, 2, 2, 200 + 800)).await;
        stores.presence.append(batch).await.unwrap();
        check_figures(stores, segment, (0, 1_000), (2, 2, 2, 200 + 800)).await;
    }

    pub async fn presence_window_across_midnight(stores: &Stores) {
        use PresenceEvent::{Login, Logout};
        // BASE is a UTC midnight: a session from 23:00 to 01:00 spans two day buckets.
        let segment = "10.77.0.0/24";
        let hour_ms = 3_600_000;
        stores
            .presence
            .append(vec![
                sample(segment, -hour_ms, "night", 1, Login),
                sample(segment, hour_ms, "night", 1, Logout),
                sample(segment, DAY_MS + 5, "next-day", 2, Login),
            ])
            .await
            .unwrap();
        check_figures(
            stores,
            segment,
            (-2 * hour_ms, 2 * hour_ms),
            (1, 1, 1, 2 * hour_ms as u64),
        )
        .await;
        // Three days [-1 day, 2 days): night 2h, next-day from DAY+5 to 2 days.
        check_figures(
            stores,
            segment,
            (-DAY_MS, 2 * DAY_MS),
            (2, 2, 1, 2 * hour_ms as u64 + (DAY_MS - 5) as u64),
        )
        .await;
    }

    pub async fn presence_samples_round_trip_all_fields(stores: &Stores) {
        let segment = "2001:db8::/64";
        let written = vec![
            PresenceSample {
                segment: segment.to_owned(),
                address: "2001:db8::1".parse().unwrap(),
                account: "ünïcode-account".to_owned(),
                event: PresenceEvent::Login,
                at_unix_ms: BASE_UNIX_MS + 1,
            },
            PresenceSample {
                segment: segment.to_owned(),
                address: "2001:db8::2".parse().unwrap(),
                account: "x".to_owned(),
                event: PresenceEvent::SessionEnd,
                at_unix_ms: BASE_UNIX_MS + 2,
            },
            PresenceSample {
                segment: segment.to_owned(),
                address: "2001:db8::2".parse().unwrap(),
                account: "x".to_owned(),
                event: PresenceEvent::Logout,
                at_unix_ms: BASE_UNIX_MS + 3,
            },
        ];
        stores.presence.append(written.clone()).await.unwrap();
        stores.presence.append(Vec::new()).await.unwrap();
        let mut read = stores
            .presence
            .samples_in_window(segment, BASE_UNIX_MS, BASE_UNIX_MS + 10)
            .await
            .unwrap();
        read.sort_by_key(|sample| sample.at_unix_ms);
        assert_eq!(read, written);
    }

    pub async fn presence_concurrent_appends_are_all_visible(stores: &Stores) {
        let segment = "10.88.0.0/24";
        let writers: Vec<_> = (0..8_u8)
            .map(|writer| {
                let store = Arc::clone(&stores.presence);
                tokio::spawn(async move {
                    for batch in 0..5_i64 {
                        let samples = (0..10_i64)
                            .map(|index| {
                                sample(
                                    segment,
                                    batch * 100 + index,
                                    &format!("w{writer}-b{batch}-i{index}"),
                                    writer,
                                    PresenceEvent::Login,
                                )
                            })
                            .collect();
                        store.append(samples).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let figures = stores
            .presence
            .window_figures(segment, BASE_UNIX_MS, BASE_UNIX_MS + 1_000)
            .await
            .unwrap();
        assert_eq!(figures.n_logins, 400);
        assert_eq!(figures.n_distinct_accounts, 400);
        assert_eq!(figures.peak_concurrent, 400);
    }

    pub async fn presence_invalid_windows_are_typed_errors(stores: &Stores) {
        let error = stores
            .presence
            .window_figures("10.0.0.0/8", BASE_UNIX_MS + 1, BASE_UNIX_MS)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidWindow { .. }),
            "{error:?}"
        );
        let error = stores
            .presence
            .samples_in_window("10.0.0.0/8", 0, 400 * DAY_MS)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::WindowTooLong { max_days: 366, .. }),
            "{error:?}"
        );
    }

    pub async fn audit_append_then_query_round_trips(stores: &Stores) {
        let entity = EntityKey::new("campaign", "c-1");
        let mut without_msg = audit_event(&entity, BASE_UNIX_MS + 10, "campaign.created");
        without_msg.msg_id_opt = None;
        without_msg.detail = vec![0, 159, 146, 150, 255];
        let with_msg = audit_event(&entity, BASE_UNIX_MS + 20, "campaign.started");
        stores
            .audit
            .append(vec![with_msg.clone(), without_msg.clone()])
            .await
            .unwrap();
        stores.audit.append(Vec::new()).await.unwrap();
        let page = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS,
                BASE_UNIX_MS + 1_000,
                PageRequest::first(10),
            )
            .await
            .unwrap();
        assert_eq!(page.items, vec![without_msg, with_msg]);
        assert_eq!(page.next_cursor_opt, None);
    }

    pub async fn audit_append_is_idempotent(stores: &Stores) {
        let entity = EntityKey::new("ledger", "l-1");
        let first = audit_event(&entity, BASE_UNIX_MS + 1, "quota.claimed");
        let second = audit_event(&entity, BASE_UNIX_MS + 2, "quota.posted");
        stores
            .audit
            .append(vec![first.clone(), first.clone()])
            .await
            .unwrap();
        stores
            .audit
            .append(vec![first.clone(), second.clone()])
            .await
            .unwrap();
        stores.audit.append(vec![second.clone()]).await.unwrap();
        let page = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS,
                BASE_UNIX_MS + 10,
                PageRequest::first(100),
            )
            .await
            .unwrap();
        assert_eq!(page.items, vec![first, second]);
    }

    pub async fn audit_paging_visits_every_event_once_in_order(stores: &Stores) {
        let entity = EntityKey::new("user", "paged");
        // 25 events on 9 distinct instants: ties must be ordered by event id and never split
        // or repeated across pages.
        let events: Vec<AuditEvent> = (0..25_i64)
            .map(|index| audit_event(&entity, BASE_UNIX_MS + (index % 9) * 1_000, "user.updated"))
            .collect();
        // Append in two calls and in reverse order: storage order must not matter.
        let (head, tail) = events.split_at(12);
        stores
            .audit
            .append(tail.iter().rev().cloned().collect())
            .await
            .unwrap();
        stores.audit.append(head.to_vec()).await.unwrap();

        let pages = all_pages(stores, &entity, BASE_UNIX_MS, BASE_UNIX_MS + DAY_MS, 7).await;
        let page_sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(page_sizes, vec![7, 7, 7, 4]);
        let visited: Vec<AuditEvent> = pages.into_iter().flatten().collect();
        assert_eq!(visited, sorted_by_time_then_id(events));
    }

    pub async fn audit_time_range_and_entity_filter(stores: &Stores) {
        let entity = EntityKey::new("gateway", "gw-7");
        let other = EntityKey::new("gateway", "gw-8");
        let before = audit_event(&entity, BASE_UNIX_MS - 1, "before");
        let at_from = audit_event(&entity, BASE_UNIX_MS, "at-from");
        let inside = audit_event(&entity, BASE_UNIX_MS + 500, "inside");
        let at_to = audit_event(&entity, BASE_UNIX_MS + 1_000, "at-to");
        let other_entity = audit_event(&other, BASE_UNIX_MS + 500, "other");
        stores
            .audit
            .append(vec![
                before,
                at_from.clone(),
                inside.clone(),
                at_to,
                other_entity,
            ])
            .await
            .unwrap();
        let page = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS,
                BASE_UNIX_MS + 1_000,
                PageRequest::first(50),
            )
            .await
            .unwrap();
        assert_eq!(page.items, vec![at_from, inside]);
        let empty = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS + 1,
                BASE_UNIX_MS + 1,
                PageRequest::first(50),
            )
            .await
            .unwrap();
        assert!(empty.items.is_empty() && empty.next_cursor_opt.is_none());
    }

    pub async fn audit_paging_across_months(stores: &Stores) {
        let entity = EntityKey::new("share", "s-months");
        // Three events in each of November, December 2026 and February 2027 (January empty).
        let months_ms = [0, 20 * DAY_MS, 80 * DAY_MS];
        let mut events = Vec::new();
        for month_start in months_ms {
            for index in 0..3 {
                events.push(audit_event(
                    &entity,
                    BASE_UNIX_MS + month_start + index,
                    "share.used",
                ));
            }
        }
        stores.audit.append(events.clone()).await.unwrap();
        let pages = all_pages(
            stores,
            &entity,
            BASE_UNIX_MS - DAY_MS,
            BASE_UNIX_MS + 100 * DAY_MS,
            2,
        )
        .await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 2, 2, 1]
        );
        let visited: Vec<AuditEvent> = pages.into_iter().flatten().collect();
        assert_eq!(visited, sorted_by_time_then_id(events.clone()));
        // A window starting in December sees December and February only.
        let december_on = all_pages(
            stores,
            &entity,
            BASE_UNIX_MS + 20 * DAY_MS,
            BASE_UNIX_MS + 100 * DAY_MS,
            10,
        )
        .await
        .concat();
        assert_eq!(december_on, sorted_by_time_then_id(events)[3..].to_vec());
    }

    pub async fn audit_full_last_page_has_no_next_cursor(stores: &Stores) {
        let entity = EntityKey::new("user", "exact");
        let events: Vec<AuditEvent> = (0..4_i64)
            .map(|index| audit_event(&entity, BASE_UNIX_MS + index, "user.updated"))
            .collect();
        stores.audit.append(events.clone()).await.unwrap();
        let page = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS,
                BASE_UNIX_MS + 10,
                PageRequest::first(4),
            )
            .await
            .unwrap();
        assert_eq!(page.items, events);
        assert_eq!(page.next_cursor_opt, None);
        let pages = all_pages(stores, &entity, BASE_UNIX_MS, BASE_UNIX_MS + 10, 2).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
    }

    pub async fn audit_cursor_outside_the_window_is_clamped(stores: &Stores) {
        let entity = EntityKey::new("user", "clamped");
        let events: Vec<AuditEvent> = (0..6_i64)
            .map(|index| audit_event(&entity, BASE_UNIX_MS + index * 1_000, "user.updated"))
            .collect();
        stores.audit.append(events.clone()).await.unwrap();
        // A cursor after the third event (at +2_000).
        let first_page = stores
            .audit
            .query(
                &entity,
                BASE_UNIX_MS,
                BASE_UNIX_MS + 10_000,
                PageRequest::first(3),
            )
            .await
            .unwrap();
        let cursor = first_page.next_cursor_opt.unwrap();
        let with_cursor = |from_offset_ms: i64, to_offset_ms: i64| {
            let store = Arc::clone(&stores.audit);
            let entity = entity.clone();
            let cursor = cursor.clone();
            async move {
                store
                    .query(
                        &entity,
                        BASE_UNIX_MS + from_offset_ms,
                        BASE_UNIX_MS + to_offset_ms,
                        PageRequest {
                            limit: 10,
                            cursor_opt: Some(cursor),
                        },
                    )
                    .await
                    .unwrap()
            }
        };
        // The window ends at the cursor: nothing is left.
        let page = with_cursor(0, 2_001).await;
        assert!(
            page.items.is_empty() && page.next_cursor_opt.is_none(),
            "{page:?}"
        );
        // The window starts after the cursor: the window's start wins.
        let page = with_cursor(4_000, 10_000).await;
        assert_eq!(page.items, events[4..].to_vec());
        // The cursor inside the window: strictly after it.
        let page = with_cursor(0, 10_000).await;
        assert_eq!(page.items, events[3..].to_vec());
    }

    pub async fn audit_invalid_page_requests_are_typed_errors(stores: &Stores) {
        let entity = EntityKey::new("user", "invalid");
        let query = |page: PageRequest| {
            let store = Arc::clone(&stores.audit);
            let entity = entity.clone();
            async move { store.query(&entity, 0, 10, page).await.unwrap_err() }
        };
        let error = query(PageRequest::first(0)).await;
        assert!(
            matches!(error, StoreError::InvalidPageLimit { limit: 0, .. }),
            "{error:?}"
        );
        let error = query(PageRequest::first(MAX_PAGE_LIMIT + 1)).await;
        assert!(
            matches!(error, StoreError::InvalidPageLimit { .. }),
            "{error:?}"
        );
        let error = query(PageRequest {
            limit: 10,
            cursor_opt: Some(PageCursor::from_string("not-a-cursor".to_owned())),
        })
        .await;
        assert!(
            matches!(error, StoreError::InvalidCursor { .. }),
            "{error:?}"
        );
        let error = stores
            .audit
            .query(&entity, 10, 0, PageRequest::first(1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidWindow { .. }),
            "{error:?}"
        );
    }

    pub async fn messages_empty_conversation_is_an_empty_page(stores: &Stores) {
        stores
            .messages
            .append(vec![chat_message("alice", "bob", BASE_UNIX_MS, "hi")])
            .await
            .unwrap();
        stores.messages.append(Vec::new()).await.unwrap();
        for (account_a, account_b) in [("alice", "carol"), ("nobody", "no-one")] {
            let page = stores
                .messages
                .conversation(account_a, account_b, PageRequest::first(10))
                .await
                .unwrap();
            assert!(
                page.items.is_empty() && page.next_cursor_opt.is_none(),
                "{page:?}"
            );
        }
    }

    pub async fn messages_paging_visits_a_conversation_newest_first(stores: &Stores) {
        // 25 messages in both directions on 9 distinct instants a week apart (so they span
        // November 2026 to January 2027): ties must be ordered by id and never split or
        // repeated across pages.
        let conversation: Vec<ChatMessage> = (0..25_i64)
            .map(|index| {
                let (sender, recipient) = if index % 2 == 0 {
                    ("alice", "bob")
                } else {
                    ("bob", "alice")
                };
                let sent_at_unix_ms = BASE_UNIX_MS + (index % 9) * 7 * DAY_MS;
                chat_message(
                    sender,
                    recipient,
                    sent_at_unix_ms,
                    &format!("message {index}"),
                )
            })
            .collect();
        // Neighbouring conversations, including account ids that concatenate alike.
        let others = [
            chat_message("alice", "carol", BASE_UNIX_MS + 1, "to carol"),
            chat_message("carol", "bob", BASE_UNIX_MS + 2, "from carol"),
            chat_message("alic", "ebob", BASE_UNIX_MS + 3, "look-alike"),
            chat_message("bob", "bobby", BASE_UNIX_MS + 4, "prefix"),
        ];
        // Append in two calls and in reverse order: storage order must not matter.
        let (head, tail) = conversation.split_at(12);
        let mut first_call: Vec<ChatMessage> = tail.iter().rev().cloned().collect();
        first_call.extend(others.iter().cloned());
        stores.messages.append(first_call).await.unwrap();
        stores.messages.append(head.to_vec()).await.unwrap();

        let expected = newest_first(conversation);
        let pages = all_message_pages(stores, "alice", "bob", 10).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(pages.concat(), expected);
        assert_eq!(all_message_pages(stores, "bob", "alice", 10).await, pages);
        // A full last page has no next cursor.
        let single = all_message_pages(stores, "bob", "alice", 25).await;
        assert_eq!(single, vec![expected.clone()]);
        // A cursor works with either argument order.
        let first_page = stores
            .messages
            .conversation("alice", "bob", PageRequest::first(10))
            .await
            .unwrap();
        let second_page = stores
            .messages
            .conversation(
                "bob",
                "alice",
                PageRequest {
                    limit: 10,
                    cursor_opt: first_page.next_cursor_opt,
                },
            )
            .await
            .unwrap();
        assert_eq!(second_page.items, expected[10..20].to_vec());

        let look_alike = all_message_pages(stores, "ebob", "alic", 10).await.concat();
        assert_eq!(look_alike, vec![others[2].clone()]);
        let carol_bob = all_message_pages(stores, "bob", "carol", 10).await.concat();
        assert_eq!(carol_bob, vec![others[1].clone()]);
    }

    pub async fn messages_paging_across_months(stores: &Stores) {
        // Three messages in each of November, December 2026 and February 2027 (January empty).
        let months_ms = [0, 20 * DAY_MS, 80 * DAY_MS];
        let mut messages = Vec::new();
        for month_start in months_ms {
            for index in 0..3 {
                messages.push(chat_message(
                    "dave",
                    "erin",
                    BASE_UNIX_MS + month_start + index,
                    "monthly",
                ));
            }
        }
        stores.messages.append(messages.clone()).await.unwrap();
        let pages = all_message_pages(stores, "erin", "dave", 2).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 2, 2, 1]
        );
        assert_eq!(pages.concat(), newest_first(messages));
    }

    pub async fn messages_append_is_idempotent(stores: &Stores) {
        let first = chat_message("frank", "grace", BASE_UNIX_MS + 1, "one");
        let second = chat_message("grace", "frank", BASE_UNIX_MS + 2, "two");
        let third = chat_message("frank", "grace", BASE_UNIX_MS + 2, "three");
        stores
            .messages
            .append(vec![first.clone(), first.clone()])
            .await
            .unwrap();
        stores
            .messages
            .append(vec![first.clone(), second.clone()])
            .await
            .unwrap();
        stores
            .messages
            .append(vec![second.clone(), third.clone()])
            .await
            .unwrap();
        stores.messages.append(vec![third.clone()]).await.unwrap();
        let page = stores
            .messages
            .conversation("frank", "grace", PageRequest::first(100))
            .await
            .unwrap();
        assert_eq!(page.items, newest_first(vec![first, second, third]));
        assert_eq!(page.next_cursor_opt, None);
    }

    pub async fn messages_reused_id_refuses_the_whole_batch(stores: &Stores) {
        let stored = chat_message("heidi", "ivan", BASE_UNIX_MS + 1, "original");
        stores.messages.append(vec![stored.clone()]).await.unwrap();
        let fresh = chat_message("heidi", "ivan", BASE_UNIX_MS + 2, "fresh");
        let elsewhere = chat_message("judy", "ivan", BASE_UNIX_MS + 3, "elsewhere");

        let reuses = [
            ChatMessage {
                text: "changed".to_owned(),
                ..stored.clone()
            },
            ChatMessage {
                sent_at_unix_ms: stored.sent_at_unix_ms + 1,
                ..stored.clone()
            },
            ChatMessage {
                sender: "ivan".to_owned(),
                recipient: "heidi".to_owned(),
                ..stored.clone()
            },
            ChatMessage {
                sender: "judy".to_owned(),
                ..stored.clone()
            },
        ];
        for reuse in reuses {
            let error = stores
                .messages
                .append(vec![fresh.clone(), elsewhere.clone(), reuse.clone()])
                .await
                .unwrap_err();
            assert!(
                matches!(error, StoreError::MessageIdReused { message_id } if message_id == stored.message_id),
                "{reuse:?}: {error:?}"
            );
        }
        // The same id twice in one batch with different texts.
        let twice = chat_message("heidi", "ivan", BASE_UNIX_MS + 4, "once");
        let error = stores
            .messages
            .append(vec![
                twice.clone(),
                ChatMessage {
                    text: "twice".to_owned(),
                    ..twice.clone()
                },
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::MessageIdReused { message_id } if message_id == twice.message_id),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "message id {} was already used for a different message",
                twice.message_id
            )
        );

        // Nothing of the refused batches is visible.
        let heidi_ivan = all_message_pages(stores, "heidi", "ivan", 10)
            .await
            .concat();
        assert_eq!(heidi_ivan, vec![stored.clone()]);
        let judy_ivan = all_message_pages(stores, "ivan", "judy", 10).await.concat();
        assert!(judy_ivan.is_empty(), "{judy_ivan:?}");

        // The refused batch's valid messages can still be appended unchanged.
        stores
            .messages
            .append(vec![fresh.clone(), elsewhere.clone()])
            .await
            .unwrap();
        let heidi_ivan = all_message_pages(stores, "ivan", "heidi", 10)
            .await
            .concat();
        assert_eq!(heidi_ivan, vec![fresh, stored]);
        let judy_ivan = all_message_pages(stores, "judy", "ivan", 10).await.concat();
        assert_eq!(judy_ivan, vec![elsewhere]);
    }

    pub async fn messages_invalid_inputs_are_typed_errors(stores: &Stores) {
        let valid = chat_message("mallory", "niaj", BASE_UNIX_MS, "valid");
        let invalid_messages = [
            (
                chat_message(
                    "mallory",
                    "niaj",
                    BASE_UNIX_MS,
                    &"x".repeat(MAX_MESSAGE_TEXT_BYTES + 1),
                ),
                "message.text",
            ),
            (
                chat_message("mallory", "mallory", BASE_UNIX_MS, "self"),
                "message.recipient",
            ),
            (
                chat_message("", "niaj", BASE_UNIX_MS, "anon"),
                "message.sender",
            ),
            (
                chat_message("mallory", "", BASE_UNIX_MS, "nobody"),
                "message.recipient",
            ),
            (
                chat_message("mal\u{1f}lory", "niaj", BASE_UNIX_MS, "separator"),
                "message.sender",
            ),
        ];
        for (invalid, expected_field) in invalid_messages {
            let error = stores
                .messages
                .append(vec![valid.clone(), invalid])
                .await
                .unwrap_err();
            assert!(
                matches!(error, StoreError::InvalidValue { field, .. } if field == expected_field),
                "{expected_field}: {error:?}"
            );
        }
        // The longest text is accepted; the valid messages of refused batches were not stored.
        let longest = chat_message(
            "niaj",
            "mallory",
            BASE_UNIX_MS + 1,
            &"é".repeat(MAX_MESSAGE_TEXT_BYTES / 2),
        );
        stores.messages.append(vec![longest.clone()]).await.unwrap();
        let page = stores
            .messages
            .conversation("mallory", "niaj", PageRequest::first(10))
            .await
            .unwrap();
        assert_eq!(page.items, vec![longest]);

        let conversation = |account_a: &'static str, account_b: &'static str, page| {
            let store = Arc::clone(&stores.messages);
            async move {
                store
                    .conversation(account_a, account_b, page)
                    .await
                    .unwrap_err()
            }
        };
        let error = conversation("mallory", "niaj", PageRequest::first(0)).await;
        assert!(
            matches!(error, StoreError::InvalidPageLimit { limit: 0, .. }),
            "{error:?}"
        );
        let error = conversation("mallory", "niaj", PageRequest::first(MAX_PAGE_LIMIT + 1)).await;
        assert!(
            matches!(error, StoreError::InvalidPageLimit { .. }),
            "{error:?}"
        );
        for bad_cursor in [
            "not-a-cursor",
            "m1.12",
            "m2.1.00000000000000000000000000000000",
            // An audit cursor is not a message cursor.
            "a1.1.00000000000000000000000000000000",
        ] {
            let error = conversation(
                "mallory",
                "niaj",
                PageRequest {
                    limit: 10,
                    cursor_opt: Some(PageCursor::from_string(bad_cursor.to_owned())),
                },
            )
            .await;
            assert!(
                matches!(&error, StoreError::InvalidCursor { cursor } if cursor == bad_cursor),
                "{error:?}"
            );
        }
        for (account_a, account_b) in [("mallory", "mallory"), ("", "niaj"), ("a\u{1f}b", "c")] {
            let error = conversation(account_a, account_b, PageRequest::first(10)).await;
            assert!(
                matches!(error, StoreError::InvalidValue { .. }),
                "{account_a:?} {account_b:?}: {error:?}"
            );
        }
    }

    pub async fn ledger_journal_append_then_replay_in_pages(stores: &Stores) {
        let ledger = "campaign-1/gateway-1";
        let mut records = journal_records(1..=25, "entry");
        // Every kind of body and time survives the round trip.
        records[0].body = Vec::new();
        records[1].body = (0..=255).collect();
        records[2].at_unix_ms = -1;
        records[3].at_unix_ms = i64::MIN;
        records[4].at_unix_ms = i64::MAX;
        records[6].body = vec![0xc1; MAX_JOURNAL_BODY_BYTES];
        // Appended in two calls.
        stores
            .ledger_journal
            .append(ledger, &records[..12])
            .await
            .unwrap();
        stores
            .ledger_journal
            .append(ledger, &records[12..])
            .await
            .unwrap();

        let pages = replay_pages(stores, ledger, 10).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(pages.concat(), records);
        // A full last page is followed by an empty one.
        let pages = replay_pages(stores, ledger, 25).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![25, 0]);
        assert_eq!(replay(stores, ledger).await, records);

        let read = |after_sequence: u64, limit: u32| {
            let store = Arc::clone(&stores.ledger_journal);
            async move { store.read(ledger, after_sequence, limit).await.unwrap() }
        };
        assert_eq!(read(7, 3).await, records[7..10].to_vec());
        assert_eq!(read(24, 1).await, records[24..].to_vec());
        assert_eq!(
            read(24, MAX_JOURNAL_READ_LIMIT).await,
            records[24..].to_vec()
        );
        for after_sequence in [25, 1_000, i64::MAX as u64 - 1, i64::MAX as u64, u64::MAX] {
            assert!(
                read(after_sequence, 10).await.is_empty(),
                "{after_sequence}"
            );
        }
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            25
        );
    }

    pub async fn ledger_journal_identical_reappend_is_stored_once(stores: &Stores) {
        let ledger = "campaign-2/gateway-1";
        let first = journal_records(1..=5, "entry");
        stores.ledger_journal.append(ledger, &first).await.unwrap();
        // The same batch again, an overlapping one, a superset and a single stored record.
        stores.ledger_journal.append(ledger, &first).await.unwrap();
        stores
            .ledger_journal
            .append(ledger, &journal_records(4..=8, "entry"))
            .await
            .unwrap();
        stores
            .ledger_journal
            .append(ledger, &journal_records(1..=8, "entry"))
            .await
            .unwrap();
        stores
            .ledger_journal
            .append(ledger, &journal_records([3], "entry"))
            .await
            .unwrap();
        stores.ledger_journal.append(ledger, &[]).await.unwrap();
        assert_eq!(
            replay(stores, ledger).await,
            journal_records(1..=8, "entry")
        );
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            8
        );
    }

    pub async fn ledger_journal_conflict_refuses_the_whole_batch(stores: &Stores) {
        let ledger = "campaign-3/gateway-1";
        stores
            .ledger_journal
            .append(ledger, &journal_records([1, 2, 3, 6], "stored"))
            .await
            .unwrap();
        let changed_body = |sequence: u64| journal_record(sequence, "changed");
        let changed_time = |sequence: u64| JournalRecord {
            at_unix_ms: journal_record(sequence, "stored").at_unix_ms + 1,
            ..journal_record(sequence, "stored")
        };
        let emptied = |sequence: u64| JournalRecord {
            body: Vec::new(),
            ..journal_record(sequence, "stored")
        };
        let new = |sequence: u64| journal_record(sequence, "new");
        let cases: Vec<(Vec<JournalRecord>, u64)> = vec![
            // The conflict after a new record, before one and alone.
            (vec![changed_body(3), new(4)], 3),
            (
                vec![journal_record(2, "stored"), changed_time(3), new(4)],
                3,
            ),
            (vec![emptied(1)], 1),
            (vec![new(4), new(5), changed_body(6)], 6),
            (vec![new(4), changed_time(6), new(7)], 6),
            // The lowest conflicting sequence is named.
            (vec![changed_body(2), changed_body(3)], 2),
        ];
        for (batch, conflicting_sequence) in cases {
            let error = stores
                .ledger_journal
                .append(ledger, &batch)
                .await
                .unwrap_err();
            assert_journal_conflict(&error, ledger, conflicting_sequence);
        }
        let error = stores
            .ledger_journal
            .append(ledger, &[changed_body(6)])
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "journal sequence 6 of ledger \"campaign-3/gateway-1\" is already stored with a \
             different time or body"
        );

        // Nothing of the refused batches was stored: not the new sequences 4, 5 and 7, not the
        // changed ones.
        assert_eq!(
            replay(stores, ledger).await,
            journal_records([1, 2, 3, 6], "stored")
        );
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            6
        );
        // The refused batches' new records can still be appended unchanged.
        stores
            .ledger_journal
            .append(
                ledger,
                &[new(4), new(5), journal_record(6, "stored"), new(7)],
            )
            .await
            .unwrap();
        let mut expected = journal_records([1, 2, 3], "stored");
        expected.extend([new(4), new(5), journal_record(6, "stored"), new(7)]);
        assert_eq!(replay(stores, ledger).await, expected);
    }

    pub async fn ledger_journal_largest_batch_is_all_or_nothing(stores: &Stores) {
        let ledger = "campaign-4/gateway-1";
        let max_batch = u64::try_from(MAX_JOURNAL_BATCH_RECORDS).unwrap();
        let mut batch = journal_records(1..=max_batch, "bulk");
        // A few largest bodies among small ones.
        for index in [0, 1, 500, MAX_JOURNAL_BATCH_RECORDS - 1] {
            batch[index].body = vec![u8::try_from(index % 251).unwrap(); MAX_JOURNAL_BODY_BYTES];
        }
        stores.ledger_journal.append(ledger, &batch).await.unwrap();
        // A retry of the whole batch stores nothing new.
        stores.ledger_journal.append(ledger, &batch).await.unwrap();

        // The next largest batch, whose last sequence is already stored with another body:
        // nothing of it is stored, not even the 1023 new records in front of the conflict.
        let last_sequence = 2 * max_batch;
        let stored_last = journal_record(last_sequence, "stored");
        stores
            .ledger_journal
            .append(ledger, std::slice::from_ref(&stored_last))
            .await
            .unwrap();
        let next_batch = journal_records(max_batch + 1..=last_sequence, "bulk");
        let error = stores
            .ledger_journal
            .append(ledger, &next_batch)
            .await
            .unwrap_err();
        assert_journal_conflict(&error, ledger, last_sequence);
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            last_sequence
        );
        let pages = replay_pages(stores, ledger, 300).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![300, 300, 300, 125]
        );
        let mut expected = batch;
        expected.push(stored_last);
        assert_eq!(pages.concat(), expected);
    }

    pub async fn ledger_journal_invalid_inputs_are_typed_errors(stores: &Stores) {
        let ledger = "campaign-5/gateway-1";
        let valid = journal_record(1, "valid");
        let too_long_ledger = "x".repeat(MAX_LEDGER_ID_BYTES + 1);
        let too_many = journal_records(
            1..=u64::try_from(MAX_JOURNAL_BATCH_RECORDS).unwrap() + 1,
            "many",
        );
        let cases: Vec<(&str, Vec<JournalRecord>, &str)> = vec![
            ("", vec![valid.clone()], "ledger_id"),
            ("", Vec::new(), "ledger_id"),
            (&too_long_ledger, vec![valid.clone()], "ledger_id"),
            (
                ledger,
                vec![valid.clone(), journal_record(0, "zero")],
                "record.sequence",
            ),
            (ledger, vec![journal_record(0, "zero")], "record.sequence"),
            (
                ledger,
                vec![valid.clone(), journal_record(1 << 63, "huge")],
                "record.sequence",
            ),
            (
                ledger,
                vec![
                    valid.clone(),
                    JournalRecord {
                        body: vec![0; MAX_JOURNAL_BODY_BYTES + 1],
                        ..journal_record(2, "big")
                    },
                ],
                "record.body",
            ),
            (ledger, too_many, "records"),
            (
                ledger,
                vec![
                    valid.clone(),
                    journal_record(3, "x"),
                    journal_record(2, "y"),
                ],
                "records",
            ),
            (ledger, vec![valid.clone(), valid.clone()], "records"),
        ];
        for (ledger_id, batch, expected_field) in cases {
            let error = stores
                .ledger_journal
                .append(ledger_id, &batch)
                .await
                .unwrap_err();
            assert!(
                matches!(error, StoreError::InvalidValue { field, .. } if field == expected_field),
                "{expected_field}: {error:?}"
            );
        }
        // Nothing of the refused batches was stored.
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            0
        );
        assert!(replay(stores, ledger).await.is_empty());

        // The limits themselves are accepted: the longest id (multi-byte), the largest sequence.
        let longest_ledger = "é".repeat(MAX_LEDGER_ID_BYTES / 2);
        let boundaries = [valid.clone(), journal_record(i64::MAX as u64, "last")];
        stores
            .ledger_journal
            .append(&longest_ledger, &boundaries)
            .await
            .unwrap();
        assert_eq!(replay(stores, &longest_ledger).await, boundaries.to_vec());
        assert_eq!(
            stores
                .ledger_journal
                .last_sequence(&longest_ledger)
                .await
                .unwrap(),
            i64::MAX as u64
        );
        assert_eq!(
            stores
                .ledger_journal
                .read(&longest_ledger, i64::MAX as u64 - 1, 5)
                .await
                .unwrap(),
            boundaries[1..].to_vec()
        );

        for limit in [0, MAX_JOURNAL_READ_LIMIT + 1, u32::MAX] {
            let error = stores
                .ledger_journal
                .read(ledger, 0, limit)
                .await
                .unwrap_err();
            assert!(
                matches!(error, StoreError::InvalidPageLimit { limit: refused, max } if refused == limit && max == MAX_JOURNAL_READ_LIMIT),
                "{limit}: {error:?}"
            );
        }
        for ledger_id in ["", too_long_ledger.as_str()] {
            let error = stores
                .ledger_journal
                .read(ledger_id, 0, 10)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    StoreError::InvalidValue {
                        field: "ledger_id",
                        ..
                    }
                ),
                "{error:?}"
            );
            let error = stores
                .ledger_journal
                .last_sequence(ledger_id)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    StoreError::InvalidValue {
                        field: "ledger_id",
                        ..
                    }
                ),
                "{error:?}"
            );
        }
    }

    pub async fn ledger_journal_last_sequence_follows_appends(stores: &Stores) {
        let ledger = "campaign-6/gateway-1";
        let last = |ledger_id: &'static str| {
            let store = Arc::clone(&stores.ledger_journal);
            async move { store.last_sequence(ledger_id).await.unwrap() }
        };
        assert_eq!(last(ledger).await, 0);
        stores
            .ledger_journal
            .append(ledger, &journal_records(1..=3, "entry"))
            .await
            .unwrap();
        assert_eq!(last(ledger).await, 3);
        // A refused append changes nothing.
        stores
            .ledger_journal
            .append(
                ledger,
                &[journal_record(4, "new"), journal_record(3, "changed")],
            )
            .await
            .unwrap_err();
        assert_eq!(last(ledger).await, 3);
        // The store keeps the sequences it is given (numbering is the ledger's job): the last
        // one is the highest stored, whatever the order of the appends.
        stores
            .ledger_journal
            .append(ledger, &journal_records([10], "entry"))
            .await
            .unwrap();
        assert_eq!(last(ledger).await, 10);
        stores
            .ledger_journal
            .append(ledger, &journal_records([5], "entry"))
            .await
            .unwrap();
        assert_eq!(last(ledger).await, 10);
        assert_eq!(
            replay(stores, ledger).await,
            journal_records([1, 2, 3, 5, 10], "entry")
        );
        // Ids that extend one another are other ledgers.
        assert_eq!(last("campaign-6/gateway-").await, 0);
        assert_eq!(last("campaign-6/gateway-10").await, 0);
    }

    pub async fn ledger_journal_ledgers_are_independent(stores: &Stores) {
        let ledgers = [
            "campaign-7/gateway-1",
            "campaign-7/gateway-10",
            "campaign-70/gateway-1",
            "Campaign-7/gateway-1",
        ];
        // The same sequences with different bodies in every ledger: no conflict.
        for (index, ledger) in ledgers.iter().enumerate() {
            let n_records = 3 + u64::try_from(index).unwrap();
            stores
                .ledger_journal
                .append(ledger, &journal_records(1..=n_records, ledger))
                .await
                .unwrap();
        }
        for (index, ledger) in ledgers.iter().enumerate() {
            let n_records = 3 + u64::try_from(index).unwrap();
            assert_eq!(
                replay(stores, ledger).await,
                journal_records(1..=n_records, ledger),
                "{ledger}"
            );
            assert_eq!(
                stores.ledger_journal.last_sequence(ledger).await.unwrap(),
                n_records,
                "{ledger}"
            );
        }
        // A conflict in one ledger leaves the others alone.
        let error = stores
            .ledger_journal
            .append(ledgers[0], &journal_records([1], ledgers[1]))
            .await
            .unwrap_err();
        assert_journal_conflict(&error, ledgers[0], 1);
        assert_eq!(
            replay(stores, ledgers[1]).await,
            journal_records(1..=4, ledgers[1])
        );
    }

    pub async fn ledger_journal_concurrent_identical_appends_converge(stores: &Stores) {
        let ledger = "campaign-8/gateway-1";
        let race = |batches: [Vec<JournalRecord>; 2]| {
            let barrier = Arc::new(Barrier::new(2));
            let tasks: Vec<_> = batches
                .into_iter()
                .map(|batch| {
                    let store = Arc::clone(&stores.ledger_journal);
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.append(ledger, &batch).await
                    })
                })
                .collect();
            async move {
                for task in tasks {
                    task.await.unwrap().unwrap();
                }
            }
        };
        // The same batch from two tasks, several rounds, some batches spanning several
        // ScyllaDB conditional batches.
        let rounds: Vec<Vec<JournalRecord>> = (0..4_u64)
            .map(|round| {
                let n_records = if round % 2 == 0 { 40 } else { 150 };
                let first = round * 200 + 1;
                journal_records(first..first + n_records, "raced")
            })
            .collect();
        for batch in &rounds {
            race([batch.clone(), batch.clone()]).await;
        }
        // Overlapping batches from two tasks.
        race([
            journal_records(801..=840, "raced"),
            journal_records(821..=860, "raced"),
        ])
        .await;

        let mut expected = rounds.concat();
        expected.extend(journal_records(801..=860, "raced"));
        assert_eq!(replay(stores, ledger).await, expected);
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            860
        );
    }

    pub async fn ledger_journal_random_appends_match_a_model(stores: &Stores) {
        use std::collections::BTreeMap;

        let ledger = "campaign-9/gateway-1";
        // Deterministic pseudo-random appends (xorshift64) over a small range of sequences,
        // so that retries, overlaps and conflicts are all frequent.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut model: BTreeMap<u64, JournalRecord> = BTreeMap::new();
        for step in 0..80 {
            let first = 1 + next(40);
            let n_records = 1 + next(6);
            let stride = 1 + next(2);
            let batch: Vec<JournalRecord> = (0..n_records)
                .map(|index| {
                    let sequence = first + index * stride;
                    // One record in eight differs from the one the model would store.
                    let tag = if next(8) == 0 { "variant" } else { "model" };
                    journal_record(sequence, tag)
                })
                .collect();
            let conflict_opt = batch
                .iter()
                .find(|record| {
                    model
                        .get(&record.sequence)
                        .is_some_and(|stored| stored != *record)
                })
                .map(|record| record.sequence);
            let outcome = stores.ledger_journal.append(ledger, &batch).await;
            match conflict_opt {
                Some(sequence) => {
                    assert_journal_conflict(&outcome.unwrap_err(), ledger, sequence);
                }
                None => {
                    outcome.unwrap_or_else(|error| panic!("step {step}: {error:?}"));
                    for record in batch {
                        model.entry(record.sequence).or_insert(record);
                    }
                }
            }
        }
        let expected: Vec<JournalRecord> = model.values().cloned().collect();
        assert!(
            expected.len() > 20,
            "the model stored too little: {expected:?}"
        );
        assert_eq!(replay_pages(stores, ledger, 7).await.concat(), expected);
        assert_eq!(
            stores.ledger_journal.last_sequence(ledger).await.unwrap(),
            model.keys().last().copied().unwrap_or(0)
        );
    }
}
