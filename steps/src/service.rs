//! `service`: a system service running or stopped (or restarted, reloaded)
//! and enabled at boot or not.
//!
//! The service manager is detected on the host, in the same command that
//! reads the service's state: systemd when `/run/systemd/system` exists
//! (`systemctl show`/`is-enabled`, then `start`, `enable`, `daemon-reload`...),
//! otherwise the SysV scripts in `/etc/init.d` (`service NAME status|start|
//! stop|restart|reload`, enabled when `/etc/rc[2-5].d` has its `S` links,
//! changed with `update-rc.d`). Containers and the test lab, which run no
//! systemd, take the second path; `daemon_reload` means nothing there.
//!
//! After starting (or restarting) a service its state is read again: a
//! daemon that dies at once is a failure, not a success.

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::quote;
use serde_json::{Map, Value};

/// How long a started daemon must stay up to count as started.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(400);

pub struct ServiceKind;

const STATES: &[&str] = &["started", "stopped", "restarted", "reloaded"];

static INFO: KindInfo = KindInfo {
    name: "service",
    version: 1,
    doc: "Ensure a service is started or stopped (or restart/reload it) and enabled at boot or not; \
          systemd, or SysV init scripts where systemd does not run",
    params: &[
        ParamSpec::req(
            "name",
            ParamType::Str,
            "the service (systemd unit, or script in /etc/init.d)",
        ),
        ParamSpec::opt(
            "state",
            ParamType::Enum(STATES),
            "`started`, `stopped`, `restarted` (always restarts), `reloaded` (always reloads; starts a stopped service)",
        ),
        ParamSpec::opt("enabled", ParamType::Bool, "start at boot"),
        ParamSpec::opt(
            "daemon_reload",
            ParamType::Bool,
            "run `systemctl daemon-reload` first (after changing unit files)",
        ),
    ],
    one_of: &[],
    outputs: &["running", "enabled", "manager"],
    secret_outputs: &[],
    journal: true,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

impl StepKind for ServiceKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(ServiceStep::from_params(&Params(params))?))
    }
}

struct ServiceStep {
    name: String,
    state: Option<Want>,
    enabled: Option<bool>,
    daemon_reload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Systemd,
    SysV,
}

/// The service as the host reports it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    manager: Manager,
    installed: bool,
    running: bool,
    enabled: bool,
}

/// What to do, in this order.
#[derive(Debug, Default)]
struct Plan {
    daemon_reload: bool,
    enable: Option<bool>,
    action: Option<&'static str>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.daemon_reload && self.enable.is_none() && self.action.is_none()
    }
}

