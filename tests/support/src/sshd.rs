//! Real sshd test hosts on loopback (filled in by the SSH work).
