//! `.j2` templates render with Jinja2 semantics, as an Ansible role's
//! templates expect: a role-style gitlab-runner `config.toml.j2` (loops,
//! `default`, `join`, `to_json`/`tojson`, conditionals, Ansible filters)
//! renders through the real binary to a file that parses as TOML with the
//! inventory's and the step outputs' values; an undefined variable fails the
//! step naming the file, line and variable, and nothing is written.

use crate::harness::Sandbox;

const CONFIG_J2: &str = r#"
    # {{ ansible_managed | default('Managed by flowrun') }}
    concurrent = {{ gitlab_runner_concurrent | default(1) }}
    check_interval = {{ gitlab_runner_check_interval | default(3) }}
    {% if gitlab_runner_listen_address is defined %}
    listen_address = "{{ gitlab_runner_listen_address }}"
    {% endif %}

    {% for runner in gitlab_runner_runners %}
    [[runners]]
      name = {{ runner.name | default(inventory_hostname) | to_json }}
      url = {{ gitlab_url | tojson }}
      token = {{ steps.token.outputs.stdout | trim | to_json }}
      executor = "{{ runner.executor | default('docker') }}"
      tag_list = [{{ runner.tags | map('to_json') | join(', ') }}]
      environment = {{ runner.env | default({}) | dict2items | map(attribute='key') | list | to_json }}
    {% if runner.executor | default('docker') == 'docker' %}
      [runners.docker]
        image = "{{ runner.image | default('debian:bookworm-slim') }}"
        privileged = {{ runner.privileged | default(false) | bool | lower }}
        volumes = {{ (['/cache'] + runner.volumes | default([])) | to_json }}
        pull_policy = {{ runner.pull_policy | default(['always']) | to_json }}
        host = "{{ host.name | regex_replace('^([a-z]+)-(\\d+)$', '\\1') }}"
    {% endif %}

    {% endfor %}
"#;

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("templates/config.toml.j2", CONFIG_J2);
    sb.write(
        "hosts.yml",
        r#"
        all:
          vars:
            gitlab_url: "https://gitlab.example.com"
            gitlab_runner_concurrent: 4
            gitlab_runner_runners:
              - { name: docker-1, tags: [docker, "linux amd64"], privileged: "yes", volumes: ["/var/run/docker.sock:/var/run/docker.sock"], env: { A: 1, B: 2 } }
              - { tags: [shell], executor: shell }
          hosts:
            runner-01: { connection: local }
        "#,
    );
    sb.write(
        "wf.yml",
        r#"
        steps:
          - id: token
            hosts: runner-01
            uses: command
            with: { argv: [printf, "glrt-abc\"def\n"] }
          - id: config
            hosts: runner-01
            needs: [token]
            uses: template
            with: { src: templates/config.toml.j2, dest: "$DIR/config.toml", mode: "0600" }
        "#,
    );
    sb
}

#[test]
fn an_ansible_style_config_toml_j2_renders_to_valid_toml() {
    let sb = sandbox();
    sb.run(&["run", "wf.yml", "-i", "hosts.yml"], 0);
    let text = sb.read("config.toml");
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"));
    assert_eq!(doc["concurrent"].as_integer(), Some(4));
    assert_eq!(doc["check_interval"].as_integer(), Some(3), "default() applied");
    assert!(!doc.contains_key("listen_address"), "the `is defined` branch is out");
    let runners = doc["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 2, "{text}");
    let (a, b) = (runners[0].as_table().unwrap(), runners[1].as_table().unwrap());
    assert_eq!(a["name"].as_str(), Some("docker-1"));
    assert_eq!(b["name"].as_str(), Some("runner-01"), "default(inventory_hostname)");
    assert_eq!(a["url"].as_str(), Some("https://gitlab.example.com"));
    assert_eq!(
        a["token"].as_str(),
        Some("glrt-abc\"def"),
        "a step's output, quoted by to_json"
    );
    let tags: Vec<&str> = a["tag_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(tags, ["docker", "linux amd64"]);
    assert_eq!(a["environment"].as_array().unwrap().len(), 2);
    let docker = a["docker"].as_table().unwrap();
    assert_eq!(docker["privileged"].as_bool(), Some(true), "`bool` of \"yes\"");
    assert_eq!(docker["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(
        docker["host"].as_str(),
        Some("runner"),
        "regex_replace with a \\1 group"
    );
    assert_eq!(b["executor"].as_str(), Some("shell"));
    assert!(
        !b.contains_key("docker"),
        "the conditional block is out for a shell runner"
    );
    assert!(
        !text.contains("{%") && !text.contains("\n\n\n"),
        "trim_blocks as in Ansible:\n{text}"
    );
    // A second run: the same rendering, nothing to change.
    let again = sb.run(&["run", "wf.yml", "-i", "hosts.yml"], 0);
    again.stdout_has("ok: [runner-01] config");
}

#[test]
fn an_undefined_variable_names_the_file_line_and_variable() {
    let sb = sandbox();
    sb.write(
        "templates/config.toml.j2",
        "concurrent = {{ gitlab_runner_concurrent }}\n{% for r in gitlab_runner_runners %}\nname = {{ r.nmae | to_json }}\n{% endfor %}\n",
    );
    let ran = sb.run(&["run", "wf.yml", "-i", "hosts.yml"], 1);
    ran.stdout_has("config.toml.j2:3: undefined variable `r.nmae`");
    assert!(!sb.exists("config.toml"), "nothing written");
}

/// Template files are checked when the workflow loads, `.j2` and `.hbs`
/// alike: a typo fails `validate` (exit 2) naming the variable, the file and
/// line, and the `src` that names the file; nothing runs.
#[test]
fn template_files_are_checked_at_load_time() {
    let sb = sandbox();
    sb.write(
        "templates/config.toml.j2",
        "concurrent = {{ gitlab_runner_concurrent }}\n{% for r in gitlab_runner_runners %}\nurl = {{ gitlab_ulr | to_json }}\n{% endfor %}\n",
    );
    let ran = sb.run(&["validate", "wf.yml", "-i", "hosts.yml"], 2);
    ran.stderr_has("undefined variable `gitlab_ulr` (did you mean `gitlab_url`?), in template `templates/config.toml.j2:3` of step `config`")
        .stderr_has("wf.yml:10:");
    sb.run(&["run", "wf.yml", "-i", "hosts.yml"], 2);
    assert!(!sb.exists("config.toml"), "nothing ran");

    sb.write("templates/config.toml.j2", "{% if gitlab_url %}\nunclosed\n");
    sb.run(&["validate", "wf.yml", "-i", "hosts.yml"], 2)
        .stderr_has("template of step `config`: templates/config.toml.j2:");

    // A step output the step does not `need`, in a handlebars file.
    sb.write("templates/motd.hbs", "token {{steps.token.outputs.stdout}}\n");
    sb.write(
        "wf2.yml",
        "steps:\n  - id: token\n    uses: command\n    with: { argv: [true] }\n  - id: motd\n    uses: template\n    with: { src: templates/motd.hbs, dest: \"$DIR/motd\" }\n",
    );
    sb.run(&["validate", "wf2.yml"], 2)
        .stderr_has("step `motd` does not need `token` (add it to `needs`), in template `templates/motd.hbs:1`");
}
