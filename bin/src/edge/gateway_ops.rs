//! The gateway operations of protocol version 1 (S0 steps 1 and 5): a venue gateway is a client
//! of kind "gateway" on the same WebSocket. `gateway.register` claims the venue's segments in
//! the segment directory (an overlap with another venue is refused, naming it) and registers
//! the gateway as pending; `gateway.login` checks its password and marks it online (the second
//! monitor counts that time until the connection goes); `gateway.amend` replaces a pending or
//! rejected registration; `gateway.status` says where it stands.

use crate::edge::Edge;
use crate::edge::auth::{self, ParsedKey};
use crate::edge::ops::{
    ConnectionContext, OpResult, bad_request, check_login_rate, check_password, login_failed,
    unexpected, value,
};
use crate::edge::protocol::{
    ErrorBody, ErrorCode, GatewayLoginReply, GatewayLoginRequest, GatewayRegisterReply,
    GatewayRegisterRequest, GatewayStatusReply, WireCertification, WireGatewayStatus,
    WireWindowFigures,
};
use lanmesh_actors::entities::gateway::{
    GatewayOp, GatewayReply, GatewayRequest, GatewayStatusView,
};
use lanmesh_actors::entities::segment_directory::{DirectoryReply, DirectoryRequest};
use lanmesh_actors::entities::user::{UserReply, UserRequest};
use lanmesh_actors::model::certification::CertificationOutcome;
use lanmesh_actors::model::entity_kind::{EntityKind, SEGMENT_DIRECTORY_ID};
use lanmesh_actors::model::gateway::{
    CertificationRecord, DAY_MS, GatewayError, GatewayStatus, Registration,
};
use lanmesh_actors::model::segment::{Segment, parse_segment};
use lanmesh_actors::model::segment_directory::MAX_SEGMENTS_PER_GATEWAY;
use lanmesh_actors::model::user::{KeyRecord, UserError};
use uuid::Uuid;

/// Hex digits of randomness in a gateway id (`g` and 24 hex digits).
const GATEWAY_ID_HEX_DIGITS: usize = 24;

fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), ErrorBody> {
    let n_chars = text.chars().count();
    if (1..=max_chars).contains(&n_chars) && !text.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "{field} is 1 to {max_chars} characters without control characters"
        )))
    }
}

fn is_gateway_id(text: &str) -> bool {
    text.strip_prefix('g').is_some_and(|hex| {
        hex.len() == GATEWAY_ID_HEX_DIGITS
            && hex
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    })
}

fn gateway_refusal(error: GatewayError) -> ErrorBody {
    match error {
        GatewayError::NotRegistered => {
            ErrorBody::new(ErrorCode::Invalid, "no such gateway is registered")
        }
        GatewayError::AlreadyRegistered { .. } => {
            ErrorBody::new(ErrorCode::Invalid, "the gateway is already registered")
        }
        GatewayError::Certified => ErrorBody::new(
            ErrorCode::Invalid,
            "a certified gateway's registration cannot be amended; register a new gateway",
        ),
        GatewayError::KeyInvalid => ErrorBody::new(
            ErrorCode::KeyInvalid,
            "the key is not this gateway's current login",
        ),
        GatewayError::WindowNotDue { .. } => ErrorBody::new(
            ErrorCode::Invalid,
            "the gateway's monitoring window has not ended",
        ),
        GatewayError::Invalid { reason } => ErrorBody::new(ErrorCode::Invalid, reason),
    }
}

/// Checks what a gateway registers and turns it into a registration.
async fn registration_of(
    edge: &Edge,
    request: &GatewayRegisterRequest,
) -> Result<Registration, ErrorBody> {
    check_text("venue_name", &request.venue_name, 128)?;
    check_text("venue_address", &request.venue_address, 256)?;
    if !(1..=MAX_SEGMENTS_PER_GATEWAY).contains(&request.segments.len()) {
        return Err(bad_request(format!(
            "a gateway registers 1 to {MAX_SEGMENTS_PER_GATEWAY} segments"
        )));
    }
    let segments = request
        .segments
        .iter()
        .map(|text| parse_segment(text, &edge.limits.segment_limits))
        .collect::<Result<Vec<Segment>, _>>()
        .map_err(|error| bad_request(error.to_string()))?;
    let admin_account = auth::validate_account_id(&request.admin_account).map_err(bad_request)?;
    match edge
        .ask_user(&admin_account, &UserRequest::Profile, None)
        .await?
    {
        UserReply::Profile(_) => {}
        UserReply::Refused(UserError::NoSuchAccount) => {
            return Err(ErrorBody::new(
                ErrorCode::Invalid,
                format!("the admin account {admin_account:?} does not exist"),
            ));
        }
        other => return Err(unexpected(&other)),
    }
    Ok(Registration {
        venue_name: request.venue_name.clone(),
        venue_address: request.venue_address.clone(),
        admin_account,
        segments,
    })
}

