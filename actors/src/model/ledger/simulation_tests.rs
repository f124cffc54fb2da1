//! A simulation of one campaign across venues: a ledger per venue (small quotas) and a claim
//! book per account (few accounts, so they contend), with every message between them delivered
//! late, twice, or out of order. Rules 1 and 2 are checked after every step; after everything is
//! delivered and expired, every posted transfer and every confirmed claim must match one to one.

use super::*;
use crate::model::claim_book::{ClaimBook, ClaimState, Holder};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeSet;

const CAMPAIGN: &str = "spring";
const N_VENUES: usize = 3;
const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const T0: u64 = 1_700_000_000_000;

/// A message between entities, in flight.
#[derive(Debug, Clone)]
enum Message {
    ToBook(ClaimMessage),
    ToLedger(ClaimBookReply),
}

/// One step of the schedule.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// A gateway allocates units to an account.
    Allocate {
        venue: usize,
        account: usize,
        units: u64,
        timeout_ms: u64,
    },
    /// A gateway resubmits an earlier allocation.
    Retry { pick: Index },
    /// A gateway cancels a transfer (maybe not pending, maybe unknown).
    Cancel {
        venue: usize,
        transfer_id: TransferId,
    },
    /// One message in flight arrives (and leaves the pool).
    Deliver { pick: Index },
    /// One message in flight is duplicated.
    Duplicate { pick: Index },
    /// Time passes, and one venue's ledger expires what is due.
    Advance { venue: usize, ms: u64 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (
            0..N_VENUES,
            0..ACCOUNTS.len(),
            1..=3u64,
            prop::sample::select(vec![MIN_TIMEOUT_MS, 5_000, 30_000]),
        )
            .prop_map(|(venue, account, units, timeout_ms)| Action::Allocate {
                venue,
                account,
                units,
                timeout_ms,
            }),
        1 => any::<Index>().prop_map(|pick| Action::Retry { pick }),
        1 => (0..N_VENUES, 1..8u64)
            .prop_map(|(venue, transfer_id)| Action::Cancel { venue, transfer_id }),
        6 => any::<Index>().prop_map(|pick| Action::Deliver { pick }),
        2 => any::<Index>().prop_map(|pick| Action::Duplicate { pick }),
        2 => (0..N_VENUES, 0..20_000u64).prop_map(|(venue, ms)| Action::Advance { venue, ms }),
    ]
}

fn gateway_id(venue: usize) -> String {
    format!("g{venue}")
}

struct World {
    now_unix_ms: u64,
    ledgers: Vec<Ledger>,
    journals: Vec<Vec<JournalEntry>>,
    books: BTreeMap<String, ClaimBook>,
    in_flight: Vec<Message>,
    /// Every allocation submitted: its venue and request.
    allocations: Vec<(usize, AllocateRequest)>,
    n_ops: u64,
}

impl World {
    fn new(quotas: &[u64]) -> Self {
        let ledgers = quotas
            .iter()
            .enumerate()
            .map(|(venue, quota)| Ledger::new(CAMPAIGN, gateway_id(venue), *quota).unwrap())
            .collect();
        Self {
            now_unix_ms: T0,
            ledgers,
            journals: vec![Vec::new(); quotas.len()],
            books: ACCOUNTS
                .iter()
                .map(|account_id| {
                    (
                        (*account_id).to_owned(),
                        ClaimBook::new(CAMPAIGN, *account_id),
                    )
                })
                .collect(),
            in_flight: Vec::new(),
            allocations: Vec::new(),
            n_ops: 0,
        }
    }

    fn apply(&mut self, venue: usize, op: LedgerOp) -> LedgerResult {
        let ledger = self.ledgers.get_mut(venue).unwrap();
        let applied = ledger.apply(op, self.now_unix_ms);
        for effect in applied.effects {
            match effect {
                LedgerEffect::Journal(entry) => self.journals[venue].push(entry),
                LedgerEffect::ToClaimBook(message) => self.in_flight.push(Message::ToBook(message)),
                LedgerEffect::AllocationResolved { .. } => {}
            }
        }
        applied.result
    }

