//! Side-by-side benchmark of flowrun, Ansible and pyinfra (figures, not
//! assertions): N real sshd hosts on loopback, the ten-step workload of
//! `tests/data/web.yml` (and its twins in `tests/bench/peers/`) with
//! `--forks 10` and the peers' equivalents (Ansible: forks 10, pipelining,
//! ControlPersist; pyinfra: `--parallel 10`). Runs, for each tool: the first
//! run, the converged re-run (flowrun: from the journal, and `--verify`), and
//! a change-one-thing run (`greeting` changes the motd on every host).
//! Prints wall times, ratios, flowrun's remote command count per run (from
//! its `--metrics`) and the peak memory of each controller process.
//!
//! Prints the load average of the machine before each repetition: other
//! work on its cores shows in every figure.
//!
//! Run: `tests/bench/peers.sh [--flowrun-only] [--repeat R] [--ssh-kex ALG]
//! [N...]`, which builds the binaries and prepares the peers' virtualenv
//! (`--venv DIR`). `--ssh-kex curve25519-sha256` gives flowrun and Ansible
//! the key exchange pyinfra's paramiko negotiates (OpenSSH 9.2's default,
//! sntrup761x25519, costs the client tens of ms of CPU per connection).
//! `--keep DIR` starts the hosts, writes flowrun's workload and inventory
//! into DIR and waits (for profiling by hand).

use flowrun_lab::sshd::{inventory_yaml, SshdHost, SshdOptions};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Opts {
    venv: Option<PathBuf>,
    /// `--keep DIR`: set the hosts and flowrun's workload up in DIR and wait (for profiling).
    keep: Option<PathBuf>,
    /// `--ssh-kex ALG`: the SSH key exchange flowrun and Ansible (both on
    /// OpenSSH) use; pyinfra's paramiko negotiates curve25519 whatever this says.
    kex: Option<String>,
    repeat: usize,
    counts: Vec<usize>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        venv: None,
        keep: None,
        kex: None,
        repeat: 1,
        counts: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--venv" => o.venv = it.next().map(PathBuf::from),
            "--flowrun-only" => o.venv = None,
            "--keep" => o.keep = it.next().map(PathBuf::from),
            "--ssh-kex" => o.kex = it.next(),
            "--repeat" => o.repeat = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            n => o.counts.extend(n.parse::<usize>().ok()),
        }
    }
    if o.counts.is_empty() {
        o.counts.push(10);
    }
    o
}

/// One timed run: wall seconds and the controller's peak RSS in MiB.
#[derive(Clone, Copy)]
struct Timed {
    secs: f64,
    rss_mib: f64,
    remote: Option<u64>,
    channels: Option<u64>,
}

/// Run `cmd` to completion, timing it and reading its peak RSS from `wait4`.
fn timed(mut cmd: Command, what: &str) -> (Timed, String) {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out");
    let f = std::fs::File::create(&log).unwrap();
    cmd.stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(std::process::Stdio::null());
    let t0 = Instant::now();
    // Reaped by wait4 below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, whose pid we hold.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = t0.elapsed().as_secs_f64();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let st = std::process::ExitStatus::from_raw(status);
    if r < 0 || !st.success() {
        panic!("{what} failed ({st}):\n{out}");
    }
    #[allow(clippy::cast_precision_loss)]
    let rss_mib = ru.ru_maxrss as f64 / 1024.0;
    (
        Timed {
            secs,
            rss_mib,
            remote: None,
            channels: None,
        },
        out,
    )
}

fn flowrun_bin() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("bin dir").join("flowrun")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// flowrun's workload and inventory in `d`.
fn flowrun_setup(d: &Path, hosts: &[SshdHost], kex: Option<&str>) {
    let wf = std::fs::read_to_string(repo().join("tests/data/web.yml"))
        .unwrap()
        .replace("$DIR", d.to_str().unwrap());
    write(&d.join("web.yml"), &wf);
    let tpl = std::fs::read_to_string(repo().join("tests/data/templates/app.conf.hbs")).unwrap();
    write(&d.join("templates/app.conf.hbs"), &tpl);
    let mut inv = inventory_yaml("web", hosts);
    if let Some(k) = kex {
        inv = inv.replace(
            "\n          identity_file:",
            &format!("\n          ssh_args: \"-o KexAlgorithms={k}\"\n          identity_file:"),
        );
    }
    write(&d.join("hosts.yml"), &inv);
}

