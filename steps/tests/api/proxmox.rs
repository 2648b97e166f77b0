//! `proxmox_vm` against the Proxmox VE emulator.

use super::{build, context_with_hosts, drift, in_sync, logs};
use flowrun_lab::emulators::proxmox::{ProxmoxEmulator, TEMPLATE_ID};
use flowrun_steps::proxmox_vm::ProxmoxVmKind;
use flowrun_steps::testing::{assert_idempotent, converge};
use serde_json::{json, Value};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops+ci/x=1@host:a";

fn params(pve: &ProxmoxEmulator, extra: Value) -> Value {
    let mut p = json!({
        "api_url": pve.url(),
        "token_id": pve.token_id(),
        "token_secret": pve.token_secret(),
        "ca_file": pve.ca_file().to_str().unwrap(),
        "node": pve.node(),
        "name": "gitlab-runner-01",
        "template": TEMPLATE_ID,
        "cores": 2,
        "memory": 2048,
        "ciuser": "debian",
        "sshkeys": [KEY],
        "ipconfig0": "ip=dhcp",
        "wait_ip_timeout": "20s",
        "task_timeout": "20s",
        "inventory_host": "gitlab-runner-01",
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test]
async fn creates_starts_reports_ip_then_rerun_writes_nothing() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);

    let summary = drift(&*step, &cx).await;
    assert!(
        summary.starts_with("clone template 9000 as vm `gitlab-runner-01`"),
        "{summary}"
    );
    assert!(summary.contains("set cores 1 -> 2"), "{summary}");
    assert!(summary.contains("enable the qemu guest agent"), "{summary}");
    assert!(summary.contains("start vm `gitlab-runner-01`"), "{summary}");
    assert!(pve.writes().is_empty(), "the check wrote: {:?}", pve.writes());

    let applied = assert_idempotent(&*step, &cx).await;
    assert_eq!(applied.outputs["vmid"], json!(100));
    assert_eq!(applied.outputs["node"], json!("pve"));
    assert_eq!(applied.outputs["ip"], json!("127.0.0.10"));
    assert_eq!(applied.outputs["status"], json!("running"));
    assert_eq!(cx.hosts.get("gitlab-runner-01").unwrap().address(), "127.0.0.10");

    let vm = pve.vm(100).unwrap();
    assert!(vm.running && !vm.template && vm.lock.is_none());
    assert_eq!(vm.config["cores"], json!(2));
    assert_eq!(vm.config["memory"], json!(2048));
    assert_eq!(vm.config["agent"], json!("1"));
    assert_eq!(vm.config["ciuser"], json!("debian"));
    let stored = vm.config["sshkeys"].as_str().unwrap();
    assert!(stored.contains("%20") && !stored.contains(' '), "{stored}");
    let decoded = percent_encoding::percent_decode_str(stored).decode_utf8().unwrap();
    assert_eq!(decoded, KEY);

    // A re-run with a fresh instance (no journal): reads only, in sync, the IP found again.
    pve.clear_requests();
    let cx2 = context_with_hosts(&["gitlab-runner-01"]);
    let again = build(&ProxmoxVmKind, params(&pve, json!({})));
    let outputs = in_sync(&*again, &cx2).await;
    assert_eq!(outputs["ip"], json!("127.0.0.10"));
    assert_eq!(cx2.hosts.get("gitlab-runner-01").unwrap().address(), "127.0.0.10");
    assert!(pve.writes().is_empty(), "re-run wrote: {:?}", pve.writes());
    assert!(pve.requests().iter().all(|r| r.auth));
}

