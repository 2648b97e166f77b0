//! `github_runner` with `state: configured`: the runner release unpacked in
//! `runner_dir` on the step's host is registered with the repository as
//! `name` with exactly `labels` (besides GitHub's own).
//!
//! The check reads the runner's `.runner` (JSON the runner writes, with a
//! UTF-8 BOM: `agentName`, `gitHubUrl`) on the host and the runner by name in
//! the API. In state when both agree with the parameters. Otherwise:
//! - only the labels differ: they are set through the API (no re-registration);
//! - no `.runner`, another name or URL, or the runner is gone from GitHub: a
//!   registration token is requested and `config.sh --unattended --replace`
//!   runs as `run_as`, with every option, the token too, in
//!   `ACTIONS_RUNNER_INPUT_*` environment variables (the runner reads them
//!   like its command line; flowrun sends a script with secrets on stdin, so
//!   the token is never in any process's argv). The old settings go first
//!   (config.sh refuses to configure twice): for a new name the old service
//!   is uninstalled (`svc.sh uninstall`) and the old runner deleted from
//!   GitHub. An installed service is restarted after a re-registration: the
//!   registration replaced the credentials it ran with.
//!
//! The token is never an output. Journaled by the workflows: a re-run whose
//! parameters did not change makes no request at all.

use super::api::{self, Gh, DEFAULT_LABELS};
use crate::api::ApiClient;
use crate::params::Params;
use flowrun_engine::step::{Applied, Check, Outputs, Pending, StepContext, StepError};
use flowrun_engine::transport::{quote, Become, ExecRequest};
use serde_json::{json, Value};

pub struct Configure {
    name: String,
    labels: Vec<String>,
    runner_dir: String,
    run_as: Option<String>,
    github_url: String,
    work_dir: String,
    runner_group: Option<String>,
}

/// What `.runner` says.
struct Local {
    name: String,
    url: String,
}

enum Plan {
    InSync(Value),
    Labels { id: u64, from: Vec<String> },
    Register { reason: String, old: Option<Local> },
}

impl Configure {
    pub fn from_params(p: &Params<'_>, gh: &Gh, labels: Vec<String>) -> Result<Self, StepError> {
        let runner_dir = p
            .opt_str("runner_dir")?
            .ok_or_else(|| StepError::param("runner_dir", "is required with `state: configured`"))?;
        if !runner_dir.starts_with('/') {
            return Err(StepError::param(
                "runner_dir",
                format!("expected an absolute path, got `{runner_dir}`"),
            ));
        }
        Ok(Self {
            name: p.str("name")?,
            labels,
            runner_dir: runner_dir.trim_end_matches('/').to_owned(),
            run_as: p.opt_str("run_as")?,
            github_url: p
                .opt_str("github_url")?
                .unwrap_or_else(|| api::github_url(&gh.api_url, &gh.repo))
                .trim_end_matches('/')
                .to_owned(),
            work_dir: p.str_or("work_dir", "_work")?,
            runner_group: p.opt_str("runner_group")?,
        })
    }

    fn path(&self, file: &str) -> String {
        format!("{}/{file}", self.runner_dir)
    }

    /// The systemd unit the runner's `svc.sh` names (`actions.runner.OWNER-REPO.NAME`).
    fn service(&self) -> String {
        let nwo = self
            .github_url
            .splitn(4, '/')
            .nth(3)
            .unwrap_or_default()
            .trim_matches('/');
        let safe: String = nwo
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("actions.runner.{safe}.{}", self.name.replace(' ', "_"))
    }

