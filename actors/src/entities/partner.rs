//! The partner-registry entity's wire messages and behaviour: operators change sites and the
//! server id through it, and every partner login looks its site up here, so a site disabled
//! on one node is refused on every node from that moment.

use crate::entities::{decode_request, encode};
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
        let request: PartnerRequest = decode_request(message)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::test_support::handle_request;

    fn handle(state: &mut PartnerRegistry, request: &PartnerRequest) -> (PartnerReply, Effects) {
        let registry = crate::model::entity_kind::PARTNER_REGISTRY_ID;
        handle_request::<PartnerEntity, _, _>(state, registry, request, 1_000)
    }

    fn save(enabled: bool, secret_opt: Option<&[u8]>) -> PartnerRequest {
        PartnerRequest::SaveSite {
            site_id: "forum".to_owned(),
            change: SiteChange {
                display_name: "Forum".to_owned(),
                endpoint_url: "https://forum.example".to_owned(),
                sealed_secret_opt: secret_opt.map(<[u8]>::to_vec),
                enabled,
                expected_revision_opt: None,
            },
        }
    }

    #[test]
    fn changes_are_saved_and_audited_and_lookups_change_nothing() {
        let mut registry = PartnerRegistry::default();
        let (reply, effects) = handle(&mut registry, &save(true, Some(b"sealed-bytes")));
        assert!(matches!(reply, PartnerReply::Saved(ref site) if site.revision == 1));
        assert!(effects.state_changed);
        let [note] = effects.audit.as_slice() else {
            panic!("one audit note: {:?}", effects.audit);
        };
        assert_eq!(note.action, "partner.site_added");
        assert!(!note.detail.contains("sealed-bytes"), "{}", note.detail);

        let (reply, effects) = handle(
            &mut registry,
            &PartnerRequest::SetServerId {
                server_id: "im-1".to_owned(),
            },
        );
        assert_eq!(reply, PartnerReply::Done);
        assert!(effects.state_changed && effects.audit.len() == 1);

        let lookup = PartnerRequest::Lookup {
            site_id: "forum".to_owned(),
        };
        let (reply, effects) = handle(&mut registry, &lookup);
        assert!(matches!(
            reply,
            PartnerReply::Found { ref server_id_opt, ref site } if server_id_opt.as_deref() == Some("im-1") && site.enabled
        ));
        assert!(!effects.state_changed && effects.audit.is_empty());

        let (reply, effects) = handle(&mut registry, &save(false, None));
        assert!(
            matches!(reply, PartnerReply::Saved(ref site) if !site.enabled && site.sealed_secret == b"sealed-bytes")
        );
        assert!(effects.state_changed);

        let unknown = PartnerRequest::Lookup {
            site_id: "nope".to_owned(),
        };
        let (reply, effects) = handle(&mut registry, &unknown);
        assert!(matches!(
            reply,
            PartnerReply::Refused(RegistryError::UnknownSite { .. })
        ));
        assert!(!effects.state_changed);
        let (reply, _) = handle(&mut registry, &PartnerRequest::List);
        assert!(matches!(reply, PartnerReply::Registry(ref all) if all.sites.len() == 1));
    }
}
