//! Unit tests and property tests of one quota ledger, its claim answers given by hand.

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;

const CAMPAIGN: &str = "spring";
const GATEWAY: &str = "g1";
/// A moment well after the epoch.
const T0: u64 = 1_700_000_000_000;
/// The timeout of the allocations made by [`allocate`].
const TIMEOUT_MS: u64 = 60_000;

fn new_ledger(quota: u64) -> Ledger {
    Ledger::new(CAMPAIGN, GATEWAY, quota).unwrap()
}

fn allocate_for(op_id: &str, account_id: &str, units: u64, timeout_ms: u64) -> LedgerOp {
    LedgerOp::Allocate(AllocateRequest {
        op_id: op_id.to_owned(),
        account_id: account_id.to_owned(),
        units,
        timeout_ms,
    })
}

fn allocate(op_id: &str, account_id: &str, units: u64) -> LedgerOp {
    allocate_for(op_id, account_id, units, TIMEOUT_MS)
}

fn void(op_id: &str, transfer_id: TransferId) -> LedgerOp {
    LedgerOp::Void(VoidRequest {
        op_id: op_id.to_owned(),
        transfer_id,
    })
}

fn transfer_ref(account_id: &str, transfer_id: TransferId) -> TransferRef {
    TransferRef {
        campaign_id: CAMPAIGN.to_owned(),
        account_id: account_id.to_owned(),
        gateway_id: GATEWAY.to_owned(),
        transfer_id,
    }
}

fn held(account_id: &str, transfer_id: TransferId) -> LedgerOp {
    LedgerOp::ClaimAnswer(ClaimBookReply::ClaimHeld {
        transfer: transfer_ref(account_id, transfer_id),
    })
}

fn refused(account_id: &str, transfer_id: TransferId, holder_gateway: &str) -> LedgerOp {
    LedgerOp::ClaimAnswer(ClaimBookReply::ClaimRefused {
        transfer: transfer_ref(account_id, transfer_id),
        holder_gateway: holder_gateway.to_owned(),
    })
}

/// The answer to an allocation reserved `after_ms` after [`T0`] with [`TIMEOUT_MS`].
fn reserved(transfer_id: TransferId, units: u64, after_ms: u64) -> LedgerResult {
    Ok(LedgerOutcome::Reserved {
        transfer_id,
        units,
        expires_at_unix_ms: T0 + after_ms + TIMEOUT_MS,
    })
}

fn allocated(transfer_id: TransferId, units: u64) -> LedgerResult {
    Ok(LedgerOutcome::Allocated { transfer_id, units })
}

fn voided(transfer_id: TransferId, units: u64) -> LedgerResult {
    Ok(LedgerOutcome::Voided { transfer_id, units })
}

fn quota_exceeded(requested: u64, remaining: u64) -> LedgerResult {
    Err(LedgerError::QuotaExceeded {
        requested,
        remaining,
    })
}

fn id_reused(op_id: &str) -> LedgerResult {
    Err(LedgerError::IdReused {
        op_id: op_id.to_owned(),
    })
}

fn journal_of(effects: &[LedgerEffect]) -> impl Iterator<Item = &JournalEntry> {
    effects.iter().filter_map(|effect| match effect {
        LedgerEffect::Journal(entry) => Some(entry),
        LedgerEffect::ToClaimBook(_) | LedgerEffect::AllocationResolved { .. } => None,
    })
}

fn messages_of(effects: &[LedgerEffect]) -> Vec<ClaimMessage> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            LedgerEffect::ToClaimBook(message) => Some(message.clone()),
            LedgerEffect::Journal(_) | LedgerEffect::AllocationResolved { .. } => None,
        })
        .collect()
}

/// A ledger under test and everything it journaled.
struct Harness {
    ledger: Ledger,
    journal: Vec<JournalEntry>,
}

impl Harness {
    fn new(quota: u64) -> Self {
        Self {
            ledger: new_ledger(quota),
            journal: Vec::new(),
        }
    }

    /// Applies `op` `after_ms` after [`T0`]; checks that the journal still rebuilds the live
    /// balances.
    fn apply(&mut self, op: LedgerOp, after_ms: u64) -> Applied {
        let applied = self.ledger.apply(op, T0 + after_ms);
        self.journal.extend(journal_of(&applied.effects).cloned());
        assert_eq!(
            rebuild(self.ledger.quota(), &self.journal),
            Ok(self.ledger.balances()),
            "the journal rebuilds the live balances"
        );
        applied
    }
}

/// Applies each step's op (`after_ms` after [`T0`]) to a fresh ledger of `quota` and checks its
/// result; returns the harness for further checks.
fn check(quota: u64, steps: &[(u64, LedgerOp, LedgerResult)]) -> Harness {
    let mut harness = Harness::new(quota);
    for (position, (after_ms, op, expected)) in steps.iter().enumerate() {
        let applied = harness.apply(op.clone(), *after_ms);
        assert_eq!(&applied.result, expected, "step {position}: {op:?}");
    }
    harness
}

#[test]
fn a_ledger_needs_a_quota() {
    assert_eq!(
        Ledger::new(CAMPAIGN, GATEWAY, 0),
        Err(LedgerError::ZeroQuota)
    );
}