/// flowrun: first run, journaled re-run, `--verify`, change one thing.
fn flowrun_runs(dir: &Path, hosts: &[SshdHost], kex: Option<&str>) -> Vec<Timed> {
    let d = dir.join("flowrun");
    flowrun_setup(&d, hosts, kex);
    let run = |extra: &[&str]| {
        let mut c = Command::new(flowrun_bin());
        c.current_dir(&d)
            .env("FLOWRUN_JOURNAL", d.join("journal.db"))
            .args([
                "run",
                "web.yml",
                "-i",
                "hosts.yml",
                "-q",
                "--forks",
                "10",
                "--metrics",
                "m.prom",
            ])
            .args(extra);
        let (mut t, _) = timed(c, "flowrun");
        let m = std::fs::read_to_string(d.join("m.prom")).unwrap_or_default();
        let metric = |name: &str| {
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        };
        t.remote = metric("flowrun_last_run_remote_commands{");
        t.channels = metric("flowrun_last_run_remote_channels{");
        t
    };
    let first = run(&[]);
    check_done(&d, hosts, "flowrun");
    vec![first, run(&[]), run(&["--verify"]), run(&["-e", "greeting=hi"])]
}

fn ansible_runs(dir: &Path, hosts: &[SshdHost], venv: &Path, kex: Option<&str>) -> Vec<Timed> {
    let d = dir.join("ansible");
    let peers = repo().join("tests/bench/peers");
    for f in ["playbook.yml", "app.conf.j2"] {
        write(&d.join(f), &std::fs::read_to_string(peers.join(f)).unwrap());
    }
    let mut inv = String::from("[web]\n");
    let kex = kex.map(|k| format!(" -o KexAlgorithms={k}")).unwrap_or_default();
    for h in hosts {
        let _ = writeln!(
            inv,
            "{} ansible_host={} ansible_port={} ansible_user={} ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}{kex}'",
            h.name(),
            h.address(),
            h.port(),
            h.user(),
            h.identity_file().display(),
            h.known_hosts().display()
        );
    }
    write(&d.join("hosts.ini"), &inv);
    let cp = tempfile::Builder::new().prefix("ans-cp").tempdir_in("/tmp").unwrap();
    write(
        &d.join("ansible.cfg"),
        &format!(
            "[defaults]\nforks = 10\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n\
             gathering = explicit\nretry_files_enabled = False\n\
             [ssh_connection]\npipelining = True\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=60s\ncontrol_path_dir = {}\n",
            cp.path().display()
        ),
    );
    let base = format!("base={}", d.join("hosts").display());
    let run = |extra: &[&str]| {
        let mut c = Command::new(venv.join("bin/ansible-playbook"));
        c.current_dir(&d)
            .env("ANSIBLE_CONFIG", d.join("ansible.cfg"))
            .args(["-i", "hosts.ini", "playbook.yml", "-e", &base])
            .args(extra);
        timed(c, "ansible-playbook").0
    };
    let first = run(&[]);
    check_done(&d, hosts, "ansible");
    vec![first, run(&[]), run(&["-e", "greeting=hi"])]
}

fn pyinfra_runs(dir: &Path, hosts: &[SshdHost], venv: &Path) -> Vec<Timed> {
    let d = dir.join("pyinfra");
    let peers = repo().join("tests/bench/peers");
    for f in ["deploy.py", "app.conf.pyinfra.j2"] {
        write(&d.join(f), &std::fs::read_to_string(peers.join(f)).unwrap());
    }
    let mut inv = String::from("web = [\n");
    for h in hosts {
        let _ = writeln!(
            inv,
            "    ({:?}, {{\"ssh_hostname\": {:?}, \"ssh_port\": {}, \"ssh_user\": {:?}, \"ssh_key\": {:?}, \
             \"ssh_known_hosts_file\": {:?}, \"ssh_strict_host_key_checking\": \"yes\"}}),",
            h.name(),
            h.address(),
            h.port(),
            h.user(),
            h.identity_file().display().to_string(),
            h.known_hosts().display().to_string()
        );
    }
    inv.push_str("]\n");
    write(&d.join("inventory.py"), &inv);
    let base = format!("base={}", d.join("hosts").display());
    let run = |extra: &[&str]| {
        let mut c = Command::new(venv.join("bin/pyinfra"));
        c.current_dir(&d)
            .args(["-y", "--parallel", "10", "--data", &base])
            .args(extra)
            .args(["inventory.py", "deploy.py"]);
        timed(c, "pyinfra").0
    };
    let first = run(&[]);
    check_done(&d, hosts, "pyinfra");
    vec![first, run(&[]), run(&["--data", "greeting=hi"])]
}

