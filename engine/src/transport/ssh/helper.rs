//! The remote helper: one long-lived POSIX shell per SSH channel that runs
//! framed requests read from its stdin, so that a command costs one round
//! trip on an open channel instead of a new channel, a login shell and an
//! `sh -c` on the host, and so that no request ever travels in argv.
//!
//! ## Protocol
//!
//! The channel runs `sh -c BOOT sh TRACE` (through `sudo -n -H -u USER --`
//! for a helper that runs as another user). `BOOT` reads a line holding a
//! count N, then N lines of shell source, and `eval`s them: the helper's
//! source (below) and its nonce — 32 random hex digits, never in argv — come
//! on stdin. The first helper of a host asks who it runs as (`id -un`) and
//! whether `printf` is a builtin of its shell; later ones are told. The helper
//! prints `NONCE ready B USER\n` on stdout (`B`: 1 when `printf` is a
//! builtin), then loops:
//!
//! - request: a header line `ID LINES STDIN_LEN TIMEOUT MODE\n`, then `LINES`
//!   lines of shell script (read with the `read` builtin: any byte but NUL),
//!   then exactly `STDIN_LEN` raw bytes (read by GNU `head -c`, which never
//!   reads past its count, so binary and NUL bytes are safe). `TIMEOUT` is in
//!   whole seconds, 0 for none. `MODE` is `s` (a subshell) or `h` (see below).
//! - the helper prints `NONCEsID\n` on stdout and on stderr, runs the script
//!   in a subshell (stdin: the request's bytes, or `/dev/null`; stdout and
//!   stderr: the channel's own), then prints `NONCEeID RC\n` on stdout and
//!   `NONCEeID\n` on stderr. Output needs no escaping: the controller takes
//!   everything between the markers, byte for byte. Bytes before a start
//!   marker (a background process of an earlier command still writing) are
//!   dropped.
//! - with a timeout, the script runs under `timeout -k 5 TIMEOUT sh -c`, the
//!   script passed in the environment (`/proc/PID/environ` is private to the
//!   user, unlike argv). Bytes of stdin that the script leaves unread are
//!   drained, so the next header is always where the controller put it.
//! - mode `h` (the transport's own probes and writes, [`Request::shared`],
//!   never a user's command) runs the script in a function of the helper's
//!   own shell instead of a subshell, which spares the host a process per
//!   request. Such a script ends with `return`, never `exit` or `exec`,
//!   restores any shell option it sets, names its variables `__frq_*`, and
//!   has neither stdin nor a timeout (the helper runs those as mode `s`).
//! - requests may follow each other without waiting for answers (a batch:
//!   several frames in one write): the helper reads the next header only
//!   once the previous request has ended, and no script reads the channel.
//! - if `TRACE` is not empty (the test sshd sets `FLOWRUN_REMOTE_TRACE`) the
//!   helper appends `helper` when it starts and each request's id to that
//!   file: it is how tests count remote commands that sshd cannot see.
//!
//! A helper runs one request at a time; the transport keeps a small pool of
//! them per host (and per `become` user). A helper whose channel ends before
//! the start marker ran nothing, and the request is retried on a new one; one
//! that ends after it was killed under the command.

use super::super::ExecOutput;
use openssh::{Child, ChildStdin, ChildStdout, Session};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Reads the source (N lines after a count line) from stdin and runs it.
const BOOT: &str = "IFS= read -r n || exit 1; s=; while [ \"$n\" -gt 0 ]; do IFS= read -r l || exit 1; s=\"$s$l\n\"; n=$((n - 1)); done; unset l; eval \"$s\"";

/// The helper's loop; `@NONCE@` is replaced by the session's nonce.
const SOURCE: &str = r#"unset n s
__fr_n=@NONCE@
@FACTS@
__fr_t=${1-}
[ -n "$__fr_t" ] && { printf 'helper\n' >> "$__fr_t"; } 2>/dev/null
__fr_run() {
  if [ "$__fr_to" -gt 0 ]; then
    FLOWRUN_SCRIPT=$__fr_s timeout -k 5 "$__fr_to" sh -c 's=$FLOWRUN_SCRIPT; unset FLOWRUN_SCRIPT; eval "$s"'
  else
    (unset __fr_n __fr_t; set --; eval "$__fr_s")
  fi
}
__fr_drain() { __fr_run; __fr_r=$?; cat >/dev/null; return $__fr_r; }
__fr_own() { eval "$__fr_s"; }
printf '%s ready %s %s\n' "$__fr_n" "$__fr_b" "$__fr_who"
while IFS=' ' read -r __fr_id __fr_lines __fr_in __fr_to __fr_m; do
  __fr_s=
  while [ "$__fr_lines" -gt 0 ]; do
    IFS= read -r __fr_l || exit 1
    __fr_s="$__fr_s$__fr_l
