//! `proxmox_vm`: a VM cloned from a template on Proxmox VE, configured
//! (cores, memory, cloud-init user, keys and network), powered as asked, and
//! its address, reported by the guest agent, handed to the inventory so the
//! same run can configure it over SSH. The VM is found by name, so re-runs
//! change only what differs; `absent` stops and destroys it.

mod config;
mod pve;

use crate::api::{segment, ApiClient, ClientOptions, Req};
use crate::params::Params;
use config::{changes, normalize_keys, Change, Desired};
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use pve::{Pve, Resource};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const STATES: &[&str] = &["present", "started", "stopped", "absent"];

static INFO: KindInfo = KindInfo {
    name: "proxmox_vm",
    version: 1,
    doc: "A Proxmox VE VM cloned from a template, configured, powered on or off, or destroyed; reports its IP",
    params: &[
        ParamSpec::req("api_url", ParamType::Url, "the API's address, `https://HOST:8006`"),
        ParamSpec::req("token_id", ParamType::Str, "the API token's id, `USER@REALM!NAME`"),
        ParamSpec::req("token_secret", ParamType::Str, "the API token's secret (a secret)"),
        ParamSpec::opt(
            "ca_file",
            ParamType::Str,
            "a PEM file of the CA that signed the server's certificate",
        ),
        ParamSpec::opt(
            "insecure",
            ParamType::Bool,
            "accept any certificate (loudly; prefer `ca_file`)",
        ),
        ParamSpec::req("node", ParamType::Str, "the node to create the VM on"),
        ParamSpec::req("name", ParamType::Str, "the VM's name, which identifies it"),
        ParamSpec::opt(
            "template",
            ParamType::Int,
            "the vmid of the template to clone (needed to create)",
        ),
        ParamSpec::opt(
            "vmid",
            ParamType::Int,
            "the new VM's id (default: the cluster's next free id)",
        ),
        ParamSpec::opt(
            "full",
            ParamType::Bool,
            "a full clone rather than a linked one (default true)",
        ),
        ParamSpec::opt("storage", ParamType::Str, "the storage for a full clone's disks"),
        ParamSpec::opt("cores", ParamType::Int, "CPU cores"),
        ParamSpec::opt("memory", ParamType::Int, "memory in MiB"),
        ParamSpec::opt("ciuser", ParamType::Str, "cloud-init user"),
        ParamSpec::opt(
            "sshkeys",
            ParamType::StrList,
            "cloud-init SSH public keys (OpenSSH format)",
        ),
        ParamSpec::opt(
            "ipconfig0",
            ParamType::Str,
            "cloud-init network of the first NIC (`ip=dhcp`)",
        ),
        ParamSpec::opt(
            "state",
            ParamType::Enum(STATES),
            "present, started (default), stopped or absent",
        ),
        ParamSpec::opt(
            "wait_ip_timeout",
            ParamType::Duration,
            "how long to wait for the guest agent's IP (default 5m)",
        ),
        ParamSpec::opt(
            "task_timeout",
            ParamType::Duration,
            "how long to wait for each Proxmox task (default 10m)",
        ),
        ParamSpec::opt(
            "inventory_host",
            ParamType::Str,
            "the inventory host whose address the IP fills",
        ),
    ],
    one_of: &[],
    outputs: &["vmid", "node", "ip", "status", "vmgenid"],
    secret_outputs: &[],
    journal: true,
};

pub struct ProxmoxVmKind;