#[tokio::test]
async fn drift_changes_only_what_differs() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    converge(&*step, &cx).await.unwrap();

    pve.set_config(100, "cores", Some(json!(4)));
    pve.power_off(100);
    let summary = drift(&*step, &cx).await;
    assert_eq!(
        summary,
        "set cores 4 -> 2; start vm 100; wait for the guest agent of vm 100 to report an IP address"
    );
    pve.clear_requests();
    let applied = converge(&*step, &cx).await.unwrap();
    assert!(applied.changed);
    let writes: Vec<String> = pve
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        [
            "POST /api2/json/nodes/pve/qemu/100/config",
            "POST /api2/json/nodes/pve/qemu/100/status/start"
        ]
    );
    assert_eq!(pve.vm(100).unwrap().config["cores"], json!(2));
    in_sync(&*step, &cx).await;

    // Changed while running: the change waits for the next boot, the address is still reported.
    pve.set_config(100, "memory", Some(json!("1024")));
    assert_eq!(
        drift(&*step, &cx).await,
        "set memory 1024 -> 2048 (takes effect at the next boot)"
    );
    let cx2 = context_with_hosts(&["gitlab-runner-01"]);
    let applied = converge(&*step, &cx2).await.unwrap();
    assert_eq!(applied.outputs["ip"], json!("127.0.0.10"));
    assert_eq!(cx2.hosts.get("gitlab-runner-01").unwrap().address(), "127.0.0.10");
}

#[tokio::test]
async fn stopped_then_absent_tears_down() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    converge(&*build(&ProxmoxVmKind, params(&pve, json!({}))), &cx)
        .await
        .unwrap();

    let stop = build(&ProxmoxVmKind, params(&pve, json!({"state": "stopped"})));
    assert_eq!(drift(&*stop, &cx).await, "shut down vm 100");
    let out = converge(&*stop, &cx).await.unwrap();
    assert_eq!(out.outputs["status"], json!("stopped"));
    assert!(!pve.vm(100).unwrap().running);
    in_sync(&*stop, &cx).await;

    // Started again, then absent: stop first (Proxmox refuses to destroy a running VM), then destroy.
    converge(&*build(&ProxmoxVmKind, params(&pve, json!({}))), &cx)
        .await
        .unwrap();
    let absent = build(&ProxmoxVmKind, params(&pve, json!({"state": "absent"})));
    assert_eq!(drift(&*absent, &cx).await, "stop vm 100; destroy vm 100");
    let out = converge(&*absent, &cx).await.unwrap();
    assert!(out.changed);
    assert_eq!(out.outputs["status"], json!("absent"));
    assert!(pve.vm(100).is_none());
    assert!(pve.vm(TEMPLATE_ID).is_some(), "the template must stay");
    assert!(pve
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == "/api2/json/nodes/pve/qemu/100" && r.query == "purge=1"));
    pve.clear_requests();
    let outputs = in_sync(&*absent, &cx).await;
    assert_eq!(outputs["status"], json!("absent"));
    assert!(pve.writes().is_empty());
}

#[tokio::test]
async fn a_burst_of_503_is_retried() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({"state": "present"})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    pve.fail_next_requests(3);
    let out = converge(&*step, &cx).await.unwrap();
    assert!(out.changed);
    assert_eq!(pve.requests().iter().filter(|r| r.status == 503).count(), 3);
    assert!(pve.vm(100).is_some());
}

#[tokio::test]
async fn a_failed_task_fails_with_proxmox_message() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    pve.fail_next_task("qmclone", "clone failed: storage 'local-lvm' is full");
    let err = converge(&*step, &cx).await.unwrap_err();
    assert!(
        err.message
            .contains("clone template 9000 as vm `gitlab-runner-01` failed: clone failed: storage 'local-lvm' is full"),
        "{err}"
    );
    assert!(pve.vm(100).is_none(), "a failed clone leaves no VM");
    // The next run creates it.
    converge(&*step, &cx).await.unwrap();
    assert!(pve.vm(100).unwrap().running);
}