"
    __fr_lines=$((__fr_lines - 1))
  done
  [ -n "$__fr_t" ] && { printf '%s\n' "$__fr_id" >> "$__fr_t"; } 2>/dev/null
  printf '%ss%s\n' "$__fr_n" "$__fr_id"
  printf '%ss%s\n' "$__fr_n" "$__fr_id" >&2
  if [ "$__fr_in" -gt 0 ]; then
    head -c "$__fr_in" | __fr_drain
  elif [ "$__fr_m" = h ] && [ "$__fr_to" -eq 0 ]; then
    __fr_own </dev/null
  else
    __fr_run </dev/null
  fi
  __fr_rc=$?
  printf '%se%s %s\n' "$__fr_n" "$__fr_id" "$__fr_rc"
  printf '%se%s\n' "$__fr_n" "$__fr_id" >&2
done
"#;

/// The command line that starts a helper (as `user` when given; the
/// transport asks for another user only once it knows it logs in as someone else).
pub fn start_command(user: Option<&str>) -> String {
    let q = crate::transport::quote;
    let run = format!("sh -c {} sh \"${{FLOWRUN_REMOTE_TRACE-}}\"", q(BOOT));
    match user {
        None => format!("exec {run}"),
        Some(u) => format!("exec sudo -n -H -u {} -- {run}", q(u)),
    }
}

/// What a host's first helper finds out (who logs in, whether its `sh` has
/// `printf` built in), so that later helpers need not run `id` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub login_user: String,
    /// `printf` is a builtin of the host's `sh`: file content written with
    /// it never appears in an argv.
    pub printf_builtin: bool,
}

/// The helper's opening lines: ask the host, or take what an earlier helper found.
fn facts_source(known: Option<(&Facts, &str)>) -> String {
    match known {
        None => "__fr_who=$(id -un)\ncase $(command -V printf 2>/dev/null) in *builtin*) __fr_b=1;; *) __fr_b=0;; esac"
            .to_owned(),
        Some((f, who)) => format!(
            "__fr_who={}\n__fr_b={}",
            crate::transport::quote(who),
            u8::from(f.printf_builtin)
        ),
    }
}

/// One request for a helper: a script, its stdin, its timeout in whole seconds (0: none).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub script: &'a str,
    pub stdin: Option<&'a [u8]>,
    pub timeout: u64,
    /// Run in the helper's own shell, not a subshell (mode `h`): only for
    /// the transport's own scripts, written for it (see the module's doc).
    pub shared: bool,
}

/// What went wrong with a request.
#[derive(Debug)]
pub enum Failure {
    /// The channel ended; `started` says whether the script had begun.
    Died { started: bool },
    /// The request cannot be framed (a NUL byte in the script).
    Invalid(String),
}

/// Output of one stream of the channel, read up to markers.
struct Stream<R> {
    inner: R,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Stream<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Everything before `marker` (which is consumed), or `None` at end of stream.
    async fn until(&mut self, marker: &[u8]) -> Option<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(i) = find(&self.buf[searched..], marker) {
                let at = searched + i;
                let rest = self.buf.split_off(at + marker.len());
                let mut head = std::mem::replace(&mut self.buf, rest);
                head.truncate(at);
                return Some(head);
            }
            searched = self.buf.len().saturating_sub(marker.len());
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.inner.read(&mut chunk).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|b| *b == first) {
            None => return None,
            Some(p) => i += p,
        }
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// One running helper on one channel.
pub struct Helper {
    /// Kept so the channel lives as long as the helper.
    _child: Child<Arc<Session>>,
    stdin: ChildStdin,
    out: Stream<ChildStdout>,
    err: Stream<openssh::ChildStderr>,
    nonce: String,
    next_id: u64,
    pub session: Arc<Session>,
    /// `become` user this helper runs as (`None`: the login user).
    pub user: Option<String>,
    /// Who the helper runs as, as it said when it started.
    pub whoami: String,
    /// `printf` is a builtin of its shell.
    pub printf_builtin: bool,
}

/// A helper that did not start: its exit status and what it printed.
pub struct NotStarted {
    pub output: ExecOutput,
}

