//! `file`: the state of a path — a directory, absent, an (empty) file touched
//! into existence, or an existing file whose attributes are managed — and its
//! mode, owner and group. Works through shell commands and stat, so it acts
//! the same on local and remote hosts.

use crate::attrs::{self, Attrs};
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::{quote, ExecRequest, FileKind, FileStat};
use serde_json::{Map, Value};

pub struct FileStepKind;

const STATES: &[&str] = &["file", "directory", "absent", "touch"];

static INFO: KindInfo = KindInfo {
    name: "file",
    version: 1,
    doc: "Ensure a path is a directory, is absent, exists (touch), or manage an existing file's mode, owner and group",
    params: &[
        ParamSpec::req("path", ParamType::Str, "the path on the target"),
        ParamSpec::opt(
            "state",
            ParamType::Enum(STATES),
            "`file` (default: must exist, only attributes are managed), `directory` (created with parents), \
             `absent` (removed, recursively), `touch` (created empty when missing; an existing one is left as is)",
        ),
        attrs::MODE,
        attrs::OWNER,
        attrs::GROUP,
        ParamSpec::opt(
            "recurse",
            ParamType::Bool,
            "with `state: directory`: apply owner, group and mode to everything below too (as Ansible does, \
             the mode is set on files as well)",
        ),
    ],
    one_of: &[],
    outputs: &["path"],
    secret_outputs: &[],
    journal: true,
};

