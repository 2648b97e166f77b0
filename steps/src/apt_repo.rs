//! `apt_repo`: a third-party apt repository the modern way — its signing key
//! in `/etc/apt/keyrings/NAME.asc` (or `.gpg` for a binary key) and a deb822
//! source `/etc/apt/sources.list.d/NAME.sources` whose `Signed-By:` names that
//! key, so the key is trusted for this repository only.
//!
//! In state by content: one remote command hashes the files (key, source, and
//! a legacy `NAME.list`, which is removed — two entries for one repository
//! with different `Signed-By` make `apt-get update` fail). The output
//! `changed_sources` tells a later `apt` step to refresh its lists
//! (`update_cache: "{{steps.ID.outputs.changed_sources}}"`).

mod key;

use crate::diff::file_diff;
use crate::digest::sha256_hex;
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::transport::{quote, FileAttrs};
use key::Key;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use tokio::sync::OnceCell;

pub struct AptRepoKind;

const KEYRINGS: &str = "/etc/apt/keyrings";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

static INFO: KindInfo = KindInfo {
    name: "apt_repo",
    version: 1,
    doc: "Ensure an apt repository: its signing key in /etc/apt/keyrings and a deb822 source that is signed by it",
    params: &[
        ParamSpec::req(
            "name",
            ParamType::Str,
            "the repository's file name: NAME.sources and NAME.asc/.gpg (letters, digits, `.`, `_`, `-`)",
        ),
        ParamSpec::opt(
            "key",
            ParamType::Str,
            "the signing key, ASCII-armored (`-----BEGIN PGP PUBLIC KEY BLOCK-----`)",
        ),
        ParamSpec::opt(
            "key_url",
            ParamType::Str,
            "where flowrun fetches the signing key (armored or binary): https://, or file:// on this machine",
        ),
        ParamSpec::opt("uris", ParamType::StrList, "repository URIs"),
        ParamSpec::opt(
            "suites",
            ParamType::StrList,
            "suites, e.g. [bookworm]; a flat repository's path ends with `/` (e.g. `./`) and has no components",
        ),
        ParamSpec::opt("components", ParamType::StrList, "components, e.g. [main] or [stable]"),
        ParamSpec::opt(
            "architectures",
            ParamType::StrList,
            "only these architectures, e.g. [amd64]",
        ),
        ParamSpec::opt("types", ParamType::StrList, "`deb` (default) and/or `deb-src`"),
        ParamSpec::opt(
            "state",
            ParamType::Enum(&["present", "absent"]),
            "`present` (default) or `absent` (source and key removed)",
        ),
    ],
    one_of: &[],
    outputs: &["changed_sources", "sources_file", "key_file"],
    secret_outputs: &[],
    journal: true,
};

impl StepKind for AptRepoKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let name = p.str("name")?;
        if name.is_empty()
            || name.starts_with('.')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(StepError::param(
                "name",
                format!("`{name}` is not a valid apt source name (letters, digits, `.`, `_`, `-`)"),
            ));
        }
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let source = match (p.opt_str("key")?, p.opt_str("key_url")?) {
            _ if !present => KeySource::None,
            (Some(k), None) => KeySource::Inline(key::classify(k.into_bytes(), "`key`").and_then(|k| {
                if k.ext == "asc" {
                    Ok(k)
                } else {
                    Err(StepError::param(
                        "key",
                        "must be ASCII-armored; give a binary key with `key_url`",
                    ))
                }
            })?),
            (None, Some(url)) => KeySource::Url(url),
            (Some(_), Some(_)) => return Err(StepError::failed("give `key` or `key_url`, not both")),
            (None, None) => {
                return Err(StepError::failed(
                    "a repository needs its signing key: give `key` or `key_url`",
                ))
            }
        };
        let word_list = |n: &str, required: bool| -> Result<Vec<String>, StepError> {
            let v = p.str_list(n)?;
            if required && present && v.is_empty() {
                return Err(StepError::param(n, "is required"));
            }
            if let Some(bad) = v.iter().find(|w| w.is_empty() || w.contains(char::is_whitespace)) {
                return Err(StepError::param(n, format!("`{bad}` is not a single word")));
            }
            Ok(v)
        };
        let suites = word_list("suites", true)?;
        let components = word_list("components", false)?;
        let flat = suites.iter().any(|s| s.ends_with('/'));
        if present && flat && !components.is_empty() {
            return Err(StepError::param(
                "components",
                "a flat repository (a suite ending in `/`) has no components",
            ));
        }
        if present && !flat && components.is_empty() {
            return Err(StepError::param(
                "components",
                "is required (unless the suite is a path ending in `/`)",
            ));
        }
        let mut types = word_list("types", false)?;
        if types.is_empty() {
            types.push("deb".into());
        }
        if let Some(t) = types.iter().find(|t| *t != "deb" && *t != "deb-src") {
            return Err(StepError::param("types", format!("`{t}` is not `deb` or `deb-src`")));
        }
        Ok(Box::new(AptRepoStep {
            name,
            present,
            source,
            key: OnceCell::new(),
            uris: word_list("uris", true)?,
            suites,
            components,
            architectures: word_list("architectures", false)?,
            types,
        }))
    }
}

