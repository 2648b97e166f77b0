//! The lab's virtual machines: when the Proxmox emulator starts a VM, a real
//! sshd host comes up for it on its own loopback address, listening on the
//! lab's SSH port as a real VM listens on 22, with the lab's public key
//! authorized the way cloud-init would authorize the `sshkeys` it was given.
//! A stopped VM keeps its files and comes back on start; with filesystem
//! isolation, each VM has a private overlay of `/` so package installs act
//! for real without touching this machine.

use crate::emulators::proxmox::VmBackend;
use crate::sshd::{Isolation, SshdHost, SshdOptions};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// Starts an sshd host per started VM.
pub struct SshdVmBackend {
    isolation: Isolation,
    ssh_port: u16,
    /// An OpenSSH public key line authorized on every VM.
    authorized_key: String,
    vms: Mutex<HashMap<u32, SshdHost>>,
}

impl SshdVmBackend {
    pub fn new(isolation: Isolation, ssh_port: u16, authorized_key: String) -> Self {
        Self {
            isolation,
            ssh_port,
            authorized_key,
            vms: Mutex::new(HashMap::new()),
        }
    }

    /// The address a VM id gets: `127.77.X.Y`, stable per id.
    pub fn address_of(vmid: u32) -> Ipv4Addr {
        let [_, _, x, y] = vmid.to_be_bytes();
        Ipv4Addr::new(127, 77, x, y.max(1))
    }

    fn extra_config(&self, ip: Ipv4Addr) -> Vec<String> {
        vec![format!("ListenAddress {ip}:{}", self.ssh_port)]
    }

    /// Whether the host's sshd listens on the lab's SSH port at `ip`. sshd
    /// starts when it binds any of its addresses: one that finds `ip:PORT`
    /// taken (by another VM on the same address) logs it and runs on, and
    /// every connection meant for it would reach the other VM. Bounded:
    /// sshd logs each bind before it accepts connections. `from`: where in
    /// the log (which a restart appends to) this boot begins.
    fn check_lab_port(&self, host: &SshdHost, ip: Ipv4Addr, from: usize) -> Result<(), String> {
        let listening = format!("Server listening on {ip} port {}.", self.ssh_port);
        let failed = format!("Bind to port {} on {ip} failed", self.ssh_port);
        let t0 = std::time::Instant::now();
        loop {
            let all = host.log();
            let log = all.get(from..).unwrap_or("");
            if log.contains(&listening) {
                return Ok(());
            }
            if log.contains(&failed) || t0.elapsed() > std::time::Duration::from_secs(10) {
                return Err(format!(
                    "its sshd cannot listen on {ip}:{} (another host has that address?): {}",
                    self.ssh_port,
                    log.trim()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Run `f` on the host of a VM (e.g. to count commands in tests).
    pub fn with_vm<T>(&self, vmid: u32, f: impl FnOnce(&SshdHost) -> T) -> Option<T> {
        self.vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&vmid)
            .map(f)
    }

    /// Ids of VMs whose sshd runs.
    pub fn running(&self) -> Vec<u32> {
        let mut vms = self.vms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ids: Vec<u32> = vms
            .iter_mut()
            .filter_map(|(id, h)| h.is_running().then_some(*id))
            .collect();
        ids.sort_unstable();
        ids
    }
}

impl VmBackend for SshdVmBackend {
    fn start(&self, vmid: u32, name: &str) -> Result<Ipv4Addr, String> {
        let ip = Self::address_of(vmid);
        let mut vms = self.vms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(host) = vms.get_mut(&vmid) {
            if !host.is_running() {
                let from = host.log().len();
                host.restart(&self.extra_config(ip))
                    .map_err(|e| format!("vm {vmid} did not boot: {e}"))?;
                if let Err(e) = self.check_lab_port(host, ip, from) {
                    host.kill();
                    return Err(format!("vm {vmid} did not boot: {e}"));
                }
            }
            return Ok(ip);
        }
        let opts = SshdOptions {
            name: Some(name.to_owned()),
            isolation: self.isolation,
            address: Some(ip),
            extra_config: self.extra_config(ip),
        };
        let host = SshdHost::start(opts).map_err(|e| format!("vm {vmid} did not boot: {e}"))?;
        // Dropped (killed) on error.
        self.check_lab_port(&host, ip, 0)
            .map_err(|e| format!("vm {vmid} did not boot: {e}"))?;
        if self.isolation != Isolation::None {
            // The "VM image": apt knows no remote repository, only what a workflow adds.
            // Through the VM's root as this machine sees it: no process to start.
            prepare_apt_sources(&host.root()).map_err(|e| format!("vm {vmid}: cannot prepare its apt sources: {e}"))?;
        }
        let keys = host.dir().join("authorized_keys");
        let mut text = std::fs::read_to_string(&keys).unwrap_or_default();
        text.push_str(&self.authorized_key);
        text.push('\n');
        std::fs::write(&keys, text).map_err(|e| format!("vm {vmid}: cannot authorize the lab key: {e}"))?;
        vms.insert(vmid, host);
        Ok(ip)
    }

    fn stop(&self, vmid: u32) {
        if let Some(h) = self
            .vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&vmid)
        {
            h.kill();
        }
    }

    fn destroy(&self, vmid: u32) {
        // Dropping the host kills it and removes its directory: keys, overlay, everything.
        let gone = self
            .vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&vmid);
        drop(gone);
    }
}

/// Empty `sources.list` and no `sources.list.d` entries under `root`.
fn prepare_apt_sources(root: &std::path::Path) -> std::io::Result<()> {
    let apt = root.join("etc/apt");
    std::fs::write(apt.join("sources.list"), "")?;
    for e in std::fs::read_dir(apt.join("sources.list.d"))? {
        let p = e?.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("list" | "sources")) {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}
