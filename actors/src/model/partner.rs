//! The registry of partner sites (S2) as a pure state machine: which sites may log their
//! users in, where each site answers, the secret it shares with this IM server (sealed by the
//! edge before it gets here; the registry never sees it in the clear), whether it is enabled,
//! and this server's own id as the sites know it.
//!
//! Every change bumps the site's revision, so an operator can make a change conditional on the
//! revision they read, and returns an audit note that never contains the secret.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most partner sites one registry holds.
pub const MAX_PARTNER_SITES: usize = 1_000;

/// One partner site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerSite {
    /// The site's id (what clients name at login).
    pub site_id: String,
    /// Shown to operators and users.
    pub display_name: String,
    /// The base URL the verify, contacts and posts paths are appended to.
    pub endpoint_url: String,
    /// The shared secret, sealed by the edge (nonce and ciphertext).
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    /// A disabled site's users cannot log in.
    pub enabled: bool,
    /// Bumped by every change, starting at 1.
    pub revision: u64,
    /// When it last changed.
    pub updated_unix_ms: u64,
}

/// A change to a site, as an operator asks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteChange {
    /// Shown to operators and users.
    pub display_name: String,
    /// The base URL of the site's partner endpoints.
    pub endpoint_url: String,
    /// A new sealed secret; `None` keeps the current one (required for a new site).
    #[serde(with = "serde_bytes")]
    pub sealed_secret_opt: Option<Vec<u8>>,
    /// Whether its users may log in.
    pub enabled: bool,
    /// Apply only if the site is at this revision (0: only if it does not exist yet).
    pub expected_revision_opt: Option<u64>,
}

/// Everything the registry entity persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRegistry {
    /// This IM server's id, as partner sites authorise it; partner login needs it.
    pub server_id_opt: Option<String>,
    /// The sites by id.
    pub sites: BTreeMap<String, PartnerSite>,
}

/// Why the registry refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryError {
    /// No site has this id.
    UnknownSite {
        /// The id asked for.
        site_id: String,
    },
    /// A new site needs a secret.
    SecretRequired,
    /// The site is not at the revision the change expected.
    RevisionMismatch {
        /// The revision the change expected.
        expected: u64,
        /// The site's revision (0: it does not exist).
        current: u64,
    },
    /// The registry is full.
    TooManySites {
        /// The limit.
        limit: usize,
    },
}

/// An audit note of a registry change (never holds the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAudit {
    /// What happened.
    pub action: &'static str,
    /// Details.
    pub detail: String,
}

impl PartnerRegistry {
    /// Creates or changes a site; returns it and the audit note.
    pub fn save_site(
        &mut self,
        site_id: &str,
        change: SiteChange,
        now_unix_ms: u64,
    ) -> Result<(PartnerSite, RegistryAudit), RegistryError> {
        let current_opt = self.sites.get(site_id);
        let current_revision = current_opt.map_or(0, |site| site.revision);
        if let Some(expected) = change.expected_revision_opt
            && expected != current_revision
        {
            return Err(RegistryError::RevisionMismatch {
                expected,
                current: current_revision,
            });
        }
        if current_opt.is_none() && self.sites.len() >= MAX_PARTNER_SITES {
            return Err(RegistryError::TooManySites {
                limit: MAX_PARTNER_SITES,
            });
        }
        let secret_changed = change.sealed_secret_opt.is_some();
        let sealed_secret = match (change.sealed_secret_opt, current_opt) {
            (Some(sealed), _) => sealed,
            (None, Some(current)) => current.sealed_secret.clone(),
            (None, None) => return Err(RegistryError::SecretRequired),
        };
        let site = PartnerSite {
            site_id: site_id.to_owned(),
            display_name: change.display_name,
            endpoint_url: change.endpoint_url,
            sealed_secret,
            enabled: change.enabled,
            revision: current_revision + 1,
            updated_unix_ms: now_unix_ms,
        };
        let audit = RegistryAudit {
            action: if current_opt.is_some() {
                "partner.site_changed"
            } else {
                "partner.site_added"
            },
            detail: format!(
                "site={site_id} revision={} enabled={} endpoint={} secret_changed={secret_changed}",
                site.revision, site.enabled, site.endpoint_url
            ),
        };
        self.sites.insert(site_id.to_owned(), site.clone());
        Ok((site, audit))
    }

