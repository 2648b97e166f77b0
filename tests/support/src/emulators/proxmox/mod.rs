//! An emulator of the Proxmox VE API (`https://HOST:8006/api2/json`) for the
//! `proxmox_vm` step's tests and the local lab: HTTPS with its own CA, API
//! token authentication, form or JSON parameters checked as strictly as the
//! real server, asynchronous tasks, and a guest agent that reports the IP a
//! pluggable [`VmBackend`] gave the started VM.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use flowrun_lab::emulators::proxmox::ProxmoxEmulator;
//! let pve = ProxmoxEmulator::start().await?;
//! // pve.url(), pve.ca_file(), pve.token_id(), pve.token_secret(), pve.node(), TEMPLATE_ID
//! pve.fail_next_requests(2);                 // two 503s
//! pve.fail_next_task("qmclone", "clone failed: no space left on device");
//! # Ok(()) }
//! ```

mod api;
mod params;
mod state;

use super::server::{lock, Recorded, Server};
use serde_json::{json, Map, Value};
use state::{Cluster, Vm};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The template the emulator starts with (a cloud-init image without the `agent` option).
pub const TEMPLATE_ID: u32 = 9000;

/// What runs a started VM. The default hands out loopback addresses and
/// starts nothing; the lab plugs in real sshd hosts. Calls happen on the
/// server's task when a start or stop task finishes: keep them quick.
pub trait VmBackend: Send + Sync {
    /// The VM was started: return the IPv4 address its guest agent will report.
    fn start(&self, vmid: u32, name: &str) -> Result<Ipv4Addr, String>;
    /// The VM was stopped (or shut down).
    fn stop(&self, vmid: u32);
    /// The VM was destroyed (with its disks): a later VM with the same id is a new machine.
    fn destroy(&self, _vmid: u32) {}
}

/// Hands out `127.0.0.10`, `127.0.0.11`, ... (one per VM id, stable) and runs nothing.
#[derive(Debug, Default)]
pub struct LoopbackBackend {
    assigned: Mutex<HashMap<u32, Ipv4Addr>>,
}

impl VmBackend for LoopbackBackend {
    fn start(&self, vmid: u32, _name: &str) -> Result<Ipv4Addr, String> {
        let mut assigned = lock(&self.assigned);
        let next = u8::try_from(10 + assigned.len()).map_err(|_| "no loopback addresses left".to_owned())?;
        Ok(*assigned.entry(vmid).or_insert(Ipv4Addr::new(127, 0, 0, next)))
    }

    fn stop(&self, _vmid: u32) {}
}

/// How to start the emulator.
pub struct ProxmoxOptions {
    pub nodes: Vec<String>,
    /// Templates present at start: (vmid, name), on the first node.
    pub templates: Vec<(u32, String)>,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret; a random UUID when `None`.
    pub token_secret: Option<String>,
    pub backend: Arc<dyn VmBackend>,
    /// How long each task runs before it stops (default 200 ms).
    pub task_duration: Duration,
    /// How long after a start the guest agent answers (default 300 ms).
    pub agent_delay: Duration,
}

impl Default for ProxmoxOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["pve".into()],
            templates: vec![(TEMPLATE_ID, "debian-12-cloudinit".into())],
            token_id: "root@pam!flowrun".into(),
            token_secret: None,
            backend: Arc::new(LoopbackBackend::default()),
            task_duration: Duration::from_millis(200),
            agent_delay: Duration::from_millis(300),
        }
    }
}

/// A VM as tests see it.
#[derive(Debug, Clone)]
pub struct VmInfo {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub template: bool,
    pub running: bool,
    pub ip: Option<Ipv4Addr>,
    pub lock: Option<String>,
    pub config: Map<String, Value>,
}

impl From<&Vm> for VmInfo {
    fn from(vm: &Vm) -> Self {
        Self {
            vmid: vm.vmid,
            node: vm.node.clone(),
            name: vm.name().to_owned(),
            template: vm.is_template(),
            running: vm.running,
            ip: vm.ip,
            lock: vm.lock.clone(),
            config: vm.config.clone(),
        }
    }
}

/// A running emulator; stops when dropped.
pub struct ProxmoxEmulator {
    server: Server,
    cluster: Arc<Mutex<Cluster>>,
    token_id: String,
    token_secret: String,
}