#[tokio::test]
async fn slow_tasks_and_a_late_agent_are_waited_for() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    pve.set_task_duration(std::time::Duration::from_millis(700));
    pve.set_agent_delay(std::time::Duration::from_millis(1500));
    let step = build(&ProxmoxVmKind, params(&pve, json!({})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let out = converge(&*step, &cx).await.unwrap();
    assert_eq!(out.outputs["ip"], json!("127.0.0.10"));
    // The agent answered 500 while it was not running, and the step kept asking.
    assert!(pve
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/agent/network-get-interfaces") && r.status == 500));
}

#[tokio::test]
async fn a_task_that_outlasts_its_timeout_fails() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    pve.set_task_duration(std::time::Duration::from_secs(30));
    let step = build(&ProxmoxVmKind, params(&pve, json!({"task_timeout": "1s"})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let err = converge(&*step, &cx).await.unwrap_err();
    assert!(err.message.contains("did not finish within 1s"), "{err}");
}

#[tokio::test]
async fn wrong_token_fails_with_the_api_message_and_never_shows_the_secret() {
    logs::capture();
    let pve = ProxmoxEmulator::start().await.unwrap();
    let canary = "3f0c1d2e-canary-4b5a-9e8f-7a6b5c4d3e2f";
    let step = build(&ProxmoxVmKind, params(&pve, json!({"token_secret": canary})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let err = step.check(&cx).await.unwrap_err();
    assert!(err.message.contains("401 authentication failure"), "{err}");
    assert!(!err.message.contains(canary), "{err}");
    assert!(!format!("{err:?}").contains(canary));
    assert!(!logs::text().contains(canary), "a log line shows the secret");
    assert!(pve.requests().iter().all(|r| r.status == 401 && r.auth));
}

#[tokio::test]
async fn tls_is_verified_and_insecure_is_loud() {
    logs::capture();
    let pve = ProxmoxEmulator::start().await.unwrap();
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let mut p = params(&pve, json!({}));
    p.as_object_mut().unwrap().remove("ca_file");
    let err = build(&ProxmoxVmKind, p.clone()).check(&cx).await.unwrap_err();
    assert!(err.message.contains("cannot reach"), "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    assert!(pve.requests().is_empty());

    p["insecure"] = json!(true);
    let step = build(&ProxmoxVmKind, p);
    drift(&*step, &cx).await;
    assert!(logs::text().contains("TLS CERTIFICATE VERIFICATION IS OFF"));
}

#[tokio::test]
async fn a_vmid_taken_by_another_vm_is_refused_before_any_write() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({"vmid": TEMPLATE_ID})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let err = step.check(&cx).await.unwrap_err();
    assert!(
        err.message
            .contains("parameter `vmid`: 9000 is taken by `debian-12-cloudinit`"),
        "{err}"
    );
    assert!(pve.writes().is_empty());
}

#[tokio::test]
async fn a_given_vmid_is_used() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let step = build(&ProxmoxVmKind, params(&pve, json!({"vmid": 321, "state": "stopped"})));
    let cx = context_with_hosts(&["gitlab-runner-01"]);
    let out = converge(&*step, &cx).await.unwrap();
    assert_eq!(out.outputs["vmid"], json!(321));
    assert_eq!(out.outputs["status"], json!("stopped"));
    assert!(out.outputs["ip"].is_null());
    assert!(!pve.vm(321).unwrap().running);
    in_sync(&*step, &cx).await;
}

#[tokio::test]
async fn clones_made_at_the_same_time_each_get_their_own_id() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let names = ["runner-a", "runner-b", "runner-c", "runner-d"];
    let cx = context_with_hosts(&names);
    // Same moment: every step reads the same `/cluster/nextid` before any clone lands.
    let runs = names.iter().map(|n| {
        let step = build(&ProxmoxVmKind, params(&pve, json!({"name": n, "inventory_host": n})));
        let cx = cx.clone();
        async move { flowrun_steps::testing::converge(&*step, &cx).await }
    });
    let results = futures_join_all(runs).await;
    let mut ids: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("every clone succeeds").outputs["vmid"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), names.len(), "two VMs share an id");
    for n in names {
        let vm = pve.vm_by_name(n).expect("the VM exists");
        assert_eq!(
            cx.hosts.get(n).unwrap().instance().as_deref(),
            vm.config["vmgenid"].as_str(),
            "the host is that VM"
        );
    }
}

/// Run futures concurrently on this task (no extra dependency for one test).
async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(|f| Box::pin(f)).collect();
    let mut out = Vec::new();
    let mut set: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (i, slot) in set.iter_mut().enumerate() {
            if let Some(f) = slot {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                    results[i] = Some(v);
                    *slot = None;
                }
            }
        }
        if set.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.expect("every future finished")));
    out
}
