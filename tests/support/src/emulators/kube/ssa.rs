//! Field ownership as the real server tracks it in `managedFields`
//! (structured-merge-diff): an apply merges the configuration into the live
//! object, removes what the same manager stopped sending (unless another
//! manager still owns it), and fails with a 409 listing each field another
//! manager owns and the apply would change — unless `force` takes them. An
//! update (merge patch, create, the controller's status writes) never
//! conflicts: the fields it changes move to its manager.

use super::fields::{self, path_text, FieldSet, Path};
use super::schema::Ty;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Op,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": if self.operation == Op::Apply { "Apply" } else { "Update" },
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields::to_fields_v1(&self.fields),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn same_owner(&self, manager: &str, op: Op, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == op && self.subresource.as_deref() == subresource
    }

    /// How conflicts name the manager (`printManager` in apimachinery).
    pub fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Op::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Why an apply was refused.
#[derive(Debug)]
pub enum ApplyError {
    /// (manager as displayed, field path) for each conflicting field.
    Conflicts(Vec<(String, String)>),
    /// The configuration does not fit the schema (the server's 500
    /// "failed to create typed patch object").
    Typed(String),
    /// Defaulting failed (a bad quantity).
    BadRequest(String),
}

/// The message and causes of a 409, as `NewConflictError` words them.
pub fn conflict_message(conflicts: &[(String, String)]) -> String {
    let n = conflicts.len();
    let body = if n == 1 {
        format!("conflict with {}: {}", conflicts[0].0, conflicts[0].1)
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|(cm, _)| cm == m) {
                lines.push(format!("- {p}"));
            }
        }
        lines.join("\n")
    };
    format!(
        "Apply failed with {n} conflict{}: {body}",
        if n == 1 { "" } else { "s" }
    )
}

/// What an apply or update leaves: the new object (before validation) and entries.
pub struct Outcome {
    pub object: Value,
    pub entries: Vec<Entry>,
    /// False when neither the object nor the ownership changed (nothing to store).
    pub changed: bool,
}

/// A request to apply `cfg` as `manager`.
pub struct ApplyReq<'a> {
    pub cfg: &'a Value,
    pub ty: Ty,
    pub manager: &'a str,
    pub api_version: &'a str,
    pub force: bool,
    pub now: &'a str,
}

/// Whether `p` has members below it in `set` (is not a leaf there).
fn has_children(set: &FieldSet, p: &Path) -> bool {
    set.range(p.clone()..).nth(1).is_some_and(|next| fields::under(next, p))
}

