//! Connections for a run: one transport per host, opened on first use and
//! reused by every step on that host, reopened if the host's address changed
//! during the run (a re-created VM), closed at the end.

use crate::host::Host;
use crate::transport::local::LocalTransport;
/// Kept here too for code that names it from the pool (it lives in `transport`).
pub use crate::transport::Connector;
use crate::transport::{
    Become, ExecOutput, ExecRequest, FileAttrs, FileStat, StatAndContent, Transport, TransportError,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<Option<(String, Arc<dyn Transport>)>>>;

pub struct Pool {
    local: Arc<dyn Transport>,
    connector: Option<Arc<dyn Connector>>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Pool {
    pub fn new(connector: Option<Arc<dyn Connector>>) -> Self {
        Self {
            local: Arc::new(LocalTransport),
            connector,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The transport for `host`, connecting if needed.
    pub async fn get(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        if host.is_local() {
            return Ok(self.local.clone());
        }
        let Some(connector) = &self.connector else {
            return Err(TransportError::Unreachable(format!(
                "no SSH transport is available to reach `{}`",
                host.name
            )));
        };
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(host.name.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        let address = host.address();
        if let Some((addr, t)) = guard.as_ref() {
            if *addr == address {
                return Ok(t.clone());
            }
            t.close().await;
        }
        let t = connector.connect(host).await?;
        *guard = Some((address, t.clone()));
        Ok(t)
    }

    /// Forget a host's connection (it dropped); the next use reconnects.
    pub async fn drop_host(&self, name: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned();
        if let Some(slot) = slot {
            if let Some((_, t)) = slot.lock().await.take() {
                t.close().await;
            }
        }
    }

    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for s in slots {
            if let Some((_, t)) = s.lock().await.take() {
                t.close().await;
            }
        }
    }
}

/// A host's transport, connected on first use through the pool. Steps that
/// never touch the host (API calls made "for" it) never connect.
pub struct LazyTransport {
    pool: Arc<Pool>,
    host: Arc<Host>,
}

impl LazyTransport {
    pub fn new(pool: Arc<Pool>, host: Arc<Host>) -> Self {
        Self { pool, host }
    }

    async fn get(&self) -> Result<Arc<dyn Transport>, TransportError> {
        self.pool.get(&self.host).await
    }
}

#[async_trait]
impl Transport for LazyTransport {
    fn kind(&self) -> &'static str {
        if self.host.is_local() {
            "local"
        } else {
            "ssh"
        }
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput, TransportError> {
        self.get().await?.exec(req).await
    }

    async fn stat(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.get().await?.stat(path, become_).await
    }

    async fn read_file(&self, path: &str, become_: Option<&Become>) -> Result<Option<Vec<u8>>, TransportError> {
        self.get().await?.read_file(path, become_).await
    }

    async fn metadata(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.get().await?.metadata(path, become_).await
    }

    async fn read_with_stat(&self, path: &str, become_: Option<&Become>) -> Result<StatAndContent, TransportError> {
        self.get().await?.read_with_stat(path, become_).await
    }

    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        attrs: &FileAttrs,
        become_: Option<&Become>,
    ) -> Result<(), TransportError> {
        self.get().await?.write_file(path, content, attrs, become_).await
    }
}
