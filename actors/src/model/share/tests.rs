//! Tests of the share state machine: every transition and every illegal one, password lock-out,
//! metering with duplicate and out-of-order reports, reminders exactly once, rating.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_800_000_000_000;
const EXPIRES: u64 = NOW + 3_600_000;

fn here() -> GeoPoint {
    GeoPoint::from_degrees(31.2304, 121.4737).unwrap()
}

/// About 111 m north of [`here`].
fn near() -> GeoPoint {
    GeoPoint::from_degrees(31.2314, 121.4737).unwrap()
}

fn terms() -> ShareTerms {
    ShareTerms {
        unit_bytes: MIB,
        slice_bytes: 10 * MIB,
        max_password_attempts: 3,
        range_m: 500,
        reminders: vec![
            ReminderRule {
                percent: 50,
                notify: BTreeSet::from([Party::Requester]),
            },
            ReminderRule {
                percent: 80,
                notify: BTreeSet::from([Party::Requester, Party::Sharer]),
            },
            ReminderRule {
                percent: 100,
                notify: BTreeSet::from([Party::Sharer]),
            },
        ],
        cell_precision: 6,
    }
}

fn offer(amount_bytes: u64) -> Offer {
    Offer {
        sharer: "sam".to_owned(),
        amount_bytes,
        price_minor_per_unit: 7,
        currency: "CNY".to_owned(),
        location: here(),
        expires_at_unix_ms: EXPIRES,
    }
}

fn offered(amount_bytes: u64) -> ShareState {
    let mut state = ShareState::default();
    let step = state
        .open(offer(amount_bytes), terms(), "pa55".to_owned(), NOW)
        .unwrap();
    assert_eq!(step.events, vec![ShareEvent::Offered]);
    state
}

fn matched(amount_bytes: u64) -> ShareState {
    let mut state = offered(amount_bytes);
    let step = state
        .match_requester("rita", amount_bytes, near(), NOW + 1)
        .unwrap();
    assert_eq!(step.answer.password, "pa55");
    state
}

fn active(amount_bytes: u64) -> ShareState {
    let mut state = matched(amount_bytes);
    let step = state.present_password("rita", "pa55", NOW + 2).unwrap();
    assert!(matches!(step.answer, PasswordAnswer::Started { .. }));
    state
}

fn closed() -> ShareState {
    let mut state = offered(100 * MIB);
    state.cancel("sam", NOW + 1).unwrap();
    state
}

fn status(state: &ShareState) -> ShareStatus {
    state.status_opt().unwrap()
}

/// Every operation in every status, by the party allowed to try it: what is legal moves the
/// share on, everything else is refused with `WrongStatus` and changes nothing.
#[test]
fn every_illegal_transition_is_refused() {
    type Operation = fn(&mut ShareState) -> Result<bool, ShareError>;
    let operations: [(&str, Operation); 5] = [
        ("match", |state| {
            state
                .match_requester("rob", MIB, near(), NOW + 5)
                .map(|step| step.changed)
        }),
        ("sharer cancels", |state| {
            state.cancel("sam", NOW + 5).map(|step| step.changed)
        }),
        ("password", |state| {
            state
                .present_password("rita", "pa55", NOW + 5)
                .map(|step| step.changed)
        }),
        ("usage", |state| {
            state
                .report_usage("rita", 1, MIB, NOW + 5)
                .map(|step| step.changed)
        }),
        ("end", |state| {
            state.end("sam", NOW + 5).map(|step| step.changed)
        }),
    ];
    /// A share in one status, and the operations legal there.
    type Situation = (fn() -> ShareState, &'static [&'static str]);
    let builders: [Situation; 4] = [
        (|| offered(100 * MIB), &["match", "sharer cancels"]),
        (|| matched(100 * MIB), &["sharer cancels", "password"]),
        (|| active(100 * MIB), &["usage", "end"]),
        (closed, &[]),
    ];
    for (build, legal) in builders {
        for (name, operation) in operations {
            let mut state = build();
            let before = state.clone();
            let from = status(&before);
            match operation(&mut state) {
                Ok(true) => assert!(legal.contains(&name), "{name} allowed from {from:?}"),
                // A repeat of what already happened (a started share asked to start) answers
                // again and changes nothing.
                Ok(false) => {
                    assert!(
                        !legal.contains(&name),
                        "legal {name} from {from:?} did nothing"
                    );
                    assert_eq!(state, before, "a repeated {name} changed the share");
                }
                Err(error) => {
                    assert!(
                        !legal.contains(&name),
                        "{name} refused from {from:?}: {error}"
                    );
                    assert!(
                        matches!(
                            error,
                            ShareError::WrongStatus { .. } | ShareError::NotAParty
                        ),
                        "{name} from {from:?}: {error:?}"
                    );
                    assert_eq!(state, before, "a refused {name} changed the share");
                }
            }
        }
    }
}