impl ProxmoxEmulator {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(ProxmoxOptions::default()).await
    }

    pub async fn start_with(opts: ProxmoxOptions) -> std::io::Result<Self> {
        let node = opts.nodes.first().cloned().unwrap_or_else(|| "pve".into());
        let mut cluster = Cluster::new(opts.nodes, opts.backend);
        cluster.task_duration = opts.task_duration;
        cluster.agent_delay = opts.agent_delay;
        for (vmid, name) in opts.templates {
            cluster.vms.insert(vmid, template(vmid, &node, &name));
        }
        let cluster = Arc::new(Mutex::new(cluster));
        let token_secret = opts.token_secret.unwrap_or_else(super::random_uuid);
        let handler = Arc::new(api::Api {
            cluster: cluster.clone(),
            token_id: opts.token_id.clone(),
            token_secret: token_secret.clone(),
        });
        let server = Server::start(handler, Some("pve")).await?;
        Ok(Self {
            server,
            cluster,
            token_id: opts.token_id,
            token_secret,
        })
    }

    /// `https://127.0.0.1:PORT` (what a workflow gives as `api_url`).
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The PEM file of the emulator's CA (for `ca_file`).
    pub fn ca_file(&self) -> &Path {
        self.server.ca().map(|ca| ca.ca_file()).unwrap_or(Path::new(""))
    }

    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }

    /// The first node's name.
    pub fn node(&self) -> String {
        lock(&self.cluster).nodes.first().cloned().unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The requests that were not GETs.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(Recorded::is_write).collect()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next_requests(&self, n: u32) {
        self.server.fail_next_requests(n);
    }

    /// Tasks started from now on run this long.
    pub fn set_task_duration(&self, d: Duration) {
        lock(&self.cluster).task_duration = d;
    }

    /// The guest agent answers this long after a VM started.
    pub fn set_agent_delay(&self, d: Duration) {
        lock(&self.cluster).agent_delay = d;
    }

    /// The next task of `kind` (`qmclone`, `qmstart`, `qmshutdown`, `qmstop`,
    /// `qmdestroy`, `qmconfig`, or `*` for any) fails with `exitstatus`.
    pub fn fail_next_task(&self, kind: &str, exitstatus: &str) {
        lock(&self.cluster)
            .failures
            .push_back((kind.to_owned(), exitstatus.to_owned()));
    }

    pub fn vm(&self, vmid: u32) -> Option<VmInfo> {
        let mut c = lock(&self.cluster);
        c.tick();
        c.vms.get(&vmid).map(VmInfo::from)
    }

    pub fn vm_by_name(&self, name: &str) -> Option<VmInfo> {
        self.vms().into_iter().find(|v| v.name == name)
    }

    pub fn vms(&self) -> Vec<VmInfo> {
        let mut c = lock(&self.cluster);
        c.tick();
        c.vms.values().map(VmInfo::from).collect()
    }

    /// Change a VM's configuration behind the client's back (drift); `None` removes the key.
    pub fn set_config(&self, vmid: u32, key: &str, value: Option<Value>) {
        if let Some(vm) = lock(&self.cluster).vms.get_mut(&vmid) {
            match value {
                Some(v) => vm.config.insert(key.to_owned(), v),
                None => vm.config.remove(key),
            };
        }
    }

    /// Power a VM off behind the client's back (drift).
    pub fn power_off(&self, vmid: u32) {
        let mut c = lock(&self.cluster);
        let backend = c.backend.clone();
        if let Some(vm) = c.vms.get_mut(&vmid) {
            if vm.running {
                backend.stop(vmid);
            }
            vm.running = false;
            vm.started_at = None;
            vm.ip = None;
        }
    }

    /// Add a template (or a VM, with `template: false`) directly.
    pub fn add_vm(&self, vmid: u32, name: &str, is_template: bool) {
        let mut c = lock(&self.cluster);
        let node = c.nodes.first().cloned().unwrap_or_default();
        let mut vm = template(vmid, &node, name);
        if !is_template {
            vm.config.remove("template");
        }
        c.vms.insert(vmid, vm);
    }
}

/// A cloud-init template as `qm template` leaves it: no `agent` option.
fn template(vmid: u32, node: &str, name: &str) -> Vm {
    let config = json!({
        "name": name,
        "template": 1,
        "cores": 1,
        "sockets": 1,
        "memory": 512,
        "ostype": "l26",
        "scsihw": "virtio-scsi-pci",
        "scsi0": format!("local-lvm:base-{vmid}-disk-0,size=2G"),
        "ide2": format!("local-lvm:vm-{vmid}-cloudinit,media=cdrom"),
        "net0": "virtio=BC:24:11:2A:00:01,bridge=vmbr0",
        "boot": "order=scsi0",
        "serial0": "socket",
        "vga": "serial0",
        "meta": "creation-qemu=8.1.5,ctime=1718000000",
        "vmgenid": "7c1c5f4e-2b7f-4c1d-9d7e-2f4d3b1a9e01",
        "smbios1": "uuid=0b6c3f0e-8a4f-4a51-9b55-5d2e2a8f4c11",
    });
    let Value::Object(config) = config else {
        unreachable!("a JSON object literal")
    };
    Vm {
        vmid,
        node: node.to_owned(),
        config,
        running: false,
        started_at: None,
        ip: None,
        lock: None,
    }
}

/// A random UUID (version 4 layout), for generation ids.
pub(crate) fn new_uuid() -> String {
    let mut b = [0u8; 16];
    for chunk in b.chunks_mut(8) {
        let n = std::collections::hash_map::RandomState::new();
        let v = std::hash::BuildHasher::hash_one(&n, std::time::Instant::now());
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
