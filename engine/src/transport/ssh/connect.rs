//! Opening the master connection to one host with `openssh`'s builder, and
//! turning `ssh`'s failure text into errors an operator can act on: a host
//! key that is unknown or has CHANGED, refused authentication, or a host that
//! cannot be reached at all.
//!
//! All of them are `Unreachable`: the run cannot use the host. A changed key
//! is never accepted, whatever `host_key_policy` says (`accept-new` maps to
//! OpenSSH's `StrictHostKeyChecking=accept-new`, which adds unknown keys only).

use super::options::{self, ExtraArgs, SshOptions};
use crate::host::{Host, HostKeyPolicy};
use crate::paths::expand_home;
use crate::transport::TransportError;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// Everything needed to (re)connect to one host, resolved from the inventory.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub policy: HostKeyPolicy,
    pub ssh_config_file: Option<PathBuf>,
    pub extra: ExtraArgs,
}

impl Target {
    pub fn from_host(host: &Host) -> Result<Self, TransportError> {
        let c = &host.conn;
        let extra = options::parse_ssh_args(&c.ssh_args)
            .map_err(|e| TransportError::Failed(format!("host `{}`: {e}", host.name)))?;
        let path = |p: &PathBuf| expand_home(&p.to_string_lossy());
        Ok(Self {
            name: host.name.clone(),
            port: c.port,
            user: c.user.clone(),
            identity_file: c.identity_file.as_ref().map(path),
            known_hosts_file: c.known_hosts_file.as_ref().map(path),
            policy: c.host_key_policy,
            ssh_config_file: c.ssh_config_file.as_ref().map(path),
            extra,
        })
    }

    fn known_hosts_shown(&self) -> String {
        self.known_hosts_file
            .as_ref()
            .map_or_else(|| "~/.ssh/known_hosts".to_owned(), |p| p.display().to_string())
    }

    fn endpoint(&self, address: &str) -> String {
        match self.port {
            Some(p) if p != 22 => format!("[{address}]:{p}"),
            _ => address.to_owned(),
        }
    }
}

/// An address must not be mistaken for an `ssh` option or carry a user.
fn check_address(name: &str, address: &str) -> Result<(), TransportError> {
    if address.is_empty()
        || address.starts_with('-')
        || address.contains(['@', '/'])
        || address.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(TransportError::Failed(format!(
            "host `{name}`: `{address}` is not a host name or IP address"
        )));
    }
    Ok(())
}

/// Open the master connection. `config_file` is the generated file carrying
/// `ssh_args`, when there are any.
pub async fn open(
    target: &Target,
    address: &str,
    opts: &SshOptions,
    config_file: Option<&std::path::Path>,
) -> Result<Session, TransportError> {
    check_address(&target.name, address)?;
    options::ensure_control_dir(&opts.control_dir).map_err(TransportError::Failed)?;
    let mut b = SessionBuilder::default();
    b.known_hosts_check(match target.policy {
        HostKeyPolicy::Strict => KnownHosts::Strict,
        HostKeyPolicy::AcceptNew => KnownHosts::Add,
    })
    .connect_timeout(opts.connect_timeout.max(std::time::Duration::from_secs(1)))
    .server_alive_interval(opts.server_alive_interval.max(std::time::Duration::from_secs(1)))
    .control_directory(&opts.control_dir)
    .control_persist(ControlPersist::IdleFor(
        NonZeroUsize::new(usize::try_from(opts.idle_timeout.as_secs()).unwrap_or(usize::MAX))
            .unwrap_or(NonZeroUsize::MIN),
    ));
    if let Some(u) = &target.user {
        b.user(u.clone());
    }
    if let Some(p) = target.port {
        b.port(p);
    }
    if let Some(k) = &target.identity_file {
        b.keyfile(k);
    }
    if let Some(k) = &target.known_hosts_file {
        b.user_known_hosts_file(k);
    }
    if let Some(f) = config_file.or(target.ssh_config_file.as_deref()) {
        b.config_file(f);
    }
    if !target.extra.jump_hosts.is_empty() {
        b.jump_hosts(&target.extra.jump_hosts);
    }
    // ConnectTimeout bounds the TCP connect and the handshake; this bounds a
    // server that accepts and then never answers.
    let limit = opts.connect_timeout * 2 + std::time::Duration::from_secs(10);
    match tokio::time::timeout(limit, b.connect_mux(address)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(classify(target, address, &e)),
        Err(_) => Err(TransportError::Unreachable(format!(
            "cannot connect to `{}` ({}): no SSH handshake within {}",
            target.name,
            target.endpoint(address),
            humantime::format_duration(limit)
        ))),
    }
}

