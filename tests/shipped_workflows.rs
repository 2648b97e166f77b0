//! The shipped GitLab runner workflows' templates and monitoring content,
//! checked with the real parts: the engine's own template engine renders
//! config.toml, the Prometheus targets file and prometheus.yml as the
//! workflows would; the real `promtool` checks the result; the shell checks
//! of the monitoring content and of the lab's apt repository run as they
//! would in CI; and `flowrun validate` loads every shipped workflow against
//! both shipped inventories.

use flowrun_engine::template::Templates;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render(template: &str, vars: &Value) -> String {
    let path = root().join("workflows/templates").join(template);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Templates::new()
        .render_text(template, &text, vars)
        .unwrap_or_else(|e| panic!("{template}: {e}"))
}

/// Variables as a runner host sees them after `register-runner` ran.
fn runner_vars() -> Value {
    json!({
        "inventory_hostname": "gitlab-runner-01",
        "gitlab_url": "https://gitlab.example.com",
        "runner_description": null,
        "runner_concurrent": 4,
        "runner_check_interval": 3,
        "runner_request_concurrency": 1,
        "exporters_bind_runner_address": false,
        "runner_metrics_port": 9252,
        "gitlab_ca_cert": null,
        "runner_docker_image": "debian:bookworm-slim",
        "runner_privileged": false,
        "runner_docker_volumes": ["/cache"],
        "runner_mount_docker_socket": false,
        "runner_pull_policy": ["always"],
        "runner_allowed_images": ["registry.example.com/ci/*:*"],
        "runner_allowed_services": [],
        "steps": {"register-runner": {"outputs": {"id": 42, "token": "glrt-t0k\"en\\x", "status": "never_contacted"}}},
    })
}

#[test]
fn config_toml_carries_the_registered_runner_and_escapes_strings() {
    let out = render("config.toml.hbs", &runner_vars());
    for want in [
        "concurrent = 4\n",
        "check_interval = 3\n",
        "listen_address = \":9252\"\n",
        "[[runners]]\n",
        "  name = \"gitlab-runner-01\"\n",
        "  url = \"https://gitlab.example.com\"\n",
        "  id = 42\n",
        "  token = \"glrt-t0k\\\"en\\\\x\"\n",
        "  executor = \"docker\"\n",
        "  [runners.docker]\n",
        "    privileged = false\n",
        "    volumes = [\"/cache\", ]\n",
        "    pull_policy = [\"always\"]\n",
        "    allowed_images = [\"registry.example.com/ci/*:*\"]\n",
        "    allowed_services = []\n",
    ] {
        assert!(out.contains(want), "config.toml lacks {want:?}:\n{out}");
    }
    assert!(!out.contains("tls-ca-file"), "no CA was given:\n{out}");
    assert_eq!(out.matches("glrt-").count(), 1, "the token appears once:\n{out}");
    assert!(!out.contains("{{"), "unrendered template:\n{out}");
}

#[test]
fn config_toml_options_privileged_socket_ca_listen_ip() {
    let mut v = runner_vars();
    v["runner_privileged"] = json!(true);
    v["runner_mount_docker_socket"] = json!(true);
    v["gitlab_ca_cert"] = json!("-----BEGIN CERTIFICATE-----");
    v["exporters_bind_runner_address"] = json!(true);
    v["steps"]["runner-address"] = json!({"outputs": {"stdout": "127.0.0.11"}});
    v["runner_description"] = json!("lab runner");
    let out = render("config.toml.hbs", &v);
    for want in [
        "listen_address = \"127.0.0.11:9252\"\n",
        "  name = \"lab runner\"\n",
        "  tls-ca-file = \"/etc/gitlab-runner/certs/gitlab-ca.crt\"\n",
        "    privileged = true\n",
        "    volumes = [\"/cache\", \"/var/run/docker.sock:/var/run/docker.sock\", ]\n",
    ] {
        assert!(out.contains(want), "config.toml lacks {want:?}:\n{out}");
    }
}

/// What the monitoring host sees: `runner-address` ran on two runners.
fn monitoring_vars() -> Value {
    json!({
        "node_exporter_port": 9100,
        "cadvisor_port": 8080,
        "runner_metrics_port": 9252,
        "prometheus_target_labels": {"site": "dc1"},
        "prometheus_scrape_interval": "30s",
        "steps": {"runner-address": {
            "outputs": {"stdout": "192.0.2.10"},
            "hosts": {
                "gitlab-runner-01": {"outputs": {"stdout": "192.0.2.10"}},
                "gitlab-runner-02": {"outputs": {"stdout": "192.0.2.11"}},
            },
        }},
    })
}

