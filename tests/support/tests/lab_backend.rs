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

/// sshd starts when it binds any of its addresses: a VM whose address is
/// another VM's (ids 0x3300 and 0x3301 both map to `127.77.51.1`) would come
/// up on its own random port only, and every connection to it on the lab's
/// SSH port would reach the other VM. Its start fails instead.
#[test]
fn a_vm_whose_address_is_taken_does_not_boot() {
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
    let (first, second) = (0x3300, 0x3301);
    let ip = SshdVmBackend::address_of(first);
    assert_eq!(ip, SshdVmBackend::address_of(second));
    b.start(first, "vm-a").unwrap();
    let err = b.start(second, "vm-b").unwrap_err();
    assert!(err.contains(&format!("cannot listen on {ip}:{port}")), "{err}");
    assert_eq!(b.running(), [first], "the second VM runs");
    // The first is unharmed, and still the one on the lab's port.
    b.with_vm(first, |h| h.run_ok("true")).unwrap().unwrap();
    std::net::TcpStream::connect((ip, port)).expect("the first VM answers on the lab's port");
}
