//! The reference site's routes: the checks of docs/partner-api.md in their order, the three
//! answers, and the signed refusals.

use super::nonces::{NonceCheck, NonceWindow};
use super::{DemoSiteConfig, DemoUsers};
use crate::edge::auth::verify_password;
use crate::partner::signing;
use crate::partner::wire::{
    AnswerResult, ContactsPage, MAX_CONTACTS_PAGE, MAX_CURSOR_BYTES, MAX_POSTS_PAGE,
    MAX_REQUEST_BYTES, PageRequest, PostsPage, Refusal, RefusalReason, SIGNATURE_HEADER,
    VerifyAdmitted, VerifyRequest,
};
use crate::partner::{identity, wire};
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most nonces remembered at once; beyond this the site answers 503 rather than forget one
/// that could still be replayed.
const NONCE_CAPACITY: usize = 100_000;
/// An oversize body is read (and dropped) up to this size before the refusal goes out, so
/// that the client is not cut off while still sending and does read the refusal.
const MAX_DRAINED_BYTES: usize = 1024 * 1024;

/// Adds the three routes to an app whose data holds a [`SiteState`].
pub(super) fn register(service_config: &mut web::ServiceConfig) {
    service_config
        .route(
            &format!("/{}", wire::VERIFY_PATH),
            web::post().to(verify_route),
        )
        .route(
            &format!("/{}", wire::CONTACTS_PATH),
            web::post().to(contacts_route),
        )
        .route(
            &format!("/{}", wire::POSTS_PATH),
            web::post().to(posts_route),
        );
}

/// What the handlers share.
pub(super) struct SiteState {
    site_id: String,
    secret: Vec<u8>,
    authorised_server_ids: BTreeSet<String>,
    users: DemoUsers,
    dummy_password_hash: String,
    max_skew_secs: u64,
    clock_offset_secs: i64,
    seen_nonces: Mutex<NonceWindow>,
}

impl SiteState {
    /// The state of a site run with `config`, checking unknown users against
    /// `dummy_password_hash`.
    pub(super) fn new(config: DemoSiteConfig, dummy_password_hash: String) -> Self {
        Self {
            site_id: config.site_id,
            secret: config.secret,
            authorised_server_ids: config.authorised_server_ids,
            users: config.users,
            dummy_password_hash,
            max_skew_secs: config.max_skew_secs,
            clock_offset_secs: config.clock_offset_secs,
            seen_nonces: Mutex::new(NonceWindow::new(NONCE_CAPACITY)),
        }
    }

    /// Unix seconds on the site's (possibly offset) clock.
    fn site_now(&self) -> i128 {
        let real_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        i128::from(real_now) + i128::from(self.clock_offset_secs)
    }
}

/// The three routes.
#[derive(Debug, Clone, Copy)]
enum Route {
    Verify,
    Contacts,
    Posts,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Verify => wire::VERIFY_PATH,
            Route::Contacts => wire::CONTACTS_PATH,
            Route::Posts => wire::POSTS_PATH,
        }
    }
}

/// A request turned away.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    /// `None`: the site cannot serve (5xx), which is not a refusal.
    reason_opt: Option<RefusalReason>,
    message: String,
}

impl Rejection {
    fn refused(status: StatusCode, reason: RefusalReason, message: impl Into<String>) -> Self {
        Self {
            status,
            reason_opt: Some(reason),
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::refused(StatusCode::BAD_REQUEST, RefusalReason::BadRequest, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason_opt: None,
            message: message.into(),
        }
    }
}

/// An answer to send: its JSON body and the canonical username it is about.
struct Admitted {
    body: Vec<u8>,
    username: String,
}

fn admitted<T: Serialize>(answer: &T, username: &str) -> Result<Admitted, Rejection> {
    let body = serde_json::to_vec(answer)
        .map_err(|error| Rejection::unavailable(format!("cannot encode the answer: {error}")))?;
    Ok(Admitted {
        body,
        username: username.to_owned(),
    })
}

/// The fields every request carries.
struct Envelope<'a> {
    server_id: &'a str,
    site_id: &'a str,
    timestamp: u64,
    nonce: &'a str,
}

