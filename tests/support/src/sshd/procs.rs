//! Process and address bookkeeping for test hosts: a distinct loopback
//! address per host, a free port on it, and killing a host's whole process
//! tree (sshd forks a process per connection that outlives its listener, so
//! killing the listener alone would not make the host look dead).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The next loopback address for a test host: `127.0.B.C` with C in 2..=251.
/// Processes start at different offsets, so test binaries running side by side
/// rarely share an address (and never a port: ports are checked free).
pub fn next_address() -> Ipv4Addr {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let idx = (std::process::id().wrapping_mul(97).wrapping_add(n)) % (250 * 250);
    let b = u8::try_from(idx / 250).unwrap_or(0);
    let c = u8::try_from(idx % 250 + 2).unwrap_or(2);
    Ipv4Addr::new(127, 0, b, c)
}

/// A port that is free on `addr` right now (the kernel picks it).
pub fn free_port(addr: Ipv4Addr) -> io::Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(addr, 0))?;
    Ok(l.local_addr()?.port())
}

/// Parent pid of `pid`, from `/proc/PID/stat` (the field after the command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// All live descendants of `root` (children first found, then theirs).
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pairs: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &pairs {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) only sends a signal; no memory is shared with the callee.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGKILL `root` and everything below it. The tree is re-read a few times so
/// that processes forked while we were killing are caught too.
pub fn kill_tree(root: u32) {
    signal(root, libc::SIGSTOP);
    for _ in 0..3 {
        let below = descendants(root);
        for &p in &below {
            signal(p, libc::SIGSTOP);
        }
        for &p in &below {
            signal(p, libc::SIGKILL);
        }
        if below.is_empty() {
            break;
        }
    }
    signal(root, libc::SIGKILL);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_and_distinct() {
        let a = next_address();
        let b = next_address();
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, b);
    }

    #[test]
    fn finds_and_kills_a_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut below = Vec::new();
        for _ in 0..200 {
            below = descendants(pid);
            if below.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(below.len(), 2, "{below:?}");
        kill_tree(pid);
        child.wait().unwrap();
        for p in below {
            // Reaped by init or zombie for a moment: either way no longer running sleep.
            let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            assert!(state.is_empty() || state.contains(") Z"), "{state}");
        }
    }
}
