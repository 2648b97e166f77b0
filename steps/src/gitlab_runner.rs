//! `gitlab_runner`: a GitLab runner created with the REST API
//! (`POST /user/runners`, the flow that replaced registration tokens), whose
//! authentication token becomes a secret output for the `config.toml` of the
//! machine that runs it. A runner is known by its token (`runner_token`,
//! e.g. read back from that machine) or id (`runner_id`): a token that still
//! verifies means the runner exists; `absent` deletes it.

use crate::api::{ApiClient, ApiError, ClientOptions, Req};
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

const RUNNER_TYPES: &[&str] = &["instance_type", "group_type", "project_type"];
const ACCESS_LEVELS: &[&str] = &["not_protected", "ref_protected"];
const STATES: &[&str] = &["present", "absent"];

static INFO: KindInfo = KindInfo {
    name: "gitlab_runner",
    version: 1,
    doc: "A GitLab runner created through the REST API; outputs its id and authentication token",
    params: &[
        ParamSpec::req(
            "api_url",
            ParamType::Url,
            "the GitLab base URL (`https://gitlab.example.com`)",
        ),
        ParamSpec::req(
            "token",
            ParamType::Str,
            "an access token with the `create_runner` scope (a secret)",
        ),
        ParamSpec::opt(
            "runner_type",
            ParamType::Enum(RUNNER_TYPES),
            "instance_type (default), group_type or project_type",
        ),
        ParamSpec::opt("group_id", ParamType::Int, "the group of a group_type runner"),
        ParamSpec::opt("project_id", ParamType::Int, "the project of a project_type runner"),
        ParamSpec::opt("description", ParamType::Str, "the runner's description"),
        ParamSpec::opt("tags", ParamType::StrList, "the runner's tags"),
        ParamSpec::opt("run_untagged", ParamType::Bool, "whether it picks untagged jobs"),
        ParamSpec::opt("locked", ParamType::Bool, "whether it is locked to its projects"),
        ParamSpec::opt(
            "access_level",
            ParamType::Enum(ACCESS_LEVELS),
            "not_protected or ref_protected",
        ),
        ParamSpec::opt("state", ParamType::Enum(STATES), "present (default) or absent"),
        ParamSpec::opt(
            "runner_id",
            ParamType::Int,
            "the id of the runner created before, if known",
        ),
        ParamSpec::opt(
            "runner_token",
            ParamType::Str,
            "the authentication token of the runner created before (a secret)",
        ),
        ParamSpec::opt(
            "ca_file",
            ParamType::Str,
            "a PEM file of the CA that signed GitLab's certificate",
        ),
        ParamSpec::opt(
            "insecure",
            ParamType::Bool,
            "accept any certificate (loudly; prefer `ca_file`)",
        ),
    ],
    one_of: &[],
    outputs: &["id", "token", "status"],
    secret_outputs: &["token"],
    journal: true,
};

pub struct GitlabRunnerKind;

impl StepKind for GitlabRunnerKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let runner_type = p.choice("runner_type", RUNNER_TYPES, "instance_type")?;
        let group_id = p.opt_i64("group_id")?;
        let project_id = p.opt_i64("project_id")?;
        match runner_type.as_str() {
            "group_type" if group_id.is_none() => {
                return Err(StepError::param("group_id", "is required for a `group_type` runner"))
            }
            "project_type" if project_id.is_none() => {
                return Err(StepError::param(
                    "project_id",
                    "is required for a `project_type` runner",
                ))
            }
            _ => {}
        }
        let absent = p.choice("state", STATES, "present")? == "absent";
        let runner_id = p.opt_i64("runner_id")?;
        let runner_token = p.opt_str("runner_token")?.filter(|t| !t.trim().is_empty());
        let access_level = match p.get("access_level") {
            Some(_) => Some(p.choice("access_level", ACCESS_LEVELS, "not_protected")?),
            None => None,
        };
        Ok(Box::new(GitlabRunner {
            api_url: format!("{}/api/v4", p.str("api_url")?.trim_end_matches('/')),
            token: p.str("token")?,
            runner_type,
            group_id,
            project_id,
            description: p.opt_str("description")?,
            tags: p.str_list("tags")?,
            run_untagged: p.opt_bool("run_untagged")?,
            locked: p.opt_bool("locked")?,
            access_level,
            absent,
            runner_id,
            runner_token,
            ca_file: p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f)),
            insecure: p.bool_or("insecure", false)?,
            client: OnceLock::new(),
        }))
    }
}