impl StepKind for ProxmoxVmKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let id = |name: &str| -> Result<Option<u32>, StepError> {
            p.opt_i64(name)?
                .map(|n| u32::try_from(n).ok().filter(|n| *n >= 100))
                .map(|n| n.ok_or_else(|| StepError::param(name, "expected a VM id (an integer from 100 on)")))
                .transpose()
        };
        let positive = |name: &str| -> Result<Option<i64>, StepError> {
            match p.opt_i64(name)? {
                Some(n) if n < 1 => Err(StepError::param(name, format!("expected a positive integer, got {n}"))),
                other => Ok(other),
            }
        };
        let sshkeys = p.str_list("sshkeys")?.join("\n");
        let token_id = p.str("token_id")?;
        if !token_id.contains('@') || !token_id.contains('!') {
            return Err(StepError::param(
                "token_id",
                format!("expected `USER@REALM!TOKENNAME`, got `{token_id}`"),
            ));
        }
        let full = p.bool_or("full", true)?;
        let storage = p.opt_str("storage")?;
        if !full && storage.is_some() {
            return Err(StepError::param(
                "storage",
                "applies to full clones only (`full: true`)",
            ));
        }
        Ok(Box::new(ProxmoxVm {
            api_url: format!("{}/api2/json", p.str("api_url")?.trim_end_matches('/')),
            token_id,
            token_secret: p.str("token_secret")?,
            ca_file: p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f)),
            insecure: p.bool_or("insecure", false)?,
            node: p.str("node")?,
            name: p.str("name")?,
            template: id("template")?,
            vmid: id("vmid")?,
            full,
            storage,
            want: Desired {
                cores: positive("cores")?,
                memory: positive("memory")?,
                ciuser: p.opt_str("ciuser")?,
                sshkeys: (!sshkeys.trim().is_empty()).then(|| normalize_keys(&sshkeys)),
                ipconfig0: p.opt_str("ipconfig0")?,
            },
            state: p.choice("state", STATES, "started")?,
            wait_ip_timeout: p.opt_duration("wait_ip_timeout")?.unwrap_or(Duration::from_secs(300)),
            task_timeout: p.opt_duration("task_timeout")?.unwrap_or(Duration::from_secs(600)),
            inventory_host: p.opt_str("inventory_host")?,
            client: OnceLock::new(),
            vmgenid: std::sync::Mutex::new(None),
        }))
    }
}

pub struct ProxmoxVm {
    api_url: String,
    token_id: String,
    token_secret: String,
    ca_file: Option<PathBuf>,
    insecure: bool,
    node: String,
    name: String,
    template: Option<u32>,
    vmid: Option<u32>,
    full: bool,
    storage: Option<String>,
    want: Desired,
    state: String,
    wait_ip_timeout: Duration,
    task_timeout: Duration,
    inventory_host: Option<String>,
    client: OnceLock<ApiClient>,
    /// The generation id of the VM whose address was published (which machine it is).
    vmgenid: std::sync::Mutex<Option<String>>,
}

/// The VM as found, or not.
struct Observed {
    vm: Option<Found>,
    /// The template's node (it may live elsewhere than the new VM).
    template_node: Option<String>,
    /// The template's configuration, when the VM is still to be cloned from it.
    template_config: Option<Map<String, Value>>,
}

struct Found {
    vmid: u32,
    node: String,
    running: bool,
    config: Map<String, Value>,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Clone,
    Configure(Vec<Change>),
    Start,
    Shutdown,
    Stop,
    Destroy,
    WaitIp,
}

impl ProxmoxVm {
    fn client(&self, cx: &StepContext) -> Result<&ApiClient, StepError> {
        cx.add_secret(&self.token_secret);
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let mut opts = ClientOptions::new("proxmox", &self.api_url);
        opts.ca_file.clone_from(&self.ca_file);
        opts.insecure = self.insecure;
        opts.auth = Some((
            "authorization",
            format!("PVEAPIToken={}={}", self.token_id, self.token_secret),
        ));
        let client = ApiClient::new(opts)?;
        Ok(self.client.get_or_init(|| client))
    }

    fn label(&self, vmid: u32) -> String {
        format!("vm `{}` ({vmid})", self.name)
    }

