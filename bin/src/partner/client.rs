//! The node's client of partner sites: signed requests (docs/partner-api.md), a timeout on
//! every call, a size cap on every answer, signature and nonce checks on every `ok`, and a
//! circuit breaker per site, so a site that is down or slow costs its users a quick, clear
//! error and costs the node nothing.
//!
//! A login is admitted only on an `ok` answer that carries the site's signature and echoes
//! this request's nonce. A refusal is reported whether signed or not: it cannot admit anyone,
//! and a site that rejects our signature cannot sign with the secret we hold.

use crate::partner::breaker::{BreakerPolicy, CircuitBreaker};
use crate::partner::identity::validate_partner_username;
use crate::partner::signing;
use crate::partner::wire::{
    AnswerHead, AnswerResult, CONTACTS_PATH, ContactsPage, MAX_CURSOR_BYTES,
    MAX_DISPLAY_NAME_CHARS, MAX_POST_TEXT_BYTES, POSTS_PATH, PageRequest, PostsPage, Refusal,
    RefusalReason, SIGNATURE_HEADER, VERIFY_PATH, VerifyAdmitted, VerifyRequest,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// Longest refusal message passed on to a client, characters.
const MAX_REFUSAL_MESSAGE_CHARS: usize = 200;

/// Timeouts, limits and breaker policy of calls to partner sites (from `partners.*`).
#[derive(Debug, Clone, Copy)]
pub struct PartnerClientSettings {
    /// How long one call may take, connection to last byte.
    pub request_timeout: Duration,
    /// Largest answer body accepted.
    pub max_answer_bytes: usize,
    /// When a site's breaker opens and for how long.
    pub breaker: BreakerPolicy,
}

/// What one call needs to know about its site.
#[derive(Clone)]
pub struct SiteAccess {
    /// The site.
    pub site_id: String,
    /// The base URL of its partner endpoints.
    pub endpoint_url: String,
    /// The shared secret, opened.
    pub secret: Vec<u8>,
    /// This server's id as the site knows it.
    pub server_id: String,
}

impl std::fmt::Debug for SiteAccess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SiteAccess")
            .field("site_id", &self.site_id)
            .field("endpoint_url", &self.endpoint_url)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

/// Why a call to a partner site did not succeed.
#[derive(Debug, Error)]
pub enum PartnerError {
    /// The site refused the request.
    #[error("the site refused the request ({reason:?}): {message}")]
    Refused {
        /// Why, as the site says.
        reason: RefusalReason,
        /// The site's words, shortened.
        message: String,
    },
    /// No answer within the timeout.
    #[error("the site did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No connection (refused, reset, name not resolved, TLS failure).
    #[error("cannot reach the site: {0}")]
    Unreachable(String),
    /// The site failed (HTTP 5xx).
    #[error("the site failed with HTTP {0}")]
    ServerError(u16),
    /// The breaker is open after recent failures.
    #[error("the site failed recently; calls resume in {} ms", .retry_after.as_millis())]
    CircuitOpen {
        /// When a call may go out again.
        retry_after: Duration,
    },
    /// The answer is too large, malformed, unsigned, or does not match the request.
    #[error("the site's answer is not acceptable: {0}")]
    BadAnswer(String),
}

impl PartnerError {
    /// Whether this failure says the site is unavailable (and counts toward its breaker).
    fn is_unavailability(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unreachable(_) | Self::ServerError(_)
        )
    }

    /// The `outcome` label of the call's metric.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::ServerError(_) => "server_error",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::BadAnswer(_) => "bad_answer",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    site: String,
    /// `ok`, `refused`, `timeout`, `unreachable`, `server_error`, `circuit_open`, `bad_answer`.
    outcome: &'static str,
}

/// The answers the client checks before accepting them.
trait CheckedAnswer: DeserializeOwned {
    fn nonce(&self) -> &str;
    /// Checks the content against the protocol's limits; `limit` is the page size asked for.
    fn check(&self, limit: u32) -> Result<(), String>;
}

fn check_display_name(display_name: &str) -> Result<(), String> {
    let n_chars = display_name.chars().count();
    if (1..=MAX_DISPLAY_NAME_CHARS).contains(&n_chars)
        && !display_name.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(format!(
            "display name {display_name:?} is not 1-{MAX_DISPLAY_NAME_CHARS} characters without control characters"
        ))
    }
}

fn check_page<T>(items: &[T], limit: u32, next_cursor_opt: Option<&String>) -> Result<(), String> {
    if items.len() > limit as usize {
        return Err(format!("{} items for a page of {limit}", items.len()));
    }
    match next_cursor_opt {
        Some(cursor) if cursor.is_empty() || cursor.len() > MAX_CURSOR_BYTES => {
            Err(format!("next_cursor is not 1-{MAX_CURSOR_BYTES} bytes"))
        }
        _ => Ok(()),
    }
}