#[test]
fn who_may_do_what() {
    let mut state = offered(100 * MIB);
    assert_eq!(
        state
            .match_requester("sam", MIB, near(), NOW + 1)
            .unwrap_err(),
        ShareError::OwnOffer
    );
    assert_eq!(
        state.cancel("rita", NOW + 1).unwrap_err(),
        ShareError::NotAParty
    );
    assert_eq!(state.view_for("rita").unwrap_err(), ShareError::NotAParty);
    let mut state = matched(100 * MIB);
    assert_eq!(
        state.present_password("sam", "pa55", NOW + 2).unwrap_err(),
        ShareError::WrongParty {
            needed: Party::Requester
        }
    );
    assert_eq!(
        state.present_password("eve", "pa55", NOW + 2).unwrap_err(),
        ShareError::NotAParty
    );
    let mut state = active(100 * MIB);
    assert_eq!(
        state.report_usage("sam", 1, MIB, NOW + 3).unwrap_err(),
        ShareError::WrongParty {
            needed: Party::Requester
        }
    );
    assert_eq!(
        state.report_usage("eve", 1, MIB, NOW + 3).unwrap_err(),
        ShareError::NotAParty
    );
    assert_eq!(
        state.end("eve", NOW + 3).unwrap_err(),
        ShareError::NotAParty
    );
    let mut never = ShareState::default();
    assert_eq!(
        never.cancel("sam", NOW).unwrap_err(),
        ShareError::NoSuchShare
    );
}

#[test]
fn matching_checks_range_amount_and_repeats_its_answer() {
    let mut state = offered(100 * MIB);
    let far = GeoPoint::from_degrees(31.2404, 121.4737).unwrap(); // ~1.1 km
    assert!(matches!(
        state.match_requester("rita", MIB, far, NOW + 1).unwrap_err(),
        ShareError::OutOfRange { range_m: 500, distance_m } if (1100..1120).contains(&distance_m)
    ));
    assert_eq!(
        state
            .match_requester("rita", 100 * MIB + 1, near(), NOW + 1)
            .unwrap_err(),
        ShareError::AmountAboveOffer {
            requested_bytes: 100 * MIB + 1,
            offered_bytes: 100 * MIB
        }
    );
    let first = state
        .match_requester("rita", 40 * MIB, near(), NOW + 1)
        .unwrap();
    assert!(first.changed);
    assert!((110..113).contains(&first.answer.distance_m));
    // A retry of the same match answers the same; another requester finds it taken.
    let again = state
        .match_requester("rita", 40 * MIB, near(), NOW + 9)
        .unwrap();
    assert_eq!((again.changed, again.answer), (false, first.answer));
    assert!(matches!(
        state
            .match_requester("rob", MIB, near(), NOW + 9)
            .unwrap_err(),
        ShareError::WrongStatus {
            status: ShareStatus::Matched,
            ..
        }
    ));
    // Only the matched requester is shown the password.
    assert_eq!(
        state.view_for("rita").unwrap().password_opt.as_deref(),
        Some("pa55")
    );
}