    /// Read-only: find the VM by name (and check `vmid` against it).
    async fn observe(&self, pve: &Pve<'_>) -> Result<Observed, StepError> {
        let all = pve.vms().await?;
        let named: Vec<&Resource> = all.iter().filter(|r| r.name == self.name && !r.template).collect();
        if named.len() > 1 {
            let ids: Vec<String> = named.iter().map(|r| r.vmid.to_string()).collect();
            return Err(StepError::failed(format!(
                "several VMs are named `{}` ({}): rename all but one, or remove them",
                self.name,
                ids.join(", ")
            )));
        }
        if let Some(want) = self.vmid {
            if let Some(other) = all
                .iter()
                .find(|r| r.vmid == want && (r.name != self.name || r.template))
            {
                return Err(StepError::param(
                    "vmid",
                    format!("{want} is taken by `{}` on node `{}`", other.name, other.node),
                ));
            }
            if let Some(found) = named.first().filter(|r| r.vmid != want) {
                return Err(StepError::param(
                    "vmid",
                    format!("vm `{}` exists with id {}, not {want}", self.name, found.vmid),
                ));
            }
        }
        let template_node = self
            .template
            .and_then(|t| all.iter().find(|r| r.vmid == t))
            .map(|r| r.node.clone());
        let template_config = match (&template_node, named.first(), self.template) {
            (Some(n), None, Some(t)) if self.state != "absent" => Some(pve.config(n, t).await?),
            _ => None,
        };
        let vm = match named.first() {
            None => None,
            Some(r) => Some(Found {
                vmid: r.vmid,
                node: r.node.clone(),
                running: pve.running(&r.node, r.vmid).await?,
                config: pve.config(&r.node, r.vmid).await?,
            }),
        };
        Ok(Observed {
            vm,
            template_node,
            template_config,
        })
    }

    fn plan(&self, obs: &Observed) -> Result<Vec<Action>, StepError> {
        let mut actions = Vec::new();
        match (&obs.vm, self.state.as_str()) {
            (None, "absent") => {}
            (Some(vm), "absent") => {
                if vm.running {
                    actions.push(Action::Stop);
                }
                actions.push(Action::Destroy);
            }
            (None, state) => {
                let Some(template) = self.template else {
                    return Err(StepError::param(
                        "template",
                        format!("is required to create vm `{}`, which does not exist", self.name),
                    ));
                };
                if obs.template_node.is_none() {
                    return Err(StepError::param(
                        "template",
                        format!("no VM or template {template} in the cluster"),
                    ));
                }
                actions.push(Action::Clone);
                let diff = changes(&self.want, obs.template_config.as_ref().unwrap_or(&Map::new()));
                if !diff.is_empty() {
                    actions.push(Action::Configure(diff));
                }
                if state == "started" {
                    actions.extend([Action::Start, Action::WaitIp]);
                }
            }
            (Some(vm), state) => {
                let diff = changes(&self.want, &vm.config);
                if !diff.is_empty() {
                    actions.push(Action::Configure(diff));
                }
                match state {
                    "started" if !vm.running => actions.extend([Action::Start, Action::WaitIp]),
                    "stopped" if vm.running => actions.push(Action::Shutdown),
                    _ => {}
                }
            }
        }
        Ok(actions)
    }

    fn describe(&self, action: &Action, vmid: Option<u32>, running: bool) -> String {
        let vm = vmid.map_or_else(|| format!("vm `{}`", self.name), |id| format!("vm {id}"));
        match action {
            Action::Clone => format!(
                "clone template {} as vm `{}`{}",
                self.template.unwrap_or_default(),
                self.name,
                self.vmid.map(|v| format!(" (id {v})")).unwrap_or_default()
            ),
            Action::Configure(changes) => {
                let list: Vec<String> = changes.iter().map(Change::describe).collect();
                let later = if running {
                    " (takes effect at the next boot)"
                } else {
                    ""
                };
                format!("{}{later}", list.join(", "))
            }
            Action::Start => format!("start {vm}"),
            Action::Shutdown => format!("shut down {vm}"),
            Action::Stop => format!("stop {vm}"),
            Action::Destroy => format!("destroy {vm}"),
            Action::WaitIp => format!("wait for the guest agent of {vm} to report an IP address"),
        }
    }

    fn outputs(&self, vmid: Option<u32>, node: &str, ip: Option<String>, status: &str) -> Outputs {
        let mut o = Outputs::new();
        o.insert("vmid".into(), vmid.map_or(Value::Null, |v| json!(v)));
        o.insert("node".into(), json!(node));
        o.insert("ip".into(), ip.map_or(Value::Null, Value::String));
        o.insert("status".into(), json!(status));
        let genid = self
            .vmgenid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        o.insert("vmgenid".into(), genid.map_or(Value::Null, Value::String));
        o
    }