    /// Sets this server's id as partner sites know it.
    pub fn set_server_id(&mut self, server_id: String) -> RegistryAudit {
        let detail = format!(
            "from={} to={server_id}",
            self.server_id_opt.as_deref().unwrap_or("-")
        );
        self.server_id_opt = Some(server_id);
        RegistryAudit {
            action: "partner.server_id_set",
            detail,
        }
    }

    /// The site with this id, enabled or not.
    pub fn site(&self, site_id: &str) -> Result<&PartnerSite, RegistryError> {
        self.sites
            .get(site_id)
            .ok_or_else(|| RegistryError::UnknownSite {
                site_id: site_id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(secret_opt: Option<&[u8]>, expected_revision_opt: Option<u64>) -> SiteChange {
        SiteChange {
            display_name: "Forum".to_owned(),
            endpoint_url: "https://forum.example/lanmesh".to_owned(),
            sealed_secret_opt: secret_opt.map(<[u8]>::to_vec),
            enabled: true,
            expected_revision_opt,
        }
    }

    #[test]
    fn a_new_site_needs_a_secret_and_starts_at_revision_one() {
        let mut registry = PartnerRegistry::default();
        assert_eq!(
            registry.save_site("forum", change(None, None), 1),
            Err(RegistryError::SecretRequired)
        );
        let (site, audit) = registry
            .save_site("forum", change(Some(b"sealed"), Some(0)), 5)
            .unwrap();
        assert_eq!((site.revision, site.updated_unix_ms), (1, 5));
        assert_eq!(audit.action, "partner.site_added");
        assert!(!audit.detail.contains("sealed"), "{}", audit.detail);
        assert_eq!(registry.site("forum"), Ok(&site));
    }

    #[test]
    fn changes_keep_the_secret_unless_given_and_check_the_revision() {
        let mut registry = PartnerRegistry::default();
        registry
            .save_site("forum", change(Some(b"first"), None), 1)
            .unwrap();
        let mut disable = change(None, Some(1));
        disable.enabled = false;
        let (site, audit) = registry.save_site("forum", disable.clone(), 2).unwrap();
        assert_eq!(site.sealed_secret, b"first");
        assert!(!site.enabled);
        assert_eq!(site.revision, 2);
        assert_eq!(audit.action, "partner.site_changed");
        assert!(audit.detail.contains("secret_changed=false"));
        assert_eq!(
            registry.save_site("forum", disable, 3),
            Err(RegistryError::RevisionMismatch {
                expected: 1,
                current: 2
            })
        );
        assert_eq!(
            registry.save_site("forum", change(Some(b"new"), Some(0)), 3),
            Err(RegistryError::RevisionMismatch {
                expected: 0,
                current: 2
            })
        );
        let (site, _) = registry
            .save_site("forum", change(Some(b"second"), None), 4)
            .unwrap();
        assert_eq!(
            (site.sealed_secret.as_slice(), site.revision),
            (&b"second"[..], 3)
        );
    }

    #[test]
    fn unknown_sites_and_the_size_limit() {
        let mut registry = PartnerRegistry::default();
        assert_eq!(
            registry.site("nope"),
            Err(RegistryError::UnknownSite {
                site_id: "nope".to_owned()
            })
        );
        for index in 0..MAX_PARTNER_SITES {
            registry
                .save_site(&format!("site-{index}"), change(Some(b"s"), None), 1)
                .unwrap();
        }
        assert_eq!(
            registry.save_site("one-more", change(Some(b"s"), None), 1),
            Err(RegistryError::TooManySites {
                limit: MAX_PARTNER_SITES
            })
        );
        // Changing an existing site still works when full.
        assert!(registry.save_site("site-0", change(None, None), 2).is_ok());
    }

    #[test]
    fn the_server_id_change_is_audited() {
        let mut registry = PartnerRegistry::default();
        let audit = registry.set_server_id("im-1".to_owned());
        assert_eq!(audit.detail, "from=- to=im-1");
        let audit = registry.set_server_id("im-2".to_owned());
        assert_eq!(audit.detail, "from=im-1 to=im-2");
        assert_eq!(registry.server_id_opt.as_deref(), Some("im-2"));
    }
}
