//! `user` and `group`: local accounts, with the shadow tools every Debian
//! host has (`useradd`, `usermod`, `userdel`, `groupadd`, `groupmod`,
//! `groupdel`). The check reads the account databases with `getent` and `id`
//! in one command; only what differs is changed.

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::quote;
use serde_json::{Map, Value};

pub struct UserKind;
pub struct GroupKind;

const STATE: ParamSpec = ParamSpec::opt(
    "state",
    ParamType::Enum(&["present", "absent"]),
    "`present` (default) or `absent`",
);

static USER_INFO: KindInfo = KindInfo {
    name: "user",
    version: 1,
    doc: "Ensure a local user account exists (with its uid, groups, shell and home) or does not",
    params: &[
        ParamSpec::req("name", ParamType::Str, "the user name"),
        ParamSpec::opt("uid", ParamType::Int, "numeric user id"),
        ParamSpec::opt("group", ParamType::Str, "primary group (must exist)"),
        ParamSpec::opt(
            "groups",
            ParamType::StrList,
            "supplementary groups: exactly these, or at least these with `append`",
        ),
        ParamSpec::opt(
            "append",
            ParamType::Bool,
            "add `groups` to the user's groups instead of setting them",
        ),
        ParamSpec::opt("shell", ParamType::Str, "login shell, e.g. /bin/bash"),
        ParamSpec::opt("home", ParamType::Str, "home directory"),
        ParamSpec::opt("comment", ParamType::Str, "the GECOS field (full name)"),
        ParamSpec::opt(
            "system",
            ParamType::Bool,
            "create a system account (ids below 1000, no home unless `create_home`)",
        ),
        ParamSpec::opt(
            "create_home",
            ParamType::Bool,
            "create the home directory with the user (default true, false for system users)",
        ),
        ParamSpec::opt(
            "remove",
            ParamType::Bool,
            "with `state: absent`: remove the home directory too",
        ),
        STATE,
    ],
    one_of: &[],
    outputs: &["name", "uid", "home"],
    secret_outputs: &[],
    journal: true,
};

static GROUP_INFO: KindInfo = KindInfo {
    name: "group",
    version: 1,
    doc: "Ensure a local group exists (with its gid) or does not",
    params: &[
        ParamSpec::req("name", ParamType::Str, "the group name"),
        ParamSpec::opt("gid", ParamType::Int, "numeric group id"),
        ParamSpec::opt("system", ParamType::Bool, "create a system group (id below 1000)"),
        STATE,
    ],
    one_of: &[],
    outputs: &["name", "gid"],
    secret_outputs: &[],
    journal: true,
};

fn account_name(p: &Params<'_>) -> Result<String, StepError> {
    let name = p.str("name")?;
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(StepError::param(
            "name",
            format!("`{name}` is not a valid account name (lowercase letters, digits, `_`, `-`)"),
        ));
    }
    Ok(name)
}

fn id_param(p: &Params<'_>, name: &str) -> Result<Option<u32>, StepError> {
    p.opt_i64(name)?
        .map(|v| u32::try_from(v).map_err(|_| StepError::param(name, format!("`{v}` is not a valid id"))))
        .transpose()
}

fn present(p: &Params<'_>) -> Result<bool, StepError> {
    Ok(p.choice("state", &["present", "absent"], "present")? == "present")
}

impl StepKind for UserKind {
    fn info(&self) -> &'static KindInfo {
        &USER_INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let system = p.bool_or("system", false)?;
        let text = |n: &str| -> Result<Option<String>, StepError> {
            match p.opt_str(n)? {
                Some(v) if v.contains([':', '\n']) => {
                    Err(StepError::param(n, format!("`{v}` contains `:` or a line break")))
                }
                v => Ok(v),
            }
        };
        let groups = p.str_list("groups")?;
        if let Some(g) = groups.iter().find(|g| g.is_empty() || g.contains([',', ':', ' '])) {
            return Err(StepError::param("groups", format!("`{g}` is not a group name")));
        }
        Ok(Box::new(UserStep {
            name: account_name(&p)?,
            present: present(&p)?,
            uid: id_param(&p, "uid")?,
            group: text("group")?,
            groups: p.has("groups").then_some(groups),
            append: p.bool_or("append", false)?,
            shell: text("shell")?,
            home: text("home")?,
            comment: text("comment")?,
            system,
            create_home: p.bool_or("create_home", !system)?,
            remove: p.bool_or("remove", false)?,
        }))
    }
}

impl StepKind for GroupKind {
    fn info(&self) -> &'static KindInfo {
        &GROUP_INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        Ok(Box::new(GroupStep {
            name: account_name(&p)?,
            present: present(&p)?,
            gid: id_param(&p, "gid")?,
            system: p.bool_or("system", false)?,
        }))
    }
}

struct UserStep {
    name: String,
    present: bool,
    uid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    append: bool,
    shell: Option<String>,
    home: Option<String>,
    comment: Option<String>,
    system: bool,
    create_home: bool,
    remove: bool,
}

