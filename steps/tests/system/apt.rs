//! `apt_repo` and `apt` on an isolated host (its own network too: nothing
//! can come from outside), against a signed local repository.

use super::lab::{connect, lab};
use super::repo::Repo;
use flowrun_engine::step::{Check, Step};
use flowrun_lab::sshd::{SshdOptions, Sudo};
use flowrun_steps::apt::AptKind;
use flowrun_steps::apt_repo::AptRepoKind;
use flowrun_steps::testing::{assert_idempotent, build, converge};
use serde_json::{json, Value};
use std::path::Path;

fn step(kind: &dyn flowrun_engine::step::StepKind, params: Value) -> Box<dyn Step> {
    build(kind, params, json!({}), Path::new(".")).unwrap()
}

/// Installed version of `pkg` on the host, from dpkg itself.
fn dpkg_version(lab: &super::lab::Lab, pkg: &str) -> Option<String> {
    let out = lab
        .host
        .run(&format!("dpkg-query -W -f='${{Status}} ${{Version}}' {pkg}"))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ").map(str::to_owned)
}

#[tokio::test]
async fn repository_and_packages_converge() {
    let Some(lab) = lab("repository_and_packages_converge", SshdOptions::isolated_network()).await else {
        return;
    };
    // Only the test repository is known on this host (its own overlay: the machine keeps its sources).
    lab.sh("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*");
    let mut repo = Repo::new(lab.host.dir());
    repo.add("flowrun-lab-hello", "1.0");
    repo.add("flowrun-lab-extra", "2.0");
    let legacy = "/etc/apt/sources.list.d/flowrun-lab.list";
    lab.sh(&format!("echo 'deb {} ./' > {legacy}", repo.uri()));

    // apt_repo: key and deb822 source; the legacy entry goes.
    let repo_step = step(
        &AptRepoKind,
        json!({"name": "flowrun-lab", "key": repo.key, "uris": [repo.uri()], "suites": ["./"]}),
    );
    let summary = lab.check_reports_drift(repo_step.as_ref()).await;
    assert!(
        summary.contains("create `/etc/apt/keyrings/flowrun-lab.asc`"),
        "{summary}"
    );
    assert!(summary.contains(&format!("remove `{legacy}`")), "{summary}");
    let first = assert_idempotent(repo_step.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["changed_sources"], json!(true));
    let sources = lab.file("/etc/apt/sources.list.d/flowrun-lab.sources").unwrap();
    assert!(
        sources.contains("Signed-By: /etc/apt/keyrings/flowrun-lab.asc\n"),
        "{sources}"
    );
    assert!(sources.contains(&format!("URIs: {}\n", repo.uri())), "{sources}");
    assert_eq!(
        lab.file("/etc/apt/keyrings/flowrun-lab.asc").as_deref(),
        Some(repo.key.as_str())
    );
    assert_eq!(lab.sh("stat -c %a:%U /etc/apt/keyrings/flowrun-lab.asc"), "644:root\n");
    assert!(lab.file(legacy).is_none());
    match repo_step.check(&lab.cx).await.unwrap() {
        Check::InSync(o) => assert_eq!(o["changed_sources"], json!(false)),
        Check::Drift(p) => panic!("{}", p.summary),
    }

    // apt: refresh the lists (the new source), install; a check before writes nothing.
    let hello = step(
        &AptKind,
        json!({"packages": ["flowrun-lab-hello"], "update_cache": true}),
    );
    let summary = lab.check_reports_drift(hello.as_ref()).await;
    assert_eq!(summary, "update the package lists; install flowrun-lab-hello");
    let first = assert_idempotent(hello.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["installed"], json!(["flowrun-lab-hello"]));
    assert_eq!(first.outputs["cache_updated"], json!(true));
    assert_eq!(first.outputs["versions"], json!({"flowrun-lab-hello": "1.0"}));
    assert_eq!(dpkg_version(&lab, "flowrun-lab-hello").as_deref(), Some("1.0"));
    assert_eq!(
        lab.file("/usr/share/flowrun-lab-hello/version").as_deref(),
        Some("1.0\n")
    );
    assert!(dpkg_version(&lab, "flowrun-lab-hello").is_some());
    assert!(
        std::process::Command::new("dpkg-query")
            .args(["-W", "flowrun-lab-hello"])
            .output()
            .is_ok_and(|o| !o.status.success()),
        "the machine's own dpkg database was changed"
    );

    // The check asks about every package in one command.
    let several = step(
        &AptKind,
        json!({"packages": ["flowrun-lab-hello", "flowrun-lab-extra", "dpkg"], "state": "latest"}),
    );
    let before = lab.host.commands_executed();
    assert!(matches!(several.check(&lab.cx).await.unwrap(), Check::Drift(_)));
    assert_eq!(lab.host.commands_executed() - before, 1);

    // Fresh lists satisfy `cache_valid_time`.
    let fresh = step(&AptKind, json!({"update_cache": true, "cache_valid_time": "1h"}));
    assert!(matches!(fresh.check(&lab.cx).await.unwrap(), Check::InSync(_)));

    // A new version appears; `latest` sees it once the lists are refreshed.
    repo.add("flowrun-lab-hello", "1.1");
    let latest = step(&AptKind, json!({"name": "flowrun-lab-hello", "state": "latest"}));
    assert!(matches!(latest.check(&lab.cx).await.unwrap(), Check::InSync(_)));
    let update = step(&AptKind, json!({"update_cache": true}));
    assert!(converge(update.as_ref(), &lab.cx).await.unwrap().changed);
    let summary = lab.check_reports_drift(latest.as_ref()).await;
    assert_eq!(summary, "upgrade flowrun-lab-hello 1.0 -> 1.1");
    assert_idempotent(latest.as_ref(), &lab.cx).await;
    assert_eq!(dpkg_version(&lab, "flowrun-lab-hello").as_deref(), Some("1.1"));

    // A pinned version goes back down.
    let pinned = step(&AptKind, json!({"packages": ["flowrun-lab-hello=1.0"]}));
    assert_idempotent(pinned.as_ref(), &lab.cx).await;
    assert_eq!(dpkg_version(&lab, "flowrun-lab-hello").as_deref(), Some("1.0"));

    // As a user with sudo, through `become`.
    lab.host.add_user("flowrun-ops", Sudo::NoPassword).unwrap();
    let mut ops = connect(&lab.host, Some("flowrun-ops")).await;
    let extra = step(&AptKind, json!({"packages": ["flowrun-lab-extra"]}));
    let err = converge(extra.as_ref(), &ops).await.unwrap_err();
    assert!(
        err.message.contains("apt-get"),
        "without become, apt-get cannot lock: {err}"
    );
    ops.become_ = Some(flowrun_engine::transport::Become::default());
    assert_idempotent(extra.as_ref(), &ops).await;
    assert_eq!(dpkg_version(&lab, "flowrun-lab-extra").as_deref(), Some("2.0"));

    // Removal, with purge.
    let absent = step(
        &AptKind,
        json!({"packages": ["flowrun-lab-hello", "flowrun-lab-extra"], "state": "absent", "purge": true}),
    );
    let summary = lab.check_reports_drift(absent.as_ref()).await;
    assert_eq!(summary, "remove flowrun-lab-hello, flowrun-lab-extra");
    let first = assert_idempotent(absent.as_ref(), &lab.cx).await;
    assert_eq!(
        first.outputs["removed"],
        json!(["flowrun-lab-hello", "flowrun-lab-extra"])
    );
    assert!(dpkg_version(&lab, "flowrun-lab-hello").is_none());

    // An unknown package fails with apt's reason.
    let unknown = step(&AptKind, json!({"name": "flowrun-lab-nonexistent"}));
    let err = converge(unknown.as_ref(), &lab.cx).await.unwrap_err();
    assert!(err.message.contains("Unable to locate package"), "{err}");

    // Removing the repository removes key and source.
    let gone = step(&AptRepoKind, json!({"name": "flowrun-lab", "state": "absent"}));
    assert_idempotent(gone.as_ref(), &lab.cx).await;
    assert!(lab.file("/etc/apt/sources.list.d/flowrun-lab.sources").is_none());
    assert!(lab.file("/etc/apt/keyrings/flowrun-lab.asc").is_none());
}