impl CheckedAnswer for VerifyAdmitted {
    fn nonce(&self) -> &str {
        &self.nonce
    }

    fn check(&self, _limit: u32) -> Result<(), String> {
        validate_partner_username(&self.username)?;
        check_display_name(&self.display_name)
    }
}

impl CheckedAnswer for ContactsPage {
    fn nonce(&self) -> &str {
        &self.nonce
    }

    fn check(&self, limit: u32) -> Result<(), String> {
        check_page(&self.contacts, limit, self.next_cursor.as_ref())?;
        self.contacts.iter().try_for_each(|contact| {
            validate_partner_username(&contact.username)?;
            check_display_name(&contact.display_name)
        })
    }
}

impl CheckedAnswer for PostsPage {
    fn nonce(&self) -> &str {
        &self.nonce
    }

    fn check(&self, limit: u32) -> Result<(), String> {
        check_page(&self.posts, limit, self.next_cursor.as_ref())?;
        self.posts.iter().try_for_each(|post| {
            validate_partner_username(&post.author)?;
            if post.post_id.is_empty() || post.post_id.len() > MAX_CURSOR_BYTES {
                return Err(format!("post_id is not 1-{MAX_CURSOR_BYTES} bytes"));
            }
            if post.text.len() > MAX_POST_TEXT_BYTES {
                return Err(format!(
                    "post {} is {} bytes, at most {MAX_POST_TEXT_BYTES} are allowed",
                    post.post_id,
                    post.text.len()
                ));
            }
            Ok(())
        })
    }
}

/// Calls partner sites on behalf of this node's clients.
pub struct PartnerClient {
    http: reqwest::Client,
    settings: PartnerClientSettings,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    calls: Family<CallLabels, Counter>,
}