pub struct GitlabRunner {
    api_url: String,
    token: String,
    runner_type: String,
    group_id: Option<i64>,
    project_id: Option<i64>,
    description: Option<String>,
    tags: Vec<String>,
    run_untagged: Option<bool>,
    locked: Option<bool>,
    access_level: Option<String>,
    /// `state: absent`: the runner must not exist (else `present`).
    absent: bool,
    runner_id: Option<i64>,
    runner_token: Option<String>,
    ca_file: Option<PathBuf>,
    insecure: bool,
    client: OnceLock<ApiClient>,
}

/// Explain a GitLab error: scopes, and legacy registration tokens.
fn explain(e: ApiError, doing: &str, scopes: &str) -> StepError {
    if e.is(410) {
        return StepError::failed(format!(
            "{doing}: {e} — GitLab has disabled registration tokens (they are removed in GitLab 20.0); \
             flowrun creates runners with an access token (`POST /user/runners`, scope `create_runner`)"
        ));
    }
    if e.is_insufficient_scope() {
        return StepError::failed(format!("{doing} needs a token with the {scopes} scope: {e}"));
    }
    StepError::failed(format!("{doing}: {e}"))
}

fn outputs(id: Option<i64>, token: Option<&str>, status: &str) -> Outputs {
    let mut o = Outputs::new();
    o.insert("id".into(), id.map_or(Value::Null, |i| json!(i)));
    o.insert("token".into(), token.map_or(Value::Null, |t| json!(t)));
    o.insert("status".into(), json!(status));
    o
}

impl GitlabRunner {
    fn client(&self, cx: &StepContext) -> Result<&ApiClient, StepError> {
        cx.add_secret(&self.token);
        if let Some(t) = &self.runner_token {
            cx.add_secret(t);
        }
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let mut opts = ClientOptions::new("gitlab", &self.api_url);
        opts.ca_file.clone_from(&self.ca_file);
        opts.insecure = self.insecure;
        opts.auth = Some(("private-token", self.token.clone()));
        let client = ApiClient::new(opts)?;
        Ok(self.client.get_or_init(|| client))
    }

    /// The runner's id if its token still verifies, `None` if GitLab no longer knows it.
    async fn verify(&self, api: &ApiClient, runner_token: &str) -> Result<Option<i64>, StepError> {
        match api
            .send(Req::post("/runners/verify").json(json!({ "token": runner_token })))
            .await
        {
            Ok(r) => Ok(Some(
                r.json.get("id").and_then(Value::as_i64).or(self.runner_id).unwrap_or(0),
            )),
            Err(e) if e.is(403) => Ok(None),
            Err(e) => Err(explain(e, "verifying the runner token", "`create_runner`")),
        }
    }

    /// The runner's status; `unknown` (with a warning) when the token may not read runners.
    async fn status(&self, api: &ApiClient, id: i64) -> Result<String, StepError> {
        match api.send(Req::get(format!("/runners/{id}"))).await {
            Ok(r) => Ok(r
                .json
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned()),
            Err(e) if e.is_insufficient_scope() => {
                tracing::warn!(
                    "runner {id}: status unknown: reading runners needs a token with the `read_api`, \
                     `manage_runner` or `api` scope"
                );
                Ok("unknown".into())
            }
            Err(e) if e.is(404) => Ok("unknown".into()),
            Err(e) => Err(explain(
                e,
                &format!("reading runner {id}"),
                "`read_api`, `manage_runner` or `api`",
            )),
        }
    }

    /// The runner's token: given, or the one this step registered last time (from the journal).
    fn known_token(&self, cx: &StepContext) -> Option<String> {
        let t = self.runner_token.clone().or_else(|| {
            cx.previous
                .as_ref()?
                .get("token")?
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        });
        if let Some(t) = &t {
            cx.add_secret(t);
        }
        t
    }

