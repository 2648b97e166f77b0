//! Inventories in the structure of Ansible's YAML inventory (`all`, `vars`,
//! `children`, `hosts`), with `group_vars/` and `host_vars/` beside the file,
//! Ansible's connection aliases, and host patterns (`all`, groups, hosts,
//! globs, `:` union, `:&` intersection, `:!` exclusion). Ansible's INI
//! format, and its dynamic inventories (scripts and `ansible-inventory
//! --list` JSON, in [`dynamic`]) load into the same model.

mod dynamic;
mod ini;
pub use dynamic::DEFAULT_TIMEOUT as SCRIPT_TIMEOUT;

use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::host::{ConnSpec, Connection, Host, HostKeyPolicy, HostTable};
use crate::yaml::{self, Key, YValue, Yaml};
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

    /// Hosts matching a pattern, in inventory order. Unknown names are an error (a typo).
    pub fn resolve(&self, pattern: &str) -> Result<Vec<String>, String> {
        let mut selected: Vec<String> = Vec::new();
        for part in pattern.split([':', ',']).map(str::trim).filter(|p| !p.is_empty()) {
            let (op, name) = match part.as_bytes()[0] {
                b'!' => ('!', &part[1..]),
                b'&' => ('&', &part[1..]),
                _ => ('+', part),
            };
            let hosts = self.match_one(name)?;
            match op {
                '!' => selected.retain(|h| !hosts.contains(h)),
                '&' => selected.retain(|h| hosts.contains(h)),
                _ => {
                    for h in hosts {
                        if !selected.contains(&h) {
                            selected.push(h);
                        }
                    }
                }
            }
        }
        let order: Vec<&String> = self.hosts.keys().collect();
        selected.sort_by_key(|h| order.iter().position(|o| *o == h).unwrap_or(usize::MAX));
        Ok(selected)
    }

    fn match_one(&self, name: &str) -> Result<Vec<String>, String> {
        if name == "localhost" && !self.hosts.contains_key("localhost") {
            return Ok(vec!["localhost".into()]);
        }
        if name == "all" || name == "*" {
            return Ok(self.hosts.keys().cloned().collect());
        }
        if self.groups.contains_key(name) {
            let mut out = Vec::new();
            self.collect_group(name, &mut out, &mut Vec::new());
            return Ok(out);
        }
        if self.hosts.contains_key(name) {
            return Ok(vec![name.to_owned()]);
        }
        if name.contains('*') {
            let out: Vec<String> = self.hosts.keys().filter(|h| glob(name, h)).cloned().collect();
            return Ok(out);
        }
        let mut names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        names.extend(self.hosts.keys().map(String::as_str));
        names.push("localhost");
        let mut msg = format!("no host or group `{name}` in the inventory");
        if let Some(s) = crate::diag::did_you_mean(name, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        Err(msg)
    }

    fn collect_group(&self, g: &str, out: &mut Vec<String>, seen: &mut Vec<String>) {
        if seen.iter().any(|s| s == g) {
            return;
        }
        seen.push(g.to_owned());
        if let Some(group) = self.groups.get(g) {
            for h in &group.hosts {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
            for c in &group.children {
                self.collect_group(c, out, seen);
            }
        }
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len())
                    .any(|i| text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..]))
        }
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

fn apply_host_vars(
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
fn check_group_conn_vars(src: &Arc<Source>, vars: &[(Key, Yaml)], errs: &mut Diagnostics) {
    let mut scratch = HostEntry::default();
    for (k, v) in vars {
        if let Err(what) = apply_conn(&mut scratch, &k.name, &v.to_json()) {
            errs.push(Diagnostic::at(src, v.pos, format!("`{}` must be {what}", k.name)));
        }
    }
}

/// [`check_group_conn_vars`] for group vars that came as JSON (dynamic inventories).
fn check_group_conn_vars_json(path: &Path, group: &str, vars: &Map<String, Value>, errs: &mut Diagnostics) {
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
fn canonical(key: &str) -> &str {
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
fn apply_conn(entry: &mut HostEntry, key: &str, v: &Value) -> Result<bool, &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(text: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.yml");
        std::fs::write(&p, text).unwrap();
        Inventory::load(&p).unwrap()
    }

    const INV: &str = "all:\n  vars: { a: 1, b: all }\n  children:\n    runners:\n      vars: { b: runners, c: r }\n      hosts:\n        r1: { address: 127.0.0.2, port: 2222, b: host }\n        r2:\n    monitoring:\n      hosts:\n        m1: { ansible_host: 127.0.0.9 }\n";

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

    #[test]
    fn patterns() {
        let i = inv(INV);
        assert_eq!(i.resolve("all").unwrap(), ["r1", "r2", "m1"]);
        assert_eq!(i.resolve("runners").unwrap(), ["r1", "r2"]);
        assert_eq!(i.resolve("all:!runners").unwrap(), ["m1"]);
        assert_eq!(i.resolve("runners:&r*1").unwrap(), ["r1"]);
        assert_eq!(i.resolve("m1,r2").unwrap(), ["r2", "m1"]);
        assert_eq!(i.resolve("localhost").unwrap(), ["localhost"]);
        assert!(i.resolve("runers").unwrap_err().contains("did you mean `runners`"));
    }
}