/// `openssh`'s error with its source (ssh's own message).
pub fn describe(e: &openssh::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The last meaningful line of ssh's output, without `@@@` banners.
fn ssh_message(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('@'))
        .unwrap_or("")
        .to_owned()
}

/// Turn a failed connect into an error that says what to do.
pub fn classify(target: &Target, address: &str, e: &openssh::Error) -> TransportError {
    let text = describe(e);
    let name = &target.name;
    let at = target.endpoint(address);
    let kh = target.known_hosts_shown();
    let msg = if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("has changed and you have requested strict checking")
    {
        let offending = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Offending "))
            .map(|l| format!(" (offending key: {l})"))
            .unwrap_or_default();
        format!(
            "host key for `{name}` ({at}) has CHANGED since it was recorded in {kh}{offending}: this may be \
             an attack (someone intercepting the connection), or the host was reinstalled. flowrun never \
             accepts a changed key; if the change is expected, remove the old key with \
             `ssh-keygen -R '{at}' -f {kh}` and run again"
        )
    } else if text.contains("Host key verification failed") || text.contains("host key is known for") {
        format!(
            "host key for `{name}` ({at}) is not trusted: it is not in {kh}; add it after checking its \
             fingerprint (`ssh-keyscan{port} {address}`), or set `host_key_policy: accept-new` for this host \
             in the inventory",
            port = target.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
        )
    } else if text.contains("Permission denied") {
        format!(
            "cannot log in to `{name}` ({at}) as `{}`: the server refused authentication ({}); check \
             `user` and `identity_file`",
            target.user.as_deref().unwrap_or("the default user"),
            ssh_message(&text).trim_end_matches('.')
        )
    } else {
        format!("cannot connect to `{name}` ({at}): {}", ssh_message(&text))
    };
    TransportError::Unreachable(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            name: "web1".into(),
            port: Some(2222),
            user: Some("deploy".into()),
            identity_file: None,
            known_hosts_file: Some("/k/known_hosts".into()),
            policy: HostKeyPolicy::Strict,
            ssh_config_file: None,
            extra: ExtraArgs::default(),
        }
    }

    fn connect_err(text: &str) -> openssh::Error {
        openssh::Error::Connect(std::io::Error::other(text.to_owned()))
    }

    #[test]
    fn changed_key_is_loud() {
        let e = classify(
            &target(),
            "10.0.0.1",
            &connect_err(
                "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@\n\
                 Offending ED25519 key in /k/known_hosts:1\nHost key verification failed.",
            ),
        );
        let TransportError::Unreachable(m) = e else { panic!() };
        assert!(
            m.starts_with("host key for `web1` ([10.0.0.1]:2222) has CHANGED"),
            "{m}"
        );
        assert!(m.contains("/k/known_hosts:1") && m.contains("ssh-keygen -R"), "{m}");
    }

    #[test]
    fn unknown_key_and_refusals() {
        let e = classify(
            &target(),
            "10.0.0.1",
            &connect_err("No ED25519 host key is known for [10.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed."),
        );
        assert!(
            e.to_string()
                .contains("host key for `web1` ([10.0.0.1]:2222) is not trusted"),
            "{e}"
        );
        let e = classify(
            &target(),
            "10.0.0.1",
            &connect_err("deploy@10.0.0.1: Permission denied (publickey)."),
        );
        assert!(
            e.to_string()
                .contains("cannot log in to `web1` ([10.0.0.1]:2222) as `deploy`"),
            "{e}"
        );
        let e = classify(
            &target(),
            "10.0.0.1",
            &connect_err("ssh: connect to host 10.0.0.1 port 2222: Connection refused"),
        );
        assert!(
            matches!(&e, TransportError::Unreachable(m) if m.ends_with("Connection refused")),
            "{e}"
        );
    }

    #[test]
    fn addresses_cannot_be_options() {
        assert!(check_address("h", "-oProxyCommand=x").is_err());
        assert!(check_address("h", "a@b").is_err());
        assert!(check_address("h", "a b").is_err());
        check_address("h", "10.0.0.1").unwrap();
        check_address("h", "::1").unwrap();
        check_address("h", "runner-01.example.com").unwrap();
    }
}
