//! The partner-registry entity's wire messages and behaviour: operators change sites and the
//! server id through it, and every partner login looks its site up here, so a site disabled
//! on one node is refused on every node from that moment.

use crate::entities::{decode, encode};
use crate::host::behavior::{AuditNote, Effects, EntityBehavior, HandleError, IncomingMessage};
use crate::model::entity_kind::EntityKind;
use crate::model::partner::{
    PartnerRegistry, PartnerSite, RegistryAudit, RegistryError, SiteChange,
};
use serde::{Deserialize, Serialize};

/// A request to the partner registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartnerRequest {
    /// Create or change a site.
    SaveSite {
        /// The site.
        site_id: String,
        /// What to set.
        change: SiteChange,
    },
    /// Set this server's id as partner sites know it.
    SetServerId {
        /// The id.
        server_id: String,
    },
    /// One site and the server id, for a login.
    Lookup {
        /// The site.
        site_id: String,
    },
    /// Every site and the server id.
    List,
}

/// The registry's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartnerReply {
    /// The site as saved.
    Saved(PartnerSite),
    /// Done.
    Done,
    /// A site and this server's id.
    Found {
        /// The site (enabled or not).
        site: PartnerSite,
        /// This server's id, if set.
        server_id_opt: Option<String>,
    },
    /// The whole registry.
    Registry(PartnerRegistry),
    /// Refused.
    Refused(RegistryError),
}

/// The partner-registry behaviour.
#[derive(Debug)]
pub struct PartnerEntity;

impl EntityBehavior for PartnerEntity {
    const KIND: EntityKind = EntityKind::Partner;
    type State = PartnerRegistry;

    fn handle(
        state: &mut PartnerRegistry,
        message: &IncomingMessage<'_>,
    ) -> Result<Effects, HandleError> {
        let request: PartnerRequest =
            decode(message.payload).map_err(|error| HandleError::Malformed {
                reason: error.to_string(),
            })?;
        let (reply, audit_opt) = match request {
            PartnerRequest::SaveSite { site_id, change } => {
                match state.save_site(&site_id, change, message.now_unix_ms) {
                    Ok((site, audit)) => (PartnerReply::Saved(site), Some(audit)),
                    Err(error) => (PartnerReply::Refused(error), None),
                }
            }
            PartnerRequest::SetServerId { server_id } => {
                (PartnerReply::Done, Some(state.set_server_id(server_id)))
            }
            PartnerRequest::Lookup { site_id } => match state.site(&site_id) {
                Ok(site) => (
                    PartnerReply::Found {
                        site: site.clone(),
                        server_id_opt: state.server_id_opt.clone(),
                    },
                    None,
                ),
                Err(error) => (PartnerReply::Refused(error), None),
            },
            PartnerRequest::List => (PartnerReply::Registry(state.clone()), None),
        };
        Ok(Effects {
            state_changed: audit_opt.is_some(),
            reply_opt: Some(encode(&reply)?),
            audit: audit_opt
                .into_iter()
                .map(|RegistryAudit { action, detail }| AuditNote {
                    action: action.to_owned(),
                    detail,
                })
                .collect(),
            ..Effects::default()
        })
    }
}
