//! `flowrun-lab`: the local lab for the shipped GitLab and GitHub runner workflows.
//!
//!   flowrun-lab demo [--runners N] [--dir DIR]   bring the lab up, provision the runners,
//!                                                provision again (changed=0), validate, stop
//!   flowrun-lab up [--runners N] [--dir DIR]     bring the lab up and keep it until Ctrl-C
//!   flowrun-lab bench [N...]                     wall times of provision, journaled re-run and
//!                                                validate with N runner VMs (default 1 and 5)
//!   flowrun-lab github [demo] [--dir DIR]        the GitHub runner story: provision a primary
//!                                                and a secondary, the health gate, deploys,
//!                                                failover, validation, a rollback (each checked)
//!   flowrun-lab github up [--dir DIR]            the GitHub lab, provisioned, until Ctrl-C
//!
//! It needs root (private mount namespaces and overlays for the lab VMs) and
//! the `flowrun` binary beside it (or `FLOWRUN_BIN`).

use flowrun_lab::lab::github::{GithubLab, GithubLabOptions, WHAT_IS_EMULATED as GITHUB_EMULATED};
use flowrun_lab::lab::github_story::{self, ssh_command, workflow};
use flowrun_lab::lab::{Lab, LabOptions, WHAT_IS_EMULATED};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    command: String,
    runners: usize,
    dir: PathBuf,
}

fn usage() -> ExitCode {
    eprintln!("usage: flowrun-lab demo|up [--runners N] [--dir DIR] | bench [N...] | github [demo|up] [--dir DIR]");
    ExitCode::from(2)
}

fn parse() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next()?;
    if command == "bench" {
        return Some(Args {
            command,
            runners: 0,
            dir: PathBuf::new(),
        });
    }
    let mut a = Args {
        command,
        runners: 1,
        dir: flowrun_engine::paths::state_dir().join("lab"),
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--runners" => a.runners = it.next()?.parse().ok().filter(|n| (1..=20).contains(n))?,
            "--dir" => a.dir = PathBuf::from(it.next()?),
            _ => return None,
        }
    }
    matches!(a.command.as_str(), "demo" | "up").then_some(a)
}

fn flowrun_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWRUN_BIN") {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("flowrun")));
    beside
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("flowrun"))
}

fn project_dir() -> PathBuf {
    // The checkout this binary was built from; the current directory as a fallback.
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("workflows").is_dir() {
        built.canonicalize().unwrap_or(built)
    } else {
        PathBuf::from(".")
    }
}

/// Run `flowrun` in the lab; its wall time, and whether it succeeded.
fn timed(lab: &Lab, args: &[&str]) -> (f64, bool) {
    let t = Instant::now();
    let out = lab.flowrun(&flowrun_bin(), args).output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    if let (Ok(o), false) = (&out, ok) {
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (t.elapsed().as_secs_f64(), ok)
}

fn bench() -> ExitCode {
    let counts: Vec<usize> = std::env::args().skip(2).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![1, 5] } else { counts };
    let project = project_dir();
    let wf = |name: &str| {
        project
            .join("workflows")
            .join(format!("{name}.yml"))
            .display()
            .to_string()
    };
    let (provision, validate) = (wf("provision-gitlab-runner"), wf("validate-gitlab-runner"));
    let mut firsts = Vec::new();
    for n in counts {
        let dir = tempfile::tempdir().expect("temp dir");
        let lab = match Lab::start(&LabOptions {
            dir: dir.path().join("lab"),
            runners: n,
            project: project.clone(),
        }) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: the lab did not start: {e}");
                return ExitCode::from(1);
            }
        };
        let (first, ok1) = timed(&lab, &["run", &provision, "-q"]);
        let (again, ok2) = timed(&lab, &["run", &provision, "-q"]);
        let _ = lab.write_runner_addresses();
        let (check, ok3) = timed(&lab, &["run", &validate, "-q"]);
        println!(
            "{n} runner VM(s): provision {first:.1} s, journaled re-run {again:.2} s, validate {check:.1} s{}",
            if ok1 && ok2 && ok3 { "" } else { "  (a run FAILED)" }
        );
        firsts.push((n, first));
    }
    if let (Some((1, one)), Some((n, many))) = (firsts.first(), firsts.last()) {
        if *n > 1 {
            println!("{n} VMs took {:.2}x the time of one", many / one);
        }
    }
    ExitCode::SUCCESS
}

/// `flowrun-lab github [demo|up] [--dir DIR]`.
fn github() -> ExitCode {
    let mut it = std::env::args().skip(2).peekable();
    let command = match it.peek().map(String::as_str) {
        Some("demo" | "up") => it.next().unwrap_or_default(),
        _ => "demo".to_owned(),
    };
    let mut dir = flowrun_engine::paths::state_dir().join("lab/github");
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--dir", Some(d)) => dir = PathBuf::from(d),
            _ => return usage(),
        }
    }
    println!("{GITHUB_EMULATED}\n");
    let t0 = Instant::now();
    let project = project_dir();
    let lab = match GithubLab::start(&GithubLabOptions {
        dir: dir.clone(),
        project: project.clone(),
        offline_after: Duration::from_secs(5),
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: the GitHub lab did not start: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "GitHub lab up in {:.1} s: GitHub emulator {} (repository {}), runner hosts {}, state in {}",
        t0.elapsed().as_secs_f64(),
        lab.github.enterprise_api_url(),
        flowrun_lab::lab::github::REPO,
        lab.runners
            .iter()
            .map(|r| format!("{} ({}, {})", r.name, r.role, r.ip))
            .collect::<Vec<_>>()
            .join(" and "),
        lab.dir.display()
    );
    let bin = flowrun_bin();
    if command == "up" {
        return github_up(&lab, &bin, &project);
    }
    let failed = github_story::tell(&lab, &bin, &project);
    if failed.is_empty() {
        println!("\nGitHub lab story: every check held");
        ExitCode::SUCCESS
    } else {
        println!("\nGitHub lab story: {} check(s) failed:", failed.len());
        for f in &failed {
            println!("  - {f}");
        }
        ExitCode::from(1)
    }
}

