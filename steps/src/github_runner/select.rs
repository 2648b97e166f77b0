//! `github_runner` with `state: select`: the health gate in front of a
//! production deploy. GitHub sends a job only to a runner with all its
//! `runs-on` labels, so labels alone never fail over; the gate decides
//! before the deploy and names a label only the chosen runner has.
//!
//! Candidates are judged in role order (`primary` first, then `secondary`,
//! by `priority`, then as given). A candidate is healthy when it is
//! authorized for production, its host answered (SSH), GitHub has it
//! `online` with every expected label (`self-hosted`, its `labels`, its
//! routing `label`), its runner service is active and its free disk is at
//! least `min_free_disk`. A healthy candidate that is `busy` is waited for,
//! polling the API with growing pauses, for at most `busy_wait` over all
//! candidates together; still busy, it is rejected. The first healthy one is
//! chosen; none is an error with one line per candidate saying why.
//!
//! Candidates usually come from `steps.PROBE.hosts` of a `probe` on each
//! runner host: its `facts` carry the host's variables (`name`, `role`,
//! `labels`, `label`, `authorized_for_prod`, `priority`), its `values` what
//! the host reported (`service_active`, `service`, `free_disk` in bytes), and
//! `reachable`/`error` whether SSH worked. A plain list of such objects works too.

use super::api::{self, Gh};
use crate::api::ApiClient;
use crate::params::Params;
use flowrun_engine::step::{Check, Outputs, Pending, StepContext, StepError};
use flowrun_engine::template::truthy;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

pub struct Select {
    candidates: Vec<Candidate>,
    min_free: u64,
    busy_wait: Duration,
}

#[derive(Debug, Clone)]
struct Candidate {
    /// The inventory host.
    runner: String,
    /// The runner's name in GitHub.
    name: String,
    role: String,
    priority: i64,
    labels: Vec<String>,
    label: String,
    authorized: bool,
    reachable: bool,
    error: Option<String>,
    service: Option<String>,
    service_active: Option<bool>,
    free_disk: Option<u64>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn labels_of(v: Option<&Value>) -> Vec<String> {
    let items = match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| text(Some(x))).collect(),
        Some(other) => text(Some(other)).into_iter().collect(),
        None => Vec::new(),
    };
    super::split_labels(items)
}

