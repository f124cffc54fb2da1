//! One mobile data-traffic share (S4) as a pure state machine, after online charging's credit
//! control (RFC 8506: units granted in slices, used units reported, thresholds, final units) and
//! carriers' data gifting.
//!
//! A sharer **offers** an amount of bytes at a price per rating unit, valid until a time, from a
//! place. A requester near enough is **matched** to it and is relayed the sharer's password; the
//! share becomes **active** only when the requester presents that password (too many wrong
//! attempts **block** it). While active the requester reports its cumulative usage; the share
//! grants bytes a slice at a time, sends each configured reminder once, and **closes** at
//! exhaustion, at expiry, or when either party ends it, with a **bill**. Before it starts either
//! side can cancel: the sharer withdraws the offer, the requester gives the match back (the offer
//! is listed again).
//!
//! ```text
//! Offered ──match──► Matched ──password──► Active ──usage = amount / end / expiry──► Closed (bill)
//!    ▲                 │  │
//!    └─requester cancel┘  └─sharer cancel / lock-out / expiry─► Closed (no bill)
//! Offered ──sharer cancel / expiry──► Closed (no bill)
//! ```
//!
//! Every operation is idempotent under redelivery: a usage report is named by its id and carries
//! the cumulative total, so a duplicate or a late report changes nothing, and reminders are
//! recorded once each. Fees are integers in the currency's minor unit.

use crate::model::geo::{CellGrid, GeoPoint};
use crate::model::offer_cell::ListedOffer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// Most usage reports one share remembers (a client reports far less often than once per
/// slice; a share past this refuses further reports rather than grow its state).
pub const MAX_USAGE_REPORTS: usize = 4096;
/// Most reminder thresholds in one share's terms.
pub const MAX_REMINDERS: usize = 8;
/// Shortest and longest share password, in characters (printable ASCII, no spaces).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 4..=64;

/// One side of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The account giving its data.
    Sharer,
    /// The account using it.
    Requester,
}

/// A usage threshold and whom to remind when it is crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderRule {
    /// Percent of the share's amount used (1 to 100).
    pub percent: u8,
    /// Who is reminded (not empty).
    pub notify: BTreeSet<Party>,
}

/// The cluster's rules a share is opened under; kept with the share, so a configuration change
/// never alters a share already offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareTerms {
    /// Bytes per rating unit: the price is per this many bytes.
    pub unit_bytes: u64,
    /// Bytes granted at a time: the requester may use up to its reported usage plus one slice.
    pub slice_bytes: u64,
    /// Wrong passwords allowed before the share is blocked.
    pub max_password_attempts: u32,
    /// The farthest a requester may be from the offer, in meters.
    pub range_m: u64,
    /// Usage thresholds, ascending and distinct.
    pub reminders: Vec<ReminderRule>,
    /// The geohash precision of the cell the offer is listed in (fixed per cluster).
    pub cell_precision: u8,
}

impl ShareTerms {
    /// Checks the terms are usable, with a reason a person can act on.
    pub fn validate(&self) -> Result<(), ShareError> {
        let invalid = |reason: String| Err(ShareError::Invalid { reason });
        if self.unit_bytes == 0 || self.slice_bytes == 0 {
            return invalid("unit_bytes and slice_bytes must be positive".to_owned());
        }
        if let Err(error) = CellGrid::new(self.cell_precision) {
            return invalid(error.to_string());
        }
        if self.max_password_attempts == 0 {
            return invalid("max_password_attempts must be at least 1".to_owned());
        }
        if self.reminders.len() > MAX_REMINDERS {
            return invalid(format!("at most {MAX_REMINDERS} reminder thresholds"));
        }
        let mut previous = 0_u8;
        for rule in &self.reminders {
            if !(1..=100).contains(&rule.percent) || rule.percent <= previous {
                return invalid(
                    "reminder percents are 1 to 100, ascending and distinct".to_owned(),
                );
            }
            if rule.notify.is_empty() {
                return invalid(format!("the {}% reminder notifies nobody", rule.percent));
            }
            previous = rule.percent;
        }
        Ok(())
    }
}

/// Bounds on offers and requests, against abuse and mistakes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmountLimits {
    /// Smallest amount offered or requested, in bytes.
    pub min_amount_bytes: u64,
    /// Largest amount offered or requested, in bytes.
    pub max_amount_bytes: u64,
    /// Highest price per unit, in minor units.
    pub max_price_minor_per_unit: u64,
    /// Shortest validity of an offer, in milliseconds.
    pub min_validity_ms: u64,
    /// Longest validity of an offer, in milliseconds.
    pub max_validity_ms: u64,
}

