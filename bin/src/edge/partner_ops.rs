//! The partner-site operations of protocol version 1 (S2): `session.partner_login`,
//! `partner.contacts` and `partner.posts`.
//!
//! A partner login looks its site up in the partner registry (unknown or disabled: refused
//! with no call out), has the site verify the credentials over the signed protocol, and opens
//! a session on the IM account linked to (site, username), which the first login creates. The
//! password goes to the site only; nothing here stores it. After the login the first page of
//! the site's posts is pushed to the session.

use crate::edge::Edge;
use crate::edge::auth::ParsedKey;
use crate::edge::ops::{
    ConnectionContext, OpResult, bad_request, check_device, check_login_rate, complete_login,
    login_failed, prepare_login, refusal, unexpected, value,
};
use crate::edge::protocol::{
    ErrorBody, ErrorCode, PartnerContactsReply, PartnerLoginRequest, PartnerPageRequest,
    PartnerPostsReply, WirePartnerContact, WirePartnerPost,
};
use crate::edge::sessions::{SendFrame, encode_push};
use crate::partner::client::{PartnerError, SiteAccess};
use crate::partner::identity::{linked_account_id, validate_site_id};
use crate::partner::wire::{
    MAX_CONTACTS_PAGE, MAX_CURSOR_BYTES, MAX_POSTS_PAGE, PostsPage, RefusalReason,
};
use lanmesh_actors::entities::partner::{PartnerReply, PartnerRequest};
use lanmesh_actors::entities::user::{SessionAuth, SessionOp, UserReply, UserRequest};
use lanmesh_actors::model::entity_kind::{EntityKind, PARTNER_REGISTRY_ID};
use lanmesh_actors::model::partner::RegistryError;
use lanmesh_actors::model::user::{PartnerLink, Profile};
use std::sync::Arc;

/// Contacts in a page when the client does not say.
const DEFAULT_CONTACTS_PAGE: u32 = 50;
/// Posts in a page when the client does not say, and in the page pushed after login.
const DEFAULT_POSTS_PAGE: u32 = 20;
/// Longest username or password passed on to a site.
const MAX_PARTNER_CREDENTIAL_BYTES: usize = 256;

/// Maps a failed call to a partner site to the client's error.
fn partner_refusal(error: PartnerError) -> ErrorBody {
    match error {
        PartnerError::Refused { reason, message } => match reason {
            RefusalReason::BadCredentials => login_failed(),
            RefusalReason::UnknownServer => ErrorBody::new(
                ErrorCode::PartnerRejectedServer,
                "the partner site has not authorised this IM server",
            ),
            RefusalReason::BadSignature => ErrorBody::new(
                ErrorCode::PartnerBadSignature,
                "the partner site rejected this server's signature; the shared secret differs",
            ),
            RefusalReason::StaleTimestamp => ErrorBody::new(
                ErrorCode::PartnerStaleTimestamp,
                "the partner site found the request too old or too new; the clocks disagree",
            ),
            RefusalReason::ReplayedNonce => ErrorBody::new(
                ErrorCode::PartnerReplayedNonce,
                "the partner site saw this request before and refused it as a replay",
            ),
            RefusalReason::UnknownUser | RefusalReason::BadRequest => ErrorBody::new(
                ErrorCode::PartnerRejectedRequest,
                format!("the partner site refused the request: {message}"),
            ),
        },
        PartnerError::Timeout(_) => ErrorBody::new(
            ErrorCode::PartnerTimeout,
            "the partner site did not answer in time",
        ),
        PartnerError::Unreachable(_) | PartnerError::ServerError(_) => ErrorBody::new(
            ErrorCode::PartnerUnreachable,
            "the partner site cannot be reached",
        ),
        PartnerError::CircuitOpen { retry_after } => ErrorBody {
            retry_after_ms: Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
            ..ErrorBody::new(
                ErrorCode::PartnerCircuitOpen,
                "the partner site failed recently; try again later",
            )
        },
        PartnerError::BadAnswer(reason) => ErrorBody::new(
            ErrorCode::PartnerBadAnswer,
            format!("the partner site's answer was not acceptable: {reason}"),
        ),
    }
}

