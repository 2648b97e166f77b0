//! `flowrun completions bash|zsh|fish` and `flowrun man`: clap's own
//! generators (clap_complete, clap_mangen) work from the same argument
//! definitions as the parser, so neither falls behind the CLI. What they
//! cannot know is added here: workflow names, which the scripts ask
//! `flowrun list --names` for when completing (so they follow ./workflows,
//! or $FLOWRUN_WORKFLOWS, as it is then), and the shorthand `flowrun NAME`.

use crate::cli::Shell;
use crate::error::Error;
use crate::exit::ExitStatus;
use std::io::Write as _;

/// Subcommands whose first positional argument is a workflow (`validate`: all of them).
const WORKFLOW_COMMANDS: &[&str] = &["run", "plan", "graph", "validate"];

pub fn completions(shell: Shell) -> Result<ExitStatus, Error> {
    let mut cmd = crate::cli::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(generator, &mut cmd, "flowrun", &mut buf);
    let generated = String::from_utf8_lossy(&buf).into_owned();
    let script = match shell {
        Shell::Bash => bash(&generated, &cmd),
        Shell::Zsh => zsh(&generated),
        Shell::Fish => fish(&generated),
    };
    // A closed pipe is not worth a panic.
    let _ = std::io::stdout().write_all(script.as_bytes());
    Ok(ExitStatus::Success)
}

/// One page: the global options, then each subcommand's synopsis and
/// options (clap_mangen alone would point at a page per subcommand), then
/// exit status and environment.
pub fn man() -> Result<ExitStatus, Error> {
    let render = |buf: &mut Vec<u8>| -> std::io::Result<()> {
        let cmd = crate::cli::command();
        let top = clap_mangen::Man::new(cmd.clone());
        top.render_title(buf)?;
        top.render_name_section(buf)?;
        top.render_synopsis_section(buf)?;
        top.render_description_section(buf)?;
        top.render_options_section(buf)?;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("flowrun {}", sub.get_name());
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            writeln!(buf, ".SH \"{}\"\n{}", name.to_uppercase(), roff_text(&about))?;
            let man = clap_mangen::Man::new(sub.clone().bin_name(name));
            let mut part = Vec::new();
            man.render_synopsis_section(&mut part)?;
            man.render_options_section(&mut part)?;
            // Sections of the subcommand become subsections of the page.
            let part = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
            buf.write_all(part.as_bytes())?;
        }
        buf.write_all(MAN_TAIL.as_bytes())
    };
    let mut buf = Vec::new();
    render(&mut buf).map_err(|e| Error::io("cannot render the man page", e))?;
    let _ = std::io::stdout().write_all(&buf);
    Ok(ExitStatus::Success)
}

