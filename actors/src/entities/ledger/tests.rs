//! The ledger and claim-book entities together, with their messages carried by a small pump
//! in place of the bus: allocations reach their final result, the journal written through the
//! host's effects rebuilds the live balances, and no message order gives an account two claims.

use super::*;
use crate::entities::claim_book::ClaimBookEntity;
use crate::entities::decode;
use crate::entities::test_support::handle_payload;
use crate::model::claim_book::ClaimBook;
use crate::model::ledger::{JournalEntry, LedgerOutcome, rebuild};
use std::collections::{BTreeMap, VecDeque};

const CAMPAIGN: &str = "spring";
const NOW: u64 = 1_000_000;

/// Two venues' ledgers, the claim books they ask, the journals they wrote and what they sent
/// to accounts.
#[derive(Default)]
struct Cluster {
    ledgers: BTreeMap<String, LedgerEntityState>,
    books: BTreeMap<String, Option<ClaimBook>>,
    journals: BTreeMap<String, Vec<JournalNote>>,
    to_accounts: Vec<(String, UserRequest)>,
    in_flight: VecDeque<Outgoing>,
}

fn handle_as<B: EntityBehavior>(
    state: &mut B::State,
    entity_id: &str,
    payload: &[u8],
    now_unix_ms: u64,
) -> Effects {
    handle_payload::<B>(state, entity_id, payload, now_unix_ms).unwrap()
}

impl Cluster {
    fn ask(&mut self, gateway_id: &str, request: &LedgerRequest) -> LedgerReply {
        self.ask_at(gateway_id, request, NOW)
    }

    fn ask_at(&mut self, gateway_id: &str, request: &LedgerRequest, now: u64) -> LedgerReply {
        let id = ledger_id(CAMPAIGN, gateway_id);
        let payload = encode(request).unwrap();
        let effects = self.ledger_handles(&id, &payload, now);
        decode(effects.reply_opt.as_deref().unwrap()).unwrap()
    }

    fn ledger_handles(&mut self, id: &str, payload: &[u8], now: u64) -> Effects {
        let state = self.ledgers.entry(id.to_owned()).or_default();
        let effects = handle_as::<LedgerEntity>(state, id, payload, now);
        self.journals
            .entry(id.to_owned())
            .or_default()
            .extend(effects.journal.iter().cloned());
        self.in_flight.extend(effects.outgoing.iter().cloned());
        effects
    }

    fn open(&mut self, gateway_id: &str, quota: u64, user_limit: u64) {
        let open = LedgerRequest::Open {
            campaign_id: CAMPAIGN.to_owned(),
            gateway_id: gateway_id.to_owned(),
            quota,
            user_limit,
        };
        assert_eq!(
            self.ask(gateway_id, &open),
            LedgerReply::Opened { quota, user_limit }
        );
    }

    /// Delivers one message in flight (the `pick`-th); returns false when none is left.
    fn deliver(&mut self, pick: usize) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let index = pick % self.in_flight.len();
        let Some(message) = self.in_flight.remove(index) else {
            return false;
        };
        let id = message.target.id.clone();
        match message.target.kind.as_str() {
            "claim_book" => {
                let state = self.books.entry(id.clone()).or_default();
                let effects = handle_as::<ClaimBookEntity>(state, &id, &message.payload, NOW);
                self.in_flight.extend(effects.outgoing);
            }
            "ledger" => {
                self.ledger_handles(&id, &message.payload, NOW);
            }
            "user" => {
                let request: UserRequest = decode(&message.payload).unwrap();
                self.to_accounts.push((id, request));
            }
            other => panic!("message to an unexpected kind {other}"),
        }
        true
    }

    fn drain(&mut self) {
        while self.deliver(0) {}
    }

    fn balances(&mut self, gateway_id: &str) -> (Balances, u64) {
        match self.ask(gateway_id, &LedgerRequest::Inspect) {
            LedgerReply::Balances {
                balances,
                next_sequence,
                ..
            } => (balances, next_sequence),
            other => panic!("not balances: {other:?}"),
        }
    }

    fn rebuilt(&self, gateway_id: &str, quota: u64) -> Balances {
        let entries: Vec<JournalEntry> = self
            .journals
            .get(&ledger_id(CAMPAIGN, gateway_id))
            .map(|notes| {
                notes
                    .iter()
                    .map(|note| {
                        let entry: JournalEntry = decode(&note.body).unwrap();
                        assert_eq!(entry.sequence, note.sequence);
                        entry
                    })
                    .collect()
            })
            .unwrap_or_default();
        rebuild(quota, &entries).unwrap()
    }
}

fn allocate(op_id: &str, account_id: &str, units: u64) -> AllocateRequest {
    AllocateRequest {
        op_id: op_id.to_owned(),
        account_id: account_id.to_owned(),
        units,
        timeout_ms: 10_000,
    }
}

fn results(reply: LedgerReply) -> Vec<LedgerResult> {
    match reply {
        LedgerReply::Results(results) => results,
        other => panic!("not results: {other:?}"),
    }
}

