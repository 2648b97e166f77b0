//! `plan` cannot disagree with `run`: the set of instances `flowrun plan`
//! says a run would take from the journal is the set the run takes.
//!
//! The check ([`Check`]) wraps one `flowrun run`: before it, `flowrun plan
//! --output json` with the run's own arguments and environment; after it,
//! the run's record from the journal (`history`, `show --output json`).
//! The tests below check it for a workflow that has every kind of
//! prediction, and for the lab's shipped workflows (as root);
//! [`run_checked`] wraps any other run the same way.
//!
//! What is compared, instance by instance (step, host, item):
//! - an instance the run took from the journal was predicted to come from it;
//! - an instance predicted to come from the journal did, unless a node it
//!   needs changed in this run (plan says so: `unless_changed`) or the run
//!   failed (a failure blocks what plan cannot foresee).
//!
//! Nodes whose parameters depend on outputs only running can give are
//! "decided at run time": plan claims nothing for them. Runs with
//! `--tags`/`--skip-tags`, `--check` or `--wait-lock` are not compared (plan
//! does not model tag selection; a check run leaves no record; a queued run
//! starts after others changed the journal).

use crate::harness::Sandbox;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A `flowrun` invocation as a [`Command`] holds it.
#[derive(Debug, Clone)]
struct Invocation {
    program: OsString,
    envs: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
}

impl Invocation {
    fn of(cmd: &Command) -> Self {
        Self {
            program: cmd.get_program().to_owned(),
            envs: cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(OsStr::to_owned)))
                .collect(),
            cwd: cmd.get_current_dir().map(PathBuf::from),
        }
    }

    /// `flowrun ARGS` in the same directory and environment.
    fn output(&self, args: &[OsString]) -> Output {
        let mut c = Command::new(&self.program);
        c.args(args).stdin(Stdio::null());
        for (k, v) in &self.envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.output().expect("run flowrun")
    }

    fn json(&self, args: &[OsString]) -> Result<Value, String> {
        let out = self.output(args);
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "`flowrun {}` gave no JSON ({e}), exit {:?}:\n{}\n{}",
                args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The arguments of a `run`, sorted by what `plan` can take.
struct RunArgs {
    /// What `plan` takes: the workflow, `-i`, `-e`, `--limit`, the journal.
    plan: Vec<OsString>,
    /// The journal options alone (for `history` and `show`).
    journal: Vec<OsString>,
    /// `--force` or `--verify`: nothing comes from the journal.
    ignores_journal: bool,
}

/// Options of `run` that `plan` takes too (with a value).
const SHARED: &[&str] = &[
    "-i",
    "--inventory",
    "-e",
    "--extra-var",
    "--limit",
    "--journal",
    "--journal-key",
];
/// Options of `run` alone that do not change what comes from the journal.
const RUN_ONLY_VALUE: &[&str] = &["--forks", "--output", "--junit", "--metrics"];
const RUN_ONLY_FLAG: &[&str] = &["--diff", "-v", "-q", "--verbose", "--quiet"];

impl RunArgs {
    /// `Ok(None)` when the invocation is not a run this check compares.
    fn parse(args: &[OsString]) -> Result<Option<Self>, String> {
        let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        if words.first().map(String::as_str) != Some("run") {
            return Ok(None);
        }
        let mut out = RunArgs {
            plan: vec!["plan".into()],
            journal: Vec::new(),
            ignores_journal: false,
        };
        let mut workflow = false;
        let mut i = 1;
        while i < words.len() {
            let w = words[i].as_str();
            let (name, inline) = match w.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
                _ => (w, None),
            };
            let value = |i: &mut usize| -> Option<String> {
                inline.clone().or_else(|| {
                    *i += 1;
                    words.get(*i).cloned()
                })
            };
            if SHARED.contains(&name) {
                let v = value(&mut i).ok_or("an option without its value")?;
                out.plan.extend([name.into(), v.clone().into()]);
                if name.starts_with("--journal") {
                    out.journal.extend([name.into(), v.into()]);
                }
            } else if RUN_ONLY_VALUE.contains(&name) {
                value(&mut i);
            } else if RUN_ONLY_FLAG.contains(&name) {
            } else if name == "--force" || name == "--verify" {
                out.ignores_journal = true;
            } else if name.starts_with('-') || workflow {
                // --tags, --skip-tags, --check, --wait-lock, or what this check does not know.
                return Ok(None);
            } else {
                workflow = true;
                out.plan.push(w.into());
            }
            i += 1;
        }
        Ok(workflow.then_some(out))
    }
}

