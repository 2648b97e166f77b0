//! flowrun's built-in steps, one module per step kind, each against the
//! engine's `StepKind`/`Step` contract. `registry()` lists them all.

pub mod api;
pub mod github_runner;
pub mod gitlab_runner;
pub mod params;
pub mod proxmox_vm;
#[doc(hidden)]
pub mod testing;

use flowrun_engine::step::StepKind;

/// Every built-in step kind.
pub fn registry() -> Vec<Box<dyn StepKind>> {
    vec![
        Box::new(proxmox_vm::ProxmoxVmKind),
        Box::new(gitlab_runner::GitlabRunnerKind),
        Box::new(github_runner::GithubRunnerKind),
    ]
}
