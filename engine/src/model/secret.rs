//! Secret sources with fallbacks: how a workflow says where a secret may
//! come from, and how each place is read. A secret lists one or more
//! sources; they are tried in order and the first that is *set* wins:
//!
//! - in a mapping, `env`, then `file`, then `command` (each a string or a
//!   list of them): `{ env: GITLAB_TOKEN, file: ~/.config/flowrun/gitlab-token }`;
//! - in a list (or a mapping's `from:`), the list's order:
//!   `[ {env: GITLAB_READ_TOKEN}, {env: GITLAB_TOKEN}, {file: ~/.config/flowrun/gitlab-read-token} ]`.
//!
//! Set means: an environment variable defined and not empty; a file that
//! exists and is not empty (its path may use `~` and `$VAR`; an unset
//! variable skips the source); a command that exits 0 and prints something.
//! `optional: true` makes "none is set" an empty value instead of an error,
//! whose message names every source tried and why it was not used.

use crate::diag::Pos;
use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::secrets::Masker;
use crate::yaml::{Key, YValue, Yaml};
use std::path::{Path, PathBuf};

/// One place a secret's value may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    /// A path as written: `~` and `$VAR` are expanded when the secret is resolved.
    File(String),
    Command(String),
}

/// A secret: its sources in the order they are tried (the first that is
/// set wins), and whether none being set is fine (the value is then empty).
#[derive(Debug, Clone)]
pub struct SecretDef {
    pub name: String,
    pub sources: Vec<SecretSource>,
    pub optional: bool,
    pub file: PathBuf,
    pub pos: Pos,
}

const MAP_KEYS: &[&str] = &["env", "file", "command", "from", "optional"];
const SOURCE_KEYS: &[&str] = &["env", "file", "command"];

fn help() -> &'static str {
    "write `{ env: VAR }`, `{ file: PATH }`, `{ command: \"...\" }`, several of them (tried env, file, command), \
     or a list of them in the order to try; add `optional: true` when none set is fine"
}

/// Resolve every secret a workflow declares, registering each value with the
/// masker. A required secret that none of its sources sets is an error that
/// points at the declaration and names every source tried.
pub fn resolve(
    defs: &indexmap::IndexMap<String, SecretDef>,
    masker: &Masker,
) -> Result<serde_json::Map<String, serde_json::Value>, crate::diag::Diagnostics> {
    use crate::diag::{Diagnostic, Diagnostics, Source};
    let mut out = serde_json::Map::new();
    let mut errs = Diagnostics::default();
    let located = |file: &Path, pos: crate::diag::Pos, m: String| match Source::read(file) {
        Ok(src) => Diagnostic::at(&src, pos, m),
        Err(_) => Diagnostic::in_file(file, m),
    };
    for (name, def) in defs {
        let mut tried = Vec::new();
        let mut value = None;
        for source in &def.sources {
            match source.read() {
                Found::Value(v) => {
                    value = Some(v);
                    break;
                }
                Found::NotSet(why) => tried.push(format!("{} ({why})", source.describe())),
            }
        }
        match value {
            Some(v) if v.len() < 3 => errs.push(located(
                &def.file,
                def.pos,
                format!("secret `{name}` is shorter than 3 characters: too short to mask in output"),
            )),
            Some(v) => {
                masker.add(&v);
                out.insert(name.clone(), serde_json::Value::String(v));
            }
            // Optional and not set: empty, nothing to mask; the workflow decides.
            None if def.optional => {
                out.insert(name.clone(), serde_json::Value::String(String::new()));
            }
            None => errs.push(
                located(
                    &def.file,
                    def.pos,
                    format!("secret `{name}` is not set: tried {}", tried.join(", ")),
                )
                .help("set one of them, or declare the secret `optional: true` if an empty value is fine"),
            ),
        }
    }
    errs.into_result(out)
}

/// Parse a secret's declaration (the value under `secrets.NAME`).
pub fn parse_def(src: &Source, k: &Key, v: &Yaml, errs: &mut Diagnostics) -> Option<SecretDef> {
    let name = &k.name;
    let before = errs.0.len();
    let mut sources = Vec::new();
    let mut optional = false;
    match &v.value {
        YValue::Map(entries) => {
            let mut from = None;
            let mut direct = Vec::new();
            for (sk, sv) in entries {
                match sk.name.as_str() {
                    "optional" => match sv.value {
                        YValue::Bool(b) => optional = b,
                        _ => errs.push(Diagnostic::at(
                            src,
                            sv.pos,
                            format!("`optional` of secret `{name}` must be a boolean"),
                        )),
                    },
                    "from" => from = Some((sk, sv)),
                    "env" | "file" | "command" => direct.push((sk, sv)),
                    _ => errs.push(suggest(
                        Diagnostic::at(src, sk.pos, format!("unknown key `{}` in secret `{name}`", sk.name)),
                        &sk.name,
                        MAP_KEYS,
                        "keys",
                    )),
                }
            }
            // The documented order, whatever order the keys were written in.
            for kind in SOURCE_KEYS {
                for (sk, sv) in direct.iter().filter(|(sk, _)| sk.name == *kind) {
                    for (text, _) in texts(src, name, sk, sv, errs) {
                        sources.push(make(kind, text));
                    }
                }
            }
            if let Some((fk, fv)) = from {
                if !direct.is_empty() {
                    errs.push(Diagnostic::at(
                        src,
                        fk.pos,
                        format!("secret `{name}`: `from` lists the sources; it does not mix with `env`, `file` or `command`"),
                    ));
                }
                sources.extend(list(src, name, fv, errs));
            }
        }
        YValue::Seq(_) => sources.extend(list(src, name, v, errs)),
        _ => {}
    }
    if sources.is_empty() && errs.0.len() == before {
        errs.push(Diagnostic::at(src, v.pos, format!("secret `{name}` needs a source")).help(help()));
    }
    if errs.0.len() > before {
        return None;
    }
    Some(SecretDef {
        name: name.clone(),
        sources,
        optional,
        file: src.path.clone(),
        pos: k.pos,
    })
}

