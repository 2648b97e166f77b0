//! File attributes (mode, owner, group) shared by every step that manages a
//! file (`file`, `copy`, `template`, `line`): the same parameters, compared
//! against a stat the same way and fixed with the same commands, so the steps
//! behave alike, on local and remote hosts.

use crate::params::Params;
use flowrun_engine::step::{ParamSpec, ParamType, StepContext, StepError};
use flowrun_engine::transport::{quote, FileAttrs, FileStat};

pub const MODE: ParamSpec = ParamSpec::opt(
    "mode",
    ParamType::Mode,
    "permission bits in octal, e.g. \"0644\" (quote it in YAML)",
);
pub const OWNER: ParamSpec = ParamSpec::opt("owner", ParamType::Str, "user owning the file (name or numeric id)");
pub const GROUP: ParamSpec = ParamSpec::opt("group", ParamType::Str, "group of the file (name or numeric id)");

/// Desired attributes; `None` leaves an attribute as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Attrs {
    /// `mode`, `owner` and `group` from a step's parameters.
    pub fn from_params(p: &Params<'_>) -> Result<Self, StepError> {
        let name = |n: &str| -> Result<Option<String>, StepError> {
            match p.opt_str(n)? {
                Some(v) if v.trim().is_empty() || v.contains([':', '\n']) => Err(StepError::param(
                    n,
                    format!("expected a name or a numeric id, got `{v}`"),
                )),
                v => Ok(v.map(|v| v.trim().to_owned())),
            }
        };
        Ok(Self {
            mode: p.opt_mode("mode")?,
            owner: name("owner")?,
            group: name("group")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.group.is_none()
    }

    /// The same attributes for a transport's atomic write.
    pub fn file_attrs(&self) -> FileAttrs {
        FileAttrs {
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
        }
    }

    /// What differs between `st` (the stat of `path`) and these attributes,
    /// one phrase each (`mode 0644 -> 0600`); empty when in state. A numeric
    /// owner or group compares with the numeric id the stat carries.
    pub fn changes(&self, st: &FileStat) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = self.mode.filter(|m| *m != st.mode) {
            out.push(format!("mode {:04o} -> {m:04o}", st.mode));
        }
        for (want, have, id, label) in [
            (&self.owner, &st.owner, st.uid, "owner"),
            (&self.group, &st.group, st.gid, "group"),
        ] {
            let Some(want) = want.as_deref().filter(|w| *w != have) else {
                continue;
            };
            if is_numeric(want) && want.parse::<u32>().ok() == Some(id) {
                continue;
            }
            out.push(format!("{label} {have} -> {want}"));
        }
        out
    }

    /// Whether anything at or below `path` differs from these attributes (for `recurse`).
    pub async fn tree_differs(&self, cx: &StepContext, path: &str) -> Result<bool, StepError> {
        let mut tests = Vec::new();
        if let Some(o) = &self.owner {
            tests.push(format!("! -user {}", quote(o)));
        }
        if let Some(g) = &self.group {
            tests.push(format!("! -group {}", quote(g)));
        }
        if let Some(m) = self.mode {
            tests.push(format!("! -perm {m:04o}"));
        }
        if tests.is_empty() {
            return Ok(false);
        }
        let script = format!("find -H {} \\( {} \\) -print -quit", quote(path), tests.join(" -o "));
        Ok(!cx.sh(&script).await?.stdout.is_empty())
    }

    /// Set these attributes on `path` (and everything below it with `recurse`).
    pub async fn fix(&self, cx: &StepContext, path: &str, recurse: bool) -> Result<(), StepError> {
        if let Some(script) = self.fix_script(path, recurse) {
            if recurse {
                cx.sh(&script).await?;
            } else {
                cx.sh_quick(&script).await?;
            }
        }
        Ok(())
    }

    /// The commands that set these attributes, to run alone or after others; `None` when there are none.
    pub fn fix_script(&self, path: &str, recurse: bool) -> Option<String> {
        let r = if recurse { "-R " } else { "" };
        let p = quote(path);
        let mut script = Vec::new();
        // chown first: it clears setuid/setgid bits that chmod may then set.
        let spec = match (&self.owner, &self.group) {
            (None, None) => None,
            (Some(o), None) => Some(o.clone()),
            (None, Some(g)) => Some(format!(":{g}")),
            (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        };
        if let Some(spec) = spec {
            script.push(format!("chown {r}{} -- {p}", quote(&spec)));
        }
        if let Some(m) = self.mode {
            script.push(format!("chmod {r}{m:04o} -- {p}"));
        }
        (!script.is_empty()).then(|| script.join(" && "))
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::local_context;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> Result<Attrs, StepError> {
        let serde_json::Value::Object(m) = v else {
            unreachable!()
        };
        Attrs::from_params(&Params(&m))
    }

    #[test]
    fn parses_and_rejects() {
        let a = attrs(json!({"mode": "0640", "owner": "root", "group": 0})).unwrap();
        assert_eq!(a.mode, Some(0o640));
        assert_eq!(a.group.as_deref(), Some("0"));
        let e = attrs(json!({"mode": "0999"})).unwrap_err();
        assert!(e.message.contains("parameter `mode`"), "{e}");
        let e = attrs(json!({"owner": "a:b"})).unwrap_err();
        assert!(e.message.contains("parameter `owner`"), "{e}");
    }

    #[tokio::test]
    async fn numeric_ids_compare_equal_to_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x").unwrap();
        let p = p.to_str().unwrap();
        let cx = local_context();
        let st = cx.stat(p).await.unwrap().unwrap();
        let a = Attrs {
            mode: Some(st.mode),
            owner: Some(st.uid.to_string()),
            group: Some(st.gid.to_string()),
        };
        assert!(a.changes(&st).is_empty());
        let other = if st.mode == 0o600 { 0o640 } else { 0o600 };
        let a = Attrs {
            mode: Some(other),
            ..Attrs::default()
        };
        let c = a.changes(&st);
        assert_eq!(c, [format!("mode {:04o} -> {other:04o}", st.mode)]);
    }
}
