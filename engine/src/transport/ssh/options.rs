//! Settings of SSH connections and the checks they need before `ssh` runs:
//! the private directory for ControlMaster sockets, and the inventory's extra
//! `ssh_args`, which `openssh`'s builder cannot pass through and so reach
//! `ssh` as a generated config file.

use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the SSH transport connects and how much it asks of a host.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// TCP connect and SSH handshake time limit (`ConnectTimeout`).
    pub connect_timeout: Duration,
    /// A private directory (mode 0700, owned by this user) for ControlMaster sockets.
    pub control_dir: PathBuf,
    /// Commands run at once on one host. sshd's `MaxSessions` (default 10)
    /// caps the channels of a connection, so this must stay below it.
    pub max_sessions: usize,
    /// Keepalive probes (`ServerAliveInterval`): a dead host is noticed
    /// after three unanswered probes.
    pub server_alive_interval: Duration,
    /// The master connection exits after this long without commands
    /// (`ControlPersist`), so a crashed run leaves no ssh process behind; the
    /// next command reconnects.
    pub idle_timeout: Duration,
}

/// sshd's default `MaxSessions`.
pub const SSHD_MAX_SESSIONS: usize = 10;

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            control_dir: default_control_dir(),
            max_sessions: 8,
            server_alive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// `$XDG_RUNTIME_DIR/flowrun-ssh`, else `/tmp/flowrun-ssh-UID`.
pub fn default_control_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("flowrun-ssh"),
        // SAFETY: geteuid has no preconditions.
        None => std::env::temp_dir().join(format!("flowrun-ssh-{}", unsafe { libc::geteuid() })),
    }
}

/// Unix socket paths are limited to 107 bytes; openssh adds about 32 to the directory.
const MAX_CONTROL_DIR_LEN: usize = 70;

/// Create the control directory (mode 0700) or check that the existing one is private:
/// anyone who can reach a ControlMaster socket can run commands on the host.
pub fn ensure_control_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if dir.as_os_str().len() > MAX_CONTROL_DIR_LEN {
        return Err(format!(
            "the SSH control directory `{shown}` is too long for a socket path \
             (at most {MAX_CONTROL_DIR_LEN} bytes)"
        ));
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the SSH control directory `{shown}`: {e}")),
        Err(e) => Err(format!("cannot use the SSH control directory `{shown}`: {e}")),
        Ok(meta) => {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "the SSH control directory `{shown}` must be a directory of mode 0700 owned by \
                     the user running flowrun (uid {me}); it holds sockets that give access to hosts"
                ));
            }
            Ok(())
        }
    }
}

/// The inventory's `ssh_args`, sorted into what `ssh` can be given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraArgs {
    /// `-o Key=Value` pairs.
    pub options: Vec<(String, String)>,
    /// `-J host` jump hosts.
    pub jump_hosts: Vec<String>,
}

/// Accepts `-o Key=Value` (also `-oKey=Value`, `-o "Key Value"`) and `-J HOST`;
/// anything else is refused with what is supported.
pub fn parse_ssh_args(args: &[String]) -> Result<ExtraArgs, String> {
    let mut out = ExtraArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.as_str() {
            a if a.starts_with("-o") || a.starts_with("-J") => (&a[..2], &a[2..]),
            other => {
                return Err(format!(
                    "`ssh_args`: `{other}` is not supported; give ssh options as `-o Option=value` \
                     (or `-J host` for a jump host)"
                ))
            }
        };
        let value = if inline.is_empty() {
            it.next()
                .ok_or_else(|| format!("`ssh_args`: `{flag}` needs a value"))?
                .as_str()
        } else {
            inline
        };
        if value.contains(['\n', '\r', '\0']) {
            return Err(format!("`ssh_args`: `{flag}` value contains a line break"));
        }
        if flag == "-J" {
            out.jump_hosts.push(value.to_owned());
            continue;
        }
        let (k, v) = value
            .split_once('=')
            .or_else(|| value.trim().split_once(char::is_whitespace))
            .ok_or_else(|| format!("`ssh_args`: expected `-o Option=value`, got `-o {value}`"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("`ssh_args`: `{k}` is not an ssh option name"));
        }
        out.options.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// A config file carrying `options` ahead of the user's own configuration.
/// `ssh` takes the first value it finds for an option, and options given on
/// its command line (host key checking, known_hosts, identity) come before any
/// file, so `ssh_args` cannot weaken those.
pub fn render_config(host: &str, options: &[(String, String)], user_config: Option<&Path>) -> String {
    let mut s = format!("# generated by flowrun for host {host}: its ssh_args\n");
    for (k, v) in options {
        let _ = writeln!(s, "{k} {v}");
    }
    match user_config {
        Some(p) => {
            let _ = writeln!(s, "Include \"{}\"", p.display());
        }
        None => s.push_str("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ssh_args_forms() {
        let a = parse_ssh_args(&v(&[
            "-o",
            "Compression=yes",
            "-oServerAliveCountMax=5",
            "-o",
            "ProxyCommand ssh -W %h:%p bastion",
            "-J",
            "jump@bastion",
        ]))
        .unwrap();
        assert_eq!(
            a.options,
            vec![
                ("Compression".into(), "yes".into()),
                ("ServerAliveCountMax".into(), "5".into()),
                ("ProxyCommand".into(), "ssh -W %h:%p bastion".into()),
            ]
        );
        assert_eq!(a.jump_hosts, vec!["jump@bastion".to_owned()]);
    }

    #[test]
    fn ssh_args_refusals_say_what_is_supported() {
        let e = parse_ssh_args(&v(&["-v"])).unwrap_err();
        assert!(
            e.contains("`-v` is not supported") && e.contains("-o Option=value"),
            "{e}"
        );
        assert!(parse_ssh_args(&v(&["-o"])).unwrap_err().contains("needs a value"));
        assert!(parse_ssh_args(&v(&["-o", "a\nb=c"])).is_err());
        assert!(parse_ssh_args(&v(&["-o", "Bad-Name=1"])).is_err());
    }

    #[test]
    fn config_puts_options_first() {
        let c = render_config("h", &[("Compression".into(), "yes".into())], None);
        assert!(c.find("Compression yes").unwrap() < c.find("Include ~/.ssh/config").unwrap());
        let c = render_config("h", &[], Some(Path::new("/x/cfg")));
        assert!(c.contains("Include \"/x/cfg\"") && !c.contains("/etc/ssh"));
    }

    #[test]
    fn control_dir_must_be_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ctl");
        ensure_control_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        ensure_control_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(ensure_control_dir(&dir).unwrap_err().contains("mode 0700"));
        let long = base.path().join("x".repeat(80));
        assert!(ensure_control_dir(&long).unwrap_err().contains("too long"));
    }
}
