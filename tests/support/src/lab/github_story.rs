//! The GitHub runner story, told in the lab (`flowrun-lab github`, and
//! `sudo ./scripts/lab github`): the shipped workflows run one after the
//! other against a [`GithubLab`], and after each run the story checks what it
//! promised against real state — the emulator's runner list and requests,
//! the demo app's answer on each host, the JUnit report, the GitHub Actions
//! output file — not only exit codes. The benchmark (`github-bench`) uses
//! the same helpers.

use super::github::{GithubLab, REPO};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One run of `flowrun` in the lab.
pub struct Run {
    pub code: i32,
    /// stdout, then stderr.
    pub out: String,
    pub secs: f64,
}

impl Run {
    /// The recap counters of `host` (`ok=N changed=N ...`), if it has a recap line.
    pub fn recap(&self, host: &str) -> Option<&str> {
        self.out
            .lines()
            .find(|l| l.split(" : ").next().is_some_and(|h| h.trim() == host) && l.contains("ok="))
            .and_then(|l| l.split(" : ").nth(1))
    }
}

/// The path of a shipped workflow.
pub fn workflow(project: &Path, name: &str) -> String {
    project
        .join("workflows")
        .join(format!("{name}.yml"))
        .display()
        .to_string()
}

/// Run `flowrun ARGS -i INVENTORY` in the lab with its environment, and
/// `extra_env`; output captured.
pub fn flowrun(lab: &GithubLab, bin: &Path, args: &[&str], extra_env: &[(&str, &Path)]) -> Run {
    let mut cmd: Command = lab.flowrun(bin, args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    match cmd.output() {
        Ok(o) => Run {
            code: o.status.code().unwrap_or(-1),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            secs: t.elapsed().as_secs_f64(),
        },
        Err(e) => Run {
            code: -1,
            out: format!("cannot run {}: {e}", bin.display()),
            secs: t.elapsed().as_secs_f64(),
        },
    }
}

/// The systemd-style name of a lab runner's service (`svc.sh` names it so).
pub fn runner_service(runner: &str) -> String {
    format!("actions.runner.{}.{runner}", REPO.replace('/', "-"))
}

/// Stop or start the runner service on a lab host (by name or role).
pub fn runner_service_action(lab: &GithubLab, runner: &str, action: &str) -> Result<(), String> {
    let name = lab.runner(runner).name.clone();
    lab.run_on(runner, &format!("service {} {action}", runner_service(&name)))
        .map(|_| ())
        .map_err(|e| format!("service {action} on {name}: {e}"))
}

/// Wait (bounded) until the emulator lists `runner` (name or role) with `status`.
pub fn wait_runner_status(lab: &GithubLab, runner: &str, status: &str, limit: Duration) -> Result<f64, String> {
    let name = lab.runner(runner).name.clone();
    let t0 = Instant::now();
    loop {
        let now = lab.github.runner_by_name(&name).map(|r| r.status);
        if now.as_deref() == Some(status) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "GitHub still lists {name} as {} after {limit:?}",
                now.as_deref().unwrap_or("missing")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A bounded plain HTTP/1.0 GET on loopback: status and body.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr: std::net::SocketAddr = authority.parse().map_err(|e| format!("{authority}: {e}"))?;
    let limit = Duration::from_secs(3);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(limit)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// What the demo app on a runner host serves: its version, if it answers
/// and says it serves one complete release.
pub fn app_version(lab: &GithubLab, runner: &str) -> Result<String, String> {
    let (status, body) = http_get(&format!("{}/version", lab.app_url(runner)))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("/version: {e}: {body}"))?;
    if status != 200 || v["complete"] != serde_json::Value::Bool(true) {
        return Err(format!("/version answered {status}: {body}"));
    }
    v["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("/version has no version: {body}"))
}

/// [`app_version`], waiting (bounded) for a service that is (re)starting.
pub fn app_version_within(lab: &GithubLab, runner: &str, limit: Duration) -> Result<String, String> {
    let t0 = Instant::now();
    loop {
        match app_version(lab, runner) {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() > limit => return Err(format!("{e} (for {limit:?})")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The names of the failed testcases of a JUnit report.
pub fn junit_failures(report: &str) -> Vec<String> {
    report
        .split("<testcase")
        .skip(1)
        .filter(|t| t.contains("<failure"))
        .filter_map(|t| {
            t.split("name=\"")
                .nth(1)
                .and_then(|n| n.split('"').next())
                .map(str::to_owned)
        })
        .collect()
}

/// The SSH command line that reaches a lab runner host from a shell.
pub fn ssh_command(lab: &GithubLab, runner: &str) -> String {
    let r = lab.runner(runner);
    let hv: serde_json::Value = std::fs::read_to_string(lab.dir.join(format!("inventory/host_vars/{}.yml", r.name)))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    format!(
        "ssh -i {} -o UserKnownHostsFile={} -p {} root@{}",
        lab.dir.join("id_ed25519").display(),
        lab.dir.join("known_hosts").display(),
        hv["port"].as_u64().unwrap_or(22),
        r.ip
    )
}

/// The story's bookkeeping: each chapter's checks, printed as they are made.
pub struct Story<'a> {
    pub lab: &'a GithubLab,
    pub bin: PathBuf,
    pub project: PathBuf,
    failed: Vec<String>,
    chapter: String,
}

impl<'a> Story<'a> {
    pub fn new(lab: &'a GithubLab, bin: PathBuf, project: PathBuf) -> Self {
        Self {
            lab,
            bin,
            project,
            failed: Vec::new(),
            chapter: String::new(),
        }
    }

    /// Run a workflow as a chapter: print the command, its output (indented)
    /// and its exit status, and check the status is `want`.
    pub fn run(&mut self, title: &str, args: &[&str], extra_env: &[(&str, &Path)], want: i32) -> Run {
        self.chapter = title.to_owned();
        println!(
            "\n== {title}\n   $ flowrun {} -i {}",
            args.join(" "),
            self.lab.inventory().display()
        );
        let run = flowrun(self.lab, &self.bin, args, extra_env);
        for l in run.out.lines() {
            println!("   | {l}");
        }
        self.check(
            &format!("exit {want} (got {} in {:.2} s)", run.code, run.secs),
            if run.code == want { Ok(()) } else { Err(String::new()) },
        );
        run
    }

    /// A step of the story that is not a flowrun run (e.g. stopping a service).
    pub fn act(&mut self, title: &str, what: Result<String, String>) {
        self.chapter = title.to_owned();
        println!("\n== {title}");
        match what {
            Ok(note) => {
                if !note.is_empty() {
                    println!("   {note}");
                }
                self.check("done", Ok(()));
            }
            Err(e) => self.check("done", Err(e)),
        }
    }

    /// Record one check of the current chapter.
    pub fn check(&mut self, what: &str, r: Result<(), String>) {
        match r {
            Ok(()) => println!("   ok    {what}"),
            Err(e) => {
                let why = if e.is_empty() { String::new() } else { format!(": {e}") };
                println!("   FAIL  {what}{why}");
                self.failed.push(format!("{}: {what}{why}", self.chapter));
            }
        }
    }

    /// `want` is in the run's output.
    pub fn expect_output(&mut self, run: &Run, want: &str) {
        let r = if run.out.contains(want) {
            Ok(())
        } else {
            Err("not in the output".into())
        };
        self.check(&format!("says `{want}`"), r);
    }

    /// What failed, in order.
    pub fn failures(&self) -> &[String] {
        &self.failed
    }
}

/// Check `v` equals `want`, as a story check's result.
pub fn is<T: PartialEq + std::fmt::Debug>(v: Result<T, String>, want: T) -> Result<(), String> {
    match v {
        Ok(v) if v == want => Ok(()),
        Ok(v) => Err(format!("found {v:?}")),
        Err(e) => Err(e),
    }
}

/// Tell the whole story; the checks that failed (none: it all held).
///
/// 1. provision both runners;
/// 2. again: `changed=0`, no request to GitHub;
/// 3. the gate picks the primary (and writes `$GITHUB_OUTPUT`);
/// 4. a deploy lands on the primary;
/// 5. the primary's runner service stops and GitHub lists it offline;
/// 6. the gate fails over, saying why;
/// 7. the deploy lands on the secondary;
/// 8. validation fails and names the primary;
/// 9. a release whose health check fails is rolled back;
/// 10. the primary's service is started again and the gate returns to it.
pub fn tell(lab: &GithubLab, bin: &Path, project: &Path) -> Vec<String> {
    let mut s = Story::new(lab, bin.to_path_buf(), project.to_path_buf());
    let wf = |n: &str| workflow(project, n);
    let (provision, select, validate) = (
        wf("provision-github-runner"),
        wf("select-github-runner"),
        wf("validate-github-runner"),
    );
    let deploy = wf("deploy-with-failover");
    let has_deploy = Path::new(&deploy).exists();
    let (primary, secondary) = (lab.runner("primary").name.clone(), lab.runner("secondary").name.clone());

    // 1. Provision.
    let run = s.run("provision both runners", &["run", &provision], &[], 0);
    let mut listed: Vec<(String, String)> = lab.github.runners().into_iter().map(|r| (r.name, r.status)).collect();
    listed.sort();
    s.check(
        "GitHub lists both runners online",
        is(
            Ok(listed),
            vec![(primary.clone(), "online".into()), (secondary.clone(), "online".into())],
        ),
    );
    for r in [&primary, &secondary] {
        let labels = lab.github.runner_by_name(r).map(|x| x.labels).unwrap_or_default();
        let role = lab.runner(r).role;
        let want = ["self-hosted", "production", role, r.as_str()];
        s.check(
            &format!("{r} has the labels {}", want.join(", ")),
            if want.iter().all(|w| labels.iter().any(|l| l == w)) {
                Ok(())
            } else {
                Err(format!("it has {labels:?}"))
            },
        );
    }
    let _ = run;

    // 2. Again: everything from the journal, nobody asked.
    lab.github.clear_requests();
    let run = s.run("provision again (the journal)", &["run", &provision], &[], 0);
    for h in [&primary, &secondary] {
        let r = run.recap(h).map(str::to_owned);
        s.check(
            &format!("{h}: changed=0"),
            match r {
                Some(r) if r.contains("changed=0 failed=0") => Ok(()),
                Some(r) => Err(r),
                None => Err("no recap line".into()),
            },
        );
    }
    s.check(
        "no request to GitHub, no registration token",
        is(Ok(lab.github.api_requests().len()), 0),
    );

    // 3. The gate: the primary.
    let gh_output = lab.dir.join("github_output");
    let _ = std::fs::write(&gh_output, "");
    let run = s.run(
        "the health gate (GITHUB_OUTPUT set, as in a selector job)",
        &["run", &select],
        &[("GITHUB_OUTPUT", &gh_output)],
        0,
    );
    s.expect_output(&run, &format!("chose {primary} (primary)"));
    s.check(
        "GITHUB_OUTPUT routes the deploy job to the primary",
        is(
            std::fs::read_to_string(&gh_output).map_err(|e| e.to_string()),
            format!("runner={primary}\nlabel={primary}\nrole=primary\nfailover=false\n"),
        ),
    );

    // 4. A deploy on the primary.
    if has_deploy {
        let run = s.run("deploy 1.0.0", &["run", &deploy, "-e", "version=1.0.0"], &[], 0);
        s.expect_output(&run, &format!("chose {primary} (primary)"));
        s.check(
            "the primary serves 1.0.0",
            is(app_version(lab, "primary"), "1.0.0".into()),
        );
        s.check(
            "the secondary serves nothing",
            match app_version(lab, "secondary") {
                Err(_) => Ok(()),
                Ok(v) => Err(format!("it serves {v}")),
            },
        );
    }

    // 5. The primary's runner service stops.
    let stopped = runner_service_action(lab, "primary", "stop").and_then(|()| {
        wait_runner_status(lab, "primary", "offline", Duration::from_secs(30))
            .map(|t| format!("GitHub lists {primary} offline {t:.1} s later"))
    });
    s.act(&format!("stop the runner service on {primary}"), stopped);

    // 6. The gate fails over.
    let _ = std::fs::write(&gh_output, "");
    let run = s.run(
        "the health gate again",
        &["run", &select],
        &[("GITHUB_OUTPUT", &gh_output)],
        0,
    );
    s.expect_output(&run, &format!("chose {secondary} (secondary)"));
    s.expect_output(&run, &format!("rejected {primary} (primary): offline in GitHub"));
    s.check(
        "GITHUB_OUTPUT routes the deploy job to the secondary",
        is(
            std::fs::read_to_string(&gh_output).map_err(|e| e.to_string()),
            format!("runner={secondary}\nlabel={secondary}\nrole=secondary\nfailover=true\n"),
        ),
    );

    // 7. The deploy lands on the secondary.
    if has_deploy {
        let run = s.run("deploy 2.0.0", &["run", &deploy, "-e", "version=2.0.0"], &[], 0);
        s.expect_output(&run, &format!("chose {secondary} (secondary)"));
        s.check(
            "the secondary serves 2.0.0",
            is(app_version(lab, "secondary"), "2.0.0".into()),
        );
        s.check(
            "the primary still serves 1.0.0",
            is(app_version(lab, "primary"), "1.0.0".into()),
        );
    }

    // 8. Validation names the primary.
    let junit = lab.dir.join("validate.xml");
    let junit_arg = junit.display().to_string();
    let run = s.run(
        "validate (JUnit report)",
        &["run", &validate, "--junit", &junit_arg],
        &[],
        1,
    );
    s.expect_output(
        &run,
        &format!("GitHub reports runner `{primary}` (primary) as `offline`"),
    );
    let failed = std::fs::read_to_string(&junit)
        .map(|r| junit_failures(&r))
        .map_err(|e| e.to_string());
    s.check(
        &format!("every failed testcase names {primary}"),
        match failed {
            Ok(f) if !f.is_empty() && f.iter().all(|n| n.contains(&primary)) => Ok(()),
            Ok(f) => Err(format!("failed testcases: {f:?}")),
            Err(e) => Err(e),
        },
    );

    // 9. A release whose health check fails: rolled back.
    if has_deploy {
        let run = s.run(
            "deploy 3.0.0 (its health check fails)",
            &["run", &deploy, "-e", "version=3.0.0"],
            &[],
            1,
        );
        s.expect_output(&run, "rolled back");
        s.check(
            "the secondary serves 2.0.0 again",
            is(
                app_version_within(lab, "secondary", Duration::from_secs(15)),
                "2.0.0".into(),
            ),
        );
    }

    // 10. The primary back.
    let back = runner_service_action(lab, "primary", "start").and_then(|()| {
        wait_runner_status(lab, "primary", "online", Duration::from_secs(30))
            .map(|t| format!("GitHub lists {primary} online {t:.1} s later"))
    });
    s.act(&format!("start the runner service on {primary} again"), back);
    let run = s.run("the health gate: back to the primary", &["run", &select], &[], 0);
    s.expect_output(&run, &format!("chose {primary} (primary)"));

    if !has_deploy {
        s.failed.push(format!(
            "the deploy chapters: {deploy} is not in this checkout, so nothing was deployed"
        ));
    }
    s.failed.clone()
}
