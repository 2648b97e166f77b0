//! The job flowrun exists for, end to end in the lab: the shipped GitLab
//! runner workflows against the Proxmox and GitLab emulators, with runner VMs
//! that are real sshd hosts on private overlays of `/`, packages from a signed
//! local repository, and a real Prometheus on the monitoring host.
//!
//! provision → provision again (changed=0, no API write, nothing rewritten on
//! the VM) → validate (JUnit) → break the runner → validate fails naming the
//! check → `provision --verify` repairs only that → reprovision (old runner
//! and VM gone, new ones exist) → validate passes.

use flowrun_lab::lab::{Lab, LabOptions};
use flowrun_lab::sshd::SshdHost;
use std::path::{Path, PathBuf};
use std::process::Output;

fn flowrun(lab: &Lab, args: &[&str]) -> (i32, String) {
    let out: Output = lab
        .flowrun(Path::new(env!("CARGO_BIN_EXE_flowrun")), args)
        .output()
        .expect("flowrun runs");
    let text = format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [lab.gitlab_token.as_str(), lab.proxmox.token_secret()] {
        assert!(!text.contains(secret), "a secret leaked:\n{text}");
    }
    (out.status.code().unwrap_or(-1), text)
}

fn wf(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows")
        .join(format!("{name}.yml"))
        .display()
        .to_string()
}

fn recap<'a>(out: &'a str, host: &str) -> &'a str {
    out.lines()
        .find(|l| l.split(" : ").next().is_some_and(|h| h.trim() == host) && l.contains("ok="))
        .and_then(|l| l.split(" : ").nth(1))
        .unwrap_or_else(|| panic!("no recap for {host}:\n{out}"))
}

/// Files under the VM's overlay `/etc` with their modification times.
fn etc_snapshot(lab: &Lab, vmid: u32) -> Vec<(PathBuf, std::time::SystemTime)> {
    let upper = lab
        .backend
        .with_vm(vmid, SshdHost::upper_dir)
        .flatten()
        .expect("an isolated VM")
        .join("etc");
    let mut out = Vec::new();
    let mut stack = vec![upper];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// One GitLab lab at a time in this test binary: every lab numbers its VMs
/// from the same first id, so two at once would give two VMs one address.
pub static GITLAB_LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A GitLab lab with one runner VM under `dir` (hold [`GITLAB_LAB_LOCK`]).
pub fn start_lab(dir: &Path) -> Lab {
    Lab::start(&LabOptions {
        dir: dir.join("lab"),
        runners: 1,
        project: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    })
    .expect("the lab starts")
}

#[test]
fn provision_validate_break_repair_reprovision() {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return;
    }
    let _one = GITLAB_LAB_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path());
    let (provision, validate, reprovision) = (
        wf("provision-gitlab-runner"),
        wf("validate-gitlab-runner"),
        wf("reprovision-gitlab-runner"),
    );
    let junit = dir.path().join("validate.xml");
    let junit_s = junit.display().to_string();

    // Provision: the VM is cloned and started, configured over SSH, the runner registered.
    let (code, out) = flowrun(&lab, &["run", &provision]);
    assert_eq!(code, 0, "{out}");
    assert!(
        recap(&out, "lab-runner-01").contains("failed=0") && !recap(&out, "lab-runner-01").contains("changed=0"),
        "{out}"
    );
    let vm = lab.proxmox.vm_by_name("lab-runner-01").expect("the VM exists");
    assert!(vm.running);
    let runners = lab.gitlab.runners();
    assert_eq!(runners.len(), 1);
    let first_runner = runners[0].id;

    // The rendered config.toml is TOML with the fields the runner needs (parsed on the VM).
    let check_toml = r#"python3 - <<'PY'