#[test]
fn a_requester_giving_the_match_back_lists_the_offer_again() {
    let mut state = matched(100 * MIB);
    let step = state.cancel("rita", NOW + 3).unwrap();
    assert_eq!(
        step.events,
        vec![ShareEvent::Released {
            requester: "rita".to_owned()
        }]
    );
    assert_eq!(status(&state), ShareStatus::Offered);
    assert_eq!(state.view_for("rita").unwrap_err(), ShareError::NotAParty);
    assert!(
        state
            .match_requester("rob", MIB, near(), NOW + 4)
            .unwrap()
            .changed
    );
}

#[test]
fn wrong_passwords_lock_the_share_out() {
    let mut state = matched(100 * MIB);
    let first = state.present_password("rita", "nope", NOW + 2).unwrap();
    assert_eq!(first.answer, PasswordAnswer::Wrong { attempts_left: 2 });
    let second = state.present_password("rita", "pa5", NOW + 3).unwrap();
    assert_eq!(second.answer, PasswordAnswer::Wrong { attempts_left: 1 });
    let third = state.present_password("rita", "PA55", NOW + 4).unwrap();
    assert_eq!(third.answer, PasswordAnswer::Blocked);
    assert_eq!(
        third.events,
        vec![
            ShareEvent::PasswordRejected { attempts_left: 0 },
            ShareEvent::Closed {
                closing: Closing::Blocked,
                bill_opt: None
            }
        ]
    );
    // Blocked for good, even with the right password; the password is forgotten.
    let after = state.present_password("rita", "pa55", NOW + 5).unwrap();
    assert_eq!(
        (after.changed, after.answer),
        (false, PasswordAnswer::Blocked)
    );
    assert_eq!(state.view_for("sam").unwrap().password_opt, None);
    assert_eq!(
        third.events[1].recipients(),
        BTreeSet::from([Party::Sharer, Party::Requester])
    );
}

#[test]
fn the_right_password_starts_the_share_with_one_slice() {
    let mut state = matched(100 * MIB);
    state.present_password("rita", "wrong", NOW + 2).unwrap();
    let step = state.present_password("rita", "pa55", NOW + 3).unwrap();
    assert_eq!(
        step.answer,
        PasswordAnswer::Started {
            granted_bytes: 10 * MIB
        }
    );
    assert_eq!(step.events[0].recipients(), BTreeSet::from([Party::Sharer]));
    // A retry answers the same and changes nothing; the password is no longer kept.
    let again = state.present_password("rita", "pa55", NOW + 4).unwrap();
    assert!(!again.changed);
    assert_eq!(state.view_for("rita").unwrap().password_opt, None);
    // A share smaller than a slice is granted whole.
    let small = active(3 * MIB);
    assert_eq!(small.view_for("rita").unwrap().granted_bytes, 3 * MIB);
}