fn make(kind: &str, text: String) -> SecretSource {
    match kind {
        "env" => SecretSource::Env(text),
        "file" => SecretSource::File(text),
        _ => SecretSource::Command(text),
    }
}

/// A source's value: a string, or a list of strings.
fn texts(src: &Source, name: &str, k: &Key, v: &Yaml, errs: &mut Diagnostics) -> Vec<(String, Yaml)> {
    let one = |item: &Yaml, errs: &mut Diagnostics| match item.value {
        YValue::Str(ref s) if !s.trim().is_empty() => Some((s.clone(), item.clone())),
        _ => {
            errs.push(Diagnostic::at(
                src,
                item.pos,
                format!(
                    "the `{}` of secret `{name}` must be a non-empty string (or a list of them)",
                    k.name
                ),
            ));
            None
        }
    };
    match &v.value {
        YValue::Seq(items) if !items.is_empty() => items.iter().filter_map(|i| one(i, errs)).collect(),
        _ => one(v, errs).into_iter().collect(),
    }
}

/// A list of single-source mappings, in the order to try them.
fn list(src: &Source, name: &str, v: &Yaml, errs: &mut Diagnostics) -> Vec<SecretSource> {
    let Some(items) = v.as_seq().filter(|i| !i.is_empty()) else {
        errs.push(
            Diagnostic::at(
                src,
                v.pos,
                format!("the sources of secret `{name}` must be a non-empty list"),
            )
            .help(help()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_map() {
            Some([(sk, sv)]) if SOURCE_KEYS.contains(&sk.name.as_str()) => match &sv.value {
                YValue::Str(s) if !s.trim().is_empty() => out.push(make(&sk.name, s.clone())),
                _ => errs.push(Diagnostic::at(
                    src,
                    sv.pos,
                    format!("the `{}` of secret `{name}` must be a non-empty string", sk.name),
                )),
            },
            Some([(sk, _)]) => errs.push(suggest(
                Diagnostic::at(src, sk.pos, format!("unknown source `{}` in secret `{name}`", sk.name)),
                &sk.name,
                SOURCE_KEYS,
                "sources",
            )),
            _ => errs.push(
                Diagnostic::at(
                    src,
                    item.pos,
                    format!("each source of secret `{name}` is one of `env`, `file` or `command`"),
                )
                .help(help()),
            ),
        }
    }
    out
}

/// What reading one source found.
pub enum Found {
    Value(String),
    /// Not set; why (for the error that lists every source tried).
    NotSet(String),
}

impl SecretSource {
    /// How the source is named in messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(v) => format!("environment variable `{v}`"),
            Self::File(p) => format!("file `{p}`"),
            Self::Command(c) => format!("command `{c}`"),
        }
    }

    pub fn read(&self) -> Found {
        let value = |s: String| {
            let v = s.trim_end_matches(['\n', '\r']).to_owned();
            if v.is_empty() {
                None
            } else {
                Some(v)
            }
        };
        match self {
            Self::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Found::Value(v),
                Ok(_) => Found::NotSet("empty".into()),
                Err(std::env::VarError::NotPresent) => Found::NotSet("not set".into()),
                Err(std::env::VarError::NotUnicode(_)) => Found::NotSet("not UTF-8".into()),
            },
            Self::File(raw) => {
                let path = match expand_vars(raw) {
                    Ok(p) => crate::paths::expand_home(&p),
                    Err(var) => return Found::NotSet(format!("`${var}` is not set")),
                };
                match std::fs::read_to_string(&path) {
                    Ok(s) => value(s).map_or_else(|| Found::NotSet("empty".into()), Found::Value),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::NotSet("does not exist".into()),
                    Err(e) => {
                        tracing::warn!("secret file `{}` cannot be read: {e}", path.display());
                        Found::NotSet(format!("cannot be read: {e}"))
                    }
                }
            }
            Self::Command(cmd) => match std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .output()
            {
                Ok(o) if o.status.success() => value(String::from_utf8_lossy(&o.stdout).into_owned())
                    .map_or_else(|| Found::NotSet("printed nothing".into()), Found::Value),
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    let first = err.lines().next().unwrap_or_default().trim();
                    let status = o
                        .status
                        .code()
                        .map_or_else(|| "a signal".into(), |c| format!("status {c}"));
                    Found::NotSet(if first.is_empty() {
                        format!("exited with {status}")
                    } else {
                        format!("exited with {status}: {first}")
                    })
                }
                Err(e) => Found::NotSet(format!("cannot run: {e}")),
            },
        }
    }
}