#[test]
fn allocations_fill_the_quota_exactly_and_the_next_is_refused_stating_the_remainder() {
    let harness = check(
        10,
        &[
            (0, allocate("a1", "alice", 4), reserved(1, 4, 0)),
            (0, allocate("b1", "bob", 6), reserved(2, 6, 0)),
            (0, allocate("c1", "carol", 1), quota_exceeded(1, 0)),
            (0, held("alice", 1), allocated(1, 4)),
            (0, allocate("c2", "carol", 1), quota_exceeded(1, 0)),
            (0, void("v1", 2), voided(2, 6)),
            (0, allocate("c3", "carol", 7), quota_exceeded(7, 6)),
            (0, allocate("c4", "carol", 6), reserved(3, 6, 0)),
            (0, held("carol", 3), allocated(3, 6)),
            (0, allocate("d1", "dave", 1), quota_exceeded(1, 0)),
        ],
    );
    let balances = harness.ledger.balances();
    assert_eq!(
        (
            balances.pending_units,
            balances.posted_units,
            balances.voided_units
        ),
        (0, 10, 6)
    );
    assert_eq!(balances.remaining(), 0);
    // One allocation of the whole quota is fine, one unit more is not an allocation at all.
    check(
        5,
        &[
            (
                0,
                allocate("a1", "alice", 6),
                Err(LedgerError::UnitsOutOfRange {
                    units: 6,
                    max_units: 5,
                }),
            ),
            (0, allocate("a2", "alice", 5), reserved(1, 5, 0)),
        ],
    );
}

#[test]
fn a_resubmitted_op_answers_its_first_result_even_after_the_state_moved_on() {
    let mut harness = check(
        10,
        &[
            (0, allocate("a1", "alice", 3), reserved(1, 3, 0)),
            (0, allocate("c1", "carol", 7), reserved(2, 7, 0)),
            (0, allocate("b1", "bob", 2), quota_exceeded(2, 0)),
            (0, void("v1", 2), voided(2, 7)),
            // Seven units are free now, but b1 was refused: it stays refused.
            (0, allocate("b1", "bob", 2), quota_exceeded(2, 0)),
            (0, void("v1", 2), voided(2, 7)),
            // A pending allocation answers Reserved, then its final result for good.
            (0, allocate("a1", "alice", 3), reserved(1, 3, 0)),
            (0, held("alice", 1), allocated(1, 3)),
            (0, allocate("a1", "alice", 3), allocated(1, 3)),
            (
                0,
                void("v2", 1),
                Err(LedgerError::AlreadyPosted { transfer_id: 1 }),
            ),
            (0, allocate("b2", "bob", 2), reserved(3, 2, 0)),
            (
                0,
                void("v2", 1),
                Err(LedgerError::AlreadyPosted { transfer_id: 1 }),
            ),
        ],
    );
    // A resubmission changes nothing: no journal entry, no message.
    let n_entries = harness.journal.len();
    let balances = harness.ledger.balances();
    for op in [
        allocate("a1", "alice", 3),
        void("v1", 2),
        allocate("b1", "bob", 2),
    ] {
        let applied = harness.apply(op, 1_000);
        assert_eq!(applied.effects, Vec::new());
    }
    assert_eq!(harness.journal.len(), n_entries);
    assert_eq!(harness.ledger.balances(), balances);
    assert_eq!(harness.ledger.result_of("a1"), Some(&allocated(1, 3)));
    assert_eq!(harness.ledger.result_of("b1"), Some(&quota_exceeded(2, 0)));
}

#[test]
fn an_op_id_used_again_with_other_fields_is_refused_naming_it() {
    check(
        10,
        &[
            (0, allocate("a1", "alice", 3), reserved(1, 3, 0)),
            (0, allocate("a1", "alice", 4), id_reused("a1")),
            (0, allocate("a1", "bob", 3), id_reused("a1")),
            (0, allocate_for("a1", "alice", 3, 2_000), id_reused("a1")),
            (0, void("a1", 1), id_reused("a1")),
            (0, void("v1", 1), voided(1, 3)),
            (0, void("v1", 2), id_reused("v1")),
            (0, allocate("v1", "alice", 3), id_reused("v1")),
            // A failure that depends on the state is remembered too.
            (0, allocate("b1", "bob", 2), reserved(2, 2, 0)),
            (
                0,
                allocate("b2", "bob", 2),
                Err(LedgerError::AllocationInProgress { transfer_id: 2 }),
            ),
            (0, allocate("b2", "bob", 1), id_reused("b2")),
            // A failure found from the request alone is not: the id is still free.
            (
                0,
                allocate("z1", "zed", 0),
                Err(LedgerError::UnitsOutOfRange {
                    units: 0,
                    max_units: 10,
                }),
            ),
            (0, allocate("z1", "zed", 1), reserved(3, 1, 0)),
        ],
    );
}

