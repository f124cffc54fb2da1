//! Traffic sharing end to end (S4) on two real nodes over WebSockets: discovery finds only the
//! offers within range, cheapest first; the sharer's password is relayed to the matched
//! requester and verified, with lock-out after too many wrong ones; usage is metered with
//! reminders at each threshold to the parties configured, exactly once, and the bill at
//! exhaustion is the same for both; cancelling, ending, the daily cap, and bad input of every
//! kind answered with a clear error.

#![allow(
    clippy::indexing_slicing,
    reason = "bodies are built and read by field in the test; a missing field is a failure"
)]

use crate::campaigns::{Player, player};
use crate::im::{EVENT_TIMEOUT, address, expect_error, finish, start_cluster};
use lanmesh::edge::protocol::{ErrorBody, ErrorCode};
use lanmesh::edge::share_wire::{
    FindReply, OfferReply, RequestReply, SharePush, ShareReplyBody, ShareSearch, StartReply,
    UsageReply, WireBill,
};
use lanmesh::load::ws_client::ImClient;
use lanmesh_actors::model::share::{Closing, ShareStatus};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// The sharer's place; the others are placed around it.
const HERE: (f64, f64) = (31.2304, 121.4737);
/// About 100 m north of [`HERE`].
const RITA: (f64, f64) = (31.2313, 121.4737);
/// About 200 m east of [`HERE`].
const NED: (f64, f64) = (31.2304, 121.4758);
/// About 2 km north of [`HERE`]: beyond the 500 m range.
const FAY: (f64, f64) = (31.2484, 121.4737);

async fn ask<R: DeserializeOwned>(
    player: &mut Player,
    op: &str,
    body: &Value,
) -> Result<R, ErrorBody> {
    player
        .client
        .request(op, Some(&player.key), body)
        .await
        .expect("the request is answered")
}

async fn offer(
    player: &mut Player,
    at: (f64, f64),
    price: u64,
    password: Option<&str>,
) -> OfferReply {
    let mut body = json!({"amount_bytes": 10 * MIB, "price_minor_per_unit": price,
                          "currency": "CNY", "validity_ms": 600_000,
                          "lat": at.0, "lon": at.1});
    if let Some(password) = password {
        body["password"] = json!(password);
    }
    ask(player, "share.offer", &body).await.expect("offers")
}

fn search(at: (f64, f64), amount_bytes: u64) -> Value {
    json!({"lat": at.0, "lon": at.1, "amount_bytes": amount_bytes})
}

fn share(share_id: &str) -> Value {
    json!({"share_id": share_id})
}

fn usage(share_id: &str, report_id: u64, used_bytes: u64) -> Value {
    json!({"share_id": share_id, "report_id": report_id, "used_bytes": used_bytes})
}

/// The share pushes `client` got for `share_id`, by op, waiting until none comes for a while.
async fn share_pushes(client: &mut ImClient, share_id: &str) -> Vec<(String, SharePush)> {
    let pushes = client
        .pushes_until_quiet(Duration::from_millis(800), EVENT_TIMEOUT)
        .await
        .expect("the connection stays open");
    pushes
        .into_iter()
        .filter(|push| push.op.starts_with("share."))
        .map(|push| {
            let body: SharePush = push.decode().expect("a share push");
            (push.op, body)
        })
        .filter(|(_, body)| body.share_id == share_id)
        .collect()
}

