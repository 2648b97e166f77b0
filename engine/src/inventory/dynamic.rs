//! Ansible's dynamic inventories: an executable run with `--list` (and
//! `--host NAME` for each host when its output has no `_meta`), or a JSON
//! file in the form `ansible-inventory --list` prints (`_meta.hostvars`,
//! groups with `hosts`, `children` and `vars`). So inventories generated
//! from Proxmox, clouds or a CMDB work as they are. A script runs with no
//! stdin, bounded by a timeout; one that fails, hangs or prints something
//! else than that JSON is invalid input, reported with its stderr.

use super::conn::{apply_conn, canonical, check_group_conn_vars_json};
use super::{Group, HostEntry, Inventory};
use crate::diag::{Diagnostic, Diagnostics};
use serde_json::{Map, Value};
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long an inventory script may run, unless `FLOWRUN_INVENTORY_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a failing script's stderr an error shows.
const STDERR_SHOWN: usize = 4000;

/// What kind of dynamic source `path` is, if it is one.
pub(super) fn kind(path: &Path, text_start: Option<&[u8]>) -> Option<Kind> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if ext == "json" {
        return Some(Kind::Json);
    }
    if matches!(ext, "yml" | "yaml" | "ini" | "cfg" | "toml") {
        return None;
    }
    let executable = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    // An INI file that happens to be executable is still an INI file: a
    // script starts with `#!` or is a binary.
    let runnable = text_start.is_some_and(|t| t.starts_with(b"#!") || t.starts_with(b"\x7fELF"));
    if executable && runnable {
        return Some(Kind::Script);
    }
    // A JSON document without the extension (e.g. saved `ansible-inventory --list`).
    let first = text_start?.iter().find(|b| !b.is_ascii_whitespace())?;
    (*first == b'{').then_some(Kind::Json)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Script,
    Json,
}

pub(super) fn load(path: &Path, kind: Kind) -> Result<Inventory, Diagnostics> {
    let (text, what) = match kind {
        Kind::Script => (run(path, &["--list"])?, format!("`{} --list`", path.display())),
        Kind::Json => (
            std::fs::read_to_string(path)
                .map_err(|e| Diagnostic::new(format!("cannot read `{}`: {e}", path.display())))?,
            format!("`{}`", path.display()),
        ),
    };
    let doc = parse_json(&text, &what, path)?;
    let Value::Object(top) = doc else {
        return Err(Diagnostic::in_file(path, format!("{what} must give a JSON object of groups")).into());
    };
    let mut inv = Inventory {
        path: Some(path.to_path_buf()),
        ..Inventory::default()
    };
    let mut errs = Diagnostics::default();
    let hostvars = top
        .get("_meta")
        .and_then(|m| m.get("hostvars"))
        .and_then(Value::as_object)
        .cloned();
    for (name, group) in &top {
        if name != "_meta" {
            add_group(&mut inv, path, name, group, &mut errs);
        }
    }
    finish_groups(&mut inv);
    let names: Vec<String> = inv.hosts.keys().cloned().collect();
    for h in names {
        let vars = match (&hostvars, kind) {
            (Some(hv), _) => hv.get(&h).cloned().unwrap_or(Value::Null),
            (None, Kind::Script) => {
                let out = run(path, &["--host", &h])?;
                parse_json(&out, &format!("`{} --host {h}`", path.display()), path)?
            }
            (None, Kind::Json) => Value::Null,
        };
        apply_vars(&mut inv, path, &h, &vars, &mut errs);
    }
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    inv.load_var_dirs(&dir, &mut errs);
    errs.into_result(inv)
}