/// `$VAR` and `${VAR}` replaced by their values; `Err(VAR)` when one is unset or empty.
pub fn expand_vars(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => out.push_str(&v),
                _ => return Err(name.to_owned()),
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(sources: Vec<SecretSource>, optional: bool) -> SecretDef {
        SecretDef {
            name: "t".into(),
            sources,
            optional,
            file: "wf.yml".into(),
            pos: crate::diag::Pos::new(1, 1),
        }
    }

    fn one(d: SecretDef, m: &Masker) -> Result<String, String> {
        resolve(&[("t".to_owned(), d)].into_iter().collect(), m)
            .map(|v| v["t"].as_str().unwrap().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_first_source_that_is_set_wins() {
        use SecretSource::{Command, Env, File};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let m = Masker::default();
        let unset = Env("FLOWRUN_TEST_SURELY_UNSET".into());
        let file = |p: &std::path::Path| File(p.display().to_string());
        let got = one(
            def(
                vec![unset.clone(), file(&empty), file(&f), Command("echo nope".into())],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "from-file");
        assert_eq!(m.mask("x from-file"), "x ****");
        let got = one(
            def(
                vec![unset.clone(), Command("false".into()), Command("printf s3cret".into())],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "s3cret");
        // `$VAR` in a path: an unset variable skips the source.
        std::env::set_var("FLOWRUN_TEST_TOKEN_DIR", dir.path());
        let got = one(
            def(
                vec![
                    File("$FLOWRUN_TEST_UNSET_DIR/token".into()),
                    File("${FLOWRUN_TEST_TOKEN_DIR}/token".into()),
                ],
                false,
            ),
            &m,
        );
        assert_eq!(got.unwrap(), "from-file");
    }

    #[test]
    fn a_missing_required_secret_names_every_source_tried() {
        use SecretSource::{Command, Env, File};
        let m = Masker::default();
        let e = one(
            def(
                vec![
                    Env("FLOWRUN_TEST_SURELY_UNSET".into()),
                    File("/nonexistent/flowrun/token".into()),
                    File("$FLOWRUN_TEST_UNSET_FILE".into()),
                    Command("echo oops >&2; exit 4".into()),
                ],
                false,
            ),
            &m,
        )
        .unwrap_err();
        assert!(
            e.contains("secret `t` is not set: tried environment variable `FLOWRUN_TEST_SURELY_UNSET` (not set), file `/nonexistent/flowrun/token` (does not exist), file `$FLOWRUN_TEST_UNSET_FILE` (`$FLOWRUN_TEST_UNSET_FILE` is not set), command `echo oops >&2; exit 4` (exited with status 4: oops)"),
            "{e}"
        );
        assert!(e.contains("optional: true"), "{e}");
        // Optional: empty, nothing to mask.
        assert_eq!(one(def(vec![Command("printf ''".into())], true), &m).unwrap(), "");
        assert!(m.is_empty());
        assert!(one(def(vec![Command("printf ab".into())], false), &m)
            .unwrap_err()
            .contains("shorter than 3 characters"));
    }

    #[test]
    fn declarations_in_every_form() {
        use SecretSource::{Command, Env, File};
        let parse = |text: &str| {
            let src = std::sync::Arc::new(crate::diag::Source::new("wf.yml".into(), text.to_owned()));
            let root = crate::yaml::parse(&src).unwrap();
            let (k, v) = &root.as_map().unwrap()[0];
            let mut errs = crate::diag::Diagnostics::default();
            parse_def(&src, k, v, &mut errs).ok_or_else(|| errs.to_string())
        };
        let d = parse("t: { file: ~/t, env: [A, B], command: pass t, optional: true }\n").unwrap();
        assert_eq!(
            d.sources,
            [
                Env("A".into()),
                Env("B".into()),
                File("~/t".into()),
                Command("pass t".into())
            ]
        );
        assert!(d.optional);
        let d = parse("t:\n  - file: /f\n  - env: A\n").unwrap();
        assert_eq!(d.sources, [File("/f".into()), Env("A".into())]);
        assert!(!d.optional);
        let d = parse("t: { from: [ {env: B}, {file: /g} ], optional: true }\n").unwrap();
        assert_eq!(d.sources, [Env("B".into()), File("/g".into())]);
        assert!(parse("t: { optional: true }\n").unwrap_err().contains("wf.yml:1:4"));
        assert!(parse("t: { envv: A }\n").unwrap_err().contains("did you mean `env`"));
        assert!(parse("t: [ {env: A, file: B} ]\n").unwrap_err().contains("each source"));
        assert!(parse("t: { from: [ {env: A} ], env: B }\n")
            .unwrap_err()
            .contains("does not mix"));
        assert!(parse("t: { env: \"\" }\n").unwrap_err().contains("non-empty"));
    }
}
