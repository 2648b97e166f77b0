//! System steps (`apt`, `apt_repo`, `service`, `firewall`, `user`, `group`)
//! for real, over SSH, on isolated sshd hosts: each has its own overlay of
//! `/` (and, for the firewall, its own network), so packages, services,
//! users and rules change on the host and never on this machine. Every test
//! checks idempotency, that `--check` finds the drift without writing, and
//! the host's real state. They need root; without it they say so and pass.

mod system;