/// Every host got the whole workload.
fn check_done(d: &Path, hosts: &[SshdHost], tool: &str) {
    for h in hosts {
        let done = d.join("hosts").join(h.name()).join("done");
        assert!(
            std::fs::read_to_string(&done).is_ok_and(|s| s == "ok\n"),
            "{tool}: {} missing after the first run",
            done.display()
        );
    }
}

fn main() {
    let o = parse_args();
    for &n in &o.counts {
        let hosts = SshdHost::start_many(
            n,
            &SshdOptions {
                name: Some("web".into()),
                ..SshdOptions::default()
            },
        )
        .expect("sshd hosts");
        if let Some(k) = &o.keep {
            flowrun_setup(k, &hosts, o.kex.as_deref());
            println!(
                "{n} hosts up; in {}: flowrun run web.yml -i hosts.yml (Ctrl-C or SIGTERM ends)",
                k.display()
            );
            wait_for_stop();
            // Dropping the hosts stops their sshd and removes their directories.
            drop(hosts);
            return;
        }
        println!(
            "\n== {n} hosts x 10 steps, --forks 10, {} repetition(s), SSH key exchange: {}",
            o.repeat,
            o.kex.as_deref().unwrap_or("OpenSSH's default (pyinfra: curve25519)")
        );
        let mut all: Vec<(&str, Vec<Vec<Timed>>)> = vec![("flowrun", vec![]), ("ansible", vec![]), ("pyinfra", vec![])];
        for r in 0..o.repeat {
            println!("repetition {}: load average {}", r + 1, loadavg());
            let dir = tempfile::tempdir().unwrap();
            all[0].1.push(flowrun_runs(dir.path(), &hosts, o.kex.as_deref()));
            if let Some(venv) = &o.venv {
                all[1].1.push(ansible_runs(dir.path(), &hosts, venv, o.kex.as_deref()));
                all[2].1.push(pyinfra_runs(dir.path(), &hosts, venv));
            }
        }
        println!("after: load average {}", loadavg());
        report(n, &all);
    }
}

/// Block until SIGINT (Ctrl-C) or SIGTERM, so that `--keep` ends by
/// dropping its hosts instead of leaving their sshd running.
fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a signal runtime");
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}

/// The machine's 1, 5 and 15 minute load averages (other work shares the cores).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

const FLOWRUN_RUNS: [&str; 4] = ["first run", "journaled re-run", "--verify re-run", "change one thing"];
const PEER_RUNS: [&str; 3] = ["first run", "re-run", "change one thing"];

/// Best, spread (best..worst) of run `i` over the repetitions.
fn stats(reps: &[Vec<Timed>], i: usize) -> (Timed, f64) {
    let mut best = reps[0][i];
    let mut worst: f64 = 0.0;
    for r in reps {
        if r[i].secs < best.secs {
            best = r[i];
        }
        worst = worst.max(r[i].secs);
    }
    (best, worst)
}

fn report(n: usize, all: &[(&str, Vec<Vec<Timed>>)]) {
    let instances = n * 10;
    for (tool, reps) in all {
        if reps.is_empty() {
            continue;
        }
        let names: &[&str] = if *tool == "flowrun" { &FLOWRUN_RUNS } else { &PEER_RUNS };
        for (i, name) in names.iter().enumerate() {
            let (best, worst) = stats(reps, i);
            let remote = best.remote.map_or(String::new(), |c| {
                #[allow(clippy::cast_precision_loss)]
                let per = c as f64 / instances as f64;
                format!(
                    ", {c} remote commands ({per:.2} per step instance) over {} channels",
                    best.channels.unwrap_or_default()
                )
            });
            println!(
                "{tool:<8} {name:<17} best {:>8.3} s (worst {worst:.3} s), peak RSS {:.1} MiB{remote}",
                best.secs, best.rss_mib
            );
        }
    }
    let Some(f) = all.iter().find(|(t, r)| *t == "flowrun" && !r.is_empty()) else {
        return;
    };
    let fb = |i| stats(&f.1, i).0.secs;
    for (tool, reps) in all.iter().filter(|(t, r)| *t != "flowrun" && !r.is_empty()) {
        let pb = |i| stats(reps, i).0.secs;
        println!(
            "ratio {tool}/flowrun: first run {:.1}x, re-run vs journaled {:.1}x, re-run vs --verify {:.1}x, change {:.1}x",
            pb(0) / fb(0),
            pb(1) / fb(1),
            pb(1) / fb(2),
            pb(2) / fb(3)
        );
    }
}
