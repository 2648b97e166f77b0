//! The Proxmox VE API routes (`/api2/json/...`): authentication by API token,
//! `{"data": ...}` envelopes, errors in the HTTP reason phrase as the real
//! server sends them, 501 for anything not implemented.

use super::params::{self, opt, req, Params, Spec, Ty};
use super::state::{Cluster, Effect, Vm};
use crate::emulators::server::{lock, Handler, Reply, Request};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct Api {
    pub cluster: Arc<Mutex<Cluster>>,
    pub token_id: String,
    pub token_secret: String,
}

/// `{"data": value}` with 200.
fn ok(data: Value) -> Reply {
    Reply::json(200, &json!({ "data": data }))
}

/// An error the way Proxmox sends it: the message in the reason phrase, `{"data":null}`.
fn fail(status: u16, message: impl Into<String>) -> Reply {
    Reply::json(status, &json!({ "data": null })).reason(message)
}

fn not_implemented(req: &Request) -> Reply {
    fail(501, format!("Method '{} {}' not implemented", req.method, req.path))
}

const CONFIG_PARAMS: &[Spec] = &[
    opt("cores", Ty::Int),
    opt("sockets", Ty::Int),
    opt("memory", Ty::Int),
    opt("balloon", Ty::Int),
    opt("cpu", Ty::Str),
    opt("name", Ty::Str),
    opt("description", Ty::Str),
    opt("tags", Ty::Str),
    opt("onboot", Ty::Bool),
    opt("agent", Ty::Str),
    opt("ciuser", Ty::Str),
    opt("cipassword", Ty::Str),
    opt("citype", Ty::Enum(&["configdrive2", "nocloud", "opennebula"])),
    opt("sshkeys", Ty::UrlEncoded),
    opt("ipconfig0", Ty::Str),
    opt("ipconfig1", Ty::Str),
    opt("nameserver", Ty::Str),
    opt("searchdomain", Ty::Str),
    opt("net0", Ty::Str),
    opt("delete", Ty::Str),
    opt("digest", Ty::Str),
    opt("skiplock", Ty::Bool),
];

impl Api {
    fn authorized(&self, req: &Request) -> Result<String, Reply> {
        let Some(value) = req.header("authorization") else {
            return Err(fail(401, "No ticket"));
        };
        let expected = format!("PVEAPIToken={}={}", self.token_id, self.token_secret);
        if value == expected {
            Ok(self.token_id.clone())
        } else {
            Err(fail(401, "authentication failure"))
        }
    }

