//! `copy`: a file with given content (`content`, or a `src` file beside the
//! workflow read when the step is built). The content step itself
//! ([`ContentStep`]) is shared with `template`, which only differs in how the
//! content is made: compare hashes, write atomically, fix attributes alone
//! when only they differ, and show a diff with `--diff`.

use crate::attrs::{self, Attrs};
use crate::diff::file_diff;
use crate::digest::sha256_hex;
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::{quote, FileKind};
use serde_json::{Map, Value};

pub struct CopyKind;

pub const DEST: ParamSpec = ParamSpec::req("dest", ParamType::Str, "path of the file on the target");
pub const BACKUP: ParamSpec = ParamSpec::opt(
    "backup",
    ParamType::Bool,
    "before replacing the file, keep a copy as `DEST.YYYYmmddHHMMSS~` (output `backup_file`)",
);
pub const OUTPUTS: &[&str] = &["dest", "sha256", "backup_file"];

static INFO: KindInfo = KindInfo {
    name: "copy",
    version: 1,
    doc: "Ensure a file has the given content (inline, or from a file beside the workflow) and attributes",
    params: &[
        DEST,
        ParamSpec::opt("content", ParamType::Str, "the file's content, inline"),
        ParamSpec::opt(
            "src",
            ParamType::Str,
            "a file on this machine, relative to the workflow file, copied as is",
        ),
        attrs::MODE,
        attrs::OWNER,
        attrs::GROUP,
        BACKUP,
    ],
    one_of: &[&["content", "src"]],
    outputs: OUTPUTS,
    secret_outputs: &[],
    journal: true,
};

impl StepKind for CopyKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let content = match (p.opt_str("content")?, p.opt_str("src")?) {
            (Some(c), None) => c.into_bytes(),
            (None, Some(src)) => read_src(cx, "src", &src)?,
            _ => return Err(StepError::failed("give exactly one of `content` and `src`")),
        };
        Ok(Box::new(ContentStep::from_params(&p, content)?))
    }
}

/// Read a file given in parameter `name`, relative to the workflow's directory.
pub fn read_src(cx: &BuildContext<'_>, name: &str, src: &str) -> Result<Vec<u8>, StepError> {
    let path = cx.workflow_path(src);
    std::fs::read(&path).map_err(|e| StepError::param(name, format!("cannot read `{}`: {e}", path.display())))
}

/// A file on the target with exactly this content and these attributes.
pub struct ContentStep {
    dest: String,
    content: Vec<u8>,
    sha256: String,
    attrs: Attrs,
    backup: bool,
}

/// What a check found: the change to make (carried to `apply` in [`Pending`]).
#[derive(Clone)]
enum Change {
    Create,
    Replace,
    Attrs(Vec<String>),
}

impl ContentStep {
    /// `dest`, attributes and `backup` from the parameters; the content as made by the kind.
    pub fn from_params(p: &Params<'_>, content: Vec<u8>) -> Result<Self, StepError> {
        let dest = p.str("dest")?;
        if dest.trim().is_empty() || dest.ends_with('/') {
            return Err(StepError::param(
                "dest",
                format!("expected the path of a file, got `{dest}`"),
            ));
        }
        Ok(Self {
            dest,
            sha256: sha256_hex(&content),
            content,
            attrs: Attrs::from_params(p)?,
            backup: p.bool_or("backup", false)?,
        })
    }

    fn outputs(&self, backup_file: Option<String>) -> Outputs {
        let mut o = Outputs::new();
        o.insert("dest".into(), Value::from(self.dest.as_str()));
        o.insert("sha256".into(), Value::from(self.sha256.as_str()));
        o.insert("backup_file".into(), backup_file.map_or(Value::Null, Value::from));
        o
    }

