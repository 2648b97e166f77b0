//! `line`: make sure one line is in a file (or is not), as Ansible's
//! `lineinfile` does: with `regexp`, the last matching line is replaced, else
//! the line is appended; with `state: absent`, matching lines are removed.
//! Works on bytes, so files that are not UTF-8 are edited without damage.

use crate::attrs::{self, Attrs};
use crate::diff::file_diff;
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use regex::bytes::Regex;
use serde_json::{Map, Value};

pub struct LineKind;

static INFO: KindInfo = KindInfo {
    name: "line",
    version: 1,
    doc: "Ensure a line is present in a file (replacing the last line matching `regexp`) or absent from it",
    params: &[
        ParamSpec::req("path", ParamType::Str, "the file on the target"),
        ParamSpec::opt(
            "line",
            ParamType::Str,
            "the whole line, without its newline (required with `state: present`)",
        ),
        ParamSpec::opt(
            "regexp",
            ParamType::Str,
            "a regular expression: with `present` the last matching line is replaced by `line` (appended when \
             none matches); with `absent` every matching line is removed",
        ),
        ParamSpec::opt(
            "state",
            ParamType::Enum(&["present", "absent"]),
            "`present` (default) or `absent`",
        ),
        ParamSpec::opt(
            "create",
            ParamType::Bool,
            "create the file when it is missing (default false: a missing file is an error)",
        ),
        attrs::MODE,
        attrs::OWNER,
        attrs::GROUP,
    ],
    one_of: &[],
    outputs: &["path"],
    secret_outputs: &[],
    journal: true,
};

impl StepKind for LineKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let line = p.opt_str("line")?;
        if line.as_deref().is_some_and(|l| l.contains('\n')) {
            return Err(StepError::param(
                "line",
                "expected a single line, got text with a newline",
            ));
        }
        let regexp = p
            .opt_str("regexp")?
            .map(|r| Regex::new(&r).map_err(|e| StepError::param("regexp", format!("invalid regular expression: {e}"))))
            .transpose()?;
        if present && line.is_none() {
            return Err(StepError::param("line", "is required with `state: present`"));
        }
        if !present && line.is_none() && regexp.is_none() {
            return Err(StepError::failed(
                "give `line` or `regexp` to say which lines `state: absent` removes",
            ));
        }
        Ok(Box::new(LineStep {
            path: p.str("path")?,
            line,
            regexp,
            present,
            create: p.bool_or("create", false)?,
            attrs: Attrs::from_params(&p)?,
        }))
    }
}

struct LineStep {
    path: String,
    line: Option<String>,
    regexp: Option<Regex>,
    present: bool,
    create: bool,
    attrs: Attrs,
}

/// A content change: the new content and what it does.
struct Edit {
    content: Vec<u8>,
    what: String,
}

impl LineStep {
    fn outputs(&self) -> Outputs {
        let mut o = Outputs::new();
        o.insert("path".into(), Value::from(self.path.as_str()));
        o
    }

    /// The edit the file needs (`old` is its content, `None` when missing), or `None`.
    fn edit(&self, old: Option<&[u8]>) -> Result<Option<Edit>, StepError> {
        let path = &self.path;
        let Some(old) = old else {
            if !self.present {
                return Ok(None);
            }
            if !self.create {
                return Err(StepError::failed(format!(
                    "`{path}` does not exist (set `create: true` to create it)"
                )));
            }
            let content = format!("{}\n", self.line.as_deref().unwrap_or_default()).into_bytes();
            return Ok(Some(Edit {
                content,
                what: format!("create `{path}` with the line"),
            }));
        };
        let lines: Vec<&[u8]> = old.split_inclusive(|b| *b == b'\n').collect();
        if self.present {
            Ok(self.ensure_present(old, &lines))
        } else {
            Ok(self.ensure_absent(&lines))
        }
    }