#[test]
fn every_illegal_transition_is_refused_with_its_error() {
    use LedgerError::{AlreadyClaimed, AlreadyPosted, AlreadyVoided, Cancelled, Expired};
    let harness = check(
        10,
        &[
            (0, allocate("a1", "alice", 1), reserved(1, 1, 0)),
            (0, allocate("b1", "bob", 1), reserved(2, 1, 0)),
            (0, allocate("c1", "carol", 1), reserved(3, 1, 0)),
            (0, allocate("d1", "dave", 1), reserved(4, 1, 0)),
            // Posted: a duplicate answer is idempotent, nothing undoes it.
            (0, held("alice", 1), allocated(1, 1)),
            (0, held("alice", 1), allocated(1, 1)),
            (0, void("v1", 1), Err(AlreadyPosted { transfer_id: 1 })),
            (0, refused("alice", 1, "g9"), allocated(1, 1)),
            // Cancelled: no second void, no post.
            (0, void("v2", 2), voided(2, 1)),
            (0, void("v3", 2), Err(AlreadyVoided { transfer_id: 2 })),
            (0, held("bob", 2), Err(Cancelled { transfer_id: 2 })),
            // Refused by the claim book: no post, no void.
            (
                0,
                refused("carol", 3, "g2"),
                Err(AlreadyClaimed {
                    holder_gateway: "g2".to_owned(),
                }),
            ),
            (
                0,
                held("carol", 3),
                Err(AlreadyClaimed {
                    holder_gateway: "g2".to_owned(),
                }),
            ),
            (0, void("v4", 3), Err(AlreadyVoided { transfer_id: 3 })),
            // Expired: no post, no void.
            (TIMEOUT_MS, held("dave", 4), Err(Expired { transfer_id: 4 })),
            (TIMEOUT_MS, void("v5", 4), Err(Expired { transfer_id: 4 })),
            // Unknown, or not that account's.
            (
                TIMEOUT_MS,
                void("v6", 99),
                Err(LedgerError::UnknownTransfer { transfer_id: 99 }),
            ),
            (
                TIMEOUT_MS,
                held("erin", 99),
                Err(LedgerError::UnknownTransfer { transfer_id: 99 }),
            ),
            (
                TIMEOUT_MS,
                held("bob", 1),
                Err(LedgerError::UnknownTransfer { transfer_id: 1 }),
            ),
        ],
    );
    let statuses: Vec<&TransferStatus> = (1..=4)
        .map(|transfer_id| &harness.ledger.transfer(transfer_id).unwrap().status)
        .collect();
    assert_eq!(
        statuses,
        [
            &TransferStatus::Posted { at_unix_ms: T0 },
            &TransferStatus::Cancelled { at_unix_ms: T0 },
            &TransferStatus::Refused {
                holder_gateway: "g2".to_owned(),
                at_unix_ms: T0
            },
            &TransferStatus::Expired {
                at_unix_ms: T0 + TIMEOUT_MS
            },
        ]
    );
    assert_eq!(harness.ledger.balances().posted_units, 1);
    assert_eq!(harness.ledger.balances().voided_units, 3);
}

#[test]
fn each_transition_tells_the_claim_book_what_it_must_know() {
    fn check_messages(
        harness: &mut Harness,
        op: LedgerOp,
        after_ms: u64,
        expected: &[ClaimMessage],
    ) {
        let label = format!("{op:?}");
        let applied = harness.apply(op, after_ms);
        assert_eq!(messages_of(&applied.effects), expected, "{label}");
    }
    let hold = |account_id: &str, transfer_id, units| ClaimMessage::HoldClaim {
        transfer: transfer_ref(account_id, transfer_id),
        units,
    };
    let confirm = |account_id: &str, transfer_id| ClaimMessage::ConfirmClaim {
        transfer: transfer_ref(account_id, transfer_id),
    };
    let release = |account_id: &str, transfer_id| ClaimMessage::ReleaseClaim {
        transfer: transfer_ref(account_id, transfer_id),
    };
    let mut owned_harness = Harness::new(10);
    let harness = &mut owned_harness;
    check_messages(
        harness,
        allocate("a1", "alice", 2),
        0,
        &[hold("alice", 1, 2)],
    );
    check_messages(harness, allocate("a1", "alice", 2), 0, &[]);
    check_messages(harness, held("alice", 1), 0, &[confirm("alice", 1)]);
    // A duplicate answer confirms again (the book ignores it), and never releases.
    check_messages(harness, held("alice", 1), 0, &[confirm("alice", 1)]);
    check_messages(harness, void("v1", 1), 0, &[]);
    check_messages(harness, allocate("b1", "bob", 1), 0, &[hold("bob", 2, 1)]);
    check_messages(harness, void("v2", 2), 0, &[release("bob", 2)]);
    // A claim held for a dead or forgotten transfer is let go.
    check_messages(harness, held("bob", 2), 0, &[release("bob", 2)]);
    check_messages(harness, held("erin", 99), 0, &[release("erin", 99)]);
    // A refusal is released too, so a late duplicate hold cannot take the claim later.
    check_messages(
        harness,
        allocate("c1", "carol", 1),
        0,
        &[hold("carol", 3, 1)],
    );
    check_messages(
        harness,
        refused("carol", 3, "g2"),
        0,
        &[release("carol", 3)],
    );
    check_messages(harness, refused("carol", 3, "g2"), 0, &[]);
    check_messages(harness, allocate("d1", "dave", 1), 0, &[hold("dave", 4, 1)]);
    check_messages(harness, LedgerOp::Expire, TIMEOUT_MS, &[release("dave", 4)]);
}

#[test]
fn a_claim_answer_for_another_ledger_is_refused() {
    let mut ledger = new_ledger(10);
    ledger.apply(allocate("a1", "alice", 1), T0);
    let mut transfer = transfer_ref("alice", 1);
    transfer.gateway_id = "g2".to_owned();
    let applied = ledger.apply(
        LedgerOp::ClaimAnswer(ClaimBookReply::ClaimHeld { transfer }),
        T0,
    );
    assert_eq!(
        applied.result,
        Err(LedgerError::WrongLedger {
            campaign_id: CAMPAIGN.to_owned(),
            gateway_id: "g2".to_owned(),
        })
    );
    assert_eq!(applied.effects, Vec::new());
    assert_eq!(ledger.transfer(1).unwrap().status, TransferStatus::Pending);
}

#[test]
fn an_account_holds_one_transfer_per_venue() {
    check(
        10,
        &[
            (0, allocate("a1", "alice", 1), reserved(1, 1, 0)),
            (
                0,
                allocate("a2", "alice", 1),
                Err(LedgerError::AllocationInProgress { transfer_id: 1 }),
            ),
            (0, void("v1", 1), voided(1, 1)),
            (0, allocate("a3", "alice", 1), reserved(2, 1, 0)),
            (0, held("alice", 2), allocated(2, 1)),
            (
                0,
                allocate("a4", "alice", 1),
                Err(LedgerError::AlreadyClaimed {
                    holder_gateway: GATEWAY.to_owned(),
                }),
            ),
        ],
    );
}