impl Candidate {
    /// One candidate from a `steps.PROBE.hosts` entry (or a plain object).
    fn parse(key: Option<&str>, entry: &Value) -> Result<Self, StepError> {
        let entry = entry.get("outputs").unwrap_or(entry);
        let mut m: Map<String, Value> = entry
            .get("facts")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| entry.as_object().cloned().unwrap_or_default());
        if let Some(values) = entry.get("values").and_then(Value::as_object) {
            m.extend(values.clone());
        }
        let runner = text(m.get("runner"))
            .or_else(|| key.map(str::to_owned))
            .or_else(|| text(m.get("name")))
            .ok_or_else(|| StepError::param("candidates", "a candidate has no `runner` or `name`"))?;
        let name = text(m.get("name")).unwrap_or_else(|| runner.clone());
        let role = text(m.get("role")).unwrap_or_else(|| "secondary".into());
        if !matches!(role.as_str(), "primary" | "secondary") {
            return Err(StepError::param(
                "candidates",
                format!("`{runner}`: role `{role}` is not `primary` or `secondary`"),
            ));
        }
        let flag = |k: &str| {
            m.get(k)
                .is_some_and(|v| truthy(v) && text(Some(v)).as_deref() != Some("inactive"))
        };
        Ok(Self {
            priority: text(m.get("priority")).and_then(|p| p.parse().ok()).unwrap_or(0),
            labels: labels_of(m.get("labels")),
            label: text(m.get("label")).unwrap_or_else(|| name.clone()),
            authorized: flag("authorized_for_prod"),
            reachable: entry.get("reachable").is_none_or(truthy),
            error: text(entry.get("error")),
            service: text(m.get("service")),
            service_active: m.contains_key("service_active").then(|| flag("service_active")),
            free_disk: text(m.get("free_disk")).and_then(|d| d.parse().ok()),
            runner,
            name,
            role,
        })
    }

    fn title(&self) -> String {
        format!("{} ({})", self.runner, self.role)
    }

    /// Why this candidate is not healthy, busy aside.
    fn reasons(&self, remote: Option<&Value>, min_free: u64) -> Vec<String> {
        let mut why = Vec::new();
        if !self.authorized {
            why.push("not authorized for production (`authorized_for_prod` is false)".into());
        }
        match remote {
            None => why.push(format!("GitHub has no runner named `{}`", self.name)),
            Some(r) => {
                let status = r.get("status").and_then(Value::as_str).unwrap_or("unknown");
                if status != "online" {
                    why.push(format!("{status} in GitHub"));
                }
                let have = api::labels_of(r);
                let mut want = vec!["self-hosted".to_owned()];
                want.extend(self.labels.iter().cloned());
                want.push(self.label.clone());
                let missing: Vec<String> = super::split_labels(want)
                    .into_iter()
                    .filter(|l| !api::has_label(&have, l))
                    .collect();
                if !missing.is_empty() {
                    why.push(format!("lacks label(s) `{}`", missing.join("`, `")));
                }
            }
        }
        if !self.reachable {
            why.push(format!(
                "not reachable over SSH ({})",
                self.error.as_deref().unwrap_or("no answer")
            ));
        } else {
            let svc = self.service.as_deref().unwrap_or("the runner service");
            match self.service_active {
                Some(true) => {}
                Some(false) => why.push(format!("runner service `{svc}` is not active")),
                None => why.push("the host did not report its runner service".into()),
            }
            match self.free_disk {
                Some(b) if b >= min_free => {}
                Some(b) => why.push(format!(
                    "free disk {} is below min_free_disk {}",
                    super::show_size(b),
                    super::show_size(min_free)
                )),
                None => why.push("the host did not report its free disk".into()),
            }
        }
        why
    }
}

