//! End-to-end tests of the `flowrun` binary: each test runs the real binary
//! in a temporary directory with its own journal.

mod api;
mod completions;
mod core;
mod errors;
mod harness;
mod k8s;
mod lifecycle;
mod schema;
mod shipped_workflows;
mod ssh;