#[test]
fn expiry_releases_the_units_at_the_deadline() {
    // One millisecond before its deadline a transfer is still pending.
    check(
        5,
        &[
            (0, allocate("a1", "alice", 5), reserved(1, 5, 0)),
            (
                0,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept { expired: vec![] }),
            ),
            (
                TIMEOUT_MS - 1,
                allocate("b1", "bob", 1),
                quota_exceeded(1, 0),
            ),
            (TIMEOUT_MS - 1, void("v1", 1), voided(1, 5)),
        ],
    );
    // At the deadline it expires, whatever the op, and its units are free again.
    let mut harness = check(
        5,
        &[
            (0, allocate("a1", "alice", 3), reserved(1, 3, 0)),
            (1_000, allocate("b1", "bob", 2), reserved(2, 2, 1_000)),
            (
                TIMEOUT_MS - 1,
                allocate("c1", "carol", 1),
                quota_exceeded(1, 0),
            ),
            (
                TIMEOUT_MS,
                allocate("c2", "carol", 3),
                reserved(3, 3, TIMEOUT_MS),
            ),
            (
                TIMEOUT_MS,
                held("alice", 1),
                Err(LedgerError::Expired { transfer_id: 1 }),
            ),
            (
                TIMEOUT_MS + 1_000,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept { expired: vec![2] }),
            ),
            (
                TIMEOUT_MS + 1_000,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept { expired: vec![] }),
            ),
        ],
    );
    assert_eq!(
        harness.ledger.result_of("a1"),
        Some(&Err(LedgerError::Expired { transfer_id: 1 }))
    );
    assert_eq!(harness.ledger.balances().pending_units, 3);
    assert_eq!(harness.ledger.balances().voided_units, 5);
    assert_eq!(
        harness.ledger.next_expiry_unix_ms(),
        Some(T0 + 2 * TIMEOUT_MS)
    );
    // The expiry tells the gateway waiting on the allocation.
    let applied = harness.apply(LedgerOp::Expire, 2 * TIMEOUT_MS);
    assert!(applied.effects.contains(&LedgerEffect::AllocationResolved {
        op_id: "c2".to_owned(),
        result: Err(LedgerError::Expired { transfer_id: 3 }),
    }));
    assert_eq!(harness.ledger.next_expiry_unix_ms(), None);
}

#[test]
fn the_clock_never_goes_back() {
    let harness = check(
        5,
        &[
            (
                TIMEOUT_MS,
                allocate("a1", "alice", 1),
                reserved(1, 1, TIMEOUT_MS),
            ),
            // An earlier `now` (another node's clock) counts as the latest one seen.
            (0, allocate("b1", "bob", 1), reserved(2, 1, TIMEOUT_MS)),
            (
                2 * TIMEOUT_MS,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept {
                    expired: vec![1, 2],
                }),
            ),
            (
                0,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept { expired: vec![] }),
            ),
        ],
    );
    assert_eq!(harness.ledger.clock_unix_ms(), T0 + 2 * TIMEOUT_MS);
}

#[test]
fn units_and_timeouts_are_bounded() {
    let units_out_of_range = |units| {
        Err(LedgerError::UnitsOutOfRange {
            units,
            max_units: 10,
        })
    };
    let timeout_out_of_range = |timeout_ms| {
        Err(LedgerError::TimeoutOutOfRange {
            timeout_ms,
            min_ms: MIN_TIMEOUT_MS,
            max_ms: MAX_TIMEOUT_MS,
        })
    };
    let expiring = |transfer_id, timeout_ms| {
        Ok(LedgerOutcome::Reserved {
            transfer_id,
            units: 1,
            expires_at_unix_ms: T0 + timeout_ms,
        })
    };
    check(
        10,
        &[
            (0, allocate("u0", "a0", 0), units_out_of_range(0)),
            (0, allocate("u1", "a1", 11), units_out_of_range(11)),
            (
                0,
                allocate("u2", "a2", u64::MAX),
                units_out_of_range(u64::MAX),
            ),
            (0, allocate_for("t0", "b0", 1, 0), timeout_out_of_range(0)),
            (
                0,
                allocate_for("t1", "b1", 1, 999),
                timeout_out_of_range(999),
            ),
            (0, allocate_for("t2", "b2", 1, 1_000), expiring(1, 1_000)),
            (
                0,
                allocate_for("t3", "b3", 1, MAX_TIMEOUT_MS),
                expiring(2, MAX_TIMEOUT_MS),
            ),
            (
                0,
                allocate_for("t4", "b4", 1, MAX_TIMEOUT_MS + 1),
                timeout_out_of_range(MAX_TIMEOUT_MS + 1),
            ),
            (
                0,
                allocate_for("t5", "b5", 1, u64::MAX),
                timeout_out_of_range(u64::MAX),
            ),
        ],
    );
}

