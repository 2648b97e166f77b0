//! The local lab: everything the shipped GitLab runner workflows need, on
//! this machine. A Proxmox VE emulator whose VMs are real sshd hosts with
//! private overlays of `/`, a GitLab emulator, a monitoring host, and a signed
//! apt repository (built by `tests/lab/build-repo.sh`, served on loopback)
//! holding the stand-in packages. [`Lab::start`] brings it up and writes the
//! inventory (`inventory/lab/hosts.yml` with the lab's own values in
//! `group_vars/` and `host_vars/`) and the environment the workflows need.
//! Dropping the lab stops everything.

pub mod backend;
pub mod github;
pub mod github_story;

pub use backend::SshdVmBackend;

use crate::emulators::gitlab::GitLabEmulator;
use crate::emulators::proxmox::{ProxmoxEmulator, ProxmoxOptions, TEMPLATE_ID};
use crate::sshd::{Isolation, SshdHost, SshdOptions};
use serde_json::{json, Value};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the lab says about itself: what is real and what is a stand-in.
pub const WHAT_IS_EMULATED: &str = "\
lab: what is real and what is emulated
  real      flowrun, SSH (real sshd per VM, each with a private overlay of /), files, apt and dpkg,
            SysV init scripts, node_exporter and Prometheus (Debian's packages), promtool
  emulated  Proxmox VE and GitLab: emulators of their REST APIs on loopback
  stand-in  gitlab-runner, Docker and cAdvisor: lab packages from a signed local apt repository
            (they answer like the real tools but run no jobs and no containers)
  not run   systemd (services use their SysV scripts), the firewall (the VMs share this machine's network)";

pub struct LabOptions {
    /// The lab's state directory (inventory, keys, journal, repository).
    pub dir: PathBuf,
    /// How many runner VMs the inventory lists.
    pub runners: usize,
    /// The project's checkout (for `inventory/lab` and `tests/lab`).
    pub project: PathBuf,
}

/// A running lab.
pub struct Lab {
    pub dir: PathBuf,
    pub proxmox: ProxmoxEmulator,
    pub gitlab: GitLabEmulator,
    pub backend: Arc<SshdVmBackend>,
    pub monitoring: SshdHost,
    pub runners: Vec<String>,
    pub gitlab_token: String,
    repo_server: Child,
    // Last: the emulators' servers run on it.
    runtime: tokio::runtime::Runtime,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.repo_server.kill();
        let _ = self.repo_server.wait();
    }
}

pub(crate) fn free_port(ip: &str) -> io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

pub(crate) fn write(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Wait until `addr` accepts TCP connections (bounded).
pub(crate) fn wait_port(addr: &str, limit: Duration) -> io::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other(format!("nothing answers on {addr}")))
}