fn unknown_site(site_id: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::UnknownSite,
        format!("no partner site {site_id:?} is authorised to log in here"),
    )
}

fn not_configured(what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unavailable,
        format!("partner login is not configured on this server: {what}"),
    )
}

/// Everything a call to `site_id` needs, from the registry; refuses unknown and disabled
/// sites before anything goes out.
async fn site_access(edge: &Edge, site_id: &str) -> Result<SiteAccess, ErrorBody> {
    if validate_site_id(site_id).is_err() {
        return Err(unknown_site(site_id));
    }
    let Some(secret_box) = &edge.partners().secret_box_opt else {
        return Err(not_configured("partners.secrets_key is not set"));
    };
    let request = PartnerRequest::Lookup {
        site_id: site_id.to_owned(),
    };
    let reply = edge
        .ask_entity(EntityKind::Partner, PARTNER_REGISTRY_ID, &request, None)
        .await?;
    let (site, server_id_opt) = match reply {
        PartnerReply::Found {
            site,
            server_id_opt,
        } => (site, server_id_opt),
        PartnerReply::Refused(RegistryError::UnknownSite { .. }) => {
            return Err(unknown_site(site_id));
        }
        other => {
            tracing::error!(reply = ?other, "unexpected answer from the partner registry");
            return Err(ErrorBody::new(
                ErrorCode::Unavailable,
                "unexpected answer from the service",
            ));
        }
    };
    if !site.enabled {
        return Err(ErrorBody::new(
            ErrorCode::SiteDisabled,
            format!("partner site {site_id:?} is disabled"),
        ));
    }
    let server_id =
        server_id_opt.ok_or_else(|| not_configured("this server's partner id is not set"))?;
    let secret = secret_box
        .open(site_id, &site.sealed_secret)
        .map_err(|error| {
            tracing::error!(site = site_id, error = %error, "cannot open a partner secret");
            not_configured("the site's secret does not open with partners.secrets_key")
        })?;
    Ok(SiteAccess {
        site_id: site.site_id,
        endpoint_url: site.endpoint_url,
        secret,
        server_id,
    })
}

fn check_credential(what: &str, text: &str) -> Result<(), ErrorBody> {
    if (1..=MAX_PARTNER_CREDENTIAL_BYTES).contains(&text.len())
        && !text.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(bad_request(format!(
            "{what} is 1 to {MAX_PARTNER_CREDENTIAL_BYTES} bytes without control characters"
        )))
    }
}

/// `session.partner_login`.
pub(super) async fn partner_login(
    edge: &Edge,
    context: &ConnectionContext,
    request: PartnerLoginRequest,
) -> OpResult {
    check_login_rate(edge, context)?;
    check_device(&request.device)?;
    check_credential("username", &request.username)?;
    check_credential("password", &request.password)?;
    let site = site_access(edge, &request.site).await?;
    let client = &edge.partners().client;
    let admitted = client
        .verify(&site, &request.username, &request.password)
        .await
        .map_err(|error| {
            edge.deps.metrics.login_failures.inc();
            partner_refusal(error)
        })?;
    let account = linked_account_id(&site.site_id, &admitted.username);
    let pending = prepare_login(edge, &account, request.device, request.mode)?;
    let open = UserRequest::OpenPartnerSession {
        link: PartnerLink {
            site_id: site.site_id.clone(),
            username: admitted.username.clone(),
        },
        display_name: admitted.display_name,
        opening: pending.opening.clone(),
    };
    let (snapshot, created) = match edge.ask_user(&account, &open, None).await? {
        UserReply::PartnerSession { snapshot, created } => (snapshot, created),
        UserReply::Refused(error) => return Err(refusal(error)),
        other => return Err(unexpected(&other)),
    };
    let session_id = snapshot.session_id.clone();
    let mut reply = complete_login(edge, context, &account, pending, snapshot).await;
    reply.account_created = created;
    if let Some(session) = edge.registry.get(&session_id) {
        let client = Arc::clone(client);
        actix_web::rt::spawn(async move {
            match client
                .posts(&site, &admitted.username, None, DEFAULT_POSTS_PAGE)
                .await
            {
                Ok(page) => {
                    let push = wire_posts(&site.site_id, page);
                    if let Some(frame) = encode_push("partner.posts", &push) {
                        session.do_send(SendFrame(frame));
                    }
                }
                Err(error) => {
                    tracing::info!(site = %site.site_id, error = %error, "no posts pushed after a partner login");
                }
            }
        });
    }
    value(&reply)
}

