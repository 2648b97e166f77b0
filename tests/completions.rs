//! `flowrun completions` and `flowrun man`, as a shell and `man` use them:
//! bash loads the script and its completion function completes real
//! workflow names from ./workflows (also one added after loading), and
//! `man -l` renders the page without warnings.

use crate::harness::Sandbox;
use std::process::{Command, Stdio};

fn bin_dir() -> String {
    std::path::Path::new(env!("CARGO_BIN_EXE_flowrun"))
        .parent()
        .unwrap()
        .display()
        .to_string()
}

fn sandbox_with_workflows() -> Sandbox {
    let sb = Sandbox::new();
    for name in ["deploy-site", "deploy-db", "rotate-keys"] {
        sb.write(&format!("workflows/{name}.yml"), "steps: []\n");
    }
    sb.write("hosts.yml", "all:\n  hosts: {}\n");
    sb
}

/// Complete each command line (the last word is the one being completed,
/// possibly empty) in a bash that loaded the script the way a user's
/// .bashrc does, and return the candidates of each.
fn bash_complete(sb: &Sandbox, lines: &[&str]) -> Vec<Vec<String>> {
    let script = sb.run(&["completions", "bash"], 0).stdout;
    sb.write("completion.bash", &script);
    let mut prog = String::from(
        "set -u\nsource ./completion.bash\n\
         fn=$(complete -p flowrun | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n\
         [ -n \"$fn\" ] || { echo 'no completion registered for flowrun' >&2; exit 9; }\n\
         c() { COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=\"$*\"; COMPREPLY=();\n\
               \"$fn\" flowrun \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; printf '%s\\n' \"${COMPREPLY[*]-}\"; }\n",
    );
    for l in lines {
        let mut words: Vec<String> = l.split(' ').map(|w| format!("'{w}'")).collect();
        if l.ends_with(' ') {
            words.pop();
            words.push("''".into());
        }
        prog.push_str(&format!("c {}\n", words.join(" ")));
    }
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .current_dir(sb.dir.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir()))
        .env_remove("FLOWRUN_WORKFLOWS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bash failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<Vec<String>> = stdout
        .lines()
        .map(|l| {
            let mut v: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            v.sort();
            v
        })
        .collect();
    got.resize(lines.len(), Vec::new());
    got
}

#[test]
fn bash_completes_workflow_names_subcommands_and_options() {
    let sb = sandbox_with_workflows();
    let got = bash_complete(
        &sb,
        &[
            "flowrun dep",
            "flowrun run deploy-s",
            "flowrun -q plan -i hosts.yml deploy-",
            "flowrun validate deploy-site rot",
            "flowrun sch",
            "flowrun deploy-site --ch",
            "flowrun run deploy-site --out",
            "flowrun run deploy-site --output ",
            "flowrun schema ",
        ],
    );
    assert_eq!(got[0], ["deploy-db", "deploy-site"], "first word: workflows");
    assert_eq!(got[1], ["deploy-site"]);
    assert_eq!(got[2], ["deploy-db", "deploy-site"], "after an option's value");
    assert_eq!(got[3], ["rotate-keys"], "validate takes several");
    assert_eq!(got[4], ["schema"]);
    assert_eq!(
        got[5],
        ["--check"],
        "the shorthand `flowrun NAME` completes run's options"
    );
    assert_eq!(got[6], ["--output"]);
    assert_eq!(got[7], ["json", "text"]);
    assert!(
        got[8].contains(&"inventory".to_owned()) && got[8].contains(&"workflow".to_owned()),
        "{:?}",
        got[8]
    );
}

#[test]
fn bash_completion_follows_the_workflows_directory_as_it_is() {
    let sb = sandbox_with_workflows();
    assert_eq!(bash_complete(&sb, &["flowrun run new"])[0], Vec::<String>::new());
    sb.write("workflows/new-runner.yml", "steps: []\n");
    assert_eq!(bash_complete(&sb, &["flowrun run new"])[0], ["new-runner"]);
}

#[test]
fn zsh_and_fish_scripts_ask_for_workflow_names() {
    let sb = sandbox_with_workflows();
    let zsh = sb.run(&["completions", "zsh"], 0).stdout;
    assert!(zsh.starts_with("#compdef flowrun"));
    assert!(zsh.contains(":_flowrun_workflows'"), "the workflow argument's action");
    assert!(zsh.contains("_flowrun_commands_or_workflows"));
    let fish = sb.run(&["completions", "fish"], 0).stdout;
    assert!(fish.contains("__fish_flowrun_using_subcommand run\" -a \"(flowrun list --names"));
    for (shell, text) in [("zsh", &zsh), ("fish", &fish)] {
        let Ok(out) = Command::new(shell)
            .arg("-n")
            .arg(sb.write(&format!("c.{shell}"), text))
            .output()
        else {
            continue; // that shell is not installed here
        };
        assert!(
            out.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        sb.run(&["list", "--names"], 0).stdout,
        "deploy-db\ndeploy-site\nrotate-keys\n"
    );
}

#[test]
fn man_renders_the_whole_cli() {
    let sb = Sandbox::new();
    let roff = sb.run(&["man"], 0).stdout;
    let page = sb.write("flowrun.1", &roff);
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .stdin(Stdio::null())
        .output()
        .expect("man is installed (scripts/deps)");
    // Without a terminal man still overstrikes bold (`N\x08N`): keep the letters.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\x08' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "man: {err}");
    for want in [
        "flowrun(1)",
        "NAME",
        "FLOWRUN RUN",
        "--inventory <INVENTORY>",
        "FLOWRUN COMPLETIONS",
        "EXIT STATUS",
        "FLOWRUN_JOURNAL",
    ] {
        assert!(text.contains(want), "the page lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("flowrun-run(1)"), "points at pages that do not exist");
}

/// fish, where it is installed: its own completion engine (`complete -C`)
/// offers the workflow names from the script.
#[test]
fn fish_completes_workflow_names_where_installed() {
    if Command::new("fish").arg("--version").output().is_err() {
        return; // not installed here; bash is the shell the suite requires
    }
    let sb = sandbox_with_workflows();
    let script = sb.run(&["completions", "fish"], 0).stdout;
    sb.write("c.fish", &script);
    let out = Command::new("fish")
        .args([
            "--no-config",
            "-c",
            "source c.fish; complete -C 'flowrun dep'; echo ---; complete -C 'flowrun run rot'",
        ])
        .current_dir(sb.dir.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, second) = text.split_once("---").unwrap_or_else(|| panic!("fish: {text}"));
    let names = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(first), ["deploy-db", "deploy-site"], "{text}");
    assert_eq!(names(second), ["rotate-keys"], "{text}");
}