impl ServiceStep {
    fn from_params(p: &Params<'_>) -> Result<Self, StepError> {
        let name = p.str("name")?;
        if name.is_empty()
            || name.starts_with('-')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c))
        {
            return Err(StepError::param("name", format!("`{name}` is not a service name")));
        }
        let state = match p.opt_str("state")? {
            None => None,
            Some(_) => Some(match p.choice("state", STATES, "started")?.as_str() {
                "stopped" => Want::Stopped,
                "restarted" => Want::Restarted,
                "reloaded" => Want::Reloaded,
                _ => Want::Started,
            }),
        };
        let enabled = p.opt_bool("enabled")?;
        let daemon_reload = p.bool_or("daemon_reload", false)?;
        if state.is_none() && enabled.is_none() && !daemon_reload {
            return Err(StepError::failed(
                "nothing to do: give `state`, `enabled` or `daemon_reload`",
            ));
        }
        Ok(Self {
            name,
            state,
            enabled,
            daemon_reload,
        })
    }

    async fn probe(&self, cx: &StepContext) -> Result<Seen, StepError> {
        let n = quote(&self.name);
        let out = cx
            .sh(&format!(
                "n={n}\n\
                 if [ -d /run/systemd/system ]; then\n\
                 echo manager=systemd\n\
                 systemctl show -p LoadState -p ActiveState -- \"$n\"\n\
                 if systemctl is-enabled --quiet -- \"$n\" 2>/dev/null; then echo enabled=yes; else echo enabled=no; fi\n\
                 else\n\
                 echo manager=sysv\n\
                 if [ -x \"/etc/init.d/$n\" ]; then echo LoadState=loaded\n\
                 if service \"$n\" status >/dev/null 2>&1; then echo ActiveState=active; else echo ActiveState=inactive; fi\n\
                 else echo LoadState=not-found; echo ActiveState=inactive; fi\n\
                 if ls /etc/rc[2345].d/S[0-9][0-9]\"$n\" >/dev/null 2>&1; then echo enabled=yes; else echo enabled=no; fi\n\
                 fi"
            ))
            .await?;
        let text = out.stdout_str();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
                .to_owned()
        };
        Ok(Seen {
            manager: if get("manager") == "systemd" {
                Manager::Systemd
            } else {
                Manager::SysV
            },
            installed: !matches!(get("LoadState").as_str(), "not-found" | ""),
            running: matches!(get("ActiveState").as_str(), "active" | "reloading" | "activating"),
            enabled: get("enabled") == "yes",
        })
    }

    /// Whether the step only reloads systemd's unit files (the service itself need not exist).
    fn only_daemon_reload(&self) -> bool {
        self.daemon_reload && self.state.is_none() && self.enabled.is_none()
    }

    fn plan(&self, seen: &Seen) -> Plan {
        let mut plan = Plan {
            daemon_reload: self.daemon_reload && seen.manager == Manager::Systemd,
            ..Plan::default()
        };
        // A daemon-reload alone is the whole point of the step: it always runs.
        // With a state or `enabled`, it runs only along with their changes.
        let alone = self.only_daemon_reload();
        if let Some(want) = self.enabled {
            if want != seen.enabled {
                plan.enable = Some(want);
            }
        }
        plan.action = match (self.state, seen.running) {
            (Some(Want::Started), false) => Some("start"),
            (Some(Want::Stopped), true) => Some("stop"),
            (Some(Want::Restarted), _) => Some("restart"),
            (Some(Want::Reloaded), true) => Some("reload"),
            (Some(Want::Reloaded), false) => Some("start"),
            _ => None,
        };
        if !alone && plan.enable.is_none() && plan.action.is_none() {
            plan.daemon_reload = false;
        }
        plan
    }

    fn summary(&self, plan: &Plan) -> String {
        let mut parts = Vec::new();
        if plan.daemon_reload {
            parts.push("reload systemd's unit files".to_owned());
        }
        match plan.enable {
            Some(true) => parts.push(format!("enable `{}`", self.name)),
            Some(false) => parts.push(format!("disable `{}`", self.name)),
            None => {}
        }
        if let Some(a) = plan.action {
            parts.push(format!("{a} `{}`", self.name));
        }
        parts.join("; ")
    }

    fn outputs(seen: &Seen) -> Outputs {
        let mut o = Outputs::new();
        o.insert("running".into(), Value::Bool(seen.running));
        o.insert("enabled".into(), Value::Bool(seen.enabled));
        o.insert(
            "manager".into(),
            Value::from(match seen.manager {
                Manager::Systemd => "systemd",
                Manager::SysV => "sysv",
            }),
        );
        o
    }

    fn not_installed(&self, seen: &Seen) -> StepError {
        StepError::failed(match seen.manager {
            Manager::Systemd => format!("service `{}` is not installed (systemd knows no such unit)", self.name),
            Manager::SysV => format!(
                "service `{}` is not installed (no /etc/init.d/{} script)",
                self.name, self.name
            ),
        })
    }

    async fn run(&self, cx: &StepContext, seen: &Seen, plan: &Plan) -> Result<(), StepError> {
        let n = quote(&self.name);
        let mut script = String::from("set -e\n");
        match seen.manager {
            Manager::Systemd => {
                if plan.daemon_reload {
                    script.push_str("systemctl daemon-reload\n");
                }
                match plan.enable {
                    Some(true) => script.push_str(&format!("systemctl enable -- {n}\n")),
                    Some(false) => script.push_str(&format!("systemctl disable -- {n}\n")),
                    None => {}
                }
                if let Some(a) = plan.action {
                    script.push_str(&format!("systemctl {a} -- {n}\n"));
                }
            }
            Manager::SysV => {
                match plan.enable {
                    // `defaults` makes the links when there are none; `enable` turns K links into S.
                    Some(true) => script.push_str(&format!(
                        "update-rc.d {n} defaults >/dev/null\nupdate-rc.d {n} enable\n"
                    )),
                    Some(false) => script.push_str(&format!("update-rc.d {n} disable\n")),
                    None => {}
                }
                if let Some(a) = plan.action {
                    script.push_str(&format!("service {n} {a}\n"));
                }
            }
        }
        cx.sh(&script).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Step for ServiceStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let seen = self.probe(cx).await?;
        if !seen.installed && !self.only_daemon_reload() {
            if cx.mode.check {
                // In a dry run, an earlier step may be the one that would install it.
                return Ok(Check::Drift(Pending::new(format!(
                    "`{}` is not installed yet; it would be {}",
                    self.name,
                    self.summary(&self.plan(&seen))
                ))));
            }
            return Err(self.not_installed(&seen));
        }
        let plan = self.plan(&seen);
        if plan.is_empty() {
            return Ok(Check::InSync(Self::outputs(&seen)));
        }
        let mut pending = Pending::new(self.summary(&plan));
        pending.outputs = Self::outputs(&seen);
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let seen = self.probe(cx).await?;
        if !seen.installed && !self.only_daemon_reload() {
            return Err(self.not_installed(&seen));
        }
        let plan = self.plan(&seen);
        if !plan.is_empty() {
            self.run(cx, &seen, &plan).await?;
        }
        let mut after = self.probe(cx).await?;
        let should_run = match self.state {
            Some(Want::Started | Want::Restarted | Want::Reloaded) => Some(true),
            Some(Want::Stopped) => Some(false),
            None => None,
        };
        // A daemon that dies right after its start script returned is not started:
        // look again after it had a moment to fail.
        if should_run == Some(true) && after.running && plan.action.is_some() {
            tokio::time::sleep(SETTLE).await;
            after = self.probe(cx).await?;
        }
        if let Some(want) = should_run {
            if after.running != want {
                return Err(StepError::failed(format!(
                    "`{}` is {} after `{}`",
                    self.name,
                    if after.running { "still running" } else { "not running" },
                    plan.action.unwrap_or("nothing")
                )));
            }
        }
        Ok(Applied {
            changed: !plan.is_empty(),
            outputs: Self::outputs(&after),
            message: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;
    use serde_json::json;

    fn seen(running: bool, enabled: bool) -> Seen {
        Seen {
            manager: Manager::Systemd,
            installed: true,
            running,
            enabled,
        }
    }

    fn step(params: Value) -> ServiceStep {
        ServiceStep::from_params(&Params(params.as_object().unwrap())).unwrap()
    }

    #[test]
    fn plans() {
        let s = step(json!({"name": "x", "state": "started", "enabled": true, "daemon_reload": true}));
        assert!(s.plan(&seen(true, true)).is_empty());
        assert_eq!(
            s.summary(&s.plan(&seen(false, false))),
            "reload systemd's unit files; enable `x`; start `x`"
        );
        let s = step(json!({"name": "x", "state": "restarted"}));
        assert_eq!(s.summary(&s.plan(&seen(true, true))), "restart `x`");
        let s = step(json!({"name": "x", "state": "reloaded"}));
        assert_eq!(s.summary(&s.plan(&seen(false, true))), "start `x`");
        let s = step(json!({"name": "x", "daemon_reload": true}));
        assert_eq!(s.summary(&s.plan(&seen(true, true))), "reload systemd's unit files");
        let mut sysv = seen(true, true);
        sysv.manager = Manager::SysV;
        assert!(s.plan(&sysv).is_empty(), "no daemon-reload without systemd");
    }

    #[test]
    fn parameters_are_checked() {
        let b = |v: Value| build(&ServiceKind, v, json!({}), std::path::Path::new("."));
        assert!(b(json!({"name": "x"})).err().unwrap().message.contains("nothing to do"));
        assert!(b(json!({"name": "a b", "state": "started"})).is_err());
        assert!(b(json!({"name": "-x", "state": "started"})).is_err());
        b(json!({"name": "getty@tty1.service", "state": "started"})).unwrap();
    }
}
