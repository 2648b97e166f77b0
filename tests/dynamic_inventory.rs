//! Ansible dynamic inventories through the real binary: a script run with
//! `--list` (and `--host` per host when its output has no `_meta`), a saved
//! `ansible-inventory --list` JSON file, and scripts that fail, hang or
//! print garbage (exit 2, their stderr shown, nothing run).

use crate::harness::Sandbox;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn script(sb: &Sandbox, name: &str, body: &str) -> String {
    let p = sb.write(name, body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// Writes, per host, a file with variables from three levels: all, group, host.
const WORKFLOW: &str = r#"
    steps:
      - id: facts
        hosts: runners
        uses: copy
        with:
          dest: "$DIR/out/{{inventory_hostname}}.txt"
          content: "{{site}} {{tier}} {{role}} {{join host.groups ','}}\n"
"#;

const LIST: &str = r#"{
  "_meta": { "hostvars": {
    "r1": { "ansible_connection": "local", "role": "primary" },
    "r2": { "ansible_connection": "local", "role": "secondary" }
  } },
  "all": { "children": ["ungrouped", "site"], "vars": { "site": "eu-1" } },
  "site": { "children": ["runners"] },
  "runners": { "hosts": ["r1", "r2"], "vars": { "tier": "ci" } },
  "ungrouped": { "hosts": [] }
}"#;

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("wf.yml", WORKFLOW);
    std::fs::create_dir(sb.path("out")).unwrap();
    sb
}

fn assert_rendered(sb: &Sandbox) {
    assert_eq!(sb.read("out/r1.txt"), "eu-1 ci primary all,site,runners\n");
    assert_eq!(sb.read("out/r2.txt"), "eu-1 ci secondary all,site,runners\n");
}

#[test]
fn a_script_with_meta_is_run_once_with_list() {
    let sb = sandbox();
    let inv = script(
        &sb,
        "proxmox_inventory",
        &format!("#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\ncat <<'EOF'\n{LIST}\nEOF\n"),
    );
    // Unchecked against plan: the check's own `plan` would run the script too.
    sb.cmd(&["run", "wf.yml", "-i", &inv]).unchecked().expect(0);
    assert_rendered(&sb);
    assert_eq!(sb.read("calls"), "--list\n");
    let plan = sb.run(&["plan", "wf.yml", "-i", &inv], 0);
    plan.stdout_has("r1").stdout_has("r2");
}

#[test]
fn a_script_without_meta_is_asked_for_each_host() {
    let sb = sandbox();
    let inv = script(
        &sb,
        "cmdb.sh",
        r#"
        #!/bin/sh
        echo "$@" >> "$(dirname "$0")/calls"
        case "$1" in
          --list) echo '{"all": {"vars": {"site": "eu-1"}}, "runners": {"hosts": ["r1", "r2"], "vars": {"tier": "ci"}}, "site": {"children": ["runners"]}}' ;;
          --host) if [ "$2" = r1 ]; then r=primary; else r=secondary; fi
                  echo "{\"ansible_connection\": \"local\", \"role\": \"$r\"}" ;;
        esac
        "#,
    );
    sb.cmd(&["run", "wf.yml", "-i", &inv]).unchecked().expect(0);
    assert_rendered(&sb);
    assert_eq!(sb.lines("calls"), ["--list", "--host r1", "--host r2"]);
}

#[test]
fn a_saved_ansible_inventory_list_json_loads() {
    let sb = sandbox();
    sb.write("inventory.json", LIST);
    sb.run(&["run", "wf.yml", "-i", "inventory.json"], 0);
    assert_rendered(&sb);
}

#[test]
fn a_failing_script_is_invalid_input_with_its_stderr_and_nothing_runs() {
    let sb = sandbox();
    let inv = script(
        &sb,
        "inv.py",
        "#!/bin/sh\necho 'cannot reach the CMDB at cmdb.example.com' >&2\necho 'retry later' >&2\nexit 3\n",
    );
    let ran = sb.run(&["run", "wf.yml", "-i", &inv], 2);
    ran.stderr_has("inv.py --list` failed (exit status 3)")
        .stderr_has("cannot reach the CMDB at cmdb.example.com")
        .stderr_has("retry later");
    assert!(!sb.exists("out/r1.txt"), "nothing ran");

    let bad = script(&sb, "garbage", "#!/bin/sh\necho 'not json'\n");
    sb.run(&["validate", "wf.yml", "-i", &bad], 2)
        .stderr_has("`ansible-inventory --list` form");

    let typed = script(
        &sb,
        "typed",
        "#!/bin/sh\necho '{\"_meta\": {\"hostvars\": {\"r1\": {\"ansible_port\": \"ssh\"}}}, \"runners\": [\"r1\"]}'\n",
    );
    sb.run(&["validate", "wf.yml", "-i", &typed], 2)
        .stderr_has("host `r1`: `ansible_port` must be a port number");
}

#[test]
fn a_hanging_script_is_stopped_at_the_timeout() {
    let sb = sandbox();
    let inv = script(&sb, "slow", "#!/bin/sh\nexec sleep 30\n");
    let t = Instant::now();
    let ran = sb
        .cmd(&["validate", "wf.yml", "-i", &inv])
        .env("FLOWRUN_INVENTORY_TIMEOUT", "1s")
        .expect(2);
    assert!(t.elapsed() < Duration::from_secs(20), "waited {:?}", t.elapsed());
    ran.stderr_has("did not finish within 1s");
}
