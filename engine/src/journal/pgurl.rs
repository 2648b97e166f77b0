//! A PostgreSQL journal's address: `postgres://USER@HOST:PORT/DB?PARAMS`,
//! read the way libpq users expect (PGHOST, PGPORT, PGUSER, PGDATABASE fill
//! what the URL leaves out; the password comes from PGPASSWORD or a password
//! file such as `~/.pgpass`), with flowrun's stricter defaults: TLS with
//! `verify-full` unless the URL says otherwise, `sslmode=disable` only for a
//! loopback server, and no modes that fall back to plaintext silently.

use super::JournalError;
use percent_encoding::percent_decode_str;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The query parameters a journal URL takes.
const PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "schema",
    "passfile",
    "connect_timeout",
    "application_name",
    "host",
    "port",
    "user",
    "dbname",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS (loopback only).
    Disable,
    /// TLS without checking the server's certificate (loudly).
    Require,
    /// TLS, the certificate checked against the CA, not the host name.
    VerifyCa,
    /// TLS, the certificate checked against the CA and the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, JournalError> {
        Ok(match s {
            "disable" => Self::Disable,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" | "prefer" => {
                return Err(JournalError::Config(format!(
                    "`sslmode={s}` falls back to plaintext without saying so, which a shared journal must not do: use `verify-full` (with `sslrootcert=CA_FILE`), or `disable` for a server on loopback"
                )))
            }
            other => {
                return Err(JournalError::Config(format!(
                    "unknown `sslmode={other}`: use disable, require, verify-ca or verify-full"
                )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHost {
    Tcp(String),
    /// A Unix socket directory.
    Unix(PathBuf),
}

/// A parsed journal URL.
#[derive(Clone)]
pub struct PgTarget {
    pub user: String,
    /// A password written in the URL itself (only allowed from the environment).
    url_password: Option<String>,
    pub host: PgHost,
    pub port: u16,
    pub dbname: String,
    /// The PostgreSQL schema holding the journal's tables.
    pub schema: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub passfile: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub application_name: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({self})")
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = match &self.host {
            PgHost::Tcp(h) if h.contains(':') => format!("[{h}]"),
            PgHost::Tcp(h) => h.clone(),
            PgHost::Unix(_) => String::new(),
        };
        write!(f, "postgres://{}@{host}:{}/{}", self.user, self.port, self.dbname)?;
        let mut sep = '?';
        if let PgHost::Unix(dir) = &self.host {
            write!(f, "{sep}host={}", dir.display())?;
            sep = '&';
        }
        if self.schema != "flowrun" {
            write!(f, "{sep}schema={}", self.schema)?;
            sep = '&';
        }
        write!(f, "{sep}sslmode={}", self.sslmode.as_str())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// What the URL itself says of the server and database (its query may
/// say it again); the rest comes from the environment.
struct Given {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    dbname: Option<String>,
}

impl PgTarget {
    pub fn parse(url: &str) -> Result<Self, JournalError> {
        let bad = |m: String| JournalError::Config(format!("journal URL: {m}"));
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("it must start with `postgres://`".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, url_password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(decode(n)), Some(decode(p))),
                None => (Some(decode(u)), None),
            },
            None => (None, None),
        };
        let (host_text, port_text) = split_host_port(hostport).map_err(bad)?;
        if host_text.contains(',') {
            return Err(bad("several hosts are not supported: name one server".into()));
        }
        let host = (!host_text.is_empty()).then(|| decode(&host_text));
        let port = port_text.map(|p| parse_port(&p)).transpose().map_err(bad)?;
        let dbname = (!path.is_empty()).then(|| decode(path));
        let mut t = Self {
            user: String::new(),
            url_password,
            host: PgHost::Tcp(String::new()),
            port: 5432,
            dbname: String::new(),
            schema: "flowrun".into(),
            sslmode: SslMode::VerifyFull,
            sslrootcert: None,
            passfile: None,
            connect_timeout: Duration::from_secs(10),
            application_name: "flowrun".into(),
        };
        let mut given = Given {
            host,
            port,
            user,
            dbname,
        };
        t.apply_query(query, &mut given)?;
        t.settle(given)?;
        Ok(t)
    }

    /// The URL's query parameters (`?sslmode=...&schema=...`), over what the URL gave.
    fn apply_query(&mut self, query: &str, given: &mut Given) -> Result<(), JournalError> {
        let bad = |m: String| JournalError::Config(format!("journal URL: {m}"));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "sslmode" => self.sslmode = SslMode::parse(&v)?,
                "sslrootcert" => self.sslrootcert = Some(crate::paths::expand_home(&v)),
                "schema" => self.schema = v,
                "passfile" => self.passfile = Some(crate::paths::expand_home(&v)),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| bad(format!("`connect_timeout={v}` is not a number of seconds")))?;
                    self.connect_timeout = Duration::from_secs(secs.max(1));
                }
                "application_name" => self.application_name = v,
                "host" => given.host = Some(v),
                "port" => given.port = Some(parse_port(&v).map_err(bad)?),
                "user" => given.user = Some(v),
                "dbname" => given.dbname = Some(v),
                other => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`; valid: {}",
                        PARAMS.join(", ")
                    )))
                }
            }
        }
        Ok(())
    }

    /// Host, port, user and database from the URL, else the `PG*`
    /// environment, else libpq's defaults; then the checks of the whole.
    fn settle(&mut self, given: Given) -> Result<(), JournalError> {
        let bad = |m: String| JournalError::Config(format!("journal URL: {m}"));
        if !valid_identifier(&self.schema) {
            return Err(bad(format!(
                "`schema={}` must be a lowercase identifier (letters, digits, `_`)",
                self.schema
            )));
        }
        let host = given
            .host
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "localhost".into());
        self.host = if host.starts_with('/') {
            PgHost::Unix(PathBuf::from(host))
        } else {
            PgHost::Tcp(host)
        };
        self.port = match given.port {
            Some(p) => p,
            None => env("PGPORT")
                .map(|p| parse_port(&p))
                .transpose()
                .map_err(bad)?
                .unwrap_or(5432),
        };
        self.user = given
            .user
            .filter(|u| !u.is_empty())
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        self.dbname = given
            .dbname
            .filter(|d| !d.is_empty())
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| self.user.clone());
        if self.sslmode == SslMode::Disable && !self.is_loopback() {
            return Err(bad(format!(
                "`sslmode=disable` is only allowed for a server on loopback, not `{}`: use `sslmode=verify-full` with `sslrootcert=CA_FILE`",
                self.host_label()
            )));
        }
        Ok(())
    }

    /// Whether the URL itself carries a password (refused on the command line).
    pub fn has_url_password(&self) -> bool {
        self.url_password.is_some()
    }

    /// The server on this machine (loopback address or Unix socket).
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            PgHost::Unix(_) => true,
            PgHost::Tcp(h) => h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        }
    }

    /// The host as text, for messages and file names.
    pub fn host_label(&self) -> String {
        match &self.host {
            PgHost::Tcp(h) => h.clone(),
            PgHost::Unix(d) => d.display().to_string(),
        }
    }

    /// The password, from (in order) the URL, `PGPASSWORD`,
    /// `FLOWRUN_JOURNAL_PASSWORD_FILE` (a file holding only the password),
    /// then a password file (`passfile=`, `PGPASSFILE`, `~/.pgpass`).
    pub fn password(&self) -> Result<Option<String>, JournalError> {
        if let Some(p) = &self.url_password {
            return Ok(Some(p.clone()));
        }
        if let Some(p) = std::env::var_os("PGPASSWORD") {
            return Ok(Some(p.to_string_lossy().into_owned()));
        }
        if let Some(file) = env("FLOWRUN_JOURNAL_PASSWORD_FILE") {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| JournalError::Config(format!("cannot read the journal password file `{file}`: {e}")))?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        let passfile = self
            .passfile
            .clone()
            .or_else(|| env("PGPASSFILE").map(PathBuf::from))
            .unwrap_or_else(|| crate::paths::home().join(".pgpass"));
        Ok(self.in_passfile(&passfile))
    }

    /// libpq's password file: `host:port:database:user:password` lines,
    /// `*` matching anything; ignored when others can read it.
    fn in_passfile(&self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file `{}` is readable by others: ignored (make it mode 0600)",
                path.display()
            );
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        let host = match &self.host {
            PgHost::Tcp(h) => h.clone(),
            PgHost::Unix(_) => "localhost".into(),
        };
        let port = self.port.to_string();
        let wanted = [host.as_str(), port.as_str(), self.dbname.as_str(), self.user.as_str()];
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .find_map(|line| {
                let fields = split_pgpass(line);
                if fields.len() < 5 {
                    return None;
                }
                let matches = wanted.iter().zip(&fields).all(|(w, f)| f == "*" || f == w);
                matches.then(|| fields[4..].join(":"))
            })
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{p}` is not a port"))
}

/// `host:port`, `[v6]:port`, `host`, `` → (host, port).
fn split_host_port(s: &str) -> Result<(String, Option<String>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: an IPv6 address needs its closing `]`"))?;
        let port = after.strip_prefix(':').map(str::to_owned);
        return Ok((h.to_owned(), port));
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
        None => (s.to_owned(), None),
    })
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Split a `.pgpass` line on unescaped `:`, undoing `\:` and `\\`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_and_refuses_what_is_unsafe() {
        let t = PgTarget::parse("postgres://fl%6Fw@127.0.0.1:6543/jr?sslmode=disable&schema=ci").unwrap();
        assert_eq!((t.user.as_str(), t.port, t.dbname.as_str()), ("flow", 6543, "jr"));
        assert_eq!(t.host, PgHost::Tcp("127.0.0.1".into()));
        assert_eq!(t.schema, "ci");
        assert!(!t.has_url_password());
        assert_eq!(
            t.to_string(),
            "postgres://flow@127.0.0.1:6543/jr?schema=ci&sslmode=disable"
        );
        let t = PgTarget::parse("postgres://u@db.example.net/j?sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(t.sslmode, SslMode::VerifyFull, "TLS verified by default");
        let e = |u: &str| PgTarget::parse(u).unwrap_err().to_string();
        assert!(e("postgres://u@db.example.net/j?sslmode=disable").contains("only allowed for a server on loopback"));
        assert!(e("postgres://u@h/j?sslmode=prefer").contains("falls back to plaintext"));
        assert!(e("postgres://u@h/j?nope=1").contains("unknown parameter `nope`; valid: sslmode"));
        assert!(e("postgres://u@h/j?schema=Bad-Name").contains("lowercase identifier"));
        assert!(PgTarget::parse("postgres://u:pw@[::1]:5/j?sslmode=disable")
            .unwrap()
            .has_url_password());
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        assert_eq!(
            split_pgpass(r"h:5432:db:u:pa\:ss:word"),
            ["h", "5432", "db", "u", "pa:ss:word"]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "# comment\nother:*:*:*:no\n127.0.0.1:*:jr:u:s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = PgTarget::parse("postgres://u@127.0.0.1:7/jr?sslmode=disable").unwrap();
        assert_eq!(t.in_passfile(&file).as_deref(), Some("s3cret"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(t.in_passfile(&file), None, "a file others can read is ignored");
    }
}