impl StepKind for FileStepKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let path = p.str("path")?;
        let state = match p.choice("state", STATES, "file")?.as_str() {
            "directory" => State::Directory,
            "absent" => State::Absent,
            "touch" => State::Touch,
            _ => State::File,
        };
        let attrs = Attrs::from_params(&p)?;
        let recurse = p.bool_or("recurse", false)?;
        if recurse && state != State::Directory {
            return Err(StepError::param("recurse", "applies only to `state: directory`"));
        }
        if state == State::Absent && !attrs.is_empty() {
            return Err(StepError::failed(
                "`mode`, `owner` and `group` do not apply to `state: absent`",
            ));
        }
        if path.trim().is_empty() || path.trim_end_matches('/').is_empty() {
            return Err(StepError::param("path", format!("refusing to manage `{path}`")));
        }
        Ok(Box::new(FileStep {
            path,
            state,
            attrs,
            recurse,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    File,
    Directory,
    Absent,
    Touch,
}

struct FileStep {
    path: String,
    state: State,
    attrs: Attrs,
    recurse: bool,
}

/// What `check` saw, carried to `apply` in [`Pending`] so it need not look again.
struct Seen {
    exists: bool,
}

impl FileStep {
    fn outputs(&self) -> Outputs {
        let mut o = Outputs::new();
        o.insert("path".into(), Value::from(self.path.as_str()));
        o
    }

    /// What must change, or `None` when in state.
    async fn plan(&self, cx: &StepContext) -> Result<Option<Pending>, StepError> {
        let st = cx.metadata(&self.path).await?;
        let exists = st.is_some();
        let summary = self.summary(cx, st).await?;
        Ok(summary.map(|s| Pending::new(s).with_observation(Seen { exists })))
    }

    /// The change's summary, from the stat of the path (`None` when absent).
    async fn summary(&self, cx: &StepContext, st: Option<FileStat>) -> Result<Option<String>, StepError> {
        let path = &self.path;
        let st = match (self.state, st) {
            // A dangling symbolic link does not stat, but is still there to remove.
            (State::Absent, None) => {
                let link = cx
                    .exec(ExecRequest::shell(format!("test -L {}", quote(path))).quick())
                    .await?;
                return Ok((link.rc == 0).then(|| format!("remove symbolic link `{path}`")));
            }
            (State::Absent, Some(st)) => return Ok(Some(format!("remove {} `{path}`", kind_name(st.kind)))),
            (State::Directory, None) => return Ok(Some(format!("create directory `{path}`"))),
            (State::Touch, None) => return Ok(Some(format!("create empty file `{path}`"))),
            (State::File, None) => {
                return Err(StepError::failed(format!(
                    "`{path}` does not exist; `state: file` only manages an existing file's attributes \
                     (use `state: touch`, `copy` or `template` to create it)"
                )))
            }
            (State::Directory, Some(st)) if st.kind != FileKind::Directory => {
                return Err(StepError::failed(format!(
                    "`{path}` exists and is a {}, not a directory",
                    kind_name(st.kind)
                )))
            }
            (State::File, Some(st)) if st.kind != FileKind::File => {
                return Err(StepError::failed(format!(
                    "`{path}` is a {}, not a file (use `state: directory` for directories)",
                    kind_name(st.kind)
                )))
            }
            (_, Some(st)) => st,
        };
        self.attr_plan(cx, &st).await
    }

    async fn attr_plan(&self, cx: &StepContext, st: &FileStat) -> Result<Option<String>, StepError> {
        let changes = self.attrs.changes(st);
        if !changes.is_empty() {
            return Ok(Some(format!("`{}`: {}", self.path, changes.join(", "))));
        }
        if self.recurse && self.attrs.tree_differs(cx, &self.path).await? {
            return Ok(Some(format!("`{}`: attributes of files below", self.path)));
        }
        Ok(None)
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symbolic link",
        FileKind::Other => "special file",
    }
}

#[async_trait::async_trait]
impl Step for FileStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        Ok(match self.plan(cx).await? {
            None => Check::InSync(self.outputs()),
            Some(pending) => Check::Drift(pending),
        })
    }

    /// One command: create what is missing, then set the attributes.
    async fn apply(&self, cx: &StepContext, mut pending: Pending) -> Result<Applied, StepError> {
        let p = quote(&self.path);
        if self.state == State::Absent {
            cx.sh(&format!("rm -rf -- {p}")).await?;
            return Ok(Applied::changed(self.outputs()));
        }
        let exists = match pending.observed::<Seen>() {
            Some(seen) => seen.exists,
            None => cx.metadata(&self.path).await?.is_some(),
        };
        // A new directory with only a mode gets it from `mkdir -m`: one process.
        let only_mode = self.attrs.owner.is_none() && self.attrs.group.is_none() && !self.recurse;
        let (create, fix) = match (self.state, self.attrs.mode) {
            (State::Directory, Some(m)) if !exists && only_mode => (Some(format!("mkdir -p -m {m:04o} -- {p}")), None),
            (State::Directory, _) if !exists => (
                Some(format!("mkdir -p -- {p}")),
                self.attrs.fix_script(&self.path, self.recurse),
            ),
            (State::Touch, _) if !exists => (
                Some(format!("touch -- {p}")),
                self.attrs.fix_script(&self.path, self.recurse),
            ),
            _ => (None, self.attrs.fix_script(&self.path, self.recurse)),
        };
        let script = match (create, fix) {
            (Some(c), Some(f)) => Some(format!("{c} && {f}")),
            (c, f) => c.or(f),
        };
        if let Some(script) = script {
            if self.recurse {
                cx.sh(&script).await?;
            } else {
                cx.sh_quick(&script).await?;
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&FileStepKind, params, json!({}), Path::new("/"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn is_root() -> bool {
        flowrun_engine::transport::local::current_user() == "root"
    }

    #[tokio::test]
    async fn directory_with_mode_is_idempotent() {
        for (i, cx) in both_contexts().iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().join("a/b");
            let s = step(json!({"path": d, "state": "directory", "mode": "0700"})).unwrap();
            assert_idempotent(s.as_ref(), cx).await;
            assert!(d.is_dir(), "context {i}");
            assert_eq!(mode(&d), 0o700, "context {i}");
            let f = dir.path().join("empty");
            let s = step(json!({"path": f, "state": "touch", "mode": "0600"})).unwrap();
            assert_idempotent(s.as_ref(), cx).await;
        }
    }

    #[tokio::test]
    async fn check_mode_reports_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("new");
        let s = step(json!({"path": d, "state": "directory"})).unwrap();
        let Check::Drift(p) = s.check(&local_context()).await.unwrap() else {
            panic!("expected drift")
        };
        assert_eq!(p.summary, format!("create directory `{}`", d.display()));
        assert!(!d.exists());

        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = step(json!({"path": f, "mode": "0600"})).unwrap();
        let Check::Drift(p) = s.check(&local_context()).await.unwrap() else {
            panic!("expected drift")
        };
        assert!(p.summary.ends_with(": mode 0644 -> 0600"), "{}", p.summary);
        assert_eq!(mode(&f), 0o644);
    }

    #[tokio::test]
    async fn absent_removes_trees() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tree");
        std::fs::create_dir_all(d.join("x/y")).unwrap();
        std::fs::write(d.join("x/y/z"), "z").unwrap();
        let s = step(json!({"path": d, "state": "absent"})).unwrap();
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert!(!d.exists());
        // A dangling symbolic link is removed too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let s = step(json!({"path": link, "state": "absent"})).unwrap();
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert!(link.symlink_metadata().is_err());
    }

    #[tokio::test]
    async fn touch_creates_once_and_keeps_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        // An integer mode is read as octal digits, as YAML users write it.
        let s = step(json!({"path": f, "state": "touch", "mode": 640})).unwrap();
        let cx = local_context();
        assert_idempotent(s.as_ref(), &cx).await;
        assert_eq!(mode(&f), 0o640);
        std::fs::write(&f, "content").unwrap();
        let before = filetime(&f);
        assert!(!converge(s.as_ref(), &cx).await.unwrap().changed);
        assert_eq!(filetime(&f), before, "touch changed the mtime of an existing file");
        // Fixing the mode of an existing file does not touch it either.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(converge(s.as_ref(), &cx).await.unwrap().changed);
        assert_eq!(mode(&f), 0o640);
        assert_eq!(filetime(&f), before, "fixing the mode changed the mtime");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "content");
    }

    fn filetime(p: &Path) -> (i64, i64) {
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    #[tokio::test]
    async fn file_state_needs_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let cx = local_context();
        let s = step(json!({"path": dir.path().join("missing"), "mode": "0600"})).unwrap();
        let e = s.check(&cx).await.unwrap_err();
        assert!(e.message.contains("does not exist; `state: file`"), "{e}");
        let s = step(json!({"path": dir.path(), "mode": "0600"})).unwrap();
        let e = s.check(&cx).await.unwrap_err();
        assert!(e.message.contains("is a directory, not a file"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, "").unwrap();
        let s = step(json!({"path": f, "state": "directory"})).unwrap();
        let e = s.check(&cx).await.unwrap_err();
        assert!(e.message.contains("exists and is a file, not a directory"), "{e}");
    }

    #[tokio::test]
    async fn invalid_parameters() {
        let e = |v| step(v).err().unwrap().message;
        assert!(e(json!({"path": "/tmp/x", "mode": "rw-r--r--"})).starts_with("parameter `mode`: expected an octal"));
        assert!(e(json!({"path": "/tmp/x", "state": "link"})).starts_with("parameter `state`: `link` is not one of"));
        assert!(e(json!({"path": "/tmp/x", "recurse": true})).starts_with("parameter `recurse`"));
        assert!(e(json!({"path": "/", "state": "absent"})).starts_with("parameter `path`: refusing"));
    }

    #[tokio::test]
    async fn owner_group_and_recurse() {
        if !is_root() {
            eprintln!("skipped: changing owners needs root");
            return;
        }
        for cx in &both_contexts() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().join("owned");
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/f"), "x").unwrap();
            // Numeric ids compare equal to the names stat reports.
            let s = step(
                json!({"path": d, "state": "directory", "owner": "65534", "group": "65534",
                                "mode": "0750", "recurse": true}),
            )
            .unwrap();
            assert_idempotent(s.as_ref(), cx).await;
            let m = std::fs::metadata(d.join("sub/f")).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o750));
            // A file below that drifts is found.
            std::fs::set_permissions(d.join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
            let Check::Drift(p) = s.check(cx).await.unwrap() else {
                panic!("drift below not found")
            };
            assert!(p.summary.ends_with("attributes of files below"), "{}", p.summary);
            let s = step(json!({"path": d, "state": "directory", "owner": "no-such-user-x"})).unwrap();
            let e = converge(s.as_ref(), cx).await.unwrap_err();
            assert!(e.message.contains("no-such-user-x"), "{e}");
        }
    }
}
