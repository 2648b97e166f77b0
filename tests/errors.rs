//! Every kind of invalid input is reported with file, line and column, exits
//! with status 2, and runs nothing (each workflow has a step that would leave
//! a marker file behind).

use crate::harness::Sandbox;

/// Load `wf.yml` (after `files`), expect exit 2, the location and the message; the marker must not exist.
#[track_caller]
fn rejects(files: &[(&str, &str)], workflow: &str, location: &str, message: &str) {
    let sb = Sandbox::new();
    for (name, text) in files {
        sb.write(name, text);
    }
    sb.write("wf.yml", workflow);
    let mut args = vec!["run", "wf.yml"];
    if files.iter().any(|(n, _)| *n == "hosts.yml") {
        args.extend(["-i", "hosts.yml"]);
    }
    let r = sb.run(&args, 2);
    r.stderr_has(location).stderr_has(message);
    assert!(!sb.exists("marker"), "a step ran despite the error");
    // `validate` reports the same, also with status 2.
    let mut v = vec!["validate", "wf.yml"];
    v.extend_from_slice(&args[2..]);
    sb.run(&v, 2).stderr_has(message);
}

const MARKER: &str = "  - id: marker\n    uses: command\n    with: { argv: [touch, marker] }\n";

fn wf(body: &str) -> String {
    format!("steps:\n{MARKER}{body}")
}

#[test]
fn yaml_syntax() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true }\n"),
        "wf.yml:7:",
        "invalid YAML",
    );
}

#[test]
fn unknown_step_key() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    neds: [marker]\n    with: { argv: [true] }\n"),
        "wf.yml:7:5",
        "unknown key `neds` in a step",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    neds: [marker]\n    with: { argv: [true] }\n"),
        "wf.yml:7:5",
        "did you mean `needs`?",
    );
}

#[test]
fn unknown_workflow_key() {
    rejects(
        &[],
        &format!("vras: {{}}\n{}", wf("")),
        "wf.yml:1:1",
        "unknown key `vras` in a workflow",
    );
}

#[test]
fn unknown_step_kind() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: comand\n"),
        "wf.yml:6:11",
        "unknown step `comand`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: comand\n"),
        "wf.yml:6:11",
        "did you mean `command`?",
    );
}

#[test]
fn unknown_parameter() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true], chdri: /tmp }\n"),
        "wf.yml:7:27",
        "unknown parameter `chdri` for step `command`",
    );
}

#[test]
fn missing_parameter() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: copy\n    with: { content: hi }\n"),
        "wf.yml:7:11",
        "missing the required parameter `dest`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { chdir: /tmp }\n"),
        "wf.yml:7:11",
        "needs one of `argv` or `shell`",
    );
}

#[test]
fn wrong_literal_type() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: file\n    with: { path: /tmp/x, state: directroy }\n"),
        "wf.yml:7:34",
        "did you mean `directory`?",
    );
}

#[test]
fn duplicate_step_id() {
    rejects(
        &[],
        &wf("  - id: marker\n    uses: command\n    with: { argv: [true] }\n"),
        "wf.yml:5:9",
        "duplicate step id `marker` (first defined at",
    );
}

#[test]
fn unknown_needs() {
    rejects(
        &[],
        &wf("  - id: x\n    needs: [markr]\n    uses: command\n    with: { argv: [true] }\n"),
        "wf.yml:6:13",
        "needs `markr`, which is not a step",
    );
}

#[test]
fn dependency_cycle_prints_the_whole_cycle() {
    let body = "  - id: a\n    needs: [c]\n    uses: command\n    with: { argv: [true] }\n  - id: b\n    needs: [a]\n    uses: command\n    with: { argv: [true] }\n  - id: c\n    needs: [b]\n    uses: command\n    with: { argv: [true] }\n";
    rejects(&[], &wf(body), "wf.yml:6:12", "dependency cycle: a -> c -> b -> a");
}

#[test]
fn undefined_template_variable() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [echo, \"{{greting}}\"] }\n"),
        "wf.yml:7:26",
        "undefined variable `greting`",
    );
    rejects(
        &[],
        &format!(
            "vars: {{ greeting: hi }}\n{}",
            wf("  - id: x\n    uses: command\n    with: { argv: [echo, \"{{#if greting}}x{{/if}}\"] }\n")
        ),
        "wf.yml:8:26",
        "did you mean `greeting`?",
    );
}

#[test]
fn output_of_a_step_not_in_needs() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [echo, \"{{steps.marker.outputs.stdout}}\"] }\n"),
        "wf.yml:7:26",
        "does not need `marker`",
    );
    rejects(&[], &wf("  - id: x\n    needs: [marker]\n    uses: command\n    with: { argv: [echo, \"{{steps.marker.outputs.stdot}}\"] }\n"), "wf.yml:8:26", "has no output `stdot`");
}

