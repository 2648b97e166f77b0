//! Real sshd test hosts on loopback.
//!
//! Each [`SshdHost`] is a real `/usr/sbin/sshd` with its own temp directory:
//! an ed25519 host key, a client key pair whose public half is authorized for
//! every user, an `sshd_config`, a `known_hosts` file that trusts exactly this
//! host, and sshd's log (`LogLevel VERBOSE`, via `-E`). Every host listens on
//! its own loopback address (`127.0.B.C`) and a free port, so inventories look
//! like real ones and many hosts run side by side.
//!
//! The log is how tests see what happened on a host: sshd logs one
//! `Starting session: command ...` line per command it runs, so
//! [`SshdHost::commands_executed`] proves "no SSH command ran" on a journaled
//! re-run, and [`SshdHost::connections_accepted`] proves multiplexing.
//!
//! Hosts whose steps change the system (apt, services, users, firewall) are
//! started with [`Isolation::Filesystem`] (and [`Isolation::FilesystemAndNetwork`]
//! for firewall rules): see `sshd/isolate.rs` and `sshd/netns.rs` for how an
//! overlay of `/` in private namespaces gives each host its own writable system
//! without touching this machine. Isolation needs root; plain hosts do not.
//!
//! A host is killed (its whole process tree) on [`SshdHost::kill`], on
//! [`SshdHost::stop`] and when dropped; [`SshdHost::kill`] is how tests make a
//! host die in the middle of a run.

mod config;
mod inventory;
mod isolate;
mod netns;
mod procs;

pub use config::{keygen, known_hosts_name, public_key};
pub use inventory::{inventory_yaml, write_inventory};
pub use procs::is_root;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How much of the machine a test host shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// sshd runs on this machine: commands act on this machine's files.
    #[default]
    None,
    /// An overlay of `/` in private mount and pid namespaces: writes stay in the host.
    Filesystem,
    /// As `Filesystem`, plus a network namespace of its own (for firewall rules).
    FilesystemAndNetwork,
}

#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Inventory name; default `sshd-127-0-B-C`.
    pub name: Option<String>,
    pub isolation: Isolation,
    /// A fixed loopback address instead of the next free one.
    pub address: Option<Ipv4Addr>,
    /// More `sshd_config` lines.
    pub extra_config: Vec<String>,
}

impl SshdOptions {
    pub fn isolated() -> Self {
        Self {
            isolation: Isolation::Filesystem,
            ..Self::default()
        }
    }

