//! `github_runner`: self-hosted runners of a GitHub repository.
//!
//! - `token`: a registration token for `config.sh` (valid one hour).
//! - `present` (read-only): the runners and their status, and the one named
//!   `name` with `online`, `busy` and whether it has the expected `labels`.
//! - `absent`: the runner named `name` deleted from GitHub.
//! - `configured`: on the step's host, the runner unpacked in `runner_dir`
//!   registered as `name` with `labels` (see [`configure`]); the
//!   registration token never leaves the step.
//! - `select`: the health gate: the first healthy of the `candidates`, in
//!   role order (see [`select`]).
//! - `health`: every candidate judged as `select` judges them, none chosen,
//!   never a failure (for monitoring).
//!
//! Not journaled by default (tokens expire within an hour; status is only
//! worth fresh); `configured` is journaled by the workflows that use it.

mod api;
mod configure;
mod select;

use crate::params::Params;
use api::Gh;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, LiteralProblem, Outputs, ParamSpec, ParamType, Pending, Step, StepContext,
    StepError, StepKind,
};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use std::time::Duration;

const STATES: &[&str] = &["token", "present", "absent", "configured", "select", "health"];

static INFO: KindInfo = KindInfo {
    name: "github_runner",
    version: 2,
    doc: "Self-hosted GitHub runners of a repository: a registration token, their status, deleting one, \
          registering one on its host (config.sh), or choosing a healthy one (the health gate)",
    params: &[
        ParamSpec::opt(
            "api_url",
            ParamType::Url,
            "the API's URL (default `https://api.github.com`; GitHub Enterprise Server: `https://HOST/api/v3`)",
        ),
        ParamSpec::req(
            "token",
            ParamType::Str,
            "a token that administers the repository's runners (a secret); reading needs only read access",
        ),
        ParamSpec::req("repo", ParamType::Str, "the repository, `OWNER/NAME`"),
        ParamSpec::opt("name", ParamType::Str, "the runner's name"),
        ParamSpec::opt(
            "state",
            ParamType::Enum(STATES),
            "token, present (default, read-only), absent, configured, select or health",
        ),
        ParamSpec::opt(
            "labels",
            ParamType::StrList,
            "custom labels (a list, or comma-separated): with `present` the ones it must have, with \
             `configured` exactly its custom labels",
        ),
        ParamSpec::opt(
            "runner_dir",
            ParamType::Str,
            "`configured`: the directory the runner release is unpacked in",
        ),
        ParamSpec::opt(
            "run_as",
            ParamType::Str,
            "`configured`: the user that runs config.sh (not root; default: the connection's user)",
        ),
        ParamSpec::opt(
            "github_url",
            ParamType::Str,
            "`configured`: the repository's web URL for config.sh (default from `api_url`)",
        ),
        ParamSpec::opt(
            "work_dir",
            ParamType::Str,
            "`configured`: the jobs' work directory (default `_work`)",
        ),
        ParamSpec::opt("runner_group", ParamType::Str, "`configured`: the runner group to join"),
        ParamSpec::opt(
            "candidates",
            ParamType::Any,
            "`select`, `health`: the candidate runners, e.g. `steps.PROBE.hosts` of a `probe` whose `facts` give \
             name, role, labels, authorized_for_prod and whose `values` give service_active, free_disk",
        ),
        ParamSpec::opt(
            "min_free_disk",
            ParamType::Str,
            "`select`, `health`: free disk a candidate needs, e.g. `2G`, `500M` or bytes (default 1G)",
        ),
        ParamSpec::opt(
            "busy_wait",
            ParamType::Duration,
            "`select`: how long to wait, in all, for a healthy candidate that is busy (default 2m)",
        ),
        ParamSpec::opt(
            "ca_file",
            ParamType::Str,
            "a PEM file of the CA that signed the API's certificate",
        ),
        ParamSpec::opt(
            "insecure",
            ParamType::Bool,
            "accept any certificate (loudly; prefer `ca_file`)",
        ),
    ],
    one_of: &[],
    outputs: &[
        "registration_token",
        "expires_at",
        "runners",
        "runner",
        "id",
        "online",
        "busy",
        "labels_ok",
        "missing_labels",
        "service",
        "runner_name",
        "label",
        "role",
        "failover",
        "reasons",
        "candidates",
        "healthy",
    ],
    secret_outputs: &["registration_token"],
    journal: false,
};

