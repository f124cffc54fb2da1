//! The claim-book entity: answers go back to the asking ledger, and a message for another
//! book is refused without creating one.

use super::*;
use crate::entities::decode;
use crate::entities::test_support::handle_payload;
use crate::model::claim_book::TransferRef;

fn handle(state: &mut Option<ClaimBook>, entity_id: &str, request: &ClaimBookRequest) -> Effects {
    let payload = encode(request).unwrap();
    handle_payload::<ClaimBookEntity>(state, entity_id, &payload, 5).unwrap()
}

fn hold(gateway_id: &str, transfer_id: u64) -> ClaimBookRequest {
    ClaimBookRequest::Ledger(ClaimMessage::HoldClaim {
        transfer: TransferRef {
            campaign_id: "spring".to_owned(),
            account_id: "alice".to_owned(),
            gateway_id: gateway_id.to_owned(),
            transfer_id,
        },
        units: 2,
    })
}

#[test]
fn holds_are_answered_to_the_asking_ledger_and_a_second_venue_is_refused() {
    let book_id = claim_id("spring", "alice");
    let mut state = None;
    let effects = handle(&mut state, &book_id, &hold("g1", 1));
    assert!(effects.state_changed);
    let [answer] = effects.outgoing.as_slice() else {
        panic!("one answer: {:?}", effects.outgoing);
    };
    assert_eq!(
        answer.target,
        EntityKind::Ledger
            .address(ledger_id("spring", "g1"))
            .unwrap()
    );
    let request: LedgerRequest = decode(&answer.payload).unwrap();
    assert!(matches!(
        request,
        LedgerRequest::ClaimAnswer(crate::model::claim_book::ClaimBookReply::ClaimHeld { .. })
    ));

    let again = handle(&mut state, &book_id, &hold("g1", 1));
    assert!(!again.state_changed, "a repeated hold changes nothing");
    assert_eq!(again.outgoing.len(), 1, "and is answered again");

    let other = handle(&mut state, &book_id, &hold("g2", 7));
    let [refusal] = other.outgoing.as_slice() else {
        panic!("one answer: {:?}", other.outgoing);
    };
    assert_eq!(
        refusal.target,
        EntityKind::Ledger
            .address(ledger_id("spring", "g2"))
            .unwrap()
    );
    let request: LedgerRequest = decode(&refusal.payload).unwrap();
    assert!(matches!(
        request,
        LedgerRequest::ClaimAnswer(crate::model::claim_book::ClaimBookReply::ClaimRefused { ref holder_gateway, .. }) if holder_gateway == "g1"
    ));
    let inspected = handle(&mut state, &book_id, &ClaimBookRequest::Inspect);
    let reply: ClaimBookEntityReply = decode(inspected.reply_opt.as_deref().unwrap()).unwrap();
    assert!(matches!(
        reply,
        ClaimBookEntityReply::State(ClaimState::Held { .. })
    ));
}

#[test]
fn a_message_for_another_book_is_refused_and_creates_nothing() {
    let mut state = None;
    let effects = handle(&mut state, &claim_id("spring", "bob"), &hold("g1", 1));
    let reply: ClaimBookEntityReply = decode(effects.reply_opt.as_deref().unwrap()).unwrap();
    assert!(matches!(
        reply,
        ClaimBookEntityReply::Refused(ClaimBookError::WrongClaim { .. })
    ));
    assert!(state.is_none() && effects.outgoing.is_empty() && !effects.state_changed);
}
