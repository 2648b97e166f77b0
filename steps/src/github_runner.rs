//! `github_runner`: self-hosted runners of a GitHub repository through the
//! REST API — a registration token for `config.sh` (`state: token`), the
//! runners and their status (`present`, read-only, for health checks and
//! failover decisions), or deleting a named runner (`absent`). Not journaled:
//! registration tokens expire within an hour and status is only worth fresh.

use crate::api::{segment, ApiClient, ClientOptions, Req};
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

const STATES: &[&str] = &["token", "present", "absent"];
const PER_PAGE: usize = 100;
/// Pages read at most (10,000 runners).
const MAX_PAGES: usize = 100;

static INFO: KindInfo = KindInfo {
    name: "github_runner",
    version: 1,
    doc: "Self-hosted GitHub runners of a repository: a registration token, their status, or deleting one",
    params: &[
        ParamSpec::opt(
            "api_url",
            ParamType::Str,
            "the API's URL (default `https://api.github.com`)",
        ),
        ParamSpec::req(
            "token",
            ParamType::Str,
            "a token that administers the repository (a secret)",
        ),
        ParamSpec::req("repo", ParamType::Str, "the repository, `OWNER/NAME`"),
        ParamSpec::opt("name", ParamType::Str, "the runner's name"),
        ParamSpec::opt("state", ParamType::Enum(STATES), "token, present (default) or absent"),
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
    outputs: &["registration_token", "expires_at", "runners", "runner", "online"],
    secret_outputs: &["registration_token"],
    journal: false,
};

pub struct GithubRunnerKind;

impl StepKind for GithubRunnerKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
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
        if state == "absent" && runner.is_none() {
            return Err(StepError::param("name", "is required with `state: absent`"));
        }
        Ok(Box::new(GithubRunner {
            api_url: p.str_or("api_url", "https://api.github.com")?,
            token: p.str("token")?,
            base: format!("/repos/{}/{}/actions/runners", segment(owner), segment(name)),
            repo: repo.clone(),
            name: runner,
            state,
            ca_file: p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f)),
            insecure: p.bool_or("insecure", false)?,
            client: OnceLock::new(),
        }))
    }
}

pub struct GithubRunner {
    api_url: String,
    token: String,
    /// `/repos/OWNER/NAME/actions/runners`.
    base: String,
    repo: String,
    name: Option<String>,
    state: String,
    ca_file: Option<PathBuf>,
    insecure: bool,
    client: OnceLock<ApiClient>,
}

impl GithubRunner {
    fn client(&self, cx: &StepContext) -> Result<&ApiClient, StepError> {
        cx.add_secret(&self.token);
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let mut opts = ClientOptions::new("github", &self.api_url);
        opts.ca_file.clone_from(&self.ca_file);
        opts.insecure = self.insecure;
        opts.headers = vec![
            ("accept", "application/vnd.github+json".to_owned()),
            ("x-github-api-version", "2022-11-28".to_owned()),
        ];
        opts.auth = Some(("authorization", format!("Bearer {}", self.token)));
        let client = ApiClient::new(opts)?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Every runner of the repository as `{id, name, status, busy, labels}`.
    async fn runners(&self, api: &ApiClient) -> Result<Vec<Value>, StepError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let resp = api
                .send(Req::get(&self.base).query("per_page", PER_PAGE).query("page", page))
                .await
                .map_err(|e| StepError::failed(format!("listing the runners of `{}`: {e}", self.repo)))?;
            let total = resp.json.get("total_count").and_then(Value::as_u64).unwrap_or(0);
            let items = resp
                .json
                .get("runners")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let count = items.len();
            out.extend(items.iter().map(|r| {
                let labels: Vec<Value> = r
                    .get("labels")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.get("name").cloned())
                    .collect();
                json!({
                    "id": r.get("id").cloned().unwrap_or(Value::Null),
                    "name": r.get("name").cloned().unwrap_or(Value::Null),
                    "status": r.get("status").cloned().unwrap_or(Value::Null),
                    "busy": r.get("busy").cloned().unwrap_or(Value::Bool(false)),
                    "labels": labels,
                })
            }));
            if count < PER_PAGE || out.len() as u64 >= total {
                return Ok(out);
            }
        }
        tracing::warn!(
            "`{}` has more than {} runners: listed the first ones only",
            self.repo,
            out.len()
        );
        Ok(out)
    }

    fn named<'a>(&self, runners: &'a [Value]) -> Option<&'a Value> {
        let name = self.name.as_deref()?;
        runners
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
    }

    fn outputs(&self, runners: Vec<Value>) -> Outputs {
        let runner = self.named(&runners).cloned();
        let online = runner
            .as_ref()
            .is_some_and(|r| r.get("status").and_then(Value::as_str) == Some("online"));
        let mut o = Outputs::new();
        o.insert("registration_token".into(), Value::Null);
        o.insert("expires_at".into(), Value::Null);
        o.insert("runner".into(), runner.unwrap_or(Value::Null));
        o.insert("online".into(), json!(online));
        o.insert("runners".into(), Value::Array(runners));
        o
    }
}

#[async_trait::async_trait]
impl Step for GithubRunner {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let api = self.client(cx)?;
        if self.state == "token" {
            return Ok(Check::Drift(Pending::new(format!(
                "create a runner registration token for `{}`",
                self.repo
            ))));
        }
        let runners = self.runners(api).await?;
        if self.state == "absent" {
            if let Some(r) = self.named(&runners) {
                let summary = format!(
                    "delete runner `{}` (id {}) from `{}`",
                    self.name.as_deref().unwrap_or_default(),
                    r.get("id").unwrap_or(&Value::Null),
                    self.repo
                );
                return Ok(Check::Drift(Pending::new(summary)));
            }
        }
        Ok(Check::InSync(self.outputs(runners)))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let api = self.client(cx)?;
        if self.state == "token" {
            let resp = api
                .send(Req::post(format!("{}/registration-token", self.base)))
                .await
                .map_err(|e| StepError::failed(format!("creating a registration token for `{}`: {e}", self.repo)))?;
            let Some(token) = resp.json.get("token").and_then(Value::as_str) else {
                return Err(StepError::failed(
                    "github: the registration token answer has no `token`",
                ));
            };
            cx.add_secret(token);
            let mut o = Outputs::new();
            o.insert("registration_token".into(), json!(token));
            o.insert(
                "expires_at".into(),
                resp.json.get("expires_at").cloned().unwrap_or(Value::Null),
            );
            o.insert("runners".into(), Value::Null);
            o.insert("runner".into(), Value::Null);
            o.insert("online".into(), json!(false));
            return Ok(Applied::changed(o).message("created a registration token"));
        }
        let runners = self.runners(api).await?;
        let Some(id) = self.named(&runners).and_then(|r| r.get("id")).and_then(Value::as_u64) else {
            return Ok(Applied {
                changed: false,
                outputs: self.outputs(runners),
                message: None,
            });
        };
        match api.send(Req::delete(format!("{}/{id}", self.base))).await {
            Ok(_) => {}
            Err(e) if e.is(404) => {}
            Err(e) => {
                return Err(StepError::failed(format!(
                    "deleting runner {id} of `{}`: {e}",
                    self.repo
                )))
            }
        }
        let remaining: Vec<Value> = runners
            .into_iter()
            .filter(|r| r.get("id").and_then(Value::as_u64) != Some(id))
            .collect();
        Ok(Applied::changed(self.outputs(remaining)).message(format!("deleted runner {id}")))
    }
}
