//! GitHub runner benchmark (figures, not assertions): the shipped workflows
//! against the GitHub lab (the GitHub emulator, a primary and a secondary
//! runner host as real sshd hosts with private overlays of `/`, the demo
//! app). Each figure is the wall time of a whole `flowrun` run, repeated R
//! times (default 5), printed as min / median / max:
//!
//! - the health gate's decision with two runners (`select-github-runner`),
//!   with a healthy primary and with the primary offline (failover), and the
//!   `select-runner` step alone (its `duration_ms` in `--output json`);
//! - a full deploy (`deploy-with-failover`: gate, lock, fetch and switch the
//!   release, restart, health checks) of a new release each time, on the
//!   primary and failed over to the secondary;
//! - the journaled re-run of `provision-github-runner` (target: under 50 ms).
//!
//! Needs root (the lab's hosts). Run: `sudo tests/bench/github.sh [--repeat R]`.

use flowrun_lab::lab::github::{GithubLab, GithubLabOptions};
use flowrun_lab::lab::github_story::{runner_service_action, wait_runner_status, workflow};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn flowrun_bin() -> PathBuf {
    std::env::var_os("FLOWRUN_BIN").map_or_else(
        || {
            let me = std::env::current_exe().unwrap_or_default();
            me.parent().map(|d| d.join("flowrun")).unwrap_or_default()
        },
        PathBuf::from,
    )
}

fn project() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// One timed run: wall ms, and the `select-runner` step's own ms when the
/// run printed its JSON report.
fn run(lab: &GithubLab, args: &[&str], want: i32) -> Result<(f64, Option<f64>), String> {
    let t0 = Instant::now();
    let out = lab
        .flowrun(&flowrun_bin(), args)
        .output()
        .map_err(|e| format!("cannot run flowrun: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let code = out.status.code().unwrap_or(-1);
    if code != want {
        return Err(format!(
            "flowrun {} exited {code}, not {want}:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let step = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["steps"].as_array()?.iter().find(|s| s["id"] == "select-runner")?["duration_ms"].as_f64());
    Ok((ms, step))
}

struct Figures(Vec<f64>);

impl Figures {
    fn line(&self, what: &str) -> String {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return format!("{what:<58} (no run)");
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        format!(
            "{what:<58} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms  (n={n})",
            v[0],
            median,
            v[n - 1]
        )
    }
}

fn bench(lab: &GithubLab, repeat: usize) -> Result<(), String> {
    let project = project();
    let wf = |n: &str| workflow(&project, n);
    let (provision, select, deploy) = (
        wf("provision-github-runner"),
        wf("select-github-runner"),
        wf("deploy-with-failover"),
    );
    let has_deploy = Path::new(&deploy).exists();

    let (first, _) = run(lab, &["run", &provision, "-q"], 0)?;
    println!("first provision of both runners: {:.1} s (once)", first / 1000.0);

    let mut again = Figures(Vec::new());
    for _ in 0..repeat {
        again.0.push(run(lab, &["run", &provision, "-q"], 0)?.0);
    }

    let (mut gate, mut gate_step) = (Figures(Vec::new()), Figures(Vec::new()));
    for _ in 0..repeat {
        let (ms, step) = run(lab, &["run", &select, "--output", "json"], 0)?;
        gate.0.push(ms);
        gate_step.0.extend(step);
    }

    let mut deploy_primary = Figures(Vec::new());
    let mut release = 0;
    let mut next_release = || -> Result<String, String> {
        release += 1;
        let v = format!("1.1.{release}");
        lab.build_app_release(&v, false).map_err(|e| e.to_string())?;
        Ok(v)
    };
    if has_deploy {
        for _ in 0..repeat {
            let v = next_release()?;
            deploy_primary
                .0
                .push(run(lab, &["run", &deploy, "-q", "-e", &format!("version={v}")], 0)?.0);
        }
    }

    let (mut gate_fo, mut gate_fo_step, mut deploy_fo) =
        (Figures(Vec::new()), Figures(Vec::new()), Figures(Vec::new()));
    for _ in 0..repeat {
        runner_service_action(lab, "primary", "stop")?;
        wait_runner_status(lab, "primary", "offline", Duration::from_secs(30))?;
        let (ms, step) = run(lab, &["run", &select, "--output", "json"], 0)?;
        gate_fo.0.push(ms);
        gate_fo_step.0.extend(step);
        if has_deploy {
            let v = next_release()?;
            deploy_fo
                .0
                .push(run(lab, &["run", &deploy, "-q", "-e", &format!("version={v}")], 0)?.0);
        }
        runner_service_action(lab, "primary", "start")?;
        wait_runner_status(lab, "primary", "online", Duration::from_secs(30))?;
    }

    println!();
    println!("{}", gate.line("gate decision, 2 runners, primary healthy (whole run)"));
    println!("{}", gate_step.line("  the select-runner step alone"));
    println!(
        "{}",
        gate_fo.line("gate decision, 2 runners, primary offline (whole run)")
    );
    println!("{}", gate_fo_step.line("  the select-runner step alone"));
    if has_deploy {
        println!("{}", deploy_primary.line("full deploy on the primary (no failover)"));
        println!("{}", deploy_fo.line("full deploy failed over to the secondary"));
    } else {
        println!("full deploy: not measured ({deploy} is not in this checkout)");
    }
    let line = again.line("journaled re-run of provision-github-runner");
    let median_ok = {
        let mut v = again.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).is_some_and(|m| *m < 50.0)
    };
    println!("{line}  target < 50 ms: {}", if median_ok { "met" } else { "NOT met" });
    Ok(())
}

fn main() -> ExitCode {
    let mut repeat = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|n| n.parse().ok())) {
            ("--repeat", Some(n)) if (1..=50).contains(&n) => repeat = n,
            _ => {
                eprintln!("usage: github-bench [--repeat R]   (1..50, default 5)");
                return ExitCode::from(2);
            }
        }
    }
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("error: no temporary directory");
        return ExitCode::from(1);
    };
    let lab = match GithubLab::start(&GithubLabOptions {
        dir: dir.path().join("lab"),
        project: project(),
        offline_after: Duration::from_secs(3),
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: the GitHub lab did not start: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "GitHub lab: emulator {}, {repeat} repetition(s) of each figure",
        lab.github.enterprise_api_url()
    );
    match bench(&lab, repeat) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