#[test]
fn op_ids_and_account_ids_are_checked() {
    fn check_op_id(op_id: &str, expected: Result<(), IdProblem>) {
        assert_eq!(validate_op_id(op_id), expected, "{op_id:?}");
        let mut ledger = new_ledger(10);
        let result = ledger.apply(allocate(op_id, "alice", 1), T0).result;
        match expected {
            Ok(()) => assert!(result.is_ok(), "{op_id:?}: {result:?}"),
            Err(problem) => assert_eq!(
                result,
                Err(LedgerError::InvalidOpId {
                    op_id: op_id.chars().take(80).collect(),
                    problem,
                })
            ),
        }
    }
    let bad = |character| {
        Err(IdProblem::BadCharacter {
            character,
            allowed: "A-Z a-z 0-9 . _ : -".to_owned(),
        })
    };
    check_op_id("a", Ok(()));
    check_op_id("Op-1_2.3:4", Ok(()));
    check_op_id(&"x".repeat(64), Ok(()));
    check_op_id("", Err(IdProblem::Empty));
    check_op_id(
        &"x".repeat(65),
        Err(IdProblem::TooLong {
            n_bytes: 65,
            max_bytes: 64,
        }),
    );
    check_op_id(
        &"x".repeat(500),
        Err(IdProblem::TooLong {
            n_bytes: 500,
            max_bytes: 64,
        }),
    );
    check_op_id("a b", bad(' '));
    check_op_id("a/b", bad('/'));
    check_op_id("é", bad('é'));
    check_op_id("a\n", bad('\n'));

    fn check_account_id(account_id: &str, expected: &Result<(), IdProblem>) {
        assert_eq!(&validate_account_id(account_id), expected, "{account_id:?}");
    }
    check_account_id("alice", &Ok(()));
    check_account_id("site~Émile", &Ok(()));
    check_account_id(&"a".repeat(128), &Ok(()));
    check_account_id("", &Err(IdProblem::Empty));
    check_account_id(
        &"a".repeat(129),
        &Err(IdProblem::TooLong {
            n_bytes: 129,
            max_bytes: 128,
        }),
    );
    check_account_id(
        "a\u{7}",
        &Err(IdProblem::BadCharacter {
            character: '\u{7}',
            allowed: "printable characters".to_owned(),
        }),
    );
    let mut ledger = new_ledger(10);
    assert_eq!(
        ledger.apply(allocate("a1", "", 1), T0).result,
        Err(LedgerError::InvalidAccountId {
            account_id: String::new(),
            problem: IdProblem::Empty,
        })
    );
    assert!(
        ledger
            .apply(void("bad id", 1), T0)
            .result
            .is_err_and(|error| error.is_request_error())
    );
}

#[test]
fn the_journal_numbers_every_change_from_one_without_gaps() {
    let harness = check(
        10,
        &[
            (0, allocate("a1", "alice", 2), reserved(1, 2, 0)),
            (0, allocate("b1", "bob", 3), reserved(2, 3, 0)),
            (0, allocate("c1", "carol", 1), reserved(3, 1, 0)),
            (0, allocate("d1", "dave", 1), reserved(4, 1, 0)),
            (0, allocate("x1", "xavier", 9), quota_exceeded(9, 3)),
            (1_000, held("alice", 1), allocated(1, 2)),
            (1_000, void("v1", 2), voided(2, 3)),
            (
                1_000,
                refused("carol", 3, "g2"),
                Err(LedgerError::AlreadyClaimed {
                    holder_gateway: "g2".to_owned(),
                }),
            ),
            (
                TIMEOUT_MS,
                LedgerOp::Expire,
                Ok(LedgerOutcome::Swept { expired: vec![4] }),
            ),
        ],
    );
    let summary: Vec<(u64, &str, TransferId, &str, u64, &JournalKind, u64)> = harness
        .journal
        .iter()
        .map(|entry| {
            (
                entry.sequence,
                entry.op_id.as_str(),
                entry.transfer_id,
                entry.account_id.as_str(),
                entry.units,
                &entry.kind,
                entry.at_unix_ms - T0,
            )
        })
        .collect();
    let reserved_kind = JournalKind::Reserved {
        expires_at_unix_ms: T0 + TIMEOUT_MS,
    };
    let voided_kind = |reason| JournalKind::Voided { reason };
    assert_eq!(
        summary,
        vec![
            (1, "a1", 1, "alice", 2, &reserved_kind, 0),
            (2, "b1", 2, "bob", 3, &reserved_kind, 0),
            (3, "c1", 3, "carol", 1, &reserved_kind, 0),
            (4, "d1", 4, "dave", 1, &reserved_kind, 0),
            (5, "a1", 1, "alice", 2, &JournalKind::Posted, 1_000),
            (
                6,
                "v1",
                2,
                "bob",
                3,
                &voided_kind(VoidReason::Requested),
                1_000
            ),
            (
                7,
                "c1",
                3,
                "carol",
                1,
                &voided_kind(VoidReason::ClaimRefused),
                1_000
            ),
            (
                8,
                "d1",
                4,
                "dave",
                1,
                &voided_kind(VoidReason::Expired),
                TIMEOUT_MS
            ),
        ]
    );
    assert_eq!(harness.ledger.next_sequence(), 9);
    let balances = rebuild(10, &harness.journal).unwrap();
    assert_eq!(balances.pending, BTreeMap::new());
    assert_eq!(
        balances.claims,
        BTreeMap::from([(
            "alice".to_owned(),
            PostedClaim {
                transfer_id: 1,
                units: 2
            }
        )])
    );
    assert_eq!((balances.posted_units, balances.voided_units), (2, 5));
}

