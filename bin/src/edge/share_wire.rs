//! Wire types of the traffic-share operations and pushes (S4), separate from the domain types
//! and converted explicitly (docs/protocol.md, "Traffic sharing"). Coordinates travel as
//! degrees; amounts as bytes; prices and fees as integers in the currency's minor unit.

use lanmesh_actors::model::offer_cell::OfferMatch;
use lanmesh_actors::model::share::{
    Bill, Closing, Party, ShareEvent, ShareStatus, ShareView, UsageAnswer,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `share.offer`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OfferRequest {
    /// Bytes offered.
    pub amount_bytes: u64,
    /// Price per rating unit, in the currency's minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code, e.g. `CNY`.
    pub currency: String,
    /// How long the offer (and a share made of it) lasts.
    pub validity_ms: u64,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// The sharer's password; absent: the server generates one.
    #[serde(default)]
    pub password: Option<String>,
}

/// Reply to `share.offer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct OfferReply {
    /// The share's id.
    pub share_id: String,
    /// The password the requester will be given (the one sent, or the one generated).
    pub password: String,
    /// When the offer ends.
    pub expires_at_ms: u64,
}

/// `share.find` and `share.request`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ShareSearch {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Bytes wanted.
    pub amount_bytes: u64,
    /// `share.request` only: the offer to take (one `share.find` returned); absent, the best
    /// offer within range is taken.
    #[serde(default)]
    pub share_id: Option<String>,
}

/// One offer found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireOffer {
    /// The share.
    pub share_id: String,
    /// The sharer's account.
    pub sharer: String,
    /// Bytes offered.
    pub amount_bytes: u64,
    /// Price per unit, in minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// How far away, in meters (the sharer's exact place is not disclosed).
    pub distance_m: u64,
    /// When the offer ends.
    pub expires_at_ms: u64,
}

impl WireOffer {
    /// The wire form of an offer found.
    pub fn of(found: &OfferMatch) -> Self {
        Self {
            share_id: found.offer.share_id.clone(),
            sharer: found.offer.sharer.clone(),
            amount_bytes: found.offer.amount_bytes,
            price_minor_per_unit: found.offer.price_minor_per_unit,
            currency: found.offer.currency.clone(),
            distance_m: found.distance_m,
            expires_at_ms: found.offer.expires_at_unix_ms,
        }
    }
}

/// Reply to `share.find`: offers within `range_m`, cheapest first, then nearest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FindReply {
    /// The range searched, in meters.
    pub range_m: u64,
    /// The offers.
    pub offers: Vec<WireOffer>,
}

/// Reply to `share.request`: the matched offer and the sharer's password, relayed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RequestReply {
    /// The offer matched.
    pub offer: WireOffer,
    /// The bytes the share is for.
    pub requested_bytes: u64,
    /// The sharer's password: present it with `share.start`.
    pub password: String,
}

/// A request naming one share (`share.cancel`, `share.end`, `share.get`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ShareRef {
    /// The share.
    pub share_id: String,
}

/// `share.start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StartRequest {
    /// The share.
    pub share_id: String,
    /// The password relayed by `share.request`.
    pub password: String,
}

/// Reply to `share.start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StartReply {
    /// Bytes the requester may use before its next report.
    pub granted_bytes: u64,
}

/// `share.report_usage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UsageRequest {
    /// The share.
    pub share_id: String,
    /// The report's id: any number, a repeat must repeat the total, totals grow with it.
    pub report_id: u64,
    /// Bytes used since the share started, in total.
    pub used_bytes: u64,
}

/// A bill: what a share cost, the same for both parties.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireBill {
    /// Who gave the data.
    pub sharer: String,
    /// Who used it.
    pub requester: String,
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes per rating unit.
    pub unit_bytes: u64,
    /// Price per unit, in minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// The fee, in minor units (the exact product rounded up to a whole minor unit).
    pub fee_minor: u64,
    /// When the share started.
    pub started_at_ms: u64,
    /// When it closed.
    pub closed_at_ms: u64,
    /// Why it closed.
    pub closing: Closing,
}

impl WireBill {
    /// The wire form of a bill.
    pub fn of(bill: &Bill) -> Self {
        Self {
            sharer: bill.sharer.clone(),
            requester: bill.requester.clone(),
            used_bytes: bill.used_bytes,
            unit_bytes: bill.unit_bytes,
            price_minor_per_unit: bill.price_minor_per_unit,
            currency: bill.currency.clone(),
            fee_minor: bill.fee_minor,
            started_at_ms: bill.started_at_unix_ms,
            closed_at_ms: bill.closed_at_unix_ms,
            closing: bill.closing,
        }
    }
}

/// Reply to `share.report_usage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UsageReply {
    /// Bytes used in total.
    pub used_bytes: u64,
    /// Bytes granted in total: use no more before the next report.
    pub granted_bytes: u64,
    /// Whether this is the last grant (it reaches the share's amount).
    pub final_units: bool,
    /// The bill, once the share closed.
    pub bill: Option<WireBill>,
}