/// One instance's identity: (step, host, item label).
type Key = (String, String, Option<String>);

/// A run about to start, with what `plan` predicted for it.
pub struct Check {
    invocation: Invocation,
    args: RunArgs,
    plan: Value,
}

impl Check {
    /// Ask `plan` about the run `cmd` is about to make; `None` when `cmd`
    /// is not a run this check compares, or `plan` cannot say (the
    /// workflow does not load, say: the run will fail the same way).
    pub fn before(cmd: &Command) -> Option<Self> {
        let args: Vec<OsString> = cmd.get_args().map(OsStr::to_owned).collect();
        let args = RunArgs::parse(&args).ok()??;
        let invocation = Invocation::of(cmd);
        let mut plan_args = args.plan.clone();
        plan_args.extend(["--output".into(), "json".into()]);
        let out = invocation.output(&plan_args);
        if !matches!(out.status.code(), Some(0 | 1)) {
            return None;
        }
        let plan = serde_json::from_slice(&out.stdout).ok()?;
        Some(Self { invocation, args, plan })
    }

    /// Compare with the run that just ended with `code`, made by process
    /// `pid`. `Ok(n)`: they agree, `n` instances came from the journal.
    pub fn after(self, code: i32, pid: u32) -> Result<usize, String> {
        if !matches!(code, 0 | 1) {
            return Ok(0);
        }
        let Some(run) = self.run_record(pid)? else {
            return Ok(0);
        };
        let actual = instances(&run);
        let taken: HashSet<&Key> = actual.iter().filter(|(_, (_, j))| *j).map(|(k, _)| k).collect();
        if self.args.ignores_journal {
            return match taken.iter().next() {
                None => Ok(0),
                Some(k) => Err(format!("a --force/--verify run took {k:?} from the journal")),
            };
        }
        if self.plan["predicted"] != Value::Bool(true) {
            // No journal yet (or no secrets): nothing can come from it.
            return match taken.iter().next() {
                None => Ok(0),
                Some(k) => Err(self.explain(
                    &run,
                    &format!("plan predicted nothing, yet the run took {k:?} from the journal"),
                )),
            };
        }
        let mut problems = Vec::new();
        let predicted = self.predicted();
        for k in &taken {
            if predicted.get(*k) != Some(&Some(true)) && !self.decided_at_run_time(k) {
                problems.push(format!("the run took {k:?} from the journal; plan said it would run"));
            }
        }
        if code == 0 {
            for (node, k) in self.predicted_from_journal() {
                if self.a_need_changed(node, &actual) {
                    continue;
                }
                if !taken.contains(&k) {
                    let got = actual.get(&k).map(|(s, _)| s.as_str()).unwrap_or("no result");
                    problems.push(format!("plan said {k:?} comes from the journal; the run gave `{got}`"));
                }
            }
        }
        if problems.is_empty() {
            Ok(taken.len())
        } else {
            Err(self.explain(&run, &problems.join("\n")))
        }
    }

    /// The run's record, when the journal's latest run of the workflow is
    /// the one process `pid` made.
    fn run_record(&self, pid: u32) -> Result<Option<Value>, String> {
        let workflow = self.plan["workflow"].as_str().unwrap_or_default();
        let mut args: Vec<OsString> = ["history", "--workflow", workflow, "--limit", "1", "--output", "json"]
            .map(OsString::from)
            .into();
        args.extend(self.args.journal.iter().cloned());
        let history = self.invocation.json(&args)?;
        let Some(latest) = history["runs"].get(0) else {
            return Ok(None);
        };
        if latest["pid"].as_u64() != Some(u64::from(pid)) {
            return Ok(None);
        }
        let mut args: Vec<OsString> = [
            "show",
            latest["run_id"].as_str().unwrap_or_default(),
            "--output",
            "json",
        ]
        .map(OsString::from)
        .into();
        args.extend(self.args.journal.iter().cloned());
        self.invocation.json(&args).map(Some)
    }

