//! A real PostgreSQL server for the journal tests: Debian's `postgresql`
//! binaries, `initdb` into a temporary directory and `pg_ctl start` on a
//! free loopback port, with TLS (a certificate signed by a throw-away CA, for
//! `sslmode=verify-full`) and password authentication (SCRAM) for a role
//! `flowrun` that owns a database `flowrun`. Each test takes a schema of its
//! own ([`PgServer::fresh_url`]), so tests share one server without sharing
//! state.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the
//! `postgres` user (created by the Debian package; else a system user
//! `flowrun-pg` is created) and owns its directory.
//!
//! The server is stopped when the [`PgServer`] is dropped, and, for the
//! process-wide [`PgServer::shared`] one that is never dropped, by a
//! watchdog process that holds a pipe from this process: when this process
//! ends, however it ends, the pipe closes and the watchdog stops the server
//! and removes its directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The password of the `flowrun` role.
pub const PASSWORD: &str = "journal-test-pw-5f1c";
/// The role and database the journal uses.
pub const USER: &str = "flowrun";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    watchdog: Option<(Child, ChildStdin)>,
    stopped: std::sync::Mutex<bool>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgServer(127.0.0.1:{})", self.port)
    }
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

fn other(m: impl Into<String>) -> io::Error {
    io::Error::other(m.into())
}

impl PgServer {
    /// One server for the whole test process, started on first use.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| Self::start().unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}")))
    }

    /// A server of its own (for tests that stop and restart it).
    pub fn start() -> io::Result<Self> {
        let bin = bin_dir()?;
        let owner = if crate::sshd::is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("flowrun-pg-").tempdir()?;
        write_certificates(dir.path())?;
        std::fs::write(dir.path().join("pwfile"), format!("{PASSWORD}\n"))?;
        if let Some((uid, gid)) = owner {
            chown_tree(dir.path(), uid, gid)?;
        }
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            owner,
            watchdog: None,
            stopped: std::sync::Mutex::new(true),
        };
        pg.initdb()?;
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            pg.configure()?;
            match pg.pg_ctl(&["start", "-w", "-t", "60"]) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        *pg.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        pg.watchdog = Some(pg.spawn_watchdog()?);
        pg.psql(
            "postgres",
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"),
        )?;
        pg.psql("postgres", "postgres", &format!("CREATE DATABASE {USER} OWNER {USER}"))?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server's certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A schema name no other test uses.
    pub fn fresh_schema() -> String {
        let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
        format!("t{}_{n}", std::process::id())
    }

    /// A journal URL on loopback without TLS, in `schema`.
    pub fn url(&self, schema: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{USER}?sslmode=disable&schema={schema}",
            self.port
        )
    }

    /// A journal URL with `sslmode=verify-full` against the test CA, in `schema`.
    pub fn tls_url(&self, schema: &str) -> String {
        format!(
            "postgres://{USER}@localhost:{}/{USER}?sslmode=verify-full&sslrootcert={}&schema={schema}",
            self.port,
            self.ca_file().display()
        )
    }

    /// A URL in a fresh schema.
    pub fn fresh_url(&self) -> String {
        self.url(&Self::fresh_schema())
    }

    /// Run SQL as the `flowrun` role (through the server's socket); rows as
    /// `|`-separated lines.
    pub fn sql(&self, sql: &str) -> io::Result<String> {
        self.sql_as(USER, sql)
    }

    /// Run SQL as a role (the superuser is `postgres`).
    pub fn sql_as(&self, role: &str, sql: &str) -> io::Result<String> {
        self.psql(role, USER, sql)
    }

    fn psql(&self, role: &str, db: &str, sql: &str) -> io::Result<String> {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", role, "-d", db, "-c", sql])
            .output()?;
        if !out.status.success() {
            return Err(other(format!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Stop the server (fast shutdown: sessions are ended, as when a server goes down).
    pub fn stop(&self) -> io::Result<()> {
        let mut stopped = self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*stopped {
            self.pg_ctl(&["stop", "-w", "-m", "fast"])?;
            *stopped = true;
        }
        Ok(())
    }

    /// Start it again after [`stop`](Self::stop), on the same port and data.
    pub fn restart(&self) -> io::Result<()> {
        let mut stopped = self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *stopped {
            self.pg_ctl(&["start", "-w", "-t", "60"])?;
            *stopped = false;
        }
        Ok(())
    }

    /// The server's log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A PostgreSQL program, run as the server's owner, in its directory.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("PGPASSWORD")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            // std drops the supplementary groups too when root changes uid.
            c.uid(uid).gid(gid);
        }
        c
    }

    fn initdb(&self) -> io::Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", self.dir.path().join("pwfile").display()))
            .arg("--no-sync")
            .output()?;
        check("initdb", &out)
    }

    /// Settings appended to postgresql.conf (later lines win).
    fn configure(&self) -> io::Result<()> {
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        if let Some(i) = text.find("\n# flowrun test settings\n") {
            text.truncate(i);
        }
        let d = self.dir.path().display();
        text.push_str(&format!(
            "\n# flowrun test settings\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{d}/server.pem'\nssl_key_file = '{d}/server.key'\n\
             log_connections = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\nmax_connections = 200\n",
            self.port
        ));
        std::fs::write(&conf, text)
    }

    fn pg_ctl(&self, args: &[&str]) -> io::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(args)
            .output()?;
        check("pg_ctl", &out).map_err(|e| other(format!("{e}\n--- server log\n{}", self.log())))
    }

    /// A process that stops the server and removes its directory when our
    /// end of its stdin closes (this process ended).
    fn spawn_watchdog(&self) -> io::Result<(Child, ChildStdin)> {
        let script = format!(
            "read _ ; '{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}' 2>/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.path().display()
        );
        let mut c = Command::new("/bin/sh");
        c.args(["-c", &script])
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        let mut child = c.spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| other("the watchdog has no stdin"))?;
        Ok((child, stdin))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn check(what: &str, out: &Output) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of PATH).
fn bin_dir() -> io::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        other("no PostgreSQL under /usr/lib/postgresql: install Debian's `postgresql` (scripts/deps does)")
    })
}

/// The user the server runs as when we are root: `postgres`, else `flowrun-pg` (created).
fn unprivileged_user() -> io::Result<(u32, u32)> {
    for name in ["postgres", "flowrun-pg"] {
        if let Some(ids) = lookup_user(name) {
            return Ok(ids);
        }
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "flowrun-pg",
        ])
        .output()?;
    check("useradd flowrun-pg", &out)?;
    lookup_user("flowrun-pg").ok_or_else(|| other("useradd did not create `flowrun-pg`"))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// `ca.pem` and the server's `server.pem`/`server.key` (for localhost and 127.0.0.1).
fn write_certificates(dir: &Path) -> io::Result<()> {
    let err = |e: rcgen::Error| other(format!("generating the test certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "flowrun journal test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(err)?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    let key_file = dir.join("server.key");
    std::fs::write(&key_file, key.serialize_pem())?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_takes_passwords_and_tls_and_stops() {
        let pg = PgServer::start().unwrap();
        assert_eq!(pg.sql("SELECT current_user").unwrap(), USER);
        assert_eq!(pg.sql_as("postgres", "SHOW ssl").unwrap(), "on");
        let data = pg.data();
        pg.stop().unwrap();
        assert!(pg.sql("SELECT 1").is_err(), "stopped");
        pg.restart().unwrap();
        assert_eq!(pg.sql("SELECT 1").unwrap(), "1");
        drop(pg);
        assert!(!data.join("postmaster.pid").exists(), "stopped when dropped");
    }
}