impl Helper {
    /// Send the source to a freshly spawned channel and wait for `ready`.
    /// `known`: what an earlier helper of the host found, and who this one runs as.
    pub async fn start(
        session: Arc<Session>,
        mut child: Child<Arc<Session>>,
        user: Option<String>,
        known: Option<(&Facts, &str)>,
    ) -> Result<Self, NotStarted> {
        let nonce = new_nonce();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin().take(), child.stdout().take(), child.stderr().take())
        else {
            return Err(NotStarted {
                output: ExecOutput {
                    rc: -1,
                    stderr: b"the helper's channel has no pipes".to_vec(),
                    ..ExecOutput::default()
                },
            });
        };
        let source = SOURCE
            .replace("@NONCE@", &nonce)
            .replace("@FACTS@", &facts_source(known));
        let boot = format!("{}\n{source}", source.lines().count());
        let mut out = Stream::new(stdout);
        let mut err = Stream::new(stderr);
        let sent = stdin.write_all(boot.as_bytes()).await.is_ok() && stdin.flush().await.is_ok();
        let ready = format!("{nonce} ready ");
        let said = if sent {
            match out.until(ready.as_bytes()).await {
                Some(_) => out.until(b"\n").await,
                None => None,
            }
        } else {
            None
        };
        let Some(said) = said else {
            drop(stdin);
            let mut stderr = Vec::new();
            let _ = err.inner.read_to_end(&mut stderr).await;
            let mut all = std::mem::take(&mut err.buf);
            all.extend(stderr);
            let rc = match child.wait().await {
                Ok(s) => s.code().unwrap_or(-1),
                Err(_) => -1,
            };
            return Err(NotStarted {
                output: ExecOutput {
                    rc: if rc == 0 { -1 } else { rc },
                    stdout: Vec::new(),
                    stderr: all,
                },
            });
        };
        let said = String::from_utf8_lossy(&said).into_owned();
        let (builtin, whoami) = said.split_once(' ').unwrap_or(("0", &said));
        Ok(Self {
            _child: child,
            stdin,
            out,
            err,
            nonce,
            next_id: 1,
            session,
            user,
            whoami: whoami.to_owned(),
            printf_builtin: builtin == "1",
        })
    }

    /// What this helper found out, for the next ones.
    pub fn facts(&self) -> Facts {
        Facts {
            login_user: self.whoami.clone(),
            printf_builtin: self.printf_builtin,
        }
    }

    /// Run one request.
    pub async fn run(&mut self, req: Request<'_>) -> Result<ExecOutput, Failure> {
        let mut result = None;
        self.run_batch(&[req], |_, r| result = Some(r)).await;
        result.unwrap_or(Err(Failure::Died { started: false }))
    }

    /// Run `reqs` one after another, their frames sent in one write (one
    /// round trip for all). `done(i, result)` is called as each finishes, in
    /// order. Returns whether the helper can take more requests; after a
    /// death, the requests that had not started are reported not started.
    pub async fn run_batch(
        &mut self,
        reqs: &[Request<'_>],
        mut done: impl FnMut(usize, Result<ExecOutput, Failure>),
    ) -> bool {
        let mut frame = Vec::new();
        let mut sent = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            if r.script.contains('\0') {
                done(i, Err(Failure::Invalid("the command contains a NUL byte".into())));
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            push_frame(&mut frame, id, r);
            sent.push((i, id));
        }
        if sent.is_empty() {
            return true;
        }
        // One write: separate small writes would meet Nagle's algorithm on
        // ssh's TCP connection and the host's delayed ACK (tens of ms each).
        let stdin = &mut self.stdin;
        let write = async { stdin.write_all(&frame).await.is_ok() && stdin.flush().await.is_ok() };
        let (out, err, nonce) = (&mut self.out, &mut self.err, self.nonce.as_str());
        let read = async {
            for (k, &(i, id)) in sent.iter().enumerate() {
                match read_answer(out, err, nonce, id).await {
                    Ok(o) => done(i, Ok(o)),
                    Err(started) => {
                        done(i, Err(Failure::Died { started }));
                        for &(j, _) in &sent[k + 1..] {
                            done(j, Err(Failure::Died { started: false }));
                        }
                        return false;
                    }
                }
            }
            true
        };
        let (_, alive) = tokio::join!(write, read);
        alive
    }
}