    /// Per instance: `Some(from_journal)` as plan predicted it; the nodes plan
    /// cannot decide are left out.
    fn predicted(&self) -> HashMap<Key, Option<bool>> {
        let mut out = HashMap::new();
        for node in self.plan["nodes"].as_array().into_iter().flatten() {
            let (step, host) = node_key(node);
            for i in node["instances"].as_array().into_iter().flatten() {
                let item = i["item"].as_str().map(str::to_owned);
                out.insert((step.clone(), host.clone(), item), i["from_journal"].as_bool());
            }
        }
        out
    }

    fn decided_at_run_time(&self, k: &Key) -> bool {
        self.plan["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| node_key(n) == (k.0.clone(), k.1.clone()))
            .is_none_or(|n| matches!(n["prediction"].as_str(), Some("unknown" | "on_failure") | None))
    }

    /// (node index, instance) of every instance predicted from the journal.
    fn predicted_from_journal(&self) -> Vec<(usize, Key)> {
        let mut out = Vec::new();
        for (index, node) in self.plan["nodes"].as_array().into_iter().flatten().enumerate() {
            let (step, host) = node_key(node);
            for i in node["instances"].as_array().into_iter().flatten() {
                if i["from_journal"] == Value::Bool(true) {
                    out.push((
                        index,
                        (step.clone(), host.clone(), i["item"].as_str().map(str::to_owned)),
                    ));
                }
            }
        }
        out
    }

    /// Whether one of the nodes `node` needs changed in the run (then it runs again).
    fn a_need_changed(&self, node: usize, actual: &HashMap<Key, (String, bool)>) -> bool {
        let nodes = self.plan["nodes"].as_array().cloned().unwrap_or_default();
        nodes[node]["needs"].as_array().into_iter().flatten().any(|d| {
            let Some(dep) = d.as_u64().and_then(|d| nodes.get(usize::try_from(d).ok()?)) else {
                return true;
            };
            let (step, host) = node_key(dep);
            actual
                .iter()
                .any(|((s, h, _), (status, _))| *s == step && *h == host && status == "changed")
        })
    }

    fn explain(&self, run: &Value, problem: &str) -> String {
        let lines: Vec<String> = run["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "  {} {} {} {}{}",
                    s["status"].as_str().unwrap_or(""),
                    s["host"].as_str().unwrap_or(""),
                    s["id"].as_str().unwrap_or(""),
                    s["item"].as_str().unwrap_or(""),
                    if s["from_journal"] == Value::Bool(true) {
                        " (journal)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let plan: Vec<String> = self.plan["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "  {} on {}: {} {} unless {}",
                    n["step"].as_str().unwrap_or(""),
                    n["host"].as_str().unwrap_or(""),
                    n["prediction"],
                    n["instances"],
                    n["unless_changed"]
                )
            })
            .collect();
        format!(
            "plan and run disagree:\n{problem}\n--- plan\n{}\n--- run\n{}",
            plan.join("\n"),
            lines.join("\n")
        )
    }
}