    fn route(&self, req: &Request, user: &str) -> Reply {
        let segs = req.segments();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let Some(rest) = segs.strip_prefix(&["api2", "json"]) else {
            return not_implemented(req);
        };
        let mut c = lock(&self.cluster);
        c.tick();
        let m = req.method.as_str();
        match (m, rest) {
            ("GET", ["version"]) => ok(json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"})),
            ("GET", ["cluster", "nextid"]) => with(req, &[opt("vmid", Ty::VmId)], |p| match p.int("vmid") {
                Some(id) if c.vms.contains_key(&(id as u32)) => fail(400, format!("VM {id} already exists")),
                Some(id) => ok(json!(id.to_string())),
                None => ok(json!(c.next_id().to_string())),
            }),
            ("GET", ["cluster", "resources"]) => {
                with(req, &[opt("type", Ty::Enum(&["vm", "storage", "node", "sdn"]))], |p| {
                    resources(&c, p.str("type"))
                })
            }
            ("GET", ["nodes"]) => ok(Value::Array(
                c.nodes
                    .iter()
                    .map(|n| json!({"node": n, "status": "online", "type": "node"}))
                    .collect(),
            )),
            (_, ["nodes", node, tail @ ..]) => {
                if !c.nodes.iter().any(|n| n == node) {
                    return fail(
                        500,
                        format!("hostname lookup '{node}' failed - failed to get address info for: {node}"),
                    );
                }
                self.node_route(req, &mut c, node, tail, user)
            }
            _ => not_implemented(req),
        }
    }

    fn node_route(&self, req: &Request, c: &mut Cluster, node: &str, tail: &[&str], user: &str) -> Reply {
        let m = req.method.as_str();
        match (m, tail) {
            ("GET", ["tasks", upid, "status"]) => with(req, &[], |_| task_status(c, upid)),
            ("GET", ["qemu"]) => with(req, &[opt("full", Ty::Bool)], |_| {
                ok(Value::Array(
                    c.vms.values().filter(|v| v.node == node).map(vm_summary).collect(),
                ))
            }),
            (_, ["qemu", vmid, rest @ ..]) => {
                let Ok(vmid) = vmid.parse::<u32>() else {
                    return params::verification_failed(
                        [(
                            "vmid".to_owned(),
                            json!(format!("type check ('integer') failed - got '{vmid}'")),
                        )]
                        .into_iter()
                        .collect(),
                    );
                };
                if c.vms.get(&vmid).is_none_or(|v| v.node != node) {
                    // The real server loads the VM's config before anything else.
                    if is_vm_route(m, rest) {
                        return fail(
                            500,
                            format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
                        );
                    }
                    return not_implemented(req);
                }
                self.vm_route(req, c, node, vmid, rest, user)
            }
            _ => not_implemented(req),
        }
    }

    fn vm_route(&self, req: &Request, c: &mut Cluster, node: &str, vmid: u32, rest: &[&str], user: &str) -> Reply {
        let m = req.method.as_str();
        match (m, rest) {
            ("GET", []) => ok(json!([{"subdir": "config"}, {"subdir": "status"}, {"subdir": "agent"}])),
            ("DELETE", []) => with(
                req,
                &[
                    opt("purge", Ty::Bool),
                    opt("destroy-unreferenced-disks", Ty::Bool),
                    opt("skiplock", Ty::Bool),
                ],
                |_| {
                    let vm = &c.vms[&vmid];
                    if vm.running {
                        return fail(500, format!("VM {vmid} is running - destroy failed"));
                    }
                    if let Some(l) = &vm.lock {
                        return fail(500, format!("VM is locked ({l})"));
                    }
                    if let Some(vm) = c.vms.get_mut(&vmid) {
                        vm.lock = Some("destroyed".into());
                    }
                    ok(json!(c.spawn(
                        node,
                        "qmdestroy",
                        &vmid.to_string(),
                        user,
                        Effect::Destroy(vmid)
                    )))
                },
            ),
            ("POST", ["clone"]) => with(
                req,
                &[
                    req_spec_newid(),
                    opt("name", Ty::Str),
                    opt("description", Ty::Str),
                    opt("full", Ty::Bool),
                    opt("target", Ty::Str),
                    opt("storage", Ty::Str),
                    opt("format", Ty::Enum(&["raw", "qcow2", "vmdk"])),
                    opt("pool", Ty::Str),
                    opt("snapname", Ty::Str),
                    opt("bwlimit", Ty::Int),
                ],
                |p| clone(c, node, vmid, &p, user),
            ),
            ("GET", ["config"]) => with(req, &[opt("current", Ty::Bool), opt("snapshot", Ty::Str)], |_| {
                let vm = &c.vms[&vmid];
                let mut cfg = vm.config.clone();
                cfg.insert("digest".into(), json!(digest(&vm.config)));
                if let Some(l) = &vm.lock {
                    cfg.insert("lock".into(), json!(l));
                }
                ok(Value::Object(cfg))
            }),
            ("POST" | "PUT", ["config"]) => with(req, CONFIG_PARAMS, |p| {
                if let Err(reply) = set_config(c, vmid, p) {
                    return reply;
                }
                if m == "POST" {
                    let saved = c.task_duration;
                    c.task_duration = std::time::Duration::ZERO;
                    let upid = c.spawn(node, "qmconfig", &vmid.to_string(), user, Effect::None);
                    c.task_duration = saved;
                    ok(json!(upid))
                } else {
                    ok(Value::Null)
                }
            }),
            ("GET", ["status"]) => ok(json!([{"subdir": "current"}, {"subdir": "start"}, {"subdir": "stop"}])),
            ("GET", ["status", "current"]) => with(req, &[], |_| ok(vm_status(&c.vms[&vmid]))),
            ("POST", ["status", op @ ("start" | "stop" | "shutdown")]) => {
                let specs: &[Spec] = match *op {
                    "start" => &[opt("timeout", Ty::Int), opt("skiplock", Ty::Bool)],
                    "stop" => &[
                        opt("timeout", Ty::Int),
                        opt("skiplock", Ty::Bool),
                        opt("keepActive", Ty::Bool),
                    ],
                    _ => &[
                        opt("timeout", Ty::Int),
                        opt("forceStop", Ty::Bool),
                        opt("keepActive", Ty::Bool),
                        opt("skiplock", Ty::Bool),
                    ],
                };
                with(req, specs, |_| power(c, node, vmid, op, user))
            }
            ("GET", ["agent", "network-get-interfaces"]) => with(req, &[], |_| agent_interfaces(c, vmid)),
            _ => not_implemented(req),
        }
    }
}

fn req_spec_newid() -> Spec {
    req("newid", Ty::VmId)
}

fn is_vm_route(m: &str, rest: &[&str]) -> bool {
    matches!(
        (m, rest),
        ("GET" | "DELETE", [])
            | ("POST", ["clone"])
            | ("GET" | "POST" | "PUT", ["config"])
            | ("GET", ["status", "current"])
            | ("POST", ["status", "start" | "stop" | "shutdown"])
            | ("GET", ["agent", "network-get-interfaces"])
    )
}

/// Parse parameters against `specs`, then run `f`; a verification failure answers 400.
fn with(req: &Request, specs: &[Spec], f: impl FnOnce(Params) -> Reply) -> Reply {
    match params::parse(req, specs) {
        Ok(p) => f(p),
        Err(reply) => reply,
    }
}

fn resources(c: &Cluster, kind: Option<&str>) -> Reply {
    let mut out: Vec<Value> = Vec::new();
    if matches!(kind, None | Some("vm")) {
        out.extend(c.vms.values().map(|vm| {
            json!({
                "id": format!("qemu/{}", vm.vmid),
                "type": "qemu",
                "vmid": vm.vmid,
                "name": vm.name(),
                "node": vm.node,
                "status": if vm.running { "running" } else { "stopped" },
                "template": u8::from(vm.is_template()),
                "maxcpu": vm.config.get("cores").and_then(num).unwrap_or(1),
                "maxmem": vm.config.get("memory").and_then(num).unwrap_or(512) * 1024 * 1024,
            })
        }));
    }
    if matches!(kind, None | Some("node")) {
        out.extend(
            c.nodes
                .iter()
                .map(|n| json!({"id": format!("node/{n}"), "type": "node", "node": n, "status": "online"})),
        );
    }
    ok(Value::Array(out))
}

fn num(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn vm_summary(vm: &Vm) -> Value {
    json!({
        "vmid": vm.vmid,
        "name": vm.name(),
        "status": if vm.running { "running" } else { "stopped" },
        "template": u8::from(vm.is_template()),
    })
}

fn vm_status(vm: &Vm) -> Value {
    let mut v = json!({
        "vmid": vm.vmid,
        "name": vm.name(),
        "status": if vm.running { "running" } else { "stopped" },
        "qmpstatus": if vm.running { "running" } else { "stopped" },
        "uptime": vm.started_at.map_or(0, |t| t.elapsed().as_secs()),
        "cpus": vm.config.get("cores").and_then(num).unwrap_or(1),
        "maxmem": vm.config.get("memory").and_then(num).unwrap_or(512) * 1024 * 1024,
    });
    if vm.agent_enabled() {
        v["agent"] = json!(1);
    }
    if vm.is_template() {
        v["template"] = json!(1);
    }
    if let Some(l) = &vm.lock {
        v["lock"] = json!(l);
    }
    v
}

fn task_status(c: &Cluster, upid: &str) -> Reply {
    let well_formed = upid.starts_with("UPID:") && upid.split(':').count() >= 9;
    if !well_formed {
        return fail(400, format!("unable to parse worker upid '{upid}'"));
    }
    let Some(t) = c.task(upid) else {
        return fail(400, format!("no such task '{upid}'"));
    };
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pid * 7, "starttime": t.starttime,
        "type": t.kind, "id": t.id, "user": t.user,
        "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
    });
    if let Some(e) = &t.exitstatus {
        v["exitstatus"] = json!(e);
    }
    ok(v)
}