#[test]
fn a_batch_is_reserved_then_posted_through_the_claim_books_and_the_journal_rebuilds_it() {
    let mut cluster = Cluster::default();
    cluster.open("g1", 10, 4);
    let batch = LedgerRequest::Allocate {
        requests: vec![
            allocate("op-1", "alice", 4),
            allocate("op-2", "bob", 4),
            allocate("op-3", "carol", 3),
            allocate("op-4", "dave", 5),
        ],
    };
    let answers = results(cluster.ask("g1", &batch));
    assert!(matches!(
        answers.as_slice(),
        [
            Ok(LedgerOutcome::Reserved { units: 4, .. }),
            Ok(LedgerOutcome::Reserved { units: 4, .. }),
            Err(LedgerError::QuotaExceeded {
                requested: 3,
                remaining: 2
            }),
            Err(LedgerError::UnitsOutOfRange {
                units: 5,
                max_units: 4
            }),
        ]
    ));
    cluster.drain();
    let recorded = cluster.ask(
        "g1",
        &LedgerRequest::Results {
            op_ids: vec!["op-1".to_owned(), "op-2".to_owned(), "op-9".to_owned()],
        },
    );
    assert!(matches!(
        recorded,
        LedgerReply::Recorded(ref all) if matches!(all.as_slice(), [
            Some(Ok(LedgerOutcome::Allocated { units: 4, .. })),
            Some(Ok(LedgerOutcome::Allocated { units: 4, .. })),
            None,
        ])
    ));
    let issued: Vec<&str> = cluster
        .to_accounts
        .iter()
        .filter(|(_, request)| matches!(request, UserRequest::UnitsIssued { units: 4, .. }))
        .map(|(account, _)| account.as_str())
        .collect();
    assert_eq!(issued, ["alice", "bob"]);
    let (live, next_sequence) = cluster.balances("g1");
    assert_eq!(
        (live.posted_units, live.pending_units, live.remaining()),
        (8, 0, 2)
    );
    assert_eq!(next_sequence, 5, "two reservations and two posts");
    assert_eq!(cluster.rebuilt("g1", 10), live);
}

#[test]
fn an_account_claims_once_across_venues_whatever_the_delivery_order() {
    for pick in 0..6 {
        let mut cluster = Cluster::default();
        cluster.open("g1", 5, 5);
        cluster.open("g2", 5, 5);
        for gateway in ["g1", "g2"] {
            let batch = LedgerRequest::Allocate {
                requests: vec![allocate(&format!("{gateway}-op"), "alice", 2)],
            };
            results(cluster.ask(gateway, &batch));
        }
        while cluster.deliver(pick) {}
        let (first, _) = cluster.balances("g1");
        let (second, _) = cluster.balances("g2");
        let n_claims = first.claims.len() + second.claims.len();
        assert_eq!(n_claims, 1, "delivery order {pick}");
        assert_eq!(first.pending_units + second.pending_units, 0);
        assert_eq!(cluster.rebuilt("g1", 5), first);
        assert_eq!(cluster.rebuilt("g2", 5), second);
        let loser = if first.claims.is_empty() { "g1" } else { "g2" };
        let recorded = cluster.ask(
            loser,
            &LedgerRequest::Results {
                op_ids: vec![format!("{loser}-op")],
            },
        );
        assert!(
            matches!(recorded, LedgerReply::Recorded(ref all) if matches!(all.as_slice(), [Some(Err(LedgerError::AlreadyClaimed { .. }))])),
            "{recorded:?}"
        );
    }
}

#[test]
fn a_resubmitted_batch_answers_its_recorded_results_and_changes_nothing() {
    let mut cluster = Cluster::default();
    cluster.open("g1", 3, 2);
    let batch = LedgerRequest::Allocate {
        requests: vec![allocate("op-1", "alice", 2), allocate("op-2", "bob", 2)],
    };
    let id = ledger_id(CAMPAIGN, "g1");
    let payload = encode(&batch).unwrap();
    let first = cluster.ledger_handles(&id, &payload, NOW);
    assert!(
        first.state_changed,
        "a reservation and a refusal are recorded"
    );
    cluster.drain();
    let again = cluster.ledger_handles(&id, &payload, NOW + 1);
    assert!(!again.state_changed, "a resubmission is only answered");
    assert!(again.outgoing.is_empty() && again.journal.is_empty());
    let answers: LedgerReply = decode(again.reply_opt.as_deref().unwrap()).unwrap();
    assert!(matches!(
        results(answers).as_slice(),
        [
            Ok(LedgerOutcome::Allocated { units: 2, .. }),
            Err(LedgerError::QuotaExceeded { .. })
        ]
    ));
}

