//! A filesystem of its own for a test host whose steps change the system
//! (apt, services, users, firewall), so that those steps act for real without
//! touching this machine.
//!
//! `unshare --mount --propagation private --pid --fork` gives sshd a private
//! mount namespace and a pid namespace (sshd is its init: killing it kills
//! every process of the host). Inside, an overlay of `/` is mounted — the
//! machine's root filesystem as the read-only lower layer, a root-owned upper
//! and work directory in the host's temp dir — and sshd is `chroot`ed into it,
//! with a fresh `/proc`, the machine's `/dev` and `/sys` bound in, tmpfs on
//! `/run` (no `/run/systemd/system`: service steps take their SysV fallback)
//! and `/tmp`, and the host's own directory bound at the same path so sshd
//! finds its config and keys and writes its log where the test reads it.
//! Everything written inside (dpkg's database, `/etc`, new users) lands in
//! the upper directory and disappears with the host.
//!
//! Optionally (`--net`) the host also gets a network namespace of its own,
//! reached through the relay in `netns.rs`.
//!
//! Needs root (mount namespaces, overlayfs); `util-linux`'s `unshare` and
//! `nsenter`, which Debian always has.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn q(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command that starts an isolated sshd: mounts, chroot, sshd in the foreground.
pub fn launch_command(dir: &Path, net: bool, sshd_args: &[String]) -> io::Result<Command> {
    let fs = dir.join("fs");
    for sub in ["upper", "work", "root"] {
        std::fs::create_dir_all(fs.join(sub))?;
    }
    // The upper directory's mode becomes the mode of `/` inside.
    std::fs::set_permissions(fs.join("upper"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let root = fs.join("root");
    let r = q(&root);
    let d = q(dir);
    let inside_dir = q(&root.join(dir.strip_prefix("/").unwrap_or(dir)));
    let args: Vec<String> = sshd_args.iter().map(|a| q(Path::new(a))).collect();
    let script = format!(
        "set -e\n\
         mount -t overlay flowrun-lab -o lowerdir=/,upperdir={upper},workdir={work} {r}\n\
         mount -t proc proc {r}/proc\n\
         mount --rbind /dev {r}/dev\n\
         mount --rbind /sys {r}/sys\n\
         mount -t tmpfs -o mode=755 tmpfs {r}/run\n\
         mkdir -m 755 {r}/run/sshd\n\
         mount -t tmpfs -o mode=1777 tmpfs {r}/tmp\n\
         mkdir -p {inside_dir}\n\
         mount --bind {d} {inside_dir}\n\
         exec chroot {r} /usr/sbin/sshd {args}\n",
        upper = q(&fs.join("upper")),
        work = q(&fs.join("work")),
        args = args.join(" "),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]);
    if net {
        cmd.arg("--net");
    }
    cmd.args(["--", "sh", "-c", &script]);
    Ok(cmd)
}

/// The namespace's init (sshd) below the `unshare` process, once it is there.
pub fn wait_init(unshare_pid: u32, timeout: Duration) -> io::Result<u32> {
    let start = Instant::now();
    loop {
        if let Some(&pid) = super::procs::children(unshare_pid).first() {
            return Ok(pid);
        }
        if start.elapsed() > timeout {
            return Err(io::Error::other("the isolated host's namespace did not start"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run a shell script inside the host's namespaces and root (not over SSH).
pub fn run_inside(init: u32, net: bool, script: &str) -> io::Result<Output> {
    let mut cmd = Command::new("nsenter");
    cmd.arg("--target")
        .arg(init.to_string())
        .args(["--mount", "--pid", "--root", "--wd"]);
    if net {
        cmd.arg("--net");
    }
    cmd.args(["--", "sh", "-c", script]).stdin(Stdio::null()).output()
}

/// Where this machine sees the host's root filesystem.
pub fn root_path(init: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{init}/root"))
}