fn node_key(node: &Value) -> (String, String) {
    (
        node["step"].as_str().unwrap_or_default().to_owned(),
        node["host"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The run's step instances (handlers aside): status, and whether from the journal.
fn instances(run: &Value) -> HashMap<Key, (String, bool)> {
    let mut out: HashMap<Key, (String, bool)> = HashMap::new();
    for s in run["steps"].as_array().into_iter().flatten() {
        if s["handler"] == Value::Bool(true) {
            continue;
        }
        let key = (
            s["id"].as_str().unwrap_or_default().to_owned(),
            s["host"].as_str().unwrap_or_default().to_owned(),
            s["item"].as_str().map(str::to_owned),
        );
        let status = s["status"].as_str().unwrap_or_default().to_owned();
        let from_journal = s["from_journal"] == Value::Bool(true);
        let e = out.entry(key).or_insert((status.clone(), from_journal));
        if status == "changed" {
            e.0 = status;
        }
        e.1 |= from_journal;
    }
    out
}

/// Run `cmd` (a `flowrun run`) under the check; the run's output, and what
/// the check found (`Ok(n)`: agreement, with `n` instances from the journal).
pub fn run_checked(mut cmd: Command) -> (Output, Result<usize, String>) {
    let check = Check::before(&cmd);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowrun");
    let pid = child.id();
    let out = child.wait_with_output().expect("run flowrun");
    let verdict = match check {
        Some(c) => c.after(out.status.code().unwrap_or(-1), pid),
        None => Ok(0),
    };
    (out, verdict)
}

/// Every kind of prediction, on three local hosts: from the journal, a
/// changed parameter (`-e`), `journal: false`, a need that changes, `when`
/// false, `for_each` items (one of them changed), outputs restored into
/// later templates, a step on other hosts, a handler.
const EVERY_PREDICTION: &str = r#"
    name: every-prediction
    vars: { colour: blue, names: [a, b, c] }
    steps:
      - id: base
        hosts: all
        uses: command
        with: { argv: [echo, "base {{inventory_hostname}}"] }
      - id: per-item
        hosts: all
        uses: copy
        needs: [base]
        for_each: "{{json names}}"
        with: { dest: "$DIR/out/{{inventory_hostname}}-{{item}}", content: "{{item}} {{#if (eq item \"c\")}}{{colour}}{{/if}}" }
      - id: probe
        hosts: n1
        uses: command
        journal: false
        with: { argv: [echo, probe] }
      - id: after-probe
        hosts: n1
        uses: copy
        needs: [probe]
        with: { dest: "$DIR/out/after-probe", content: "{{steps.probe.outputs.stdout}}" }
      - id: never
        hosts: all
        uses: command
        when: "{{eq colour \"never\"}}"
        with: { argv: [echo, never] }
      - id: outputs
        hosts: n2
        uses: copy
        needs: [base]
        with: { dest: "$DIR/out/outputs", content: "{{steps.base.outputs.stdout}} {{colour}}" }
        notify: [told]
      - id: on-localhost
        uses: copy
        needs: [base]
        with: { dest: "$DIR/out/local", content: "{{steps.base.outputs.stdout}}" }
    handlers:
      - id: told
        uses: command
        with: { argv: [echo, told] }
"#;

const THREE_HOSTS: &str = "
    all:
      hosts:
        n1: { connection: local }
        n2: { connection: local }
        n3: { connection: local }
";

fn every_prediction() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("wf.yml", EVERY_PREDICTION);
    sb.write("hosts.yml", THREE_HOSTS);
    std::fs::create_dir_all(sb.path("out")).unwrap();
    sb
}

fn checked(sb: &Sandbox, args: &[&str]) -> usize {
    let (out, verdict) = run_checked(sb.cmd(args).cmd);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    verdict.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn plan_predicts_what_every_run_takes_from_the_journal() {
    let sb = every_prediction();
    let run = ["run", "wf.yml", "-i", "hosts.yml"];
    assert_eq!(checked(&sb, &run), 0, "a first run takes nothing from the journal");
    // Again: all but what always runs, and what needs it, comes from the journal.
    let again = checked(&sb, &run);
    assert!(again >= 12, "{again} instances from the journal");
    // A changed variable: one item per host and the step that prints it run again.
    let changed = checked(&sb, &["run", "wf.yml", "-i", "hosts.yml", "-e", "colour=red"]);
    assert!(changed > 0 && changed < again, "{changed} of {again}");
    // Fewer hosts, and then a forced run: nothing from the journal.
    assert!(
        checked(
            &sb,
            &["run", "wf.yml", "-i", "hosts.yml", "--limit", "n1", "-e", "colour=red"]
        ) > 0
    );
    assert_eq!(checked(&sb, &["run", "wf.yml", "-i", "hosts.yml", "--force"]), 0);
}

/// The check can fail: a plan made for one run (`colour=blue`) and a run
/// that differs from it (`colour=red`) disagree, and the check says where.
#[test]
fn the_check_catches_a_plan_that_disagrees_with_the_run() {
    let sb = every_prediction();
    checked(&sb, &["run", "wf.yml", "-i", "hosts.yml"]);
    let check = Check::before(&sb.cmd(&["run", "wf.yml", "-i", "hosts.yml"]).cmd).expect("a plan");
    let child = sb
        .cmd(&["run", "wf.yml", "-i", "hosts.yml", "-e", "colour=red"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let e = check.after(out.status.code().unwrap(), pid).unwrap_err();
    assert!(
        e.contains("plan said (\"per-item\", \"n1\", Some(\"c\")) comes from the journal; the run gave `changed`"),
        "{e}"
    );
    assert!(e.contains("(\"outputs\", \"n2\", None)"), "{e}");
    // A plan made with no journal yet, and a run that finds one in its place.
    let moved = sb.path("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let journal = moved.join("journal.db").display().to_string();
    let args = ["run", "wf.yml", "-i", "hosts.yml", "--journal", journal.as_str()];
    let before = Check::before(&sb.cmd(&args).cmd).expect("a plan");
    for e in std::fs::read_dir(sb.dir.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("journal") {
            std::fs::copy(e.path(), moved.join(e.file_name())).unwrap();
        }
    }
    let child = sb.cmd(&args).cmd.stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let code = child.wait_with_output().unwrap().status.code().unwrap();
    let e = before.after(code, pid).unwrap_err();
    assert!(e.contains("plan predicted nothing, yet the run took"), "{e}");
}

#[test]
fn run_arguments_are_sorted_for_plan() {
    let a = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
    let r = RunArgs::parse(&a(
        "run wf.yml -i h.yml -e x=1 --limit web --forks 3 --output json --diff",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(r.plan, a("plan wf.yml -i h.yml -e x=1 --limit web"));
    assert!(!r.ignores_journal);
    let r = RunArgs::parse(&a("run --journal=j.db wf.yml --force"))
        .unwrap()
        .unwrap();
    assert_eq!(r.plan, a("plan --journal j.db wf.yml"));
    assert_eq!(r.journal, a("--journal j.db"));
    assert!(r.ignores_journal);
    for not_compared in [
        "run wf.yml --tags x",
        "run wf.yml --check",
        "run wf.yml --wait-lock 5s",
        "plan wf.yml",
    ] {
        assert!(RunArgs::parse(&a(not_compared)).unwrap().is_none(), "{not_compared}");
    }
}

/// The lab's shipped GitLab runner workflows: each run once, then again,
/// every run checked (root only: the lab needs mount namespaces).
#[test]
fn the_shipped_workflows_in_the_lab() {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return;
    }
    let _one = crate::lifecycle::GITLAB_LAB_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = crate::lifecycle::start_lab(dir.path());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_flowrun"));
    let wf = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("workflows")
            .join(format!("{name}.yml"))
            .display()
            .to_string()
    };
    let mut from_journal = 0;
    for name in ["provision-gitlab-runner", "validate-gitlab-runner"] {
        let file = wf(name);
        for round in 0..2 {
            let (out, verdict) = run_checked(lab.flowrun(bin, &["run", &file]));
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{name} round {round}:\n{text}");
            from_journal += verdict.unwrap_or_else(|e| panic!("{name} round {round}: {e}"));
            if name == "provision-gitlab-runner" && round == 0 {
                lab.write_runner_addresses().unwrap();
            }
        }
    }
    assert!(from_journal > 10, "{from_journal} instances from the journal");
}

/// The GitHub lab's shipped workflows (provision, validate, select, then a
/// deploy through the gate): each run once, then again, every run checked
/// (root only: the lab needs mount namespaces). Plan resolves the secrets
/// too, so the token's `command:` source runs once more per run; nothing
/// here counts those.
#[test]
fn the_shipped_github_workflows_in_the_lab() {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return;
    }
    use crate::github_runners::{assert_no_secret, start_lab, wf, LAB_LOCK};
    let _one = LAB_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_flowrun"));
    let metrics = format!(
        "github_metrics_file={}",
        dir.path().join("github-runners.prom").display()
    );
    let runs: [(&str, &[&str]); 4] = [
        ("provision-github-runner", &[]),
        ("validate-github-runner", &["-e", &metrics]),
        ("select-github-runner", &[]),
        ("deploy-with-failover", &["-e", "version=1.0.0"]),
    ];
    let mut from_journal = 0;
    for (name, extra) in runs {
        let file = wf(name);
        let mut args = vec!["run", file.as_str()];
        args.extend_from_slice(extra);
        for round in 0..2 {
            let (out, verdict) = run_checked(lab.flowrun(bin, &args));
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_no_secret(&lab, &text, "the output");
            assert!(out.status.success(), "{name} round {round}:\n{text}");
            let n = verdict.unwrap_or_else(|e| panic!("{name} round {round}: {e}"));
            if round == 0 && name == "provision-github-runner" {
                assert_eq!(n, 0, "a first provision takes nothing from the journal");
            }
            from_journal += n;
        }
    }
    assert!(from_journal > 10, "{from_journal} instances from the journal");
}
