//! `apt`: Debian packages present, absent or at their latest version, and
//! package lists fresh enough.
//!
//! The check asks the host once for every package (`dpkg-query`, plus
//! `apt-cache policy` for `latest`, plus the age of the lists) and writes
//! nothing. Applying refreshes the lists when needed (and records it in
//! apt's `update-success-stamp`, which `cache_valid_time` reads), asks again,
//! then installs or removes what is still needed with `apt-get`:
//! non-interactive, keeping changed config files, waiting up to two minutes
//! for another dpkg to finish (`DPkg::Lock::Timeout`), without recommended
//! packages unless asked. Afterwards every package is checked to be where it
//! was asked to be.
//!
//! `update_cache` without `cache_valid_time` refreshes the lists only when
//! something is to be installed (or when no packages are given: then it is
//! the whole point of the step).

mod query;

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::{quote, ExecRequest};
use query::{Facts, Spec, UPDATE_STAMP};
use serde_json::{Map, Value};
use std::time::Duration;

pub struct AptKind;

const STATES: &[&str] = &["present", "absent", "latest"];

static INFO: KindInfo = KindInfo {
    name: "apt",
    version: 1,
    doc: "Ensure Debian packages are installed (`present`, `latest`) or removed, and the package lists are fresh",
    params: &[
        ParamSpec::opt(
            "packages",
            ParamType::StrList,
            "packages: `name`, `name:arch` or `name=version`",
        ),
        ParamSpec::opt("name", ParamType::Str, "one package (instead of `packages`)"),
        ParamSpec::opt(
            "state",
            ParamType::Enum(STATES),
            "`present` (default), `latest` (the candidate version of the current lists) or `absent`",
        ),
        ParamSpec::opt(
            "update_cache",
            ParamType::Bool,
            "refresh the package lists (`apt-get update`) before installing; alone, refresh them",
        ),
        ParamSpec::opt(
            "cache_valid_time",
            ParamType::Duration,
            "refresh the lists when they are older than this (implies `update_cache`)",
        ),
        ParamSpec::opt(
            "install_recommends",
            ParamType::Bool,
            "also install recommended packages (default false)",
        ),
        ParamSpec::opt(
            "purge",
            ParamType::Bool,
            "with `state: absent`: remove configuration files too",
        ),
    ],
    one_of: &[],
    outputs: &["installed", "removed", "cache_updated", "versions"],
    secret_outputs: &[],
    journal: true,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Present,
    Absent,
    Latest,
}

impl StepKind for AptKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(AptStep::from_params(&Params(params))?))
    }
}

struct AptStep {
    specs: Vec<Spec>,
    state: State,
    update_cache: bool,
    cache_valid_time: Option<Duration>,
    install_recommends: bool,
    purge: bool,
}

/// What the host needs.
#[derive(Debug, Default)]
struct Plan {
    update: bool,
    /// Packages to install or upgrade, with what is said about each.
    install: Vec<(Spec, String)>,
    remove: Vec<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.update && self.install.is_empty() && self.remove.is_empty()
    }

    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.update {
            parts.push("update the package lists".to_owned());
        }
        if !self.install.is_empty() {
            parts.push(
                self.install
                    .iter()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if !self.remove.is_empty() {
            parts.push(format!("remove {}", self.remove.join(", ")));
        }
        parts.join("; ")
    }
}

/// apt-get's common options: no prompts, wait for another dpkg, fail on any failed source.
const APT_GET: &str = "apt-get -q -y -o DPkg::Lock::Timeout=120";