    /// The change the file needs, from one probe (with the old content when
    /// `--diff` wants it, still one round trip).
    async fn plan(&self, cx: &StepContext) -> Result<(Option<Change>, Option<Vec<u8>>), StepError> {
        let (st, old) = if cx.mode.diff {
            match cx.read_with_stat(&self.dest).await? {
                Some((st, content)) => (Some(st), content),
                None => (None, None),
            }
        } else {
            (cx.stat(&self.dest).await?, None)
        };
        let Some(st) = st else {
            return Ok((Some(Change::Create), None));
        };
        if st.kind != FileKind::File {
            return Err(StepError::failed(format!(
                "`{}` exists and is not a regular file; `dest` must name the file itself",
                self.dest
            )));
        }
        if st.sha256.as_deref() != Some(self.sha256.as_str()) {
            return Ok((Some(Change::Replace), old));
        }
        let changes = self.attrs.changes(&st);
        Ok(((!changes.is_empty()).then_some(Change::Attrs(changes)), None))
    }

    async fn make_backup(&self, cx: &StepContext) -> Result<String, StepError> {
        let p = quote(&self.dest);
        let out = cx
            .sh(&format!(
                "b={p}.$(date +%Y%m%d%H%M%S)~; cp -p -- {p} \"$b\" && printf '%s' \"$b\""
            ))
            .await?;
        Ok(out.stdout_str())
    }
}

