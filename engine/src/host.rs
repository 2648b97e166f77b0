//! Hosts as the run sees them: name, groups, merged inventory variables and
//! connection settings. A host's address may be filled in during the run by
//! the step that created it (a new VM reports its IP), so it sits behind a lock.

use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connection {
    #[default]
    Ssh,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Only keys already in known_hosts are accepted (the default).
    #[default]
    Strict,
    /// An unknown host's key is added; a changed key is still refused.
    AcceptNew,
}

/// How to reach a host (the inventory's connection keys).
#[derive(Debug, Clone, Default)]
pub struct ConnSpec {
    pub connection: Connection,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub ssh_config_file: Option<PathBuf>,
    /// Extra `ssh` options, e.g. `["-o", "ProxyJump=bastion"]`.
    pub ssh_args: Vec<String>,
    /// Run every step with sudo unless the step says otherwise.
    pub become_: bool,
    pub become_user: Option<String>,
}

#[derive(Debug)]
pub struct Host {
    pub name: String,
    /// Groups the host belongs to, ancestors included, `all` first.
    pub groups: Vec<String>,
    /// Inventory variables merged: `all` < parent groups < child groups < host.
    pub vars: Map<String, Value>,
    pub conn: ConnSpec,
    address: RwLock<Option<String>>,
    /// Which machine answers at this name: set by a step that created it (a VM's
    /// generation id), so a re-created machine is a new host to the journal.
    instance: RwLock<Option<String>>,
}

impl Host {
    pub fn new(
        name: String,
        groups: Vec<String>,
        vars: Map<String, Value>,
        conn: ConnSpec,
        address: Option<String>,
    ) -> Self {
        Self {
            name,
            groups,
            vars,
            conn,
            address: RwLock::new(address),
            instance: RwLock::new(None),
        }
    }

    /// The implicit `localhost`: runs locally, no SSH.
    pub fn localhost(vars: Map<String, Value>) -> Self {
        let conn = ConnSpec {
            connection: Connection::Local,
            ..ConnSpec::default()
        };
        Self::new(
            "localhost".into(),
            vec!["all".into()],
            vars,
            conn,
            Some("127.0.0.1".into()),
        )
    }

    /// The address to connect to: the one set in the inventory or during the run, else the name.
    pub fn address(&self) -> String {
        self.address_if_known().unwrap_or_else(|| self.name.clone())
    }

    pub fn address_if_known(&self) -> Option<String> {
        self.address
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_address(&self, address: &str) {
        *self.address.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(address.to_owned());
    }

    pub fn set_instance(&self, instance: &str) {
        *self.instance.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(instance.to_owned());
    }

    pub fn instance(&self) -> Option<String> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn is_local(&self) -> bool {
        self.conn.connection == Connection::Local
    }

    /// What identifies the target for fingerprints: where and as whom we
    /// connect, and which machine it is when a step said so.
    pub fn identity(&self) -> String {
        let mut id = format!(
            "{}|{}|{}|{}",
            self.name,
            self.address(),
            self.conn.port.unwrap_or(22),
            self.conn.user.as_deref().unwrap_or("")
        );
        if let Some(instance) = self.instance() {
            id.push('|');
            id.push_str(&instance);
        }
        id
    }

    /// `host` as templates see it.
    pub fn template_value(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "address": self.address(),
            "groups": self.groups,
            "port": self.conn.port.unwrap_or(22),
            "user": self.conn.user,
        })
    }
}

/// All hosts of the run, by name.
#[derive(Debug, Default)]
pub struct HostTable {
    pub hosts: IndexMap<String, Arc<Host>>,
}

impl HostTable {
    pub fn get(&self, name: &str) -> Option<&Arc<Host>> {
        self.hosts.get(name)
    }

    /// Say which machine answers for `name` (see [`Host::identity`]).
    pub fn set_instance(&self, name: &str, instance: &str) -> Result<(), String> {
        match self.hosts.get(name) {
            Some(h) => {
                h.set_instance(instance);
                Ok(())
            }
            None => Err(format!("no host `{name}` in the inventory")),
        }
    }

    pub fn set_address(&self, name: &str, address: &str) -> Result<(), String> {
        match self.hosts.get(name) {
            Some(h) => {
                h.set_address(address);
                Ok(())
            }
            None => Err(format!("no host `{name}` in the inventory")),
        }
    }
}
