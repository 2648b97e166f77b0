//! Where results go: every instance result to the event sink (masked) and to
//! the journal's run record; successes of journaled steps as records (the
//! fingerprint, the status, the outputs — encrypted when they hold a
//! secret); failures delete the record so the next run does them again. And
//! back: a record's outputs restored, registering only the kind's secret
//! outputs with the masker.

use super::context::{Phase, RunContext};
use crate::journal::{Record, RecordKey, RunStep};
use crate::model::StepDef;
use crate::report::{InstanceResult, Status};
use crate::secrets::{Masker, SecretKey};
use crate::step::{KindInfo, Outputs, StepError};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl RunContext {
    /// A result of `step` on `host` that took from `started` until now.
    pub fn result(
        &self,
        step: &StepDef,
        host: &str,
        item: Option<String>,
        status: Status,
        started: Instant,
    ) -> InstanceResult {
        InstanceResult {
            step_id: step.id.clone(),
            host: host.to_owned(),
            item,
            status,
            from_journal: false,
            duration: started.elapsed(),
            message: None,
            diff: None,
            handler: false,
        }
    }

    /// Report a result: masked, to the sink, the journal's run record and the report.
    pub fn emit(&self, mut r: InstanceResult) {
        if self.phase() == Phase::Recovery {
            let what = r.message.take().map_or_else(String::new, |m| format!(": {m}"));
            r.message = Some(format!("recovery of what a run that died left unfinished{what}"));
        }
        let masker = &self.env.masker;
        r.message = r.message.map(|m| masker.mask(&m).into_owned());
        r.diff = r.diff.map(|d| masker.mask(&d).into_owned());
        self.env.sink.finished(&r);
        if !self.opts.check {
            if let Some(journal) = &self.env.journal {
                let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
                journal.step(
                    &self.run_id,
                    sequence,
                    RunStep {
                        step_id: if r.handler {
                            format!("handler:{}", r.step_id)
                        } else {
                            r.step_id.clone()
                        },
                        host: r.host.clone(),
                        item: r.item.clone().unwrap_or_default(),
                        status: r.status,
                        from_journal: r.from_journal,
                        duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                        message: r.message.clone(),
                    },
                );
            }
        }
        self.state().reported.push(r);
    }

    /// Record a success: what the next run compares and restores.
    pub fn put_record(&self, step: &StepDef, key: RecordKey, fingerprint: String, status: Status, outputs: &Outputs) {
        let Some(journal) = &self.env.journal else { return };
        let text = Value::Object(outputs.clone()).to_string();
        let secret = !step.kind.info().secret_outputs.is_empty() || self.env.masker.contains_secret(&text);
        let (plain, encrypted) = if secret {
            match self.env.key.encrypt(text.as_bytes()) {
                Ok(sealed) => (None, Some(sealed)),
                Err(e) => {
                    // Not recorded: the next run does the instance again.
                    tracing::error!(
                        "step `{}`: its outputs cannot be encrypted ({e}); not journaled",
                        step.id
                    );
                    return;
                }
            }
        } else {
            (Some(text), None)
        };
        journal.put(
            &self.workflow().name,
            key,
            Record {
                fingerprint,
                status,
                outputs: plain,
                outputs_enc: encrypted,
                run_id: self.run_id.clone(),
            },
        );
    }

    /// Mark an instance in flight before its `apply` (committed before it
    /// starts), for a step a rollback handles; once per run.
    pub async fn mark_applying(&self, key: &RecordKey) -> Result<(), StepError> {
        let Some(journal) = self.env.journal.clone() else {
            return Ok(());
        };
        if self.opts.check || !self.state().marks.insert(key.clone()) {
            return Ok(());
        }
        let (workflow, inventory) = (self.workflow().name.clone(), self.plan.inventory_id.clone());
        let (key, run_id) = (key.clone(), self.run_id.clone());
        tokio::task::spawn_blocking(move || journal.applying(&workflow, &inventory, &key, &run_id))
            .await
            .map_err(|e| StepError::failed(format!("internal error: {e}")))?
            .map_err(|e| StepError::failed(format!("not applied: the journal cannot mark it in flight: {e}")))
    }

    /// Clear this run's in-flight mark of an instance, if it set one.
    pub fn unmark(&self, key: &RecordKey) {
        if self.state().marks.remove(key) {
            self.landed(key);
        }
    }

    /// Clear an in-flight mark, whichever run set it.
    pub fn landed(&self, key: &RecordKey) {
        if let Some(journal) = &self.env.journal {
            journal.landed(&self.workflow().name, &self.plan.inventory_id, key);
        }
    }

    /// Forget a record after a failure: the next run does the instance again.
    pub fn delete_record(&self, key: RecordKey) {
        if self.opts.check {
            return;
        }
        if let Some(journal) = &self.env.journal {
            journal.delete(&self.workflow().name, key);
        }
    }
}

/// A record's outputs (decrypted when needed). Only the kind's secret outputs
/// become secrets: a record is also stored encrypted when an output merely
/// contains a secret (a command's stdout echoing a token); that secret is
/// masked because it is registered where it came from, and the rest of the
/// document stays readable.
pub(crate) fn restore_outputs(masker: &Masker, key: &SecretKey, step: &StepDef, record: &Record) -> Option<Outputs> {
    let text = match (&record.outputs, &record.outputs_enc) {
        (Some(t), _) => t.clone(),
        (None, Some(encrypted)) => String::from_utf8(key.decrypt(encrypted)?).ok()?,
        (None, None) => return Some(Outputs::new()),
    };
    let outputs: Outputs = serde_json::from_str(&text).ok()?;
    register_secret_outputs(masker, step.kind.info(), &outputs);
    Some(outputs)
}

/// Register the values of a kind's secret outputs with the masker: those, and
/// nothing else of a step's outputs, are secrets.
pub(crate) fn register_secret_outputs(masker: &Masker, info: &KindInfo, outputs: &Outputs) {
    for name in info.secret_outputs {
        if let Some(v) = outputs.get(*name) {
            register_secret_values(masker, v);
        }
    }
}

fn register_secret_values(masker: &Masker, v: &Value) {
    match v {
        Value::String(s) => masker.add(s),
        Value::Array(a) => a.iter().for_each(|x| register_secret_values(masker, x)),
        Value::Object(m) => m.values().for_each(|x| register_secret_values(masker, x)),
        _ => {}
    }
}