#[test]
fn usage_grants_slices_reminds_once_and_closes_at_exhaustion_with_a_bill() {
    let mut state = active(20 * MIB);
    let step = state.report_usage("rita", 1, 9 * MIB, NOW + 10).unwrap();
    assert_eq!(step.answer.granted_bytes, 19 * MIB);
    assert!(!step.answer.final_units);
    assert!(
        step.events
            .iter()
            .all(|e| !matches!(e, ShareEvent::Reminder { .. }))
    );
    let step = state.report_usage("rita", 2, 10 * MIB, NOW + 11).unwrap();
    assert_eq!(step.answer.granted_bytes, 20 * MIB);
    assert!(step.answer.final_units);
    assert_eq!(
        reminded(&step.events),
        vec![(50, BTreeSet::from([Party::Requester]))]
    );
    // Above the grant is refused and changes nothing.
    let before = state.clone();
    assert_eq!(
        state
            .report_usage("rita", 3, 20 * MIB + 1, NOW + 12)
            .unwrap_err(),
        ShareError::AboveGrant {
            used_bytes: 20 * MIB + 1,
            granted_bytes: 20 * MIB
        }
    );
    assert_eq!(state, before);
    let step = state.report_usage("rita", 3, 20 * MIB, NOW + 13).unwrap();
    assert_eq!(
        reminded(&step.events),
        vec![
            (80, BTreeSet::from([Party::Requester, Party::Sharer])),
            (100, BTreeSet::from([Party::Sharer]))
        ]
    );
    let bill = step.answer.bill_opt.unwrap();
    assert_eq!(bill.closing, Closing::Exhausted);
    assert_eq!((bill.used_bytes, bill.fee_minor), (20 * MIB, 140));
    assert_eq!(
        (bill.started_at_unix_ms, bill.closed_at_unix_ms),
        (NOW + 2, NOW + 13)
    );
    assert_eq!(status(&state), ShareStatus::Closed);
    // Both sides see the same bill; a late duplicate gets the same answer.
    assert_eq!(state.view_for("sam").unwrap().bill_opt, Some(bill.clone()));
    let late = state.report_usage("rita", 2, 10 * MIB, NOW + 14).unwrap();
    assert_eq!((late.changed, late.answer.bill_opt), (false, Some(bill)));
}