impl UsageReply {
    /// The wire form of a usage answer.
    pub fn of(answer: &UsageAnswer) -> Self {
        Self {
            used_bytes: answer.used_bytes,
            granted_bytes: answer.granted_bytes,
            final_units: answer.final_units,
            bill: answer.bill_opt.as_ref().map(WireBill::of),
        }
    }
}

/// Reply to `share.get`: the share as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ShareReplyBody {
    /// The share.
    pub share_id: String,
    /// `sharer` or `requester`.
    pub role: Party,
    /// `offered`, `matched`, `active` or `closed`.
    pub status: ShareStatus,
    /// The sharer.
    pub sharer: String,
    /// Bytes offered.
    pub amount_bytes: u64,
    /// Price per unit, in minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the offer ends.
    pub expires_at_ms: u64,
    /// The matched requester.
    pub requester: Option<String>,
    /// Bytes the share is for, once matched.
    pub requested_bytes: Option<u64>,
    /// The password: to the sharer always, to the requester until the share starts.
    pub password: Option<String>,
    /// Wrong passwords left before the share is blocked.
    pub password_attempts_left: u32,
    /// Bytes granted in total.
    pub granted_bytes: u64,
    /// Bytes used in total.
    pub used_bytes: u64,
    /// Thresholds already reminded of, in percent.
    pub reminded_percents: BTreeSet<u8>,
    /// Why it closed.
    pub closing: Option<Closing>,
    /// The bill, once closed after starting.
    pub bill: Option<WireBill>,
}

impl ShareReplyBody {
    /// The wire form of a party's view.
    pub fn of(share_id: &str, view: &ShareView) -> Self {
        Self {
            share_id: share_id.to_owned(),
            role: view.role,
            status: view.status,
            sharer: view.offer.sharer.clone(),
            amount_bytes: view.offer.amount_bytes,
            price_minor_per_unit: view.offer.price_minor_per_unit,
            currency: view.offer.currency.clone(),
            expires_at_ms: view.offer.expires_at_unix_ms,
            requester: view.requester_opt.as_ref().map(|r| r.account.clone()),
            requested_bytes: view.requester_opt.as_ref().map(|r| r.requested_bytes),
            password: view.password_opt.clone(),
            password_attempts_left: view.password_attempts_left,
            granted_bytes: view.granted_bytes,
            used_bytes: view.used_bytes,
            reminded_percents: view.reminded_percents.clone(),
            closing: view.closed_opt.map(|(closing, _)| closing),
            bill: view.bill_opt.as_ref().map(WireBill::of),
        }
    }
}

/// The body of every share push (`share.matched`, `share.released`, `share.started`,
/// `share.reminder`, `share.closed`); fields that do not apply are absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct SharePush {
    /// The share.
    pub share_id: String,
    /// The requester (`share.matched`, `share.released`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Bytes the share is for (`share.matched`, `share.reminder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_bytes: Option<u64>,
    /// Bytes granted (`share.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_bytes: Option<u64>,
    /// The threshold crossed (`share.reminder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// Bytes used (`share.reminder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Why it closed (`share.closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<Closing>,
    /// The bill (`share.closed` after it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<WireBill>,
}

/// The push op and body for a share event, if the event is pushed at all.
pub fn share_push(share_id: &str, event: &ShareEvent) -> Option<(&'static str, SharePush)> {
    let base = SharePush {
        share_id: share_id.to_owned(),
        ..SharePush::default()
    };
    Some(match event {
        ShareEvent::Matched {
            requester,
            requested_bytes,
        } => (
            "share.matched",
            SharePush {
                requester: Some(requester.clone()),
                amount_bytes: Some(*requested_bytes),
                ..base
            },
        ),
        ShareEvent::Released { requester } => (
            "share.released",
            SharePush {
                requester: Some(requester.clone()),
                ..base
            },
        ),
        ShareEvent::Started { granted_bytes } => (
            "share.started",
            SharePush {
                granted_bytes: Some(*granted_bytes),
                ..base
            },
        ),
        ShareEvent::Reminder {
            percent,
            used_bytes,
            amount_bytes,
            ..
        } => (
            "share.reminder",
            SharePush {
                percent: Some(*percent),
                used_bytes: Some(*used_bytes),
                amount_bytes: Some(*amount_bytes),
                ..base
            },
        ),
        ShareEvent::Closed { closing, bill_opt } => (
            "share.closed",
            SharePush {
                closing: Some(*closing),
                bill: bill_opt.as_ref().map(WireBill::of),
                ..base
            },
        ),
        ShareEvent::Offered
        | ShareEvent::UsageRecorded { .. }
        | ShareEvent::PasswordRejected { .. } => {
            return None;
        }
    })
}
