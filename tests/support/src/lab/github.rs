//! The GitHub part of the lab: everything the shipped GitHub runner workflows
//! need on this machine. The GitHub emulator (REST API and the runner's side,
//! strict, on loopback), two runner hosts — a primary and a secondary — as lab
//! VMs (real sshd hosts with private overlays of `/`, see [`SshdVmBackend`]),
//! and a file server on loopback with the stand-in runner release (built by
//! `tests/lab/build-runner-release.sh`, with its sha256) and releases of the
//! demo app the deploy workflow deploys (`tests/lab/build-demo-app.sh`).
//! [`GithubLab::start`] brings it up and writes the inventory
//! (`inventory/lab-github/hosts.yml` with the lab's values in `group_vars/`
//! and `host_vars/`) and the environment. Dropping the lab stops everything.

use super::{free_port, run, wait_port, write, SshdVmBackend};
use crate::emulators::github::{GitHubEmulator, GitHubOptions};
use crate::emulators::proxmox::VmBackend;
use crate::sshd::{Isolation, SshdHost};
use serde_json::{json, Value};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the GitHub lab says about itself.
pub const WHAT_IS_EMULATED: &str = "\
lab (GitHub runners): what is real and what is emulated
  real      flowrun, SSH (a real sshd per runner host, each with a private overlay of /), files, users,
            SysV init scripts, the demo app (a real HTTP service), node_exporter, promtool
  emulated  GitHub: an emulator of its REST API for runners (tokens, list with Link pagination,
            labels, delete) and of the runner's side (registration, sessions, heartbeats, jobs)
  stand-in  the actions runner release: config.sh, run.sh, svc.sh and a python3 listener that
            registers, heartbeats (online while its service runs) and runs queued jobs (busy)
  not run   systemd (the runner's svc.sh installs a SysV script), real GitHub Actions jobs";

/// The repository the lab's runners belong to.
pub const REPO: &str = "flowrun-lab/app";
/// The demo app's port and node_exporter's on each runner host (each binds its own address).
pub const APP_PORT: u16 = 18080;
pub const NODE_EXPORTER_PORT: u16 = 19100;

pub struct GithubLabOptions {
    /// The lab's state directory.
    pub dir: PathBuf,
    /// The project's checkout (for `inventory/lab-github` and `tests/lab`).
    pub project: PathBuf,
    /// How long a silent runner stays `online` in the emulator.
    pub offline_after: Duration,
}

/// A runner host of the lab.
#[derive(Debug, Clone)]
pub struct LabRunner {
    pub name: String,
    pub role: &'static str,
    pub vmid: u32,
    pub ip: Ipv4Addr,
}

/// A running GitHub lab.
pub struct GithubLab {
    pub dir: PathBuf,
    pub github: GitHubEmulator,
    pub backend: Arc<SshdVmBackend>,
    pub runners: Vec<LabRunner>,
    /// A token administering [`REPO`] (the workflows' GITHUB_TOKEN).
    pub token: String,
    pub release_sha256: String,
    files: PathBuf,
    project: PathBuf,
    file_server: Child,
    // The emulator's server runs on it.
    runtime: tokio::runtime::Runtime,
    // Last: released once the hosts on these addresses are gone.
    _address_claims: Vec<std::fs::File>,
}

impl Drop for GithubLab {
    fn drop(&mut self) {
        let _ = self.file_server.kill();
        let _ = self.file_server.wait();
    }
}

/// A VM id for a lab host, with the claim on its address: each id is a
/// loopback address (`127.77.X.Y`) where the host's sshd, demo app and
/// node_exporter listen on fixed ports, so no two live hosts may share one,
/// in this process or another (tests and labs run side by side). The claim
/// is an exclusive lock on `TMPDIR/flowrun-lab-addresses/ADDRESS.lock`, held
/// for as long as the returned file is open; the kernel drops it when the
/// process dies, so a crashed lab leaves nothing to clean up.
fn claim_vmid() -> io::Result<(u32, std::fs::File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("flowrun-lab-addresses");
    std::fs::create_dir_all(&dir)?;
    // Processes start at different offsets, so they rarely even try the same address.
    let start = (std::process::id() % 2_000) * 16;
    for _ in 0..512 {
        let id = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 32_000;
        // A low byte of 0 maps to `.1`, the next id's address.
        if id & 0xff == 0 {
            continue;
        }
        let path = dir.join(format!("{}.lock", SshdVmBackend::address_of(id)));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => return Ok((id, file)),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Err(io::Error::other(
        "no free lab address: 512 addresses tried, all held by other labs",
    ))
}

impl GithubLab {
    /// Bring the lab up. Needs root (private mount namespaces and overlays).
    pub fn start(opts: &GithubLabOptions) -> io::Result<Self> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let project = opts.project.canonicalize()?;
        let files = dir.join("files");
        let tarball = build(
            Command::new(project.join("tests/lab/build-runner-release.sh")).arg(&files),
            "building the stand-in runner release",
        )?;
        let release_sha256 = std::fs::read_to_string(format!("{tarball}.sha256"))?.trim().to_owned();
        let port = free_port("127.0.0.1")?;
        let file_server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(&files)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_port(&format!("127.0.0.1:{port}"), Duration::from_secs(20))?;

        let key = dir.join("id_ed25519");
        if !key.exists() {
            run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "flowrun-lab", "-f"])
                    .arg(&key),
                "ssh-keygen",
            )?;
        }
        let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))?.trim().to_owned();
        let _ = std::fs::remove_file(dir.join("known_hosts"));
        let ssh_port = free_port("127.0.0.1")?;
        let backend = Arc::new(SshdVmBackend::new(Isolation::Filesystem, ssh_port, pubkey));
        let mut runners = Vec::new();
        let mut address_claims = Vec::new();
        for (name, role) in [("lab-gh-primary", "primary"), ("lab-gh-secondary", "secondary")] {
            // A host that cannot have its address (something outside the labs holds
            // the SSH port there) fails to start: then another address.
            let mut tries = 0;
            let (vmid, ip) = loop {
                let (vmid, claim) = claim_vmid()?;
                match backend.start(vmid, name) {
                    Ok(ip) => {
                        address_claims.push(claim);
                        break (vmid, ip);
                    }
                    Err(e) if tries < 2 => {
                        tries += 1;
                        eprintln!("lab: {name}: {e}; trying another address");
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            };
            runners.push(LabRunner {
                name: name.into(),
                role,
                vmid,
                ip,
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let github = runtime.block_on(GitHubEmulator::start_with(GitHubOptions {
            offline_after: opts.offline_after,
            ..GitHubOptions::default()
        }))?;
        let token = github.add_token(&[REPO]);
        let lab = Self {
            dir,
            github,
            backend,
            runners,
            token,
            release_sha256,
            files,
            project: project.clone(),
            file_server,
            runtime,
            _address_claims: address_claims,
        };
        let tarball_name = Path::new(&tarball)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        lab.write_inventory(&project, port, ssh_port, &tarball_name.unwrap_or_default())?;
        for (v, broken) in [("1.0.0", false), ("2.0.0", false), ("3.0.0", true)] {
            lab.build_app_release(v, broken)?;
        }
        write(&lab.dir.join("env"), &lab.env_text(), 0o600)?;
        Ok(lab)
    }

    /// Build (or rebuild) the demo app's release `version`; `broken` fails its health check.
    pub fn build_app_release(&self, version: &str, broken: bool) -> io::Result<()> {
        let mut cmd = Command::new(self.project.join("tests/lab/build-demo-app.sh"));
        cmd.arg(&self.files).arg(version);
        if broken {
            cmd.arg("broken");
        }
        build(&mut cmd, "building a demo app release").map(|_| ())
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory/hosts.yml")
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.db")
    }

    fn write_inventory(&self, project: &Path, files_port: u16, ssh_port: u16, tarball: &str) -> io::Result<()> {
        let inv = self.dir.join("inventory");
        let text = std::fs::read_to_string(project.join("inventory/lab-github/hosts.yml"))?;
        let mut doc: Value = serde_saphyr::from_str(&text)
            .map_err(|e| io::Error::other(format!("inventory/lab-github/hosts.yml: {e}")))?;
        if let Some(hosts) = doc["all"]["children"]["github_runners"]["hosts"].as_object_mut() {
            for h in hosts.values_mut() {
                if let Some(o) = h.as_object_mut() {
                    o.remove("address");
                    o.remove("port");
                }
            }
        }
        write(
            &inv.join("hosts.yml"),
            &format!(
                "# Generated by flowrun-lab from inventory/lab-github/hosts.yml.\n{}\n",
                serde_json::to_string_pretty(&doc)?
            ),
            0o644,
        )?;
        let files = format!("http://127.0.0.1:{files_port}");
        let all = json!({
            "github_api_url": self.github.enterprise_api_url(),
            "actions_runner_url": format!("{files}/{tarball}"),
            "actions_runner_sha256": self.release_sha256,
            "app_release_url": format!("{files}/demo-app-{{version}}.tar.gz"),
            "app_port": APP_PORT,
            "node_exporter_port": NODE_EXPORTER_PORT,
        });
        write(
            &inv.join("group_vars/all.yml"),
            &serde_json::to_string_pretty(&all)?,
            0o644,
        )?;
        for r in &self.runners {
            let hv = json!({
                "address": r.ip.to_string(),
                "port": ssh_port,
                "identity_file": self.dir.join("id_ed25519"),
                "known_hosts_file": self.dir.join("known_hosts"),
                "node_exporter_listen_address": r.ip.to_string(),
                // Over the group's 9100: this machine may run a node_exporter of its own.
                "node_exporter_port": NODE_EXPORTER_PORT,
                "app_listen_address": r.ip.to_string(),
            });
            write(
                &inv.join(format!("host_vars/{}.yml", r.name)),
                &serde_json::to_string_pretty(&hv)?,
                0o644,
            )?;
        }
        Ok(())
    }

    /// The variables the workflows read secrets from, and the journal.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GITHUB_TOKEN".into(), self.token.clone()),
            ("FLOWRUN_JOURNAL".into(), self.journal().display().to_string()),
        ]
    }

    fn env_text(&self) -> String {
        self.env().iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect()
    }

    /// A `flowrun` command for this lab: its inventory, environment and journal.
    pub fn flowrun(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .arg("-i")
            .arg(self.inventory())
            .envs(self.env())
            .stdin(Stdio::null());
        c
    }

    pub fn runner(&self, name: &str) -> &LabRunner {
        self.runners
            .iter()
            .find(|r| r.name == name || r.role == name)
            .unwrap_or_else(|| panic!("no lab runner `{name}`"))
    }

    /// Run a script on a runner host (directly, not over SSH); its stdout.
    pub fn run_on(&self, runner: &str, script: &str) -> io::Result<String> {
        let r = self.runner(runner);
        self.backend
            .with_vm(r.vmid, |h: &SshdHost| h.run_ok(script))
            .unwrap_or_else(|| Err(io::Error::other(format!("{} is down", r.name))))
    }

    /// A path on a runner host as this machine sees it.
    pub fn host_path(&self, runner: &str, path: &str) -> Option<PathBuf> {
        let r = self.runner(runner);
        self.backend.with_vm(r.vmid, |h: &SshdHost| h.host_path(path))
    }

    /// Power a runner host off (everything on it dies) or on again (same files).
    pub fn power(&self, runner: &str, on: bool) -> io::Result<()> {
        let r = self.runner(runner);
        if on {
            self.backend
                .start(r.vmid, &r.name)
                .map(|_| ())
                .map_err(io::Error::other)
        } else {
            self.backend.stop(r.vmid);
            Ok(())
        }
    }

    /// The demo app's base URL on a runner host.
    pub fn app_url(&self, runner: &str) -> String {
        format!("http://{}:{APP_PORT}", self.runner(runner).ip)
    }

    /// `GET path` from the demo app on a runner host: status and body
    /// (plain HTTP/1.0 on loopback, bounded by a 5 s timeout).
    pub fn app_get(&self, runner: &str, path: &str) -> io::Result<(u16, String)> {
        http_get(&format!("{}:{APP_PORT}", self.runner(runner).ip), path)
    }

    /// What node_exporter on a runner host serves at `/metrics`.
    pub fn node_exporter_metrics(&self, runner: &str) -> io::Result<String> {
        let (status, body) = http_get(&format!("{}:{NODE_EXPORTER_PORT}", self.runner(runner).ip), "/metrics")?;
        if status != 200 {
            return Err(io::Error::other(format!("node_exporter answered {status}")));
        }
        Ok(body)
    }

    /// Run something on the lab's runtime (the emulator lives there).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

/// A plain `GET` (HTTP/1.0, the server closes): status and body.
fn http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(5);
    let sock: std::net::SocketAddr = addr.parse().map_err(io::Error::other)?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Run a build script that prints the path it built; that path.
fn build(cmd: &mut Command, what: &str) -> io::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_address_is_nobody_elses_until_released() {
        let (a, held) = claim_vmid().unwrap();
        let (b, _other) = claim_vmid().unwrap();
        let ip = SshdVmBackend::address_of(a);
        assert_ne!(ip, SshdVmBackend::address_of(b));
        assert_ne!(a & 0xff, 0, "{a}");
        // Another lab (its own open of the file, as another process has) finds it held.
        let path = std::env::temp_dir().join(format!("flowrun-lab-addresses/{ip}.lock"));
        let theirs = std::fs::File::open(&path).unwrap();
        assert!(
            matches!(theirs.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "{ip} is claimed twice"
        );
        drop(held);
        theirs.try_lock().expect("a released address can be claimed");
    }
}