pub struct GithubRunnerKind;

/// Labels from a list whose items may themselves be comma-separated (config.sh's `--labels` form).
fn split_labels(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if !api::has_label(&out, l) {
            out.push(l.to_owned());
        }
    }
    out
}

impl StepKind for GithubRunnerKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    /// A literal `min_free_disk` must be a size: known when the workflow loads.
    fn check_literals(&self, literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        match literals.get("min_free_disk") {
            Some(Value::String(min)) if parse_size(min).is_none() => vec![LiteralProblem::new(
                "min_free_disk",
                format!("expected a size like `2G`, got `{min}`"),
            )],
            _ => Vec::new(),
        }
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let repo = p.str("repo")?;
        let Some((owner, name)) = repo
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        else {
            return Err(StepError::param("repo", format!("expected `OWNER/NAME`, got `{repo}`")));
        };
        let state = p.choice("state", STATES, "present")?;
        let runner = p.opt_str("name")?;
        if matches!(state.as_str(), "absent" | "configured") && runner.is_none() {
            return Err(StepError::param("name", format!("is required with `state: {state}`")));
        }
        let api_url = p.str_or("api_url", "https://api.github.com")?;
        let gh = Gh {
            token: p.str("token")?,
            base: api::base_path(owner, name),
            repo: repo.clone(),
            ca_file: p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f)),
            insecure: p.bool_or("insecure", false)?,
            client: OnceLock::new(),
            api_url,
        };
        let labels = split_labels(p.str_list("labels")?);
        let kind = match state.as_str() {
            "configured" => Mode::Configured(configure::Configure::from_params(&p, &gh, labels.clone())?),
            "select" => Mode::Select(select::Select::from_params(&p)?),
            "health" => Mode::Health(select::Select::from_params(&p)?),
            "token" => Mode::Token,
            "absent" => Mode::Absent,
            _ => Mode::Present,
        };
        Ok(Box::new(GithubRunner {
            gh,
            name: runner,
            labels,
            kind,
        }))
    }
}

/// What `state` asks for, with what that state needs.
enum Mode {
    /// `token`: a registration token, every run.
    Token,
    /// `present`: the runner's facts (it is registered elsewhere).
    Present,
    /// `absent`: the named runner deleted.
    Absent,
    /// `configured`: the runner release on the host, registered.
    Configured(configure::Configure),
    /// `select`: the health gate chooses a runner.
    Select(select::Select),
    /// `health`: every candidate judged, none chosen.
    Health(select::Select),
}

pub struct GithubRunner {
    gh: Gh,
    name: Option<String>,
    /// `present`: the custom labels the runner must have.
    labels: Vec<String>,
    kind: Mode,
}

/// Every declared output, null: each state fills in what it knows.
fn blank() -> Outputs {
    INFO.outputs.iter().map(|k| ((*k).to_owned(), Value::Null)).collect()
}

