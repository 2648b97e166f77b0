//! `command`: run a program (`argv`) or a shell script (`shell`) on the
//! target. A command cannot be checked, so it runs — and counts as changed —
//! every time, unless a guard says it is not needed: `creates` (a path that
//! exists), `removes` (a path that is absent) or `unless` (a read-only check
//! command that succeeds).

use crate::params::Params;
use crate::status::Codes;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, LiteralProblem, Outputs, ParamSpec, ParamType, Pending, Step, StepContext,
    StepError, StepKind,
};
use flowrun_engine::transport::{quote, ExecOutput, ExecRequest, Program};
use serde_json::{Map, Value};

pub struct CommandKind;

static INFO: KindInfo = KindInfo {
    name: "command",
    version: 1,
    doc: "Run a command on the target; changed whenever it runs, unless a guard (`creates`, `removes`, `unless`) \
          says it is not needed",
    params: &[
        ParamSpec::opt(
            "argv",
            ParamType::StrList,
            "program and arguments, run without a shell (e.g. [systemctl, daemon-reload]); no secrets: pass those in `env` or `stdin`",
        )
        .no_secrets(),
        ParamSpec::opt(
            "shell",
            ParamType::Str,
            "a script run with `sh -c` (pipes, redirections, `&&`)",
        ),
        ParamSpec::opt(
            "creates",
            ParamType::Str,
            "a path on the target: when it exists, the command does not run",
        ),
        ParamSpec::opt(
            "removes",
            ParamType::Str,
            "a path on the target: when it is absent, the command does not run",
        ),
        ParamSpec::opt(
            "unless",
            ParamType::Str,
            "a read-only shell command: when it exits 0, the command does not run (it also runs with --check)",
        ),
        ParamSpec::opt(
            "chdir",
            ParamType::Str,
            "directory to run in (also for `unless`, and the base of relative `creates`/`removes`)",
        ),
        ParamSpec::opt("env", ParamType::Map, "environment variables to set, NAME: value"),
        ParamSpec::opt(
            "stdin",
            ParamType::Str,
            "text fed to the command's standard input (the place for secrets, never argv)",
        ),
        ParamSpec::opt(
            "expect_rc",
            ParamType::Any,
            "exit codes that mean success: an integer or a list (default 0)",
        ),
    ],
    one_of: &[&["argv", "shell"]],
    outputs: &["rc", "stdout", "stderr"],
    secret_outputs: &[],
    journal: true,
};

impl StepKind for CommandKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    /// A literal `expect_rc` must give codes: known when the workflow loads.
    fn check_literals(&self, literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        Codes::check_literal(literals, "expect_rc").into_iter().collect()
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let program = match (p.has("argv"), p.opt_str("shell")?) {
            (true, None) => {
                let argv = p.str_list("argv")?;
                if argv.first().is_none_or(String::is_empty) {
                    return Err(StepError::param("argv", "expected a program name, got an empty list"));
                }
                Program::Argv(argv)
            }
            (false, Some(script)) => Program::Shell(script),
            _ => return Err(StepError::failed("give exactly one of `argv` and `shell`")),
        };
        let chdir = p.opt_str("chdir")?;
        let guard_path = |name: &str| -> Result<Option<String>, StepError> {
            Ok(p.opt_str(name)?.map(|path| match &chdir {
                Some(dir) if !path.starts_with('/') => format!("{}/{path}", dir.trim_end_matches('/')),
                _ => path,
            }))
        };
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
        Ok(Box::new(CommandStep {
            program,
            creates: guard_path("creates")?,
            removes: guard_path("removes")?,
            unless: p.opt_str("unless")?,
            chdir,
            env,
            stdin: p.opt_str("stdin")?,
            expect_rc: Codes::from_param(&p, "expect_rc")?.unwrap_or_else(|| Codes::single(0)),
        }))
    }
}

struct CommandStep {
    program: Program,
    creates: Option<String>,
    removes: Option<String>,
    unless: Option<String>,
    chdir: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    expect_rc: Codes,
}

impl CommandStep {
    fn request(&self, program: Program) -> ExecRequest {
        let mut req = match program {
            Program::Argv(argv) => ExecRequest::argv(argv),
            Program::Shell(script) => ExecRequest::shell(script),
        };
        req.env.clone_from(&self.env);
        req.chdir.clone_from(&self.chdir);
        req
    }

