//! Converging one instance: the read-only `check`, then `apply` when it
//! found drift (only `check` in `--check` mode), under `retry` (attempts,
//! exponential backoff capped by `max_delay`, optional jitter, `until`, an
//! overall `deadline`) and the per-attempt `timeout`; then `changed_when`.

use super::context::RunContext;
use crate::journal::RecordKey;
use crate::model::StepDef;
use crate::step::{Check, Outputs, Step, StepContext, StepError};
use crate::template::truthy;
use serde_json::Value;
use std::time::Duration;

/// What a converged instance reports.
pub(crate) struct Converged {
    pub changed: bool,
    pub outputs: Outputs,
    pub message: Option<String>,
    pub diff: Option<String>,
}

/// check → apply under `retry` and `timeout`.
///
/// `mark`: the instance's key when its `apply` must be marked in flight
/// first (a rollback handles the step).
pub(crate) async fn converge(
    ctx: &RunContext,
    step: &StepDef,
    built: &dyn Step,
    cx: &StepContext,
    vars: &Value,
    mark: Option<&RecordKey>,
) -> Result<Converged, StepError> {
    let retry = step.retry.clone().unwrap_or_default();
    let attempts = if step.retry.is_some() { retry.attempts.max(1) } else { 1 };
    let clock = ctx.opts.clock.clone();
    let started = clock.now();
    let elapsed = || clock.now().saturating_duration_since(started);
    let mut last_error = None;
    for attempt in 1..=attempts {
        let remaining = retry.deadline.map(|d| d.saturating_sub(elapsed()));
        let result = match once(ctx, step, built, cx, remaining, mark).await {
            Ok(done) => changed_when(ctx, step, vars, done),
            Err(e) => Err(e),
        };
        match result {
            // A condition that cannot render fails at once: retrying cannot fix it.
            Ok(done) => match until(ctx, step, vars, done)? {
                Some(done) => return Ok(done),
                None => {
                    let until = step.retry.as_ref().and_then(|r| r.until.as_deref()).unwrap_or_default();
                    last_error = Some(StepError::failed(format!(
                        "`until` condition `{until}` still false after {attempt} attempt(s)"
                    )));
                }
            },
            Err(e) => last_error = Some(e),
        }
        if attempt == attempts {
            break;
        }
        let delay = retry.delay_before(attempt + 1, jitter_sample());
        if let Some(deadline) = retry.deadline {
            if elapsed() + delay >= deadline {
                let why = last_error.map_or_else(String::new, |e| format!(": {e}"));
                return Err(StepError::failed(format!(
                    "retry deadline of {} reached after {attempt} attempt(s){why}",
                    humantime::format_duration(deadline)
                )));
            }
        }
        tracing::info!(
            "step `{}` on `{}`: attempt {attempt} of {attempts} did not succeed; retrying in {}",
            step.id,
            cx.host.name,
            humantime::format_duration(delay)
        );
        clock.sleep(delay).await;
    }
    Err(last_error.unwrap_or_else(|| StepError::failed("no attempt was made")))
}

/// One attempt, bounded by the step's `timeout` and what is left of the `deadline`.
async fn once(
    ctx: &RunContext,
    step: &StepDef,
    built: &dyn Step,
    cx: &StepContext,
    remaining: Option<Duration>,
    mark: Option<&RecordKey>,
) -> Result<Converged, StepError> {
    let attempt = check_then_apply(ctx, built, cx, mark);
    let limit = match (ctx.timeout_of(step), remaining) {
        (Some(t), Some(r)) if r < t => Some((r, true)),
        (Some(t), _) => Some((t, false)),
        (None, Some(r)) => Some((r, true)),
        (None, None) => None,
    };
    match limit {
        None => attempt.await,
        Some((limit, deadline)) => tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| {
            let what = if deadline {
                "retry deadline reached"
            } else {
                "timed out"
            };
            Err(StepError::failed(format!(
                "{what} after {}",
                humantime::format_duration(limit)
            )))
        }),
    }
}

async fn check_then_apply(
    ctx: &RunContext,
    built: &dyn Step,
    cx: &StepContext,
    mark: Option<&RecordKey>,
) -> Result<Converged, StepError> {
    let check_mode = ctx.opts.check;
    match built.check(cx).await? {
        Check::InSync(outputs) => Ok(Converged {
            changed: false,
            outputs,
            message: None,
            diff: None,
        }),
        Check::Drift(p) if check_mode => Ok(Converged {
            changed: true,
            outputs: p.outputs,
            message: Some(format!("would {}", p.summary)),
            diff: p.diff,
        }),
        Check::Drift(p) => {
            let summary = p.summary.clone();
            let diff = p.diff.clone();
            if let Some(key) = mark {
                ctx.mark_applying(key).await?;
            }
            let applied = built.apply(cx, p).await?;
            Ok(Converged {
                changed: applied.changed,
                outputs: applied.outputs,
                message: applied.message.or(Some(summary)).filter(|m| !m.is_empty()),
                diff,
            })
        }
    }
}

/// Render a condition with `outputs` in scope.
fn condition(ctx: &RunContext, name: &str, text: &str, vars: &Value, outputs: &Outputs) -> Result<bool, StepError> {
    let mut v = vars.clone();
    if let Value::Object(m) = &mut v {
        m.insert("outputs".into(), Value::Object(outputs.clone()));
    }
    ctx.templates
        .render_value(name, text, &v)
        .map(|c| truthy(&c))
        .map_err(|e| StepError::failed(e.message))
}

/// `changed_when`: after a real run (not `--check`), whether it counts as a change.
fn changed_when(ctx: &RunContext, step: &StepDef, vars: &Value, mut done: Converged) -> Result<Converged, StepError> {
    let (Some(cond), false, true) = (&step.changed_when, ctx.opts.check, done.changed) else {
        return Ok(done);
    };
    done.changed = condition(
        ctx,
        &format!("`changed_when` of step `{}`", step.id),
        cond,
        vars,
        &done.outputs,
    )?;
    Ok(done)
}

/// `retry.until`: `Some` when the attempt counts as a success, `None` to try again.
fn until(ctx: &RunContext, step: &StepDef, vars: &Value, done: Converged) -> Result<Option<Converged>, StepError> {
    let Some(until) = step.retry.as_ref().and_then(|r| r.until.as_ref()) else {
        return Ok(Some(done));
    };
    let name = format!("`retry.until` of step `{}`", step.id);
    Ok(condition(ctx, &name, until, vars, &done.outputs)?.then_some(done))
}

/// A uniform sample in [0, 1) for jitter.
fn jitter_sample() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        // No randomness: no jitter rather than a failed step.
        Err(_) => 0.0,
    }
}
