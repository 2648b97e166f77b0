//! API steps end to end: one workflow creates a VM in the Proxmox emulator,
//! waits for its IP, configures it over SSH in the same run (the VM is a real
//! sshd host), registers a GitLab runner and writes its token into a 0600 file
//! on the VM. A second run changes nothing and writes nothing, to the APIs or
//! over SSH; a teardown workflow removes the runner and destroys the VM.

use crate::harness::Sandbox;
use flowrun_lab::emulators::gitlab::GitLabEmulator;
use flowrun_lab::emulators::proxmox::{ProxmoxEmulator, ProxmoxOptions};
use flowrun_lab::lab::SshdVmBackend;
use flowrun_lab::sshd::Isolation;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

const PROVISION: &str = r#"
    name: runner-vm
    secrets:
      proxmox_token: { env: TEST_PROXMOX_SECRET }
      gitlab_token: { env: TEST_GITLAB_TOKEN }
    steps:
      - id: vm
        uses: proxmox_vm
        with:
          api_url: "{{proxmox_url}}"
          token_id: "{{proxmox_token_id}}"
          token_secret: "{{secrets.proxmox_token}}"
          ca_file: "{{proxmox_ca}}"
          node: pve
          name: runner-01
          template: 9000
          cores: 2
          memory: 2048
          ciuser: root
          sshkeys: "{{ssh_public_key}}"
          ipconfig0: ip=dhcp
          state: started
          wait_ip_timeout: 30s
          inventory_host: runner-01
      - id: etc
        needs: [vm]
        hosts: runners
        uses: file
        with: { path: "$DIR/vm/etc", state: directory, mode: "0755" }
      - id: register
        uses: gitlab_runner
        with:
          api_url: "{{gitlab_url}}"
          token: "{{secrets.gitlab_token}}"
          runner_type: instance_type
          description: runner-01
          tags: [proxmox-local]
          run_untagged: false
          locked: true
      - id: token-file
        needs: [etc, register]
        hosts: runners
        uses: copy
        with: { dest: "$DIR/vm/etc/runner-token", content: "{{steps.register.outputs.token}}\n", mode: "0600" }
"#;