/// An account as `getent passwd` and `id` show it.
#[derive(Debug, Clone, Default)]
struct Account {
    uid: u32,
    comment: String,
    home: String,
    shell: String,
    group: String,
    groups: Vec<String>,
}

impl UserStep {
    async fn read(&self, cx: &StepContext) -> Result<Option<Account>, StepError> {
        let n = quote(&self.name);
        let out = cx
            .sh(&format!(
                "getent passwd {n} || exit 0; echo @@; id -gn {n}; echo @@; id -Gn {n}"
            ))
            .await?;
        let text = out.stdout_str();
        let mut parts = text.split("@@\n");
        let pw = parts.next().unwrap_or("").trim();
        if pw.is_empty() {
            return Ok(None);
        }
        let f: Vec<&str> = pw.split(':').collect();
        let group = parts.next().unwrap_or("").trim().to_owned();
        let groups = parts
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter(|g| *g != group)
            .map(str::to_owned)
            .collect();
        Ok(Some(Account {
            uid: f.get(2).and_then(|u| u.parse().ok()).unwrap_or(u32::MAX),
            comment: f.get(4).unwrap_or(&"").to_string(),
            home: f.get(5).unwrap_or(&"").to_string(),
            shell: f.get(6).unwrap_or(&"").to_string(),
            group,
            groups,
        }))
    }

    /// `usermod` options for what differs, with a phrase each.
    fn changes(&self, a: &Account) -> Vec<(String, String)> {
        let mut c = Vec::new();
        if let Some(uid) = self.uid.filter(|u| *u != a.uid) {
            c.push((format!("-u {uid}"), format!("uid {} -> {uid}", a.uid)));
        }
        if let Some(g) = self.group.as_ref().filter(|g| **g != a.group) {
            c.push((format!("-g {}", quote(g)), format!("group {} -> {g}", a.group)));
        }
        if let Some(want) = &self.groups {
            let missing: Vec<&String> = want.iter().filter(|g| !a.groups.contains(g)).collect();
            let extra = a.groups.iter().any(|g| !want.contains(g));
            if self.append && !missing.is_empty() {
                let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                c.push((
                    format!("-a -G {}", quote(&list.join(","))),
                    format!("add to {}", list.join(", ")),
                ));
            } else if !self.append && (!missing.is_empty() || extra) {
                c.push((
                    format!("-G {}", quote(&want.join(","))),
                    format!("groups {} -> {}", a.groups.join(","), want.join(",")),
                ));
            }
        }
        if let Some(s) = self.shell.as_ref().filter(|s| **s != a.shell) {
            c.push((format!("-s {}", quote(s)), format!("shell {} -> {s}", a.shell)));
        }
        if let Some(h) = self.home.as_ref().filter(|h| **h != a.home) {
            c.push((format!("-d {}", quote(h)), format!("home {} -> {h}", a.home)));
        }
        if let Some(cm) = self.comment.as_ref().filter(|cm| **cm != a.comment) {
            c.push((format!("-c {}", quote(cm)), "comment".to_owned()));
        }
        c
    }

