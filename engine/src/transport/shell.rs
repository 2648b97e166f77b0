//! POSIX shell snippets that transports run on a host: quoting, the command
//! line of a request (cd, env, timeout, sudo), and the stat/read/atomic-write
//! scripts behind the default file operations.

use super::{Become, ExecOutput, ExecRequest, FileAttrs, FileKind, FileStat, Program, TransportError};
use std::fmt::Write as _;

/// Quote a word for a POSIX shell: safe words as they are, the rest in single quotes.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn program_words(program: &Program) -> String {
    match program {
        Program::Argv(argv) => argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
        Program::Shell(script) => format!("sh -c {}", quote(script)),
    }
}

/// The request as one shell command line.
pub fn command_line(req: &ExecRequest) -> String {
    let mut inner = String::new();
    if !req.env.is_empty() {
        inner.push_str("env ");
        for (k, v) in &req.env {
            let _ = write!(inner, "{}={} ", quote(k), quote(v));
        }
    }
    inner.push_str(&program_words(&req.program));
    let run = match &req.become_ {
        Some(b) => become_words(b, &inner),
        None => inner,
    };
    let run = match req.timeout {
        // `timeout` kills the command (and sudo's child) when the step's time is up.
        Some(t) => format!("timeout -k 5 {} sh -c {}", t.as_secs().max(1), quote(&run)),
        None => run,
    };
    match &req.chdir {
        Some(dir) => format!("cd {} && {run}", quote(dir)),
        None => run,
    }
}

/// Run `inner` as `b.user`: directly when already that user, else `sudo -n`.
fn become_words(b: &Become, inner: &str) -> String {
    let user = quote(&b.user);
    format!("if [ \"$(id -un)\" = {user} ]; then {inner}; else sudo -n -H -u {user} -- {inner}; fi")
}

/// Turn sudo's refusal to prompt into a clear error.
pub fn check_sudo(req: &ExecRequest, out: &ExecOutput) -> Result<(), TransportError> {
    if req.become_.is_some() && out.rc != 0 {
        let err = out.stderr_str();
        if err.contains("a password is required") || err.contains("a terminal is required") {
            return Err(TransportError::Failed(
                "become: sudo asks for a password, and flowrun never answers prompts (it runs `sudo -n`); \
                 allow this user passwordless sudo (NOPASSWD) or connect as the target user"
                    .into(),
            ));
        }
        if err.contains("sudo: not found") || err.contains("sudo: command not found") {
            return Err(TransportError::Failed(
                "become: `sudo` is not installed on the host".into(),
            ));
        }
    }
    Ok(())
}

const ABSENT: &str = "__FLOWRUN_ABSENT__";

pub fn stat_script(path: &str) -> String {
    let p = quote(path);
    format!(
        "if [ -e {p} ]; then stat -L -c '%F|%a|%U|%G|%s' -- {p} || exit 3; \
         if [ -f {p} ]; then sha256sum -- {p} | cut -c1-64 || exit 3; fi; else echo {ABSENT}; fi"
    )
}

pub fn parse_stat(path: &str, out: &ExecOutput) -> Result<Option<FileStat>, TransportError> {
    let text = out.stdout_str();
    if out.rc != 0 {
        return Err(TransportError::Failed(format!(
            "cannot stat `{path}`: {}",
            out.stderr_str().trim()
        )));
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if first == ABSENT {
        return Ok(None);
    }
    let f: Vec<&str> = first.split('|').collect();
    if f.len() != 5 {
        return Err(TransportError::Failed(format!(
            "cannot stat `{path}`: unexpected output `{first}`"
        )));
    }
    let kind = match f[0] {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Directory,
        "symbolic link" => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let bad = || TransportError::Failed(format!("cannot stat `{path}`: unexpected output `{first}`"));
    Ok(Some(FileStat {
        kind,
        mode: u32::from_str_radix(f[1], 8).map_err(|_| bad())?,
        owner: f[2].to_owned(),
        group: f[3].to_owned(),
        size: f[4].parse().map_err(|_| bad())?,
        sha256: lines.next().map(|l| l.trim().to_owned()).filter(|l| l.len() == 64),
    }))
}

const ABSENT_RC: i32 = 44;

pub fn read_script(path: &str) -> String {
    let p = quote(path);
    format!("if [ -e {p} ]; then cat -- {p}; else exit {ABSENT_RC}; fi")
}

pub fn parse_read(path: &str, out: ExecOutput) -> Result<Option<Vec<u8>>, TransportError> {
    match out.rc {
        0 => Ok(Some(out.stdout)),
        ABSENT_RC => Ok(None),
        _ => Err(TransportError::Failed(format!(
            "cannot read `{path}`: {}",
            out.stderr_str().trim()
        ))),
    }
}

/// Content arrives on stdin into a temp file beside the target, which gets its
/// attributes (or the old file's) and is renamed over the target.
pub fn write_script(path: &str, attrs: &FileAttrs) -> String {
    let p = quote(path);
    let mut s = format!(
        "set -e; p={p}; d=$(dirname -- \"$p\"); t=$(mktemp \"$d/.flowrun.XXXXXX\"); \
         trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; "
    );
    match attrs.mode {
        Some(m) => {
            let _ = write!(s, "chmod {m:o} \"$t\"; ");
        }
        None => s.push_str(
            "if [ -e \"$p\" ]; then chmod --reference=\"$p\" \"$t\"; \
             else chmod \"$(printf '%o' $(( 0666 & ~0$(umask) )))\" \"$t\"; fi; ",
        ),
    }
    match (&attrs.owner, &attrs.group) {
        (None, None) => s.push_str("if [ -e \"$p\" ]; then chown --reference=\"$p\" \"$t\" 2>/dev/null || true; fi; "),
        (o, g) => {
            let spec = format!(
                "{}{}",
                o.as_deref().unwrap_or(""),
                g.as_ref().map(|g| format!(":{g}")).unwrap_or_default()
            );
            let _ = write!(s, "chown {} \"$t\"; ", quote(&spec));
        }
    }
    s.push_str("mv -f -- \"$t\" \"$p\"; trap - EXIT");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quoting() {
        assert_eq!(quote("abc/d.txt"), "abc/d.txt");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn command_line_orders_cd_timeout_sudo() {
        let mut r = ExecRequest::argv(["echo", "a b"]);
        r.chdir = Some("/tmp".into());
        r.timeout = Some(Duration::from_secs(7));
        r.become_ = Some(Become::default());
        let line = command_line(&r);
        assert!(line.starts_with("cd /tmp && timeout -k 5 7 sh -c "), "{line}");
        assert!(line.contains("sudo -n -H -u root -- echo"), "{line}");
    }
}