fn parse_json(text: &str, what: &str, path: &Path) -> Result<Value, Diagnostic> {
    serde_json::from_str(text).map_err(|e| {
        Diagnostic::in_file(
            path,
            format!(
                "{what} did not give JSON in `ansible-inventory --list` form: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A group: `{hosts: [..], children: [..], vars: {..}}`, or a bare list of hosts.
fn add_group(inv: &mut Inventory, path: &Path, name: &str, node: &Value, errs: &mut Diagnostics) {
    let g = inv.groups.entry(name.to_owned()).or_insert_with(|| Group {
        name: name.to_owned(),
        ..Group::default()
    });
    let (hosts, children, vars) = match node {
        Value::Array(hosts) => (Some(hosts), None, None),
        Value::Object(m) => {
            for k in m
                .keys()
                .filter(|k| !matches!(k.as_str(), "hosts" | "children" | "vars"))
            {
                errs.push(Diagnostic::in_file(
                    path,
                    format!("group `{name}`: unknown key `{k}` (a group has `hosts`, `children` and `vars`)"),
                ));
            }
            (
                m.get("hosts").and_then(Value::as_array),
                m.get("children").and_then(Value::as_array),
                m.get("vars").and_then(Value::as_object),
            )
        }
        Value::Null => (None, None, None),
        _ => {
            errs.push(Diagnostic::in_file(
                path,
                format!("group `{name}` must be an object with `hosts`, `children` and `vars`, or a list of hosts"),
            ));
            return;
        }
    };
    for h in hosts.into_iter().flatten() {
        let Some(h) = h.as_str() else {
            errs.push(Diagnostic::in_file(
                path,
                format!("group `{name}`: a host name must be a string, found `{h}`"),
            ));
            continue;
        };
        if !g.hosts.iter().any(|x| x == h) {
            g.hosts.push(h.to_owned());
        }
    }
    for c in children.into_iter().flatten().filter_map(Value::as_str) {
        if !g.children.iter().any(|x| x == c) {
            g.children.push(c.to_owned());
        }
    }
    if let Some(vars) = vars {
        check_group_conn_vars_json(path, name, vars, errs);
        g.vars.extend(vars.clone());
    }
    let hosts: Vec<String> = g.hosts.clone();
    for h in hosts {
        inv.hosts.entry(h.clone()).or_insert_with(|| HostEntry {
            name: h,
            ..HostEntry::default()
        });
    }
}

/// Every group named as a child exists; groups nobody names are children of `all`.
fn finish_groups(inv: &mut Inventory) {
    let named: Vec<String> = inv.groups.values().flat_map(|g| g.children.clone()).collect();
    for c in &named {
        inv.groups.entry(c.clone()).or_insert_with(|| Group {
            name: c.clone(),
            ..Group::default()
        });
    }
    inv.groups.entry("all".into()).or_insert_with(|| Group {
        name: "all".into(),
        ..Group::default()
    });
    let orphans: Vec<String> = inv
        .groups
        .keys()
        .filter(|g| *g != "all" && !named.contains(g))
        .cloned()
        .collect();
    let all = &mut inv.groups["all"];
    for o in orphans {
        if !all.children.contains(&o) {
            all.children.push(o);
        }
    }
}

fn apply_vars(inv: &mut Inventory, path: &Path, host: &str, vars: &Value, errs: &mut Diagnostics) {
    let entry = &mut inv.hosts[host];
    let map: Map<String, Value> = match vars {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            errs.push(Diagnostic::in_file(
                path,
                format!("the variables of host `{host}` must be an object, found `{other}`"),
            ));
            return;
        }
    };
    for (k, v) in map {
        match apply_conn(entry, &k, &v) {
            Ok(true) => entry.explicit.push(canonical(&k).to_owned()),
            Ok(false) => {
                entry.vars.insert(k, v);
            }
            Err(what) => errs.push(Diagnostic::in_file(
                path,
                format!("host `{host}`: `{k}` must be {what}"),
            )),
        }
    }
}

/// Run the script with `args`, bounded by the timeout; its stdout, or an
/// error with its stderr.
fn run(path: &Path, args: &[&str]) -> Result<String, Diagnostic> {
    let timeout = std::env::var("FLOWRUN_INVENTORY_TIMEOUT")
        .ok()
        .and_then(|t| crate::model::parse_duration(&t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let shown = format!("{} {}", path.display(), args.join(" "));
    let fail = |m: String| Diagnostic::in_file(path, m);
    // A bare name would be looked up on PATH: run the file that was named.
    let program = if path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run the inventory script `{shown}`: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "the inventory script `{shown}` did not finish within {} (FLOWRUN_INVENTORY_TIMEOUT)",
                    humantime::format_duration(timeout)
                )));
            }
            Err(e) => return Err(fail(format!("waiting for the inventory script `{shown}`: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let mut text = text.trim().to_owned();
        if text.len() > STDERR_SHOWN {
            let cut = (0..=STDERR_SHOWN)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push_str(" ...");
        }
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
        let mut d = fail(format!("the inventory script `{shown}` failed (exit {code})"));
        if !text.is_empty() {
            let indented: Vec<String> = text.lines().map(|l| format!("    {l}")).collect();
            d = d.help(format!("its stderr:\n{}", indented.join("\n")));
        }
        return Err(d);
    }
    String::from_utf8(out).map_err(|_| fail(format!("the inventory script `{shown}` printed text that is not UTF-8")))
}