#[test]
fn unknown_handler() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true] }\n    notify: [restart]\n"),
        "wf.yml:8:14",
        "notifies `restart`, which is not a handler",
    );
}

#[test]
fn import_cycle() {
    let a = "imports: [b.yml]\nsteps: []\n";
    let b = "imports: [wf.yml]\nsteps: []\n";
    rejects(
        &[("a.yml", a), ("b.yml", b)],
        &format!("imports: [a.yml]\n{}", wf("")),
        "b.yml:1:11",
        "import cycle: wf.yml -> a.yml -> b.yml -> wf.yml",
    );
}

#[test]
fn bad_duration() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true] }\n    timeout: soon\n"),
        "wf.yml:8:14",
        "invalid duration `soon`",
    );
}

#[test]
fn unknown_host_group() {
    let inv = "all:\n  children:\n    runners:\n      hosts:\n        r1: { address: 127.0.0.2 }\n";
    rejects(
        &[("hosts.yml", inv)],
        &wf("  - id: x\n    hosts: runers\n    uses: command\n    with: { argv: [true] }\n"),
        "wf.yml:6:12",
        "no host or group `runers` in the inventory (did you mean `runners`?)",
    );
}

#[test]
fn inventory_errors_point_into_the_inventory() {
    let inv = "all:\n  children:\n    runners:\n      hots:\n        r1: {}\n";
    rejects(
        &[("hosts.yml", inv)],
        &wf(""),
        "hosts.yml:4:7",
        "unknown key `hots` in group `runners`",
    );
}

#[test]
fn bad_extra_var_and_missing_workflow() {
    let sb = Sandbox::new();
    sb.write("wf.yml", &wf(""));
    sb.run(&["run", "wf.yml", "-e", "novalue"], 2)
        .stderr_has("expected KEY=VALUE");
    sb.run(&["run", "nosuch"], 2).stderr_has("no workflow `nosuch`");
    assert!(!sb.exists("marker"));
}

#[test]
fn missing_secret_source() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yml",
        &format!("secrets:\n  token: {{ env: FLOWRUN_TEST_UNSET_VAR }}\n{}", wf("")),
    );
    sb.run(&["run", "wf.yml"], 2)
        .stderr_has("wf.yml:2:3")
        .stderr_has("secret `token` is not set: tried environment variable `FLOWRUN_TEST_UNSET_VAR` (not set)");
    assert!(!sb.exists("marker"));
}

#[test]
fn literal_mode_is_checked_at_load() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: file\n    with: { path: /tmp/x, mode: rwxr-xr-x }\n"),
        "wf.yml:7:33",
        "parameter `mode` of step `x` must be an octal mode such as `\"0644\"` (rw-r--r--), found `rwxr-xr-x`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: copy\n    with: { dest: /tmp/x, content: hi, mode: \"0999\" }\n"),
        "wf.yml:7:46",
        "found `0999`",
    );
}

/// One full diagnostic, byte for byte: message, location, the line, the caret under the value.
#[test]
fn a_caret_diagnostic_exactly() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yml",
        &wf("  - id: x\n    uses: file\n    with: { path: /tmp/x, mode: rwxr-xr-x }\n"),
    );
    let r = sb.run(&["validate", "wf.yml"], 2);
    assert_eq!(
        r.stderr,
        "error: parameter `mode` of step `x` must be an octal mode such as `\"0644\"` (rw-r--r--), found `rwxr-xr-x`\n \
         --> wf.yml:7:33\n  \
         |\n\
         7 |     with: { path: /tmp/x, mode: rwxr-xr-x }\n  \
         |                                 ^^^^^^^^^\n"
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn literal_url_is_checked_at_load() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: http\n    with: { url: example.com/health }\n"),
        "wf.yml:7:18",
        "`example.com/health` is not an http(s) URL",
    );
}

#[test]
fn for_each_known_at_load_must_be_a_list() {
    rejects(
        &[],
        &format!(
            "vars: {{ servers: web1 }}\n{}",
            wf("  - id: x\n    uses: command\n    for_each: \"{{servers}}\"\n    with: { argv: [echo, \"{{item}}\"] }\n")
        ),
        "wf.yml:8:15",
        "`for_each` of step `x` must give a list; it gives `web1`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    for_each: web1\n    with: { argv: [echo, \"{{item}}\"] }\n"),
        "wf.yml:7:15",
        "must give a list; it gives `web1`",
    );
    // From the inventory: per host.
    let inv = "all:\n  children:\n    web:\n      vars: { ports: [80] }\n      hosts:\n        w1: { connection: local }\n        w2: { connection: local, ports: 8080 }\n";
    rejects(
        &[("hosts.yml", inv)],
        &wf("  - id: x\n    hosts: web\n    uses: command\n    for_each: \"{{json ports}}\"\n    with: { argv: [echo, \"{{item}}\"] }\n"),
        "wf.yml:8:15",
        "it gives `8080` on `w2`",
    );
}