enum KeySource {
    None,
    Inline(Key),
    Url(String),
}

struct AptRepoStep {
    name: String,
    present: bool,
    source: KeySource,
    /// The key, fetched once per instance (check and apply share it).
    key: OnceCell<Key>,
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    architectures: Vec<String>,
    types: Vec<String>,
}

/// One file's state on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    sha256: String,
    mode: String,
    owner: String,
    group: String,
}

impl AptRepoStep {
    fn key_path(&self, ext: &str) -> String {
        format!("{KEYRINGS}/{}.{ext}", self.name)
    }

    fn sources_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.sources", self.name)
    }

    fn legacy_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.list", self.name)
    }

    async fn key(&self) -> Result<Option<&Key>, StepError> {
        match &self.source {
            KeySource::None => Ok(None),
            KeySource::Inline(k) => Ok(Some(k)),
            KeySource::Url(url) => self.key.get_or_try_init(|| key::fetch(url)).await.map(Some),
        }
    }

    fn render(&self, key_path: &str) -> String {
        let mut s = format!("# managed by flowrun (apt_repo `{}`)\n", self.name);
        let _ = writeln!(s, "Types: {}", self.types.join(" "));
        let _ = writeln!(s, "URIs: {}", self.uris.join(" "));
        let _ = writeln!(s, "Suites: {}", self.suites.join(" "));
        if !self.components.is_empty() {
            let _ = writeln!(s, "Components: {}", self.components.join(" "));
        }
        if !self.architectures.is_empty() {
            let _ = writeln!(s, "Architectures: {}", self.architectures.join(" "));
        }
        let _ = writeln!(s, "Signed-By: {key_path}");
        s
    }

    /// Hash and attributes of every file this step manages, in one command.
    async fn probe(&self, cx: &StepContext) -> Result<Vec<(String, Option<Seen>)>, StepError> {
        let paths = [
            self.key_path("asc"),
            self.key_path("gpg"),
            self.sources_path(),
            self.legacy_path(),
        ];
        let list: Vec<String> = paths.iter().map(|p| quote(p)).collect();
        let out = cx
            .sh(&format!(
                "for f in {}; do if [ -e \"$f\" ]; then printf '%s|%s|' \"$f\" \"$(stat -L -c '%a|%U|%G' -- \"$f\")\"; \
                 sha256sum < \"$f\" | cut -c1-64; else printf '%s|absent\\n' \"$f\"; fi; done",
                list.join(" ")
            ))
            .await?;
        let text = out.stdout_str();
        let mut seen = Vec::new();
        for path in paths {
            let line = text
                .lines()
                .find(|l| l.strip_prefix(path.as_str()).is_some_and(|r| r.starts_with('|')))
                .unwrap_or("");
            let f: Vec<&str> = line.split('|').collect();
            let state = match f[..] {
                [_, mode, owner, group, sha] => Some(Seen {
                    sha256: sha.trim().to_owned(),
                    mode: mode.to_owned(),
                    owner: owner.to_owned(),
                    group: group.to_owned(),
                }),
                _ => None,
            };
            seen.push((path, state));
        }
        Ok(seen)
    }

    /// What each managed file should be: `Some(content)` or absent.
    async fn desired(&self) -> Result<Vec<(String, Option<Vec<u8>>)>, StepError> {
        let mut want: Vec<(String, Option<Vec<u8>>)> = vec![
            (self.key_path("asc"), None),
            (self.key_path("gpg"), None),
            (self.sources_path(), None),
            (self.legacy_path(), None),
        ];
        if let Some(k) = self.key().await? {
            let key_path = self.key_path(k.ext);
            let sources = self.render(&key_path).into_bytes();
            for (path, content) in &mut want {
                if *path == key_path {
                    *content = Some(k.bytes.clone());
                } else if *path == self.sources_path() {
                    *content = Some(sources.clone());
                }
            }
        }
        Ok(want)
    }

    /// The files to write or remove: (path, content or `None` to remove, what to say).
    async fn plan(&self, cx: &StepContext) -> Result<Vec<(String, Option<Vec<u8>>, String)>, StepError> {
        let seen = self.probe(cx).await?;
        let mut changes = Vec::new();
        for ((path, want), (_, have)) in self.desired().await?.into_iter().zip(seen) {
            match (want, have) {
                (None, Some(_)) => changes.push((path.clone(), None, format!("remove `{path}`"))),
                (None, None) => {}
                (Some(c), None) => {
                    let what = format!("create `{path}`");
                    changes.push((path, Some(c), what));
                }
                (Some(c), Some(h)) => {
                    if h.sha256 != sha256_hex(&c) {
                        let what = format!("update `{path}`");
                        changes.push((path, Some(c), what));
                    } else if (h.mode.as_str(), h.owner.as_str(), h.group.as_str()) != ("644", "root", "root") {
                        let what = format!("`{path}`: mode 0644, owner root:root");
                        changes.push((path, Some(c), what));
                    }
                }
            }
        }
        Ok(changes)
    }

    fn outputs(&self, changed: bool, key_ext: Option<&str>) -> Outputs {
        let mut o = Outputs::new();
        o.insert("changed_sources".into(), Value::Bool(changed));
        o.insert(
            "sources_file".into(),
            if self.present {
                Value::from(self.sources_path())
            } else {
                Value::Null
            },
        );
        o.insert(
            "key_file".into(),
            key_ext.map_or(Value::Null, |e| Value::from(self.key_path(e))),
        );
        o
    }

    async fn key_ext(&self) -> Result<Option<&'static str>, StepError> {
        Ok(self.key().await?.map(|k| k.ext))
    }
}