#[test]
fn rebuild_refuses_gaps_and_entries_the_ledger_could_not_write() {
    fn entry(
        sequence: u64,
        transfer_id: TransferId,
        account_id: &str,
        units: u64,
        kind: JournalKind,
    ) -> JournalEntry {
        JournalEntry {
            sequence,
            op_id: format!("op{sequence}"),
            transfer_id,
            account_id: account_id.to_owned(),
            units,
            kind,
            at_unix_ms: T0,
        }
    }
    let reserve = JournalKind::Reserved {
        expires_at_unix_ms: T0 + TIMEOUT_MS,
    };
    let expire = JournalKind::Voided {
        reason: VoidReason::Expired,
    };
    // A valid journal: quota 5, alice posts 2, bob reserves 3 and expires, carol reserves 3.
    let valid = vec![
        entry(1, 1, "alice", 2, reserve.clone()),
        entry(2, 1, "alice", 2, JournalKind::Posted),
        entry(3, 2, "bob", 3, reserve.clone()),
        entry(4, 2, "bob", 3, expire),
        entry(5, 3, "carol", 3, reserve),
    ];
    assert!(rebuild(5, &valid).is_ok());
    assert_eq!(rebuild(5, &[]), Ok(Balances::empty(5)));

    let check_rebuild = |edit: &dyn Fn(&mut Vec<JournalEntry>), expected: JournalError| {
        let mut entries = valid.clone();
        edit(&mut entries);
        assert_eq!(rebuild(5, &entries), Err(expected.clone()), "{expected}");
    };
    check_rebuild(
        &|entries| {
            entries.remove(1);
        },
        JournalError::SequenceGap {
            expected: 2,
            found: 3,
        },
    );
    check_rebuild(
        &|entries| {
            let repeated = entries[1].clone();
            entries.insert(2, repeated);
        },
        JournalError::SequenceGap {
            expected: 3,
            found: 2,
        },
    );
    check_rebuild(
        &|entries| entries[0].sequence = 0,
        JournalError::SequenceGap {
            expected: 1,
            found: 0,
        },
    );
    check_rebuild(
        &|entries| entries[1].transfer_id = 7,
        JournalError::NotPending {
            sequence: 2,
            transfer_id: 7,
        },
    );
    check_rebuild(
        &|entries| entries[3].kind = JournalKind::Posted,
        JournalError::OverQuota {
            sequence: 5,
            requested: 3,
            remaining: 0,
        },
    );
    check_rebuild(
        &|entries| entries[1].units = 3,
        JournalError::Mismatch {
            sequence: 2,
            transfer_id: 1,
        },
    );
    check_rebuild(
        &|entries| entries[3].account_id = "alice".to_owned(),
        JournalError::Mismatch {
            sequence: 4,
            transfer_id: 2,
        },
    );
    check_rebuild(
        &|entries| entries[4].units = 4,
        JournalError::OverQuota {
            sequence: 5,
            requested: 4,
            remaining: 3,
        },
    );
    check_rebuild(
        &|entries| entries[4].units = 0,
        JournalError::ZeroUnits { sequence: 5 },
    );
    check_rebuild(
        &|entries| entries[4].transfer_id = 2,
        JournalError::TransferReused {
            sequence: 5,
            transfer_id: 2,
        },
    );
    check_rebuild(
        &|entries| entries[4].account_id = "alice".to_owned(),
        JournalError::AccountBusy {
            sequence: 5,
            account_id: "alice".to_owned(),
        },
    );
    check_rebuild(
        &|entries| {
            let mut again = entries[1].clone();
            again.sequence = 6;
            entries.push(again);
        },
        JournalError::NotPending {
            sequence: 6,
            transfer_id: 1,
        },
    );
}

#[test]
fn a_batch_applies_each_op_on_its_own_in_order() {
    let mut ledger = new_ledger(4);
    let results: Vec<LedgerResult> = ledger
        .apply_batch(
            vec![
                allocate("a1", "alice", 3),
                allocate("b1", "bob", 2),
                allocate("c1", "carol", 0),
                void("v1", 1),
                allocate("b2", "bob", 2),
                held("bob", 2),
                allocate("a1", "alice", 3),
            ],
            T0,
        )
        .into_iter()
        .map(|applied| applied.result)
        .collect();
    assert_eq!(
        results,
        vec![
            reserved(1, 3, 0),
            quota_exceeded(2, 1),
            Err(LedgerError::UnitsOutOfRange {
                units: 0,
                max_units: 4
            }),
            voided(1, 3),
            reserved(2, 2, 0),
            allocated(2, 2),
            Err(LedgerError::Cancelled { transfer_id: 1 }),
        ]
    );
}

#[test]
fn memory_stays_bounded_and_forgotten_transfers_are_never_confused_with_new_ones() {
    let mut ledger = new_ledger(2);
    ledger.apply(allocate("a1", "alice", 1), T0);
    ledger.apply(held("alice", 1), T0);
    let n_cycles: u64 = 3_000;
    for cycle in 0..n_cycles {
        let transfer_id = cycle + 2;
        let reserved_result = ledger
            .apply(allocate(&format!("b{cycle}"), "bob", 1), T0)
            .result;
        assert_eq!(reserved_result, reserved(transfer_id, 1, 0));
        let voided_result = ledger
            .apply(void(&format!("v{cycle}"), transfer_id), T0)
            .result;
        assert_eq!(voided_result, voided(transfer_id, 1));
    }
    let (n_ops, n_transfers) = ledger.n_remembered();
    // One posted allocation, plus the settled ops and voided transfers kept.
    assert_eq!(n_ops, 1 + SETTLED_OPS_KEPT);
    assert_eq!(n_transfers, 1 + VOIDED_TRANSFERS_KEPT);
    // The posted claim and its op are kept for the ledger's life.
    assert_eq!(ledger.result_of("a1"), Some(&allocated(1, 1)));
    assert_eq!(
        ledger.apply(void("late", 1), T0).result,
        Err(LedgerError::AlreadyPosted { transfer_id: 1 })
    );
    // A forgotten transfer is unknown, and a claim held for it is released.
    let applied = ledger.apply(held("bob", 2), T0);
    assert_eq!(
        applied.result,
        Err(LedgerError::UnknownTransfer { transfer_id: 2 })
    );
    assert_eq!(
        messages_of(&applied.effects),
        vec![ClaimMessage::ReleaseClaim {
            transfer: transfer_ref("bob", 2)
        }]
    );
    // A retry of a forgotten op is applied anew, as a new transfer, never as the old one.
    assert_eq!(ledger.result_of("b0"), None);
    assert_eq!(
        ledger.apply(allocate("b0", "bob", 1), T0).result,
        reserved(n_cycles + 2, 1, 0)
    );
    // The latest ops are still idempotent.
    let last = n_cycles - 1;
    assert_eq!(
        ledger.apply(void(&format!("v{last}"), last + 2), T0).result,
        voided(last + 2, 1)
    );
}

