//! The emulated cluster: VMs with their configuration and power state, and
//! the asynchronous tasks (UPIDs) that change them. A task's effect lands
//! when its configured duration has passed, computed from timestamps each
//! time the emulator is asked anything, so no timers run.

use super::VmBackend;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One VM (or template) as the emulator keeps it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub vmid: u32,
    pub node: String,
    /// The configuration as `GET .../config` shows it (`name` included).
    pub config: Map<String, Value>,
    pub running: bool,
    pub started_at: Option<Instant>,
    pub ip: Option<Ipv4Addr>,
    /// `clone`, `destroyed`: set while a task works on the VM.
    pub lock: Option<String>,
}

impl Vm {
    pub fn name(&self) -> &str {
        self.config.get("name").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_template(&self) -> bool {
        self.config
            .get("template")
            .is_some_and(|v| v.as_str() == Some("1") || v.as_i64() == Some(1))
    }

    /// Whether the `agent` option enables the guest agent (`1`, `enabled=1,...`, `1,fstrim_cloned_disks=1`).
    pub fn agent_enabled(&self) -> bool {
        let Some(v) = self.config.get("agent") else {
            return false;
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.split(',').any(|part| part == "1" || part == "enabled=1")
    }
}

/// What a task does to the cluster when it finishes.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A clone: on success the lock goes, on failure the half-made VM goes.
    FinishClone(u32),
    Start(u32),
    Stop(u32),
    Destroy(u32),
    None,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub pid: u32,
    pub starttime: u64,
    pub started: Instant,
    pub duration: Duration,
    /// `None` until finished; then `OK` or the error.
    pub exitstatus: Option<String>,
    pub failure: Option<String>,
    pub effect: Effect,
}

/// The whole emulated cluster.
pub struct Cluster {
    pub nodes: Vec<String>,
    pub vms: BTreeMap<u32, Vm>,
    pub tasks: Vec<Task>,
    pub task_duration: Duration,
    pub agent_delay: Duration,
    /// Failures queued for the next tasks: (task type or `*`, exit status).
    pub failures: VecDeque<(String, String)>,
    pub backend: Arc<dyn VmBackend>,
    next_pid: u32,
}

impl Cluster {
    pub fn new(nodes: Vec<String>, backend: Arc<dyn VmBackend>) -> Self {
        Self {
            nodes,
            vms: BTreeMap::new(),
            tasks: Vec::new(),
            task_duration: Duration::from_millis(200),
            agent_delay: Duration::from_millis(300),
            failures: VecDeque::new(),
            backend,
            next_pid: 0x1000,
        }
    }

    /// Start a task; its effect lands when it finishes.
    pub fn spawn(&mut self, node: &str, kind: &str, id: &str, user: &str, effect: Effect) -> String {
        self.next_pid += 1;
        let starttime = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let upid = format!(
            "UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:",
            pid = self.next_pid,
            pstart = self.next_pid * 7,
        );
        let pos = self.failures.iter().position(|(k, _)| k == kind || k == "*");
        let failure = pos.and_then(|i| self.failures.remove(i)).map(|(_, m)| m);
        self.tasks.push(Task {
            upid: upid.clone(),
            node: node.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            user: user.to_owned(),
            pid: self.next_pid,
            starttime,
            started: Instant::now(),
            duration: self.task_duration,
            exitstatus: None,
            failure,
            effect,
        });
        self.tick();
        upid
    }

    /// Finish the tasks whose time has come, applying their effects.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if t.exitstatus.is_none() && now.duration_since(t.started) >= t.duration {
                done.push(i);
            }
        }
        for i in done {
            let (effect, failure) = {
                let t = &self.tasks[i];
                (t.effect.clone(), t.failure.clone())
            };
            let status = match failure {
                Some(msg) => {
                    self.undo(&effect);
                    msg
                }
                None => match self.apply(&effect) {
                    Ok(()) => "OK".to_owned(),
                    Err(msg) => msg,
                },
            };
            self.tasks[i].exitstatus = Some(status);
        }
    }

    fn undo(&mut self, effect: &Effect) {
        match effect {
            Effect::FinishClone(id) => {
                self.vms.remove(id);
            }
            Effect::Destroy(id) => {
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.lock = None;
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, effect: &Effect) -> Result<(), String> {
        match effect {
            Effect::FinishClone(id) => {
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.lock = None;
                }
            }
            Effect::Start(id) => {
                let backend = self.backend.clone();
                let Some(vm) = self.vms.get_mut(id) else {
                    return Err(format!("VM {id} does not exist"));
                };
                let ip = backend.start(*id, vm.name())?;
                vm.running = true;
                vm.started_at = Some(Instant::now());
                vm.ip = Some(ip);
            }
            Effect::Stop(id) => {
                if let Some(vm) = self.vms.get_mut(id) {
                    if vm.running {
                        self.backend.stop(*id);
                    }
                    vm.running = false;
                    vm.started_at = None;
                    vm.ip = None;
                }
            }
            Effect::Destroy(id) => {
                self.vms.remove(id);
                self.backend.destroy(*id);
            }
            Effect::None => {}
        }
        Ok(())
    }

    pub fn task(&self, upid: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.upid == upid)
    }

    /// The lowest free VM id from 100 on.
    pub fn next_id(&self) -> u32 {
        (100..).find(|id| !self.vms.contains_key(id)).unwrap_or(100)
    }
}