#[test]
fn a_redelivered_claim_answer_posts_nothing_twice() {
    let mut cluster = Cluster::default();
    cluster.open("g1", 5, 5);
    results(cluster.ask(
        "g1",
        &LedgerRequest::Allocate {
            requests: vec![allocate("op-1", "alice", 2)],
        },
    ));
    cluster.deliver(0); // the hold reaches the book
    let Some(answer) = cluster.in_flight.front().cloned() else {
        panic!("the book answered nothing");
    };
    cluster.in_flight.push_back(answer);
    cluster.drain();
    let (live, _) = cluster.balances("g1");
    assert_eq!(live.posted_units, 2);
    let n_issued = cluster
        .to_accounts
        .iter()
        .filter(|(_, request)| matches!(request, UserRequest::UnitsIssued { .. }))
        .count();
    assert_eq!(n_issued, 1);
    assert_eq!(cluster.rebuilt("g1", 5), live);
}

#[test]
fn expired_reservations_release_their_units_when_asked_about() {
    let mut cluster = Cluster::default();
    cluster.open("g1", 5, 5);
    results(cluster.ask(
        "g1",
        &LedgerRequest::Allocate {
            requests: vec![allocate("op-1", "alice", 5)],
        },
    ));
    // The claim book never answers: the hold is lost in flight.
    cluster.in_flight.clear();
    let later = NOW + 10_000;
    let recorded = cluster.ask_at(
        "g1",
        &LedgerRequest::Results {
            op_ids: vec!["op-1".to_owned()],
        },
        later,
    );
    assert!(matches!(
        recorded,
        LedgerReply::Recorded(ref all) if matches!(all.as_slice(), [Some(Err(LedgerError::Expired { .. }))])
    ));
    let (live, _) = cluster.balances("g1");
    assert_eq!((live.pending_units, live.remaining()), (0, 5));
    assert_eq!(cluster.rebuilt("g1", 5), live);
}

#[test]
fn usage_is_cumulative_bounded_by_the_units_and_forwarded_to_the_account() {
    let mut cluster = Cluster::default();
    cluster.open("g1", 5, 5);
    results(cluster.ask(
        "g1",
        &LedgerRequest::Allocate {
            requests: vec![allocate("op-1", "alice", 3)],
        },
    ));
    let report = |account: &str, used_total| LedgerRequest::ReportUsage {
        account_id: account.to_owned(),
        used_total,
    };
    assert!(
        matches!(
            cluster.ask("g1", &report("alice", 1)),
            LedgerReply::Refused(LedgerEntityError::NoUnits { .. })
        ),
        "reserved units are not yet the account's"
    );
    cluster.drain();
    cluster.to_accounts.clear();
    assert_eq!(cluster.ask("g1", &report("alice", 2)), LedgerReply::Done);
    assert_eq!(cluster.ask("g1", &report("alice", 1)), LedgerReply::Done);
    assert_eq!(cluster.ask("g1", &report("alice", 2)), LedgerReply::Done);
    assert!(matches!(
        cluster.ask("g1", &report("alice", 4)),
        LedgerReply::Refused(LedgerEntityError::UsageOverUnits { units: 3, .. })
    ));
    assert!(matches!(
        cluster.ask("g1", &report("bob", 1)),
        LedgerReply::Refused(LedgerEntityError::NoUnits { .. })
    ));
    cluster.drain();
    assert_eq!(
        cluster.to_accounts.len(),
        1,
        "only the one increase is forwarded"
    );
    let standings = cluster.ask("g1", &LedgerRequest::Standings);
    assert_eq!(
        standings,
        LedgerReply::Standings(vec![AccountStanding {
            account_id: "alice".to_owned(),
            units_allocated: 3,
            units_used: 2,
        }])
    );
}

#[test]
fn a_ledger_opens_once_with_sane_terms_for_its_own_id_only() {
    let mut cluster = Cluster::default();
    let open = |gateway: &str, quota, user_limit| LedgerRequest::Open {
        campaign_id: CAMPAIGN.to_owned(),
        gateway_id: gateway.to_owned(),
        quota,
        user_limit,
    };
    assert_eq!(
        cluster.ask("g1", &LedgerRequest::Inspect),
        LedgerReply::Refused(LedgerEntityError::NotOpen)
    );
    assert_eq!(
        cluster.ask("g1", &open("g1", 5, 6)),
        LedgerReply::Refused(LedgerEntityError::BadTerms)
    );
    assert!(matches!(
        cluster.ask("g1", &open("g2", 5, 5)),
        LedgerReply::Refused(LedgerEntityError::WrongLedger { .. })
    ));
    cluster.open("g1", 5, 5);
    cluster.open("g1", 5, 5);
    assert_eq!(
        cluster.ask("g1", &open("g1", 6, 5)),
        LedgerReply::Refused(LedgerEntityError::OpenedOtherwise {
            quota: 5,
            user_limit: 5
        })
    );
    let too_many = LedgerRequest::Allocate {
        requests: (0..=MAX_ALLOCATIONS_PER_BATCH)
            .map(|index| allocate(&format!("op-{index}"), &format!("user-{index}"), 1))
            .collect(),
    };
    assert!(matches!(
        cluster.ask("g1", &too_many),
        LedgerReply::Refused(LedgerEntityError::TooMany { .. })
    ));
}