/// A request body of one of the routes.
trait PartnerRequest: DeserializeOwned {
    fn envelope(&self) -> Envelope<'_>;
}

impl PartnerRequest for VerifyRequest {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            server_id: &self.server_id,
            site_id: &self.site_id,
            timestamp: self.timestamp,
            nonce: &self.nonce,
        }
    }
}

impl PartnerRequest for PageRequest {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            server_id: &self.server_id,
            site_id: &self.site_id,
            timestamp: self.timestamp,
            nonce: &self.nonce,
        }
    }
}

/// What is wrong with a page request's own fields for a route of at most `max_limit` items.
fn page_problem(page_request: &PageRequest, max_limit: u32) -> Option<String> {
    let limit = page_request.limit;
    if !(1..=max_limit).contains(&limit) {
        return Some(format!("limit must be 1-{max_limit}, not {limit}"));
    }
    page_request
        .cursor
        .as_deref()
        .and_then(|cursor| parse_cursor(cursor).err())
}

/// This site's cursors are decimal offsets into the list.
fn parse_cursor(cursor: &str) -> Result<usize, String> {
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(format!("cursor is longer than {MAX_CURSOR_BYTES} bytes"));
    }
    cursor
        .parse()
        .map_err(|_| "cursor is not one this site gave".to_owned())
}

/// The page of `items` starting at `cursor_opt`, and the cursor of the next page.
fn page_of<T: Clone>(
    items: &[T],
    cursor_opt: Option<&str>,
    limit: u32,
) -> Result<(Vec<T>, Option<String>), Rejection> {
    let offset = cursor_opt
        .map(parse_cursor)
        .transpose()
        .map_err(Rejection::bad_request)?
        .unwrap_or(0);
    let start = offset.min(items.len());
    let end = start
        .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
        .min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    let next_cursor = (end < items.len()).then(|| end.to_string());
    Ok((page, next_cursor))
}

