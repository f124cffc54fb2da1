//! The reference partner site behind `lanmesh partner-demo`: the partner side of the protocol
//! in docs/partner-api.md, serving the users of a TOML file. It makes every check a real site
//! must make, in the documented order, and signs every answer.
//!
//! The site's endpoint URL (registered at the IM server) is its base URL; it serves
//! `POST /verify`, `POST /contacts` and `POST /posts`.

mod error;
mod nonces;
mod routes;
#[cfg(test)]
mod tests;
mod users;

pub use error::DemoError;
pub use users::{DemoUsers, load_users};

use crate::edge::auth::dummy_hash;
use crate::partner::identity;
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use routes::SiteState;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Shortest shared secret the site accepts, bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// HTTP worker threads of the site.
const N_WORKERS: usize = 2;
/// Seconds in-flight requests get to finish when the site stops.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// How the reference site runs.
pub struct DemoSiteConfig {
    /// This site's id, as registered at the IM server.
    pub site_id: String,
    /// The secret shared with the IM server (at least [`MIN_SECRET_BYTES`]).
    pub secret: Vec<u8>,
    /// The IM server ids allowed to ask.
    pub authorised_server_ids: BTreeSet<String>,
    /// Who can log in, their contacts and the posts.
    pub users: DemoUsers,
    /// How far a request's timestamp may be from the site's clock, seconds.
    pub max_skew_secs: u64,
    /// Added to the real clock: simulates a site whose clock is off, to try the timestamp
    /// window.
    pub clock_offset_secs: i64,
}

impl std::fmt::Debug for DemoSiteConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DemoSiteConfig")
            .field("site_id", &self.site_id)
            .field("secret", &"<redacted>")
            .field("authorised_server_ids", &self.authorised_server_ids)
            .field("users", &self.users.n_users())
            .field("max_skew_secs", &self.max_skew_secs)
            .field("clock_offset_secs", &self.clock_offset_secs)
            .finish()
    }
}

impl DemoSiteConfig {
    /// Checks the site id, the secret's length and the authorised servers.
    pub fn validate(&self) -> Result<(), DemoError> {
        identity::validate_site_id(&self.site_id)
            .map_err(|message| DemoError::InvalidSiteId { message })?;
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(DemoError::SecretTooShort {
                n_bytes: self.secret.len(),
                min_bytes: MIN_SECRET_BYTES,
            });
        }
        if self.authorised_server_ids.is_empty()
            || self.authorised_server_ids.iter().any(String::is_empty)
        {
            return Err(DemoError::NoAuthorisedServer);
        }
        Ok(())
    }
}

/// A running reference site.
#[derive(Debug)]
pub struct DemoSite {
    local_addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DemoSite {
    /// The address the site listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        match (&mut self.task).await {
            Ok(Ok(())) => tracing::info!(listen = %self.local_addr, "partner demo site stopped"),
            Ok(Err(error)) => {
                tracing::warn!(listen = %self.local_addr, %error, "partner demo site failed");
            }
            Err(error) => {
                tracing::warn!(listen = %self.local_addr, %error, "partner demo site task failed");
            }
        }
    }
}

impl Drop for DemoSite {
    fn drop(&mut self) {
        // Sending the command is what stops the server; nothing is left to wait for here.
        drop(self.handle.stop(false));
    }
}

/// Starts the site on `listen` (port 0 picks a free port) on the current tokio runtime.
pub async fn start(config: DemoSiteConfig, listen: SocketAddr) -> std::io::Result<DemoSite> {
    config
        .validate()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let dummy_password_hash = dummy_hash(config.users.password_cost())
        .await
        .map_err(std::io::Error::other)?;
    let site_id = config.site_id.clone();
    let state = web::Data::new(SiteState::new(config, dummy_password_hash));
    let listener = std::net::TcpListener::bind(listen)?;
    let local_addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(routes::register)
    })
    .workers(N_WORKERS)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(listen = %local_addr, site = %site_id, "partner demo site started");
    Ok(DemoSite {
        local_addr,
        handle,
        task,
    })
}
