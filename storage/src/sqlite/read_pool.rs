//! A small pool of read-only SQLite connections used from blocking tasks, off the reactor.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::error::StoreError;
use crate::sqlite::connection::{ConnectionRole, open_connection};

/// Idle connections kept for reuse; more may be open at once under load.
const MAX_IDLE_CONNECTIONS: usize = 8;

/// Read connections, opened on demand and kept for reuse.
pub(crate) struct ReadPool {
    config: SqliteConfig,
    /// Idle connections; `None` once the pool is closed.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl ReadPool {
    pub(crate) fn new(config: SqliteConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            idle: Mutex::new(Some(Vec::new())),
        })
    }

    /// Runs `read` on a pooled connection in a blocking task.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &SqliteConfig) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let connection = pool.take()?;
            let result = read(&connection, &pool.config);
            pool.give_back(connection);
            result
        })
        .await
        .map_err(StoreError::BlockingTask)?
    }

    /// Closes idle connections; later reads fail with [`StoreError::Closed`].
    pub(crate) fn close(&self) {
        let idle_opt = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(idle_opt);
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle_connection_opt = match self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(idle) => idle.pop(),
            None => {
                return Err(StoreError::Closed {
                    path: self.config.path.clone(),
                });
            }
        };
        match idle_connection_opt {
            Some(connection) => Ok(connection),
            None => open_connection(&self.config, ConnectionRole::Reader),
        }
    }

    fn give_back(&self, connection: Connection) {
        let mut idle_opt = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(idle) = idle_opt.as_mut()
            && idle.len() < MAX_IDLE_CONNECTIONS
        {
            idle.push(connection);
        }
    }
}
