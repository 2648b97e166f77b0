//! A network of its own for a test host whose steps change the firewall: its
//! sshd runs in a fresh network namespace (nftables rules applied there never
//! touch this machine), and a relay in this process carries connections from
//! the host's loopback address on this machine's side into the namespace. Only
//! loopback is involved on either side.
//!
//! Sockets belong to the namespace they were created in, so a short-lived
//! thread enters the namespace (`setns` affects only the calling thread),
//! creates the socket and hands it back.

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Run `f` on a thread that has entered the network namespace `ns`.
fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid fd; it changes only this thread's network namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// Bring the namespace's loopback interface up (a new namespace starts with it down).
pub fn loopback_up(ns: &File) -> io::Result<()> {
    in_netns(ns, || {
        // SAFETY: a plain datagram socket used only for the two interface ioctls below;
        // `ifreq` is zero-initialised and its name is a NUL-terminated "lo".
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            req.ifr_name[0] = b'l' as libc::c_char;
            req.ifr_name[1] = b'o' as libc::c_char;
            let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
            if rc == 0 {
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            }
            let err = io::Error::last_os_error();
            libc::close(fd);
            if rc == 0 {
                Ok(())
            } else {
                Err(err)
            }
        }
    })
}

/// Forwards TCP connections from `listen` (this machine's namespace) to
/// `target` inside another network namespace, until dropped.
#[derive(Debug)]
pub struct Relay {
    listen: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(listen: SocketAddrV4, ns: File, target: SocketAddrV4) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let ns = Arc::new(ns);
        let thread = std::thread::Builder::new()
            .name(format!("relay-{listen}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(outer) = conn else { continue };
                    let ns = ns.clone();
                    let _ = std::thread::Builder::new()
                        .name("relay-conn".into())
                        .spawn(move || pipe(outer, &ns, target));
                }
            })?;
        Ok(Self {
            listen,
            stop,
            thread: Some(thread),
        })
    }
}

/// Carry one connection both ways; when either side ends, end the other.
fn pipe(outer: TcpStream, ns: &File, target: SocketAddrV4) {
    let Ok(inner) = in_netns(ns, || {
        TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
    }) else {
        let _ = outer.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(mut outer_r), Ok(mut inner_w)) = (outer.try_clone(), inner.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut outer_r, &mut inner_w);
        let _ = inner_w.shutdown(Shutdown::Write);
    });
    let (mut inner_r, mut outer_w) = (inner, outer);
    let _ = io::copy(&mut inner_r, &mut outer_w);
    // The host side ended (or died): the client must see the connection drop.
    let _ = outer_w.shutdown(Shutdown::Both);
    let _ = inner_r.shutdown(Shutdown::Both);
    let _ = up.join();
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.listen.into(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