#[test]
fn targets_file_lists_three_endpoints_per_runner() {
    let out = render("gitlab-runners-targets.json.hbs", &monitoring_vars());
    let groups: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    let got: Vec<(String, String, String, String)> = groups
        .iter()
        .map(|g| {
            (
                g["targets"][0].as_str().unwrap().to_owned(),
                g["labels"]["job"].as_str().unwrap().to_owned(),
                g["labels"]["instance"].as_str().unwrap().to_owned(),
                g["labels"]["site"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("192.0.2.10:9100", "node", "gitlab-runner-01"),
        ("192.0.2.10:8080", "cadvisor", "gitlab-runner-01"),
        ("192.0.2.10:9252", "gitlab-runner", "gitlab-runner-01"),
        ("192.0.2.11:9100", "node", "gitlab-runner-02"),
        ("192.0.2.11:8080", "cadvisor", "gitlab-runner-02"),
        ("192.0.2.11:9252", "gitlab-runner", "gitlab-runner-02"),
    ]
    .map(|(t, j, i)| (t.to_owned(), j.to_owned(), i.to_owned(), "dc1".to_owned()));
    assert_eq!(got, want);
}

fn promtool() -> Option<PathBuf> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rendered_prometheus_config_and_targets_pass_promtool() {
    let promtool = promtool().expect("promtool is needed (Debian package prometheus; scripts/test installs it)");
    let dir = tempfile::tempdir().unwrap();
    let (sd, rules) = (dir.path().join("file_sd"), dir.path().join("rules"));
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    let mut v = monitoring_vars();
    v["prometheus_file_sd_dir"] = json!(sd);
    v["prometheus_rules_dir"] = json!(rules);
    std::fs::write(
        sd.join("gitlab-runners.json"),
        render("gitlab-runners-targets.json.hbs", &v),
    )
    .unwrap();
    std::fs::copy(
        root().join("workflows/files/gitlab-runner-alerts.yml"),
        rules.join("gitlab-runner-alerts.yml"),
    )
    .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, render("prometheus.yml.hbs", &v)).unwrap();
    run_ok(Command::new(&promtool).arg("check").arg("config").arg(&config));
}

fn script(rel: &str) -> Command {
    let path: &Path = &root().join(rel);
    let mut c = Command::new("sh");
    c.arg(path);
    c
}

#[test]
fn monitoring_content_passes_its_checks() {
    assert!(promtool().is_some(), "promtool is needed (Debian package prometheus)");
    run_ok(&mut script("tests/monitoring/check.sh"));
}

#[test]
fn lab_repository_builds_signs_and_its_stand_ins_work() {
    run_ok(&mut script("tests/lab/check-repo.sh"));
}

/// Every shipped workflow loads, type-checks and plans against both shipped
/// inventories: parameters, host patterns and every template variable.
#[test]
fn shipped_workflows_validate_against_both_inventories() {
    let workflows = [
        "gitlab-runner-host",
        "register-gitlab-runner",
        "monitor-gitlab-runner",
        "provision-gitlab-runner",
        "reprovision-gitlab-runner",
        "validate-gitlab-runner",
    ];
    for inventory in ["inventory/example", "inventory/lab"] {
        for w in workflows {
            run_ok(Command::new(env!("CARGO_BIN_EXE_flowrun")).current_dir(root()).args([
                "validate",
                &format!("workflows/{w}.yml"),
                "-i",
                inventory,
            ]));
        }
    }
}

/// The GitHub runner workflows load, type-check and plan against both
/// GitHub inventories (the real-site example and the lab's).
#[test]
fn github_workflows_validate_against_both_github_inventories() {
    let workflows = [
        "github-runner-facts",
        "provision-github-runner",
        "select-github-runner",
        "validate-github-runner",
    ];
    for inventory in ["inventory/github-example", "inventory/lab-github"] {
        for w in workflows {
            run_ok(Command::new(env!("CARGO_BIN_EXE_flowrun")).current_dir(root()).args([
                "validate",
                &format!("workflows/{w}.yml"),
                "-i",
                inventory,
            ]));
        }
    }
}

/// The fenced code blocks of a doc: (language tag, body).
fn doc_blocks(doc: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    text.split("\n```")
        .skip(1)
        .step_by(2)
        .map(|b| {
            let (tag, body) = b.split_once('\n').unwrap_or((b, ""));
            (tag.trim().to_owned(), body.to_owned())
        })
        .collect()
}

/// The GitHub Actions workflow of docs/github-runners.md is valid YAML with a
/// selector job on a GitHub-hosted runner that runs the gate and exports its
/// four outputs, and a deploy job that needs it and is routed by its label,
/// runs the shipped deploy workflow with the lock queue, and takes the
/// version from the environment (not pasted into the script); the cron line
/// validates with the metrics file and tolerates only exit 1 and 3.
#[test]
fn github_runners_doc_deploy_workflow_routes_the_deploy_by_the_gate() {
    let blocks = doc_blocks("docs/github-runners.md");
    let yaml = &blocks
        .iter()
        .find(|(tag, b)| tag == "yaml" && b.starts_with("# .github/workflows/deploy.yml"))
        .expect("a yaml block starting with `# .github/workflows/deploy.yml`")
        .1;
    let doc: Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("deploy.yml: {e}\n{yaml}"));
    let jobs = doc["jobs"].as_object().expect("jobs");
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["select-runner", "deploy"]);
    assert_eq!(doc["concurrency"]["cancel-in-progress"], json!(false));

    let select = &jobs["select-runner"];
    let hosted = select["runs-on"].as_str().expect("a single GitHub-hosted label");
    assert!(hosted.starts_with("ubuntu-"), "{hosted}");
    let gate = select["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "gate")
        .expect("a step with id gate");
    let run = gate["run"].as_str().unwrap();
    assert!(run.contains("flowrun run select-github-runner"), "{run}");
    assert!(gate["env"]["GITHUB_TOKEN"].as_str().unwrap().contains("secrets."));
    for o in ["runner", "label", "role", "failover"] {
        assert_eq!(
            select["outputs"][o],
            json!(format!("${{{{ steps.gate.outputs.{o} }}}}")),
            "output {o}"
        );
    }
    // The gate writes exactly those keys to $GITHUB_OUTPUT.
    let gate_wf = std::fs::read_to_string(root().join("workflows/select-github-runner.yml")).unwrap();
    assert!(gate_wf.contains("'runner=%s\\nlabel=%s\\nrole=%s\\nfailover=%s\\n'"));

    let deploy = &jobs["deploy"];
    assert_eq!(deploy["needs"], json!("select-runner"));
    assert_eq!(
        deploy["runs-on"],
        json!(["self-hosted", "production", "${{ needs.select-runner.outputs.label }}"])
    );
    let steps = deploy["steps"].as_array().unwrap();
    let run = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("flowrun run deploy-with-failover"))
        .expect("a step that runs deploy-with-failover");
    assert!(run.contains("--wait-lock"), "{run}");
    assert!(run.contains("\"version=$VERSION\""), "{run}");
    for s in steps.iter().chain(select["steps"].as_array().unwrap()) {
        if let Some(r) = s["run"].as_str() {
            assert!(!r.contains("${{"), "an expression pasted into a script: {r}");
        }
    }
    assert!(steps
        .iter()
        .any(|s| s["if"] == json!("needs.select-runner.outputs.failover == 'true'")));

    let cron: Vec<&str> = blocks
        .iter()
        .filter(|(tag, _)| tag == "crontab")
        .flat_map(|(_, b)| b.lines())
        .filter(|l| l.contains("validate-github-runner"))
        .collect();
    assert_eq!(cron.len(), 1, "{cron:?}");
    let line = cron[0];
    assert!(
        line.starts_with("* * * * *  flowrun run validate-github-runner -i "),
        "{line}"
    );
    assert!(
        line.contains("-e github_metrics_file=/var/lib/prometheus/node-exporter/"),
        "{line}"
    );
    assert!(line.contains("--metrics "), "{line}");
    assert!(line.ends_with("rc=$?; [ $rc -le 1 ] || [ $rc -eq 3 ]"), "{line}");
}

/// Every `github_*` series the GitHub alert rules and dashboard read is one
/// a shipped workflow writes (validation or deploy), so no rule watches a
/// metric nothing emits.
#[test]
fn github_alert_rules_read_only_metrics_the_workflows_write() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let written = read("workflows/validate-github-runner.yml") + &read("workflows/deploy-with-failover.yml");
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("github_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let before = rest[..i].chars().last();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
        out
    };
    let rules: Value = serde_saphyr::from_str(&read("workflows/files/github-runner-alerts.yml")).unwrap();
    let mut exprs = String::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.push_str(r["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let dashboard: Value = serde_json::from_str(&read("workflows/files/github-runner-dashboard.json")).unwrap();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = names(&exprs);
    assert!(used.len() >= 8, "{used:?}");
    let emitted = names(&written);
    let missing: Vec<&String> = used.iter().filter(|m| !emitted.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "read by the rules or dashboard, written by no workflow: {missing:?}"
    );
}