    /// The command as one line, for messages.
    fn display(&self) -> String {
        match &self.program {
            Program::Argv(argv) => argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            Program::Shell(script) => script.clone(),
        }
    }

    /// Why the command need not run, if a guard says so.
    async fn guard(&self, cx: &StepContext) -> Result<Option<String>, StepError> {
        if let Some(path) = &self.creates {
            if cx.metadata(path).await?.is_some() {
                return Ok(Some(format!("`{path}` exists")));
            }
        }
        if let Some(path) = &self.removes {
            if cx.metadata(path).await?.is_none() {
                return Ok(Some(format!("`{path}` does not exist")));
            }
        }
        if let Some(script) = &self.unless {
            if cx.exec(self.request(Program::Shell(script.clone()))).await?.rc == 0 {
                return Ok(Some("the `unless` command succeeded".into()));
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Step for CommandStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        if self.guard(cx).await?.is_some() {
            let mut outputs = Outputs::new();
            outputs.insert("rc".into(), Value::Null);
            outputs.insert("stdout".into(), Value::from(""));
            outputs.insert("stderr".into(), Value::from(""));
            return Ok(Check::InSync(outputs));
        }
        let shown = one_line(&cx.masker.mask(&self.display()), 100);
        Ok(Check::Drift(Pending::new(format!("run `{shown}`"))))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let mut req = self.request(self.program.clone());
        req.stdin = self.stdin.as_ref().map(|s| s.as_bytes().to_vec());
        let out = cx.exec(req).await?;
        if !self.expect_rc.contains(i64::from(out.rc)) {
            return Err(StepError::failed(cx.masker.mask(&self.failure(&out)).into_owned()));
        }
        let mut outputs = Outputs::new();
        outputs.insert("rc".into(), Value::from(out.rc));
        outputs.insert("stdout".into(), Value::from(trim_newline(out.stdout_str())));
        outputs.insert("stderr".into(), Value::from(trim_newline(out.stderr_str())));
        Ok(Applied::changed(outputs))
    }
}

impl CommandStep {
    /// What ran, its status and the tail of stderr (of stdout when stderr is empty).
    fn failure(&self, out: &ExecOutput) -> String {
        let mut shown = out.clone();
        if out.stderr.iter().all(u8::is_ascii_whitespace) {
            shown.stderr.clone_from(&out.stdout);
        }
        let mut msg = shown.failure_message(&self.display());
        if self.expect_rc != Codes::single(0) {
            msg.push_str(&format!(" (expected exit status {})", self.expect_rc));
        }
        msg
    }
}

/// Remove one trailing newline, as shells do with `$(...)`.
fn trim_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The first line of `s`, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    let more = first.len() < s.trim_end().len();
    if first.chars().count() > max {
        format!("{}...", first.chars().take(max - 3).collect::<String>())
    } else if more {
        format!("{first} ...")
    } else {
        first.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_idempotent, build, converge, local_context};
    use serde_json::json;
    use std::path::Path;

    fn step(params: Value, dir: &Path) -> Box<dyn Step> {
        build(&CommandKind, params, json!({}), dir).unwrap()
    }

    #[tokio::test]
    async fn runs_and_reports_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(json!({"argv": ["sh", "-c", "echo out; echo err >&2"]}), dir.path());
        let cx = local_context();
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("an unguarded command always drifts")
        };
        assert_eq!(p.summary, "run `sh -c 'echo out; echo err >&2'`");
        let a = converge(s.as_ref(), &cx).await.unwrap();
        assert!(a.changed);
        assert_eq!(a.outputs["rc"], json!(0));
        assert_eq!(a.outputs["stdout"], json!("out"));
        assert_eq!(a.outputs["stderr"], json!("err"));
    }

    #[tokio::test]
    async fn shell_with_chdir_env_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let s = step(
            json!({"shell": "printf '%s|%s|' \"$(pwd)\" \"$GREETING\"; cat", "chdir": d,
                   "env": {"GREETING": "hi", "N": 3}, "stdin": "from stdin\n\n"}),
            dir.path(),
        );
        let a = converge(s.as_ref(), &local_context()).await.unwrap();
        // Only one trailing newline is trimmed.
        assert_eq!(a.outputs["stdout"], json!(format!("{d}|hi|from stdin\n")));
    }

    #[tokio::test]
    async fn creates_guard_prevents_running() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let side = dir.path().join("side");
        std::fs::write(&marker, "").unwrap();
        let s = step(
            json!({"shell": format!("echo ran >> {}", side.display()), "creates": marker}),
            dir.path(),
        );
        let cx = local_context();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::InSync(_)));
        let a = converge(s.as_ref(), &cx).await.unwrap();
        assert!(!a.changed);
        assert!(!side.exists(), "the guarded command ran");
    }

    #[tokio::test]
    async fn creates_is_idempotent_and_relative_to_chdir() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(
            json!({"shell": "touch made; echo x >> count", "creates": "made", "chdir": dir.path()}),
            dir.path(),
        );
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert_eq!(std::fs::read_to_string(dir.path().join("count")).unwrap(), "x\n");
    }

    #[tokio::test]
    async fn removes_and_unless_guards() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let cx = local_context();
        let s = step(json!({"argv": ["false"], "removes": gone}), dir.path());
        assert!(matches!(s.check(&cx).await.unwrap(), Check::InSync(_)));
        std::fs::write(&gone, "").unwrap();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::Drift(_)));

        let s = step(
            json!({"argv": ["false"], "unless": "test -e present", "chdir": dir.path()}),
            dir.path(),
        );
        assert!(matches!(s.check(&cx).await.unwrap(), Check::Drift(_)));
        std::fs::write(dir.path().join("present"), "").unwrap();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::InSync(_)));
    }

    #[tokio::test]
    async fn wrong_exit_status_fails_with_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cx = local_context();
        let s = step(json!({"shell": "echo first >&2; echo boom >&2; exit 3"}), dir.path());
        let e = converge(s.as_ref(), &cx).await.unwrap_err();
        assert!(
            e.message.contains("exited with status 3") && e.message.ends_with("first\nboom"),
            "{e}"
        );

        let s = step(json!({"shell": "echo only-stdout; exit 2"}), dir.path());
        let e = converge(s.as_ref(), &cx).await.unwrap_err();
        assert!(e.message.ends_with("status 2: only-stdout"), "{e}");

        cx.add_secret("cmd-secret-value-9");
        let s = step(
            json!({"shell": "echo cmd-secret-value-9 rejected >&2; exit 1"}),
            dir.path(),
        );
        let e = converge(s.as_ref(), &cx).await.unwrap_err();
        assert!(
            !e.message.contains("cmd-secret-value-9") && e.message.ends_with("**** rejected"),
            "{e}"
        );

        let s = step(json!({"shell": "exit 2", "expect_rc": [0, 2]}), dir.path());
        assert_eq!(converge(s.as_ref(), &cx).await.unwrap().outputs["rc"], json!(2));
        let s = step(json!({"shell": "exit 1", "expect_rc": [0, 2]}), dir.path());
        let e = converge(s.as_ref(), &cx).await.unwrap_err();
        assert!(e.message.ends_with("(expected exit status 0 or 2)"), "{e}");
    }

    #[tokio::test]
    async fn invalid_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let e = |v| build(&CommandKind, v, json!({}), dir.path()).err().unwrap().message;
        assert!(e(json!({"argv": []})).contains("parameter `argv`"));
        assert!(e(json!({"argv": ["a"], "shell": "b"})).contains("exactly one of `argv` and `shell`"));
        assert!(e(json!({"shell": "b", "expect_rc": "zero"})).contains("parameter `expect_rc`"));
        assert!(e(json!({"shell": "b", "env": {"A": [1]}})).contains("parameter `env`: `A`"));
        let s = step(json!({"argv": ["/nonexistent/prog"]}), dir.path());
        let e = converge(s.as_ref(), &local_context()).await.unwrap_err();
        assert!(e.message.contains("/nonexistent/prog"), "{e}");
    }

    #[test]
    fn one_line_cuts() {
        assert_eq!(one_line("a\nb", 10), "a ...");
        assert_eq!(one_line("abcdefghijkl", 8), "abcde...");
    }
}
