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

use crate::diag::{suggest, Diagnostic, Diagnostics, Source};
use crate::model::{SecretDef, SecretSource};
use crate::yaml::{Key, YValue, Yaml};

const MAP_KEYS: &[&str] = &["env", "file", "command", "from", "optional"];
const SOURCE_KEYS: &[&str] = &["env", "file", "command"];

fn help() -> &'static str {
    "write `{ env: VAR }`, `{ file: PATH }`, `{ command: \"...\" }`, several of them (tried env, file, command), \
     or a list of them in the order to try; add `optional: true` when none set is fine"
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