#[test]
fn the_ledger_round_trips_through_message_pack() {
    let mut harness = check(
        10,
        &[
            (0, allocate("a1", "alice", 2), reserved(1, 2, 0)),
            (0, allocate("b1", "bob", 3), reserved(2, 3, 0)),
            (0, held("alice", 1), allocated(1, 2)),
            (0, void("v1", 2), voided(2, 3)),
            (0, allocate("c1", "carol", 1), reserved(3, 1, 0)),
        ],
    );
    let bytes = rmp_serde::to_vec_named(&harness.ledger).unwrap();
    let mut restored: Ledger = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(restored, harness.ledger);
    for op in [held("carol", 3), void("v1", 2), allocate("d1", "dave", 9)] {
        let from_restored = restored.apply(op.clone(), T0 + 1_000);
        assert_eq!(from_restored, harness.apply(op, 1_000));
    }
    let entry_bytes = rmp_serde::to_vec_named(&harness.journal).unwrap();
    let entries: Vec<JournalEntry> = rmp_serde::from_slice(&entry_bytes).unwrap();
    assert_eq!(entries, harness.journal);
}

#[test]
fn ledger_ids_never_collide() {
    assert_eq!(ledger_id("spring", "g1"), "6:spring/g1");
    assert_ne!(ledger_id("a/b", "c"), ledger_id("a", "b/c"));
}

/// One step of a random run against one ledger.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A new allocation (units may be out of range, the timeout too).
    Allocate {
        account: usize,
        units: u64,
        timeout_ms: u64,
    },
    /// A new void op.
    Void { transfer_id: TransferId },
    /// The claim book holds the transfer's claim.
    Held { transfer_id: TransferId },
    /// The claim book refuses it.
    Refused { transfer_id: TransferId },
    /// Time passes, then an expire op.
    Advance { ms: u64 },
    /// A recorded op again, same fields.
    Resubmit { pick: Index },
    /// A recorded op's id with other fields.
    Reuse { pick: Index },
}

const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn step(quota: u64) -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            0..ACCOUNTS.len(),
            0..=quota + 1,
            prop::sample::select(vec![500, MIN_TIMEOUT_MS, 20_000, TIMEOUT_MS, MAX_TIMEOUT_MS + 1]),
        )
            .prop_map(|(account, units, timeout_ms)| Step::Allocate { account, units, timeout_ms }),
        2 => (1..12u64).prop_map(|transfer_id| Step::Void { transfer_id }),
        3 => (1..12u64).prop_map(|transfer_id| Step::Held { transfer_id }),
        1 => (1..12u64).prop_map(|transfer_id| Step::Refused { transfer_id }),
        2 => (0..40_000u64).prop_map(|ms| Step::Advance { ms }),
        2 => any::<Index>().prop_map(|pick| Step::Resubmit { pick }),
        1 => any::<Index>().prop_map(|pick| Step::Reuse { pick }),
    ]
}

/// What the test knows of one ledger's history.
struct Model {
    harness: Harness,
    now_after_ms: u64,
    n_ops: u64,
    /// Recorded ops: the op and its latest result.
    recorded: BTreeMap<String, (LedgerOp, LedgerResult)>,
    /// Each reserved transfer's account.
    accounts: BTreeMap<TransferId, String>,
    /// Transfers resolved (posted or voided).
    resolved: BTreeMap<TransferId, u64>,
}

