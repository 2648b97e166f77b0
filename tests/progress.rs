//! Live progress as a person sees it: flowrun runs in a real terminal
//! (tmux), and the test reads the screen while a step waits on a gate it
//! controls (so nothing depends on timing): per-host bars with steps done of
//! total and the running step with its elapsed time, then, after the run, the
//! result lines and a clean recap with no bar left. Without a terminal, in
//! CI and with `-q` there are only plain lines, without escape sequences.

use crate::harness::Sandbox;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    /// A private tmux server running `script` in a 120x30 terminal.
    fn start(sb: &Sandbox, script: &str) -> Self {
        let socket = format!(
            "flowrun-test-{}-{}",
            std::process::id(),
            sb.dir.path().file_name().unwrap().to_string_lossy()
        );
        sb.write("run.sh", script);
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "30",
            ])
            .arg(format!("sh {}/run.sh", sb.dir.path().display()))
            .env_remove("CI")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is installed (scripts/deps)");
        assert!(ok.success(), "tmux did not start");
        Self { socket }
    }

    /// The screen as text (`escapes`: with colour sequences).
    fn screen(&self, escapes: bool) -> String {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "capture-pane", "-p", "-t", "0"]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    /// Wait (bounded) until the screen satisfies `f`; the last screen.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.screen(false);
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write(
        "hosts.yml",
        "all:\n  hosts:\n    web-01: { connection: local }\n    db-01: { connection: local }\n",
    );
    // `wait-gate` runs until the test creates `gate` (at most 60 s).
    sb.write(
        "gate.sh",
        "i=0; while [ ! -e gate ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n",
    );
    sb.write(
        "wf.yml",
        r#"
        steps:
          - id: prepare
            hosts: all
            uses: command
            with: { argv: [true] }
          - id: wait-gate
            hosts: all
            needs: [prepare]
            uses: command
            with: { argv: [sh, gate.sh], chdir: "$DIR" }
          - id: configure
            hosts: all
            needs: [wait-gate]
            uses: copy
            with: { dest: "$DIR/o-{{inventory_hostname}}", content: "x\n" }
        "#,
    );
    sb
}

fn command(sb: &Sandbox, extra: &str) -> String {
    format!(
        "cd {dir} && FLOWRUN_JOURNAL={dir}/journal.db XDG_STATE_HOME={dir}/state {bin} run wf.yml -i hosts.yml --force {extra}; echo EXIT=$?; sleep 600\n",
        dir = sb.dir.path().display(),
        bin = env!("CARGO_BIN_EXE_flowrun"),
    )
}

fn bar_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains("/3") && l.contains('[') && l.contains(']'))
        .collect()
}

#[test]
fn a_terminal_shows_bars_while_running_and_a_clean_recap_after() {
    let sb = sandbox();
    let t = Tmux::start(&sb, &command(&sb, ""));
    let during = t.wait_for("bars with the running step", |s| s.matches("wait-gate ").count() >= 2);
    let bars = bar_lines(&during);
    assert_eq!(bars.len(), 2, "one bar per host:\n{during}");
    for host in ["web-01", "db-01"] {
        let bar = bars
            .iter()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no bar for {host}:\n{during}"));
        assert!(bar.contains("1/3"), "steps done of total: {bar}");
        let tail = bar.split("wait-gate ").nth(1).unwrap_or_default();
        assert!(
            tail.trim().trim_end_matches('s').parse::<u64>().is_ok(),
            "elapsed time: {bar}"
        );
    }
    // The result lines stay above the bars, whole.
    assert!(
        during.contains("changed: [web-01] prepare") && during.contains("changed: [db-01] prepare"),
        "{during}"
    );
    let coloured = t.screen(true);
    assert!(coloured.contains("\x1b["), "a terminal gets colour");

    std::fs::write(sb.path("gate"), "").unwrap();
    let after = t.wait_for("the end of the run", |s| s.contains("EXIT="));
    assert!(after.contains("EXIT=0"), "{after}");
    assert!(bar_lines(&after).is_empty(), "a bar was left behind:\n{after}");
    let lines: Vec<&str> = after.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let recap = lines
        .iter()
        .position(|l| l.starts_with("RECAP wf run "))
        .expect("a recap");
    assert_eq!(recap, 6, "six result lines, then the recap:\n{after}");
    for host in ["web-01", "db-01"] {
        for step in ["prepare", "wait-gate", "configure"] {
            let want = format!("changed: [{host}] {step}");
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(&want)).count(),
                1,
                "{want}:\n{after}"
            );
        }
    }
    assert!(
        lines[recap + 1].starts_with("web-01 : ok=0 changed=3 failed=0"),
        "{after}"
    );
    assert!(
        lines[recap + 2].starts_with("db-01  : ok=0 changed=3 failed=0"),
        "{after}"
    );
    assert_eq!(lines[recap + 3], "EXIT=0");
}