    fn ensure_present(&self, old: &[u8], lines: &[&[u8]]) -> Option<Edit> {
        let line = self.line.as_deref().unwrap_or_default().as_bytes();
        let matched = self
            .regexp
            .as_ref()
            .and_then(|re| lines.iter().rposition(|l| re.is_match(body(l))));
        if let Some(i) = matched {
            if body(lines[i]) == line {
                return None;
            }
            let mut content = Vec::with_capacity(old.len() + line.len());
            for (j, l) in lines.iter().enumerate() {
                if j == i {
                    content.extend_from_slice(line);
                    content.extend_from_slice(&l[body(l).len()..]);
                } else {
                    content.extend_from_slice(l);
                }
            }
            return Some(Edit {
                content,
                what: format!("replace line {} of `{}`", i + 1, self.path),
            });
        }
        if lines.iter().any(|l| body(l) == line) {
            return None;
        }
        let mut content = old.to_vec();
        if !content.is_empty() && !content.ends_with(b"\n") {
            content.push(b'\n');
        }
        content.extend_from_slice(line);
        content.push(b'\n');
        Some(Edit {
            content,
            what: format!("append a line to `{}`", self.path),
        })
    }

    fn ensure_absent(&self, lines: &[&[u8]]) -> Option<Edit> {
        let doomed = |l: &[u8]| match (&self.regexp, &self.line) {
            (Some(re), _) => re.is_match(body(l)),
            (None, Some(line)) => body(l) == line.as_bytes(),
            (None, None) => false,
        };
        let removed = lines.iter().filter(|l| doomed(l)).count();
        if removed == 0 {
            return None;
        }
        let content = lines
            .iter()
            .filter(|l| !doomed(l))
            .flat_map(|l| l.iter().copied())
            .collect();
        let what = match removed {
            1 => format!("remove 1 line from `{}`", self.path),
            n => format!("remove {n} lines from `{}`", self.path),
        };
        Some(Edit { content, what })
    }

    /// The content edit, or else the attribute changes, the file needs.
    async fn plan(&self, cx: &StepContext) -> Result<Plan, StepError> {
        // Content and attributes in one probe.
        let (st, old) = match cx.read_with_stat(&self.path).await? {
            Some((st, Some(content))) => (Some(st), Some(content)),
            Some(_) => return Err(StepError::failed(format!("`{}` is not a regular file", self.path))),
            None => (None, None),
        };
        if let Some(edit) = self.edit(old.as_deref())? {
            return Ok(Plan::Edit(edit, old));
        }
        match st {
            Some(st) if !self.attrs.is_empty() => {
                let changes = self.attrs.changes(&st);
                Ok(if changes.is_empty() {
                    Plan::InSync
                } else {
                    Plan::Attrs(changes)
                })
            }
            _ => Ok(Plan::InSync),
        }
    }
}

enum Plan {
    InSync,
    Edit(Edit, Option<Vec<u8>>),
    Attrs(Vec<String>),
}

