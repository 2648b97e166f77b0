//! The engine's way to open SSH transports: one [`SshConnector`] per run owns
//! a private directory for the ControlMaster sockets (mode 0700, removed at
//! the end) and opens one [`SshTransport`] per host when the pool asks.

use super::{SshOptions, SshTransport};
use crate::host::Host;
use crate::transport::{Connector, Transport, TransportError};
use async_trait::async_trait;
use std::sync::Arc;

pub struct SshConnector {
    opts: SshOptions,
    /// Keeps the socket directory alive for the run.
    _control_dir: Option<tempfile::TempDir>,
}

impl SshConnector {
    /// Connect with `opts`; its `control_dir` is used as given.
    pub fn new(opts: SshOptions) -> Self {
        Self {
            opts,
            _control_dir: None,
        }
    }

    /// Default options and a fresh private socket directory under the
    /// runtime (or temp) directory, removed when the connector is dropped.
    pub fn with_private_control_dir() -> std::io::Result<Self> {
        raise_fd_limit();
        let base = super::default_control_dir();
        let parent = base
            .parent()
            .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let dir = tempfile::Builder::new()
            .prefix("flowrun-ssh-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)?;
        let opts = SshOptions {
            control_dir: dir.path().to_path_buf(),
            ..SshOptions::default()
        };
        Ok(Self {
            opts,
            _control_dir: Some(dir),
        })
    }

    pub fn options(&self) -> &SshOptions {
        &self.opts
    }
}

/// Each host holds a few descriptors per open channel (the mux client passes
/// the pipes of every helper): with hundreds of hosts the usual soft limit of
/// 1024 runs out, so raise it to the hard limit, as servers do.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to plain data.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(SshTransport::connect(host, &self.opts).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_socket_directory_is_private_and_removed() {
        let c = SshConnector::with_private_control_dir().unwrap();
        let dir = c.options().control_dir.clone();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        super::super::options::ensure_control_dir(&dir).unwrap();
        drop(c);
        assert!(!dir.exists());
    }
}
