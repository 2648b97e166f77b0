//! Inventories in the structure of Ansible's YAML inventory (`all`, `vars`,
//! `children`, `hosts`), with `group_vars/` and `host_vars/` beside the file,
//! Ansible's connection aliases, and host patterns (`all`, groups, hosts,
//! globs, `:` union, `:&` intersection, `:!` exclusion, in [`pattern`]). Ansible's INI
//! format, and its dynamic inventories (scripts and `ansible-inventory
//! --list` JSON, in [`dynamic`]) load into the same model.

mod conn;
mod dynamic;
mod ini;
mod pattern;
pub use conn::CONN_KEYS;
pub use dynamic::DEFAULT_TIMEOUT as SCRIPT_TIMEOUT;

use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::host::{ConnSpec, Host, HostTable};
use crate::yaml::{self, Key, YValue, Yaml};
use conn::{apply_conn, apply_host_vars, canonical, check_group_conn_vars};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct Group {
    pub name: String,
    pub vars: Map<String, Value>,
    pub hosts: Vec<String>,
    pub children: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct HostEntry {
    pub name: String,
    pub vars: Map<String, Value>,
    pub conn: ConnSpec,
    pub address: Option<String>,
    /// Connection keys set on the host itself (they win over group vars).
    pub explicit: Vec<String>,
}

/// A loaded inventory.
#[derive(Debug, Default)]
pub struct Inventory {
    pub path: Option<PathBuf>,
    pub groups: IndexMap<String, Group>,
    pub hosts: IndexMap<String, HostEntry>,
}

impl Inventory {
    /// An inventory with only the implicit `localhost`.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let file = if path.is_dir() {
            ["hosts.yml", "hosts.yaml", "inventory.yml", "inventory.yaml"]
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| Diagnostic::in_file(path, "no inventory file (hosts.yml) in this directory"))?
        } else {
            path.to_path_buf()
        };
        let head = std::fs::File::open(&file).ok().and_then(|f| {
            use std::io::Read as _;
            let mut b = Vec::with_capacity(256);
            f.take(256).read_to_end(&mut b).ok().map(|_| b)
        });
        if let Some(kind) = dynamic::kind(&file, head.as_deref()) {
            return dynamic::load(&file, kind);
        }
        let source = Source::read(&file)?;
        if ini::is_ini(&file, &source.text) {
            return Self::load_ini(&file, &source);
        }
        let root = yaml::parse(&source)?;
        let mut inv = Self {
            path: Some(file.clone()),
            ..Self::default()
        };
        let mut errs = Diagnostics::default();
        let Some(top) = root.as_map() else {
            if root.is_null() {
                return Ok(inv);
            }
            return Err(Diagnostic::at(
                &source,
                root.pos,
                format!("an inventory is a mapping of groups, found {}", root.kind()),
            )
            .into());
        };
        for (k, v) in top {
            inv.load_group(&source, k, v, &mut errs);
        }
        if !inv.groups.contains_key("all") {
            inv.groups.insert(
                "all".into(),
                Group {
                    name: "all".into(),
                    ..Group::default()
                },
            );
        }
        // Top-level groups other than `all` are its children.
        let tops: Vec<String> = top.iter().map(|(k, _)| k.name.clone()).filter(|n| n != "all").collect();
        if let Some(all) = inv.groups.get_mut("all") {
            for t in tops {
                if !all.children.contains(&t) {
                    all.children.push(t);
                }
            }
        }
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        inv.load_var_dirs(&dir, &mut errs);
        errs.into_result(inv)
    }

    fn load_group(&mut self, src: &Arc<Source>, key: &Key, node: &Yaml, errs: &mut Diagnostics) {
        let name = key.name.clone();
        self.groups.entry(name.clone()).or_insert_with(|| Group {
            name: name.clone(),
            ..Group::default()
        });
        if node.is_null() {
            return;
        }
        let Some(entries) = node.as_map() else {
            errs.push(Diagnostic::at(
                src,
                node.pos,
                format!("group `{name}` must be a mapping with `hosts`, `vars` or `children`"),
            ));
            return;
        };
        for (k, v) in entries {
            match k.name.as_str() {
                "vars" => {
                    if let Some(m) = vars_map(src, v, errs) {
                        check_group_conn_vars(src, &m, errs);
                        self.groups[&name]
                            .vars
                            .extend(m.into_iter().map(|(k, v)| (k.name, v.to_json())));
                    }
                }
                "hosts" => match &v.value {
                    YValue::Map(hosts) => {
                        for (hk, hv) in hosts {
                            self.load_host(src, hk, hv, errs);
                            let g = &mut self.groups[&name];
                            if !g.hosts.contains(&hk.name) {
                                g.hosts.push(hk.name.clone());
                            }
                        }
                    }
                    YValue::Null => {}
                    _ => errs.push(Diagnostic::at(src, v.pos, "`hosts` must be a mapping of host names")),
                },
                "children" => match &v.value {
                    YValue::Map(children) => {
                        for (ck, cv) in children {
                            self.load_group(src, ck, cv, errs);
                            let g = &mut self.groups[&name];
                            if !g.children.contains(&ck.name) {
                                g.children.push(ck.name.clone());
                            }
                        }
                    }
                    YValue::Null => {}
                    _ => errs.push(Diagnostic::at(
                        src,
                        v.pos,
                        "`children` must be a mapping of group names",
                    )),
                },
                other => errs.push(suggest(
                    Diagnostic::at(
                        src,
                        k.pos.with_len(key_len(other)),
                        format!("unknown key `{other}` in group `{name}`"),
                    ),
                    other,
                    &["hosts", "vars", "children"],
                    "keys",
                )),
            }
        }
    }

    fn load_host(&mut self, src: &Arc<Source>, key: &Key, node: &Yaml, errs: &mut Diagnostics) {
        let entry = self.hosts.entry(key.name.clone()).or_insert_with(|| HostEntry {
            name: key.name.clone(),
            ..HostEntry::default()
        });
        if node.is_null() {
            return;
        }
        let Some(vars) = vars_map(src, node, errs) else { return };
        apply_host_vars(src, node, entry, vars, errs);
    }

    fn load_var_dirs(&mut self, dir: &Path, errs: &mut Diagnostics) {
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for g in groups {
            if let Some((src, node)) = read_var_file(&dir.join("group_vars"), &g, errs) {
                if let Some(m) = vars_map(&src, &node, errs) {
                    check_group_conn_vars(&src, &m, errs);
                    self.groups[&g]
                        .vars
                        .extend(m.into_iter().map(|(k, v)| (k.name, v.to_json())));
                }
            }
        }
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        for h in hosts {
            if let Some((src, node)) = read_var_file(&dir.join("host_vars"), &h, errs) {
                if let Some(vars) = vars_map(&src, &node, errs) {
                    let entry = &mut self.hosts[&h];
                    apply_host_vars(&src, &node, entry, vars, errs);
                }
            }
        }
    }

    /// Every variable name defined anywhere (for load-time template checks).
    pub fn all_var_names(&self) -> impl Iterator<Item = &str> {
        self.groups
            .values()
            .flat_map(|g| g.vars.keys())
            .chain(self.hosts.values().flat_map(|h| h.vars.keys()))
            .map(String::as_str)
    }

    /// Groups of a host, ancestors first (`all`, then parents, then children).
    fn groups_of(&self, host: &str) -> Vec<String> {
        let mut depth: IndexMap<String, usize> = IndexMap::new();
        fn visit(
            inv: &Inventory,
            g: &str,
            d: usize,
            host: &str,
            depth: &mut IndexMap<String, usize>,
            seen: &mut Vec<String>,
        ) -> bool {
            if seen.iter().any(|s| s == g) {
                return false;
            }
            seen.push(g.to_owned());
            let Some(group) = inv.groups.get(g) else { return false };
            let mut found = group.hosts.iter().any(|h| h == host);
            for c in &group.children {
                found |= visit(inv, c, d + 1, host, depth, seen);
            }
            seen.pop();
            if found {
                let e = depth.entry(g.to_owned()).or_insert(d);
                *e = (*e).max(d);
            }
            found
        }
        visit(self, "all", 0, host, &mut depth, &mut Vec::new());
        let mut groups: Vec<(String, usize)> = depth.into_iter().collect();
        if !groups.iter().any(|(g, _)| g == "all") {
            groups.push(("all".into(), 0));
        }
        groups.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        groups.into_iter().map(|(g, _)| g).collect()
    }

    /// Hosts with merged variables: `all` < groups by depth < host vars.
    pub fn host_table(&self) -> HostTable {
        let mut table = HostTable::default();
        for (name, entry) in &self.hosts {
            let groups = self.groups_of(name);
            let mut vars = Map::new();
            let mut entry = entry.clone();
            for g in &groups {
                if let Some(group) = self.groups.get(g) {
                    for (k, v) in &group.vars {
                        if CONN_KEYS.contains(&k.as_str()) && !entry.explicit.iter().any(|e| e == canonical(k)) {
                            // Checked when the group was loaded.
                            let _ = apply_conn(&mut entry, k, v);
                        }
                    }
                    vars.extend(group.vars.clone());
                }
            }
            vars.extend(entry.vars.clone());
            let host = Host::new(name.clone(), groups, vars, entry.conn.clone(), entry.address.clone());
            table.hosts.insert(name.clone(), Arc::new(host));
        }
        if !table.hosts.contains_key("localhost") {
            let vars = self.groups.get("all").map(|g| g.vars.clone()).unwrap_or_default();
            table.hosts.insert("localhost".into(), Arc::new(Host::localhost(vars)));
        }
        table
    }
}