impl Model {
    fn new(quota: u64) -> Self {
        Self {
            harness: Harness::new(quota),
            now_after_ms: 0,
            n_ops: 0,
            recorded: BTreeMap::new(),
            accounts: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }

    fn fresh_op_id(&mut self) -> String {
        self.n_ops += 1;
        format!("op{}", self.n_ops)
    }

    fn account_of(&self, transfer_id: TransferId) -> String {
        self.accounts
            .get(&transfer_id)
            .cloned()
            .unwrap_or_else(|| "nobody".to_owned())
    }

    /// Applies `op`; checks its result and every invariant.
    fn apply(&mut self, op: LedgerOp) -> Result<(), TestCaseError> {
        let before = self.harness.ledger.balances();
        let n_entries = self.harness.journal.len();
        // Checks that the journal rebuilds the live balances.
        let applied = self.harness.apply(op.clone(), self.now_after_ms);
        let mut expired_units: u64 = 0;
        for entry in self.harness.journal.iter().skip(n_entries) {
            match entry.kind {
                JournalKind::Reserved { .. } => {
                    let account = entry.account_id.clone();
                    prop_assert!(self.accounts.insert(entry.transfer_id, account).is_none());
                }
                JournalKind::Posted | JournalKind::Voided { .. } => {
                    prop_assert!(self.accounts.contains_key(&entry.transfer_id));
                    let n_resolutions = self.resolved.entry(entry.transfer_id).or_insert(0);
                    *n_resolutions += 1;
                    prop_assert_eq!(*n_resolutions, 1, "resolved twice: {:?}", entry);
                    if entry.kind
                        == (JournalKind::Voided {
                            reason: VoidReason::Expired,
                        })
                    {
                        expired_units += entry.units;
                    }
                }
            }
        }
        for effect in &applied.effects {
            if let LedgerEffect::AllocationResolved { op_id, result } = effect {
                let Some((_, latest)) = self.recorded.get_mut(op_id) else {
                    return Err(TestCaseError::fail(format!(
                        "{op_id} resolved, never recorded"
                    )));
                };
                prop_assert!(
                    matches!(latest, Ok(LedgerOutcome::Reserved { .. })),
                    "{} was final already: {:?}, now {:?}",
                    op_id,
                    latest,
                    result
                );
                *latest = result.clone();
            }
        }
        let balances = self.harness.ledger.balances();
        prop_assert!(balances.pending_units + balances.posted_units <= balances.quota);
        let op_id_opt = match &op {
            LedgerOp::Allocate(request) => Some(request.op_id.clone()),
            LedgerOp::Void(request) => Some(request.op_id.clone()),
            LedgerOp::ClaimAnswer(_) | LedgerOp::Expire => None,
        };
        if let Some(op_id) = op_id_opt {
            match self.recorded.get(&op_id) {
                Some((first, result)) if *first == op => {
                    prop_assert_eq!(&applied.result, result, "resubmitted {}", op_id);
                }
                Some(_) => {
                    prop_assert_eq!(&applied.result, &Err(LedgerError::IdReused { op_id }));
                }
                None => {
                    if let LedgerOp::Allocate(request) = &op {
                        let remaining = before.remaining() + expired_units;
                        match &applied.result {
                            Err(LedgerError::QuotaExceeded {
                                requested,
                                remaining: stated,
                            }) => {
                                prop_assert_eq!(*stated, remaining);
                                prop_assert!(*requested > remaining);
                            }
                            Ok(LedgerOutcome::Reserved { units, .. }) => {
                                prop_assert!(*units <= remaining);
                                prop_assert_eq!(*units, request.units);
                            }
                            _ => {}
                        }
                    }
                    let remembered = applied
                        .result
                        .as_ref()
                        .err()
                        .is_none_or(|error| !error.is_request_error());
                    if remembered {
                        self.recorded.insert(op_id, (op, applied.result.clone()));
                    }
                }
            }
        }
        for (op_id, (_, result)) in &self.recorded {
            prop_assert_eq!(self.harness.ledger.result_of(op_id), Some(result));
        }
        Ok(())
    }

    fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Allocate {
                account,
                units,
                timeout_ms,
            } => {
                let op_id = self.fresh_op_id();
                let account_id = ACCOUNTS.get(account).copied().unwrap_or("alice");
                self.apply(allocate_for(&op_id, account_id, units, timeout_ms))
            }
            Step::Void { transfer_id } => {
                let op_id = self.fresh_op_id();
                self.apply(void(&op_id, transfer_id))
            }
            Step::Held { transfer_id } => {
                let account_id = self.account_of(transfer_id);
                self.apply(held(&account_id, transfer_id))
            }
            Step::Refused { transfer_id } => {
                let account_id = self.account_of(transfer_id);
                self.apply(refused(&account_id, transfer_id, "g2"))
            }
            Step::Advance { ms } => {
                self.now_after_ms += ms;
                self.apply(LedgerOp::Expire)
            }
            Step::Resubmit { pick } => {
                let ops: Vec<LedgerOp> = self.recorded.values().map(|(op, _)| op.clone()).collect();
                if ops.is_empty() {
                    return Ok(());
                }
                self.apply(pick.get(&ops).clone())
            }
            Step::Reuse { pick } => {
                let ops: Vec<LedgerOp> = self.recorded.values().map(|(op, _)| op.clone()).collect();
                if ops.is_empty() {
                    return Ok(());
                }
                let other = match pick.get(&ops) {
                    LedgerOp::Allocate(request) if pick.index(2) == 0 => void(&request.op_id, 1),
                    LedgerOp::Allocate(request) => {
                        let account_id = if request.account_id == "alice" {
                            "bob"
                        } else {
                            "alice"
                        };
                        allocate_for(&request.op_id, account_id, 1, request.timeout_ms)
                    }
                    LedgerOp::Void(request) => void(&request.op_id, request.transfer_id + 1),
                    LedgerOp::ClaimAnswer(_) | LedgerOp::Expire => return Ok(()),
                };
                self.apply(other)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_runs_keep_every_ledger_invariant(
        (quota, steps) in (1..=8u64).prop_flat_map(|quota| {
            (Just(quota), proptest::collection::vec(step(quota), 1..60))
        }),
    ) {
        let mut model = Model::new(quota);
        for step in steps {
            model.run(step)?;
        }
        // Whatever the run, everything left pending expires and the journal still agrees.
        model.now_after_ms += MAX_TIMEOUT_MS;
        model.apply(LedgerOp::Expire)?;
        let balances = model.harness.ledger.balances();
        prop_assert_eq!(balances.pending_units, 0);
        prop_assert_eq!(
            model.resolved.len(),
            model.accounts.len(),
            "every transfer is resolved once"
        );
        for (_, result) in model.recorded.values() {
            let pending = matches!(result, Ok(LedgerOutcome::Reserved { .. }));
            prop_assert!(!pending, "still pending: {:?}", result);
        }
    }
}
