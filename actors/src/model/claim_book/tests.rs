//! Unit tests and a property test of the claim book.

use super::*;
use proptest::prelude::*;

const CAMPAIGN: &str = "spring";
const ACCOUNT: &str = "alice";
const T0: u64 = 1_700_000_000_000;

fn transfer(gateway_id: &str, transfer_id: u64) -> TransferRef {
    TransferRef {
        campaign_id: CAMPAIGN.to_owned(),
        account_id: ACCOUNT.to_owned(),
        gateway_id: gateway_id.to_owned(),
        transfer_id,
    }
}

fn hold(gateway_id: &str, transfer_id: u64) -> ClaimMessage {
    ClaimMessage::HoldClaim {
        transfer: transfer(gateway_id, transfer_id),
        units: 2,
    }
}

fn confirm(gateway_id: &str, transfer_id: u64) -> ClaimMessage {
    ClaimMessage::ConfirmClaim {
        transfer: transfer(gateway_id, transfer_id),
    }
}

fn release(gateway_id: &str, transfer_id: u64) -> ClaimMessage {
    ClaimMessage::ReleaseClaim {
        transfer: transfer(gateway_id, transfer_id),
    }
}

fn held(gateway_id: &str, transfer_id: u64) -> Option<ClaimBookReply> {
    Some(ClaimBookReply::ClaimHeld {
        transfer: transfer(gateway_id, transfer_id),
    })
}

fn refused(gateway_id: &str, transfer_id: u64, holder_gateway: &str) -> Option<ClaimBookReply> {
    Some(ClaimBookReply::ClaimRefused {
        transfer: transfer(gateway_id, transfer_id),
        holder_gateway: holder_gateway.to_owned(),
    })
}

/// Where the claim should stand: `None` for free, else the holder and whether confirmed.
type Expected<'a> = Option<(&'a str, u64, bool)>;

/// Hands each message to a fresh book in turn and checks the answer and where the claim stands
/// after it.
fn check(steps: &[(ClaimMessage, Option<ClaimBookReply>, Expected<'_>)]) {
    let mut book = ClaimBook::new(CAMPAIGN, ACCOUNT);
    for (position, (message, expected_reply, expected_state)) in steps.iter().enumerate() {
        let reply = book.handle(message, T0).unwrap();
        assert_eq!(&reply, expected_reply, "step {position}: {message:?}");
        let state = match book.state() {
            ClaimState::Free => None,
            ClaimState::Held { holder } => {
                Some((holder.gateway_id.as_str(), holder.transfer_id, false))
            }
            ClaimState::Confirmed { holder, .. } => {
                Some((holder.gateway_id.as_str(), holder.transfer_id, true))
            }
        };
        assert_eq!(&state, expected_state, "step {position}: {message:?}");
    }
}

#[test]
fn the_first_hold_takes_the_claim_and_others_are_refused_naming_the_holder() {
    check(&[
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, false))),
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, false))),
        (
            hold("g2", 1),
            refused("g2", 1, "g1"),
            Some(("g1", 1, false)),
        ),
        (
            hold("g1", 2),
            refused("g1", 2, "g1"),
            Some(("g1", 1, false)),
        ),
        (confirm("g1", 1), None, Some(("g1", 1, true))),
        (confirm("g1", 1), None, Some(("g1", 1, true))),
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, true))),
        (hold("g3", 7), refused("g3", 7, "g1"), Some(("g1", 1, true))),
    ]);
}

#[test]
fn a_confirmed_claim_is_final() {
    check(&[
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, false))),
        (confirm("g1", 1), None, Some(("g1", 1, true))),
        (release("g1", 1), None, Some(("g1", 1, true))),
        (release("g2", 9), None, Some(("g1", 1, true))),
        (hold("g2", 1), refused("g2", 1, "g1"), Some(("g1", 1, true))),
    ]);
}

#[test]
fn a_release_frees_the_claim_only_from_its_holder() {
    check(&[
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, false))),
        (release("g2", 9), None, Some(("g1", 1, false))),
        (release("g1", 2), None, Some(("g1", 1, false))),
        (confirm("g2", 1), None, Some(("g1", 1, false))),
        (release("g1", 1), None, None),
        (release("g1", 1), None, None),
        (hold("g2", 1), held("g2", 1), Some(("g2", 1, false))),
        (confirm("g2", 1), None, Some(("g2", 1, true))),
    ]);
}

#[test]
fn a_released_transfer_never_takes_the_claim_again() {
    check(&[
        (hold("g1", 1), held("g1", 1), Some(("g1", 1, false))),
        (release("g1", 1), None, None),
        // A late duplicate of the released hold: its ledger voided it and waits for nothing.
        (hold("g1", 1), None, None),
        // A release that overtook its hold works the same.
        (release("g2", 5), None, None),
        (hold("g2", 5), None, None),
        (confirm("g1", 1), None, None),
        (hold("g3", 1), held("g3", 1), Some(("g3", 1, false))),
    ]);
}

