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
    // Absent only when stat says so: a path we may not look into is an error, not "absent".
    format!(
        "if out=$(LC_ALL=C stat -L -c '%F|%a|%U|%G|%s' -- {p} 2>&1); then echo \"$out\"; \
         if [ -f {p} ]; then sha256sum -- {p} | cut -c1-64 || exit 3; fi; \
         else case \"$out\" in *'No such file'*|*'Not a directory'*) echo {ABSENT};; *) echo \"$out\" >&2; exit 3;; esac; fi"
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
    format!(
        "if [ -e {p} ]; then exec cat -- {p}; fi; \
         out=$(LC_ALL=C stat -L -- {p} 2>&1); case \"$out\" in *'No such file'*|*'Not a directory'*) exit {ABSENT_RC};; esac; \
         echo \"$out\" >&2; exit 1"
    )
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
    fn a_path_we_cannot_look_into_is_an_error_not_absent() {
        use std::process::Command;
        let run = |script: String| Command::new("sh").arg("-c").arg(script).output().unwrap();
        let missing = run(stat_script("/nonexistent/dir/file"));
        assert_eq!(String::from_utf8_lossy(&missing.stdout).trim(), ABSENT);
        let missing = run(read_script("/nonexistent/file"));
        assert_eq!(missing.status.code(), Some(ABSENT_RC));
        let under_file = run(stat_script("/etc/hostname/x"));
        assert_eq!(String::from_utf8_lossy(&under_file.stdout).trim(), ABSENT);
        // As an unprivileged user, root's home is closed: stat must fail, not say absent.
        if Command::new("id").arg("-u").output().unwrap().stdout == b"0\n" {
            let out = Command::new("su")
                .args(["nobody", "-s", "/bin/sh", "-c", &stat_script("/root/.bashrc")])
                .output()
                .unwrap();
            assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), ABSENT, "{out:?}");
            assert_eq!(out.status.code(), Some(3), "{out:?}");
        }
    }

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
