//! The files a test host is made of: its ed25519 host key, a client key pair
//! whose public half is the host's authorized key (for every user), the
//! `sshd_config`, and a `known_hosts` file that trusts exactly this host.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Generate an ed25519 key pair at `path` and `path.pub` with `ssh-keygen`.
pub fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The public key (`ssh-ed25519 AAAA...`) of a `.pub` file, without its comment.
pub fn public_key(pub_file: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(pub_file)?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => Err(io::Error::other(format!("no public key in {}", pub_file.display()))),
    }
}

/// How `known_hosts` names a host on a port: `[127.0.0.5]:2222` (bare address on 22).
pub fn known_hosts_name(addr: Ipv4Addr, port: u16) -> String {
    if port == 22 {
        addr.to_string()
    } else {
        format!("[{addr}]:{port}")
    }
}

pub struct ConfigInput<'a> {
    pub dir: &'a Path,
    pub listen: String,
    pub log_level: &'a str,
    pub extra: &'a [String],
}

/// The sshd configuration of a test host. Everything lives in the host's own
/// directory; there is no pid file, so many hosts can run side by side.
pub fn sshd_config(c: &ConfigInput<'_>) -> String {
    let d = c.dir.display();
    let mut s = format!(
        "# sshd_config of a flowrun test host\n\
         ListenAddress {listen}\n\
         HostKey {d}/host_ed25519\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         PidFile none\n\
         StrictModes no\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin yes\n\
         Subsystem sftp internal-sftp\n\
         # root's shell startup files here run pyenv unless SHLVL is set; flowrun's\n\
         # remote helper records the requests it runs (sshd sees only its channel)\n\
         SetEnv SHLVL=1 FLOWRUN_REMOTE_TRACE={d}/requests.log\n\
         MaxSessions 10\n\
         MaxStartups 100:30:200\n\
         LogLevel {level}\n",
        listen = c.listen,
        level = c.log_level,
    );
    for line in c.extra {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// Write `content` to `path` with `mode`.
pub fn write_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_known_hosts() {
        assert_eq!(known_hosts_name(Ipv4Addr::new(127, 0, 0, 5), 22), "127.0.0.5");
        assert_eq!(known_hosts_name(Ipv4Addr::new(127, 0, 0, 5), 2222), "[127.0.0.5]:2222");
    }
}
