//! End-to-end tests of the `flowrun` binary: each test runs the real binary
//! in a temporary directory with its own journal.

mod api;
mod completions;
mod core;
mod dynamic_inventory;
mod errors;
mod github_deploy;
mod github_runners;
mod github_standin;
mod harness;
mod jinja;
mod journal;
mod k8s;
mod lifecycle;
mod plan_matches_run;
mod progress;
mod rollback;
mod schema;
mod secrets;
mod shipped_workflows;
mod ssh;