fn clone(c: &mut Cluster, node: &str, vmid: u32, p: &Params, user: &str) -> Reply {
    let newid = p.int("newid").unwrap_or_default() as u32;
    let src = &c.vms[&vmid];
    if let Some(l) = &src.lock {
        return fail(500, format!("VM is locked ({l})"));
    }
    if c.vms.contains_key(&newid) {
        return fail(500, format!("unable to create VM {newid}: config file already exists"));
    }
    let target = p.str("target").unwrap_or(node).to_owned();
    if !c.nodes.contains(&target) {
        return params::verification_failed(
            [("target".to_owned(), json!(format!("no such cluster node '{target}'")))]
                .into_iter()
                .collect(),
        );
    }
    let full = p.bool("full").unwrap_or(!src.is_template());
    if !full && !src.is_template() {
        return fail(
            500,
            "Linked clone feature is not supported for running/non-template VMs",
        );
    }
    if !full && p.str("storage").is_some() {
        return fail(400, "parameter 'storage' is only allowed for full clones");
    }
    let mut config = src.config.clone();
    config.remove("template");
    config.insert(
        "name".into(),
        json!(p
            .str("name")
            .map_or_else(|| format!("Copy-of-VM-{}", src.name()), str::to_owned)),
    );
    if let Some(d) = p.str("description") {
        config.insert("description".into(), json!(d));
    }
    // As Proxmox does: a clone is a new machine, with a new generation id and creation time.
    config.insert("vmgenid".into(), json!(super::new_uuid()));
    let ctime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    config.insert("meta".into(), json!(format!("creation-qemu=8.1.5,ctime={ctime}")));
    c.vms.insert(
        newid,
        Vm {
            vmid: newid,
            node: target,
            config,
            running: false,
            started_at: None,
            ip: None,
            lock: Some("clone".into()),
        },
    );
    ok(json!(c.spawn(
        node,
        "qmclone",
        &vmid.to_string(),
        user,
        Effect::FinishClone(newid)
    )))
}