impl GithubRunner {
    fn named<'a>(&self, runners: &'a [Value]) -> Option<&'a Value> {
        let name = self.name.as_deref()?;
        runners.iter().find(|r| {
            r.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    fn outputs(&self, runners: Vec<Value>) -> Outputs {
        let mut o = blank();
        if let Some(r) = self.named(&runners) {
            let have = api::labels_of(r);
            let missing: Vec<&String> = self.labels.iter().filter(|l| !api::has_label(&have, l)).collect();
            o.insert(
                "online".into(),
                json!(r.get("status").and_then(Value::as_str) == Some("online")),
            );
            o.insert("busy".into(), r.get("busy").cloned().unwrap_or(json!(false)));
            o.insert("id".into(), r.get("id").cloned().unwrap_or(Value::Null));
            o.insert("labels_ok".into(), json!(missing.is_empty()));
            o.insert("missing_labels".into(), json!(missing));
            o.insert("runner".into(), r.clone());
        } else {
            o.insert("online".into(), json!(false));
            o.insert("busy".into(), json!(false));
            o.insert("labels_ok".into(), json!(false));
            o.insert("missing_labels".into(), json!(self.labels));
        }
        o.insert("runners".into(), Value::Array(runners));
        o
    }
}

#[async_trait::async_trait]
impl Step for GithubRunner {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let api = self.gh.client(cx)?;
        match &self.kind {
            Mode::Configured(c) => return c.check(&self.gh, api, cx).await,
            Mode::Health(s) => return s.health(&self.gh, api).await,
            Mode::Select(s) => return s.check(&self.gh, api, cx).await,
            Mode::Token | Mode::Present | Mode::Absent => {}
        }
        if matches!(self.kind, Mode::Token) {
            return Ok(Check::Drift(Pending::new(format!(
                "create a runner registration token for `{}`",
                self.gh.repo
            ))));
        }
        let runners = self.gh.runners(api, None).await?;
        if matches!(self.kind, Mode::Absent) {
            if let Some(r) = self.named(&runners) {
                let summary = format!(
                    "delete runner `{}` (id {}) from `{}`",
                    self.name.as_deref().unwrap_or_default(),
                    r.get("id").unwrap_or(&Value::Null),
                    self.gh.repo
                );
                return Ok(Check::Drift(Pending::new(summary)));
            }
        }
        Ok(Check::InSync(self.outputs(runners)))
    }

    async fn apply(&self, cx: &StepContext, pending: Pending) -> Result<Applied, StepError> {
        let api = self.gh.client(cx)?;
        match &self.kind {
            Mode::Configured(c) => return c.apply(&self.gh, api, cx).await,
            Mode::Select(_) | Mode::Health(_) => {
                return Ok(Applied {
                    changed: false,
                    outputs: pending.outputs,
                    message: Some(pending.summary),
                })
            }
            Mode::Token | Mode::Present | Mode::Absent => {}
        }
        if matches!(self.kind, Mode::Token) {
            let (token, expires) = self.gh.runner_token(api, cx, "registration-token").await?;
            let mut o = blank();
            o.insert("registration_token".into(), json!(token));
            o.insert("expires_at".into(), expires);
            o.insert("online".into(), json!(false));
            return Ok(Applied::changed(o).message("created a registration token"));
        }
        let runners = self.gh.runners(api, None).await?;
        let Some(id) = self.named(&runners).and_then(|r| r.get("id")).and_then(Value::as_u64) else {
            return Ok(Applied {
                changed: false,
                outputs: self.outputs(runners),
                message: None,
            });
        };
        self.gh.delete(api, id).await?;
        let remaining: Vec<Value> = runners
            .into_iter()
            .filter(|r| r.get("id").and_then(Value::as_u64) != Some(id))
            .collect();
        Ok(Applied::changed(self.outputs(remaining)).message(format!("deleted runner {id}")))
    }
}

/// A size such as `2G`, `500M`, `1.5GiB`, `10240K` or a number of bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((n * mult) as u64)
}

/// Bytes as GiB/MiB for messages.
pub(crate) fn show_size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    }
}

/// The default of `busy_wait`.
pub(crate) const BUSY_WAIT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10 KB"), Some(10 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(show_size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn labels_split_on_commas_and_dedup() {
        assert_eq!(
            split_labels(vec!["production, primary".into(), "gpu".into(), "Primary".into()]),
            ["production", "primary", "gpu"]
        );
    }
}