    fn deliver(&mut self, message: Message) {
        match message {
            Message::ToBook(message) => {
                let book = self.books.get_mut(&message.transfer().account_id).unwrap();
                if let Some(reply) = book.handle(&message, self.now_unix_ms).unwrap() {
                    self.in_flight.push(Message::ToLedger(reply));
                }
            }
            Message::ToLedger(reply) => {
                let venue = (0..self.ledgers.len())
                    .find(|venue| gateway_id(*venue) == reply.transfer().gateway_id)
                    .unwrap();
                let result = self.apply(venue, LedgerOp::ClaimAnswer(reply));
                assert!(
                    !matches!(result, Err(LedgerError::WrongLedger { .. })),
                    "answers reach their own ledger"
                );
            }
        }
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::Allocate {
                venue,
                account,
                units,
                timeout_ms,
            } => {
                self.n_ops += 1;
                let request = AllocateRequest {
                    op_id: format!("op{}", self.n_ops),
                    account_id: ACCOUNTS[account].to_owned(),
                    units,
                    timeout_ms,
                };
                self.allocations.push((venue, request.clone()));
                let result = self.apply(venue, LedgerOp::Allocate(request));
                assert!(
                    !matches!(result, Err(LedgerError::IdReused { .. })),
                    "a fresh op id is never taken"
                );
            }
            Action::Retry { pick } => {
                if self.allocations.is_empty() {
                    return;
                }
                let (venue, request) = pick.get(&self.allocations).clone();
                let op_id = request.op_id.clone();
                let result = self.apply(venue, LedgerOp::Allocate(request));
                if let Some(recorded) = self.ledgers[venue].result_of(&op_id) {
                    assert_eq!(&result, recorded, "a retry answers the recorded result");
                }
            }
            Action::Cancel { venue, transfer_id } => {
                self.n_ops += 1;
                let op_id = format!("op{}", self.n_ops);
                let result = self.apply(venue, LedgerOp::Void(VoidRequest { op_id, transfer_id }));
                assert!(
                    !matches!(result, Err(LedgerError::IdReused { .. })),
                    "a fresh op id is never taken"
                );
            }
            Action::Deliver { pick } => {
                if !self.in_flight.is_empty() {
                    let message = self.in_flight.remove(pick.index(self.in_flight.len()));
                    self.deliver(message);
                }
            }
            Action::Duplicate { pick } => {
                if !self.in_flight.is_empty() {
                    let message = pick.get(&self.in_flight).clone();
                    self.in_flight.push(message);
                }
            }
            Action::Advance { venue, ms } => {
                self.now_unix_ms += ms;
                self.expire(venue);
            }
        }
    }

    fn expire(&mut self, venue: usize) {
        let result = self.apply(venue, LedgerOp::Expire);
        assert!(
            matches!(result, Ok(LedgerOutcome::Swept { .. })),
            "{result:?}"
        );
    }

    /// Delivers every message in flight, oldest first, until none is left.
    fn drain(&mut self) {
        while !self.in_flight.is_empty() {
            let message = self.in_flight.remove(0);
            self.deliver(message);
        }
    }

    /// Every posted transfer: (gateway, transfer, account).
    fn posted(&self) -> BTreeSet<(String, TransferId, String)> {
        self.ledgers
            .iter()
            .flat_map(|ledger| {
                ledger
                    .balances()
                    .claims
                    .into_iter()
                    .map(|(account_id, claim)| {
                        (
                            ledger.gateway_id().to_owned(),
                            claim.transfer_id,
                            account_id,
                        )
                    })
            })
            .collect()
    }

    /// Every confirmed claim: (gateway, transfer, account).
    fn confirmed(&self) -> BTreeSet<(String, TransferId, String)> {
        self.books
            .iter()
            .filter_map(|(account_id, book)| match book.state() {
                ClaimState::Confirmed { holder, .. } => Some((
                    holder.gateway_id.clone(),
                    holder.transfer_id,
                    account_id.clone(),
                )),
                ClaimState::Free | ClaimState::Held { .. } => None,
            })
            .collect()
    }

    /// Rules 1 and 2, and the agreement between ledgers and claim books, at any moment.
    fn check_invariants(&self) -> Result<(), TestCaseError> {
        for (ledger, journal) in self.ledgers.iter().zip(&self.journals) {
            let balances = ledger.balances();
            prop_assert!(
                balances.pending_units + balances.posted_units <= balances.quota,
                "{} over quota: {:?}",
                ledger.gateway_id(),
                balances
            );
            prop_assert_eq!(rebuild(ledger.quota(), journal), Ok(balances));
        }
        let posted = self.posted();
        let accounts_posted: Vec<&String> = posted.iter().map(|(_, _, account)| account).collect();
        let distinct: BTreeSet<&String> = accounts_posted.iter().copied().collect();
        prop_assert_eq!(
            accounts_posted.len(),
            distinct.len(),
            "an account was posted twice: {:?}",
            posted
        );
        for (gateway, transfer_id, account_id) in &posted {
            let holder_opt: Option<&Holder> = match self.books[account_id].state() {
                ClaimState::Held { holder } | ClaimState::Confirmed { holder, .. } => Some(holder),
                ClaimState::Free => None,
            };
            prop_assert!(
                holder_opt
                    .is_some_and(|holder| holder.gateway_id == *gateway
                        && holder.transfer_id == *transfer_id),
                "{}/{} is posted for {} but the book says {:?}",
                gateway,
                transfer_id,
                account_id,
                self.books[account_id].state()
            );
        }
        for confirmed in self.confirmed() {
            prop_assert!(
                posted.contains(&confirmed),
                "{:?} is confirmed, not posted",
                confirmed
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn venues_and_claim_books_agree_whatever_the_delivery_order(
        quotas in proptest::collection::vec(1..=4u64, N_VENUES),
        actions in proptest::collection::vec(action(), 1..150),
    ) {
        let mut world = World::new(&quotas);
        for action in actions {
            world.run(action);
            world.check_invariants()?;
        }
        world.drain();
        world.check_invariants()?;
        world.now_unix_ms += MAX_TIMEOUT_MS;
        for venue in 0..N_VENUES {
            world.expire(venue);
        }
        world.drain();
        world.check_invariants()?;

        // Nothing is left pending, and no claim is left held.
        for ledger in &world.ledgers {
            prop_assert_eq!(ledger.balances().pending_units, 0);
        }
        for (account_id, book) in &world.books {
            prop_assert!(
                !matches!(book.state(), ClaimState::Held { .. }),
                "{}'s claim is still held: {:?}", account_id, book.state()
            );
        }
        // Posted transfers and confirmed claims match one to one.
        prop_assert_eq!(world.posted(), world.confirmed());
        // Every allocation has its final result, and an allocated one is the posted transfer.
        for (venue, request) in &world.allocations {
            let ledger = &world.ledgers[*venue];
            match ledger.result_of(&request.op_id) {
                Some(Ok(LedgerOutcome::Reserved { .. })) => {
                    prop_assert!(false, "{} is still pending", request.op_id);
                }
                Some(Ok(LedgerOutcome::Allocated { transfer_id, units })) => {
                    prop_assert_eq!(*units, request.units);
                    prop_assert_eq!(
                        ledger.balances().claims.get(&request.account_id).map(|claim| claim.transfer_id),
                        Some(*transfer_id)
                    );
                }
                _ => {}
            }
        }
    }
}