const TEARDOWN: &str = r#"
    name: runner-vm-teardown
    secrets:
      proxmox_token: { env: TEST_PROXMOX_SECRET }
      gitlab_token: { env: TEST_GITLAB_TOKEN }
    vars:
      pve: { api_url: "{{proxmox_url}}", token_id: "{{proxmox_token_id}}", ca_file: "{{proxmox_ca}}" }
    steps:
      - id: find-vm
        uses: proxmox_vm
        journal: false
        with: { api_url: "{{proxmox_url}}", token_id: "{{proxmox_token_id}}", token_secret: "{{secrets.proxmox_token}}", ca_file: "{{proxmox_ca}}", node: pve, name: runner-01, template: 9000, state: started, inventory_host: runner-01 }
      - id: read-token
        needs: [find-vm]
        hosts: runners
        journal: false
        uses: command
        with: { argv: [cat, "$DIR/vm/etc/runner-token"] }
      - id: unregister
        needs: [read-token]
        uses: gitlab_runner
        with: { api_url: "{{gitlab_url}}", token: "{{secrets.gitlab_token}}", runner_token: "{{steps.read-token.hosts.runner-01.outputs.stdout}}", state: absent }
      - id: destroy
        needs: [unregister]
        uses: proxmox_vm
        with: { api_url: "{{proxmox_url}}", token_id: "{{proxmox_token_id}}", token_secret: "{{secrets.proxmox_token}}", ca_file: "{{proxmox_ca}}", node: pve, name: runner-01, template: 9000, state: absent }
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn vm_ssh_and_runner_in_one_run_then_nothing_then_teardown() {
    let sb = Sandbox::new();
    let key = sb.path("lab_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(sb.path("lab_key.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let port = free_port();
    let backend = Arc::new(SshdVmBackend::new(Isolation::None, port, pubkey.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (pve, gitlab) = rt.block_on(async {
        let pve = ProxmoxEmulator::start_with(ProxmoxOptions {
            backend: backend.clone(),
            ..ProxmoxOptions::default()
        })
        .await
        .unwrap();
        (pve, GitLabEmulator::start().await.unwrap())
    });
    let gl_token = gitlab.add_token(&["create_runner", "manage_runner"]);
    sb.write(
        "hosts.yml",
        &format!(
            r#"
            all:
              vars:
                proxmox_url: "{}"
                proxmox_token_id: "{}"
                proxmox_ca: "{}"
                gitlab_url: "{}"
                ssh_public_key: "{pubkey}"
              children:
                runners:
                  hosts:
                    runner-01: {{ port: {port}, user: root, identity_file: "{}", known_hosts_file: "$DIR/known_hosts", host_key_policy: accept-new }}
            "#,
            pve.url(),
            pve.token_id(),
            pve.ca_file().display(),
            gitlab.url(),
            key.display()
        ),
    );
    sb.write("provision.yml", PROVISION);
    sb.write("teardown.yml", TEARDOWN);
    let run = |wf: &str, extra: &[&str], code: i32| {
        let mut args = vec!["run", wf, "-i", "hosts.yml"];
        args.extend_from_slice(extra);
        let r = sb
            .cmd(&args)
            .env("TEST_PROXMOX_SECRET", pve.token_secret())
            .env("TEST_GITLAB_TOKEN", &gl_token)
            .expect(code);
        for secret in [pve.token_secret(), gl_token.as_str()] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "a secret leaked:\n{}\n{}",
                r.stdout,
                r.stderr
            );
        }
        r
    };

    let r = run("provision.yml", &[], 0);
    let vm = pve.vm_by_name("runner-01").expect("the VM exists");
    assert!(vm.running);
    assert_eq!(vm.config.get("cores").and_then(serde_json::Value::as_u64), Some(2));
    let runners = gitlab.runners();
    assert_eq!(runners.len(), 1);
    let token = std::fs::read_to_string(sb.path("vm/etc/runner-token")).unwrap();
    assert_eq!(token.trim(), runners[0].token);
    assert!(token.starts_with("glrt-"));
    assert!(!r.stdout.contains(&runners[0].token), "the runner token leaked");
    assert_eq!(
        std::fs::metadata(sb.path("vm/etc/runner-token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        r.recap("runner-01"),
        "ok=0 changed=2 failed=0 skipped=0 unreachable=0",
        "{}",
        r.stdout
    );
    let ssh_commands = backend
        .with_vm(vm.vmid, flowrun_lab::sshd::SshdHost::commands_executed)
        .unwrap();
    assert!(ssh_commands > 0, "the VM was configured over SSH");

    // Second run: nothing changes, no API write, no SSH command.
    pve.clear_requests();
    gitlab.clear_requests();
    let r = run("provision.yml", &[], 0);
    assert!(r.recap("localhost").contains("changed=0 failed=0"), "{}", r.stdout);
    assert!(r.recap("runner-01").contains("changed=0 failed=0"), "{}", r.stdout);
    assert!(pve.writes().is_empty(), "API writes on a re-run: {:?}", pve.writes());
    assert!(
        gitlab.writes().is_empty(),
        "API writes on a re-run: {:?}",
        gitlab.writes()
    );
    assert_eq!(
        backend
            .with_vm(vm.vmid, flowrun_lab::sshd::SshdHost::commands_executed)
            .unwrap(),
        ssh_commands
    );

    // A changed file on the VM: a re-run with --verify repairs it, over SSH, with the VM's
    // address restored from the journal (the VM step itself is not run again).
    std::fs::write(sb.path("vm/etc/runner-token"), "tampered\n").unwrap();
    let r = run("provision.yml", &["--verify"], 0);
    r.stdout_has("changed: [runner-01] token-file");
    r.stdout_has("ok: [localhost] register\n");
    assert_eq!(std::fs::read_to_string(sb.path("vm/etc/runner-token")).unwrap(), token);
    assert_eq!(gitlab.runners().len(), 1, "--verify registered a second runner");

    // The runner token is a secret output: restored on re-runs (above), yet never stored in
    // plaintext, nor written to a report.
    run("provision.yml", &["--junit", "report.xml", "--metrics", "m.prom"], 0);
    let token = token.trim();
    for f in ["journal.db", "journal.db-wal", "report.xml", "m.prom"] {
        let bytes = std::fs::read(sb.path(f)).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{f} holds the runner token"
        );
    }

    // Teardown: the runner is gone from GitLab and the VM from Proxmox.
    run("teardown.yml", &[], 0);
    assert!(gitlab.runners().is_empty(), "runner still registered");
    assert!(pve.vm_by_name("runner-01").is_none(), "VM still exists");
    drop(rt);
}

/// Issue 14: restoring a journaled step whose kind has a secret output (the
/// runner token) must register that output alone as a secret. Before the fix
/// every string of the record was registered, so the runner's plain `status`
/// (`never_contacted`) was masked wherever it appeared: here in the workflow
/// name, a step id and a command's output, on every report.
#[test]
fn issue_14_a_restored_secret_output_masks_only_the_secret() {
    let sb = Sandbox::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gitlab = rt.block_on(GitLabEmulator::start()).unwrap();
    let gl_token = gitlab.add_token(&["create_runner", "manage_runner"]);
    sb.write(
        "wf.yml",
        &format!(
            r#"
            name: runner-never_contacted
            secrets:
              gitlab_token: {{ env: TEST_GITLAB_TOKEN }}
            steps:
              - id: register
                uses: gitlab_runner
                with: {{ api_url: "{}", token: "{{{{secrets.gitlab_token}}}}", runner_type: instance_type, description: r1 }}
              - id: never_contacted-note
                needs: [register]
                journal: false
                uses: command
                with: {{ shell: "echo 'runner is {{{{steps.register.outputs.status}}}}, token {{{{steps.register.outputs.token}}}}' > $DIR/note" }}
            "#,
            gitlab.url()
        ),
    );
    let run = |code: i32, extra: &[&str]| {
        let mut args = vec!["run", "wf.yml", "--output", "json"];
        args.extend_from_slice(extra);
        sb.cmd(&args).env("TEST_GITLAB_TOKEN", &gl_token).expect(code)
    };
    run(0, &[]);
    let runner_token = gitlab.runners()[0].token.clone();
    assert!(
        sb.read("note").contains(&runner_token),
        "the command got the real token"
    );
    // The re-run restores `register` from the journal (encrypted outputs).
    let r = run(0, &["--junit", "report.xml", "--metrics", "m.prom", "-v"]);
    let doc = r.json();
    assert_eq!(doc["workflow"], "runner-never_contacted");
    let steps = doc["steps"].as_array().unwrap();
    let register = steps.iter().find(|s| s["id"] == "register").unwrap();
    assert_eq!(register["from_journal"], true, "{doc}");
    assert!(steps.iter().any(|s| s["id"] == "never_contacted-note"), "{doc}");
    let junit = sb.read("report.xml");
    assert!(junit.contains("name=\"never_contacted-note\""), "{junit}");
    assert!(junit.contains("runner-never_contacted"), "{junit}");
    let metrics = sb.read("m.prom");
    assert!(metrics.contains("workflow=\"runner-never_contacted\""), "{metrics}");
    for (what, text) in [
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
        ("junit", &junit),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(&runner_token), "{what} holds the runner token:\n{text}");
        assert!(!text.contains("never_****"), "{what} masks a plain word:\n{text}");
        assert!(!text.contains("****-note"), "{what} masks a step id:\n{text}");
    }
    for f in ["journal.db", "journal.db-wal"] {
        let bytes = std::fs::read(sb.path(f)).unwrap_or_default();
        assert!(
            !bytes.windows(runner_token.len()).any(|w| w == runner_token.as_bytes()),
            "{f} holds the runner token"
        );
    }
    drop(rt);
}