    /// The VM's address fills its inventory host, and its generation id says
    /// which machine it is (a re-created VM at the same address is a new host).
    async fn publish_ip(
        &self,
        cx: &StepContext,
        pve: &Pve<'_>,
        node: &str,
        vmid: u32,
        ip: &str,
    ) -> Result<(), StepError> {
        let config = pve.config(node, vmid).await?;
        let genid = config.get("vmgenid").and_then(Value::as_str).map_or_else(
            || {
                format!(
                    "{node}/{vmid}/{}",
                    config.get("meta").and_then(Value::as_str).unwrap_or("")
                )
            },
            str::to_owned,
        );
        if let Some(host) = &self.inventory_host {
            cx.set_host_address(host, ip)?;
            cx.set_host_instance(host, &genid)?;
        }
        *self.vmgenid.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(genid);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step for ProxmoxVm {
    /// From the journal: the VM's last known IP fills the inventory host again.
    fn restored(&self, outputs: &Outputs, hosts: &flowrun_engine::host::HostTable) {
        if let (Some(host), Some(ip)) = (&self.inventory_host, outputs.get("ip").and_then(Value::as_str)) {
            let _ = hosts.set_address(host, ip);
            if let Some(genid) = outputs.get("vmgenid").and_then(Value::as_str) {
                let _ = hosts.set_instance(host, genid);
            }
        }
    }

    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let pve = Pve { api: self.client(cx)? };
        let obs = self.observe(&pve).await?;
        let mut actions = self.plan(&obs)?;
        let (vmid, node, running) = match &obs.vm {
            Some(vm) => (Some(vm.vmid), vm.node.clone(), vm.running),
            None => (self.vmid, self.node.clone(), false),
        };
        let mut ip = None;
        // A running VM that should stay so: its address is part of being in state.
        if actions.is_empty() && running && matches!(self.state.as_str(), "started" | "present") {
            if let Some(vmid) = vmid {
                ip = pve.agent_ip(&node, vmid).await.ok().flatten().map(|ip| ip.to_string());
                match &ip {
                    Some(ip) => self.publish_ip(cx, &pve, &node, vmid, ip).await?,
                    None if self.state == "started" => actions.push(Action::WaitIp),
                    None => {}
                }
            }
        }
        let status = match (&obs.vm, running) {
            (None, _) => "absent",
            (Some(_), true) => "running",
            (Some(_), false) => "stopped",
        };
        if actions.is_empty() {
            return Ok(Check::InSync(self.outputs(vmid, &node, ip, status)));
        }
        let lines: Vec<String> = actions.iter().map(|a| self.describe(a, vmid, running)).collect();
        let mut pending = Pending::new(lines.join("; ")).with_diff(lines.join("\n"));
        pending.outputs = self.outputs(vmid, &node, None, status);
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let pve = Pve { api: self.client(cx)? };
        // Look again: the world may have moved since the check.
        let obs = self.observe(&pve).await?;
        let actions = self.plan(&obs)?;
        let (mut vmid, mut node, mut running) = match &obs.vm {
            Some(vm) => (vm.vmid, vm.node.clone(), vm.running),
            None => (0, self.node.clone(), false),
        };
        let mut ip = None;
        let mut done = Vec::new();
        let timeout = self.task_timeout;
        for action in &actions {
            let line = self.describe(action, (vmid != 0).then_some(vmid), running);
            let qemu = |id: u32| format!("/nodes/{}/qemu/{id}", segment(&node));
            match action {
                Action::Clone => {
                    vmid = self.clone_vm(&pve, &obs, &line).await?;
                    node.clone_from(&self.node);
                }
                Action::Configure(planned) => {
                    // After a clone, compare with what the clone really holds.
                    let fresh;
                    let list = if obs.vm.is_none() {
                        fresh = changes(&self.want, &pve.config(&node, vmid).await?);
                        &fresh
                    } else {
                        planned
                    };
                    if list.is_empty() {
                        continue;
                    }
                    let form: Vec<(String, String)> = list.iter().map(|c| (c.key.to_owned(), c.wire.clone())).collect();
                    pve.task(Req::post(format!("{}/config", qemu(vmid))).form(form), &line, timeout)
                        .await?;
                }
                Action::Start => {
                    pve.task(Req::post(format!("{}/status/start", qemu(vmid))), &line, timeout)
                        .await?;
                    running = true;
                }
                Action::Shutdown => {
                    let graceful = pve
                        .task(Req::post(format!("{}/status/shutdown", qemu(vmid))), &line, timeout)
                        .await;
                    if let Err(e) = graceful {
                        tracing::warn!("{}: {e}; stopping it instead", self.label(vmid));
                        pve.task(Req::post(format!("{}/status/stop", qemu(vmid))), &line, timeout)
                            .await?;
                    }
                    running = false;
                }
                Action::Stop => {
                    pve.task(Req::post(format!("{}/status/stop", qemu(vmid))), &line, timeout)
                        .await?;
                    running = false;
                }
                Action::Destroy => {
                    let req = Req::delete(qemu(vmid)).query("purge", 1);
                    pve.task(req, &line, timeout).await?;
                }
                Action::WaitIp => {
                    let addr = pve.wait_ip(&node, vmid, self.wait_ip_timeout).await?.to_string();
                    self.publish_ip(cx, &pve, &node, vmid, &addr).await?;
                    ip = Some(addr);
                }
            }
            done.push(line);
        }
        // A running VM changed in place: its address is still an output.
        if ip.is_none() && running && vmid != 0 {
            ip = self.address_in_place(cx, &pve, &node, vmid).await?;
        }
        Ok(self.applied(vmid, &node, ip, running, &done))
    }
}

impl ProxmoxVm {
    /// Clone the template into a new VM; its id. `/cluster/nextid` only
    /// suggests an id: clones made at the same time (by this run or anyone)
    /// race for it, and the loser is told the config file already exists.
    /// Take the next free id then, a bounded number of times.
    async fn clone_vm(&self, pve: &Pve<'_>, obs: &Observed, line: &str) -> Result<u32, StepError> {
        let template = self.template.unwrap_or_default();
        let src_node = obs.template_node.clone().unwrap_or_else(|| self.node.clone());
        let path = format!("/nodes/{}/qemu/{template}/clone", segment(&src_node));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let vmid = match self.vmid {
                Some(v) => v,
                None => pve.next_id().await?,
            };
            let mut form = vec![
                ("newid".to_owned(), vmid.to_string()),
                ("name".to_owned(), self.name.clone()),
                ("full".to_owned(), if self.full { "1" } else { "0" }.to_owned()),
            ];
            if src_node != self.node {
                form.push(("target".into(), self.node.clone()));
            }
            if let Some(s) = &self.storage {
                form.push(("storage".into(), s.clone()));
            }
            match pve
                .task(Req::post(path.clone()).form(form), line, self.task_timeout)
                .await
            {
                Err(e) if self.vmid.is_none() && attempt < 10 && e.message.contains("already exists") => {
                    tracing::info!("vm id {vmid} was taken by a concurrent clone; taking the next one");
                }
                r => {
                    r?;
                    return Ok(vmid);
                }
            }
        }
    }

