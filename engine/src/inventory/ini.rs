//! Ansible's INI inventory format: `[group]` sections of `host key=value`
//! lines, `[group:vars]` and `[group:children]`, into the same model as the
//! YAML structure.

use super::conn::apply_host_vars;
use super::{Group, HostEntry, Inventory};
use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::yaml::{Key, YValue, Yaml};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

impl Inventory {
    /// Ansible's INI format: `[group]` sections of `host key=value ...` lines,
    /// `[group:vars]` of `key=value`, `[group:children]` of group names.
    pub(super) fn load_ini(file: &Path, src: &Arc<Source>) -> Result<Self, Diagnostics> {
        let mut inv = Self {
            path: Some(file.to_path_buf()),
            ..Self::default()
        };
        inv.groups.insert(
            "all".into(),
            Group {
                name: "all".into(),
                ..Group::default()
            },
        );
        let mut errs = Diagnostics::default();
        let (mut group, mut kind) = ("ungrouped".to_owned(), "hosts");
        for (i, raw) in src.text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let at = IniLine {
                src,
                raw,
                line_no: u32::try_from(i + 1).unwrap_or(u32::MAX),
                col: u32::try_from(raw.len() - raw.trim_start().len() + 1).unwrap_or(1),
            };
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if let Some((g, k)) = inv.ini_section(&at, section, &mut errs) {
                    (group, kind) = (g, k);
                }
                continue;
            }
            match kind {
                "vars" => match line.split_once('=') {
                    Some((k, v)) => {
                        inv.groups[&group].vars.insert(k.trim().to_owned(), ini_value(v.trim()));
                    }
                    None => errs.push(Diagnostic::at(
                        src,
                        at.pos(at.col, line.len()),
                        "expected `key=value` in a `:vars` section",
                    )),
                },
                "children" => {
                    let child = line.to_owned();
                    inv.groups.entry(child.clone()).or_insert_with(|| Group {
                        name: child.clone(),
                        ..Group::default()
                    });
                    if !inv.groups[&group].children.contains(&child) {
                        inv.groups[&group].children.push(child);
                    }
                }
                _ => inv.ini_host(&at, &group, &mut errs),
            }
        }
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        inv.load_var_dirs(&dir, &mut errs);
        errs.into_result(inv)
    }

    /// A `[group]`, `[group:vars]` or `[group:children]` header: the group
    /// (created, and made a child of `all`) and the kind of lines that follow.
    fn ini_section(
        &mut self,
        at: &IniLine<'_>,
        section: &str,
        errs: &mut Diagnostics,
    ) -> Option<(String, &'static str)> {
        let line = at.raw.trim();
        let (g, k) = section.split_once(':').unwrap_or((section, "hosts"));
        let kind = match k {
            "hosts" => "hosts",
            "vars" => "vars",
            "children" => "children",
            _ => {
                errs.push(suggest(
                    Diagnostic::at(
                        at.src,
                        at.pos(at.col, line.len()),
                        format!("unknown section kind `:{k}`"),
                    ),
                    k,
                    &["vars", "children"],
                    "section kinds",
                ));
                return None;
            }
        };
        let group = g.trim().to_owned();
        self.groups.entry(group.clone()).or_insert_with(|| Group {
            name: group.clone(),
            ..Group::default()
        });
        if group != "all" && !self.groups["all"].children.contains(&group) {
            self.groups["all"].children.push(group.clone());
        }
        Some((group, kind))
    }

    /// A `host key=value ...` line of `group`.
    fn ini_host(&mut self, at: &IniLine<'_>, group: &str, errs: &mut Diagnostics) {
        let (src, raw) = (at.src, at.raw);
        let mut words = raw.split_whitespace();
        let name = words.next().unwrap_or_default().to_owned();
        let mut vars: Vec<(Key, Yaml)> = Vec::new();
        let mut offset = raw.find(&name).unwrap_or(0) + name.len();
        for w in words {
            let wcol = raw[offset..].find(w).map_or(offset, |p| p + offset);
            offset = wcol + w.len();
            let wpos = at.pos(u32::try_from(wcol + 1).unwrap_or(1), w.len());
            match w.split_once('=') {
                Some((k, v)) => vars.push((
                    Key {
                        name: k.to_owned(),
                        pos: wpos,
                    },
                    Yaml {
                        pos: wpos,
                        value: json_to_yvalue(&ini_value(v)),
                    },
                )),
                None => errs.push(Diagnostic::at(
                    src,
                    wpos,
                    format!("expected `key=value` after host `{name}`, found `{w}`"),
                )),
            }
        }
        let entry = self.hosts.entry(name.clone()).or_insert_with(|| HostEntry {
            name: name.clone(),
            ..HostEntry::default()
        });
        let node = Yaml {
            pos: at.pos(at.col, name.len()),
            value: YValue::Null,
        };
        apply_host_vars(src, &node, entry, vars, errs);
        if !self.groups[group].hosts.contains(&name) {
            self.groups[group].hosts.push(name);
        }
    }
}

/// A line of an INI inventory, for positions in it.
struct IniLine<'a> {
    src: &'a Arc<Source>,
    raw: &'a str,
    line_no: u32,
    /// Where its text starts (1-based).
    col: u32,
}

impl IniLine<'_> {
    fn pos(&self, col: u32, len: usize) -> crate::diag::Pos {
        crate::diag::Pos::new(self.line_no, col).with_len(u32::try_from(len).unwrap_or(1))
    }
}

/// Whether a file is an INI inventory (by extension, else by its first line).
pub(super) fn is_ini(path: &Path, text: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yml" | "yaml") => false,
        Some("ini") => true,
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .is_some_and(|l| l.starts_with('[') && !l.contains(": ")),
    }
}

/// An INI value: JSON-ish literals (numbers, true/false, lists) are typed, the rest is text.
fn ini_value(v: &str) -> serde_json::Value {
    let unquoted = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')));
    if let Some(u) = unquoted {
        return Value::String(u.to_owned());
    }
    match v {
        "true" | "True" => Value::Bool(true),
        "false" | "False" => Value::Bool(false),
        _ => v
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| {
                if v.starts_with('[') || v.starts_with('{') {
                    serde_json::from_str(v)
                } else {
                    Err(serde_json::Error::io(std::io::Error::other("text")))
                }
            })
            .unwrap_or_else(|_| Value::String(v.to_owned())),
    }
}

fn json_to_yvalue(v: &Value) -> YValue {
    let pos = crate::diag::Pos::new(1, 1);
    match v {
        Value::Null => YValue::Null,
        Value::Bool(b) => YValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| YValue::Float(n.as_f64().unwrap_or(0.0)), YValue::Int),
        Value::String(s) => YValue::Str(s.clone()),
        Value::Array(a) => YValue::Seq(
            a.iter()
                .map(|x| Yaml {
                    pos,
                    value: json_to_yvalue(x),
                })
                .collect(),
        ),
        Value::Object(m) => YValue::Map(
            m.iter()
                .map(|(k, x)| {
                    (
                        Key { name: k.clone(), pos },
                        Yaml {
                            pos,
                            value: json_to_yvalue(x),
                        },
                    )
                })
                .collect(),
        ),
    }
}