/// Gives `gateway_id` exactly `segments` in the segment directory.
async fn claim_segments(
    edge: &Edge,
    gateway_id: &str,
    segments: &[Segment],
) -> Result<(), ErrorBody> {
    let request = DirectoryRequest::Claim {
        gateway_id: gateway_id.to_owned(),
        segments: segments.to_vec(),
    };
    let reply = edge
        .ask_entity(
            EntityKind::SegmentDirectory,
            SEGMENT_DIRECTORY_ID,
            &request,
            None,
        )
        .await?;
    match reply {
        DirectoryReply::Claimed { .. } => {
            edge.refresh_venues().await;
            Ok(())
        }
        DirectoryReply::Conflict { conflicts } => {
            let named: Vec<String> = conflicts
                .iter()
                .map(|(segment, owner)| format!("{segment} of gateway {owner}"))
                .collect();
            Err(ErrorBody::new(
                ErrorCode::SegmentConflict,
                format!(
                    "the segments overlap segments already registered: {}",
                    named.join(", ")
                ),
            ))
        }
        other => {
            tracing::error!(reply = ?other, "unexpected answer from the segment directory");
            Err(ErrorBody::new(
                ErrorCode::Unavailable,
                "unexpected answer from the service",
            ))
        }
    }
}

async fn ask_gateway(
    edge: &Edge,
    gateway_id: &str,
    request: &GatewayRequest,
) -> Result<GatewayReply, ErrorBody> {
    match edge
        .ask_entity(EntityKind::Gateway, gateway_id, request, None)
        .await?
    {
        GatewayReply::Refused(error) => Err(gateway_refusal(error)),
        reply => Ok(reply),
    }
}

/// A gateway's state as its entity tells it, or the entity's refusal (no such gateway).
pub async fn inspect_gateway(
    edge: &Edge,
    gateway_id: &str,
) -> Result<Result<GatewayStatusView, GatewayError>, ErrorBody> {
    match edge
        .ask_entity(
            EntityKind::Gateway,
            gateway_id,
            &GatewayRequest::Inspect,
            None,
        )
        .await?
    {
        GatewayReply::Status(view) => Ok(Ok(view)),
        GatewayReply::Refused(error) => Ok(Err(error)),
        other => Err(unexpected_gateway(&other)),
    }
}

fn unexpected_gateway(reply: &GatewayReply) -> ErrorBody {
    tracing::error!(reply = ?reply, "unexpected answer from a gateway entity");
    ErrorBody::new(ErrorCode::Unavailable, "unexpected answer from the service")
}

fn wire_status(status: GatewayStatus) -> WireGatewayStatus {
    match status {
        GatewayStatus::Pending => WireGatewayStatus::Pending,
        GatewayStatus::Certified => WireGatewayStatus::Certified,
        GatewayStatus::Rejected => WireGatewayStatus::Rejected,
    }
}

/// A certification result as clients and operators see it.
pub fn wire_certification(record: &CertificationRecord) -> WireCertification {
    let (status, tier, permissions) = match &record.outcome {
        CertificationOutcome::Certified {
            tier, permissions, ..
        } => (
            WireGatewayStatus::Certified,
            Some(tier.clone()),
            permissions.iter().cloned().collect(),
        ),
        CertificationOutcome::Rejected { .. } => (WireGatewayStatus::Rejected, None, Vec::new()),
    };
    WireCertification {
        status,
        tier,
        permissions,
        reasons: record.outcome.reasons_text(),
        policy_version: record.outcome.policy_version(),
        window_start_ms: record.window_start_unix_ms,
        window_end_ms: record.window_end_unix_ms,
        decided_at_ms: record.decided_unix_ms,
        figures: WireWindowFigures {
            client_logins: record.figures.client_logins,
            distinct_accounts: record.figures.distinct_accounts,
            peak_concurrent_clients: record.figures.peak_concurrent_clients,
            client_online_ms: record.figures.client_online_ms,
            gateway_online_ms: record.figures.gateway_online_ms,
            gateway_days_online: record.figures.gateway_days_online,
            window_days: record.figures.window_days,
        },
    }
}

/// A gateway's state as it and the operators see it.
pub fn wire_gateway(gateway_id: &str, view: &GatewayStatusView) -> GatewayStatusReply {
    GatewayStatusReply {
        gateway_id: gateway_id.to_owned(),
        venue_name: view.registration.venue_name.clone(),
        venue_address: view.registration.venue_address.clone(),
        admin_account: view.registration.admin_account.clone(),
        segments: view
            .registration
            .segments
            .iter()
            .map(ToString::to_string)
            .collect(),
        status: wire_status(view.status),
        revision: view.revision,
        window_starts_at_ms: view.window_start_unix_ms,
        history: view.history.iter().map(wire_certification).collect(),
        rewards: view
            .rewards
            .iter()
            .map(crate::edge::sessions::wire_reward)
            .collect(),
    }
}

