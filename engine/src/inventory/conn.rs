//! Connection keys of an inventory (`address`, `port`, `user`, ..., with
//! Ansible's `ansible_*` aliases): which variables configure how a host is
//! reached rather than what its steps see, and their checks.

use super::HostEntry;
use crate::diag::{Diagnostic, Diagnostics, Source};
use crate::host::{Connection, HostKeyPolicy};
use crate::yaml::{Key, Yaml};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// Inventory keys that configure the connection rather than define variables.
pub const CONN_KEYS: &[&str] = &[
    "address",
    "port",
    "user",
    "identity_file",
    "known_hosts_file",
    "host_key_policy",
    "ssh_config_file",
    "ssh_args",
    "become",
    "become_user",
    "connection",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "ansible_connection",
    "ansible_become",
    "ansible_become_user",
];

pub(super) fn apply_host_vars(
    src: &Arc<Source>,
    _node: &Yaml,
    entry: &mut HostEntry,
    vars: Vec<(Key, Yaml)>,
    errs: &mut Diagnostics,
) {
    for (k, v) in vars {
        match apply_conn(entry, &k.name, &v.to_json()) {
            Ok(true) => entry.explicit.push(canonical(&k.name).to_owned()),
            Ok(false) => {
                entry.vars.insert(k.name.clone(), v.to_json());
            }
            Err(what) => errs.push(Diagnostic::at(src, v.pos, format!("`{}` must be {what}", k.name))),
        }
    }
}

/// Connection keys in group vars apply to the group's hosts (as in Ansible),
/// unless a host sets the key itself. Checked here, with positions.
pub(super) fn check_group_conn_vars(src: &Arc<Source>, vars: &[(Key, Yaml)], errs: &mut Diagnostics) {
    let mut scratch = HostEntry::default();
    for (k, v) in vars {
        if let Err(what) = apply_conn(&mut scratch, &k.name, &v.to_json()) {
            errs.push(Diagnostic::at(src, v.pos, format!("`{}` must be {what}", k.name)));
        }
    }
}

/// [`check_group_conn_vars`] for group vars that came as JSON (dynamic inventories).
pub(super) fn check_group_conn_vars_json(path: &Path, group: &str, vars: &Map<String, Value>, errs: &mut Diagnostics) {
    let mut scratch = HostEntry::default();
    for (k, v) in vars {
        if let Err(what) = apply_conn(&mut scratch, k, v) {
            errs.push(Diagnostic::in_file(
                path,
                format!("group `{group}`: `{k}` must be {what}"),
            ));
        }
    }
}

/// A connection key without its Ansible alias.
pub(super) fn canonical(key: &str) -> &str {
    match key {
        "ansible_host" => "address",
        "ansible_port" => "port",
        "ansible_user" => "user",
        "ansible_ssh_private_key_file" => "identity_file",
        "ansible_connection" => "connection",
        "ansible_become" => "become",
        "ansible_become_user" => "become_user",
        other => other,
    }
}

fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Apply a connection key; `Ok(false)` when `key` is an ordinary variable,
/// `Err(expected)` when its value is of the wrong kind.
pub(super) fn apply_conn(entry: &mut HostEntry, key: &str, v: &Value) -> Result<bool, &'static str> {
    let text = json_text(v);
    match key {
        "address" | "ansible_host" => entry.address = text,
        "port" | "ansible_port" => match text.as_deref().map(str::parse::<u16>) {
            Some(Ok(p)) => entry.conn.port = Some(p),
            _ => return Err("a port number"),
        },
        "user" | "ansible_user" => entry.conn.user = text,
        "identity_file" | "ansible_ssh_private_key_file" => {
            entry.conn.identity_file = text.map(|t| crate::paths::expand_home(&t));
        }
        "known_hosts_file" => entry.conn.known_hosts_file = text.map(|t| crate::paths::expand_home(&t)),
        "ssh_config_file" => entry.conn.ssh_config_file = text.map(|t| crate::paths::expand_home(&t)),
        "host_key_policy" => match text.as_deref() {
            Some("strict") => entry.conn.host_key_policy = HostKeyPolicy::Strict,
            Some("accept-new") => entry.conn.host_key_policy = HostKeyPolicy::AcceptNew,
            _ => return Err("`strict` or `accept-new`"),
        },
        "ssh_args" => match v {
            Value::Array(items) => entry.conn.ssh_args = items.iter().filter_map(json_text).collect(),
            Value::String(s) => entry.conn.ssh_args = s.split_whitespace().map(str::to_owned).collect(),
            _ => return Err("a list of ssh arguments"),
        },
        "become" | "ansible_become" => match v {
            Value::Bool(b) => entry.conn.become_ = *b,
            _ => return Err("a boolean"),
        },
        "become_user" | "ansible_become_user" => entry.conn.become_user = text,
        "connection" | "ansible_connection" => match text.as_deref() {
            Some("ssh") => entry.conn.connection = Connection::Ssh,
            Some("local") => entry.conn.connection = Connection::Local,
            _ => return Err("`ssh` or `local`"),
        },
        _ => return Ok(false),
    }
    Ok(true)
}
