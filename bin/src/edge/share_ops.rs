//! The traffic-share operations (S4) for clients: offer, find, request, cancel, start with the
//! password, report usage, end, get. The edge checks shapes and bounds, checks the caller's key
//! (and daily caps) with the account's user entity, asks the offer cells around a requester for
//! the offers within range, and leaves every decision about a share to the share's entity.

use crate::edge::Edge;
use crate::edge::auth::ParsedKey;
use crate::edge::ops::{OpResult, ask_session, bad_request, unexpected, value};
use crate::edge::protocol::{ErrorBody, ErrorCode};
use crate::edge::share_wire::{
    FindReply, OfferReply, OfferRequest, RequestReply, ShareRef, ShareReplyBody, ShareSearch,
    StartReply, StartRequest, UsageReply, UsageRequest, WireBill, WireOffer,
};
use futures_util::future::join_all;
use lanmesh_actors::entities::offer_cell::{OfferCellReply, OfferCellRequest};
use lanmesh_actors::entities::share::{ShareReply, ShareRequest};
use lanmesh_actors::entities::user::{SessionOp, UserReply};
use lanmesh_actors::model::entity_kind::EntityKind;
use lanmesh_actors::model::geo::{CellGrid, GeoPoint};
use lanmesh_actors::model::offer_cell::{OfferMatch, ProximityQuery, merge_matches};
use lanmesh_actors::model::share::{
    AmountLimits, Offer, Party, PasswordAnswer, ShareError, ShareTerms, validate_currency,
    validate_password,
};
use lanmesh_actors::model::share_allowance::DailyShareCaps;
use std::time::Duration;
use uuid::Uuid;

/// Most offer cells one search asks (a range too wide for the cell grid at the requester's
/// latitude is refused rather than fanned out further).
const MAX_CELLS_PER_SEARCH: usize = 64;
/// Digits of a password the server generates.
const GENERATED_PASSWORD_DIGITS: u32 = 6;

/// The traffic-sharing settings of the cluster (`share.*`).
#[derive(Debug, Clone)]
pub struct ShareSettings {
    /// The terms new shares are opened under.
    pub terms: ShareTerms,
    /// Bounds on offers and requests.
    pub limits: AmountLimits,
    /// Per-account daily caps.
    pub caps: DailyShareCaps,
    /// Most offers `share.find` returns.
    pub max_results: usize,
}

/// Maps a share's refusal to a client error.
fn share_refusal(error: ShareError) -> ErrorBody {
    let code = match &error {
        ShareError::NoSuchShare => ErrorCode::NoSuchShare,
        ShareError::NotAParty | ShareError::WrongParty { .. } => ErrorCode::NotAParty,
        ShareError::WrongStatus { .. } => ErrorCode::WrongStatus,
        ShareError::OutOfRange { .. } => ErrorCode::OutOfRange,
        ShareError::TooManyReports { .. } => ErrorCode::TooMany,
        ShareError::Invalid { .. } => ErrorCode::BadRequest,
        ShareError::AlreadyExists
        | ShareError::OwnOffer
        | ShareError::AmountAboveOffer { .. }
        | ShareError::ReportIdReused { .. }
        | ShareError::NotMonotone { .. }
        | ShareError::AboveGrant { .. }
        | ShareError::FeeOverflow => ErrorCode::Invalid,
    };
    let message = match error {
        ShareError::Invalid { reason } => reason,
        other => other.to_string(),
    };
    ErrorBody::new(code, message)
}

fn unexpected_share(reply: &ShareReply) -> ErrorBody {
    tracing::error!(reply = ?reply, "unexpected reply from a share entity");
    ErrorBody::new(ErrorCode::Unavailable, "unexpected answer from the service")
}

/// Asks share `share_id`; a refusal becomes the client's error.
async fn ask_share(
    edge: &Edge,
    share_id: &str,
    request: &ShareRequest,
) -> Result<ShareReply, ErrorBody> {
    match edge
        .ask_entity(EntityKind::Share, share_id, request, None)
        .await?
    {
        ShareReply::Refused(error) => Err(share_refusal(error)),
        reply => Ok(reply),
    }
}