/// A line without its terminator (`\n` or `\r\n`).
fn body(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

#[async_trait::async_trait]
impl Step for LineStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let plan = self.plan(cx).await?;
        let check = match &plan {
            Plan::InSync => Check::InSync(self.outputs()),
            Plan::Attrs(changes) => Check::Drift(Pending::new(format!("`{}`: {}", self.path, changes.join(", ")))),
            Plan::Edit(edit, old) => {
                let mut pending = Pending::new(edit.what.clone());
                if cx.mode.diff {
                    pending = pending.with_diff(file_diff(&self.path, old.as_deref(), &edit.content, &cx.masker));
                }
                Check::Drift(pending)
            }
        };
        Ok(match check {
            // What the check found goes to `apply`, so it need not read the file again.
            Check::Drift(pending) => Check::Drift(pending.with_observation(plan)),
            in_sync => in_sync,
        })
    }

    async fn apply(&self, cx: &StepContext, mut pending: Pending) -> Result<Applied, StepError> {
        let plan = match pending.observed::<Plan>() {
            Some(plan) => plan,
            None => self.plan(cx).await?,
        };
        // One command: the new content, its attributes and the rename together.
        match plan {
            Plan::InSync => {}
            Plan::Attrs(_) => self.attrs.fix(cx, &self.path, false).await?,
            Plan::Edit(edit, _) => {
                cx.write_file(&self.path, &edit.content, &self.attrs.file_attrs())
                    .await?;
            }
        }
        Ok(Applied::changed(self.outputs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_transport::both_contexts;
    use crate::testing::{assert_idempotent, build, converge, local_context};
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&LineKind, params, json!({}), Path::new("/"))
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[tokio::test]
    async fn replaces_last_match_idempotently() {
        for cx in both_contexts() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("sshd_config");
            std::fs::write(&f, "#PermitRootLogin yes\nPort 22\nPermitRootLogin yes\r\nX 1").unwrap();
            let s = step(json!({"path": f, "line": "PermitRootLogin no", "regexp": "^#?PermitRootLogin "})).unwrap();
            assert_idempotent(s.as_ref(), &cx).await;
            assert_eq!(read(&f), "#PermitRootLogin yes\nPort 22\nPermitRootLogin no\r\nX 1");
        }
    }

    #[tokio::test]
    async fn appends_when_nothing_matches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "127.0.0.1 localhost").unwrap();
        let s = step(json!({"path": f, "line": "10.0.0.5 runner", "regexp": "\\srunner$"})).unwrap();
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert_eq!(read(&f), "127.0.0.1 localhost\n10.0.0.5 runner\n");
        // Without a regexp, an exact line already present is left alone.
        let s = step(json!({"path": f, "line": "127.0.0.1 localhost"})).unwrap();
        assert!(matches!(s.check(&local_context()).await.unwrap(), Check::InSync(_)));
    }

    #[tokio::test]
    async fn absent_removes_every_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "keep\ndrop 1\nkeep too\ndrop 2\n").unwrap();
        let s = step(json!({"path": f, "regexp": "^drop", "state": "absent"})).unwrap();
        let cx = local_context();
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("expected drift")
        };
        assert_eq!(p.summary, format!("remove 2 lines from `{}`", f.display()));
        assert_idempotent(s.as_ref(), &cx).await;
        assert_eq!(read(&f), "keep\nkeep too\n");
        // A missing file has no line to remove.
        let s = step(json!({"path": dir.path().join("none"), "line": "x", "state": "absent"})).unwrap();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::InSync(_)));
    }

    #[tokio::test]
    async fn check_mode_diff_leaves_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "a\n").unwrap();
        let s = step(json!({"path": f, "line": "b"})).unwrap();
        let mut cx = local_context();
        cx.mode.check = true;
        cx.mode.diff = true;
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("expected drift")
        };
        assert!(p.diff.unwrap().contains("+b\n"));
        assert_eq!(read(&f), "a\n");
    }

    #[tokio::test]
    async fn missing_file_and_create() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.conf");
        let s = step(json!({"path": f, "line": "x=1"})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert!(e.message.contains("does not exist (set `create: true`"), "{e}");
        let s = step(json!({"path": f, "line": "x=1", "create": true, "mode": "0600"})).unwrap();
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert_eq!(read(&f), "x=1\n");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        // Attributes alone are fixed too.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(converge(s.as_ref(), &local_context()).await.unwrap().changed);
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn invalid_parameters() {
        let e = |v| step(v).err().unwrap().message;
        assert!(e(json!({"path": "/x", "line": "a", "regexp": "("})).starts_with("parameter `regexp`: invalid"));
        assert!(e(json!({"path": "/x"})).starts_with("parameter `line`: is required"));
        assert!(e(json!({"path": "/x", "line": "a\nb"})).starts_with("parameter `line`: expected a single line"));
        assert!(e(json!({"path": "/x", "state": "absent"})).contains("give `line` or `regexp`"));
        assert!(e(json!({"path": "/x", "line": "a", "mode": "u+x"})).starts_with("parameter `mode`"));
    }

    #[test]
    fn non_utf8_content_survives() {
        let s = LineStep {
            path: "/f".into(),
            line: Some("k=v".into()),
            regexp: Some(Regex::new("^k=").unwrap()),
            present: true,
            create: false,
            attrs: Attrs::default(),
        };
        let e = s.edit(Some(b"\xff\xfe\nk=old\n")).unwrap().unwrap();
        assert_eq!(e.content, b"\xff\xfe\nk=v\n");
    }
}