impl Select {
    pub fn from_params(p: &Params<'_>) -> Result<Self, StepError> {
        let raw = match p.get("candidates") {
            Some(Value::String(s)) => {
                serde_json::from_str(s).map_err(|e| StepError::param("candidates", format!("not JSON: {e}")))?
            }
            Some(v) => v.clone(),
            None => return Err(StepError::param("candidates", "is required with `state: select`")),
        };
        let mut candidates = match &raw {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| Candidate::parse(Some(k), v))
                .collect::<Result<Vec<_>, _>>()?,
            Value::Array(a) => a
                .iter()
                .map(|v| Candidate::parse(None, v))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(StepError::param("candidates", "expected a mapping or a list")),
        };
        if candidates.is_empty() {
            return Err(StepError::param(
                "candidates",
                "no candidate runner (is the group empty?)",
            ));
        }
        // Stable: the given order breaks ties.
        candidates.sort_by_key(|c| (c.role != "primary", c.priority));
        let min = p.str_or("min_free_disk", "1G")?;
        Ok(Self {
            candidates,
            min_free: super::parse_size(&min)
                .ok_or_else(|| StepError::param("min_free_disk", format!("expected a size like `2G`, got `{min}`")))?,
            busy_wait: p.opt_duration("busy_wait")?.unwrap_or(super::BUSY_WAIT),
        })
    }

    /// Poll the API while `c` is busy, until `deadline`; whether it became free.
    async fn wait_idle(gh: &Gh, api: &ApiClient, c: &Candidate, deadline: Instant) -> Result<bool, StepError> {
        let mut pause = Duration::from_secs(1);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            let r = gh.runner(api, &c.name).await?;
            if r.as_ref().is_some_and(|r| r.get("busy") == Some(&json!(false))) {
                return Ok(true);
            }
            pause = pause.mul_f64(1.5).min(Duration::from_secs(10));
        }
    }

    pub async fn check(&self, gh: &Gh, api: &ApiClient, cx: &StepContext) -> Result<Check, StepError> {
        let runners = gh.runners(api, None).await?;
        let deadline = Instant::now() + self.busy_wait;
        let mut rejected: Vec<String> = Vec::new();
        let mut chosen = None;
        for c in &self.candidates {
            let remote = runners.iter().find(|r| {
                r.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&c.name))
            });
            let mut why = c.reasons(remote, self.min_free);
            let busy = remote.is_some_and(|r| r.get("busy") == Some(&json!(true)));
            if why.is_empty() && busy {
                tracing::info!("gate: {} is busy; waiting for it (busy_wait)", c.title());
                let t0 = Instant::now();
                if !Self::wait_idle(gh, api, c, deadline).await? {
                    why.push(format!(
                        "busy running a job (waited {:.0}s, busy_wait is {}s)",
                        t0.elapsed().as_secs_f64(),
                        self.busy_wait.as_secs()
                    ));
                }
            }
            if why.is_empty() {
                chosen = Some(c);
                break;
            }
            rejected.push(format!("{}: {}", c.title(), why.join("; ")));
        }
        let Some(c) = chosen else {
            let mut m = String::from("no healthy runner for production:");
            for r in &rejected {
                m.push_str("\n  ");
                m.push_str(r);
            }
            return Err(StepError::failed(m));
        };
        let mut summary = format!("chose {} (label `{}`)", c.title(), c.label);
        for r in &rejected {
            summary.push_str("\n  rejected ");
            summary.push_str(r);
        }
        let outputs = self.outputs(c, rejected, runners);
        // Nothing changes: in --check the outputs are all there is; otherwise the
        // decision is reported on the step's line (apply changes nothing).
        if cx.mode.check {
            return Ok(Check::InSync(outputs));
        }
        Ok(Check::Drift(Pending {
            summary,
            outputs,
            ..Pending::default()
        }))
    }

    /// `state: health`: every candidate judged, none chosen, never a failure
    /// (for monitoring: which runners could take a production deploy now).
    pub async fn health(&self, gh: &Gh, api: &ApiClient) -> Result<Check, StepError> {
        let runners = gh.runners(api, None).await?;
        let list: Vec<Value> = self
            .candidates
            .iter()
            .map(|c| {
                let remote = runners.iter().find(|r| {
                    r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&c.name))
                });
                let why = c.reasons(remote, self.min_free);
                let field = |k: &str| remote.and_then(|r| r.get(k)).cloned().unwrap_or(Value::Null);
                json!({
                    "runner": c.runner, "name": c.name, "role": c.role, "healthy": why.is_empty(),
                    "reasons": why, "online": field("status") == json!("online"),
                    "busy": field("busy") == json!(true), "registered": remote.is_some(),
                    "reachable": c.reachable, "service_active": c.service_active == Some(true),
                    "free_disk": c.free_disk, "authorized_for_prod": c.authorized,
                })
            })
            .collect();
        let mut o = super::blank();
        o.insert(
            "healthy".into(),
            json!(list.iter().filter(|c| c["healthy"] == json!(true)).count()),
        );
        o.insert("candidates".into(), Value::Array(list));
        o.insert("runners".into(), Value::Array(runners));
        Ok(Check::InSync(o))
    }

    fn outputs(&self, c: &Candidate, rejected: Vec<String>, runners: Vec<Value>) -> Outputs {
        let mut o = super::blank();
        o.insert("runner".into(), json!(c.runner));
        o.insert("runner_name".into(), json!(c.name));
        o.insert("label".into(), json!(c.label));
        o.insert("role".into(), json!(c.role));
        o.insert("failover".into(), json!(c.role != "primary"));
        o.insert("reasons".into(), json!(rejected));
        o.insert("online".into(), json!(true));
        o.insert("busy".into(), json!(false));
        o.insert("labels_ok".into(), json!(true));
        o.insert("missing_labels".into(), json!([]));
        o.insert("service".into(), json!(c.service));
        o.insert("runners".into(), Value::Array(runners));
        o
    }
}