#[async_trait::async_trait]
impl Step for ContentStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let dest = &self.dest;
        let (change, old) = self.plan(cx).await?;
        let Some(change) = change else {
            return Ok(Check::InSync(self.outputs(None)));
        };
        let summary = match &change {
            Change::Attrs(changes) => {
                let summary = format!("`{dest}`: {}", changes.join(", "));
                return Ok(Check::Drift(Pending::new(summary).with_observation(change)));
            }
            Change::Create => format!("create `{dest}` ({} bytes)", self.content.len()),
            Change::Replace => format!("update `{dest}`"),
        };
        let mut pending = Pending::new(summary).with_observation(change);
        if cx.mode.diff {
            pending = pending.with_diff(file_diff(dest, old.as_deref(), &self.content, &cx.masker));
        }
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, mut pending: Pending) -> Result<Applied, StepError> {
        let mut backup_file = None;
        let change = match pending.observed::<Change>() {
            Some(change) => Some(change),
            None => self.plan(cx).await?.0,
        };
        // One command: write, attributes and rename together.
        match change {
            None => {}
            Some(Change::Attrs(_)) => self.attrs.fix(cx, &self.dest, false).await?,
            Some(change) => {
                if self.backup && matches!(change, Change::Replace) {
                    backup_file = Some(self.make_backup(cx).await?);
                }
                cx.write_file(&self.dest, &self.content, &self.attrs.file_attrs())
                    .await?;
            }
        }
        Ok(Applied::changed(self.outputs(backup_file)))
    }

    fn fingerprint_extra(&self) -> Option<String> {
        Some(self.sha256.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_transport::both_contexts;
    use crate::testing::{assert_idempotent, build, converge, local_context};
    use flowrun_engine::step::Mode;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn step(params: Value, dir: &Path) -> Result<Box<dyn Step>, StepError> {
        build(&CopyKind, params, json!({}), dir)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn content_is_idempotent_with_mode() {
        for cx in both_contexts() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("conf");
            let s = step(json!({"dest": f, "content": "a=1\n", "mode": "0640"}), dir.path()).unwrap();
            let a = assert_idempotent(s.as_ref(), &cx).await;
            assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=1\n");
            assert_eq!(mode(&f), 0o640);
            assert_eq!(a.outputs["sha256"], json!(sha256_hex(b"a=1\n")));
            assert_eq!(a.outputs["backup_file"], Value::Null);
            // An empty file is a file too.
            let s = step(json!({"dest": dir.path().join("empty"), "content": ""}), dir.path()).unwrap();
            assert_idempotent(s.as_ref(), &cx).await;
        }
    }

    #[tokio::test]
    async fn src_relative_to_workflow_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/motd"), "hello\n").unwrap();
        let f = dir.path().join("motd");
        let s = step(json!({"dest": f, "src": "files/motd"}), dir.path()).unwrap();
        assert_eq!(s.fingerprint_extra(), Some(sha256_hex(b"hello\n")));
        assert_idempotent(s.as_ref(), &local_context()).await;
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "hello\n");
        // A changed source file changes the fingerprint.
        std::fs::write(dir.path().join("files/motd"), "bye\n").unwrap();
        let s = step(json!({"dest": f, "src": "files/motd"}), dir.path()).unwrap();
        assert_eq!(s.fingerprint_extra(), Some(sha256_hex(b"bye\n")));
    }

    #[tokio::test]
    async fn check_mode_diff_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf");
        std::fs::write(&f, "a=1\nb=2\n").unwrap();
        let s = step(json!({"dest": f, "content": "a=1\nb=3\n"}), dir.path()).unwrap();
        let mut cx = local_context();
        cx.mode = Mode {
            check: true,
            diff: true,
        };
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("expected drift")
        };
        assert_eq!(p.summary, format!("update `{}`", f.display()));
        let diff = p.diff.unwrap();
        assert!(diff.contains("-b=2\n+b=3\n"), "{diff}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=1\nb=2\n");
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 1, "check left files behind");
    }

    #[tokio::test]
    async fn secret_content_diff_is_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        cx_masker_add("glrt-copy-secret-123");
        let s = step(
            json!({"dest": f, "content": "token = \"glrt-copy-secret-123\"\n"}),
            dir.path(),
        )
        .unwrap();
        let mut cx = local_context();
        cx.mode.diff = true;
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("expected drift")
        };
        assert_eq!(p.diff.as_deref(), Some(crate::diff::HIDDEN));
    }

    fn cx_masker_add(secret: &str) {
        local_context().add_secret(secret);
    }

    #[tokio::test]
    async fn only_attributes_are_fixed_when_content_matches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf");
        std::fs::write(&f, "same\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&f).unwrap());
        let s = step(json!({"dest": f, "content": "same\n", "mode": "0600"}), dir.path()).unwrap();
        let cx = local_context();
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("expected drift")
        };
        assert!(p.summary.ends_with("mode 0644 -> 0600"), "{}", p.summary);
        assert!(converge(s.as_ref(), &cx).await.unwrap().changed);
        assert_eq!(mode(&f), 0o600);
        let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&f).unwrap());
        assert_eq!(ino, after, "the file was rewritten although only its mode differed");
    }

    #[tokio::test]
    async fn owner_and_group_by_name() {
        if flowrun_engine::transport::local::current_user() != "root" {
            eprintln!("skipped: changing owners needs root");
            return;
        }
        for cx in both_contexts() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("owned");
            let s = step(
                json!({"dest": f, "content": "x", "owner": "nobody", "group": "nogroup"}),
                dir.path(),
            )
            .unwrap();
            assert_idempotent(s.as_ref(), &cx).await;
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!(
                (
                    std::os::unix::fs::MetadataExt::uid(&m),
                    std::os::unix::fs::MetadataExt::gid(&m)
                ),
                (65534, 65534)
            );
        }
    }

    #[tokio::test]
    async fn backup_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf");
        std::fs::write(&f, "old\n").unwrap();
        let s = step(json!({"dest": f, "content": "new\n", "backup": true}), dir.path()).unwrap();
        let a = converge(s.as_ref(), &local_context()).await.unwrap();
        let b = a.outputs["backup_file"].as_str().unwrap().to_owned();
        assert!(b.starts_with(&format!("{}.", f.display())) && b.ends_with('~'), "{b}");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old\n");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
    }

    #[tokio::test]
    async fn errors_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = step(json!({"dest": "/tmp/x", "src": "missing.txt"}), dir.path())
            .err()
            .unwrap();
        assert!(e.message.starts_with("parameter `src`: cannot read `"), "{e}");
        assert!(e.message.contains("missing.txt"), "{e}");
        let e = step(json!({"dest": "/tmp/x", "content": "x", "mode": "9"}), dir.path())
            .err()
            .unwrap();
        assert!(e.message.starts_with("parameter `mode`"), "{e}");
        let s = step(json!({"dest": dir.path(), "content": "x"}), dir.path()).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert!(e.message.contains("is not a regular file"), "{e}");
        let s = step(
            json!({"dest": dir.path().join("no/such/dir/f"), "content": "x"}),
            dir.path(),
        )
        .unwrap();
        let e = converge(s.as_ref(), &local_context()).await.unwrap_err();
        assert!(e.message.contains("cannot write"), "{e}");
    }
}
