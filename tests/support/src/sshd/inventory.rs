//! Ansible-style YAML inventories for test hosts, so end-to-end tests and the
//! lab drive flowrun exactly as users do: a group of hosts with their
//! address, port, user, key and known_hosts file.

use super::SshdHost;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// YAML string quoting (JSON strings are valid YAML scalars).
fn y(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// An inventory with one group `group` holding `hosts`.
pub fn inventory_yaml<'a>(group: &str, hosts: impl IntoIterator<Item = &'a SshdHost>) -> String {
    let mut s = format!("all:\n  children:\n    {}:\n      hosts:\n", y(group));
    for h in hosts {
        let _ = write!(
            s,
            "        {}:\n          address: {}\n          port: {}\n          user: {}\n          \
             identity_file: {}\n          known_hosts_file: {}\n",
            y(h.name()),
            y(&h.address()),
            h.port(),
            y(h.user()),
            y(&h.identity_file().to_string_lossy()),
            y(&h.known_hosts().to_string_lossy()),
        );
    }
    s
}

/// Write [`inventory_yaml`] to `path`.
pub fn write_inventory<'a>(path: &Path, group: &str, hosts: impl IntoIterator<Item = &'a SshdHost>) -> io::Result<()> {
    std::fs::write(path, inventory_yaml(group, hosts))
}
