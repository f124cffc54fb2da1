//! The partner-registry routes of the operator API: this server's partner id and the partner
//! sites (S2). A site's shared secret is sealed here, before it reaches the registry entity,
//! and never returned.

use super::{OperatorAuth, bad_request, error_response, unavailable, unexpected_reply};
use crate::edge::Edge;
use crate::partner::identity::validate_site_id;
use crate::partner::wire::MAX_DISPLAY_NAME_CHARS;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use lanmesh_actors::entities::partner::{PartnerReply, PartnerRequest};
use lanmesh_actors::model::entity_kind::{EntityKind, PARTNER_REGISTRY_ID};
use lanmesh_actors::model::partner::{PartnerSite, RegistryError, SiteChange};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shortest shared secret accepted for a partner site.
const MIN_SECRET_BYTES: usize = 16;
/// Longest shared secret.
const MAX_SECRET_BYTES: usize = 256;
/// Longest endpoint URL.
const MAX_URL_BYTES: usize = 512;

/// A site as operators see it (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site's id.
    pub site_id: String,
    /// Its display name.
    pub display_name: String,
    /// The base URL of its partner endpoints.
    pub endpoint_url: String,
    /// Whether its users may log in.
    pub enabled: bool,
    /// Bumped by every change.
    pub revision: u64,
    /// When it last changed (Unix ms).
    pub updated_at_ms: u64,
}

impl From<PartnerSite> for SiteView {
    fn from(site: PartnerSite) -> Self {
        Self {
            site_id: site.site_id,
            display_name: site.display_name,
            endpoint_url: site.endpoint_url,
            enabled: site.enabled,
            revision: site.revision,
            updated_at_ms: site.updated_unix_ms,
        }
    }
}

/// `GET /api/v1/partner-registry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// This server's id as partner sites know it.
    pub server_id: Option<String>,
    /// Every site, by id.
    pub sites: Vec<SiteView>,
}

/// `PUT /api/v1/partner-registry/sites/{site_id}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SitePut {
    /// Shown to operators and users.
    pub display_name: String,
    /// `https://...` (or `http://` where the operator accepts passwords in clear on the wire).
    pub endpoint_url: String,
    /// The shared secret; required for a new site, omitted to keep the current one.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether its users may log in.
    pub enabled: bool,
    /// Apply only if the site is at this revision (0: only if it is new).
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// `PUT /api/v1/partner-registry/server-id`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerIdPut {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub server_id: String,
}

fn check_endpoint_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if text.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be https or http".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials do not belong in the URL; the shared secret signs requests".to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or a fragment".to_owned());
    }
    Ok(())
}

fn check_site_put(put: &SitePut) -> Result<(), String> {
    let n_chars = put.display_name.chars().count();
    if !(1..=MAX_DISPLAY_NAME_CHARS).contains(&n_chars)
        || put.display_name.chars().any(char::is_control)
    {
        return Err(format!(
            "display_name is 1 to {MAX_DISPLAY_NAME_CHARS} characters without control characters"
        ));
    }
    check_endpoint_url(&put.endpoint_url).map_err(|problem| format!("endpoint_url: {problem}"))?;
    if let Some(secret) = &put.secret
        && !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len())
    {
        return Err(format!(
            "secret is {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
        ));
    }
    Ok(())
}

async fn ask_registry(edge: &Edge, request: &PartnerRequest) -> Result<PartnerReply, HttpResponse> {
    edge.ask_entity(EntityKind::Partner, PARTNER_REGISTRY_ID, request, None)
        .await
        .map_err(|error| unavailable(&error))
}

fn registry_refusal(error: &RegistryError) -> HttpResponse {
    match error {
        RegistryError::UnknownSite { site_id } => error_response(
            StatusCode::NOT_FOUND,
            "unknown_site",
            &format!("no partner site {site_id:?}"),
        ),
        RegistryError::SecretRequired => bad_request("a new site needs its secret"),
        RegistryError::RevisionMismatch { expected, current } => error_response(
            StatusCode::CONFLICT,
            "revision_mismatch",
            &format!("the site is at revision {current}, not {expected}; read it again"),
        ),
        RegistryError::TooManySites { limit } => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_sites",
            &format!("the registry holds at most {limit} sites"),
        ),
    }
}

pub(super) async fn get_registry(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    match ask_registry(&edge, &PartnerRequest::List).await {
        Ok(PartnerReply::Registry(registry)) => HttpResponse::Ok().json(RegistryView {
            server_id: registry.server_id_opt,
            sites: registry.sites.into_values().map(SiteView::from).collect(),
        }),
        Ok(other) => unexpected_reply("partner registry", &other),
        Err(response) => response,
    }
}

pub(super) async fn get_site(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    site_id: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let lookup = PartnerRequest::Lookup {
        site_id: site_id.into_inner(),
    };
    match ask_registry(&edge, &lookup).await {
        Ok(PartnerReply::Found { site, .. }) => HttpResponse::Ok().json(SiteView::from(site)),
        Ok(PartnerReply::Refused(error)) => registry_refusal(&error),
        Ok(other) => unexpected_reply("partner registry", &other),
        Err(response) => response,
    }
}

pub(super) async fn put_site(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    site_id: web::Path<String>,
    put: web::Json<SitePut>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let site_id = site_id.into_inner();
    let put = put.into_inner();
    if let Err(problem) = validate_site_id(&site_id).and_then(|()| check_site_put(&put)) {
        return bad_request(&problem);
    }
    let sealed_secret_opt = match (&put.secret, &edge.partners().secret_box_opt) {
        (None, _) => None,
        (Some(_), None) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                "set partners.secrets_key (the same on every node) before registering sites",
            );
        }
        (Some(secret), Some(secret_box)) => match secret_box.seal(&site_id, secret.as_bytes()) {
            Ok(sealed) => Some(sealed),
            Err(error) => {
                tracing::error!(error = %error, "cannot seal a partner secret");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unexpected",
                    "cannot seal the secret",
                );
            }
        },
    };
    let save = PartnerRequest::SaveSite {
        site_id,
        change: SiteChange {
            display_name: put.display_name,
            endpoint_url: put.endpoint_url,
            sealed_secret_opt,
            enabled: put.enabled,
            expected_revision_opt: put.expected_revision,
        },
    };
    match ask_registry(&edge, &save).await {
        Ok(PartnerReply::Saved(site)) => {
            tracing::info!(site = %site.site_id, revision = site.revision, enabled = site.enabled, "partner site saved");
            HttpResponse::Ok().json(SiteView::from(site))
        }
        Ok(PartnerReply::Refused(error)) => registry_refusal(&error),
        Ok(other) => unexpected_reply("partner registry", &other),
        Err(response) => response,
    }
}

pub(super) async fn put_server_id(
    request: HttpRequest,
    auth: web::Data<OperatorAuth>,
    edge: web::Data<Arc<Edge>>,
    put: web::Json<ServerIdPut>,
) -> HttpResponse {
    if let Some(refused) = auth.refusal(&request) {
        return refused;
    }
    let server_id = put.into_inner().server_id;
    let valid = (1..=64).contains(&server_id.len())
        && server_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if !valid {
        return bad_request("server_id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'");
    }
    match ask_registry(&edge, &PartnerRequest::SetServerId { server_id }).await {
        Ok(PartnerReply::Done) => HttpResponse::NoContent().finish(),
        Ok(other) => unexpected_reply("partner registry", &other),
        Err(response) => response,
    }
}