/// The frame of one request: header, script lines, stdin bytes.
fn push_frame(frame: &mut Vec<u8>, id: u64, r: &Request<'_>) {
    let script = r.script;
    let newline = !script.ends_with('\n');
    let lines = script.bytes().filter(|b| *b == b'\n').count() + usize::from(newline);
    let input = r.stdin.unwrap_or_default();
    let mode = if r.shared { 'h' } else { 's' };
    frame.extend_from_slice(format!("{id} {lines} {} {} {mode}\n", input.len(), r.timeout).as_bytes());
    frame.extend_from_slice(script.as_bytes());
    if newline {
        frame.push(b'\n');
    }
    frame.extend_from_slice(input);
}

/// The output of request `id`, or whether it had started when the channel ended.
async fn read_answer<O, E>(out: &mut Stream<O>, err: &mut Stream<E>, nonce: &str, id: u64) -> Result<ExecOutput, bool>
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let (start, end_out, end_err) = (
        format!("{nonce}s{id}\n"),
        format!("{nonce}e{id} "),
        format!("{nonce}e{id}\n"),
    );
    let read_out = async {
        out.until(start.as_bytes()).await?;
        let body = out.until(end_out.as_bytes()).await;
        let rc = match &body {
            Some(_) => out.until(b"\n").await,
            None => None,
        };
        Some((body, rc))
    };
    let read_err = async {
        err.until(start.as_bytes()).await?;
        Some(err.until(end_err.as_bytes()).await)
    };
    let (o, e) = tokio::join!(read_out, read_err);
    let started = o.is_some() || e.is_some();
    match (o, e) {
        (Some((Some(stdout), Some(rc))), Some(Some(stderr))) => {
            let rc = String::from_utf8_lossy(&rc).trim().parse().unwrap_or(-1);
            Ok(ExecOutput { rc, stdout, stderr })
        }
        _ => Err(started),
    }
}

fn new_nonce() -> String {
    let mut r = [0u8; 16];
    if getrandom::fill(&mut r).is_err() {
        // Not a secret, only a marker no output will contain by chance.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        r = t.to_le_bytes();
    }
    format!("FR{}", crate::transport::local::hex(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_markers() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"xxa", b"a"), Some(2));
        assert_eq!(find(b"\0\0M1\n", b"M1\n"), Some(2));
    }

    /// The helper's source, run by a local `sh` over pipes: framing of
    /// binary stdin and output, exit codes, undrained stdin, timeouts.
    #[test]
    fn the_helper_frames_binary_requests() {
        use std::io::{Read, Write};
        use std::process::{Command, Stdio};
        let source = SOURCE
            .replace("@NONCE@", "NONCE")
            .replace("@FACTS@", &facts_source(None));
        let mut child = Command::new("sh")
            .args(["-c", BOOT, "sh", ""])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut w = child.stdin.take().unwrap();
        let bin: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let mut req = format!("{}\n{source}", source.lines().count()).into_bytes();
        req.extend_from_slice(format!("1 2 {} 0\ncat\nexit 3\n", bin.len()).as_bytes());
        req.extend_from_slice(&bin);
        req.extend_from_slice(b"2 1 5 0\ntrue\n\0\0\n\0\0");
        req.extend_from_slice(b"3 1 0 0\nprintf '[%s]' \"$__fr_n\" \"$#\"\n");
        // Mode `h`: in the helper's own shell (it sees the helper's variables,
        // its `return` ends the request, what it sets stays); the next runs on.
        req.extend_from_slice(b"4 2 0 0 h\n__frq_x=kept; printf '<%s>' \"$__fr_n\"\nreturn 5\n");
        req.extend_from_slice(b"5 1 0 0 h\nprintf '<%s>' \"$__frq_x\"\n");
        req.extend_from_slice(b"6 1 0 0 s\nexit 7\n");
        let feed = std::thread::spawn(move || {
            w.write_all(&req).unwrap();
        });
        let mut out = Vec::new();
        feed.join().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // Six requests, then EOF ends the helper.
        let _ = child.stdin.take();
        stdout.read_to_end(&mut out).unwrap();
        let mut expect = b"NONCE ready 1 ".to_vec();
        let who = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        expect.extend_from_slice(who.as_bytes());
        expect.extend_from_slice(b"NONCEs1\n");
        expect.extend_from_slice(&bin);
        expect.extend_from_slice(b"NONCEe1 3\nNONCEs2\nNONCEe2 0\nNONCEs3\n[][0]NONCEe3 0\n");
        expect.extend_from_slice(b"NONCEs4\n<NONCE>NONCEe4 5\nNONCEs5\n<kept>NONCEe5 0\nNONCEs6\nNONCEe6 7\n");
        assert!(
            out == expect,
            "{:?}",
            String::from_utf8_lossy(&out[out.len().saturating_sub(80)..])
        );
        child.wait().unwrap();
    }
}