/// `gateway.register`.
pub(super) async fn register(
    edge: &Edge,
    context: &ConnectionContext,
    request: GatewayRegisterRequest,
) -> OpResult {
    check_login_rate(edge, context)?;
    let password = request
        .password
        .clone()
        .ok_or_else(|| bad_request("gateway.register needs a password"))?;
    check_password(&password)?;
    let registration = registration_of(edge, &request).await?;
    let credential_hash = auth::hash_password(password, edge.limits.password_cost)
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "password hashing failed");
            ErrorBody::new(ErrorCode::Unavailable, "cannot hash the password now")
        })?;
    let random = Uuid::new_v4().simple().to_string();
    let gateway_id = format!(
        "g{}",
        random.get(..GATEWAY_ID_HEX_DIGITS).unwrap_or(&random)
    );
    claim_segments(edge, &gateway_id, &registration.segments).await?;
    let register = GatewayRequest::Register {
        registration,
        credential_hash,
    };
    match ask_gateway(edge, &gateway_id, &register).await? {
        GatewayReply::Done => value(&GatewayRegisterReply {
            gateway_id,
            status: WireGatewayStatus::Pending,
            window_starts_at_ms: edge.clock().now_unix_ms().div_ceil(DAY_MS) * DAY_MS,
        }),
        other => Err(unexpected_gateway(&other)),
    }
}

/// `gateway.login`.
pub(super) async fn login(
    edge: &Edge,
    context: &ConnectionContext,
    request: GatewayLoginRequest,
) -> OpResult {
    check_login_rate(edge, context)?;
    if !is_gateway_id(&request.gateway_id) {
        edge.deps.metrics.login_failures.inc();
        return Err(login_failed());
    }
    let gateway_id = request.gateway_id;
    let hash_opt = match edge
        .ask_entity(
            EntityKind::Gateway,
            &gateway_id,
            &GatewayRequest::Credential,
            None,
        )
        .await?
    {
        GatewayReply::Credential { credential_hash } => Some(credential_hash),
        GatewayReply::Refused(GatewayError::NotRegistered) => None,
        GatewayReply::Refused(error) => return Err(gateway_refusal(error)),
        other => return Err(unexpected_gateway(&other)),
    };
    let exists = hash_opt.is_some();
    let phc = hash_opt.unwrap_or_else(|| edge.dummy_hash.clone());
    let verified = auth::verify_password(request.password, phc)
        .await
        .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "cannot verify the password now"))?;
    if !(verified && exists) {
        edge.deps.metrics.login_failures.inc();
        return Err(login_failed());
    }
    let session_id = Uuid::new_v4().simple().to_string();
    let issued = auth::issue_key(&gateway_id, &session_id)
        .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "no randomness for a key"))?;
    let expires_at_ms = edge.key_expiry_unix_ms();
    let online = GatewayRequest::Online {
        session_id: session_id.clone(),
        node_id: edge.deps.node_id.to_string(),
        key: KeyRecord {
            hash: issued.secret_hash,
            expires_at_unix_ms: expires_at_ms,
        },
    };
    match ask_gateway(edge, &gateway_id, &online).await? {
        GatewayReply::Online {
            status,
            undelivered_opt,
        } => {
            context.set_gateway(edge, gateway_id.clone(), session_id);
            value(&GatewayLoginReply {
                key: issued.text,
                expires_at_ms,
                gateway: wire_gateway(&gateway_id, &status),
                undelivered: undelivered_opt.as_ref().map(wire_certification),
            })
        }
        other => Err(unexpected_gateway(&other)),
    }
}

fn authed(key: &ParsedKey, op: GatewayOp) -> GatewayRequest {
    GatewayRequest::Authed {
        session_id: key.session_id.clone(),
        key_hash: key.secret_hash.clone(),
        op,
    }
}

/// The state of the key's gateway, which checks the key.
pub(crate) async fn gateway_status_view(
    edge: &Edge,
    key: &ParsedKey,
) -> Result<GatewayStatusView, ErrorBody> {
    match ask_gateway(edge, &key.account, &authed(key, GatewayOp::Status)).await? {
        GatewayReply::Status(view) => Ok(view),
        other => Err(unexpected_gateway(&other)),
    }
}

/// `gateway.status`.
pub(super) async fn status(edge: &Edge, key: &ParsedKey) -> OpResult {
    let view = gateway_status_view(edge, key).await?;
    value(&wire_gateway(&key.account, &view))
}

/// `gateway.amend`: new segments are claimed first; if the gateway then refuses the amendment,
/// its old segments are claimed back.
pub(super) async fn amend(
    edge: &Edge,
    key: &ParsedKey,
    request: GatewayRegisterRequest,
) -> OpResult {
    if request.password.is_some() {
        return Err(bad_request("gateway.amend does not change the password"));
    }
    let current = gateway_status_view(edge, key).await?;
    if current.status == GatewayStatus::Certified {
        return Err(gateway_refusal(GatewayError::Certified));
    }
    let registration = registration_of(edge, &request).await?;
    claim_segments(edge, &key.account, &registration.segments).await?;
    let amend = authed(key, GatewayOp::Amend { registration });
    match ask_gateway(edge, &key.account, &amend).await {
        Ok(GatewayReply::Done) => status(edge, key).await,
        Ok(other) => Err(unexpected_gateway(&other)),
        Err(error) => {
            claim_segments(edge, &key.account, &current.registration.segments).await?;
            Err(error)
        }
    }
}