impl AmountLimits {
    /// Checks an amount of bytes offered or requested.
    pub fn check_amount(&self, amount_bytes: u64) -> Result<(), ShareError> {
        if (self.min_amount_bytes..=self.max_amount_bytes).contains(&amount_bytes) {
            Ok(())
        } else {
            Err(ShareError::Invalid {
                reason: format!(
                    "amount_bytes {amount_bytes} is outside {}..={}",
                    self.min_amount_bytes, self.max_amount_bytes
                ),
            })
        }
    }

    /// Checks an offer's price and validity (its amount by [`Self::check_amount`]).
    pub fn check_offer_terms(
        &self,
        price_minor_per_unit: u64,
        validity_ms: u64,
    ) -> Result<(), ShareError> {
        if price_minor_per_unit > self.max_price_minor_per_unit {
            return Err(ShareError::Invalid {
                reason: format!(
                    "price_minor_per_unit {price_minor_per_unit} is above the most allowed, {}",
                    self.max_price_minor_per_unit
                ),
            });
        }
        if !(self.min_validity_ms..=self.max_validity_ms).contains(&validity_ms) {
            return Err(ShareError::Invalid {
                reason: format!(
                    "validity_ms {validity_ms} is outside {}..={}",
                    self.min_validity_ms, self.max_validity_ms
                ),
            });
        }
        Ok(())
    }
}

/// Checks a currency code: three ASCII capital letters, as ISO 4217 writes them.
pub fn validate_currency(code: &str) -> Result<(), ShareError> {
    if code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ShareError::Invalid {
            reason: format!("currency {code:?} is not three capital letters (e.g. CNY)"),
        })
    }
}

/// Checks a share password: printable ASCII without spaces, of [`PASSWORD_CHARS`] length.
pub fn validate_password(password: &str) -> Result<(), ShareError> {
    if PASSWORD_CHARS.contains(&password.len()) && password.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ShareError::Invalid {
            reason: format!(
                "a share password is {} to {} printable ASCII characters without spaces",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ),
        })
    }
}

/// The fee for `used_bytes` at `price_minor_per_unit` per `unit_bytes`, in minor units: the
/// exact product rounded **up** to a whole minor unit, so a partly used unit is charged in
/// proportion and no fraction of a minor unit is ever given away or charged twice.
pub fn rate(
    used_bytes: u64,
    price_minor_per_unit: u64,
    unit_bytes: u64,
) -> Result<u64, ShareError> {
    if unit_bytes == 0 {
        return Err(ShareError::Invalid {
            reason: "unit_bytes must be positive".to_owned(),
        });
    }
    let numerator = u128::from(used_bytes) * u128::from(price_minor_per_unit);
    let fee = numerator.div_ceil(u128::from(unit_bytes));
    u64::try_from(fee).map_err(|_| ShareError::FeeOverflow)
}

/// What a sharer offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The sharer's account.
    pub sharer: String,
    /// Bytes offered.
    pub amount_bytes: u64,
    /// Price per rating unit, in the currency's minor units.
    pub price_minor_per_unit: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where the sharer is.
    pub location: GeoPoint,
    /// When the offer, and any share made of it, ends.
    pub expires_at_unix_ms: u64,
}

/// Where a share is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareStatus {
    /// Listed, waiting for a requester.
    Offered,
    /// A requester was matched and given the password; waiting for it to present it.
    Matched,
    /// Data flows; usage is metered.
    Active,
    /// Over (see [`Closing`]).
    Closed,
}

impl ShareStatus {
    /// The status's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Matched => "matched",
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

/// Why a share closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closing {
    /// Withdrawn by the sharer before it started.
    Cancelled,
    /// Too many wrong passwords.
    Blocked,
    /// The requester used the whole amount.
    Exhausted,
    /// Its validity ran out.
    Expired,
    /// The sharer ended it while active.
    EndedBySharer,
    /// The requester ended it while active.
    EndedByRequester,
}

/// The matched requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequesterRecord {
    /// The requester's account.
    pub account: String,
    /// Bytes asked for (at most the offer's amount): the share's amount once matched.
    pub requested_bytes: u64,
    /// Distance from the offer when matched, in meters.
    pub distance_m: u64,
    /// When matched.
    pub matched_at_unix_ms: u64,
}

