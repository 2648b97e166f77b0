//! The local transport: steps on `localhost` act on this machine directly,
//! with no shell in between unless the step asks for one, and native file
//! operations where no privilege change is needed.

use super::shell;
use super::{
    Become, ExecOutput, ExecRequest, FileAttrs, FileKind, FileStat, Program, StatAndContent, Transport, TransportError,
};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Default)]
pub struct LocalTransport;

/// The user this process runs as.
pub fn current_user() -> String {
    user_name(unsafe_free_uid()).unwrap_or_else(|| "root".into())
}

fn unsafe_free_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// Whether `b` means a change of user (becoming yourself needs no sudo).
fn needs_sudo(b: Option<&Become>) -> bool {
    b.is_some_and(|b| b.user != current_user())
}

#[async_trait]
impl Transport for LocalTransport {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput, TransportError> {
        let mut cmd = if needs_sudo(req.become_.as_ref()) {
            // Through the shell so that sudo, env and cd compose as on a remote host.
            let mut plain = req.clone();
            plain.timeout = None;
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(shell::command_line(&plain));
            c
        } else {
            let mut c = match &req.program {
                Program::Argv(argv) => {
                    let Some((prog, args)) = argv.split_first() else {
                        return Err(TransportError::Failed("empty command".into()));
                    };
                    let mut c = tokio::process::Command::new(prog);
                    c.args(args);
                    c
                }
                Program::Shell(script) => {
                    let mut c = tokio::process::Command::new("sh");
                    c.arg("-c").arg(script);
                    c
                }
            };
            c.envs(req.env.iter().map(|(k, v)| (k, v)));
            if let Some(dir) = &req.chdir {
                c.current_dir(dir);
            }
            c
        };
        cmd.stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            let what = match &req.program {
                Program::Argv(a) => a.first().cloned().unwrap_or_default(),
                Program::Shell(_) => "sh".into(),
            };
            TransportError::Failed(format!("cannot run `{what}`: {e}"))
        })?;
        let pid = child.id();
        if let (Some(input), Some(mut stdin)) = (req.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            });
        }
        let wait = child.wait_with_output();
        let output = match req.timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => {
                    // The whole process group: a shell's children die with it.
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        unsafe_kill_group(pid);
                    }
                    return Err(TransportError::Timeout(t));
                }
            },
            None => wait.await,
        }
        .map_err(|e| TransportError::Failed(format!("command failed: {e}")))?;
        let out = ExecOutput {
            rc: output.status.code().unwrap_or(-1),
            stdout: output.stdout,
            stderr: output.stderr,
        };
        shell::check_sudo(&req, &out)?;
        Ok(out)
    }

    async fn stat(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.local_stat(path, become_, true).await
    }

    async fn metadata(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.local_stat(path, become_, false).await
    }

    async fn read_with_stat(&self, path: &str, become_: Option<&Become>) -> Result<StatAndContent, TransportError> {
        if needs_sudo(become_) {
            let out = self
                .exec(ExecRequest::shell(shell::read_stat_script(path)).become_(become_.cloned()))
                .await?;
            return shell::parse_read_stat(path, out);
        }
        let Some(st) = self.local_stat(path, None, true).await? else {
            return Ok(None);
        };
        if st.kind != FileKind::File {
            return Ok(Some((st, None)));
        }
        let content = self.read_file(path, None).await?;
        Ok(content.map(|c| (st, Some(c))))
    }

    async fn read_file(&self, path: &str, become_: Option<&Become>) -> Result<Option<Vec<u8>>, TransportError> {
        if needs_sudo(become_) {
            let out = self
                .exec(ExecRequest::shell(shell::read_script(path)).become_(become_.cloned()))
                .await?;
            return shell::parse_read(path, out);
        }
        match tokio::fs::read(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TransportError::Failed(format!("cannot read `{path}`: {e}"))),
        }
    }

    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        attrs: &FileAttrs,
        become_: Option<&Become>,
    ) -> Result<(), TransportError> {
        if needs_sudo(become_) || attrs.owner.is_some() || attrs.group.is_some() {
            let req = ExecRequest::shell(shell::write_script(path, attrs, None)?)
                .stdin(content.to_vec())
                .become_(become_.cloned());
            let out = self.exec(req).await?;
            if out.rc != 0 {
                return Err(TransportError::Failed(format!(
                    "cannot write `{path}`: {}",
                    out.stderr_str().trim()
                )));
            }
            return Ok(());
        }
        let (path, content, mode) = (path.to_owned(), content.to_vec(), attrs.mode);
        tokio::task::spawn_blocking(move || native_write(&path, &content, mode))
            .await
            .map_err(|e| TransportError::Failed(e.to_string()))?
    }
}