#[test]
fn a_secret_in_argv_is_refused() {
    rejects(
        &[],
        &format!(
            "secrets:\n  token: {{ env: FLOWRUN_TEST_TOKEN }}\n{}",
            wf("  - id: x\n    uses: command\n    with: { argv: [curl, -H, \"Authorization: {{secrets.token}}\", http://127.0.0.1/] }\n")
        ),
        "wf.yml:9:30",
        "secret `token` in `with.argv` of step `x`: a command's argv is visible to every user of the machine",
    );
    rejects(
        &[],
        &format!(
            "secrets:\n  token: {{ env: FLOWRUN_TEST_TOKEN }}\n{}",
            wf("  - id: x\n    uses: command\n    with: { argv: [curl, \"{{secrets.token}}\"] }\n")
        ),
        "wf.yml:9:",
        "pass it through `env` (read as `$NAME` in a `shell` command) or `stdin`",
    );
}

#[test]
fn label_needs_for_each_and_retry_keys_are_typed() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    label: \"{{item.name}}\"\n    with: { argv: [true] }\n"),
        "wf.yml:7:12",
        "`label` names the items of `for_each`, and this step has none",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true] }\n    retry: { attempts: 2, jitter: lots }\n"),
        "wf.yml:8:35",
        "`jitter` must be a boolean or a fraction from 0 to 1",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true] }\n    retry: { max_delay: forever }\n"),
        "wf.yml:8:25",
        "invalid duration `forever`",
    );
}

#[test]
fn a_tab_in_the_indentation_points_at_the_tab() {
    rejects(&[], &wf("  - id: x\n\tuses: command\n"), "wf.yml:6:1", "invalid YAML");
}

/// A step kind checks what its types cannot say about a literal parameter.
#[test]
fn a_kind_checks_its_own_literal_parameters() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: k8s_apply\n    with: { manifest: [42] }\n"),
        "wf.yml:7:24",
        "parameter `manifest` of step `x`: item 1 is a number, not an object",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: k8s_apply\n    with:\n      manifest: { apiVersion: v1, kind: ConfigMap }\n"),
        "wf.yml:8:17",
        "has no `metadata.name`",
    );
}

#[test]
fn runs_is_checked() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    needs: [marker]\n    runs: on_fail\n    with: { argv: [true] }\n"),
        "wf.yml:8:11",
        "`runs` must be `on_success`, `on_failure` or `always`, found `on_fail`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    needs: [marker]\n    runs: on_fail\n    with: { argv: [true] }\n"),
        "wf.yml:8:11",
        "did you mean `on_failure`?",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    runs: always\n    with: { argv: [true] }\n"),
        "wf.yml:7:11",
        "a `runs: always` step acts on the steps it needs, and this one needs none",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    needs: [marker]\n    runs: on_failure\n    journal: true\n    with: { argv: [true] }\n"),
        "wf.yml:9:14",
        "it is never taken from the journal, so `journal: true` cannot hold",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    needs: [marker]\n    with: { argv: [echo, \"{{failure.message}}\"] }\n"),
        "wf.yml:8:",
        "`failure` is defined only in a step with `runs: on_failure` or `runs: always`",
    );
}

/// Status codes (`expect_rc`, `expect_status`) written literally are checked at load.
#[test]
fn literal_status_codes_are_checked_at_load() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: command\n    with: { argv: [true], expect_rc: lots }\n"),
        "wf.yml:7:38",
        "parameter `expect_rc` of step `x`: expected an integer, a list of integers or a range like \"200-299\", got `\"lots\"`",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: http\n    with: { url: \"http://127.0.0.1:9/\", expect_status: [] }\n"),
        "wf.yml:7:",
        "parameter `expect_status` of step `x`: must list at least one code",
    );
    // In a list: at the item.
    rejects(
        &[],
        &wf("  - id: x\n    uses: http\n    with: { url: \"http://127.0.0.1:9/\", expect_status: [200, \"3xx\"] }\n"),
        "wf.yml:7:62",
        "got `\"3xx\"`",
    );
}

/// What a kind parses itself (firewall rules, a disk size) is checked at load when literal.
#[test]
fn literal_rules_and_sizes_are_checked_at_load() {
    rejects(
        &[],
        &wf("  - id: x\n    uses: firewall\n    with: { rules: [{ port: 99999 }] }\n"),
        "wf.yml:7:20",
        "parameter `rules` of step `x`: rule 1: `port` must be 1-65535 or a range like 8000-8080, got 99999",
    );
    rejects(
        &[],
        &wf("  - id: x\n    uses: github_runner\n    with: { repo: a/b, token: t, state: select, candidates: [], min_free_disk: lots }\n"),
        "wf.yml:7:",
        "parameter `min_free_disk` of step `x`: expected a size like `2G`, got `lots`",
    );
}
