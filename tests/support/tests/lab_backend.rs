//! The lab's VM backend: a stopped VM keeps its files; a destroyed one is gone,
//! and a new VM with the same id is a fresh machine.

use flowrun_lab::emulators::proxmox::VmBackend;
use flowrun_lab::lab::SshdVmBackend;
use flowrun_lab::sshd::{is_root, Isolation};

#[test]
fn stop_keeps_the_disk_destroy_does_not() {
    if !is_root() {
        eprintln!("skipped: isolated VMs need root");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = SshdVmBackend::new(
        Isolation::Filesystem,
        port,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummyKeyForTheTest lab".into(),
    );
    let ip = b.start(4242, "vm-a").unwrap();
    assert_eq!(ip, SshdVmBackend::address_of(4242));
    b.with_vm(4242, |h| h.run_ok("touch /etc/marker")).unwrap().unwrap();
    b.stop(4242);
    b.start(4242, "vm-a").unwrap();
    let has = |b: &SshdVmBackend| {
        b.with_vm(4242, |h| h.run("test -e /etc/marker").unwrap().status.success())
            .unwrap()
    };
    assert!(has(&b), "a rebooted VM lost its files");
    b.stop(4242);
    b.destroy(4242);
    assert!(
        b.with_vm(4242, |h| h.name().to_owned()).is_none(),
        "the destroyed VM is still known"
    );
    b.start(4242, "vm-a").unwrap();
    assert!(!has(&b), "a new VM with a reused id has the old VM's files");
}
