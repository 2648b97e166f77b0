//! A transport for tests that acts on this machine the way a remote host is
//! acted on: commands run locally, but stat, read and atomic write go through
//! the `Transport` trait's shell defaults (the code path SSH uses), so the
//! file steps are tested on both paths without an sshd.

use flowrun_engine::host::Host;
use flowrun_engine::step::StepContext;
use flowrun_engine::transport::local::LocalTransport;
use flowrun_engine::transport::{ExecOutput, ExecRequest, Transport, TransportError};
use serde_json::Map;
use std::sync::Arc;

struct ShellOnly(LocalTransport);

#[async_trait::async_trait]
impl Transport for ShellOnly {
    fn kind(&self) -> &'static str {
        "shell-only"
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput, TransportError> {
        self.0.exec(req).await
    }
}

/// The local context, and one whose file operations go through shell commands.
pub fn both_contexts() -> [StepContext; 2] {
    [
        crate::testing::local_context(),
        crate::testing::context(
            Arc::new(Host::localhost(Map::new())),
            Arc::new(ShellOnly(LocalTransport)),
        ),
    ]
}
