//! Test support and the local lab: real `sshd` processes on loopback as
//! target hosts, a real PostgreSQL server for the shared journal, and
//! emulators of the Proxmox VE, GitLab and GitHub APIs written from their
//! public documentation, strict about what the real servers reject. The end-to-end tests and `flowrun-lab` both use them.

pub mod emulators;
pub mod lab;
pub mod postgres;
pub mod sshd;
