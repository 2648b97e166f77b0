//! `flowrun plan`'s previews: for the instances a run would execute whose
//! kind says its check is a safe preview ([`StepKind::previews_in_plan`]),
//! run that check — read-only, in check mode, with no connection to the host
//! (the transport refuses) — and report its summary and diff. The instances
//! come from the same pipeline as a run's ([`super::predict_with_previews`]).
//!
//! [`StepKind::previews_in_plan`]: crate::step::StepKind::previews_in_plan

use crate::host::{Host, HostTable};
use crate::secrets::Masker;
use crate::step::{Check, Mode, Outputs, Step, StepContext};
use crate::transport::{Become, ExecOutput, ExecRequest, Transport, TransportError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// An instance that would run, built, waiting for its preview.
pub struct Candidate {
    pub step: String,
    pub host: Arc<Host>,
    pub item: Option<String>,
    pub timeout: Option<Duration>,
    pub(crate) built: Box<dyn Step>,
    pub(crate) become_: Option<Become>,
    pub(crate) previous: Option<Outputs>,
}

/// What a preview found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewOutcome {
    InSync,
    /// What a run would change, and the diff when the step gives one.
    Change {
        summary: String,
        diff: Option<String>,
    },
    /// The check failed: the run would fail the same way.
    Failed(String),
}

/// One instance's preview.
#[derive(Debug, Clone)]
pub struct Preview {
    pub step: String,
    pub host: String,
    pub item: Option<String>,
    pub outcome: PreviewOutcome,
}

/// A transport for previews: they never reach the host.
struct NoHost;

#[async_trait]
impl Transport for NoHost {
    fn kind(&self) -> &'static str {
        "none"
    }

    async fn exec(&self, _req: ExecRequest) -> Result<ExecOutput, TransportError> {
        Err(TransportError::Failed(
            "a preview in `plan` does not connect to hosts".into(),
        ))
    }
}

/// Run each candidate's check, one after the other; messages are masked.
pub async fn run_previews(candidates: Vec<Candidate>, hosts: Arc<HostTable>, masker: Arc<Masker>) -> Vec<Preview> {
    let transport: Arc<dyn Transport> = Arc::new(NoHost);
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let cx = StepContext {
            host: c.host.clone(),
            transport: transport.clone(),
            become_: c.become_,
            mode: Mode {
                check: true,
                diff: true,
            },
            timeout: c.timeout,
            masker: masker.clone(),
            hosts: hosts.clone(),
            previous: c.previous,
        };
        let checked = match c.timeout {
            Some(t) => tokio::time::timeout(t, c.built.check(&cx)).await.unwrap_or_else(|_| {
                Err(crate::step::StepError::failed(format!(
                    "timed out after {}",
                    humantime::format_duration(t)
                )))
            }),
            None => c.built.check(&cx).await,
        };
        let outcome = match checked {
            Ok(Check::InSync(_)) => PreviewOutcome::InSync,
            Ok(Check::Drift(p)) => PreviewOutcome::Change {
                summary: masker.mask(&p.summary).into_owned(),
                diff: p.diff.map(|d| masker.mask(&d).into_owned()),
            },
            Err(e) => PreviewOutcome::Failed(masker.mask(&e.message).into_owned()),
        };
        out.push(Preview {
            step: c.step,
            host: c.host.name.clone(),
            item: c.item,
            outcome,
        });
    }
    out
}