/// Text safe in a roff paragraph (no leading `.` or `'`, backslashes escaped).
fn roff_text(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

const MAN_TAIL: &str = r#".SH "EXIT STATUS"
.TP
0
Success: every step is ok, changed or skipped.
.TP
1
A step failed or a host was unreachable (other hosts went on).
.TP
2
Invalid input (arguments, workflow, inventory, template): nothing ran.
.TP
3
Another run of the same workflow and inventory holds the lock.
.TP
130, 143
Interrupted by SIGINT or SIGTERM; the journal is consistent and the next run resumes.
.SH ENVIRONMENT
.TP
FLOWRUN_INVENTORY
The inventory when \fB\-i\fR is not given.
.TP
FLOWRUN_JOURNAL
The journal when \fB\-\-journal\fR is not given: a file, or \fIpostgres://USER@HOST:PORT/DB?sslmode=verify-full\fR for a journal shared by several controllers.
.TP
FLOWRUN_JOURNAL_KEY_FILE
The journal key when \fB\-\-journal\-key\fR is not given (controllers sharing a journal share it).
.TP
PGPASSWORD, PGPASSFILE, FLOWRUN_JOURNAL_PASSWORD_FILE
The password of a PostgreSQL journal (also \fI~/.pgpass\fR); never on the command line.
.TP
FLOWRUN_WORKFLOWS
Where workflow names are looked up (default \fI./workflows\fR).
.TP
NO_COLOR
When set, no colour even on a terminal.
.TP
CI
When set, no live progress: plain lines only.
.TP
RUST_LOG
Log filter on stderr, overriding \fB\-v\fR.
.SH "SEE ALSO"
\fBflowrun steps\fR describes every built-in step; \fBflowrun schema workflow\fR prints the JSON Schema editors use.
"#;

/// Options of the workflow commands that take a value (their next word is
/// not a positional argument).
fn value_options(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    for sub in cmd
        .get_subcommands()
        .filter(|s| WORKFLOW_COMMANDS.contains(&s.get_name()))
    {
        for a in sub
            .get_arguments()
            .filter(|a| !a.is_positional() && a.get_action().takes_values())
        {
            out.extend(a.get_short().map(|s| format!("-{s}")));
            out.extend(a.get_long().map(|l| format!("--{l}")));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// clap's script, wrapped: the first word may be a workflow (`flowrun NAME`
/// is `flowrun run NAME`), and a workflow command's workflow argument
/// completes workflow names and files.
fn bash(generated: &str, cmd: &clap::Command) -> String {
    let subcommands: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
    let wrapper = BASH_WRAPPER
        .replace("@SUBCOMMANDS@", &subcommands.join(" "))
        .replace("@WORKFLOW_COMMANDS@", &WORKFLOW_COMMANDS.join("|"))
        .replace("@VALUE_OPTIONS@", &value_options(cmd).join(" "));
    format!("{generated}\n{wrapper}")
}

const BASH_WRAPPER: &str = r#"# flowrun: workflow names from `flowrun list --names`.
_flowrun_workflow_names() {
    flowrun list --names 2>/dev/null
}

_flowrun_with_workflows() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i si=0 sub=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -q|--quiet|-v*|--verbose) ;;
            *) si=$i; sub="${COMP_WORDS[i]}"; break ;;
        esac
    done
    if [[ -z "$sub" ]]; then
        if [[ "$cur" != -* ]]; then
            COMPREPLY=($(compgen -W "@SUBCOMMANDS@ $(_flowrun_workflow_names)" -- "$cur"))
            return 0
        fi
    elif [[ " @SUBCOMMANDS@ " != *" $sub "* ]]; then
        # `flowrun NAME ...` is `flowrun run NAME ...`.
        COMP_WORDS=("${COMP_WORDS[@]:0:si}" run "${COMP_WORDS[@]:si}")
        COMP_CWORD=$((COMP_CWORD + 1))
        sub=run
    fi
    case "$sub" in
        @WORKFLOW_COMMANDS@)
            if [[ "$cur" != -* && " @VALUE_OPTIONS@ " != *" $prev "* ]]; then
                local n=0 skip=0 w
                for ((i = si + 1; i < COMP_CWORD; i++)); do
                    w="${COMP_WORDS[i]}"
                    if ((skip)); then skip=0; continue; fi
                    if [[ " @VALUE_OPTIONS@ " == *" $w "* ]]; then skip=1; continue; fi
                    [[ "$w" == -* ]] || n=$((n + 1))
                done
                if [[ $n -eq 0 || "$sub" == validate ]]; then
                    COMPREPLY=($(compgen -W "$(_flowrun_workflow_names)" -- "$cur") $(compgen -f -- "$cur"))
                    return 0
                fi
            fi
            ;;
    esac
    _flowrun flowrun "$cur" "${COMP_WORDS[COMP_CWORD-1]}"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _flowrun_with_workflows -o nosort -o bashdefault -o default flowrun
else
    complete -F _flowrun_with_workflows -o bashdefault -o default flowrun
fi
"#;

/// clap's script with the workflow arguments' action replaced by one that
/// offers workflow names and files, and the first word offering workflows too.
fn zsh(generated: &str) -> String {
    let mut out = String::with_capacity(generated.len() + 1024);
    for line in generated.lines() {
        let t = line.trim_start();
        let is_workflow_arg =
            (t.starts_with("':workflow:") || t.starts_with("':workflow -- ") || t.starts_with("'*::workflows"))
                && t.contains(":_default'");
        if is_workflow_arg {
            out.push_str(&line.replacen(":_default'", ":_flowrun_workflows'", 1));
        } else {
            out.push_str(&line.replace("\":: :_flowrun_commands\"", "\":: :_flowrun_commands_or_workflows\""));
        }
        out.push('\n');
    }
    let hook = "if [ \"$funcstack[1]\" = \"_flowrun\" ]; then";
    let helpers = r#"# flowrun: workflow names from `flowrun list --names`.
_flowrun_workflows() {
    local -a names
    names=(${(f)"$(flowrun list --names 2>/dev/null)"})
    _alternative 'workflows:workflow:compadd -a names' 'files:file:_files'
}

_flowrun_commands_or_workflows() {
    local -a names
    names=(${(f)"$(flowrun list --names 2>/dev/null)"})
    _alternative 'commands:command:_flowrun_commands' 'workflows:workflow:compadd -a names'
}

"#;
    match out.rfind(hook) {
        Some(i) => format!("{}{helpers}{}", &out[..i], &out[i..]),
        None => out + helpers,
    }
}

/// clap's script and completions of workflow names where a workflow goes.
fn fish(generated: &str) -> String {
    let mut out = generated.to_owned();
    out.push_str("\n# flowrun: workflow names from `flowrun list --names`.\n");
    out.push_str(
        "complete -c flowrun -n \"__fish_flowrun_needs_command\" -f -a \"(flowrun list --names 2>/dev/null)\" -d workflow\n",
    );
    for c in WORKFLOW_COMMANDS {
        out.push_str(&format!(
            "complete -c flowrun -n \"__fish_flowrun_using_subcommand {c}\" -a \"(flowrun list --names 2>/dev/null)\" -d workflow\n"
        ));
    }
    out
}