/// What a share cost, visible to both parties once it closed after starting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
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
    /// The fee, in minor units (see [`rate`]).
    pub fee_minor: u64,
    /// When the share started.
    pub started_at_unix_ms: u64,
    /// When it closed.
    pub closed_at_unix_ms: u64,
    /// Why it closed.
    pub closing: Closing,
}

/// Something that happened to a share: each is audited, and [`ShareEvent::recipients`] are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareEvent {
    /// The offer was made and listed.
    Offered,
    /// A requester was matched.
    Matched {
        /// Its account.
        requester: String,
        /// Bytes it asked for.
        requested_bytes: u64,
    },
    /// The requester gave the match back; the offer is listed again.
    Released {
        /// Its account.
        requester: String,
    },
    /// A wrong password was presented.
    PasswordRejected {
        /// Attempts left before the share is blocked.
        attempts_left: u32,
    },
    /// The right password was presented: data may flow.
    Started {
        /// Bytes granted so far.
        granted_bytes: u64,
    },
    /// A usage report was recorded.
    UsageRecorded {
        /// The report's id.
        report_id: u64,
        /// Bytes used in total.
        used_bytes: u64,
        /// Bytes granted in total.
        granted_bytes: u64,
    },
    /// A usage threshold was crossed (once per threshold).
    Reminder {
        /// The threshold.
        percent: u8,
        /// Bytes used in total.
        used_bytes: u64,
        /// The share's amount.
        amount_bytes: u64,
        /// Whom to remind.
        notify: BTreeSet<Party>,
    },
    /// The share closed, with its bill if it had started.
    Closed {
        /// Why.
        closing: Closing,
        /// The bill, if data could have flowed.
        bill_opt: Option<Bill>,
    },
}

impl ShareEvent {
    /// Which parties are told of this event (pushed to their clients): the other side of what
    /// one side did, both sides of what ends the share, and the reminder's own list.
    pub fn recipients(&self) -> BTreeSet<Party> {
        match self {
            Self::Offered | Self::UsageRecorded { .. } | Self::PasswordRejected { .. } => {
                BTreeSet::new()
            }
            Self::Matched { .. } | Self::Released { .. } | Self::Started { .. } => {
                BTreeSet::from([Party::Sharer])
            }
            Self::Reminder { notify, .. } => notify.clone(),
            Self::Closed { .. } => BTreeSet::from([Party::Sharer, Party::Requester]),
        }
    }

    /// The event's audit action, e.g. `share.matched`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Offered => "share.offered",
            Self::Matched { .. } => "share.matched",
            Self::Released { .. } => "share.released",
            Self::PasswordRejected { .. } => "share.password_rejected",
            Self::Started { .. } => "share.started",
            Self::UsageRecorded { .. } => "share.usage",
            Self::Reminder { .. } => "share.reminder",
            Self::Closed { .. } => "share.closed",
        }
    }
}

/// Why a share refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ShareError {
    /// No offer was ever made under this id.
    #[error("no such share")]
    NoSuchShare,
    /// An offer with other terms already has this id.
    #[error("a share with this id already exists")]
    AlreadyExists,
    /// The input breaks a rule.
    #[error("{reason}")]
    Invalid {
        /// Which rule, with the value.
        reason: String,
    },
    /// The account is neither the sharer nor the matched requester.
    #[error("not a party to this share")]
    NotAParty,
    /// Only the other party may do this.
    #[error("only the {needed:?} may do this")]
    WrongParty {
        /// Who may.
        needed: Party,
    },
    /// The operation is not allowed in the share's status (an illegal transition).
    #[error("cannot {operation} a share that is {status}", status = status.as_str())]
    WrongStatus {
        /// What was asked.
        operation: String,
        /// Where the share is.
        status: ShareStatus,
    },
    /// One's own offer cannot be requested.
    #[error("this is your own offer")]
    OwnOffer,
    /// The requester is farther from the offer than the range.
    #[error("the offer is {distance_m} m away, beyond the range of {range_m} m")]
    OutOfRange {
        /// How far.
        distance_m: u64,
        /// The range.
        range_m: u64,
    },
    /// More was asked for than is offered.
    #[error("{requested_bytes} bytes asked for, {offered_bytes} offered")]
    AmountAboveOffer {
        /// Asked for.
        requested_bytes: u64,
        /// Offered.
        offered_bytes: u64,
    },
    /// A usage report's id was used before with another total.
    #[error("usage report {report_id} was already sent with another total")]
    ReportIdReused {
        /// The id.
        report_id: u64,
    },
    /// A usage total is below an earlier report's or above a later one's.
    #[error(
        "usage report {report_id} says {used_bytes} bytes, but report {other_report_id} says \
         {other_used_bytes}: totals only grow with the report id"
    )]
    NotMonotone {
        /// This report.
        report_id: u64,
        /// Its total.
        used_bytes: u64,
        /// The report it contradicts.
        other_report_id: u64,
        /// That report's total.
        other_used_bytes: u64,
    },
    /// More was used than granted.
    #[error("{used_bytes} bytes reported used, only {granted_bytes} granted")]
    AboveGrant {
        /// Reported.
        used_bytes: u64,
        /// Granted.
        granted_bytes: u64,
    },
    /// The share keeps no more usage reports.
    #[error("at most {max} usage reports per share; report less often")]
    TooManyReports {
        /// The limit.
        max: usize,
    },
    /// The fee does not fit in 64 bits.
    #[error("the fee does not fit in 64 bits")]
    FeeOverflow,
}