/// Server-side apply of `req.cfg` onto `live` (its value and entries).
pub fn apply(
    live: Option<(&Value, &[Entry])>,
    req: &ApplyReq<'_>,
    default: &dyn Fn(&mut Value) -> Result<(), String>,
) -> Result<Outcome, ApplyError> {
    let fc = fields::field_set(req.cfg, req.ty).map_err(ApplyError::Typed)?;
    let (base, entries): (Value, Vec<Entry>) = match live {
        Some((v, e)) => (v.clone(), e.to_vec()),
        None => (
            json!({"apiVersion": req.cfg["apiVersion"], "kind": req.cfg["kind"], "metadata": {}}),
            Vec::new(),
        ),
    };
    let mut merged = fields::merge(&base, req.cfg, req.ty);
    let mine = entries.iter().position(|e| e.same_owner(req.manager, Op::Apply, None));
    let others: Vec<usize> = (0..entries.len()).filter(|i| Some(*i) != mine).collect();
    if let Some(m) = mine {
        let mut abandoned: Vec<&Path> = entries[m].fields.difference(&fc).collect();
        abandoned.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in abandoned {
            let kept = others
                .iter()
                .any(|&o| entries[o].fields.iter().any(|q| fields::under(q, p)));
            if !kept {
                fields::remove(&mut merged, p, req.ty);
            }
        }
    }
    default(&mut merged).map_err(ApplyError::BadRequest)?;
    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    if live.is_some() {
        for &o in &others {
            for p in entries[o].fields.intersection(&fc) {
                let before = fields::value_at(&base, p, req.ty);
                let after = fields::value_at(&merged, p, req.ty);
                let differs = if has_children(&fc, p) {
                    before.is_some() != after.is_some()
                } else {
                    before != after
                };
                if differs {
                    conflicts.push((o, p.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !req.force {
        return Err(ApplyError::Conflicts(
            conflicts
                .iter()
                .map(|(o, p)| (entries[*o].display(), path_text(p)))
                .collect(),
        ));
    }
    let mut new_entries = entries.clone();
    for (o, p) in &conflicts {
        new_entries[*o].fields.remove(p);
    }
    let entry = Entry {
        manager: req.manager.to_owned(),
        operation: Op::Apply,
        api_version: req.api_version.to_owned(),
        time: req.now.to_owned(),
        subresource: None,
        fields: fc,
    };
    match mine {
        Some(m) => new_entries[m] = entry,
        None => new_entries.push(entry),
    }
    new_entries.retain(|e| !e.fields.is_empty());
    Ok(finish(live, merged, new_entries))
}

/// Keep the old entries (and their times) when nothing but times would change.
fn finish(live: Option<(&Value, &[Entry])>, object: Value, new_entries: Vec<Entry>) -> Outcome {
    if let Some((old, old_entries)) = live {
        let same_owners = old_entries.len() == new_entries.len()
            && old_entries.iter().zip(&new_entries).all(|(a, b)| {
                a.manager == b.manager
                    && a.operation == b.operation
                    && a.subresource == b.subresource
                    && a.api_version == b.api_version
                    && a.fields == b.fields
            });
        if same_owners && *old == object {
            return Outcome {
                object,
                entries: old_entries.to_vec(),
                changed: false,
            };
        }
    }
    Outcome {
        object,
        entries: new_entries,
        changed: true,
    }
}

/// A non-apply write by `manager`: the fields it changed become its own.
pub fn update(
    live: Option<(&Value, &[Entry])>,
    new: Value,
    ty: Ty,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) -> Result<Outcome, String> {
    let (fs_new, fs_old) = if subresource == Some("status") {
        (
            fields::status_field_set(&new),
            live.map(|(v, _)| fields::status_field_set(v)).unwrap_or_default(),
        )
    } else {
        (
            fields::field_set(&new, ty)?,
            live.and_then(|(v, _)| fields::field_set(v, ty).ok())
                .unwrap_or_default(),
        )
    };
    let old_value = live.map(|(v, _)| v);
    let mut changed = FieldSet::new();
    for p in &fs_new {
        let before = old_value.and_then(|v| fields::value_at(v, p, ty));
        let after = fields::value_at(&new, p, ty);
        let differs = if has_children(&fs_new, p) {
            before.is_none()
        } else {
            before != after
        };
        if differs {
            changed.insert(p.clone());
        }
    }
    let removed: FieldSet = fs_old.difference(&fs_new).cloned().collect();
    let mut entries: Vec<Entry> = live.map(|(_, e)| e.to_vec()).unwrap_or_default();
    for e in &mut entries {
        e.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let idx = match entries
        .iter()
        .position(|e| e.same_owner(manager, Op::Update, subresource))
    {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_owned(),
                operation: Op::Update,
                api_version: api_version.to_owned(),
                time: now.to_owned(),
                subresource: subresource.map(str::to_owned),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    if !changed.is_empty() {
        entries[idx].time = now.to_owned();
    }
    entries[idx].fields.extend(changed);
    entries.retain(|e| !e.fields.is_empty());
    Ok(finish(live, new, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(v: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {"a": v}})
    }

    fn req<'a>(cfg: &'a Value, manager: &'a str, force: bool) -> ApplyReq<'a> {
        ApplyReq {
            cfg,
            ty: Ty::Struct("ConfigMap"),
            manager,
            api_version: "v1",
            force,
            now: "2026-11-02T10:00:00Z",
        }
    }

    fn none(_: &mut Value) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn conflicts_shared_ownership_and_force() {
        let a = cm("1");
        let first = apply(None, &req(&a, "kubectl", false), &none).unwrap();
        // The same value from another manager: no conflict, both own it.
        let same = apply(Some((&first.object, &first.entries)), &req(&a, "flowrun", false), &none).unwrap();
        assert_eq!(same.entries.len(), 2);
        let b = cm("2");
        let Err(ApplyError::Conflicts(c)) =
            apply(Some((&first.object, &first.entries)), &req(&b, "flowrun", false), &none)
        else {
            panic!("expected a conflict");
        };
        assert_eq!(c, vec![("\"kubectl\"".to_owned(), ".data.a".to_owned())]);
        assert_eq!(
            conflict_message(&c),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"
        );
        let forced = apply(Some((&first.object, &first.entries)), &req(&b, "flowrun", true), &none).unwrap();
        assert_eq!(forced.object["data"]["a"], "2");
        assert!(forced
            .entries
            .iter()
            .all(|e| e.manager == "flowrun" || !e.fields.iter().any(|p| p.len() == 2)));
    }

    #[test]
    fn no_op_and_abandoned_fields() {
        let a =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let first = apply(None, &req(&a, "flowrun", false), &none).unwrap();
        let again = apply(Some((&first.object, &first.entries)), &req(&a, "flowrun", false), &none).unwrap();
        assert!(!again.changed);
        let fewer = cm("1");
        let after = apply(
            Some((&first.object, &first.entries)),
            &req(&fewer, "flowrun", false),
            &none,
        )
        .unwrap();
        assert!(after.changed);
        assert!(after.object["data"].get("b").is_none(), "{}", after.object);
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let a = cm("1");
        let first = apply(None, &req(&a, "flowrun", false), &none).unwrap();
        let mut edited = first.object.clone();
        edited["data"]["a"] = json!("9");
        let up = update(
            Some((&first.object, &first.entries)),
            edited,
            Ty::Struct("ConfigMap"),
            "kubectl-edit",
            "v1",
            None,
            "t",
        )
        .unwrap();
        let Err(ApplyError::Conflicts(c)) = apply(Some((&up.object, &up.entries)), &req(&a, "flowrun", false), &none)
        else {
            panic!("expected a conflict with the editor");
        };
        assert_eq!(c[0].0, "\"kubectl-edit\" using v1");
    }
}