/// Checks the caller's key (a read that changes nothing).
async fn check_key(edge: &Edge, key: &ParsedKey) -> Result<(), ErrorBody> {
    match ask_session(edge, key, SessionOp::Profile, None).await? {
        UserReply::Profile(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Reserves today's allowance for `role` under `reservation` (also checks the key).
async fn reserve(
    edge: &Edge,
    key: &ParsedKey,
    reservation: &str,
    role: Party,
    bytes: u64,
) -> Result<(), ErrorBody> {
    let op = SessionOp::ReserveShare {
        key: reservation.to_owned(),
        role,
        bytes,
        caps: edge.limits.share.caps,
    };
    match ask_session(edge, key, op, None).await? {
        UserReply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn location(lat: f64, lon: f64) -> Result<GeoPoint, ErrorBody> {
    GeoPoint::from_degrees(lat, lon).map_err(|error| bad_request(error.to_string()))
}

fn check_share_id(share_id: &str) -> Result<(), ErrorBody> {
    if (1..=64).contains(&share_id.len())
        && share_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(bad_request("share_id is 1 to 64 letters, digits or dashes"))
    }
}

/// A password of [`GENERATED_PASSWORD_DIGITS`] decimal digits from the OS's randomness.
fn generate_password() -> Result<String, ErrorBody> {
    let modulus = 10_u32.pow(GENERATED_PASSWORD_DIGITS);
    // Rejects the top of the range so every value is equally likely.
    let limit = u32::MAX - u32::MAX % modulus;
    loop {
        let mut bytes = [0_u8; 4];
        getrandom::fill(&mut bytes)
            .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "no randomness for a password"))?;
        let drawn = u32::from_le_bytes(bytes);
        if drawn < limit {
            let digits = usize::try_from(GENERATED_PASSWORD_DIGITS).unwrap_or(6);
            return Ok(format!("{:0digits$}", drawn % modulus));
        }
    }
}

/// `share.offer`: the sharer offers bytes at a price, for a time, from a place.
pub(super) async fn offer(edge: &Edge, key: &ParsedKey, request: OfferRequest) -> OpResult {
    let settings = &edge.limits.share;
    settings
        .limits
        .check_amount(request.amount_bytes)
        .map_err(share_refusal)?;
    settings
        .limits
        .check_offer_terms(request.price_minor_per_unit, request.validity_ms)
        .map_err(share_refusal)?;
    validate_currency(&request.currency).map_err(share_refusal)?;
    let location = location(request.lat, request.lon)?;
    let password = match request.password {
        Some(password) => {
            validate_password(&password).map_err(share_refusal)?;
            password
        }
        None => generate_password()?,
    };
    let share_id = Uuid::now_v7().simple().to_string();
    reserve(edge, key, &share_id, Party::Sharer, request.amount_bytes).await?;
    let expires_at_ms = edge
        .clock()
        .now_unix_ms()
        .saturating_add(request.validity_ms);
    let open = ShareRequest::Open {
        offer: Offer {
            sharer: key.account.clone(),
            amount_bytes: request.amount_bytes,
            price_minor_per_unit: request.price_minor_per_unit,
            currency: request.currency,
            location,
            expires_at_unix_ms: expires_at_ms,
        },
        terms: settings.terms.clone(),
        password: password.clone(),
    };
    match ask_share(edge, &share_id, &open).await? {
        ShareReply::Done => {
            expire_when_due(edge, &share_id, expires_at_ms);
            value(&OfferReply {
                share_id,
                password,
                expires_at_ms,
            })
        }
        other => Err(unexpected_share(&other)),
    }
}

/// Tells the share to apply its expiry once its validity is over, so a share nobody touches
/// then still closes (and bills) on time. Best effort: if this node stops first, the share
/// closes at the next request that touches it.
fn expire_when_due(edge: &Edge, share_id: &str, expires_at_ms: u64) {
    let Some(edge) = edge.myself() else {
        return;
    };
    let share_id = share_id.to_owned();
    actix_web::rt::spawn(async move {
        loop {
            let now_ms = edge.clock().now_unix_ms();
            if now_ms >= expires_at_ms {
                break;
            }
            // The clock is read again after each wait: a simulated clock may have moved.
            let wait_ms = expires_at_ms.saturating_sub(now_ms).min(60_000);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        if let Err(error) = ask_share(&edge, &share_id, &ShareRequest::Expire).await {
            tracing::warn!(share = %share_id, error = %error.message, "share expiry not applied");
        }
    });
}

/// The offers within range of `center` with at least `amount_bytes`, best first, leaving out
/// `requester`'s own: every cell the range touches is asked at once, the answers merged.
async fn search(
    edge: &Edge,
    requester: &str,
    center: GeoPoint,
    amount_bytes: u64,
) -> Result<Vec<OfferMatch>, ErrorBody> {
    let settings = &edge.limits.share;
    let grid = CellGrid::new(settings.terms.cell_precision).map_err(|error| {
        tracing::error!(error = %error, "share.cell_precision is not a cell grid");
        ErrorBody::new(ErrorCode::Unavailable, "offer search is misconfigured")
    })?;
    let cells = grid
        .cells_within(center, settings.terms.range_m, MAX_CELLS_PER_SEARCH)
        .map_err(|error| bad_request(format!("cannot search here: {error}")))?;
    let query = OfferCellRequest::Query(ProximityQuery {
        center,
        radius_m: settings.terms.range_m,
        min_amount_bytes: amount_bytes,
        exclude_sharer_opt: Some(requester.to_owned()),
        limit: settings.max_results,
    });
    let answers = join_all(cells.iter().map(|cell| {
        edge.ask_entity::<_, OfferCellReply>(EntityKind::OfferCell, cell, &query, None)
    }))
    .await;
    let mut per_cell = Vec::with_capacity(answers.len());
    for answer in answers {
        match answer? {
            OfferCellReply::Offers(found) => per_cell.push(found),
            other => {
                tracing::error!(reply = ?other, "unexpected reply from an offer cell");
                return Err(ErrorBody::new(
                    ErrorCode::Unavailable,
                    "unexpected answer from the service",
                ));
            }
        }
    }
    Ok(merge_matches(per_cell, settings.max_results))
}

fn check_wanted(edge: &Edge, search: &ShareSearch) -> Result<GeoPoint, ErrorBody> {
    edge.limits
        .share
        .limits
        .check_amount(search.amount_bytes)
        .map_err(share_refusal)?;
    location(search.lat, search.lon)
}

/// `share.find`: the offers within range of the caller, cheapest first, then nearest.
pub(super) async fn find(edge: &Edge, key: &ParsedKey, request: ShareSearch) -> OpResult {
    let center = check_wanted(edge, &request)?;
    check_key(edge, key).await?;
    let found = search(edge, &key.account, center, request.amount_bytes).await?;
    value(&FindReply {
        range_m: edge.limits.share.terms.range_m,
        offers: found.iter().map(WireOffer::of).collect(),
    })
}

/// `share.request`: matches the caller to the offer named, or to the best offer within range
/// that is still free, and relays its password. The bytes asked for count against today's cap
/// once matched; a request that matches nothing gives them back.
pub(super) async fn request(edge: &Edge, key: &ParsedKey, request: ShareSearch) -> OpResult {
    let center = check_wanted(edge, &request)?;
    if let Some(share_id) = &request.share_id {
        check_share_id(share_id)?;
    }
    let reservation = format!("request-{}", Uuid::now_v7().simple());
    reserve(
        edge,
        key,
        &reservation,
        Party::Requester,
        request.amount_bytes,
    )
    .await?;
    let candidates = match &request.share_id {
        Some(share_id) => vec![share_id.clone()],
        None => search(edge, &key.account, center, request.amount_bytes)
            .await?
            .into_iter()
            .map(|found| found.offer.share_id)
            .collect(),
    };
    let matching = ShareRequest::Match {
        requester: key.account.clone(),
        requested_bytes: request.amount_bytes,
        location: center,
    };
    let mut last_refusal_opt = None;
    for share_id in candidates {
        match ask_share(edge, &share_id, &matching).await {
            Ok(ShareReply::Matched(answer)) => {
                return value(&RequestReply {
                    offer: WireOffer {
                        share_id,
                        sharer: answer.offer.sharer,
                        amount_bytes: answer.offer.amount_bytes,
                        price_minor_per_unit: answer.offer.price_minor_per_unit,
                        currency: answer.offer.currency,
                        distance_m: answer.distance_m,
                        expires_at_ms: answer.offer.expires_at_unix_ms,
                    },
                    requested_bytes: request.amount_bytes,
                    password: answer.password,
                });
            }
            Ok(other) => return Err(unexpected_share(&other)),
            // Taken, expired or withdrawn since the search: try the next.
            Err(refusal) => last_refusal_opt = Some(refusal),
        }
    }
    let release = SessionOp::ReleaseShare { key: reservation };
    ask_session(edge, key, release, None).await?;
    Err(match (request.share_id, last_refusal_opt) {
        (Some(_), Some(refusal)) => refusal,
        _ => ErrorBody::new(
            ErrorCode::NoOfferInRange,
            format!(
                "no free offer of {} bytes within {} m",
                request.amount_bytes, edge.limits.share.terms.range_m
            ),
        ),
    })
}

async fn share_view(
    edge: &Edge,
    key: &ParsedKey,
    share_id: &str,
) -> Result<ShareReplyBody, ErrorBody> {
    let inspect = ShareRequest::Inspect {
        account: key.account.clone(),
    };
    match ask_share(edge, share_id, &inspect).await? {
        ShareReply::View(view) => Ok(ShareReplyBody::of(share_id, &view)),
        other => Err(unexpected_share(&other)),
    }
}

/// `share.cancel`: the sharer withdraws the offer, or the requester gives the match back,
/// before the share starts.
pub(super) async fn cancel(edge: &Edge, key: &ParsedKey, request: ShareRef) -> OpResult {
    check_share_id(&request.share_id)?;
    check_key(edge, key).await?;
    let cancel = ShareRequest::Cancel {
        account: key.account.clone(),
    };
    match ask_share(edge, &request.share_id, &cancel).await? {
        // The share as the sharer now sees it; a requester who gave its match back is no
        // longer a party and gets an empty map.
        ShareReply::Done => match share_view(edge, key, &request.share_id).await {
            Ok(view) => value(&view),
            Err(_) => Ok(rmpv::Value::Map(Vec::new())),
        },
        other => Err(unexpected_share(&other)),
    }
}

/// `share.start`: the requester presents the password; right, the share starts.
pub(super) async fn start(edge: &Edge, key: &ParsedKey, request: StartRequest) -> OpResult {
    check_share_id(&request.share_id)?;
    if request.password.len() > 256 {
        return Err(bad_request("password is at most 256 bytes"));
    }
    check_key(edge, key).await?;
    let present = ShareRequest::PresentPassword {
        account: key.account.clone(),
        password: request.password,
    };
    match ask_share(edge, &request.share_id, &present).await? {
        ShareReply::Password(PasswordAnswer::Started { granted_bytes }) => {
            value(&StartReply { granted_bytes })
        }
        ShareReply::Password(PasswordAnswer::Wrong { attempts_left }) => Err(ErrorBody::new(
            ErrorCode::WrongPassword,
            format!("wrong password; {attempts_left} attempts left before the share is blocked"),
        )),
        ShareReply::Password(PasswordAnswer::Blocked) => Err(ErrorBody::new(
            ErrorCode::ShareBlocked,
            "too many wrong passwords: the share is blocked",
        )),
        other => Err(unexpected_share(&other)),
    }
}

/// `share.report_usage`: the requester's cumulative usage.
pub(super) async fn report_usage(edge: &Edge, key: &ParsedKey, request: UsageRequest) -> OpResult {
    check_share_id(&request.share_id)?;
    check_key(edge, key).await?;
    let report = ShareRequest::ReportUsage {
        account: key.account.clone(),
        report_id: request.report_id,
        used_bytes: request.used_bytes,
    };
    match ask_share(edge, &request.share_id, &report).await? {
        ShareReply::Usage(answer) => value(&UsageReply::of(&answer)),
        other => Err(unexpected_share(&other)),
    }
}

/// `share.end`: either party ends an active share and both get the bill.
pub(super) async fn end(edge: &Edge, key: &ParsedKey, request: ShareRef) -> OpResult {
    check_share_id(&request.share_id)?;
    check_key(edge, key).await?;
    let end = ShareRequest::End {
        account: key.account.clone(),
    };
    match ask_share(edge, &request.share_id, &end).await? {
        ShareReply::Ended(bill) => value(&WireBill::of(&bill)),
        other => Err(unexpected_share(&other)),
    }
}

/// `share.get`: the share as the caller sees it (parties only).
pub(super) async fn get(edge: &Edge, key: &ParsedKey, request: ShareRef) -> OpResult {
    check_share_id(&request.share_id)?;
    check_key(edge, key).await?;
    value(&share_view(edge, key, &request.share_id).await?)
}
