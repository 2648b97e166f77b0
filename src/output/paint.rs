//! Colour for a person at a terminal, and none anywhere else: result lines
//! and `--diff` output are coloured only when stdout is a terminal and
//! `NO_COLOR` is not set (no-color.org), so logs, pipes and CI keep plain text.

use flowrun_engine::report::Status;
use std::io::IsTerminal;

/// Whether stdout gets colour.
pub fn wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    std::io::stdout().is_terminal() && !no_color && !dumb
}

const RESET: &str = "\x1b[0m";

fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}{RESET}")
    } else {
        text.to_owned()
    }
}

/// A status word in its colour: ok green, changed yellow, failed and
/// unreachable red, skipped dim.
pub fn status(on: bool, s: Status) -> String {
    let code = match s {
        Status::Ok => "32",
        Status::Changed => "33",
        Status::Failed => "1;31",
        Status::Unreachable => "1;35",
        Status::Skipped => "2",
    };
    paint(on, code, s.as_str())
}

/// A unified diff, indented under its result line; with colour, added
/// lines green, removed red, hunk headers cyan, file headers bold.
pub fn diff(on: bool, text: &str) -> String {
    let mut out = String::new();
    for line in text.trim_end().lines() {
        let code = if line.starts_with("+++") || line.starts_with("---") {
            "1"
        } else if line.starts_with('+') {
            "32"
        } else if line.starts_with('-') {
            "31"
        } else if line.starts_with("@@") {
            "36"
        } else {
            ""
        };
        out.push_str("    ");
        if code.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&paint(on, code, line));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_when_asked() {
        let d = "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n ctx\n";
        assert_eq!(
            diff(false, d),
            "    --- a\n    +++ b\n    @@ -1 +1 @@\n    -x\n    +y\n     ctx\n"
        );
        let c = diff(true, d);
        assert!(c.contains("\x1b[31m-x\x1b[0m") && c.contains("\x1b[32m+y\x1b[0m") && c.contains("    \x1b[36m@@"));
        assert_eq!(status(false, Status::Changed), "changed");
        assert_eq!(status(true, Status::Failed), "\x1b[1;31mfailed\x1b[0m");
    }
}
