//! The share and offer-cell entities together: a share lists itself in its cell while offered
//! and withdraws when matched or closed, tells each event to the parties it concerns, audits
//! every step, and applies its expiry at the first touch after it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::entities::offer_cell::{OfferCellEntity, OfferCellReply};
use crate::entities::test_support::{audit_actions, handle_request};
use crate::entities::{decode, encode};
use crate::model::geo::CellGrid;
use crate::model::offer_cell::{OfferCell, ProximityQuery};
use crate::model::share::{Closing, Party, ReminderRule, ShareStatus};
use std::collections::BTreeSet;

const MIB: u64 = 1 << 20;
const NOW: u64 = 1_800_000_000_000;
const SHARE: &str = "s-1";

fn here() -> GeoPoint {
    GeoPoint::from_degrees(31.2304, 121.4737).unwrap()
}

fn open_request() -> ShareRequest {
    ShareRequest::Open {
        offer: Offer {
            sharer: "sam".to_owned(),
            amount_bytes: 10 * MIB,
            price_minor_per_unit: 5,
            currency: "CNY".to_owned(),
            location: here(),
            expires_at_unix_ms: NOW + 60_000,
        },
        terms: ShareTerms {
            unit_bytes: MIB,
            slice_bytes: 4 * MIB,
            max_password_attempts: 2,
            range_m: 300,
            reminders: vec![ReminderRule {
                percent: 50,
                notify: BTreeSet::from([Party::Requester]),
            }],
            cell_precision: 6,
        },
        password: "7391".to_owned(),
    }
}

fn ask(state: &mut ShareState, request: &ShareRequest, now: u64) -> (ShareReply, Effects) {
    handle_request::<ShareEntity, _, _>(state, SHARE, request, now)
}

/// (kind, id, decoded request name) of each outgoing message, for the assertions.
fn sent(effects: &Effects) -> Vec<(String, String, String)> {
    effects
        .outgoing
        .iter()
        .map(|out| {
            let what = match out.target.kind.as_str() {
                "user" => match decode::<UserRequest>(&out.payload).unwrap() {
                    UserRequest::ShareNotice { event, .. } => event.action().to_owned(),
                    other => format!("{other:?}"),
                },
                "offer_cell" => match decode::<OfferCellRequest>(&out.payload).unwrap() {
                    OfferCellRequest::List(_) => "list".to_owned(),
                    OfferCellRequest::Unlist { .. } => "unlist".to_owned(),
                    OfferCellRequest::Query(_) => "query".to_owned(),
                },
                other => other.to_owned(),
            };
            (out.target.kind.clone(), out.target.id.clone(), what)
        })
        .collect()
}