fn reminded(events: &[ShareEvent]) -> Vec<(u8, BTreeSet<Party>)> {
    events
        .iter()
        .filter_map(|event| match event {
            ShareEvent::Reminder {
                percent, notify, ..
            } => Some((*percent, notify.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_must_grow_with_their_id_and_an_id_keeps_its_total() {
    let mut state = active(100 * MIB);
    state.report_usage("rita", 10, 5 * MIB, NOW + 10).unwrap();
    assert_eq!(
        state
            .report_usage("rita", 10, 6 * MIB, NOW + 11)
            .unwrap_err(),
        ShareError::ReportIdReused { report_id: 10 }
    );
    assert_eq!(
        state
            .report_usage("rita", 11, 4 * MIB, NOW + 11)
            .unwrap_err(),
        ShareError::NotMonotone {
            report_id: 11,
            used_bytes: 4 * MIB,
            other_report_id: 10,
            other_used_bytes: 5 * MIB
        }
    );
    assert_eq!(
        state
            .report_usage("rita", 9, 6 * MIB, NOW + 11)
            .unwrap_err(),
        ShareError::NotMonotone {
            report_id: 9,
            used_bytes: 6 * MIB,
            other_report_id: 10,
            other_used_bytes: 5 * MIB
        }
    );
    // A late report below the total is recorded and changes neither used nor granted.
    let late = state.report_usage("rita", 9, 4 * MIB, NOW + 12).unwrap();
    assert_eq!(
        (late.answer.used_bytes, late.answer.granted_bytes),
        (5 * MIB, 15 * MIB)
    );
}

#[test]
fn either_party_ends_an_active_share_and_expiry_bills_what_was_used() {
    let mut state = active(100 * MIB);
    state.report_usage("rita", 1, MIB + 1, NOW + 10).unwrap();
    let step = state.end("sam", NOW + 20).unwrap();
    assert_eq!(step.answer.closing, Closing::EndedBySharer);
    // 1 MiB + 1 byte at 7 per MiB is 7.0000067: rounded up to 8.
    assert_eq!(step.answer.fee_minor, 8);

    let mut state = active(100 * MIB);
    state.report_usage("rita", 1, 2 * MIB, NOW + 10).unwrap();
    assert!(!state.expire_due(EXPIRES - 1).unwrap().changed);
    let step = state.expire_due(EXPIRES).unwrap();
    let Some(ShareEvent::Closed {
        closing: Closing::Expired,
        bill_opt: Some(bill),
    }) = step.events.first()
    else {
        panic!("expected an expiry with a bill: {:?}", step.events);
    };
    assert_eq!((bill.fee_minor, bill.closed_at_unix_ms), (14, EXPIRES));
    assert!(!state.expire_due(EXPIRES + 1).unwrap().changed);

    // An offer that expires unmatched closes without a bill.
    let mut state = offered(MIB);
    let step = state.expire_due(EXPIRES + 5).unwrap();
    assert_eq!(
        step.events,
        vec![ShareEvent::Closed {
            closing: Closing::Expired,
            bill_opt: None
        }]
    );
}

#[test]
fn opening_is_idempotent_and_checks_its_input() {
    let mut state = offered(MIB);
    assert!(
        !state
            .open(offer(MIB), terms(), "pa55".to_owned(), NOW + 1)
            .unwrap()
            .changed
    );
    assert_eq!(
        state
            .open(offer(2 * MIB), terms(), "pa55".to_owned(), NOW + 1)
            .unwrap_err(),
        ShareError::AlreadyExists
    );
    let check = |offer: Offer, terms: ShareTerms, password: &str, expected: &str| {
        let error = ShareState::default()
            .open(offer, terms, password.to_owned(), NOW)
            .unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "{error} lacks {expected:?}"
        );
    };
    check(offer(MIB), terms(), "pa 5", "printable ASCII");
    check(offer(MIB), terms(), "abc", "4 to 64");
    check(
        Offer {
            currency: "cny".to_owned(),
            ..offer(MIB)
        },
        terms(),
        "pa55",
        "capital",
    );
    check(
        Offer {
            expires_at_unix_ms: NOW,
            ..offer(MIB)
        },
        terms(),
        "pa55",
        "expire",
    );
    check(offer(0), terms(), "pa55", "positive");
    check(
        Offer {
            price_minor_per_unit: u64::MAX,
            ..offer(u64::MAX)
        },
        terms(),
        "pa55",
        "64 bits",
    );
    let mut unordered = terms();
    unordered.reminders.swap(0, 1);
    check(offer(MIB), unordered, "pa55", "ascending");
}

#[test]
fn rating_rounds_up_to_a_whole_minor_unit() {
    // (used bytes, price per unit, unit bytes, fee).
    let cases: [(u64, u64, u64, u64); 8] = [
        (0, 7, MIB, 0),
        (1, 7, MIB, 1),
        (MIB, 7, MIB, 7),
        (MIB + 1, 7, MIB, 8),
        (MIB / 2, 3, MIB, 2), // 1.5 → 2
        (MIB / 4, 4, MIB, 1), // exactly 1
        (10 * MIB, 0, MIB, 0),
        (u64::MAX, 1, u64::MAX, 1),
    ];
    for (used, price, unit, fee) in cases {
        assert_eq!(
            rate(used, price, unit),
            Ok(fee),
            "{used} B at {price} per {unit} B"
        );
    }
    assert_eq!(rate(u64::MAX, u64::MAX, 1), Err(ShareError::FeeOverflow));
    assert!(rate(1, 1, 0).is_err());
}

#[test]
fn amount_limits_name_the_bound() {
    let limits = AmountLimits {
        min_amount_bytes: MIB,
        max_amount_bytes: 100 * MIB,
        max_price_minor_per_unit: 1000,
        min_validity_ms: 60_000,
        max_validity_ms: 86_400_000,
    };
    assert!(limits.check_amount(MIB).is_ok());
    assert!(limits.check_amount(100 * MIB).is_ok());
    assert!(
        limits
            .check_amount(MIB - 1)
            .unwrap_err()
            .to_string()
            .contains("outside")
    );
    assert!(limits.check_amount(100 * MIB + 1).is_err());
    assert!(limits.check_offer_terms(1000, 60_000).is_ok());
    assert!(
        limits
            .check_offer_terms(1001, 60_000)
            .unwrap_err()
            .to_string()
            .contains("price")
    );
    assert!(
        limits
            .check_offer_terms(1, 59_999)
            .unwrap_err()
            .to_string()
            .contains("validity")
    );
}

proptest! {
    /// Whatever order the reports arrive in, and however often each comes, the share ends
    /// with the highest total, every threshold crossed is reminded of exactly once, and each
    /// reminder names the total that crossed it.
    #[test]
    fn reminders_come_once_whatever_the_order_of_reports(
        increments in proptest::collection::vec(0_u64..4 * MIB, 1..12),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..40),
    ) {
        let amount = 20 * MIB;
        let mut totals = Vec::new();
        let mut total = 0_u64;
        for increment in increments {
            total = (total + increment).min(amount);
            totals.push(total);
            if total == amount {
                // The share closes here: no report comes after.
                break;
            }
        }
        // Reports are sent as the usage grows (each within the slice granted so far), then
        // delivered again in an arbitrary order, with duplicates.
        let mut state = active(amount);
        let mut events = Vec::new();
        for (index, &used) in totals.iter().enumerate() {
            let id = u64::try_from(index).unwrap();
            match state.report_usage("rita", id, used, NOW + 10) {
                Ok(step) => events.extend(step.events),
                Err(error) => prop_assert!(false, "in-order report refused: {error}"),
            }
        }
        let mut replay = state.clone();
        let mut replay_events = Vec::new();
        for index in order {
            let position = index.index(totals.len());
            let id = u64::try_from(position).unwrap();
            let step = replay.report_usage("rita", id, totals[position], NOW + 11).unwrap();
            prop_assert!(!step.changed);
            replay_events.extend(step.events);
        }
        prop_assert!(replay_events.is_empty());
        prop_assert_eq!(&replay, &state);
        let last = *totals.last().unwrap();
        let expected: Vec<u8> = [50_u8, 80, 100]
            .into_iter()
            .filter(|percent| last * 100 >= amount * u64::from(*percent))
            .collect();
        let got: Vec<u8> = reminded(&events).into_iter().map(|(percent, _)| percent).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(state.view_for("rita").unwrap().used_bytes, last);
    }

    /// Reports delivered out of order from the start (each under the slice granted by then)
    /// give the same reminders as in order.
    #[test]
    fn out_of_order_reports_remind_as_in_order_ones(
        totals in proptest::collection::btree_set(1_u64..10 * MIB, 1..10),
        shuffle_seed in any::<u64>(),
    ) {
        let totals: Vec<u64> = totals.into_iter().collect();
        let mut order: Vec<usize> = (0..totals.len()).collect();
        // A deterministic shuffle from the seed.
        let mut seed = shuffle_seed;
        for index in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let other = usize::try_from(seed >> 33).unwrap() % (index + 1);
            order.swap(index, other);
        }
        let amount = 10 * MIB;
        let mut in_order = active(amount);
        let mut shuffled = active(amount);
        let mut in_order_events = Vec::new();
        let mut shuffled_events = Vec::new();
        for (index, &used) in totals.iter().enumerate() {
            let id = u64::try_from(index).unwrap();
            in_order_events.extend(in_order.report_usage("rita", id, used, NOW).unwrap().events);
        }
        for &index in &order {
            let id = u64::try_from(index).unwrap();
            shuffled_events.extend(shuffled.report_usage("rita", id, totals[index], NOW).unwrap().events);
        }
        let percents = |events: &[ShareEvent]| -> Vec<u8> {
            let mut percents: Vec<u8> = reminded(events).into_iter().map(|(p, _)| p).collect();
            percents.sort_unstable();
            percents
        };
        prop_assert_eq!(percents(&in_order_events), percents(&shuffled_events));
        prop_assert_eq!(
            in_order.view_for("rita").unwrap().used_bytes,
            shuffled.view_for("rita").unwrap().used_bytes
        );
    }
}