#[test]
fn without_a_terminal_in_ci_and_quiet_there_are_plain_lines_only() {
    for (extra, env) in [("> log 2>&1", ""), ("", "CI=true"), ("-q", "")] {
        let sb = sandbox();
        let t = Tmux::start(&sb, &format!("export {env} NOOP=1\n{}", command(&sb, extra)));
        if extra.is_empty() {
            // A terminal, but CI: the run waits on the gate with no bar drawn.
            let s = t.wait_for("the first results", |s| s.contains("changed: [db-01] prepare"));
            std::thread::sleep(Duration::from_millis(500));
            let s2 = t.screen(false);
            assert!(
                bar_lines(&s).is_empty() && bar_lines(&s2).is_empty(),
                "bars in CI:\n{s2}"
            );
        }
        std::fs::write(sb.path("gate"), "").unwrap();
        let after = t.wait_for("the end of the run", |s| s.contains("EXIT="));
        assert!(after.contains("EXIT=0"), "{after}");
        assert!(bar_lines(&after).is_empty(), "{extra} {env}: bars:\n{after}");
        if extra.starts_with('>') {
            let log = sb.read("log");
            assert!(
                !log.contains('\x1b') && !log.contains('\r'),
                "escapes in a log:\n{log:?}"
            );
            assert!(
                log.contains("changed: [web-01] wait-gate") && log.contains("RECAP wf run"),
                "{log}"
            );
        }
        if extra == "-q" {
            assert!(!after.contains("changed: ["), "-q prints only failures:\n{after}");
        }
    }
}

/// `--diff` in a terminal: unified diffs under their line, removed lines
/// red and added lines green; `NO_COLOR` turns colour off; a re-run that
/// has nothing to change shows no diff.
#[test]
fn diffs_are_coloured_on_a_terminal_unless_no_color() {
    for no_color in [false, true] {
        let sb = Sandbox::new();
        sb.write("conf", "a\nb\nc\nd\ne\nf\ng\n");
        sb.write(
            "wf.yml",
            "steps:\n  - id: conf\n    uses: copy\n    with: { dest: conf, content: \"a\\nb\\nc\\nD\\ne\\nf\\ng\\n\" }\n",
        );
        let env = if no_color { "export NO_COLOR=1\n" } else { "" };
        let cmd = format!(
            "{env}cd {dir} && export FLOWRUN_JOURNAL={dir}/journal.db XDG_STATE_HOME={dir}/state && {bin} run wf.yml --diff; {bin} run wf.yml --diff; echo EXIT=$?; sleep 600\n",
            dir = sb.dir.path().display(),
            bin = env!("CARGO_BIN_EXE_flowrun"),
        );
        let t = Tmux::start(&sb, &cmd);
        let plain = t.wait_for("two runs", |s| s.contains("EXIT="));
        let coloured = t.screen(true);
        for want in [
            "    --- conf (current)",
            "    +++ conf (desired)",
            "    -d",
            "    +D",
            "     c",
        ] {
            assert!(plain.lines().any(|l| l.trim_end() == want), "no {want:?}:\n{plain}");
        }
        assert_eq!(
            plain.matches("@@").count(),
            2,
            "one hunk, a few lines of context:\n{plain}"
        );
        // The re-run comes from this sandbox's journal: nothing to show.
        assert!(plain.contains("ok: [localhost] conf (journal)"), "{plain}");
        assert_eq!(plain.matches("+D").count(), 1, "the re-run shows no diff:\n{plain}");
        let red = coloured.contains("\x1b[31m-d");
        let green = coloured.contains("\x1b[32m+D");
        if no_color {
            assert!(
                !red && !green && !coloured.contains("\x1b[33mchanged"),
                "NO_COLOR:\n{coloured:?}"
            );
        } else {
            assert!(red && green, "diff colours:\n{coloured:?}");
        }
    }
}

/// More hosts than bars fit: one bar sums them, and the screen never
/// holds more than that one.
#[test]
fn many_hosts_share_one_bar() {
    let sb = sandbox();
    let hosts: String = (1..=14)
        .map(|i| format!("    h{i:02}: {{ connection: local }}\n"))
        .collect();
    sb.write("hosts.yml", &format!("all:\n  hosts:\n{hosts}"));
    let t = Tmux::start(&sb, &command(&sb, ""));
    let during = t.wait_for("the summary bar", |s| s.contains("running; longest: wait-gate"));
    let bars: Vec<&str> = during.lines().filter(|l| l.contains("/42")).collect();
    assert_eq!(bars.len(), 1, "{during}");
    assert!(bars[0].starts_with("14 hosts ["), "{during}");
    std::fs::write(sb.path("gate"), "").unwrap();
    let after = t.wait_for("the end of the run", |s| s.contains("EXIT="));
    assert!(after.contains("EXIT=0") && !after.contains("/42"), "{after}");
}