/// The partner identity of the key's account (the key is checked by its entity).
async fn linked_identity(edge: &Edge, key: &ParsedKey) -> Result<PartnerLink, ErrorBody> {
    let request = UserRequest::Authed {
        auth: SessionAuth {
            session_id: key.session_id.clone(),
            key_hash: key.secret_hash.clone(),
        },
        op: SessionOp::Profile,
    };
    match edge.ask_user(&key.account, &request, None).await? {
        UserReply::Profile(Profile {
            partner_link_opt: Some(link),
            ..
        }) => Ok(link),
        UserReply::Profile(_) => Err(ErrorBody::new(
            ErrorCode::Invalid,
            "this account is not linked to a partner site",
        )),
        UserReply::Refused(error) => Err(refusal(error)),
        other => Err(unexpected(&other)),
    }
}

fn check_page(request: &PartnerPageRequest, default: u32, max: u32) -> Result<u32, ErrorBody> {
    if request
        .cursor
        .as_ref()
        .is_some_and(|cursor| cursor.is_empty() || cursor.len() > MAX_CURSOR_BYTES)
    {
        return Err(bad_request(format!(
            "cursor is 1 to {MAX_CURSOR_BYTES} bytes"
        )));
    }
    let limit = request.limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_request(format!("limit is 1 to {max}")))
    }
}

/// `partner.contacts`: one page of the user's contacts on the site, each with its IM account
/// when that contact has logged in here too (a friend suggestion).
pub(super) async fn partner_contacts(
    edge: &Edge,
    key: &ParsedKey,
    request: PartnerPageRequest,
) -> OpResult {
    let limit = check_page(&request, DEFAULT_CONTACTS_PAGE, MAX_CONTACTS_PAGE)?;
    let link = linked_identity(edge, key).await?;
    let site = site_access(edge, &link.site_id).await?;
    let page = edge
        .partners()
        .client
        .contacts(&site, &link.username, request.cursor, limit)
        .await
        .map_err(partner_refusal)?;
    let site_id = site.site_id.as_str();
    let lookups = page.contacts.into_iter().map(|contact| async move {
        let account = linked_account_id(site_id, &contact.username);
        let linked = matches!(
            edge.ask_user(&account, &UserRequest::Profile, None).await,
            Ok(UserReply::Profile(Profile {
                partner_link_opt: Some(_),
                ..
            }))
        );
        WirePartnerContact {
            username: contact.username,
            display_name: contact.display_name,
            account: linked.then_some(account),
        }
    });
    let contacts = futures_util::future::join_all(lookups).await;
    value(&PartnerContactsReply {
        contacts,
        next_cursor: page.next_cursor,
    })
}

fn wire_posts(site_id: &str, page: PostsPage) -> PartnerPostsReply {
    PartnerPostsReply {
        site: site_id.to_owned(),
        posts: page
            .posts
            .into_iter()
            .map(|post| WirePartnerPost {
                post_id: post.post_id,
                author: post.author,
                text: post.text,
                published_at_ms: post.published_at.saturating_mul(1000),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }
}

/// `partner.posts`: one page of posts from the site for the user, newest first.
pub(super) async fn partner_posts(
    edge: &Edge,
    key: &ParsedKey,
    request: PartnerPageRequest,
) -> OpResult {
    let limit = check_page(&request, DEFAULT_POSTS_PAGE, MAX_POSTS_PAGE)?;
    let link = linked_identity(edge, key).await?;
    let site = site_access(edge, &link.site_id).await?;
    let page = edge
        .partners()
        .client
        .posts(&site, &link.username, request.cursor, limit)
        .await
        .map_err(partner_refusal)?;
    value(&wire_posts(&site.site_id, page))
}