#[test]
fn only_the_last_releases_are_remembered() {
    let mut book = ClaimBook::new(CAMPAIGN, ACCOUNT);
    let n_releases = u64::try_from(RELEASES_KEPT).unwrap() + 1;
    for transfer_id in 1..=n_releases {
        book.handle(&release("g1", transfer_id), T0).unwrap();
    }
    assert!(!book.was_released(&transfer("g1", 1)));
    assert!(book.was_released(&transfer("g1", 2)));
    assert!(book.was_released(&transfer("g1", n_releases)));
    // The forgotten one may hold again: its ledger then answers with a release.
    assert_eq!(book.handle(&hold("g1", 1), T0).unwrap(), held("g1", 1));
}

#[test]
fn a_message_for_another_claim_is_refused() {
    let mut book = ClaimBook::new(CAMPAIGN, ACCOUNT);
    let mut other = transfer("g1", 1);
    other.account_id = "bob".to_owned();
    assert_eq!(
        book.handle(
            &ClaimMessage::HoldClaim {
                transfer: other,
                units: 1
            },
            T0
        ),
        Err(ClaimBookError::WrongClaim {
            claim_id: "6:spring/alice".to_owned(),
            message_claim_id: "6:spring/bob".to_owned(),
        })
    );
    assert_eq!(book.state(), &ClaimState::Free);
}

#[test]
fn claim_ids_are_derived_from_campaign_and_account_and_never_collide() {
    assert_eq!(claim_id("spring", "alice"), "6:spring/alice");
    assert_eq!(
        ClaimBook::new("spring", "alice").claim_id(),
        transfer("g1", 1).claim_id()
    );
    assert_ne!(claim_id("a/b", "c"), claim_id("a", "b/c"));
    assert_ne!(claim_id("1:a", "b"), claim_id("1", "a/b"));
}

#[test]
fn the_claim_book_round_trips_through_message_pack() {
    let mut book = ClaimBook::new(CAMPAIGN, ACCOUNT);
    book.handle(&hold("g1", 1), T0).unwrap();
    book.handle(&release("g2", 4), T0).unwrap();
    let bytes = rmp_serde::to_vec_named(&book).unwrap();
    let restored: ClaimBook = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(restored, book);
}

fn message() -> impl Strategy<Value = ClaimMessage> {
    (0..3usize, 1..4u64, 0..3usize).prop_map(|(kind, transfer_id, gateway)| {
        let gateway_id = format!("g{gateway}");
        match kind {
            0 => hold(&gateway_id, transfer_id),
            1 => confirm(&gateway_id, transfer_id),
            _ => release(&gateway_id, transfer_id),
        }
    })
}

proptest! {
    #[test]
    fn holds_are_granted_only_to_the_holder_and_a_confirmation_is_final(
        messages in proptest::collection::vec(message(), 1..60),
    ) {
        let mut book = ClaimBook::new(CAMPAIGN, ACCOUNT);
        let mut confirmed_opt: Option<Holder> = None;
        for message in &messages {
            let before = book.state().clone();
            let reply = book.handle(message, T0).unwrap();
            let after = book.state().clone();
            // A handler applied twice answers the same and changes nothing more.
            let mut again = book.clone();
            prop_assert_eq!(again.handle(message, T0).unwrap(), reply.clone());
            prop_assert_eq!(again.state(), &after);
            match (&reply, &after) {
                (Some(ClaimBookReply::ClaimHeld { transfer }), ClaimState::Held { holder })
                | (
                    Some(ClaimBookReply::ClaimHeld { transfer }),
                    ClaimState::Confirmed { holder, .. },
                ) => {
                    prop_assert!(holder.is(transfer));
                }
                (Some(ClaimBookReply::ClaimHeld { .. }), ClaimState::Free) => {
                    prop_assert!(false, "held answered with a free claim");
                }
                (Some(ClaimBookReply::ClaimRefused { holder_gateway, .. }), _) => {
                    let holder_opt = match &after {
                        ClaimState::Held { holder } | ClaimState::Confirmed { holder, .. } => {
                            Some(holder.gateway_id.clone())
                        }
                        ClaimState::Free => None,
                    };
                    prop_assert_eq!(Some(holder_gateway.clone()), holder_opt);
                }
                (None, _) => {}
            }
            // The holder changes only through a free claim.
            if let (
                ClaimState::Held { holder: first } | ClaimState::Confirmed { holder: first, .. },
                ClaimState::Held { holder: second } | ClaimState::Confirmed { holder: second, .. },
            ) = (&before, &after)
            {
                prop_assert_eq!(first, second);
            }
            if let Some(confirmed) = &confirmed_opt {
                let still_confirmed =
                    matches!(&after, ClaimState::Confirmed { holder, .. } if holder == confirmed);
                prop_assert!(still_confirmed, "a confirmed claim changed: {:?}", after);
            }
            if let ClaimState::Confirmed { holder, .. } = &after {
                confirmed_opt = Some(holder.clone());
            }
        }
    }
}
