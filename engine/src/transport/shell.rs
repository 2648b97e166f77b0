//! POSIX shell snippets that transports run on a host: quoting, the command
//! line of a request (cd, env, timeout, sudo), and the stat/read/atomic-write
//! scripts behind the default file operations.

use super::{Become, ExecOutput, ExecRequest, FileAttrs, FileKind, FileStat, Program, StatAndContent, TransportError};
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

/// The request as a script for the remote helper, which runs it in a
/// subshell (already as the `become` user, under `timeout` when asked):
/// `cd`, the environment as exports, then the program's words or script.
pub fn helper_script(req: &ExecRequest) -> String {
    let mut s = String::new();
    if let Some(dir) = &req.chdir {
        let _ = writeln!(s, "cd {} || exit", quote(dir));
    }
    for (k, v) in &req.env {
        let _ = writeln!(s, "export {}={}", quote(k), quote(v));
    }
    match &req.program {
        Program::Argv(argv) => s.push_str(&argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")),
        Program::Shell(script) => s.push_str(script),
    }
    s.push('\n');
    s
}

/// Run `inner` as `b.user`: directly when already that user, else `sudo -n`.
fn become_words(b: &Become, inner: &str) -> String {
    let user = quote(&b.user);
    format!("if [ \"$(id -un)\" = {user} ]; then {inner}; else sudo -n -H -u {user} -- {inner}; fi")
}

/// Turn sudo's refusal to prompt into a clear error.
pub fn check_sudo(req: &ExecRequest, out: &ExecOutput) -> Result<(), TransportError> {
    match sudo_refusal(out) {
        Some(e) if req.become_.is_some() => Err(e),
        _ => Ok(()),
    }
}

/// The error for a failed `sudo -n`, if `out` is one.
pub fn sudo_refusal(out: &ExecOutput) -> Option<TransportError> {
    if out.rc == 0 {
        return None;
    }
    let err = out.stderr_str();
    if err.contains("a password is required") || err.contains("a terminal is required") {
        return Some(TransportError::Failed(
            "become: sudo asks for a password, and flowrun never answers prompts (it runs `sudo -n`); \
             allow this user passwordless sudo (NOPASSWD) or connect as the target user"
                .into(),
        ));
    }
    if err.contains("sudo: not found") || err.contains("sudo: command not found") {
        return Some(TransportError::Failed(
            "become: `sudo` is not installed on the host".into(),
        ));
    }
    None
}

/// What `stat` prints for a path, in one line.
const STAT_FORMAT: &str = "'%F|%a|%U|%G|%s|%u|%g'";

/// Exit status of a probe whose `stat` failed (its message is on stdout).
const STAT_FAILED: i32 = 3;

/// Exit status of a probe that found the path absent without running `stat`.
const PROBE_ABSENT: i32 = 45;

/// The directory whose entry `path` names, when the shell's own tests can
/// tell that `path` is absent: a path that ends in a name (not `/`, `.` or
/// `..`) of at most 255 bytes, in a path not too long to resolve.
fn parent_dir(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if path.len() > 1024 || matches!(name, "" | "." | "..") || path.split('/').any(|c| c.len() > 255) {
        return None;
    }
    Some(match path.rfind('/') {
        None => ".",
        Some(0) => "/",
        Some(i) => &path[..i],
    })
}

/// A script's body as a function, called: it ends with `return`, so that it
/// runs alike under `sh -c` and in the remote helper's own shell (which runs
/// the transport's scripts without a subshell, see `ssh/helper.rs`).
fn as_function(name: &str, body: &str) -> String {
    format!("{name}() {{\n{body}}}\n{name}\n")
}

/// The probe's first lines: `stat` runs only for a path that is there. A
/// path the shell's builtin tests do not see, in a directory they see and
/// may search, is absent (a dangling symbolic link too, as `stat -L` says);
/// anything else goes to `stat`, whose message tells why it cannot look.
fn stat_lines(path: &str) -> String {
    let p = quote(path);
    let mut s = String::new();
    if let Some(d) = parent_dir(path) {
        let d = quote(d);
        let _ = writeln!(
            s,
            "if ! [ -e {p} ] && ! [ -L {p} ] && [ -d {d} ] && [ -x {d} ]; then return {PROBE_ABSENT}; fi"
        );
    }
    let _ = writeln!(
        s,
        "LC_ALL=C stat -L -c {STAT_FORMAT} -- {p} 2>&1 || return {STAT_FAILED}"
    );
    s
}

/// One probe of `path`: its stat line, then (for a regular file) its SHA-256
/// when `hash`, in one command and at most two processes (none for a path
/// that is plainly absent).
pub fn stat_script(path: &str, hash: bool) -> String {
    let p = quote(path);
    let mut s = stat_lines(path);
    if hash {
        let _ = write!(s, "[ -f {p} ] || return 0\nsha256sum -- {p}\n");
    }
    as_function("__frq_stat", &s)
}

/// The stat line and, for a regular file, its content: `read` + `stat` in one command.
pub fn read_stat_script(path: &str) -> String {
    let p = quote(path);
    let mut s = stat_lines(path);
    let _ = write!(s, "[ -f {p} ] || return 0\ncat -- {p}\n");
    as_function("__frq_read", &s)
}

/// Absent only when stat says so: a path we may not look into is an error, not "absent".
fn stat_failure(path: &str, out: &ExecOutput) -> Result<(), TransportError> {
    if out.rc == PROBE_ABSENT {
        return Ok(());
    }
    if out.rc == STAT_FAILED {
        let text = out.stdout_str();
        if text.contains("No such file") || text.contains("Not a directory") {
            return Ok(());
        }
        return Err(TransportError::Failed(format!("cannot stat `{path}`: {}", text.trim())));
    }
    Err(TransportError::Failed(format!(
        "cannot stat `{path}`: {}",
        out.stderr_str().trim()
    )))
}

pub fn parse_stat(path: &str, out: &ExecOutput) -> Result<Option<FileStat>, TransportError> {
    if out.rc != 0 {
        return stat_failure(path, out).map(|()| None);
    }
    let (first, rest) = split_line(&out.stdout);
    let mut st = parse_stat_line(path, first)?;
    let hash = String::from_utf8_lossy(rest);
    st.sha256 = hash
        .get(..64)
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Ok(Some(st))
}

/// The stat and content from [`read_stat_script`]; content only for a regular file.
pub fn parse_read_stat(path: &str, out: ExecOutput) -> Result<StatAndContent, TransportError> {
    if out.rc != 0 {
        return stat_failure(path, &out).map(|()| None);
    }
    let (first, rest) = split_line(&out.stdout);
    let st = parse_stat_line(path, first)?;
    if st.kind != FileKind::File {
        return Ok(Some((st, None)));
    }
    let content = rest.to_vec();
    if content.len() as u64 != st.size {
        return Err(TransportError::Failed(format!(
            "cannot read `{path}`: it changed while it was read"
        )));
    }
    let st = FileStat {
        sha256: Some(crate::transport::local::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            &content,
        ))),
        ..st
    };
    Ok(Some((st, Some(content))))
}

fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

fn parse_stat_line(path: &str, line: &[u8]) -> Result<FileStat, TransportError> {
    let first = String::from_utf8_lossy(line);
    let bad = || TransportError::Failed(format!("cannot stat `{path}`: unexpected output `{first}`"));
    let f: Vec<&str> = first.split('|').collect();
    if f.len() != 7 {
        return Err(bad());
    }
    let kind = match f[0] {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Directory,
        "symbolic link" => FileKind::Symlink,
        _ => FileKind::Other,
    };
    Ok(FileStat {
        kind,
        mode: u32::from_str_radix(f[1], 8).map_err(|_| bad())?,
        owner: f[2].to_owned(),
        group: f[3].to_owned(),
        size: f[4].parse().map_err(|_| bad())?,
        uid: f[5].parse().map_err(|_| bad())?,
        gid: f[6].parse().map_err(|_| bad())?,
        sha256: None,
    })
}

const ABSENT_RC: i32 = 44;

pub fn read_script(path: &str) -> String {
    let p = quote(path);
    let body = format!(
        "if [ -e {p} ]; then cat -- {p}; return; fi\n\
         __frq_o=$(LC_ALL=C stat -L -- {p} 2>&1); case \"$__frq_o\" in *'No such file'*|*'Not a directory'*) return {ABSENT_RC};; esac\n\
         printf '%s\\n' \"$__frq_o\" >&2; return 1\n"
    );
    as_function("__frq_cat", &body)
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

/// Largest content [`write_script`] carries inline (the helper reads a
/// script line by line, which gets slow for long ones).
pub const INLINE_MAX: usize = 16 * 1024;

/// Whether `content` can travel inline in a script: text, no NUL, not long.
pub fn inline_text(content: &[u8]) -> Option<&str> {
    if content.len() > INLINE_MAX || content.contains(&0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

/// Write a new temp file beside the target (created exclusively under a
/// random name: `set -C`), give it its attributes (or the old file's), and
/// rename it over the target. The content arrives on stdin (`cat` writes it),
/// or is `inline` in the script, written by the shell's `printf` builtin (use
/// it only where `printf` is a builtin: the content must stay out of argv).
/// Besides, only `chmod` (for a mode, or the old file's), `chown` (for an
/// owner or group, or the old file's when it differs) and `mv` run. Fails
/// only when the system gives no random bytes for the temp name.
pub fn write_script(path: &str, attrs: &FileAttrs, inline: Option<&str>) -> Result<String, TransportError> {
    let p = quote(path);
    let d = match path.rfind('/') {
        None => ".",
        Some(0) => "/",
        Some(i) => &path[..i],
    };
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).map_err(|e| {
        TransportError::Failed(format!(
            "cannot name a temporary file for `{path}`: no random bytes: {e}"
        ))
    })?;
    let tag = crate::transport::local::hex(&r);
    // Every failure removes the temp file and returns its status (and `set -C` is undone).
    let or_fail = "|| { __frq_fail; return; }";
    let mut s = format!(
        "__frq_p={p}; __frq_d={}; __frq_t=\"$__frq_d/.flowrun.$$.{tag}\"\n\
         __frq_fail() {{ __frq_r=$?; set +C; rm -f \"$__frq_t\"; return \"$__frq_r\"; }}\n\
         set -C\n",
        quote(d)
    );
    match inline {
        Some(text) => {
            let _ = writeln!(s, "printf '%s' {} >\"$__frq_t\" {or_fail}", quote(text));
        }
        None => {
            let _ = writeln!(s, "cat >\"$__frq_t\" {or_fail}");
        }
    }
    s.push_str("set +C\n");
    match attrs.mode {
        Some(m) => {
            let _ = writeln!(s, "chmod {m:o} \"$__frq_t\" {or_fail}");
        }
        // A new file already has the umask's mode.
        None => {
            let _ = writeln!(
                s,
                "if [ -e \"$__frq_p\" ]; then chmod --reference=\"$__frq_p\" \"$__frq_t\" {or_fail}; fi"
            );
        }
    }
    match (&attrs.owner, &attrs.group) {
        // The temp file is ours (and in a setgid directory, the directory's group).
        (None, None) => s.push_str(
            "if [ -e \"$__frq_p\" ] && ! { [ -O \"$__frq_p\" ] && [ -G \"$__frq_p\" ] && ! [ -g \"$__frq_d\" ]; }; then \
             chown --reference=\"$__frq_p\" \"$__frq_t\" 2>/dev/null || true; fi\n",
        ),
        (o, g) => {
            let spec = format!(
                "{}{}",
                o.as_deref().unwrap_or(""),
                g.as_ref().map(|g| format!(":{g}")).unwrap_or_default()
            );
            let _ = writeln!(s, "chown {} \"$__frq_t\" {or_fail}", quote(&spec));
        }
    }
    let _ = writeln!(s, "mv -f -- \"$__frq_t\" \"$__frq_p\" {or_fail}");
    Ok(as_function("__frq_write", &s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_path_we_cannot_look_into_is_an_error_not_absent() {
        use std::process::Command;
        let run = |script: String| Command::new("sh").arg("-c").arg(script).output().unwrap();
        let probe = |script: String| {
            let out = run(script);
            let out = ExecOutput {
                rc: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            };
            parse_stat("p", &out)
        };
        assert!(probe(stat_script("/nonexistent/dir/file", true)).unwrap().is_none());
        let missing = run(read_script("/nonexistent/file"));
        assert_eq!(missing.status.code(), Some(ABSENT_RC));
        assert!(probe(stat_script("/etc/hostname/x", true)).unwrap().is_none());
        let st = probe(stat_script("/etc/hostname", true)).unwrap().unwrap();
        assert_eq!((st.kind, st.uid), (FileKind::File, 0));
        assert_eq!(st.sha256.map(|h| h.len()), Some(64));
        // As an unprivileged user, root's home is closed: stat must fail, not say absent.
        if Command::new("id").arg("-u").output().unwrap().stdout == b"0\n" {
            let out = Command::new("su")
                .args(["nobody", "-s", "/bin/sh", "-c", &stat_script("/root/.bashrc", true)])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(STAT_FAILED), "{out:?}");
            let out = ExecOutput {
                rc: STAT_FAILED,
                stdout: out.stdout,
                stderr: out.stderr,
            };
            assert!(parse_stat("/root/.bashrc", &out).is_err());
        }
    }

    /// The scripts as the remote helper runs the transport's own (mode `h`):
    /// one after another in a function of one shell, no subshell. Each gives
    /// what it gives under `sh -c`, and leaves the shell able to go on, with
    /// `set -C` undone and no temp file behind, failures included.
    #[test]
    fn the_transports_scripts_run_in_one_shell_as_under_sh_c() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let file = format!("{d}/it's a file");
        std::fs::write(&file, "hello\n").unwrap();
        let mode600 = FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        };
        let scripts = [
            stat_script(&format!("{d}/absent"), true),
            stat_script(&format!("{d}/absent/below"), false),
            stat_script(&file, true),
            read_stat_script(&file),
            read_script(&format!("{d}/absent")),
            write_script(&format!("{d}/new"), &mode600, Some("new\n")).unwrap(),
            write_script(&format!("{d}/absent/x"), &FileAttrs::default(), Some("x")).unwrap(),
            write_script(&file, &FileAttrs::default(), Some("bye\n")).unwrap(),
            read_script(&file),
        ];
        // What each prints, its status, in the helper's way: `eval` in a function.
        let mut shared = String::from("__fr_own() { eval \"$__fr_s\"; }\n");
        for (i, s) in scripts.iter().enumerate() {
            shared.push_str(&format!(
                "__fr_s={}\nprintf '<%s>' {i}; __fr_own </dev/null 2>&1; printf '</%s %s>' {i} $?\n",
                quote(s)
            ));
        }
        shared.push_str("case $- in *C*) printf noclobber;; esac\n");
        let out = Command::new("sh").arg("-c").arg(&shared).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let part = |i: usize| -> (String, i32) {
            let a = text.find(&format!("<{i}>")).unwrap() + format!("<{i}>").len();
            let b = text.find(&format!("</{i} ")).unwrap();
            let rc: String = text[b + format!("</{i} ").len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (text[a..b].to_owned(), rc.parse().unwrap())
        };
        let as_output = |i: usize| {
            let (stdout, rc) = part(i);
            ExecOutput {
                rc,
                stdout: stdout.into_bytes(),
                stderr: Vec::new(),
            }
        };
        assert!(!text.contains("noclobber"), "{text}");
        assert!(parse_stat("a", &as_output(0)).unwrap().is_none(), "{text}");
        assert_eq!(as_output(0).rc, PROBE_ABSENT, "no `stat` for a plainly absent path");
        assert!(parse_stat("b", &as_output(1)).unwrap().is_none(), "{text}");
        let st = parse_stat("f", &as_output(2)).unwrap().unwrap();
        assert_eq!((st.kind, st.size), (FileKind::File, 6));
        assert_eq!(
            st.sha256.as_deref(),
            Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        );
        let (st2, content) = parse_read_stat("f", as_output(3)).unwrap().unwrap();
        assert_eq!((st2.sha256, content.as_deref()), (st.sha256, Some(&b"hello\n"[..])));
        assert!(parse_read("r", as_output(4)).unwrap().is_none());
        assert_eq!(part(5).1, 0, "{text}");
        assert_eq!(std::fs::read_to_string(format!("{d}/new")).unwrap(), "new\n");
        let m = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(format!("{d}/new")).unwrap().permissions());
        assert_eq!(m & 0o7777, 0o600);
        let (msg, rc) = part(6);
        assert!(rc != 0 && msg.contains("/absent/"), "{text}");
        assert_eq!(part(7).1, 0, "{text}");
        assert_eq!(part(8), ("bye\n".to_owned(), 0));
        // The same scripts under `sh -c`, as the local transport runs them.
        let run = |script: &str| {
            let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
            ExecOutput {
                rc: o.status.code().unwrap_or(-1),
                stdout: o.stdout,
                stderr: o.stderr,
            }
        };
        assert_eq!(run(&scripts[0]).rc, PROBE_ABSENT);
        assert_eq!(parse_stat("f", &run(&scripts[2])).unwrap().unwrap().size, 4);
        assert!(run(&scripts[6]).rc != 0);
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".flowrun.")), "{names:?}");
    }

    #[test]
    fn only_a_plain_name_in_a_directory_is_judged_absent_by_the_shell() {
        assert_eq!(parent_dir("/a/b"), Some("/a"));
        assert_eq!(parent_dir("/a"), Some("/"));
        assert_eq!(parent_dir("a"), Some("."));
        assert_eq!(parent_dir("a//b"), Some("a/"));
        for p in ["", "/", "/a/", "/a/.", "/a/..", "..", &format!("/{}", "x".repeat(256))] {
            assert_eq!(parent_dir(p), None, "{p}");
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