#[tokio::test]
async fn repository_key_from_a_url_and_a_changed_key() {
    let Some(lab) = lab("repository_key_from_a_url_and_a_changed_key", SshdOptions::isolated()).await else {
        return;
    };
    let repo = Repo::new(lab.host.dir());
    // A binary key fetched from a file:// URL lands in a .gpg keyring.
    let binary = lab.host.dir().join("key.gpg");
    let out = std::process::Command::new("gpg")
        .args(["--batch", "--dearmor", "-o"])
        .arg(&binary)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(repo.key.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(out.success());
    let by_url = step(
        &AptRepoKind,
        json!({"name": "lab2", "key_url": format!("file://{}", binary.display()),
               "uris": ["https://packages.example.com/debian"], "suites": ["bookworm"],
               "components": ["main"], "architectures": ["amd64"]}),
    );
    let first = assert_idempotent(by_url.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["key_file"], json!("/etc/apt/keyrings/lab2.gpg"));
    let sources = lab.file("/etc/apt/sources.list.d/lab2.sources").unwrap();
    assert_eq!(
        sources,
        "# managed by flowrun (apt_repo `lab2`)\nTypes: deb\nURIs: https://packages.example.com/debian\n\
         Suites: bookworm\nComponents: main\nArchitectures: amd64\nSigned-By: /etc/apt/keyrings/lab2.gpg\n"
    );
    assert_eq!(
        std::fs::read(lab.host.host_path("/etc/apt/keyrings/lab2.gpg")).unwrap(),
        std::fs::read(&binary).unwrap()
    );
    // The same repository with the armored key: the .gpg goes, the source follows.
    let inline = step(
        &AptRepoKind,
        json!({"name": "lab2", "key": repo.key, "uris": ["https://packages.example.com/debian"],
               "suites": ["bookworm"], "components": ["main"], "architectures": ["amd64"]}),
    );
    let summary = lab.check_reports_drift(inline.as_ref()).await;
    assert!(summary.contains("remove `/etc/apt/keyrings/lab2.gpg`"), "{summary}");
    assert!(
        summary.contains("update `/etc/apt/sources.list.d/lab2.sources`"),
        "{summary}"
    );
    assert_idempotent(inline.as_ref(), &lab.cx).await;
    assert!(lab.file("/etc/apt/keyrings/lab2.gpg").is_none());
    // Someone edits the source by hand: drift, repaired.
    lab.sh("echo '# edited' >> /etc/apt/sources.list.d/lab2.sources");
    assert!(matches!(inline.check(&lab.cx).await.unwrap(), Check::Drift(_)));
    assert!(converge(inline.as_ref(), &lab.cx).await.unwrap().changed);
    assert!(!lab
        .file("/etc/apt/sources.list.d/lab2.sources")
        .unwrap()
        .contains("edited"));
}