fn set_config(c: &mut Cluster, vmid: u32, p: Params) -> Result<(), Reply> {
    let vm = c.vms.get_mut(&vmid).ok_or_else(|| fail(500, "no such VM"))?;
    if let Some(l) = &vm.lock {
        if p.bool("skiplock") != Some(true) {
            return Err(fail(500, format!("VM is locked ({l})")));
        }
    }
    if p.0.keys().all(|k| k == "digest" || k == "skiplock") {
        return Err(fail(400, "no options specified"));
    }
    if let Some(d) = p.str("digest") {
        if d != digest(&vm.config) {
            return Err(fail(
                500,
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    if let Some(keys) = p.str("sshkeys") {
        let decoded = percent_encoding::percent_decode_str(keys).decode_utf8_lossy();
        if !params::valid_ssh_keys(&decoded) {
            return Err(fail(500, "SSH public key validation error"));
        }
    }
    for (k, v) in p.0 {
        match k.as_str() {
            "digest" | "skiplock" => {}
            "delete" => {
                for key in v
                    .as_str()
                    .unwrap_or("")
                    .split([',', ';', ' '])
                    .filter(|s| !s.is_empty())
                {
                    vm.config.remove(key);
                }
            }
            // Integers come back as JSON numbers, everything else as text.
            "cores" | "sockets" | "memory" | "balloon" | "onboot" => {
                let n: i64 = v.as_str().and_then(|s| s.parse().ok()).unwrap_or_default();
                vm.config.insert(k, json!(n));
            }
            _ => {
                vm.config.insert(k, v);
            }
        }
    }
    Ok(())
}

fn power(c: &mut Cluster, node: &str, vmid: u32, op: &str, user: &str) -> Reply {
    let vm = &c.vms[&vmid];
    if let Some(l) = &vm.lock {
        return fail(500, format!("VM is locked ({l})"));
    }
    match op {
        "start" => {
            if vm.is_template() {
                return fail(500, "you can't start a vm if it's a template");
            }
            if vm.running {
                return fail(500, format!("VM {vmid} already running"));
            }
            ok(json!(c.spawn(
                node,
                "qmstart",
                &vmid.to_string(),
                user,
                Effect::Start(vmid)
            )))
        }
        _ => {
            if !vm.running {
                return fail(500, format!("VM {vmid} not running"));
            }
            let kind = if op == "stop" { "qmstop" } else { "qmshutdown" };
            ok(json!(c.spawn(node, kind, &vmid.to_string(), user, Effect::Stop(vmid))))
        }
    }
}

fn agent_interfaces(c: &Cluster, vmid: u32) -> Reply {
    let vm = &c.vms[&vmid];
    if !vm.running {
        return fail(500, format!("VM {vmid} is not running"));
    }
    if !vm.agent_enabled() {
        return fail(500, "No QEMU guest agent configured");
    }
    let ready = vm
        .started_at
        .is_some_and(|t| Instant::now().duration_since(t) >= c.agent_delay);
    let (true, Some(ip)) = (ready, vm.ip) else {
        return fail(500, "QEMU guest agent is not running");
    };
    ok(json!({"result": [
        {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}
        ]},
        {"name": "eth0", "hardware-address": format!("bc:24:11:00:{:02x}:{:02x}", vmid / 256 % 256, vmid % 256),
         "ip-addresses": [
            {"ip-address": ip.to_string(), "ip-address-type": "ipv4", "prefix": 24},
            {"ip-address": format!("fe80::be24:11ff:fe00:{vmid:x}"), "ip-address-type": "ipv6", "prefix": 64}
        ]}
    ]}))
}

/// A stable digest of a configuration (what the real server returns as `digest`).
fn digest(config: &Map<String, Value>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(config).unwrap_or_default().hash(&mut h);
    format!("{:016x}{:016x}", h.finish(), h.finish().rotate_left(17))
}

impl Handler for Api {
    fn handle(&self, req: &Request) -> Reply {
        match self.authorized(req) {
            Ok(user) => self.route(req, &user),
            Err(reply) => reply,
        }
    }

    fn auth_present(&self, req: &Request) -> bool {
        req.headers.contains_key("authorization")
    }

    fn unavailable(&self) -> Reply {
        fail(503, "Service Unavailable")
    }
}