    pub fn isolated_network() -> Self {
        Self {
            isolation: Isolation::FilesystemAndNetwork,
            ..Self::default()
        }
    }

    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Sudo rights of a user added to an isolated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sudo {
    None,
    /// `NOPASSWD: ALL`.
    NoPassword,
    /// `ALL`, with a password: `sudo -n` must refuse.
    Password,
}

/// How long a host may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const ATTEMPTS: usize = 5;

/// A running sshd test host.
#[derive(Debug)]
pub struct SshdHost {
    name: String,
    dir: TempDir,
    address: Ipv4Addr,
    port: u16,
    user: String,
    isolation: Isolation,
    host_key: String,
    child: Option<Child>,
    /// The namespace's init (sshd) for isolated hosts.
    init: Option<u32>,
    relay: Option<netns::Relay>,
}

impl SshdHost {
    /// Start a host and wait until it accepts connections.
    pub fn start(opts: SshdOptions) -> io::Result<Self> {
        if opts.isolation != Isolation::None && !is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "isolated sshd hosts need root (mount namespaces and overlayfs)",
            ));
        }
        let dir = tempfile::Builder::new().prefix("flowrun-sshd-").tempdir()?;
        // Users other than root read the authorized keys through this directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        config::keygen(&dir.path().join("host_ed25519"), "flowrun-test-host")?;
        config::keygen(&dir.path().join("client_ed25519"), "flowrun-test-client")?;
        let client_pub = config::public_key(&dir.path().join("client_ed25519.pub"))?;
        config::write_file(&dir.path().join("authorized_keys"), &format!("{client_pub}\n"), 0o644)?;
        // Every user's helper appends to it (see `commands_executed`).
        config::write_file(&dir.path().join("requests.log"), "", 0o666)?;
        let host_key = config::public_key(&dir.path().join("host_ed25519.pub"))?;
        if is_root() {
            std::fs::create_dir_all("/run/sshd")?;
        }
        let user = if is_root() {
            "root".to_owned()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "root".into())
        };
        let mut host = Self {
            name: String::new(),
            dir,
            address: Ipv4Addr::LOCALHOST,
            port: 0,
            user,
            isolation: opts.isolation,
            host_key,
            child: None,
            init: None,
            relay: None,
        };
        let mut last_err = None;
        for _ in 0..ATTEMPTS {
            host.address = opts.address.unwrap_or_else(procs::next_address);
            host.port = procs::free_port(host.address)?;
            match host.launch(&opts.extra_config) {
                Ok(()) => {
                    host.name = opts
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("sshd-{}", host.address.to_string().replace('.', "-")));
                    let line = format!(
                        "{} {}\n",
                        config::known_hosts_name(host.address, host.port),
                        host.host_key
                    );
                    config::write_file(&host.known_hosts(), &line, 0o644)?;
                    return Ok(host);
                }
                Err(e) => {
                    // Most likely the port was taken between the check and sshd's bind.
                    last_err = Some(e);
                    host.kill();
                    let _ = std::fs::remove_file(host.log_path());
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    /// Start `n` hosts in parallel, named `PREFIX-01`... (`opts.name` is the prefix, default `host`).
    pub fn start_many(n: usize, opts: &SshdOptions) -> io::Result<Vec<Self>> {
        let prefix = opts.name.clone().unwrap_or_else(|| "host".into());
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let o = SshdOptions {
                        name: Some(format!("{prefix}-{:02}", i + 1)),
                        ..opts.clone()
                    };
                    s.spawn(move || Self::start(o))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("sshd start panicked")))
                })
                .collect()
        })
    }

    fn launch(&mut self, extra: &[String]) -> io::Result<()> {
        let net = self.isolation == Isolation::FilesystemAndNetwork;
        let listen = if net {
            // Inside its own namespace; the relay brings this host's address there.
            "0.0.0.0:22".to_owned()
        } else {
            format!("{}:{}", self.address, self.port)
        };
        let cfg = config::sshd_config(&config::ConfigInput {
            dir: self.dir.path(),
            listen,
            log_level: "VERBOSE",
            extra,
        });
        config::write_file(&self.dir.path().join("sshd_config"), &cfg, 0o644)?;
        let args: Vec<String> = vec![
            "-D".into(),
            "-e".into(),
            "-f".into(),
            self.path("sshd_config"),
            "-E".into(),
            self.path("sshd.log"),
        ];
        let mut cmd = match self.isolation {
            Isolation::None => {
                let mut c = Command::new("/usr/sbin/sshd");
                c.args(&args);
                c
            }
            Isolation::Filesystem | Isolation::FilesystemAndNetwork => {
                isolate::launch_command(self.dir.path(), net, &args)?
            }
        };
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let child = cmd.spawn()?;
        let pid = child.id();
        self.child = Some(child);
        if self.isolation != Isolation::None {
            self.init = Some(isolate::wait_init(pid, START_TIMEOUT)?);
        }
        self.wait_listening()?;
        if net {
            let init = self.init.unwrap_or(pid);
            let ns = std::fs::File::open(format!("/proc/{init}/ns/net"))?;
            netns::loopback_up(&ns)?;
            self.relay = Some(netns::Relay::start(
                SocketAddrV4::new(self.address, self.port),
                ns,
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 22),
            )?);
        }
        self.wait_connectable()
    }

    /// Until sshd logs that it listens, or exits (a port taken meanwhile), bounded.
    fn wait_listening(&mut self) -> io::Result<()> {
        let start = Instant::now();
        loop {
            if self.log().contains("Server listening on") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "sshd exited ({status}): {}{}",
                        self.log().trim(),
                        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
                    )));
                }
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(io::Error::other(format!(
                    "sshd did not listen within {START_TIMEOUT:?}: {}",
                    self.log().trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_connectable(&self) -> io::Result<()> {
        let start = Instant::now();
        let addr = SocketAddrV4::new(self.address, self.port).into();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > START_TIMEOUT => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).to_string_lossy().into_owned()
    }

    /// Inventory name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback address, e.g. `127.0.3.17`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user to log in as (root when the tests run as root).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key, authorized for every user of the host.
    pub fn identity_file(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A `known_hosts` file holding exactly this host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The host's public key (`ssh-ed25519 AAAA...`).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host's own directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Commands the host ran: those sshd started (`ssh host CMD`), and the
    /// requests that flowrun's remote helper ran on its channel (it records
    /// them in `requests.log`, named by the `FLOWRUN_REMOTE_TRACE` that this
    /// sshd sets), not counting the helpers' own channels.
    pub fn commands_executed(&self) -> usize {
        let trace = std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        let helpers = trace.lines().filter(|l| *l == "helper").count();
        let requests = trace.lines().count() - helpers;
        (self.log().matches("Starting session: command ").count() + requests).saturating_sub(helpers)
    }

    /// Remote helper channels started on the host (one per concurrent
    /// command stream and `become` user, not one per command).
    pub fn helpers_started(&self) -> usize {
        let trace = std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        trace.lines().filter(|l| *l == "helper").count()
    }

    /// Sessions of any kind (commands, shells, sftp).
    pub fn sessions_started(&self) -> usize {
        self.log().matches("Starting session: ").count()
    }

    /// Authenticated connections (a multiplexed client makes one per host).
    pub fn connections_accepted(&self) -> usize {
        self.log().matches("Accepted publickey for ").count()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kill the host and every process on it at once, as if it died: open
    /// connections drop and new ones are refused. Files and log stay readable.
    pub fn kill(&mut self) {
        if let Some(init) = self.init.take() {
            // The pid namespace's init: the kernel kills everything in the namespace with it.
            procs::signal(init, libc::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            procs::kill_tree(child.id());
            let _ = child.wait();
        }
        // After the host side is gone, so relayed connections see it drop.
        self.relay = None;
    }

    /// Stop the host (same as [`kill`](Self::kill); dropping the host also does it).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Where this machine sees the host's root filesystem: `/` for a plain
    /// host, `/proc/PID/root` (the overlay) for an isolated one.
    pub fn root(&self) -> PathBuf {
        match self.init {
            Some(init) => isolate::root_path(init),
            None => PathBuf::from("/"),
        }
    }

    /// The overlay's upper directory of an isolated host: every file written
    /// on the host lands here, so comparing its listing before and after
    /// proves that something (a `--check`) wrote nothing.
    pub fn upper_dir(&self) -> Option<PathBuf> {
        self.init.map(|_| self.dir.path().join("fs/upper"))
    }

    /// A path on the host as seen from this machine (`/etc/x` → `ROOT/etc/x`).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// Run a shell script on the host directly (not over SSH): inside its
    /// namespaces for an isolated host, on this machine otherwise.
    pub fn run(&self, script: &str) -> io::Result<Output> {
        match self.init {
            Some(init) => isolate::run_inside(init, self.isolation == Isolation::FilesystemAndNetwork, script),
            None => Command::new("sh").args(["-c", script]).stdin(Stdio::null()).output(),
        }
    }

    /// [`run`](Self::run), failing unless the script succeeds; returns its stdout.
    pub fn run_ok(&self, script: &str) -> io::Result<String> {
        let out = self.run(script)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "`{script}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Add a user (home in /home, shell /bin/sh) with the given sudo rights.
    /// Only on isolated hosts: this never changes the machine's own users.
    pub fn add_user(&self, name: &str, sudo: Sudo) -> io::Result<()> {
        if self.init.is_none() {
            return Err(io::Error::other(
                "add_user needs an isolated host (it would change this machine's users)",
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(io::Error::other(format!("bad user name `{name}`")));
        }
        let rule = match sudo {
            Sudo::None => String::new(),
            Sudo::NoPassword => format!("{name} ALL=(ALL:ALL) NOPASSWD: ALL"),
            Sudo::Password => format!("{name} ALL=(ALL:ALL) ALL"),
        };
        // `*` rather than useradd's locking `!`: without PAM, sshd refuses locked accounts.
        let mut script = format!("set -e; id {name} >/dev/null 2>&1 || useradd -m -s /bin/sh -p '*' {name}; ");
        if sudo == Sudo::Password {
            script.push_str(&format!("echo '{name}:flowrun-test-password' | chpasswd; "));
        }
        if !rule.is_empty() {
            script.push_str(&format!(
                "mkdir -p /etc/sudoers.d; printf '%s\\n' '{rule}' > /etc/sudoers.d/{name}; chmod 0440 /etc/sudoers.d/{name}"
            ));
        }
        self.run_ok(&script).map(|_| ())
    }
}

impl Drop for SshdHost {
    fn drop(&mut self) {
        self.kill();
    }
}

impl SshdHost {
    /// Start a killed host again with the same address, port, keys and files,
    /// as a machine comes back after a reboot. `extra_config` as at start.
    pub fn restart(&mut self, extra_config: &[String]) -> io::Result<()> {
        self.kill();
        self.launch(extra_config)
    }
}