impl Lab {
    /// Bring the lab up. Needs root (private mount namespaces and overlays).
    pub fn start(opts: &LabOptions) -> io::Result<Self> {
        let dir = &opts.dir;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let project = opts.project.canonicalize()?;

        // The signed apt repository with the stand-in packages, served on loopback.
        let repo = dir.join("repo");
        if !repo.join("flowrun-lab.asc").exists() {
            run(
                Command::new(project.join("tests/lab/build-repo.sh")).arg(&repo),
                "building the lab's apt repository",
            )?;
        }
        let repo_port = free_port("127.0.0.1")?;
        let repo_server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &repo_port.to_string(),
                "--directory",
            ])
            .arg(&repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_port(&format!("127.0.0.1:{repo_port}"), Duration::from_secs(20))?;

        // The lab's SSH key: authorized on every VM, as cloud-init would.
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
        let known_hosts = dir.join("known_hosts");
        let _ = std::fs::remove_file(&known_hosts);

        let ssh_port = free_port("127.0.0.1")?;
        let backend = Arc::new(SshdVmBackend::new(Isolation::Filesystem, ssh_port, pubkey.clone()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (proxmox, gitlab) = runtime.block_on(async {
            let pve = ProxmoxEmulator::start_with(ProxmoxOptions {
                nodes: vec!["lab".into()],
                token_id: "lab@pve!flowrun".into(),
                backend: backend.clone(),
                ..ProxmoxOptions::default()
            })
            .await?;
            Ok::<_, io::Error>((pve, GitLabEmulator::start().await?))
        })?;
        let gitlab_token = gitlab.add_token(&["create_runner", "manage_runner", "read_api"]);

        // The monitoring host: an isolated sshd (Prometheus is installed on this machine,
        // so it is in the overlay; the workflow configures and starts it).
        let monitoring = SshdHost::start(SshdOptions {
            name: Some("lab-prometheus".into()),
            ..SshdOptions::isolated()
        })?;
        monitoring.run_ok(
            "rm -f /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; : > /etc/apt/sources.list",
        )?;

        let runners: Vec<String> = (1..=opts.runners.max(1))
            .map(|i| format!("lab-runner-{i:02}"))
            .collect();
        let lab = Self {
            dir: dir.clone(),
            proxmox,
            gitlab,
            backend,
            monitoring,
            runners,
            gitlab_token,
            repo_server,
            runtime,
        };
        lab.write_inventory(&project, repo_port, ssh_port, &pubkey)?;
        lab.write_env()?;
        Ok(lab)
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory/hosts.yml")
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.db")
    }

    /// The inventory: `inventory/lab/hosts.yml` with the runners group listing
    /// this lab's runners, and the lab's values in group_vars and host_vars.
    fn write_inventory(&self, project: &Path, repo_port: u16, ssh_port: u16, pubkey: &str) -> io::Result<()> {
        let inv = self.dir.join("inventory");
        let text = std::fs::read_to_string(project.join("inventory/lab/hosts.yml"))?;
        let mut doc: Value =
            serde_saphyr::from_str(&text).map_err(|e| io::Error::other(format!("inventory/lab/hosts.yml: {e}")))?;
        let hosts = &mut doc["all"]["children"]["runners"]["hosts"];
        let template = hosts
            .as_object()
            .and_then(|h| h.values().next().cloned())
            .unwrap_or_else(|| json!({}));
        let mut list = serde_json::Map::new();
        for r in &self.runners {
            let mut h = template.clone();
            if let Some(o) = h.as_object_mut() {
                o.remove("address");
                o.remove("exporter_listen_ip");
            }
            list.insert(r.clone(), h);
        }
        *hosts = Value::Object(list);
        // JSON is YAML: the file flowrun reads, generated.
        write(
            &inv.join("hosts.yml"),
            &format!(
                "# Generated by flowrun-lab from inventory/lab/hosts.yml.\n{}\n",
                serde_json::to_string_pretty(&doc)?
            ),
            0o644,
        )?;
        let repo = format!("http://127.0.0.1:{repo_port}/");
        let vm_list: Vec<Value> = self
            .runners
            .iter()
            .map(|r| json!({"name": r, "node": "lab", "template": TEMPLATE_ID, "cores": 2, "memory": 2048, "inventory_host": r, "ssh_port": ssh_port}))
            .collect();
        let all = json!({
            "gitlab_url": self.gitlab.url(),
            "proxmox_api_url": self.proxmox.url(),
            "proxmox_token_id": self.proxmox.token_id(),
            "proxmox_ca_file": self.proxmox.ca_file(),
            "gitlab_runner_repo_uri": repo,
            "gitlab_runner_repo_key_url": format!("{repo}flowrun-lab.asc"),
            "vm_sshkeys": [pubkey],
            "vm_list": vm_list,
            "prometheus_url": format!("http://{}:9090", self.monitoring.address()),
            "ssh_known_hosts_file": self.dir.join("known_hosts"),
        });
        write(
            &inv.join("group_vars/all.yml"),
            &serde_json::to_string_pretty(&all)?,
            0o644,
        )?;
        for r in &self.runners {
            let hv = json!({
                "port": ssh_port,
                "identity_file": self.dir.join("id_ed25519"),
                "known_hosts_file": self.dir.join("known_hosts"),
            });
            write(
                &inv.join(format!("host_vars/{r}.yml")),
                &serde_json::to_string_pretty(&hv)?,
                0o644,
            )?;
        }
        let m = &self.monitoring;
        let hv = json!({
            "address": m.address(),
            "port": m.port(),
            "identity_file": m.identity_file(),
            "known_hosts_file": m.known_hosts(),
        });
        write(
            &inv.join("host_vars/lab-prometheus.yml"),
            &serde_json::to_string_pretty(&hv)?,
            0o644,
        )
    }

    /// The variables the workflows read secrets from, and the journal.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GITLAB_TOKEN".into(), self.gitlab_token.clone()),
            ("PROXMOX_TOKEN_SECRET".into(), self.proxmox.token_secret().to_owned()),
            ("FLOWRUN_JOURNAL".into(), self.journal().display().to_string()),
        ]
    }

    /// `LAB/env`, mode 0600, for `. LAB/env` in a shell.
    fn write_env(&self) -> io::Result<()> {
        let text: String = self.env().iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
        write(&self.dir.join("env"), &text, 0o600)
    }

    /// Record each existing runner VM's address in its host_vars, for
    /// workflows that do not look the VMs up themselves (validation).
    pub fn write_runner_addresses(&self) -> io::Result<()> {
        for r in &self.runners {
            let path = self.dir.join(format!("inventory/host_vars/{r}.yml"));
            let mut hv: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            match self.proxmox.vm_by_name(r).and_then(|vm| vm.ip) {
                Some(ip) => hv["address"] = json!(ip.to_string()),
                None => {
                    if let Some(o) = hv.as_object_mut() {
                        o.remove("address");
                    }
                }
            }
            write(&path, &serde_json::to_string_pretty(&hv)?, 0o644)?;
        }
        Ok(())
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

    /// Run something on the lab's runtime (the emulators live there).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}