impl LocalTransport {
    async fn local_stat(
        &self,
        path: &str,
        become_: Option<&Become>,
        hash: bool,
    ) -> Result<Option<FileStat>, TransportError> {
        if needs_sudo(become_) {
            let out = self
                .exec(ExecRequest::shell(shell::stat_script(path, hash)).become_(become_.cloned()))
                .await?;
            return shell::parse_stat(path, &out);
        }
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || native_stat(&path, hash))
            .await
            .map_err(|e| TransportError::Failed(e.to_string()))?
    }
}

fn unsafe_kill_group(pid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

fn native_stat(path: &str, hash: bool) -> Result<Option<FileStat>, TransportError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TransportError::Failed(format!("cannot stat `{path}`: {e}"))),
    };
    let kind = if meta.is_file() {
        FileKind::File
    } else if meta.is_dir() {
        FileKind::Directory
    } else {
        FileKind::Other
    };
    let sha256 = if meta.is_file() && hash {
        let bytes = std::fs::read(path).map_err(|e| TransportError::Failed(format!("cannot read `{path}`: {e}")))?;
        Some(hex(&Sha256::digest(&bytes)))
    } else {
        None
    };
    Ok(Some(FileStat {
        kind,
        mode: meta.permissions().mode() & 0o7777,
        owner: user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string()),
        group: group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string()),
        size: meta.len(),
        uid: meta.uid(),
        gid: meta.gid(),
        sha256,
    }))
}

fn native_write(path: &str, content: &[u8], mode: Option<u32>) -> Result<(), TransportError> {
    let err = |e: std::io::Error| TransportError::Failed(format!("cannot write `{path}`: {e}"));
    let target = std::path::Path::new(path);
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".flowrun.")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(content).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    let mode = match (mode, std::fs::metadata(target)) {
        (Some(m), _) => m,
        (None, Ok(old)) => old.permissions().mode() & 0o7777,
        (None, Err(_)) => 0o666 & !current_umask(),
    };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(err)?;
    tmp.persist(target).map_err(|e| err(e.error))?;
    Ok(())
}

fn current_umask() -> u32 {
    // /proc/self/status has `Umask:` on Linux; fall back to the usual 022.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// User name of a uid, from the password database.
pub fn user_name(uid: u32) -> Option<String> {
    lookup_name("/etc/passwd", uid)
}

/// Group name of a gid, from the group database.
pub fn group_name(gid: u32) -> Option<String> {
    lookup_name("/etc/group", gid)
}

fn lookup_name(db: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(db).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn exec_argv_and_shell() {
        let t = LocalTransport;
        let out = t.exec(ExecRequest::argv(["echo", "a b"])).await.unwrap();
        assert_eq!(out.stdout_str(), "a b\n");
        let out = t.exec(ExecRequest::shell("cat; exit 3").stdin("in")).await.unwrap();
        assert_eq!((out.rc, out.stdout_str().as_str()), (3, "in"));
    }

    #[tokio::test]
    async fn exec_timeout_kills() {
        let t = LocalTransport;
        let mut r = ExecRequest::shell("sleep 5");
        r.timeout = Some(Duration::from_millis(100));
        assert!(matches!(t.exec(r).await, Err(TransportError::Timeout(_))));
    }

    #[tokio::test]
    async fn native_and_shell_file_ops_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        let p = p.to_str().unwrap();
        let t = LocalTransport;
        assert!(t.stat(p, None).await.unwrap().is_none());
        t.write_file(
            p,
            b"hello\n",
            &FileAttrs {
                mode: Some(0o600),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        let native = t.stat(p, None).await.unwrap().unwrap();
        let out = t.exec(ExecRequest::shell(shell::stat_script(p, true))).await.unwrap();
        let via_shell = shell::parse_stat(p, &out).unwrap().unwrap();
        assert_eq!(native, via_shell);
        assert_eq!(native.mode, 0o600);
        // Shell write path (as used over SSH) keeps the mode when none is given.
        let out = t
            .exec(ExecRequest::shell(shell::write_script(p, &FileAttrs::default(), None).unwrap()).stdin("bye\n"))
            .await
            .unwrap();
        assert_eq!(out.rc, 0, "{}", out.stderr_str());
        assert_eq!(std::fs::read_to_string(p).unwrap(), "bye\n");
        assert_eq!(t.stat(p, None).await.unwrap().unwrap().mode, 0o600);
        let out = t
            .exec(ExecRequest::shell(shell::read_script("/nonexistent/x")))
            .await
            .unwrap();
        assert!(shell::parse_read("/nonexistent/x", out).unwrap().is_none());
    }
}