#[test]
fn a_share_keeps_its_listing_and_tells_the_right_parties() {
    let cell = CellGrid::new(6).unwrap().cell_of(here());
    let listing = |what: &str| ("offer_cell".to_owned(), cell.clone(), what.to_owned());
    let notice =
        |account: &str, action: &str| ("user".to_owned(), account.to_owned(), action.to_owned());
    let mut state = ShareState::default();
    let (reply, effects) = ask(&mut state, &open_request(), NOW);
    assert_eq!(reply, ShareReply::Done);
    assert!(effects.state_changed);
    assert_eq!(sent(&effects), vec![listing("list")]);
    assert_eq!(audit_actions(&effects), vec!["share.offered"]);

    // The cell answers a query with it, and the requester's own offers are left out.
    let mut cell_state = OfferCell::default();
    let list = decode::<OfferCellRequest>(&effects.outgoing[0].payload).unwrap();
    let (cell_reply, _) =
        handle_request::<OfferCellEntity, _, OfferCellReply>(&mut cell_state, &cell, &list, NOW);
    assert_eq!(cell_reply, OfferCellReply::Done);
    let query = |exclude: Option<&str>| {
        OfferCellRequest::Query(ProximityQuery {
            center: here(),
            radius_m: 100,
            min_amount_bytes: MIB,
            exclude_sharer_opt: exclude.map(str::to_owned),
            limit: 10,
        })
    };
    let (found, effects) = handle_request::<OfferCellEntity, _, OfferCellReply>(
        &mut cell_state,
        &cell,
        &query(Some("rita")),
        NOW,
    );
    assert!(!effects.state_changed);
    let OfferCellReply::Offers(offers) = found else {
        panic!("{found:?}")
    };
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].offer.share_id, SHARE);
    let (found, _) = handle_request::<OfferCellEntity, _, OfferCellReply>(
        &mut cell_state,
        &cell,
        &query(Some("sam")),
        NOW,
    );
    assert_eq!(found, OfferCellReply::Offers(Vec::new()));

    let matching = ShareRequest::Match {
        requester: "rita".to_owned(),
        requested_bytes: 6 * MIB,
        location: here(),
    };
    let (reply, effects) = ask(&mut state, &matching, NOW + 1);
    let ShareRequest::Open { offer, .. } = open_request() else {
        unreachable!("open_request opens")
    };
    assert_eq!(
        reply,
        ShareReply::Matched(MatchAnswer {
            password: "7391".to_owned(),
            distance_m: 0,
            offer,
        })
    );
    assert_eq!(
        sent(&effects),
        vec![notice("sam", "share.matched"), listing("unlist")]
    );
    let unlist = decode::<OfferCellRequest>(&effects.outgoing[1].payload).unwrap();
    handle_request::<OfferCellEntity, _, OfferCellReply>(&mut cell_state, &cell, &unlist, NOW);
    assert!(cell_state.is_empty());

    // The requester gives the match back: the offer is listed again.
    let cancel = ShareRequest::Cancel {
        account: "rita".to_owned(),
    };
    let (_, effects) = ask(&mut state, &cancel, NOW + 2);
    assert_eq!(
        sent(&effects),
        vec![notice("sam", "share.released"), listing("list")]
    );
    ask(&mut state, &matching, NOW + 3);

    let start = |password: &str| ShareRequest::PresentPassword {
        account: "rita".to_owned(),
        password: password.to_owned(),
    };
    let (reply, effects) = ask(&mut state, &start("1111"), NOW + 4);
    assert_eq!(
        reply,
        ShareReply::Password(PasswordAnswer::Wrong { attempts_left: 1 })
    );
    assert!(effects.state_changed);
    assert_eq!(audit_actions(&effects), vec!["share.password_rejected"]);
    let (reply, effects) = ask(&mut state, &start("7391"), NOW + 5);
    assert_eq!(
        reply,
        ShareReply::Password(PasswordAnswer::Started {
            granted_bytes: 4 * MIB
        })
    );
    assert_eq!(sent(&effects), vec![notice("sam", "share.started")]);

    let usage = |report_id: u64, used_bytes: u64| ShareRequest::ReportUsage {
        account: "rita".to_owned(),
        report_id,
        used_bytes,
    };
    let (_, effects) = ask(&mut state, &usage(1, 2 * MIB), NOW + 6);
    assert_eq!(sent(&effects), Vec::new());
    // Half of the 6 MiB asked for.
    let (_, effects) = ask(&mut state, &usage(2, 3 * MIB), NOW + 7);
    assert_eq!(sent(&effects), vec![notice("rita", "share.reminder")]);
    assert_eq!(
        audit_actions(&effects),
        vec!["share.usage", "share.reminder"]
    );
    // The same report again: the same answer, nothing sent, nothing saved.
    let (again, effects) = ask(&mut state, &usage(2, 3 * MIB), NOW + 8);
    assert!(!effects.state_changed && effects.outgoing.is_empty());
    assert!(
        matches!(again, ShareReply::Usage(UsageAnswer { used_bytes, .. }) if used_bytes == 3 * MIB)
    );
    // A non-party is refused, and sees nothing.
    let (refused, _) = ask(
        &mut state,
        &ShareRequest::ReportUsage {
            account: "eve".to_owned(),
            report_id: 3,
            used_bytes: 6 * MIB,
        },
        NOW + 9,
    );
    assert_eq!(refused, ShareReply::Refused(ShareError::NotAParty));

    let (reply, effects) = ask(&mut state, &usage(3, 6 * MIB), NOW + 10);
    let ShareReply::Usage(answer) = reply else {
        panic!("{reply:?}")
    };
    let bill = answer.bill_opt.unwrap();
    assert_eq!((bill.closing, bill.fee_minor), (Closing::Exhausted, 30));
    assert_eq!(
        sent(&effects),
        vec![
            notice("sam", "share.closed"),
            notice("rita", "share.closed"),
            listing("unlist")
        ]
    );
    let (view, _) = ask(
        &mut state,
        &ShareRequest::Inspect {
            account: "sam".to_owned(),
        },
        NOW + 11,
    );
    let ShareReply::View(view) = view else {
        panic!("{view:?}")
    };
    assert_eq!(
        (view.status, view.bill_opt),
        (ShareStatus::Closed, Some(bill))
    );
}

#[test]
fn expiry_is_applied_at_the_first_touch_after_it() {
    let mut state = ShareState::default();
    ask(&mut state, &open_request(), NOW);
    let inspect = ShareRequest::Inspect {
        account: "sam".to_owned(),
    };
    let (_, effects) = ask(&mut state, &inspect, NOW + 60_000);
    assert!(effects.state_changed);
    assert_eq!(audit_actions(&effects), vec!["share.closed"]);
    assert_eq!(
        effects.outgoing.len(),
        2,
        "the sharer is told and the listing withdrawn"
    );
    let (reply, _) = ask(
        &mut state,
        &ShareRequest::Match {
            requester: "rita".to_owned(),
            requested_bytes: MIB,
            location: here(),
        },
        NOW + 60_001,
    );
    assert!(matches!(
        reply,
        ShareReply::Refused(ShareError::WrongStatus {
            status: ShareStatus::Closed,
            ..
        })
    ));
}

#[test]
fn a_payload_that_is_not_a_share_request_is_malformed() {
    let mut state = ShareState::default();
    let payload = encode(&"not a request").unwrap();
    let result = crate::entities::test_support::handle_payload::<ShareEntity>(
        &mut state, SHARE, &payload, NOW,
    );
    assert!(matches!(result, Err(HandleError::Malformed { .. })));
}
