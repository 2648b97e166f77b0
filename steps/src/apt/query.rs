//! What `apt` asks a host in its check — in one remote command for every
//! package: dpkg's status and version of each (`dpkg-query`), the candidate
//! versions (`apt-cache policy`, for `latest`), and how old the package lists
//! are — and how the answer is read.

use flowrun_engine::transport::quote;
use std::collections::BTreeMap;

/// Where apt records a successful `update` (written by flowrun too, after its own).
pub const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";

/// A requested package: `name`, optionally `name:arch` and `=version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// As dpkg and apt name it (`name` or `name:arch`).
    pub name: String,
    pub version: Option<String>,
}

impl Spec {
    /// Parse `name[:arch][=version]`, refusing anything that is not a Debian package name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (name, version) = match t.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (t, None),
        };
        let (base, arch) = match name.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (name, None),
        };
        let base_ok = base.len() >= 2
            && base.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && base
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        let arch_ok = arch.is_none_or(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let version_ok = version
            .is_none_or(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c)));
        if !(base_ok && arch_ok && version_ok) {
            return Err(format!(
                "`{t}` is not a Debian package (expected `name`, `name:arch` or `name=version`)"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    /// The argument for `apt-get install`.
    pub fn install_arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A package's state on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgState {
    /// The installed version, when dpkg says `install ok installed`.
    pub installed: Option<String>,
    /// Config files left from a removal (`deinstall ok config-files`): purge removes them.
    pub config_files: bool,
    /// What apt would install now (only asked for `latest`).
    pub candidate: Option<String>,
}

/// What the check learned.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub packages: BTreeMap<String, PkgState>,
    /// Seconds since the package lists were last updated (`None`: never).
    pub lists_age: Option<u64>,
}

const POLICY: &str = "@@flowrun-policy";
const STAMPS: &str = "@@flowrun-stamps";
const NOW: &str = "@@flowrun-now";
/// Printed when the host has no dpkg at all.
pub const NO_APT: &str = "@@flowrun-no-dpkg";

/// The read-only script that answers for all `specs` at once.
pub fn script(specs: &[Spec], candidates: bool) -> String {
    let names: Vec<String> = specs.iter().map(|s| quote(&s.name)).collect();
    let names = names.join(" ");
    let mut s = format!("export LC_ALL=C\ncommand -v dpkg-query >/dev/null || {{ echo {NO_APT}; exit 0; }}\n");
    if !names.is_empty() {
        s.push_str(&format!(
            "dpkg-query -W -f='${{binary:Package}}\\t${{Package}}\\t${{Status}}\\t${{Version}}\\n' {names} 2>/dev/null\n"
        ));
    }
    s.push_str(&format!("echo {POLICY}\n"));
    if candidates && !names.is_empty() {
        s.push_str(&format!("apt-cache policy {names} 2>/dev/null\n"));
    }
    s.push_str(&format!(
        "echo {STAMPS}\nstat -c %Y {UPDATE_STAMP} /var/lib/apt/lists 2>/dev/null\necho {NOW}\ndate +%s\n"
    ));
    s
}

/// Read the script's output for `specs`.
pub fn parse(specs: &[Spec], out: &str) -> Facts {
    let mut facts = Facts::default();
    for s in specs {
        facts.packages.insert(s.name.clone(), PkgState::default());
    }
    let (dpkg, rest) = out.split_once(POLICY).unwrap_or((out, ""));
    let (policy, rest) = rest.split_once(STAMPS).unwrap_or((rest, ""));
    let (stamps, now) = rest.split_once(NOW).unwrap_or((rest, ""));
    for line in dpkg.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [binary, bare, status, version] = f[..] else {
            continue;
        };
        // `name` matches either form; `name:arch` only the qualified one.
        let Some(state) = specs
            .iter()
            .find(|s| s.name == binary || s.name == bare)
            .and_then(|s| facts.packages.get_mut(&s.name))
        else {
            continue;
        };
        if status.ends_with(" installed") {
            state.installed = Some(version.to_owned());
        } else if status.ends_with(" config-files") {
            state.config_files = true;
        }
    }
    let mut current: Option<&Spec> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let head = &line[..line.len() - 1];
            current = specs
                .iter()
                .find(|s| s.name == head || s.name.split(':').next() == Some(head));
        } else if let (Some(spec), Some(c)) = (current, line.trim().strip_prefix("Candidate:")) {
            let c = c.trim();
            if c != "(none)" {
                if let Some(state) = facts.packages.get_mut(&spec.name) {
                    state.candidate = Some(c.to_owned());
                }
            }
        }
    }
    let newest = stamps.lines().filter_map(|l| l.trim().parse::<u64>().ok()).max();
    let now = now.lines().find_map(|l| l.trim().parse::<u64>().ok());
    facts.lists_age = match (newest, now) {
        (Some(t), Some(now)) => Some(now.saturating_sub(t)),
        _ => None,
    };
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            Spec::parse("docker-ce=5:24.0.7-1~debian.12~bookworm").unwrap(),
            Spec {
                name: "docker-ce".into(),
                version: Some("5:24.0.7-1~debian.12~bookworm".into())
            }
        );
        assert_eq!(Spec::parse("libc6:amd64").unwrap().name, "libc6:amd64");
        assert_eq!(Spec::parse("g++").unwrap().install_arg(), "g++");
        for bad in ["", "A", "x; rm -rf /", "-x", "a b", "pkg=", "pkg=1 2", "pkg:"] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_answers() {
        let specs: Vec<Spec> = ["hello", "libc6", "gone", "unknown"]
            .iter()
            .map(|s| Spec::parse(s).unwrap())
            .collect();
        let out = "hello\thello\tinstall ok installed\t2.10-3\n\
                   libc6:amd64\tlibc6\tinstall ok installed\t2.36-9\n\
                   gone\tgone\tdeinstall ok config-files\t1.0\n\
                   @@flowrun-policy\n\
                   hello:\n  Installed: 2.10-3\n  Candidate: 2.10-4\n  Version table:\n\
                   libc6:\n  Installed: 2.36-9\n  Candidate: 2.36-9\n\
                   gone:\n  Installed: (none)\n  Candidate: (none)\n\
                   @@flowrun-stamps\n1000\n1500\n@@flowrun-now\n2000\n";
        let f = parse(&specs, out);
        assert_eq!(f.packages["hello"].installed.as_deref(), Some("2.10-3"));
        assert_eq!(f.packages["hello"].candidate.as_deref(), Some("2.10-4"));
        assert_eq!(f.packages["libc6"].installed.as_deref(), Some("2.36-9"));
        assert!(f.packages["gone"].installed.is_none() && f.packages["gone"].config_files);
        assert!(f.packages["gone"].candidate.is_none());
        assert_eq!(f.packages["unknown"], PkgState::default());
        assert_eq!(f.lists_age, Some(500));
        assert_eq!(
            parse(&specs, "@@flowrun-policy\n@@flowrun-stamps\n@@flowrun-now\n5\n").lists_age,
            None
        );
    }
}