    fn add_command(&self) -> String {
        let mut cmd = String::from("useradd");
        if let Some(u) = self.uid {
            cmd.push_str(&format!(" -u {u}"));
        }
        if let Some(g) = &self.group {
            cmd.push_str(&format!(" -g {}", quote(g)));
        }
        if let Some(gs) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            cmd.push_str(&format!(" -G {}", quote(&gs.join(","))));
        }
        if let Some(s) = &self.shell {
            cmd.push_str(&format!(" -s {}", quote(s)));
        }
        if let Some(h) = &self.home {
            cmd.push_str(&format!(" -d {}", quote(h)));
        }
        if let Some(c) = &self.comment {
            cmd.push_str(&format!(" -c {}", quote(c)));
        }
        if self.system {
            cmd.push_str(" -r");
        }
        cmd.push_str(if self.create_home { " -m" } else { " -M" });
        cmd.push_str(&format!(" -- {}", quote(&self.name)));
        cmd
    }

    fn outputs(&self, a: Option<&Account>) -> Outputs {
        let mut o = Outputs::new();
        o.insert("name".into(), Value::from(self.name.as_str()));
        o.insert("uid".into(), a.map_or(Value::Null, |a| Value::from(a.uid)));
        o.insert("home".into(), a.map_or(Value::Null, |a| Value::from(a.home.as_str())));
        o
    }

    fn plan(&self, a: Option<&Account>) -> Option<(String, String)> {
        let n = quote(&self.name);
        match (a, self.present) {
            (None, false) => None,
            (Some(_), false) => Some((
                format!("userdel{} -- {n}", if self.remove { " -r" } else { "" }),
                format!("remove user `{}`", self.name),
            )),
            (None, true) => Some((self.add_command(), format!("create user `{}`", self.name))),
            (Some(a), true) => {
                let c = self.changes(a);
                (!c.is_empty()).then(|| {
                    let opts: Vec<&str> = c.iter().map(|(o, _)| o.as_str()).collect();
                    let what: Vec<&str> = c.iter().map(|(_, w)| w.as_str()).collect();
                    (
                        format!("usermod {} -- {n}", opts.join(" ")),
                        format!("user `{}`: {}", self.name, what.join(", ")),
                    )
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl Step for UserStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let a = self.read(cx).await?;
        match self.plan(a.as_ref()) {
            None => Ok(Check::InSync(self.outputs(a.as_ref()))),
            Some((_, summary)) => Ok(Check::Drift(Pending::new(summary))),
        }
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let a = self.read(cx).await?;
        let Some((cmd, _)) = self.plan(a.as_ref()) else {
            return Ok(Applied {
                changed: false,
                outputs: self.outputs(a.as_ref()),
                message: None,
            });
        };
        cx.sh(&cmd).await?;
        let after = self.read(cx).await?;
        Ok(Applied::changed(self.outputs(after.as_ref())))
    }
}

struct GroupStep {
    name: String,
    present: bool,
    gid: Option<u32>,
    system: bool,
}

impl GroupStep {
    async fn read(&self, cx: &StepContext) -> Result<Option<u32>, StepError> {
        let out = cx.sh(&format!("getent group {} || exit 0", quote(&self.name))).await?;
        let line = out.stdout_str();
        Ok(line.trim().split(':').nth(2).and_then(|g| g.parse().ok()))
    }

    fn plan(&self, gid: Option<u32>) -> Option<(String, String)> {
        let n = quote(&self.name);
        match (gid, self.present) {
            (None, false) => None,
            (Some(_), false) => Some((format!("groupdel -- {n}"), format!("remove group `{}`", self.name))),
            (None, true) => Some((
                format!(
                    "groupadd{}{} -- {n}",
                    self.gid.map(|g| format!(" -g {g}")).unwrap_or_default(),
                    if self.system { " -r" } else { "" }
                ),
                format!("create group `{}`", self.name),
            )),
            (Some(have), true) => self.gid.filter(|g| *g != have).map(|g| {
                (
                    format!("groupmod -g {g} -- {n}"),
                    format!("group `{}`: gid {have} -> {g}", self.name),
                )
            }),
        }
    }

    fn outputs(&self, gid: Option<u32>) -> Outputs {
        let mut o = Outputs::new();
        o.insert("name".into(), Value::from(self.name.as_str()));
        o.insert("gid".into(), gid.map_or(Value::Null, Value::from));
        o
    }
}

#[async_trait::async_trait]
impl Step for GroupStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let gid = self.read(cx).await?;
        match self.plan(gid) {
            None => Ok(Check::InSync(self.outputs(gid))),
            Some((_, summary)) => Ok(Check::Drift(Pending::new(summary))),
        }
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let gid = self.read(cx).await?;
        let Some((cmd, _)) = self.plan(gid) else {
            return Ok(Applied {
                changed: false,
                outputs: self.outputs(gid),
                message: None,
            });
        };
        cx.sh(&cmd).await?;
        let after = self.read(cx).await?;
        Ok(Applied::changed(self.outputs(after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;
    use serde_json::json;

    #[test]
    fn names_and_ids_are_checked() {
        let b = |k: &dyn StepKind, v: Value| build(k, v, json!({}), std::path::Path::new("."));
        assert!(b(&UserKind, json!({"name": "Bad Name"})).is_err());
        assert!(b(&UserKind, json!({"name": "ok", "uid": -1})).is_err());
        assert!(b(&UserKind, json!({"name": "ok", "groups": ["a,b"]})).is_err());
        assert!(b(&UserKind, json!({"name": "ok", "shell": "a:b"})).is_err());
        b(
            &UserKind,
            json!({"name": "gitlab-runner", "system": true, "groups": ["docker"]}),
        )
        .unwrap();
        b(&GroupKind, json!({"name": "docker", "gid": 999})).unwrap();
    }

    #[test]
    fn user_changes() {
        let s = UserStep {
            name: "ci".into(),
            present: true,
            uid: Some(1500),
            group: None,
            groups: Some(vec!["docker".into(), "adm".into()]),
            append: false,
            shell: Some("/bin/bash".into()),
            home: None,
            comment: None,
            system: false,
            create_home: true,
            remove: false,
        };
        let a = Account {
            uid: 1500,
            shell: "/bin/sh".into(),
            group: "ci".into(),
            groups: vec!["docker".into(), "users".into()],
            ..Account::default()
        };
        let (cmd, what) = s.plan(Some(&a)).unwrap();
        assert_eq!(cmd, "usermod -G docker,adm -s /bin/bash -- ci");
        assert_eq!(
            what,
            "user `ci`: groups docker,users -> docker,adm, shell /bin/sh -> /bin/bash"
        );
        let appending = UserStep { append: true, ..s };
        let (cmd, _) = appending.plan(Some(&a)).unwrap();
        assert_eq!(cmd, "usermod -a -G adm -s /bin/bash -- ci");
        assert_eq!(
            appending.plan(None).unwrap().0,
            "useradd -u 1500 -G docker,adm -s /bin/bash -m -- ci"
        );
    }
}