    /// Whether the runner exists (and its id), for `absent`.
    async fn existing(&self, api: &ApiClient, token: Option<&str>) -> Result<Option<i64>, StepError> {
        if let Some(t) = token {
            return self.verify(api, t).await;
        }
        let id = self.runner_id.unwrap_or_default();
        match api.send(Req::get(format!("/runners/{id}"))).await {
            Ok(_) => Ok(Some(id)),
            Err(e) if e.is(404) => Ok(None),
            Err(e) => Err(explain(
                e,
                &format!("checking runner {id}"),
                "`read_api`, `manage_runner` or `api`",
            )),
        }
    }

    fn create_body(&self) -> Value {
        let mut body = json!({ "runner_type": self.runner_type });
        if let Some(g) = self.group_id {
            body["group_id"] = json!(g);
        }
        if let Some(p) = self.project_id {
            body["project_id"] = json!(p);
        }
        if let Some(d) = &self.description {
            body["description"] = json!(d);
        }
        if !self.tags.is_empty() {
            body["tag_list"] = json!(self.tags.join(","));
        }
        if let Some(v) = self.run_untagged {
            body["run_untagged"] = json!(v);
        }
        if let Some(v) = self.locked {
            body["locked"] = json!(v);
        }
        if let Some(v) = &self.access_level {
            body["access_level"] = json!(v);
        }
        body
    }

    fn what(&self) -> String {
        match &self.description {
            Some(d) => format!("{} runner `{d}`", self.runner_type),
            None => format!("{} runner", self.runner_type),
        }
    }
}

#[async_trait::async_trait]
impl Step for GitlabRunner {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let api = self.client(cx)?;
        if self.absent {
            let token = self.known_token(cx);
            if token.is_none() && self.runner_id.is_none() {
                return Err(StepError::param(
                    "state",
                    "`absent` needs `runner_id` or `runner_token` (or an earlier run of this step that registered the runner) to know which runner to delete",
                ));
            }
            return Ok(match self.existing(api, token.as_deref()).await? {
                None => Check::InSync(outputs(None, None, "absent")),
                Some(id) => Check::Drift(Pending::new(format!("delete runner {id}"))),
            });
        }
        let Some(runner_token) = &self.known_token(cx) else {
            return Ok(Check::Drift(Pending::new(format!("create {}", self.what()))));
        };
        match self.verify(api, runner_token).await? {
            Some(id) => {
                let status = self.status(api, id).await?;
                Ok(Check::InSync(outputs(Some(id), Some(runner_token), &status)))
            }
            None => Ok(Check::Drift(Pending::new(format!(
                "create {} (the previous runner's token no longer verifies: it was deleted)",
                self.what()
            )))),
        }
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let api = self.client(cx)?;
        if self.absent {
            let token = self.known_token(cx);
            let (req, id) = match (&token, self.runner_id) {
                // A runner may delete itself with its own token: no scope needed.
                (Some(t), id) => (Req::delete("/runners").json(json!({ "token": t })), id),
                (None, id) => (Req::delete(format!("/runners/{}", id.unwrap_or_default())), id),
            };
            let label = id.map_or_else(|| "the runner".to_owned(), |i| format!("runner {i}"));
            return match api.send(req).await {
                Ok(_) => Ok(Applied::changed(outputs(None, None, "absent")).message(format!("deleted {label}"))),
                Err(e) if e.is(404) || (e.is(403) && token.is_some()) => Ok(Applied {
                    changed: false,
                    outputs: outputs(None, None, "absent"),
                    message: Some(format!("{label} was already gone")),
                }),
                Err(e) => Err(explain(e, &format!("deleting {label}"), "`manage_runner` or `api`")),
            };
        }
        let created = api
            .send(Req::post("/user/runners").json(self.create_body()))
            .await
            .map_err(|e| explain(e, &format!("creating a {}", self.what()), "`create_runner` or `api`"))?;
        let id = created.json.get("id").and_then(Value::as_i64);
        let token = created.json.get("token").and_then(Value::as_str);
        let (Some(id), Some(token)) = (id, token) else {
            return Err(StepError::failed(
                "gitlab POST /user/runners: the answer has no runner `id` and `token`",
            ));
        };
        cx.add_secret(token);
        Ok(Applied::changed(outputs(Some(id), Some(token), "never_contacted")).message(format!("created runner {id}")))
    }
}
