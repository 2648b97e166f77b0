//! flowrun's built-in steps, one module per step kind, each against the
//! engine's `StepKind`/`Step` contract. `registry()` lists them all.

pub mod api;
pub mod github_runner;
pub mod gitlab_runner;
pub mod params;
pub mod proxmox_vm;
#[doc(hidden)]
pub mod testing;

// Shared by several steps.
pub mod attrs;
pub mod diff;
pub mod digest;
pub mod http_client;
pub mod status;
#[cfg(test)]
mod test_http;
#[cfg(test)]
mod test_transport;

// Step kinds.
pub mod apt;
pub mod apt_repo;
pub mod assert;
pub mod command;
pub mod copy;
pub mod file;
pub mod firewall;
pub mod http;
pub mod k8s_apply;
pub mod line;
pub mod probe;
pub mod service;
pub mod template;
pub mod user;
pub mod wait_for;

use flowrun_engine::step::StepKind;

/// Every built-in step kind.
pub fn registry() -> Vec<Box<dyn StepKind>> {
    vec![
        Box::new(command::CommandKind),
        Box::new(file::FileStepKind),
        Box::new(copy::CopyKind),
        Box::new(template::TemplateKind),
        Box::new(line::LineKind),
        Box::new(assert::AssertKind),
        Box::new(probe::ProbeKind),
        Box::new(wait_for::WaitForKind),
        Box::new(http::HttpKind),
        Box::new(proxmox_vm::ProxmoxVmKind),
        Box::new(gitlab_runner::GitlabRunnerKind),
        Box::new(github_runner::GithubRunnerKind),
        Box::new(apt::AptKind),
        Box::new(apt_repo::AptRepoKind),
        Box::new(service::ServiceKind),
        Box::new(firewall::FirewallKind),
        Box::new(user::UserKind),
        Box::new(user::GroupKind),
        Box::new(k8s_apply::K8sApplyKind),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader relies on these: unique names, documented parameters, `one_of` names that exist.
    #[test]
    fn registry_is_consistent() {
        let kinds = registry();
        let mut names: Vec<&str> = kinds.iter().map(|k| k.info().name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len(), "duplicate step names");
        for k in &kinds {
            let info = k.info();
            assert!(!info.doc.is_empty(), "{}: no doc", info.name);
            for p in info.params {
                assert!(!p.doc.is_empty(), "{}.{}: no doc", info.name, p.name);
            }
            for group in info.one_of {
                for name in *group {
                    assert!(
                        info.params.iter().any(|p| p.name == *name && !p.required),
                        "{}: one_of names `{name}`, which is not an optional parameter",
                        info.name
                    );
                }
            }
        }
    }
}
