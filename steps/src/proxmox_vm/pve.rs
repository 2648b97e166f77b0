//! Typed calls to the Proxmox VE API for the `proxmox_vm` step: find a VM by
//! name, read its configuration and power state, wait for a task (UPID) to
//! stop, and ask the guest agent for the VM's address. Reads only, except
//! [`Pve::task`], which sends a request that starts a task and waits for it.

use crate::api::{segment, ApiClient, ApiError, Req};
use flowrun_engine::step::StepError;
use serde_json::{Map, Value};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// A VM as `/cluster/resources` lists it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub template: bool,
}

pub struct Pve<'a> {
    pub api: &'a ApiClient,
}

fn data(v: Value) -> Value {
    match v {
        Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

impl Pve<'_> {
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        Ok(data(self.api.send(Req::get(path)).await?.json))
    }

    /// Every QEMU VM and template in the cluster.
    pub async fn vms(&self) -> Result<Vec<Resource>, StepError> {
        let list = data(
            self.api
                .send(Req::get("/cluster/resources").query("type", "vm"))
                .await?
                .json,
        );
        let Value::Array(items) = list else {
            return Err(StepError::failed(
                "proxmox GET /cluster/resources: expected a list of resources",
            ));
        };
        Ok(items
            .iter()
            .filter(|r| r.get("type").and_then(Value::as_str) == Some("qemu"))
            .filter_map(|r| {
                Some(Resource {
                    vmid: u32::try_from(int(r.get("vmid")?)?).ok()?,
                    name: r.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                    node: r.get("node").and_then(Value::as_str)?.to_owned(),
                    template: r.get("template").and_then(int) == Some(1),
                })
            })
            .collect())
    }

    pub async fn config(&self, node: &str, vmid: u32) -> Result<Map<String, Value>, StepError> {
        match self
            .get(&format!("/nodes/{}/qemu/{vmid}/config", segment(node)))
            .await?
        {
            Value::Object(m) => Ok(m),
            _ => Err(StepError::failed(format!(
                "proxmox GET config of vm {vmid}: expected an object"
            ))),
        }
    }

    pub async fn running(&self, node: &str, vmid: u32) -> Result<bool, StepError> {
        let status = self
            .get(&format!("/nodes/{}/qemu/{vmid}/status/current", segment(node)))
            .await?;
        Ok(status.get("status").and_then(Value::as_str) == Some("running"))
    }

    /// The first free VM id.
    pub async fn next_id(&self) -> Result<u32, StepError> {
        let v = self.get("/cluster/nextid").await?;
        int(&v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| StepError::failed(format!("proxmox GET /cluster/nextid: expected an id, got {v}")))
    }

    /// Send a request that starts a task (its answer is a UPID) and wait for the task to stop.
    /// An answer without a UPID (`null`) means the server had nothing to do.
    pub async fn task(&self, req: Req, what: &str, timeout: Duration) -> Result<(), StepError> {
        let upid = data(self.api.send(req).await?.json);
        match upid {
            Value::String(upid) => self.wait_task(&upid, what, timeout).await,
            _ => Ok(()),
        }
    }

    async fn wait_task(&self, upid: &str, what: &str, timeout: Duration) -> Result<(), StepError> {
        // UPID:NODE:PID:PSTART:STARTTIME:TYPE:ID:USER:
        let node = upid.split(':').nth(1).filter(|n| !n.is_empty()).ok_or_else(|| {
            StepError::failed(format!(
                "{what}: proxmox answered `{upid}` where a task id (UPID) was expected"
            ))
        })?;
        let path = format!("/nodes/{}/tasks/{}/status", segment(node), segment(upid));
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let status = self.get(&path).await?;
            if status.get("status").and_then(Value::as_str) == Some("stopped") {
                let exit = status.get("exitstatus").and_then(Value::as_str).unwrap_or("unknown");
                return if exit == "OK" || exit.starts_with("WARNINGS") {
                    Ok(())
                } else {
                    Err(StepError::failed(format!("{what} failed: {exit}")))
                };
            }
            if Instant::now() >= deadline {
                return Err(StepError::failed(format!(
                    "{what} did not finish within {}s (task {upid} is still running)",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One question to the guest agent: the VM's address, if it reports one yet.
    pub async fn agent_ip(&self, node: &str, vmid: u32) -> Result<Option<Ipv4Addr>, ApiError> {
        let path = format!("/nodes/{}/qemu/{vmid}/agent/network-get-interfaces", segment(node));
        let v = data(self.api.send(Req::get(path).no_retry()).await?.json);
        Ok(pick_ip(&v))
    }

    /// Ask the guest agent until it reports an address; it answers 500 until it runs.
    pub async fn wait_ip(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Ipv4Addr, StepError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(200);
        let mut last = String::from("the guest agent reported no IPv4 address");
        loop {
            match self.agent_ip(node, vmid).await {
                Ok(Some(ip)) => return Ok(ip),
                Ok(None) => {}
                // Not running yet (500), or the API is briefly away.
                Err(e) if e.status.is_none_or(|s| s >= 500) => last = e.message,
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(StepError::failed(format!(
                    "vm {vmid} reported no IP address within {}s: {last}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// An integer given as a JSON number or a string (`/cluster/nextid` answers `"100"`).
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Interfaces that are not the VM's own address: loopback and container bridges.
const VIRTUAL: &[&str] = &["lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "lxc"];

/// The first IPv4 address of a real interface in a `network-get-interfaces` answer.
pub fn pick_ip(v: &Value) -> Option<Ipv4Addr> {
    let ifaces = v.get("result")?.as_array()?;
    ifaces
        .iter()
        .filter(|i| {
            let name = i.get("name").and_then(Value::as_str).unwrap_or("");
            !VIRTUAL
                .iter()
                .any(|p| name == *p || (p.len() > 2 && name.starts_with(p)))
        })
        .flat_map(|i| i.get("ip-addresses").and_then(Value::as_array).into_iter().flatten())
        .filter(|a| a.get("ip-address-type").and_then(Value::as_str) == Some("ipv4"))
        .filter_map(|a| a.get("ip-address")?.as_str()?.parse::<Ipv4Addr>().ok())
        .find(|ip| *ip != Ipv4Addr::LOCALHOST && !ip.is_link_local() && !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_first_real_ipv4() {
        let v = json!({"result": [
            {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]},
            {"name": "docker0", "ip-addresses": [{"ip-address": "172.17.0.1", "ip-address-type": "ipv4", "prefix": 16}]},
            {"name": "ens18", "ip-addresses": [
                {"ip-address": "fe80::1", "ip-address-type": "ipv6", "prefix": 64},
                {"ip-address": "192.0.2.10", "ip-address-type": "ipv4", "prefix": 24}
            ]}
        ]});
        assert_eq!(pick_ip(&v), Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(pick_ip(&json!({"result": []})), None);
    }
}