#[async_trait::async_trait]
impl Step for AptRepoStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let changes = self.plan(cx).await?;
        let ext = self.key_ext().await?;
        if changes.is_empty() {
            return Ok(Check::InSync(self.outputs(false, ext)));
        }
        let summary = changes
            .iter()
            .map(|(_, _, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let mut pending = Pending::new(summary);
        if cx.mode.diff {
            let path = self.sources_path();
            if let Some((_, content, _)) = changes.iter().find(|(p, _, _)| *p == path) {
                let old = cx.read_file(&path).await?;
                let new = content.clone().unwrap_or_default();
                pending = pending.with_diff(file_diff(&path, old.as_deref(), &new, &cx.masker));
            }
        }
        pending.outputs = self.outputs(true, ext);
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        let changes = self.plan(cx).await?;
        let attrs = FileAttrs {
            mode: Some(0o644),
            owner: Some("root".into()),
            group: Some("root".into()),
        };
        if changes.iter().any(|(p, c, _)| c.is_some() && p.starts_with(KEYRINGS)) {
            cx.sh_quick(&format!("[ -d {KEYRINGS} ] || install -d -m 0755 {KEYRINGS}"))
                .await?;
        }
        // Keys first: a source never names a key that is not there yet.
        let (keys, others): (Vec<_>, Vec<_>) = changes.iter().partition(|(p, _, _)| p.starts_with(KEYRINGS));
        for (path, content, _) in keys.into_iter().chain(others) {
            match content {
                Some(c) => cx.write_file(path, c, &attrs).await?,
                None => {
                    cx.sh_quick(&format!("rm -f -- {}", quote(path))).await?;
                }
            }
        }
        let ext = self.key_ext().await?;
        Ok(Applied::changed(self.outputs(!changes.is_empty(), ext)))
    }

    fn fingerprint_extra(&self) -> Option<String> {
        // A key fetched from a URL may change behind the same parameters; `--verify` re-checks it.
        match &self.source {
            KeySource::Inline(k) => Some(sha256_hex(&k.bytes)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;
    use serde_json::json;

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&AptRepoKind, params, json!({}), std::path::Path::new("."))
    }

    const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n";

    #[test]
    fn parameters_are_checked() {
        let ok = json!({"name": "docker", "key": KEY, "uris": ["https://x/debian"], "suites": ["bookworm"], "components": ["stable"]});
        step(ok.clone()).unwrap();
        let with = |k: &str, v: Value| {
            let mut p = ok.clone();
            p[k] = v;
            step(p).err().map(|e| e.message).unwrap_or_default()
        };
        assert!(with("name", json!("../x")).contains("not a valid apt source name"));
        assert!(with("key", json!("not a key")).contains("not an OpenPGP public key"));
        assert!(with("components", json!([])).contains("`components`: is required"));
        assert!(with("suites", json!(["./"])).contains("flat repository"));
        assert!(with("uris", json!(["a b"])).contains("not a single word"));
        assert!(with("types", json!(["rpm"])).contains("`rpm` is not `deb`"));
        let e = step(json!({"name": "x", "uris": ["u"], "suites": ["s/"]}))
            .err()
            .unwrap();
        assert!(e.message.contains("needs its signing key"), "{e}");
        step(json!({"name": "x", "state": "absent"})).unwrap();
        step(json!({"name": "flat", "key": KEY, "uris": ["file:/srv/repo"], "suites": ["./"]})).unwrap();
    }
}