import tomllib
c = tomllib.load(open("/etc/gitlab-runner/config.toml", "rb"))
r = c["runners"][0]
d = r["docker"]
assert c["concurrent"] >= 1 and c["check_interval"] >= 1 and c["listen_address"].endswith(":9252"), c
assert r["executor"] == "docker" and r["url"] and r["token"].startswith("glrt-") and r["name"], r
assert d["image"] and d["privileged"] is False and "/cache" in d["volumes"], d
assert "pull_policy" in d and "allowed_images" in d and "allowed_services" in d, d
print("config.toml ok")
PY
stat -c %a /etc/gitlab-runner/config.toml"#;
    let toml = lab
        .backend
        .with_vm(vm.vmid, |h| h.run_ok(check_toml))
        .unwrap()
        .expect("config.toml checks");
    assert!(
        toml.contains("config.toml ok") && toml.trim_end().ends_with("600"),
        "{toml}"
    );
    // The monitoring files pass promtool where Prometheus reads them.
    lab.monitoring
        .run_ok(
            "promtool check config /etc/prometheus/prometheus.yml && promtool check rules /etc/prometheus/rules/*.yml",
        )
        .expect("promtool accepts the generated configuration and rules");

    // Again: nothing changes, nothing is written to the APIs or the VM's /etc.
    lab.proxmox.clear_requests();
    lab.gitlab.clear_requests();
    let before = etc_snapshot(&lab, vm.vmid);
    let (code, out) = flowrun(&lab, &["run", &provision]);
    assert_eq!(code, 0, "{out}");
    for host in ["lab-runner-01", "lab-prometheus", "localhost"] {
        assert!(recap(&out, host).contains("changed=0 failed=0"), "{out}");
    }
    assert!(
        lab.proxmox.writes().is_empty(),
        "Proxmox writes: {:?}",
        lab.proxmox.writes()
    );
    assert!(
        lab.gitlab.writes().is_empty(),
        "GitLab writes: {:?}",
        lab.gitlab.writes()
    );
    assert_eq!(
        etc_snapshot(&lab, vm.vmid),
        before,
        "the re-run rewrote files on the VM"
    );

    // Validate: every check passes, one JUnit testcase each.
    lab.write_runner_addresses().unwrap();
    let (code, out) = flowrun(&lab, &["run", &validate, "--junit", &junit_s]);
    assert_eq!(code, 0, "{out}");
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.contains("failures=\"0\" errors=\"0\""), "{report}");
    assert!(
        report.contains("name=\"gitlab-runner-service-active\"") && report.contains("name=\"runner-online\""),
        "{report}"
    );

    // Break it: the runner service stops. Validation fails and names the check.
    lab.backend
        .with_vm(vm.vmid, |h| h.run_ok("service gitlab-runner stop"))
        .unwrap()
        .unwrap();
    let (code, out) = flowrun(&lab, &["run", &validate, "--junit", &junit_s]);
    assert_eq!(code, 1, "{out}");
    let report = std::fs::read_to_string(&junit).unwrap();
    let failing = report
        .split("<testcase")
        .find(|t| t.contains("name=\"gitlab-runner-service-active\""))
        .unwrap();
    assert!(failing.contains("<failure"), "{report}");

    // provision --verify repairs the drift, and only it.
    let (code, out) = flowrun(&lab, &["run", &provision, "--verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed: [lab-runner-01] gitlab-runner-service"), "{out}");
    let changed: Vec<&str> = out.lines().filter(|l| l.starts_with("changed: ")).collect();
    assert_eq!(
        changed,
        ["changed: [lab-runner-01] gitlab-runner-service - start `gitlab-runner`"],
        "{out}"
    );
    let (code, out) = flowrun(&lab, &["run", &validate]);
    assert_eq!(code, 0, "{out}");

    // Reprovision: the old runner is gone, the old VM destroyed; a new VM and runner exist.
    lab.backend
        .with_vm(vm.vmid, |h| h.run_ok("touch /etc/old-vm-marker"))
        .unwrap()
        .unwrap();
    let (code, out) = flowrun(&lab, &["run", &reprovision]);
    assert_eq!(code, 0, "{out}");
    let runners = lab.gitlab.runners();
    assert_eq!(runners.len(), 1, "{out}");
    assert_ne!(runners[0].id, first_runner, "the old runner was not replaced");
    assert!(lab.gitlab.runner(first_runner).is_none());
    let new_vm = lab.proxmox.vm_by_name("lab-runner-01").expect("a new VM");
    assert!(new_vm.running);
    let fresh = lab
        .backend
        .with_vm(new_vm.vmid, |h| {
            h.run("test -e /etc/old-vm-marker").map(|o| !o.status.success())
        })
        .unwrap()
        .unwrap();
    assert!(fresh, "the new VM still has the old VM's files:\n{out}");
    lab.write_runner_addresses().unwrap();
    let (code, out) = flowrun(&lab, &["run", &validate, "--junit", &junit_s]);
    assert_eq!(code, 0, "{out}");
}