/// Reads the body, refusing it past [`MAX_REQUEST_BYTES`].
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, Rejection> {
    let mut body = Vec::new();
    let mut n_bytes_received = 0_usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|error| Rejection::bad_request(format!("cannot read the body: {error}")))?;
        n_bytes_received = n_bytes_received.saturating_add(chunk.len());
        if n_bytes_received > MAX_DRAINED_BYTES {
            break;
        }
        if n_bytes_received <= MAX_REQUEST_BYTES {
            body.extend_from_slice(&chunk);
        }
    }
    if n_bytes_received > MAX_REQUEST_BYTES {
        return Err(Rejection::refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            RefusalReason::BadRequest,
            format!("body is larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    Ok(body)
}

/// Checks 2 to 6 of the protocol (the body size is checked while reading it): signature,
/// shape, server, timestamp, nonce. The nonce is recorded when everything else passed.
fn admit<R: PartnerRequest>(
    state: &SiteState,
    request: &HttpRequest,
    body: &[u8],
    shape_problem: impl Fn(&R) -> Option<String>,
) -> Result<R, Rejection> {
    let signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !signing::verify(&state.secret, body, signature) {
        return Err(Rejection::refused(
            StatusCode::UNAUTHORIZED,
            RefusalReason::BadSignature,
            "signature does not match the body",
        ));
    }
    // serde's message can quote a field's value (the password, say): give only where.
    let parsed: R = serde_json::from_slice(body).map_err(|error| {
        Rejection::bad_request(format!(
            "body is not a valid request (error at line {} column {})",
            error.line(),
            error.column()
        ))
    })?;
    let envelope = parsed.envelope();
    if !signing::is_nonce(envelope.nonce) {
        return Err(Rejection::bad_request("nonce must be 32 hex digits"));
    }
    if envelope.site_id != state.site_id {
        return Err(Rejection::bad_request(format!(
            "site_id is not this site's ({})",
            state.site_id
        )));
    }
    if let Some(problem) = shape_problem(&parsed) {
        return Err(Rejection::bad_request(problem));
    }
    if !state.authorised_server_ids.contains(envelope.server_id) {
        return Err(Rejection::refused(
            StatusCode::FORBIDDEN,
            RefusalReason::UnknownServer,
            "this site has not authorised that server id",
        ));
    }
    let site_now = state.site_now();
    if (site_now - i128::from(envelope.timestamp)).abs() > i128::from(state.max_skew_secs) {
        return Err(Rejection::refused(
            StatusCode::UNAUTHORIZED,
            RefusalReason::StaleTimestamp,
            format!(
                "timestamp is more than {} seconds from the site's clock",
                state.max_skew_secs
            ),
        ));
    }
    let nonce_check = state
        .seen_nonces
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check_and_record(
            &envelope.nonce.to_ascii_lowercase(),
            envelope.timestamp.saturating_add(state.max_skew_secs),
            u64::try_from(site_now).unwrap_or(0),
        );
    match nonce_check {
        NonceCheck::Fresh => Ok(parsed),
        NonceCheck::Replayed => Err(Rejection::refused(
            StatusCode::CONFLICT,
            RefusalReason::ReplayedNonce,
            "nonce was seen before",
        )),
        NonceCheck::Full => Err(Rejection::unavailable("too many requests in the window")),
    }
}

fn unknown_user() -> Rejection {
    Rejection::refused(
        StatusCode::NOT_FOUND,
        RefusalReason::UnknownUser,
        "no such user",
    )
}

async fn verify(
    state: &SiteState,
    request: &HttpRequest,
    body: &[u8],
) -> Result<Admitted, Rejection> {
    let verify_request: VerifyRequest = admit(state, request, body, |_| None)?;
    let user_opt = state.users.find(&verify_request.username);
    // An unknown user costs one argon2 check too, so timing does not tell who exists.
    let password_hash = user_opt.map_or_else(
        || state.dummy_password_hash.clone(),
        |user| user.password_hash.clone(),
    );
    let password_matches = verify_password(verify_request.password, password_hash)
        .await
        .map_err(|error| Rejection::unavailable(format!("cannot check the password: {error}")))?;
    let (true, Some(user)) = (password_matches, user_opt) else {
        return Err(Rejection::refused(
            StatusCode::UNAUTHORIZED,
            RefusalReason::BadCredentials,
            "wrong username or password",
        ));
    };
    let answer = VerifyAdmitted {
        result: AnswerResult::Ok,
        nonce: verify_request.nonce,
        username: user.username.clone(),
        display_name: user.display_name.clone(),
    };
    admitted(&answer, &user.username)
}

fn contacts(state: &SiteState, request: &HttpRequest, body: &[u8]) -> Result<Admitted, Rejection> {
    let contacts_request: PageRequest = admit(state, request, body, |page_request| {
        page_problem(page_request, MAX_CONTACTS_PAGE)
    })?;
    let user = state
        .users
        .find(&contacts_request.username)
        .ok_or_else(unknown_user)?;
    let (contacts, next_cursor) = page_of(
        &state.users.contacts_of(user),
        contacts_request.cursor.as_deref(),
        contacts_request.limit,
    )?;
    let answer = ContactsPage {
        result: AnswerResult::Ok,
        nonce: contacts_request.nonce,
        contacts,
        next_cursor,
    };
    admitted(&answer, &user.username)
}

fn posts(state: &SiteState, request: &HttpRequest, body: &[u8]) -> Result<Admitted, Rejection> {
    let posts_request: PageRequest = admit(state, request, body, |page_request| {
        page_problem(page_request, MAX_POSTS_PAGE)
    })?;
    let user = state
        .users
        .find(&posts_request.username)
        .ok_or_else(unknown_user)?;
    let (posts, next_cursor) = page_of(
        state.users.posts_newest_first(),
        posts_request.cursor.as_deref(),
        posts_request.limit,
    )?;
    let answer = PostsPage {
        result: AnswerResult::Ok,
        nonce: posts_request.nonce,
        posts,
        next_cursor,
    };
    admitted(&answer, &user.username)
}

async fn verify_route(
    state: web::Data<SiteState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(&state, Route::Verify, &request, payload).await
}

async fn contacts_route(
    state: web::Data<SiteState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(&state, Route::Contacts, &request, payload).await
}

async fn posts_route(
    state: web::Data<SiteState>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(&state, Route::Posts, &request, payload).await
}

/// Runs a route and turns its outcome into a signed answer, logging one line.
async fn serve(
    state: &SiteState,
    route: Route,
    request: &HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(payload).await {
        Ok(body) => body,
        Err(rejection) => return reject(state, route, &rejection, &[]),
    };
    let outcome = match route {
        Route::Verify => verify(state, request, &body).await,
        Route::Contacts => contacts(state, request, &body),
        Route::Posts => posts(state, request, &body),
    };
    match outcome {
        Ok(admitted) => {
            tracing::info!(
                route = route.path(),
                outcome = "ok",
                username = %admitted.username,
                "partner request answered"
            );
            signed_answer(&state.secret, StatusCode::OK, admitted.body)
        }
        Err(rejection) => reject(state, route, &rejection, &body),
    }
}

/// The signed answer for a rejected request: a [`Refusal`] carrying the nonce when the body
/// has a readable one, or for 5xx a short error.
fn reject(state: &SiteState, route: Route, rejection: &Rejection, body: &[u8]) -> HttpResponse {
    let peeked = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        peeked
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    // Only a well-formed name goes into the log: the body may not even be signed.
    let username_opt =
        field("username").filter(|name| identity::validate_partner_username(name).is_ok());
    let encoded = match rejection.reason_opt {
        Some(reason) => {
            tracing::info!(
                route = route.path(),
                outcome = "refused",
                ?reason,
                status = rejection.status.as_u16(),
                username = username_opt.as_deref(),
                detail = %rejection.message,
                "partner request refused"
            );
            serde_json::to_vec(&Refusal {
                result: AnswerResult::Refused,
                nonce: field("nonce").filter(|nonce| signing::is_nonce(nonce)),
                reason,
                message: rejection.message.clone(),
            })
        }
        None => {
            tracing::warn!(
                route = route.path(),
                outcome = "unavailable",
                status = rejection.status.as_u16(),
                username = username_opt.as_deref(),
                detail = %rejection.message,
                "partner request not served"
            );
            serde_json::to_vec(&serde_json::json!({ "error": rejection.message }))
        }
    };
    match encoded {
        Ok(answer) => signed_answer(&state.secret, rejection.status, answer),
        Err(_) => signed_answer(&state.secret, StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
    }
}

/// A JSON answer with its signature header.
fn signed_answer(secret: &[u8], status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let signature = signing::sign(secret, &body);
    HttpResponse::build(status)
        .content_type(ContentType::json())
        .insert_header((SIGNATURE_HEADER, signature))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_cursors() {
        let items = [1, 2, 3];
        let check = |cursor_opt: Option<&str>, limit: u32, expected: (Vec<i32>, Option<&str>)| {
            let (page, next) = page_of(&items, cursor_opt, limit).unwrap();
            assert_eq!((page, next.as_deref()), expected, "{cursor_opt:?} {limit}");
        };
        check(None, 2, (vec![1, 2], Some("2")));
        check(Some("2"), 2, (vec![3], None));
        check(None, 3, (vec![1, 2, 3], None));
        check(Some("9"), 2, (vec![], None));
        assert!(page_of(&items, Some("-1"), 2).is_err());
        assert!(page_of(&items, Some(&"1".repeat(MAX_CURSOR_BYTES + 1)), 2).is_err());
    }
}