/// The answer to a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchAnswer {
    /// The sharer's password, relayed to the requester.
    pub password: String,
    /// Distance from the offer, in meters.
    pub distance_m: u64,
    /// The offer matched (its terms, for the requester's reply).
    pub offer: Offer,
}

/// The answer to a presented password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PasswordAnswer {
    /// Right: the share is active with this many bytes granted.
    Started {
        /// Bytes granted so far.
        granted_bytes: u64,
    },
    /// Wrong, with this many attempts left.
    Wrong {
        /// Attempts left (0: now blocked).
        attempts_left: u32,
    },
    /// The share is blocked (by this attempt or before).
    Blocked,
}

/// The answer to a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAnswer {
    /// Bytes used in total.
    pub used_bytes: u64,
    /// Bytes granted in total: the requester may use up to this.
    pub granted_bytes: u64,
    /// Whether the grant is the last (it reaches the share's amount).
    pub final_units: bool,
    /// The bill, if the share is closed.
    pub bill_opt: Option<Bill>,
}

/// The result of one operation: its answer, whether the state changed, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    /// The answer.
    pub answer: T,
    /// Whether the state changed (and must be saved).
    pub changed: bool,
    /// What happened, in order.
    pub events: Vec<ShareEvent>,
}

impl<T> Step<T> {
    fn unchanged(answer: T) -> Self {
        Self {
            answer,
            changed: false,
            events: Vec::new(),
        }
    }

    fn changed(answer: T, events: Vec<ShareEvent>) -> Self {
        Self {
            answer,
            changed: true,
            events,
        }
    }
}

/// A share as one party sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    /// Which side the viewer is.
    pub role: Party,
    /// Where the share is.
    pub status: ShareStatus,
    /// The offer.
    pub offer: Offer,
    /// The matched requester, if any.
    pub requester_opt: Option<RequesterRecord>,
    /// The password, shown to the matched requester until the share starts.
    pub password_opt: Option<String>,
    /// Wrong passwords allowed before the share is blocked.
    pub password_attempts_left: u32,
    /// Bytes granted in total.
    pub granted_bytes: u64,
    /// Bytes used in total.
    pub used_bytes: u64,
    /// Thresholds already reminded of.
    pub reminded_percents: BTreeSet<u8>,
    /// The terms.
    pub terms: ShareTerms,
    /// When it was offered.
    pub offered_at_unix_ms: u64,
    /// When it started, if it did.
    pub started_at_unix_ms_opt: Option<u64>,
    /// Why and when it closed, if it did.
    pub closed_opt: Option<(Closing, u64)>,
    /// The bill, once closed after starting.
    pub bill_opt: Option<Bill>,
}

/// One share's state (the share entity's persisted state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareState {
    opened_opt: Option<Opened>,
}