fn key_len(name: &str) -> u32 {
    u32::try_from(name.chars().count()).unwrap_or(1)
}

fn vars_map(src: &Arc<Source>, node: &Yaml, errs: &mut Diagnostics) -> Option<Vec<(Key, Yaml)>> {
    match &node.value {
        YValue::Map(m) => Some(m.clone()),
        YValue::Null => Some(Vec::new()),
        _ => {
            errs.push(Diagnostic::at(
                src,
                node.pos,
                format!("expected a mapping of variables, found {}", node.kind()),
            ));
            None
        }
    }
}

fn read_var_file(dir: &Path, name: &str, errs: &mut Diagnostics) -> Option<(Arc<Source>, Yaml)> {
    let path = ["yml", "yaml"]
        .iter()
        .map(|e| dir.join(format!("{name}.{e}")))
        .find(|p| p.is_file())?;
    match Source::read(&path).and_then(|s| yaml::parse(&s).map(|y| (s, y))) {
        Ok(v) => Some(v),
        Err(d) => {
            errs.push(d);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostKeyPolicy;

    pub(super) fn inv(text: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.yml");
        std::fs::write(&p, text).unwrap();
        Inventory::load(&p).unwrap()
    }

    pub(super) const INV: &str = "all:\n  vars: { a: 1, b: all }\n  children:\n    runners:\n      vars: { b: runners, c: r }\n      hosts:\n        r1: { address: 127.0.0.2, port: 2222, b: host }\n        r2:\n    monitoring:\n      hosts:\n        m1: { ansible_host: 127.0.0.9 }\n";

    #[test]
    fn precedence_and_aliases() {
        let i = inv(INV);
        let t = i.host_table();
        let r1 = t.get("r1").unwrap();
        assert_eq!(r1.vars["a"], 1);
        assert_eq!(r1.vars["b"], "host");
        assert_eq!(t.get("r2").unwrap().vars["b"], "runners");
        assert_eq!(r1.address(), "127.0.0.2");
        assert_eq!(r1.conn.port, Some(2222));
        assert_eq!(t.get("m1").unwrap().address(), "127.0.0.9");
        assert_eq!(r1.groups, ["all", "runners"]);
    }

    #[test]
    fn ini_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "# runners\n[runners]\nr1 ansible_host=127.0.0.2 ansible_port=2222 tier=1\nr2\n\n[runners:vars]\nrunner_tags=[\"a\",\"b\"]\n\n[site:children]\nrunners\n[site:vars]\nzone=\"eu\"\n",
        )
        .unwrap();
        let i = Inventory::load(&p).unwrap();
        let t = i.host_table();
        let r1 = t.get("r1").unwrap();
        assert_eq!(r1.address(), "127.0.0.2");
        assert_eq!(r1.conn.port, Some(2222));
        assert_eq!(r1.vars["tier"], 1);
        assert_eq!(r1.vars["runner_tags"], serde_json::json!(["a", "b"]));
        assert_eq!(t.get("r2").unwrap().vars["zone"], "eu");
        assert_eq!(i.resolve("site").unwrap(), ["r1", "r2"]);
        std::fs::write(&p, "[runners]\nr1 ansible_port=abc\n").unwrap();
        let e = Inventory::load(&p).unwrap_err().to_string();
        assert!(
            e.contains(":2:4") && e.contains("`ansible_port` must be a port number"),
            "{e}"
        );
    }

    #[test]
    fn connection_keys_in_group_vars_apply_unless_the_host_sets_them() {
        let i = inv("all:\n  vars: { ansible_user: deploy, port: 2200 }\n  children:\n    g:\n      vars: { host_key_policy: accept-new }\n      hosts:\n        a: {}\n        b: { port: 22, user: root }\n");
        let t = i.host_table();
        let (a, b) = (t.get("a").unwrap(), t.get("b").unwrap());
        assert_eq!((a.conn.user.as_deref(), a.conn.port), (Some("deploy"), Some(2200)));
        assert_eq!(a.conn.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!((b.conn.user.as_deref(), b.conn.port), (Some("root"), Some(22)));
    }
}