impl PartnerClient {
    /// A client with its own connection pool.
    pub fn new(settings: PartnerClientSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lanmesh/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            settings,
            breakers: Mutex::new(HashMap::new()),
            calls: Family::default(),
        })
    }

    /// Registers `lanmesh_partner_calls` (by site and outcome).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "lanmesh_partner_calls",
            "Calls to partner sites by site and outcome",
            self.calls.clone(),
        );
    }

    /// Asks the site to verify a user's credentials.
    pub async fn verify(
        &self,
        site: &SiteAccess,
        username: &str,
        password: &str,
    ) -> Result<VerifyAdmitted, PartnerError> {
        let (timestamp, nonce) = stamp()?;
        let request = VerifyRequest {
            server_id: site.server_id.clone(),
            site_id: site.site_id.clone(),
            timestamp,
            nonce,
            username: username.to_owned(),
            password: password.to_owned(),
        };
        self.call(site, VERIFY_PATH, &request, &request.nonce, 1)
            .await
    }

    /// One page of a user's contacts on the site.
    pub async fn contacts(
        &self,
        site: &SiteAccess,
        username: &str,
        cursor_opt: Option<String>,
        limit: u32,
    ) -> Result<ContactsPage, PartnerError> {
        self.page(site, CONTACTS_PATH, username, cursor_opt, limit)
            .await
    }

    /// One page of posts for a user, newest first.
    pub async fn posts(
        &self,
        site: &SiteAccess,
        username: &str,
        cursor_opt: Option<String>,
        limit: u32,
    ) -> Result<PostsPage, PartnerError> {
        self.page(site, POSTS_PATH, username, cursor_opt, limit)
            .await
    }

    async fn page<A: CheckedAnswer>(
        &self,
        site: &SiteAccess,
        path: &str,
        username: &str,
        cursor_opt: Option<String>,
        limit: u32,
    ) -> Result<A, PartnerError> {
        let (timestamp, nonce) = stamp()?;
        let request = PageRequest {
            server_id: site.server_id.clone(),
            site_id: site.site_id.clone(),
            timestamp,
            nonce,
            username: username.to_owned(),
            cursor: cursor_opt,
            limit,
        };
        self.call(site, path, &request, &request.nonce, limit).await
    }

    fn breaker<T>(&self, site_id: &str, use_breaker: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let breaker = breakers
            .entry(site_id.to_owned())
            .or_insert_with(|| CircuitBreaker::new(self.settings.breaker));
        use_breaker(breaker)
    }

    async fn call<R: Serialize, A: CheckedAnswer>(
        &self,
        site: &SiteAccess,
        path: &str,
        request: &R,
        nonce: &str,
        limit: u32,
    ) -> Result<A, PartnerError> {
        let outcome = match self.breaker(&site.site_id, |breaker| breaker.admit(Instant::now())) {
            Err(retry_after) => Err(PartnerError::CircuitOpen { retry_after }),
            Ok(()) => {
                let result = self.exchange(site, path, request, nonce, limit).await;
                let unavailable = result.as_ref().is_err_and(PartnerError::is_unavailability);
                self.breaker(&site.site_id, |breaker| {
                    if unavailable {
                        breaker.record_failure(Instant::now());
                    } else {
                        breaker.record_success();
                    }
                });
                result
            }
        };
        let labels = CallLabels {
            site: site.site_id.clone(),
            outcome: outcome
                .as_ref()
                .map_or_else(PartnerError::outcome, |_| "ok"),
        };
        self.calls.get_or_create(&labels).inc();
        if let Err(error) = &outcome {
            tracing::info!(site = %site.site_id, path, error = %error, "partner call did not succeed");
        }
        outcome
    }

    async fn exchange<R: Serialize, A: CheckedAnswer>(
        &self,
        site: &SiteAccess,
        path: &str,
        request: &R,
        nonce: &str,
        limit: u32,
    ) -> Result<A, PartnerError> {
        let body = serde_json::to_vec(request).map_err(|error| {
            PartnerError::BadAnswer(format!("cannot encode the request: {error}"))
        })?;
        let signature = signing::sign(&site.secret, &body);
        let url = format!("{}/{path}", site.endpoint_url.trim_end_matches('/'));
        let timeout = self.settings.request_timeout;
        let send = async {
            let response = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .map_err(|error| transport_error(error, timeout))?;
            let status = response.status();
            let signature_opt = response
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let answer = read_capped(response, self.settings.max_answer_bytes, timeout).await?;
            Ok::<_, PartnerError>((status, signature_opt, answer))
        };
        let (status, signature_opt, answer) = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| PartnerError::Timeout(timeout))??;
        if status.is_server_error() {
            return Err(PartnerError::ServerError(status.as_u16()));
        }
        let head: AnswerHead = serde_json::from_slice(&answer)
            .map_err(|error| PartnerError::BadAnswer(format!("not a partner answer: {error}")))?;
        if head.result == AnswerResult::Refused {
            let refusal: Refusal = serde_json::from_slice(&answer)
                .map_err(|error| PartnerError::BadAnswer(format!("malformed refusal: {error}")))?;
            return Err(PartnerError::Refused {
                reason: refusal.reason,
                message: refusal
                    .message
                    .chars()
                    .filter(|character| !character.is_control())
                    .take(MAX_REFUSAL_MESSAGE_CHARS)
                    .collect(),
            });
        }
        if !status.is_success() {
            return Err(PartnerError::BadAnswer(format!(
                "HTTP {} with an ok body",
                status.as_u16()
            )));
        }
        let signed = signature_opt
            .is_some_and(|signature| signing::verify(&site.secret, &answer, &signature));
        if !signed {
            return Err(PartnerError::BadAnswer(
                "the answer is not signed with the site's secret".to_owned(),
            ));
        }
        let decoded: A = serde_json::from_slice(&answer)
            .map_err(|error| PartnerError::BadAnswer(format!("malformed answer: {error}")))?;
        if decoded.nonce() != nonce {
            return Err(PartnerError::BadAnswer(
                "the answer does not echo this request's nonce".to_owned(),
            ));
        }
        decoded.check(limit).map_err(PartnerError::BadAnswer)?;
        Ok(decoded)
    }
}

/// The timestamp and a fresh nonce for a request.
fn stamp() -> Result<(u64, String), PartnerError> {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let nonce = signing::new_nonce().map_err(|error| {
        PartnerError::Unreachable(format!("no randomness for a nonce: {error}"))
    })?;
    Ok((timestamp, nonce))
}

fn transport_error(error: reqwest::Error, timeout: Duration) -> PartnerError {
    if error.is_timeout() {
        return PartnerError::Timeout(timeout);
    }
    // The cause chain says what failed (refused, reset, TLS).
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source_opt = std::error::Error::source(&error);
    while let Some(source) = source_opt {
        text.push_str(": ");
        text.push_str(&source.to_string());
        source_opt = source.source();
    }
    PartnerError::Unreachable(text)
}

/// Reads at most `max_bytes` of the body; a longer one is refused without reading it all.
async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Vec<u8>, PartnerError> {
    let too_large =
        || PartnerError::BadAnswer(format!("the answer is larger than {max_bytes} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| transport_error(error, timeout))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