fn reminded_percents(pushes: &[(String, SharePush)]) -> Vec<u8> {
    pushes
        .iter()
        .filter(|(op, _)| op == "share.reminder")
        .filter_map(|(_, body)| body.percent)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_found_in_range_started_by_password_metered_reminded_and_billed() {
    const N_NODES: usize = 2;
    let Some(cluster) = start_cluster(
        "shares::shares_are_found_in_range_started_by_password_metered_reminded_and_billed",
        N_NODES,
        &[
            ("LANMESH__SHARE__RANGE_M", "500"),
            ("LANMESH__SHARE__SLICE_BYTES", "4194304"),
            ("LANMESH__SHARE__MAX_PASSWORD_ATTEMPTS", "3"),
            ("LANMESH__SHARE__MIN_VALIDITY_MS", "1000"),
            // 10 MiB offers: two a day, the third passes the cap.
            ("LANMESH__SHARE__MAX_OFFERED_BYTES_PER_DAY", "20971520"),
        ],
    )
    .await
    else {
        return;
    };
    let node_a = address(&cluster, 0);
    let node_b = address(&cluster, 1);
    let mut sam = player(&node_a, "sam", "127.0.0.1").await;
    let mut ned = player(&node_a, "ned", "127.0.0.1").await;
    let mut fay = player(&node_b, "fay", "127.0.0.1").await;
    let mut rita = player(&node_b, "rita", "127.0.0.1").await;
    let mut tom = player(&node_b, "tom", "127.0.0.1").await;
    let mut eve = player(&node_a, "eve", "127.0.0.1").await;

    // Offers: sam's with his own password, ned's dearer one with a generated password, and
    // fay's too far away.
    let sams = offer(&mut sam, HERE, 7, Some("pa55word")).await;
    assert_eq!(sams.password, "pa55word");
    let neds = offer(&mut ned, NED, 9, None).await;
    assert!(
        neds.password.len() == 6 && neds.password.bytes().all(|b| b.is_ascii_digit()),
        "a generated password is six digits: {:?}",
        neds.password
    );
    let fays = offer(&mut fay, FAY, 1, Some("fay-secret")).await;

    // Discovery: only the offers within range, cheapest first, with their distances.
    let found: FindReply = ask(&mut rita, "share.find", &search(RITA, 5 * MIB))
        .await
        .expect("finds");
    assert_eq!(found.range_m, 500);
    let ids: Vec<&str> = found.offers.iter().map(|o| o.share_id.as_str()).collect();
    assert_eq!(ids, vec![sams.share_id.as_str(), neds.share_id.as_str()]);
    assert!(
        (95..=105).contains(&found.offers[0].distance_m),
        "{found:?}"
    );
    assert!(
        (215..=235).contains(&found.offers[1].distance_m),
        "{found:?}"
    );
    // One's own offers are not found; more than any offer holds finds nothing.
    let own: FindReply = ask(&mut sam, "share.find", &search(HERE, MIB))
        .await
        .expect("finds");
    assert!(own.offers.iter().all(|o| o.sharer != "sam"), "{own:?}");
    let too_much: FindReply = ask(&mut rita, "share.find", &search(RITA, 11 * MIB))
        .await
        .expect("finds");
    assert!(too_much.offers.is_empty());
    let beyond = ask::<RequestReply>(
        &mut rita,
        "share.request",
        &json!({"lat": RITA.0, "lon": RITA.1, "amount_bytes": MIB, "share_id": fays.share_id}),
    )
    .await;
    let error = expect_error("a request beyond range", beyond, ErrorCode::OutOfRange);
    assert!(
        error.message.contains("beyond the range of 500 m"),
        "{error:?}"
    );

    // rita asks for 5 MiB: matched to the cheapest, and given its password.
    let matched: RequestReply = ask(&mut rita, "share.request", &search(RITA, 5 * MIB))
        .await
        .expect("matches");
    assert_eq!(matched.offer.share_id, sams.share_id);
    assert_eq!(
        (matched.password.as_str(), matched.requested_bytes),
        ("pa55word", 5 * MIB)
    );
    let share_id = sams.share_id.clone();
    let told: SharePush = sam
        .client
        .wait_for_op("share.matched", EVENT_TIMEOUT)
        .await
        .expect("the sharer hears of the match");
    assert_eq!(
        (told.share_id.as_str(), told.requester.as_deref()),
        (share_id.as_str(), Some("rita"))
    );
    // Taken: no longer found.
    let after: FindReply = ask(&mut tom, "share.find", &search(RITA, MIB))
        .await
        .expect("finds");
    assert!(
        after.offers.iter().all(|o| o.share_id != share_id),
        "{after:?}"
    );

    // A non-party can do nothing with the share.
    for (op, body) in [
        ("share.get", share(&share_id)),
        (
            "share.start",
            json!({"share_id": share_id, "password": "pa55word"}),
        ),
        ("share.report_usage", usage(&share_id, 1, MIB)),
        ("share.end", share(&share_id)),
        ("share.cancel", share(&share_id)),
    ] {
        let refused = ask::<Value>(&mut eve, op, &body).await;
        expect_error(op, refused, ErrorCode::NotAParty);
    }
    // Usage before the password is refused.
    let early = ask::<UsageReply>(&mut rita, "share.report_usage", &usage(&share_id, 1, MIB)).await;
    expect_error("usage before start", early, ErrorCode::WrongStatus);

    // A wrong password, then the right one: the first slice is granted.
    let wrong = ask::<StartReply>(
        &mut rita,
        "share.start",
        &json!({"share_id": share_id, "password": "guess"}),
    )
    .await;
    let error = expect_error("a wrong password", wrong, ErrorCode::WrongPassword);
    assert!(error.message.contains("2 attempts left"), "{error:?}");
    let started: StartReply = ask(
        &mut rita,
        "share.start",
        &json!({"share_id": share_id, "password": "pa55word"}),
    )
    .await
    .expect("starts");
    assert_eq!(started.granted_bytes, 4 * MIB);

    // Usage: slices follow the reports; a repeat answers the same; totals only grow.
    let first: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 1, 2 * MIB),
    )
    .await
    .expect("recorded");
    assert_eq!(
        (first.used_bytes, first.granted_bytes, first.final_units),
        (2 * MIB, 5 * MIB, true)
    );
    let over = ask::<UsageReply>(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 2, 5 * MIB + 1),
    )
    .await;
    expect_error("usage above the grant", over, ErrorCode::Invalid);
    let half: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 2, 5 * MIB / 2),
    )
    .await
    .expect("recorded");
    let repeat: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 2, 5 * MIB / 2),
    )
    .await
    .expect("a repeat is answered");
    assert_eq!(repeat, half);
    let shrinking = ask::<UsageReply>(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 3, 2 * MIB),
    )
    .await;
    let error = expect_error("a shrinking total", shrinking, ErrorCode::Invalid);
    assert!(error.message.contains("only grow"), "{error:?}");
    let late: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 4, 4 * MIB),
    )
    .await
    .expect("recorded");
    assert_eq!(late.used_bytes, 4 * MIB);
    // Report 3 arrives late and says less than report 4: recorded, changes nothing.
    let out_of_order: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 3, 3 * MIB),
    )
    .await
    .expect("a late report is recorded");
    assert_eq!(out_of_order.used_bytes, 4 * MIB);
    let last: UsageReply = ask(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 5, 5 * MIB),
    )
    .await
    .expect("recorded");
    let bill = last
        .bill
        .expect("the share closes at exhaustion with a bill");
    let expected_bill = WireBill {
        sharer: "sam".to_owned(),
        requester: "rita".to_owned(),
        used_bytes: 5 * MIB,
        unit_bytes: MIB,
        price_minor_per_unit: 7,
        currency: "CNY".to_owned(),
        fee_minor: 35,
        started_at_ms: bill.started_at_ms,
        closed_at_ms: bill.closed_at_ms,
        closing: Closing::Exhausted,
    };
    assert_eq!(bill, expected_bill);

    // Reminders at 50% (the requester), 80% and 100% (both), each once; both get the bill.
    let ritas = share_pushes(&mut rita.client, &share_id).await;
    let sams_pushes = share_pushes(&mut sam.client, &share_id).await;
    assert_eq!(reminded_percents(&ritas), vec![50, 80, 100], "{ritas:?}");
    assert_eq!(
        reminded_percents(&sams_pushes),
        vec![80, 100],
        "{sams_pushes:?}"
    );
    for pushes in [&ritas, &sams_pushes] {
        let closed: Vec<&SharePush> = pushes
            .iter()
            .filter(|(op, _)| op == "share.closed")
            .map(|(_, body)| body)
            .collect();
        assert_eq!(closed.len(), 1, "{pushes:?}");
        assert_eq!(closed[0].bill.as_ref(), Some(&bill));
    }
    assert!(sams_pushes.iter().any(|(op, _)| op == "share.started"));
    for party in [&mut sam, &mut rita] {
        let view: ShareReplyBody = ask(party, "share.get", &share(&share_id))
            .await
            .expect("gets");
        assert_eq!(
            (view.status, view.bill.as_ref()),
            (ShareStatus::Closed, Some(&bill))
        );
        assert_eq!(
            view.reminded_percents.into_iter().collect::<Vec<_>>(),
            vec![50, 80, 100]
        );
    }
    let after_close = ask::<UsageReply>(
        &mut rita,
        "share.report_usage",
        &usage(&share_id, 6, 5 * MIB),
    )
    .await;
    expect_error("usage after the close", after_close, ErrorCode::WrongStatus);

    // Lock-out: tom takes ned's offer and guesses wrong three times.
    let toms: RequestReply = ask(
        &mut tom,
        "share.request",
        &json!({"lat": RITA.0, "lon": RITA.1, "amount_bytes": MIB, "share_id": neds.share_id}),
    )
    .await
    .expect("matches the offer named");
    assert_eq!(toms.password, neds.password);
    let guess = json!({"share_id": neds.share_id, "password": "000000x"});
    for left in ["2 attempts left", "1 attempts left"] {
        let wrong = ask::<StartReply>(&mut tom, "share.start", &guess).await;
        let error = expect_error("a wrong guess", wrong, ErrorCode::WrongPassword);
        assert!(error.message.contains(left), "{error:?}");
    }
    let blocked = ask::<StartReply>(&mut tom, "share.start", &guess).await;
    expect_error("the last guess", blocked, ErrorCode::ShareBlocked);
    let right_too_late = ask::<StartReply>(
        &mut tom,
        "share.start",
        &json!({"share_id": neds.share_id, "password": neds.password}),
    )
    .await;
    expect_error(
        "the right password after the lock-out",
        right_too_late,
        ErrorCode::ShareBlocked,
    );
    for client in [&mut ned.client, &mut tom.client] {
        let closed: SharePush = client
            .wait_for_op("share.closed", EVENT_TIMEOUT)
            .await
            .expect("both parties hear of the lock-out");
        assert_eq!(
            (closed.closing, closed.bill),
            (Some(Closing::Blocked), None)
        );
    }

    // Cancelling before the start: the requester gives the match back (the offer is listed
    // again), then the sharer withdraws it.
    let second = offer(&mut sam, HERE, 5, Some("again-pass")).await;
    let _: RequestReply = ask(
        &mut tom,
        "share.request",
        &json!({"lat": RITA.0, "lon": RITA.1, "amount_bytes": MIB, "share_id": second.share_id}),
    )
    .await
    .expect("matches");
    let _: Value = ask(&mut tom, "share.cancel", &share(&second.share_id))
        .await
        .expect("gives back");
    let relisted: FindReply = ask(&mut rita, "share.find", &search(RITA, MIB))
        .await
        .expect("finds");
    assert!(
        relisted
            .offers
            .iter()
            .any(|o| o.share_id == second.share_id),
        "{relisted:?}"
    );
    let withdrawn: ShareReplyBody = ask(&mut sam, "share.cancel", &share(&second.share_id))
        .await
        .expect("withdraws");
    assert_eq!(
        (withdrawn.status, withdrawn.closing),
        (ShareStatus::Closed, Some(Closing::Cancelled))
    );
    let gone: FindReply = ask(&mut rita, "share.find", &search(RITA, MIB))
        .await
        .expect("finds");
    assert!(
        gone.offers.iter().all(|o| o.share_id != second.share_id),
        "{gone:?}"
    );

    // The daily cap: sam's third 10 MiB offer today passes it.
    let capped = ask::<OfferReply>(
        &mut sam,
        "share.offer",
        &json!({"amount_bytes": 10 * MIB, "price_minor_per_unit": 5, "currency": "CNY",
                "validity_ms": 600_000, "lat": HERE.0, "lon": HERE.1}),
    )
    .await;
    let error = expect_error(
        "an offer past the daily cap",
        capped,
        ErrorCode::DailyCapReached,
    );
    assert!(error.message.contains("daily cap"), "{error:?}");

    // Ending an active share: tom takes the cheapest offer near fay (hers, at 1 per MiB, not
    // the dearer one she adds now), uses half a MiB, fay ends it, and both see the same bill.
    let dearer = offer(&mut fay, FAY, 3, Some("third-pass")).await;
    let near_fay = (FAY.0 + 0.001, FAY.1);
    let taken: RequestReply = ask(
        &mut tom,
        "share.request",
        &json!({"lat": near_fay.0, "lon": near_fay.1, "amount_bytes": 2 * MIB}),
    )
    .await
    .expect("matches the cheapest offer near");
    assert_eq!(
        (taken.offer.share_id.as_str(), taken.password.as_str()),
        (fays.share_id.as_str(), "fay-secret")
    );
    assert_ne!(taken.offer.share_id, dearer.share_id);
    let _: StartReply = ask(
        &mut tom,
        "share.start",
        &json!({"share_id": fays.share_id, "password": taken.password}),
    )
    .await
    .expect("starts");
    let _: UsageReply = ask(
        &mut tom,
        "share.report_usage",
        &usage(&fays.share_id, 1, MIB / 2),
    )
    .await
    .expect("recorded");
    let ended: WireBill = ask(&mut fay, "share.end", &share(&fays.share_id))
        .await
        .expect("ends");
    // Half a unit at 1 minor unit per unit: 0.5, rounded up to 1.
    assert_eq!(
        (ended.closing, ended.used_bytes, ended.fee_minor),
        (Closing::EndedBySharer, MIB / 2, 1)
    );
    let toms_view: ShareReplyBody = ask(&mut tom, "share.get", &share(&fays.share_id))
        .await
        .expect("gets");
    assert_eq!(toms_view.bill, Some(ended));
    let toms_pushes = share_pushes(&mut tom.client, &fays.share_id).await;
    assert!(
        toms_pushes
            .iter()
            .any(|(op, body)| op == "share.closed" && body.closing == Some(Closing::EndedBySharer)),
        "{toms_pushes:?}"
    );

    // Expiry: a share nobody touches closes when its validity ends, billed for what was used,
    // and both parties are told.
    let brief: OfferReply = ask(
        &mut ned,
        "share.offer",
        &json!({"amount_bytes": 2 * MIB, "price_minor_per_unit": 4, "currency": "CNY",
                "validity_ms": 3_000, "lat": NED.0, "lon": NED.1, "password": "brief-pass"}),
    )
    .await
    .expect("offers");
    let _: RequestReply = ask(
        &mut tom,
        "share.request",
        &json!({"lat": RITA.0, "lon": RITA.1, "amount_bytes": 2 * MIB, "share_id": brief.share_id}),
    )
    .await
    .expect("matches");
    let _: StartReply = ask(
        &mut tom,
        "share.start",
        &json!({"share_id": brief.share_id, "password": "brief-pass"}),
    )
    .await
    .expect("starts");
    let _: UsageReply = ask(
        &mut tom,
        "share.report_usage",
        &usage(&brief.share_id, 1, MIB),
    )
    .await
    .expect("recorded");
    for client in [&mut ned.client, &mut tom.client] {
        let push = client
            .wait_for_push(EVENT_TIMEOUT, |push| {
                push.op == "share.closed"
                    && push
                        .decode::<SharePush>()
                        .is_ok_and(|body| body.share_id == brief.share_id)
            })
            .await
            .expect("the expiry is pushed without anyone asking");
        let closed: SharePush = push.decode().expect("a share push");
        let bill = closed.bill.expect("a started share is billed at expiry");
        assert_eq!(
            (
                bill.closing,
                bill.used_bytes,
                bill.fee_minor,
                bill.closed_at_ms
            ),
            (Closing::Expired, MIB, 4, brief.expires_at_ms)
        );
    }

    // Bad input: each refused with a clear error, nothing made.
    let good = json!({"amount_bytes": 2 * MIB, "price_minor_per_unit": 5, "currency": "CNY",
                      "validity_ms": 600_000, "lat": NED.0, "lon": NED.1});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    for (what, body, expected) in [
        (
            "a negative amount",
            with("amount_bytes", json!(-5)),
            "amount_bytes: ",
        ),
        (
            "a huge amount",
            with("amount_bytes", json!(1_u64 << 60)),
            "outside",
        ),
        (
            "too small an amount",
            with("amount_bytes", json!(10)),
            "outside",
        ),
        (
            "a latitude beyond the pole",
            with("lat", json!(91.5)),
            "latitude",
        ),
        (
            "a longitude beyond 180",
            with("lon", json!(-180.5)),
            "longitude",
        ),
        ("coordinates as text", with("lat", json!("north")), "lat: "),
        (
            "a lowercase currency",
            with("currency", json!("cny")),
            "capital",
        ),
        (
            "a huge price",
            with("price_minor_per_unit", json!(1_u64 << 40)),
            "price",
        ),
        (
            "too short a validity",
            with("validity_ms", json!(10)),
            "validity_ms",
        ),
        (
            "a password with a space",
            with("password", json!("a b c d")),
            "printable",
        ),
    ] {
        let refused = ask::<OfferReply>(&mut ned, "share.offer", &body).await;
        let error = expect_error(what, refused, ErrorCode::BadRequest);
        assert!(error.message.contains(expected), "{what}: {error:?}");
    }
    // A NaN travels as a MessagePack float (JSON has none).
    let not_finite = rita
        .client
        .request::<_, FindReply>(
            "share.find",
            Some(&rita.key),
            &ShareSearch {
                lat: f64::NAN,
                lon: 0.0,
                amount_bytes: MIB,
                share_id: None,
            },
        )
        .await
        .expect("answered");
    let error = expect_error(
        "a latitude that is not a number",
        not_finite,
        ErrorCode::BadRequest,
    );
    assert!(error.message.contains("not finite"), "{error:?}");
    let unknown = ask::<ShareReplyBody>(&mut rita, "share.get", &share("0123456789abcdef")).await;
    expect_error("an unknown share", unknown, ErrorCode::NoSuchShare);
    let bad_id = ask::<ShareReplyBody>(&mut rita, "share.get", &share("../etc")).await;
    expect_error("a share id with slashes", bad_id, ErrorCode::BadRequest);
    let no_key = rita
        .client
        .request::<_, FindReply>("share.find", None, &search(RITA, MIB))
        .await
        .expect("answered");
    expect_error("no key", no_key, ErrorCode::Unauthenticated);

    finish(
        cluster,
        vec![
            sam.client,
            ned.client,
            fay.client,
            rita.client,
            tom.client,
            eve.client,
        ],
    )
    .await;
}
