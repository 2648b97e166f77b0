//! `k8s_apply`: Kubernetes objects kept as a workflow renders them, by
//! server-side apply. `check` sends the same apply with `dryRun=All` and
//! compares the answer with the live object as `kubectl diff --server-side`
//! does, so server defaults never show as drift; `apply` sends it for real,
//! only for what drifted, can wait for Deployment rollouts, and can prune
//! objects it applied before that carry its owner label and are no longer
//! rendered. `state: absent` deletes what it renders. Credentials come from a
//! kubeconfig (tokens, client certificates, `exec` plugins such as GKE's);
//! the journal fingerprint covers the rendered objects and the cluster.

mod act;
mod client;
mod credentials;
mod diff;
mod errors;
mod kubeconfig;
mod manifest;
mod observe;
mod refs;
mod rollout;

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, LiteralProblem, Outputs, ParamSpec, ParamType, Pending, Step, StepContext,
    StepError, StepKind, ValuePath,
};
use manifest::Object;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STATES: &[&str] = &["present", "absent"];
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

static INFO: KindInfo = KindInfo {
    name: "k8s_apply",
    version: 1,
    doc: "Kubernetes objects by server-side apply: a dry-run diff against the live objects as the check (`--check \
          --diff` shows it), apply of what drifted, optional rollout wait and pruning by owner label, or `state: \
          absent`. Credentials from a kubeconfig",
    params: &[
        ParamSpec::opt(
            "manifest",
            ParamType::Any,
            "the objects: one object, a list of objects, or YAML text (documents separated by `---`)",
        ),
        ParamSpec::opt(
            "src",
            ParamType::Str,
            "a template file of YAML objects, relative to the workflow, rendered with the step's variables",
        ),
        ParamSpec::opt(
            "kubeconfig",
            ParamType::Str,
            "the kubeconfig file (default `$KUBECONFIG`, else `~/.kube/config`)",
        ),
        ParamSpec::opt(
            "context",
            ParamType::Str,
            "the kubeconfig context (default its `current-context`)",
        ),
        ParamSpec::opt(
            "namespace",
            ParamType::Str,
            "the namespace of objects that name none (default the context's, else `default`)",
        ),
        ParamSpec::opt(
            "field_manager",
            ParamType::Str,
            "the field manager the apply is made as (default `flowrun`)",
        ),
        ParamSpec::opt(
            "force_conflicts",
            ParamType::Bool,
            "take ownership of fields another manager owns instead of failing with the conflict (default false)",
        ),
        ParamSpec::opt(
            "wait",
            ParamType::Bool,
            "wait for Deployments to roll out (default false)",
        ),
        ParamSpec::opt(
            "wait_timeout",
            ParamType::Duration,
            "how long to wait for a rollout (default 5m)",
        ),
        ParamSpec::opt(
            "prune",
            ParamType::Bool,
            "delete objects this step applied before that carry `owner_label` and are no longer rendered",
        ),
        ParamSpec::opt(
            "owner_label",
            ParamType::Str,
            "`KEY=VALUE`: the label every rendered object carries, by which `prune` finds what it owns",
        ),
        ParamSpec::opt(
            "check_references",
            ParamType::Bool,
            "check that the Secrets, ConfigMaps, PVCs and ServiceAccounts the pods refer to exist, by metadata \
             only, before anything is written (default true)",
        ),
        ParamSpec::opt("state", ParamType::Enum(STATES), "present (default) or absent"),
    ],
    one_of: &[&["manifest", "src"]],
    outputs: &["objects", "pruned", "deleted", "server", "context", "namespace"],
    secret_outputs: &[],
    journal: true,
};

pub struct K8sApplyKind;

/// A step instance: the rendered objects and where they go.
pub struct K8sApply {
    objects: Vec<Object>,
    resolved: Arc<kubeconfig::Resolved>,
    default_ns: String,
    field_manager: String,
    force: bool,
    wait: bool,
    wait_timeout: Duration,
    prune: bool,
    owner_label: Option<(String, String)>,
    check_refs: bool,
    absent: bool,
    kube: tokio::sync::OnceCell<Arc<client::Kube>>,
    /// What the last `check` found, for `apply` to act on.
    observed: Mutex<Option<observe::Observation>>,
}