/// A share once offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Opened {
    offer: Offer,
    terms: ShareTerms,
    offered_at_unix_ms: u64,
    status: ShareStatus,
    requester_opt: Option<RequesterRecord>,
    /// Kept only until the share starts or closes.
    password_opt: Option<String>,
    failed_attempts: u32,
    started_at_unix_ms_opt: Option<u64>,
    granted_bytes: u64,
    used_bytes: u64,
    /// Usage reports by id: the cumulative total each said.
    usage_reports: BTreeMap<u64, u64>,
    reminded_percents: BTreeSet<u8>,
    closed_opt: Option<(Closing, u64)>,
    bill_opt: Option<Bill>,
}

/// Compares without stopping at the first difference, so timing does not tell how much of a
/// guess was right.
fn same_secret(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

impl Opened {
    fn wrong_status(&self, operation: &str) -> ShareError {
        ShareError::WrongStatus {
            operation: operation.to_owned(),
            status: self.status,
        }
    }

    fn party_of(&self, account: &str) -> Result<Party, ShareError> {
        if account == self.offer.sharer {
            Ok(Party::Sharer)
        } else if self
            .requester_opt
            .as_ref()
            .is_some_and(|requester| requester.account == account)
        {
            Ok(Party::Requester)
        } else {
            Err(ShareError::NotAParty)
        }
    }

    fn amount_bytes(&self) -> u64 {
        self.requester_opt
            .as_ref()
            .map_or(self.offer.amount_bytes, |requester| {
                requester.requested_bytes
            })
    }

    /// Closes the share now; a share that started gets its bill.
    fn close(&mut self, closing: Closing, now_unix_ms: u64) -> Result<ShareEvent, ShareError> {
        let bill_opt = match (&self.requester_opt, self.started_at_unix_ms_opt) {
            (Some(requester), Some(started_at_unix_ms)) => Some(Bill {
                sharer: self.offer.sharer.clone(),
                requester: requester.account.clone(),
                used_bytes: self.used_bytes,
                unit_bytes: self.terms.unit_bytes,
                price_minor_per_unit: self.offer.price_minor_per_unit,
                currency: self.offer.currency.clone(),
                fee_minor: rate(
                    self.used_bytes,
                    self.offer.price_minor_per_unit,
                    self.terms.unit_bytes,
                )?,
                started_at_unix_ms,
                closed_at_unix_ms: now_unix_ms,
                closing,
            }),
            _ => None,
        };
        self.status = ShareStatus::Closed;
        self.password_opt = None;
        self.closed_opt = Some((closing, now_unix_ms));
        self.bill_opt.clone_from(&bill_opt);
        Ok(ShareEvent::Closed { closing, bill_opt })
    }
}

impl ShareState {
    fn opened(&self) -> Result<&Opened, ShareError> {
        self.opened_opt.as_ref().ok_or(ShareError::NoSuchShare)
    }

    fn opened_mut(&mut self) -> Result<&mut Opened, ShareError> {
        self.opened_opt.as_mut().ok_or(ShareError::NoSuchShare)
    }

    /// Where the share is, once offered.
    pub fn status_opt(&self) -> Option<ShareStatus> {
        self.opened_opt.as_ref().map(|opened| opened.status)
    }

    /// Makes the offer. The password is the sharer's (checked by [`validate_password`]);
    /// offering the same again changes nothing, another offer under the same id is refused.
    pub fn open(
        &mut self,
        offer: Offer,
        terms: ShareTerms,
        password: String,
        now_unix_ms: u64,
    ) -> Result<Step<()>, ShareError> {
        if let Some(opened) = &self.opened_opt {
            return if opened.offer == offer && opened.terms == terms {
                Ok(Step::unchanged(()))
            } else {
                Err(ShareError::AlreadyExists)
            };
        }
        terms.validate()?;
        validate_currency(&offer.currency)?;
        validate_password(&password)?;
        if offer.amount_bytes == 0 {
            return Err(ShareError::Invalid {
                reason: "amount_bytes must be positive".to_owned(),
            });
        }
        if offer.expires_at_unix_ms <= now_unix_ms {
            return Err(ShareError::Invalid {
                reason: "the offer would expire before it is made".to_owned(),
            });
        }
        // The most the offer can cost must be billable.
        rate(
            offer.amount_bytes,
            offer.price_minor_per_unit,
            terms.unit_bytes,
        )?;
        self.opened_opt = Some(Opened {
            offer,
            terms,
            offered_at_unix_ms: now_unix_ms,
            status: ShareStatus::Offered,
            requester_opt: None,
            password_opt: Some(password),
            failed_attempts: 0,
            started_at_unix_ms_opt: None,
            granted_bytes: 0,
            used_bytes: 0,
            usage_reports: BTreeMap::new(),
            reminded_percents: BTreeSet::new(),
            closed_opt: None,
            bill_opt: None,
        });
        Ok(Step::changed((), vec![ShareEvent::Offered]))
    }

    /// Closes the share if its validity ran out (called before every operation, so expiry is
    /// seen at the first touch after it). A share that started is billed for what it used.
    pub fn expire_due(&mut self, now_unix_ms: u64) -> Result<Step<()>, ShareError> {
        let Some(opened) = self.opened_opt.as_mut() else {
            return Ok(Step::unchanged(()));
        };
        if opened.status == ShareStatus::Closed || now_unix_ms < opened.offer.expires_at_unix_ms {
            return Ok(Step::unchanged(()));
        }
        let closed = opened.close(Closing::Expired, opened.offer.expires_at_unix_ms)?;
        Ok(Step::changed((), vec![closed]))
    }

    /// Matches `requester`, `distance_m` away from the offer, for `requested_bytes`, and
    /// relays the password. The same requester matching again gets the same answer.
    pub fn match_requester(
        &mut self,
        requester: &str,
        requested_bytes: u64,
        location: GeoPoint,
        now_unix_ms: u64,
    ) -> Result<Step<MatchAnswer>, ShareError> {
        let opened = self.opened_mut()?;
        let distance_m = opened.offer.location.distance_m(&location);
        if requester == opened.offer.sharer {
            return Err(ShareError::OwnOffer);
        }
        if opened.status == ShareStatus::Matched
            && let (Some(record), Some(password)) = (&opened.requester_opt, &opened.password_opt)
            && record.account == requester
            && record.requested_bytes == requested_bytes
        {
            return Ok(Step::unchanged(MatchAnswer {
                password: password.clone(),
                distance_m: record.distance_m,
                offer: opened.offer.clone(),
            }));
        }
        if opened.status != ShareStatus::Offered {
            return Err(opened.wrong_status("match"));
        }
        if requested_bytes == 0 || requested_bytes > opened.offer.amount_bytes {
            return Err(ShareError::AmountAboveOffer {
                requested_bytes,
                offered_bytes: opened.offer.amount_bytes,
            });
        }
        if distance_m > opened.terms.range_m {
            return Err(ShareError::OutOfRange {
                distance_m,
                range_m: opened.terms.range_m,
            });
        }
        let Some(password) = opened.password_opt.clone() else {
            return Err(opened.wrong_status("match"));
        };
        opened.status = ShareStatus::Matched;
        opened.requester_opt = Some(RequesterRecord {
            account: requester.to_owned(),
            requested_bytes,
            distance_m,
            matched_at_unix_ms: now_unix_ms,
        });
        let event = ShareEvent::Matched {
            requester: requester.to_owned(),
            requested_bytes,
        };
        Ok(Step::changed(
            MatchAnswer {
                password,
                distance_m,
                offer: opened.offer.clone(),
            },
            vec![event],
        ))
    }

    /// Cancels before the share starts: the sharer withdraws the offer (matched or not); the
    /// matched requester gives the match back and the offer is listed again.
    pub fn cancel(&mut self, account: &str, now_unix_ms: u64) -> Result<Step<()>, ShareError> {
        let opened = self.opened_mut()?;
        let party = opened.party_of(account)?;
        match (opened.status, party) {
            (ShareStatus::Offered | ShareStatus::Matched, Party::Sharer) => {
                let closed = opened.close(Closing::Cancelled, now_unix_ms)?;
                Ok(Step::changed((), vec![closed]))
            }
            (ShareStatus::Matched, Party::Requester) => {
                let requester = opened
                    .requester_opt
                    .take()
                    .map(|record| record.account)
                    .unwrap_or_default();
                opened.status = ShareStatus::Offered;
                opened.failed_attempts = 0;
                Ok(Step::changed((), vec![ShareEvent::Released { requester }]))
            }
            _ => Err(opened.wrong_status("cancel")),
        }
    }

    /// The requester presents the password relayed to it. Right: the share starts with its
    /// first slice granted. Wrong: one attempt fewer; at none left the share is blocked. The
    /// requester asking again once started gets the same answer.
    pub fn present_password(
        &mut self,
        account: &str,
        password: &str,
        now_unix_ms: u64,
    ) -> Result<Step<PasswordAnswer>, ShareError> {
        let opened = self.opened_mut()?;
        let party = opened.party_of(account)?;
        if party != Party::Requester {
            return Err(ShareError::WrongParty {
                needed: Party::Requester,
            });
        }
        match opened.status {
            ShareStatus::Matched => {}
            ShareStatus::Active => {
                return Ok(Step::unchanged(PasswordAnswer::Started {
                    granted_bytes: opened.granted_bytes,
                }));
            }
            ShareStatus::Closed
                if opened.closed_opt.map(|(closing, _)| closing) == Some(Closing::Blocked) =>
            {
                return Ok(Step::unchanged(PasswordAnswer::Blocked));
            }
            ShareStatus::Offered | ShareStatus::Closed => {
                return Err(opened.wrong_status("start"));
            }
        }
        let right = opened
            .password_opt
            .as_deref()
            .is_some_and(|kept| same_secret(kept, password));
        if right {
            opened.status = ShareStatus::Active;
            opened.password_opt = None;
            opened.started_at_unix_ms_opt = Some(now_unix_ms);
            opened.granted_bytes = opened.amount_bytes().min(opened.terms.slice_bytes);
            let granted_bytes = opened.granted_bytes;
            return Ok(Step::changed(
                PasswordAnswer::Started { granted_bytes },
                vec![ShareEvent::Started { granted_bytes }],
            ));
        }
        opened.failed_attempts = opened.failed_attempts.saturating_add(1);
        let attempts_left = opened
            .terms
            .max_password_attempts
            .saturating_sub(opened.failed_attempts);
        let mut events = vec![ShareEvent::PasswordRejected { attempts_left }];
        if attempts_left == 0 {
            events.push(opened.close(Closing::Blocked, now_unix_ms)?);
            return Ok(Step::changed(PasswordAnswer::Blocked, events));
        }
        Ok(Step::changed(
            PasswordAnswer::Wrong { attempts_left },
            events,
        ))
    }

    /// Records the requester's cumulative usage as of report `report_id`. Reports may arrive
    /// twice or out of order: totals must grow with the id, a repeated id must repeat its
    /// total, and only the highest total counts. Grants the next slice, reminds of each
    /// threshold crossed (once), and closes the share when the amount is used up.
    pub fn report_usage(
        &mut self,
        account: &str,
        report_id: u64,
        used_bytes: u64,
        now_unix_ms: u64,
    ) -> Result<Step<UsageAnswer>, ShareError> {
        let opened = self.opened_mut()?;
        let party = opened.party_of(account)?;
        if party != Party::Requester {
            return Err(ShareError::WrongParty {
                needed: Party::Requester,
            });
        }
        let answer_now = |opened: &Opened| UsageAnswer {
            used_bytes: opened.used_bytes,
            granted_bytes: opened.granted_bytes,
            final_units: opened.granted_bytes == opened.amount_bytes(),
            bill_opt: opened.bill_opt.clone(),
        };
        if let Some(&kept) = opened.usage_reports.get(&report_id) {
            return if kept == used_bytes {
                Ok(Step::unchanged(answer_now(opened)))
            } else {
                Err(ShareError::ReportIdReused { report_id })
            };
        }
        if opened.status != ShareStatus::Active {
            return Err(opened.wrong_status("report usage of"));
        }
        check_monotone(&opened.usage_reports, report_id, used_bytes)?;
        if used_bytes > opened.granted_bytes {
            return Err(ShareError::AboveGrant {
                used_bytes,
                granted_bytes: opened.granted_bytes,
            });
        }
        if opened.usage_reports.len() >= MAX_USAGE_REPORTS {
            return Err(ShareError::TooManyReports {
                max: MAX_USAGE_REPORTS,
            });
        }
        opened.usage_reports.insert(report_id, used_bytes);
        opened.used_bytes = opened.used_bytes.max(used_bytes);
        let amount_bytes = opened.amount_bytes();
        let next_grant =
            amount_bytes.min(opened.used_bytes.saturating_add(opened.terms.slice_bytes));
        opened.granted_bytes = opened.granted_bytes.max(next_grant);
        let mut events = vec![ShareEvent::UsageRecorded {
            report_id,
            used_bytes: opened.used_bytes,
            granted_bytes: opened.granted_bytes,
        }];
        for rule in &opened.terms.reminders {
            let crossed = u128::from(opened.used_bytes) * 100
                >= u128::from(amount_bytes) * u128::from(rule.percent);
            if crossed && opened.reminded_percents.insert(rule.percent) {
                events.push(ShareEvent::Reminder {
                    percent: rule.percent,
                    used_bytes: opened.used_bytes,
                    amount_bytes,
                    notify: rule.notify.clone(),
                });
            }
        }
        if opened.used_bytes >= amount_bytes {
            events.push(opened.close(Closing::Exhausted, now_unix_ms)?);
        }
        Ok(Step::changed(answer_now(opened), events))
    }

    /// Either party ends an active share; it is billed for what was used.
    pub fn end(&mut self, account: &str, now_unix_ms: u64) -> Result<Step<Bill>, ShareError> {
        let opened = self.opened_mut()?;
        let party = opened.party_of(account)?;
        if opened.status != ShareStatus::Active {
            return Err(opened.wrong_status("end"));
        }
        let closing = match party {
            Party::Sharer => Closing::EndedBySharer,
            Party::Requester => Closing::EndedByRequester,
        };
        let closed = opened.close(closing, now_unix_ms)?;
        let bill = opened.bill_opt.clone().ok_or(ShareError::NoSuchShare)?;
        Ok(Step::changed(bill, vec![closed]))
    }

    /// The share as `account` sees it (parties only).
    pub fn view_for(&self, account: &str) -> Result<ShareView, ShareError> {
        let opened = self.opened()?;
        let role = opened.party_of(account)?;
        let password_opt = match (role, opened.status) {
            (Party::Requester, ShareStatus::Matched) | (Party::Sharer, _) => {
                opened.password_opt.clone()
            }
            _ => None,
        };
        Ok(ShareView {
            role,
            status: opened.status,
            offer: opened.offer.clone(),
            requester_opt: opened.requester_opt.clone(),
            password_opt,
            password_attempts_left: opened
                .terms
                .max_password_attempts
                .saturating_sub(opened.failed_attempts),
            granted_bytes: opened.granted_bytes,
            used_bytes: opened.used_bytes,
            reminded_percents: opened.reminded_percents.clone(),
            terms: opened.terms.clone(),
            offered_at_unix_ms: opened.offered_at_unix_ms,
            started_at_unix_ms_opt: opened.started_at_unix_ms_opt,
            closed_opt: opened.closed_opt,
            bill_opt: opened.bill_opt.clone(),
        })
    }

    /// The cell the offer is listed in and its listing there, once offered.
    pub fn listing(&self, share_id: &str) -> Option<(String, ListedOffer)> {
        let opened = self.opened().ok()?;
        let cell = CellGrid::new(opened.terms.cell_precision)
            .ok()?
            .cell_of(opened.offer.location);
        let listed = ListedOffer {
            share_id: share_id.to_owned(),
            sharer: opened.offer.sharer.clone(),
            location: opened.offer.location,
            amount_bytes: opened.offer.amount_bytes,
            price_minor_per_unit: opened.offer.price_minor_per_unit,
            currency: opened.offer.currency.clone(),
            listed_at_unix_ms: opened.offered_at_unix_ms,
            expires_at_unix_ms: opened.offer.expires_at_unix_ms,
        };
        Some((cell, listed))
    }

    /// The account of `party`, if there is one yet.
    pub fn account_of(&self, party: Party) -> Option<&str> {
        let opened = self.opened().ok()?;
        match party {
            Party::Sharer => Some(opened.offer.sharer.as_str()),
            Party::Requester => opened
                .requester_opt
                .as_ref()
                .map(|record| record.account.as_str()),
        }
    }
}

/// Refuses a report whose total is below an earlier report's or above a later one's.
fn check_monotone(
    reports: &BTreeMap<u64, u64>,
    report_id: u64,
    used_bytes: u64,
) -> Result<(), ShareError> {
    let contradiction =
        |(&other_report_id, &other_used_bytes): (&u64, &u64)| ShareError::NotMonotone {
            report_id,
            used_bytes,
            other_report_id,
            other_used_bytes,
        };
    if let Some(earlier) = reports.range(..report_id).next_back()
        && *earlier.1 > used_bytes
    {
        return Err(contradiction(earlier));
    }
    if let Some(later) = reports.range(report_id.saturating_add(1)..).next()
        && *later.1 < used_bytes
    {
        return Err(contradiction(later));
    }
    Ok(())
}