    /// What `apply` did, as outputs: the VM's state after `done`.
    fn applied(&self, vmid: u32, node: &str, ip: Option<String>, running: bool, done: &[String]) -> Applied {
        let status = if self.state == "absent" {
            "absent"
        } else if running {
            "running"
        } else {
            "stopped"
        };
        let vmid = (self.state != "absent" && vmid != 0).then_some(vmid);
        let mut applied = Applied::changed(self.outputs(vmid, node, ip, status));
        applied.changed = !done.is_empty();
        applied.message(done.join("; "))
    }

    /// The address of a running VM changed in place (published, as after a
    /// start): waited for with `state: started`, asked once with `present`.
    async fn address_in_place(
        &self,
        cx: &StepContext,
        pve: &Pve<'_>,
        node: &str,
        vmid: u32,
    ) -> Result<Option<String>, StepError> {
        let addr = match self.state.as_str() {
            "started" => Some(pve.wait_ip(node, vmid, self.wait_ip_timeout).await?),
            "present" => pve.agent_ip(node, vmid).await.ok().flatten(),
            _ => None,
        };
        let Some(addr) = addr else { return Ok(None) };
        self.publish_ip(cx, pve, node, vmid, &addr.to_string()).await?;
        Ok(Some(addr.to_string()))
    }
}
