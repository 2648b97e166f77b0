//! `probe`: run a read-only shell script on a host and report what it found,
//! never failing. Health gates need facts about every candidate host,
//! including the ones that are down: a `command` on an unreachable host makes
//! the host `unreachable` and the run fail, while a gate must reject that
//! candidate and go on with the next. A probe turns "cannot connect", "timed
//! out" and a non-zero exit into outputs (`reachable: false`, `error`, `rc`)
//! that a later step judges. `KEY=VALUE` lines of its output become `values`,
//! and `facts` (rendered with the host's variables) are passed through, so a
//! step on another host (e.g. `localhost`) can read a host's variables and
//! findings together from `steps.ID.hosts`. Never journaled: facts are only
//! worth fresh.

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepErrorKind, StepKind,
};
use flowrun_engine::transport::ExecRequest;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The time limit of the script when the step sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct ProbeKind;

static INFO: KindInfo = KindInfo {
    name: "probe",
    version: 1,
    doc: "Run a read-only script on a host and report what it found (reachable, rc, stdout, KEY=VALUE \
          values); never fails, so a gate can judge hosts that are down",
    params: &[
        ParamSpec::req(
            "shell",
            ParamType::Str,
            "the script (POSIX sh); it must not change anything",
        ),
        ParamSpec::opt("env", ParamType::Map, "environment variables to set, NAME: value"),
        ParamSpec::opt(
            "facts",
            ParamType::Any,
            "values passed through to the outputs unchanged (e.g. the host's own variables)",
        ),
    ],
    one_of: &[],
    outputs: &["reachable", "rc", "stdout", "stderr", "error", "values", "facts"],
    secret_outputs: &[],
    journal: false,
};

impl StepKind for ProbeKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let mut env = Vec::new();
        for (k, v) in p.opt_map("env")?.into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                Value::Null => String::new(),
                _ => return Err(StepError::param("env", format!("`{k}`: expected a string"))),
            };
            env.push((k.clone(), v));
        }
        Ok(Box::new(Probe {
            shell: p.str("shell")?,
            env,
            facts: p.get("facts").cloned().unwrap_or(Value::Null),
        }))
    }
}

struct Probe {
    shell: String,
    env: Vec<(String, String)>,
    facts: Value,
}

/// `KEY=VALUE` lines of `text` (keys are shell-variable names).
pub fn values(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let key_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if key_ok {
            out.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    }
    out
}

impl Probe {
    fn outputs(&self, reachable: bool, rc: Value, stdout: String, stderr: String, error: Value) -> Outputs {
        let mut o = Outputs::new();
        o.insert("reachable".into(), json!(reachable));
        o.insert("rc".into(), rc);
        o.insert("values".into(), Value::Object(values(&stdout)));
        o.insert("stdout".into(), json!(stdout.trim_end()));
        o.insert("stderr".into(), json!(stderr.trim_end()));
        o.insert("error".into(), error);
        o.insert("facts".into(), self.facts.clone());
        o
    }
}

#[async_trait::async_trait]
impl Step for Probe {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let mut req = ExecRequest::shell(self.shell.clone());
        req.env.clone_from(&self.env);
        req.timeout = Some(cx.timeout.unwrap_or(DEFAULT_TIMEOUT));
        let o = match cx.exec(req).await {
            Ok(out) => {
                let error = if out.rc == 0 {
                    Value::Null
                } else {
                    json!(out.failure_message(&self.shell))
                };
                self.outputs(true, json!(out.rc), out.stdout_str(), out.stderr_str(), error)
            }
            Err(e) => {
                let reachable = e.kind != StepErrorKind::Unreachable;
                tracing::info!(host = %cx.host.name, "probe: {}", e.message);
                self.outputs(reachable, Value::Null, String::new(), String::new(), json!(e.message))
            }
        };
        Ok(Check::InSync(o))
    }

    async fn apply(&self, _cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        Err(StepError::failed("probe: nothing to apply (a probe only reads)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, local_context};
    use flowrun_engine::host::Host;
    use flowrun_engine::transport::{Transport, TransportError};
    use std::sync::Arc;

    async fn run(params: Value, cx: &StepContext) -> Outputs {
        let s = build(&ProbeKind, params, json!({}), &std::env::temp_dir()).unwrap();
        match s.check(cx).await.unwrap() {
            Check::InSync(o) => o,
            Check::Drift(p) => panic!("a probe drifted: {}", p.summary),
        }
    }

    #[tokio::test]
    async fn reports_values_rc_and_facts() {
        let o = run(
            json!({"shell": "echo service=active; echo 'free_disk=123'; echo not a value; echo \"X=$X\"; exit 3",
                   "env": {"X": 5}, "facts": {"role": "primary"}}),
            &local_context(),
        )
        .await;
        assert_eq!(o["reachable"], json!(true));
        assert_eq!(o["rc"], json!(3));
        assert_eq!(o["values"], json!({"service": "active", "free_disk": "123", "X": "5"}));
        assert_eq!(o["facts"], json!({"role": "primary"}));
        assert!(o["error"].as_str().unwrap().contains('3'), "{o:?}");
        let ok = run(json!({"shell": "true"}), &local_context()).await;
        assert_eq!(ok["error"], Value::Null);
    }

    struct Down;

    #[async_trait::async_trait]
    impl Transport for Down {
        fn kind(&self) -> &'static str {
            "down"
        }
        async fn exec(&self, _req: ExecRequest) -> Result<flowrun_engine::transport::ExecOutput, TransportError> {
            Err(TransportError::Unreachable(
                "ssh: connect to host 192.0.2.1 port 22: Connection refused".into(),
            ))
        }
    }

    #[tokio::test]
    async fn an_unreachable_host_is_a_finding_not_a_failure() {
        let cx = crate::testing::context(Arc::new(Host::localhost(Map::new())), Arc::new(Down));
        let o = run(json!({"shell": "true", "facts": {"role": "secondary"}}), &cx).await;
        assert_eq!(o["reachable"], json!(false));
        assert_eq!(o["rc"], Value::Null);
        assert!(o["error"].as_str().unwrap().contains("Connection refused"));
        assert_eq!(o["facts"], json!({"role": "secondary"}));
    }

    #[tokio::test]
    async fn a_hung_script_is_cut_by_the_timeout() {
        let mut cx = local_context();
        cx.timeout = Some(Duration::from_secs(1));
        let t0 = std::time::Instant::now();
        let o = run(json!({"shell": "sleep 30"}), &cx).await;
        assert!(t0.elapsed() < Duration::from_secs(15));
        assert_eq!(o["reachable"], json!(true));
        assert!(o["error"].is_string() || o["rc"] != json!(0), "{o:?}");
    }
}