fn owner_label(text: &str) -> Result<(String, String), StepError> {
    let Some((k, v)) = text.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(StepError::param(
            "owner_label",
            format!("expected `KEY=VALUE`, got `{text}`"),
        ));
    };
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl StepKind for K8sApplyKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    /// The check is a dry-run apply and reads: `plan` may show its diff.
    fn previews_in_plan(&self) -> bool {
        true
    }

    /// A literal `manifest` must hold Kubernetes objects, and a literal
    /// `owner_label` be `KEY=VALUE`: known when the workflow loads.
    fn check_literals(&self, literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        let mut problems = Vec::new();
        if let Some(m) = literals.get("manifest") {
            let item = match m {
                Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                    manifest::parse(v, &format!("item {}", i + 1))
                        .err()
                        .map(|e| LiteralProblem::new("manifest", e).within(ValuePath::Index(i)))
                }),
                _ => None,
            };
            problems.extend(item.or_else(|| {
                manifest::parse(m, "the manifest")
                    .err()
                    .map(|e| LiteralProblem::new("manifest", e))
            }));
        }
        if let Some(Value::String(text)) = literals.get("owner_label") {
            if let Err(e) = owner_label(text) {
                problems.push(LiteralProblem::new("owner_label", e.message));
            }
        }
        problems
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let objects = match (p.get("manifest"), p.opt_str("src")?) {
            (Some(m), None) => manifest::parse(m, "manifest").map_err(|e| StepError::param("manifest", e))?,
            (None, Some(src)) => {
                let path = cx.workflow_path(&src);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| StepError::param("src", format!("cannot read `{}`: {e}", path.display())))?;
                let rendered = cx.render(&src, &text).map_err(|e| StepError::param("src", e.message))?;
                manifest::parse(&Value::String(rendered), &format!("{src} (rendered)"))
                    .map_err(|e| StepError::param("src", e))?
            }
            _ => return Err(StepError::failed("give exactly one of `manifest` and `src`")),
        };
        let kubeconfig = p
            .opt_str("kubeconfig")?
            .filter(|s| !s.is_empty())
            .map(|f| cx.workflow_path(&f));
        let context = p.opt_str("context")?.filter(|s| !s.is_empty());
        let resolved = kubeconfig::load(kubeconfig.as_deref(), context.as_deref()).map_err(StepError::failed)?;
        let default_ns = p
            .opt_str("namespace")?
            .filter(|s| !s.is_empty())
            .or_else(|| resolved.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let prune = p.bool_or("prune", false)?;
        let owner = p
            .opt_str("owner_label")?
            .filter(|s| !s.is_empty())
            .map(|t| owner_label(&t))
            .transpose()?;
        if prune && owner.is_none() {
            return Err(StepError::param(
                "prune",
                "needs `owner_label` (`KEY=VALUE`): the label by which the step finds what it owns",
            ));
        }
        if let Some((k, v)) = &owner {
            if let Some(o) = objects
                .iter()
                .find(|o| o.body["metadata"]["labels"][k.as_str()].as_str() != Some(v.as_str()))
            {
                return Err(StepError::param(
                    "owner_label",
                    format!(
                        "every rendered object must carry the label `{k}: {v}`; {} does not",
                        o.label()
                    ),
                ));
            }
        }
        Ok(Box::new(K8sApply {
            objects,
            resolved: Arc::new(resolved),
            default_ns,
            field_manager: p.str_or("field_manager", "flowrun")?,
            force: p.bool_or("force_conflicts", false)?,
            wait: p.bool_or("wait", false)?,
            wait_timeout: p.opt_duration("wait_timeout")?.unwrap_or(DEFAULT_WAIT),
            prune,
            owner_label: owner,
            check_refs: p.bool_or("check_references", true)?,
            absent: p.choice("state", STATES, "present")? == "absent",
            kube: tokio::sync::OnceCell::new(),
            observed: Mutex::new(None),
        }))
    }
}

impl K8sApply {
    async fn kube(&self) -> Result<Arc<client::Kube>, StepError> {
        self.kube
            .get_or_try_init(|| async {
                client::Kube::connect(self.resolved.clone())
                    .await
                    .map(Arc::new)
                    .map_err(|e| StepError::failed(format!("connecting to {}: {e}", self.resolved.server)))
            })
            .await
            .cloned()
    }

    fn base_outputs(&self) -> Outputs {
        let mut o = Outputs::new();
        o.insert("server".into(), json!(self.resolved.server));
        o.insert("context".into(), json!(self.resolved.context));
        o.insert("namespace".into(), json!(self.default_ns));
        o.insert("objects".into(), json!([]));
        o.insert("pruned".into(), json!([]));
        o.insert("deleted".into(), json!([]));
        o
    }
}

/// One object in the outputs.
fn summary(obj: &Value, changed: bool) -> Value {
    let m = &obj["metadata"];
    json!({
        "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": m["name"],
        "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"],
        "generation": m["generation"], "changed": changed,
    })
}

#[async_trait::async_trait]
impl Step for K8sApply {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let kube = self.kube().await?;
        let obs = observe::observe(self, &kube, &previous_objects(cx))
            .await
            .map_err(StepError::failed)?;
        let result = obs.to_check(self);
        *self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(obs);
        Ok(result)
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let kube = self.kube().await?;
        let taken = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let obs = match taken {
            Some(o) => o,
            None => observe::observe(self, &kube, &previous_objects(cx))
                .await
                .map_err(StepError::failed)?,
        };
        act::act(self, &kube, obs).await.map_err(StepError::failed)
    }

    fn fingerprint_extra(&self) -> Option<String> {
        Some(format!(
            "server={} namespace={} objects={}",
            self.resolved.server,
            self.default_ns,
            manifest::canonical(&self.objects)
        ))
    }
}

/// The objects the journal says this instance applied last time (prune looks at their kinds too).
fn previous_objects(cx: &StepContext) -> Vec<Value> {
    cx.previous
        .as_ref()
        .and_then(|o| o.get("objects"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Run `f` over `items` with at most `limit` at once; results in input order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let fut = f(item);
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    out.into_iter().flatten().collect()
}