/// Provision the GitHub lab, print the commands to try, wait for Ctrl-C.
fn github_up(lab: &GithubLab, bin: &Path, project: &Path) -> ExitCode {
    let wf = |n: &str| workflow(project, n);
    println!("\nprovisioning both runners ...");
    let run = github_story::flowrun(lab, bin, &["run", &wf("provision-github-runner"), "-q"], &[]);
    if run.code != 0 {
        eprintln!("{}\nerror: provisioning failed (exit {})", run.out, run.code);
        return ExitCode::from(1);
    }
    let (inv, b) = (lab.inventory().display().to_string(), bin.display().to_string());
    let primary = lab.runner("primary").name.clone();
    println!(
        "provisioned in {:.1} s. In another shell:\n\n  . {}/env\n",
        run.secs,
        lab.dir.display()
    );
    for (what, args) in [
        (
            "provision again (changed=0)",
            format!("run {} -i {inv}", wf("provision-github-runner")),
        ),
        (
            "the health gate",
            format!("run {} -i {inv}", wf("select-github-runner")),
        ),
        (
            "deploy a release (1.0.0, 2.0.0; 3.0.0 fails its health check)",
            format!("run {} -i {inv} -e version=1.0.0", wf("deploy-with-failover")),
        ),
        (
            "validate, with a JUnit report",
            format!("run {} -i {inv} --junit validate.xml", wf("validate-github-runner")),
        ),
    ] {
        println!("  # {what}\n  {b} {args}\n");
    }
    let service = github_story::runner_service(&primary);
    println!(
        "  # stop the primary's runner service (GitHub lists it offline 5 s later), then run the gate again\n  {} service {service} stop\n",
        ssh_command(lab, "primary")
    );
    println!("Ctrl-C stops the lab.");
    lab.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("bench") => return bench(),
        Some("github") => return github(),
        _ => {}
    }
    let Some(args) = parse() else { return usage() };
    println!("{WHAT_IS_EMULATED}\n");
    let t0 = Instant::now();
    let project = project_dir();
    let lab = match Lab::start(&LabOptions {
        dir: args.dir.clone(),
        runners: args.runners,
        project: project.clone(),
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: the lab did not start: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "lab up in {:.1} s: Proxmox emulator {}, GitLab emulator {}, {} runner VM(s) to create, state in {}",
        t0.elapsed().as_secs_f64(),
        lab.proxmox.url(),
        lab.gitlab.url(),
        lab.runners.len(),
        lab.dir.display()
    );
    let bin = flowrun_bin();
    let wf = |name: &str| {
        project
            .join("workflows")
            .join(format!("{name}.yml"))
            .display()
            .to_string()
    };
    if args.command == "up" {
        println!("\nin another shell:\n  . {}/env", lab.dir.display());
        println!(
            "  {} run {} -i {}",
            bin.display(),
            wf("provision-gitlab-runner"),
            lab.inventory().display()
        );
        println!(
            "  {} run {} -i {} --junit validate.xml",
            bin.display(),
            wf("validate-gitlab-runner"),
            lab.inventory().display()
        );
        println!("\nCtrl-C stops the lab.");
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = lab.block_on(async move {
            let _ = tokio::signal::ctrl_c().await;
            tx.send(())
        });
        let _ = rx.recv();
        return ExitCode::SUCCESS;
    }
    let mut ok = true;
    let mut step = |title: &str, args: &[&str], before: &dyn Fn()| {
        before();
        println!("\n== {title}: flowrun {}", args.join(" "));
        let t = Instant::now();
        let status = lab.flowrun(&bin, args).status();
        let code = status.map(|s| s.code().unwrap_or(1)).unwrap_or(1);
        println!("== {title}: exit {code} in {:.1} s", t.elapsed().as_secs_f64());
        ok &= code == 0;
    };
    let provision = wf("provision-gitlab-runner");
    let validate = wf("validate-gitlab-runner");
    let junit = lab.dir.join("validate.xml").display().to_string();
    step("provision", &["run", &provision], &|| {});
    step("provision again (the journal: changed=0)", &["run", &provision], &|| {});
    step("validate", &["run", &validate, "--junit", &junit], &|| {
        let _ = lab.write_runner_addresses();
    });
    println!(
        "\nGitLab emulator: {} runner(s) registered; JUnit report: {junit}\n{}",
        lab.gitlab.runners().len(),
        if ok {
            "lab demo: everything passed"
        } else {
            "lab demo: something failed (see above)"
        }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