    async fn local(&self, cx: &StepContext) -> Result<Option<Local>, StepError> {
        let Some(bytes) = cx.read_file(&self.path(".runner")).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| StepError::failed(format!("`{}` is not the runner's JSON: {e}", self.path(".runner"))))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(Some(Local {
            name: s("agentName"),
            url: s("gitHubUrl").trim_end_matches('/').to_owned(),
        }))
    }

    fn custom(labels: &[String]) -> Vec<String> {
        labels
            .iter()
            .filter(|l| !DEFAULT_LABELS.iter().any(|d| d.eq_ignore_ascii_case(l)))
            .cloned()
            .collect()
    }

    async fn plan(&self, gh: &Gh, api: &ApiClient, cx: &StepContext) -> Result<Plan, StepError> {
        let local = self.local(cx).await?;
        let Some(local) = local else {
            return Ok(Plan::Register {
                reason: format!("`{}` does not exist", self.path(".runner")),
                old: None,
            });
        };
        if !local.name.eq_ignore_ascii_case(&self.name) || local.url != self.github_url {
            let reason = format!("the runner is configured as `{}` for `{}`", local.name, local.url);
            return Ok(Plan::Register {
                reason,
                old: Some(local),
            });
        }
        let Some(remote) = gh.runner(api, &self.name).await? else {
            return Ok(Plan::Register {
                reason: format!("GitHub has no runner named `{}` (deleted there?)", self.name),
                old: Some(local),
            });
        };
        let have = Self::custom(&api::labels_of(&remote));
        let want = Self::custom(&self.labels);
        let same = have.len() == want.len() && want.iter().all(|l| api::has_label(&have, l));
        if same {
            return Ok(Plan::InSync(remote));
        }
        let id = remote.get("id").and_then(Value::as_u64).unwrap_or_default();
        Ok(Plan::Labels { id, from: have })
    }

    fn outputs(&self, runner: &Value) -> Outputs {
        let mut o = super::blank();
        o.insert("id".into(), runner.get("id").cloned().unwrap_or(Value::Null));
        o.insert(
            "online".into(),
            json!(runner.get("status").and_then(Value::as_str) == Some("online")),
        );
        o.insert("busy".into(), runner.get("busy").cloned().unwrap_or(json!(false)));
        o.insert("labels_ok".into(), json!(true));
        o.insert("missing_labels".into(), json!([]));
        o.insert("service".into(), json!(self.service()));
        o.insert("runner".into(), runner.clone());
        o
    }

    pub async fn check(&self, gh: &Gh, api: &ApiClient, cx: &StepContext) -> Result<Check, StepError> {
        Ok(match self.plan(gh, api, cx).await? {
            Plan::InSync(r) => Check::InSync(self.outputs(&r)),
            Plan::Labels { from, .. } => Check::Drift(Pending::new(format!(
                "set the labels of runner `{}` to `{}` (now `{}`)",
                self.name,
                self.labels.join(","),
                from.join(",")
            ))),
            Plan::Register { reason, .. } => Check::Drift(Pending::new(format!(
                "register runner `{}` with `{}` (config.sh): {reason}",
                self.name, gh.repo
            ))),
        })
    }

    pub async fn apply(&self, gh: &Gh, api: &ApiClient, cx: &StepContext) -> Result<Applied, StepError> {
        match self.plan(gh, api, cx).await? {
            Plan::InSync(r) => Ok(Applied {
                changed: false,
                outputs: self.outputs(&r),
                message: None,
            }),
            Plan::Labels { id, .. } => {
                gh.set_labels(api, id, &Self::custom(&self.labels)).await?;
                let r = gh.runner(api, &self.name).await?.unwrap_or(Value::Null);
                Ok(Applied::changed(self.outputs(&r)).message(format!(
                    "set the labels of runner `{}` to `{}`",
                    self.name,
                    self.labels.join(",")
                )))
            }
            Plan::Register { old, .. } => self.register(gh, api, cx, old).await,
        }
    }

    async fn register(
        &self,
        gh: &Gh,
        api: &ApiClient,
        cx: &StepContext,
        old: Option<Local>,
    ) -> Result<Applied, StepError> {
        let service_file = self.path(".service");
        if let Some(old) = &old {
            let renamed = !old.name.eq_ignore_ascii_case(&self.name) || old.url != self.github_url;
            if renamed {
                if cx.stat(&service_file).await?.is_some() {
                    self.root(cx, "./svc.sh uninstall").await?;
                }
                if old.url == self.github_url {
                    if let Some(id) = gh
                        .runner(api, &old.name)
                        .await?
                        .and_then(|r| r.get("id").and_then(Value::as_u64))
                    {
                        gh.delete(api, id).await?;
                    }
                }
            }
            // config.sh refuses to configure over existing settings.
            self.root(cx, "rm -f .runner .credentials .credentials_rsaparams")
                .await?;
        }
        let (token, _) = gh.runner_token(api, cx, "registration-token").await?;
        let mut req = ExecRequest::shell("./config.sh");
        req.chdir = Some(self.runner_dir.clone());
        req.become_ = match &self.run_as {
            Some(user) => Some(Become { user: user.clone() }),
            None => cx.become_.clone(),
        };
        let mut env = vec![
            ("ACTIONS_RUNNER_INPUT_URL", self.github_url.clone()),
            ("ACTIONS_RUNNER_INPUT_TOKEN", token),
            ("ACTIONS_RUNNER_INPUT_NAME", self.name.clone()),
            ("ACTIONS_RUNNER_INPUT_LABELS", Self::custom(&self.labels).join(",")),
            ("ACTIONS_RUNNER_INPUT_WORK", self.work_dir.clone()),
            ("ACTIONS_RUNNER_INPUT_UNATTENDED", "true".into()),
            ("ACTIONS_RUNNER_INPUT_REPLACE", "true".into()),
        ];
        if self.run_as.as_deref() == Some("root") {
            // The runner refuses root unless told; `run_as: root` is the operator saying so.
            env.push(("RUNNER_ALLOW_RUNASROOT", "1".into()));
        }
        if let Some(g) = &self.runner_group {
            env.push(("ACTIONS_RUNNER_INPUT_RUNNERGROUP", g.clone()));
        }
        req.env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let out = cx.exec(req).await?;
        if out.rc != 0 {
            return Err(StepError::failed(format!(
                "config.sh failed for runner `{}`: {}",
                self.name,
                out.failure_message("./config.sh").trim_end()
            )));
        }
        let mut message = format!(
            "registered runner `{}` with `{}` (labels `{}`)",
            self.name,
            gh.repo,
            self.labels.join(",")
        );
        if old.is_some() && cx.stat(&service_file).await?.is_some() {
            self.root(cx, "./svc.sh stop && ./svc.sh start").await?;
            message.push_str("; restarted its service");
        }
        let r = gh.runner(api, &self.name).await?.ok_or_else(|| {
            StepError::failed(format!(
                "config.sh succeeded but GitHub lists no runner named `{}`",
                self.name
            ))
        })?;
        Ok(Applied::changed(self.outputs(&r)).message(message))
    }

    /// Run `script` as root in the runner's directory.
    async fn root(&self, cx: &StepContext, script: &str) -> Result<(), StepError> {
        let mut req = ExecRequest::shell(format!("cd {} && {script}", quote(&self.runner_dir)));
        req.become_ = Some(Become::default());
        let out = cx.exec(req).await?;
        if out.rc != 0 {
            return Err(StepError::failed(out.failure_message(script)));
        }
        Ok(())
    }
}