impl AptStep {
    fn from_params(p: &Params<'_>) -> Result<Self, StepError> {
        let names = match (p.has("packages"), p.opt_str("name")?) {
            (true, None) => p.str_list("packages")?,
            (false, Some(n)) => vec![n],
            (false, None) => Vec::new(),
            (true, Some(_)) => return Err(StepError::failed("give `packages` or `name`, not both")),
        };
        let which = if p.has("packages") { "packages" } else { "name" };
        let specs = names
            .iter()
            .map(|n| Spec::parse(n).map_err(|e| StepError::param(which, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let state = match p.choice("state", STATES, "present")?.as_str() {
            "absent" => State::Absent,
            "latest" => State::Latest,
            _ => State::Present,
        };
        if state != State::Present && specs.iter().any(|s| s.version.is_some()) {
            return Err(StepError::param(
                which,
                "a version (`name=version`) only goes with `state: present`",
            ));
        }
        let cache_valid_time = p.opt_duration("cache_valid_time")?;
        let update_cache = p.bool_or("update_cache", false)? || cache_valid_time.is_some();
        if specs.is_empty() && !update_cache {
            return Err(StepError::failed(
                "nothing to do: give `packages` (or `name`), or `update_cache: true`",
            ));
        }
        Ok(Self {
            specs,
            state,
            update_cache,
            cache_valid_time,
            install_recommends: p.bool_or("install_recommends", false)?,
            purge: p.bool_or("purge", false)?,
        })
    }

    async fn facts(&self, cx: &StepContext) -> Result<Facts, StepError> {
        let out = cx
            .sh_quick(&query::script(&self.specs, self.state == State::Latest))
            .await?;
        let text = out.stdout_str();
        if text.contains(query::NO_APT) {
            return Err(StepError::failed(
                "`apt` needs a Debian-based host: `dpkg-query` was not found",
            ));
        }
        Ok(query::parse(&self.specs, &text))
    }

    /// Whether the lists need a refresh, before looking at packages.
    fn lists_stale(&self, facts: &Facts) -> bool {
        match self.cache_valid_time {
            Some(valid) => facts.lists_age.is_none_or(|age| Duration::from_secs(age) > valid),
            None => self.update_cache && self.specs.is_empty(),
        }
    }

    fn plan(&self, facts: &Facts) -> Plan {
        let mut plan = Plan::default();
        for spec in &self.specs {
            let st = facts.packages.get(&spec.name).cloned().unwrap_or_default();
            let name = &spec.name;
            match (self.state, &st.installed) {
                (State::Absent, Some(_)) => plan.remove.push(name.clone()),
                (State::Absent, None) if self.purge && st.config_files => plan.remove.push(name.clone()),
                (State::Absent, None) => {}
                (_, None) => plan
                    .install
                    .push((spec.clone(), format!("install {}", spec.install_arg()))),
                (State::Present, Some(v)) => match &spec.version {
                    Some(want) if want != v => {
                        plan.install
                            .push((spec.clone(), format!("install {name} {want} (now {v})")));
                    }
                    _ => {}
                },
                (State::Latest, Some(v)) => match &st.candidate {
                    Some(c) if c != v => plan.install.push((spec.clone(), format!("upgrade {name} {v} -> {c}"))),
                    _ => {}
                },
            }
        }
        plan.update = self.lists_stale(facts) || (self.update_cache && !plan.install.is_empty());
        plan
    }

    fn outputs(&self, installed: &[String], removed: &[String], cache_updated: bool, facts: &Facts) -> Outputs {
        let versions: Map<String, Value> = facts
            .packages
            .iter()
            .map(|(k, v)| (k.clone(), v.installed.clone().map_or(Value::Null, Value::from)))
            .collect();
        let mut o = Outputs::new();
        o.insert("installed".into(), Value::from(installed.to_vec()));
        o.insert("removed".into(), Value::from(removed.to_vec()));
        o.insert("cache_updated".into(), Value::Bool(cache_updated));
        o.insert("versions".into(), Value::Object(versions));
        o
    }

    fn install_script(&self, install: &[(Spec, String)]) -> String {
        let args: Vec<String> = install.iter().map(|(s, _)| quote(&s.install_arg())).collect();
        let recommends = if self.install_recommends {
            "-o APT::Install-Recommends=true"
        } else {
            "--no-install-recommends"
        };
        let downgrades = if install.iter().any(|(s, _)| s.version.is_some()) {
            " --allow-downgrades"
        } else {
            ""
        };
        format!(
            "{APT_GET} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
             {recommends}{downgrades} install {}",
            args.join(" ")
        )
    }

    /// After apt-get: every package where it was asked to be.
    fn verify(&self, facts: &Facts) -> Result<(), StepError> {
        for spec in &self.specs {
            let st = facts.packages.get(&spec.name).cloned().unwrap_or_default();
            let wrong = match self.state {
                State::Absent => st.installed.is_some(),
                State::Present => match (&spec.version, &st.installed) {
                    (_, None) => true,
                    (Some(want), Some(v)) => want != v,
                    (None, Some(_)) => false,
                },
                State::Latest => st.installed.is_none(),
            };
            if wrong {
                return Err(StepError::failed(format!(
                    "apt-get succeeded, but `{}` is {}",
                    spec.name,
                    st.installed
                        .map_or_else(|| "not installed".to_owned(), |v| format!("at version {v}"))
                )));
            }
        }
        Ok(())
    }
}

/// Run an apt-get `script` non-interactively; a failure names `what` ran and carries apt's errors.
async fn apt_get(cx: &StepContext, what: &str, script: &str) -> Result<(), StepError> {
    let out = cx
        .exec(ExecRequest::shell(format!(
            "export DEBIAN_FRONTEND=noninteractive LC_ALL=C\n{script}"
        )))
        .await?;
    if out.rc != 0 {
        return Err(StepError::failed(out.failure_message(what)));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Step for AptStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let facts = self.facts(cx).await?;
        let plan = self.plan(&facts);
        if plan.is_empty() {
            return Ok(Check::InSync(self.outputs(&[], &[], false, &facts)));
        }
        let mut pending = Pending::new(plan.summary());
        pending.outputs = self.outputs(&[], &[], false, &facts);
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let mut facts = self.facts(cx).await?;
        let mut plan = self.plan(&facts);
        let mut cache_updated = false;
        if plan.update {
            apt_get(
                cx,
                "apt-get update",
                &format!(
                    "{APT_GET} -o APT::Update::Error-Mode=any update\n\
                     mkdir -p /var/lib/apt/periodic && touch {UPDATE_STAMP}"
                ),
            )
            .await?;
            cache_updated = true;
            // The lists changed: what is to install (and the latest versions) may have too.
            facts = self.facts(cx).await?;
            plan = self.plan(&facts);
        }
        let installed: Vec<String> = plan.install.iter().map(|(s, _)| s.name.clone()).collect();
        if !plan.install.is_empty() {
            apt_get(
                cx,
                &format!("apt-get install {}", installed.join(" ")),
                &self.install_script(&plan.install),
            )
            .await?;
        }
        if !plan.remove.is_empty() {
            let verb = if self.purge { "purge" } else { "remove" };
            let args: Vec<String> = plan.remove.iter().map(|n| quote(n)).collect();
            apt_get(
                cx,
                &format!("apt-get {verb} {}", plan.remove.join(" ")),
                &format!("{APT_GET} {verb} {}", args.join(" ")),
            )
            .await?;
        }
        if !installed.is_empty() || !plan.remove.is_empty() {
            facts = self.facts(cx).await?;
            self.verify(&facts)?;
        }
        let changed = cache_updated || !installed.is_empty() || !plan.remove.is_empty();
        Ok(Applied {
            changed,
            outputs: self.outputs(&installed, &plan.remove, cache_updated, &facts),
            message: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;
    use serde_json::json;

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&AptKind, params, json!({}), std::path::Path::new("."))
    }

    #[test]
    fn parameters_are_checked() {
        let e = step(json!({"packages": ["ok", "x; rm -rf /"]})).err().unwrap();
        assert!(
            e.message
                .starts_with("parameter `packages`: `x; rm -rf /` is not a Debian package"),
            "{e}"
        );
        let e = step(json!({"name": "ab=1", "state": "latest"})).err().unwrap();
        assert!(e.message.contains("only goes with `state: present`"), "{e}");
        assert!(step(json!({})).err().unwrap().message.contains("nothing to do"));
        assert!(step(json!({"name": "ab", "packages": ["cd"]})).is_err());
        step(json!({"update_cache": true})).unwrap();
        step(json!({"cache_valid_time": "1h"})).unwrap();
    }

    fn plan_for(params: Value, facts: &Facts) -> Plan {
        let p = params.as_object().unwrap().clone();
        AptStep::from_params(&Params(&p)).unwrap().plan(facts)
    }

    fn facts(entries: &[(&str, Option<&str>, Option<&str>)], age: Option<u64>) -> Facts {
        let mut f = Facts {
            lists_age: age,
            ..Facts::default()
        };
        for (n, installed, candidate) in entries {
            f.packages.insert(
                (*n).to_owned(),
                query::PkgState {
                    installed: installed.map(str::to_owned),
                    config_files: false,
                    candidate: candidate.map(str::to_owned),
                },
            );
        }
        f
    }

    #[test]
    fn plans() {
        let f = facts(
            &[("aa", Some("1.0"), Some("1.1")), ("bb", None, Some("2.0"))],
            Some(100),
        );
        let p = plan_for(json!({"packages": ["aa", "bb"]}), &f);
        assert_eq!(p.summary(), "install bb");
        let p = plan_for(json!({"packages": ["aa", "bb"], "update_cache": true}), &f);
        assert_eq!(p.summary(), "update the package lists; install bb");
        let p = plan_for(json!({"packages": ["aa"], "state": "latest"}), &f);
        assert_eq!(p.summary(), "upgrade aa 1.0 -> 1.1");
        let p = plan_for(json!({"packages": ["aa=0.9"]}), &f);
        assert_eq!(p.summary(), "install aa 0.9 (now 1.0)");
        let p = plan_for(json!({"packages": ["aa", "bb"], "state": "absent"}), &f);
        assert_eq!(p.summary(), "remove aa");
        // Lists fresh enough: nothing; too old: refresh.
        assert!(plan_for(json!({"packages": ["aa"], "cache_valid_time": "1h"}), &f).is_empty());
        let p = plan_for(json!({"packages": ["aa"], "cache_valid_time": "1m"}), &f);
        assert_eq!(p.summary(), "update the package lists");
        // `update_cache` alone always refreshes; with packages in place, it does not.
        assert!(plan_for(json!({"packages": [], "update_cache": true}), &f).update);
        assert!(plan_for(json!({"packages": ["aa"], "update_cache": true}), &f).is_empty());
    }
}
