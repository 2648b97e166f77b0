//! The variables that template *files* read, for the loader's load-time
//! checks: a `template` step's `src` (Jinja2 for `.j2`, handlebars
//! otherwise) is parsed when the workflow loads, so a typo in
//! `config.toml.j2` fails `flowrun validate` with the file and line, before
//! any host is touched, as a typo in the workflow itself does.

use crate::template::{TemplateError, VarRef};
use std::path::Path;

/// Step kinds whose parameter names a template file, relative to the workflow.
pub const TEMPLATE_FILE_PARAMS: &[(&str, &str)] = &[("template", "src")];

/// A variable reference in a template file, with the line it is (first) on.
pub struct FileRef {
    pub var: VarRef,
    pub line: Option<usize>,
}

/// What loading a template file found.
pub enum Checked {
    /// The file cannot be checked now: its path is a template, or it does not
    /// exist yet (the step reports it when it runs).
    Skipped,
    Refs(Vec<FileRef>),
    /// A syntax error (with the line where the engine gives one).
    Invalid(TemplateError),
}

/// Parse the template file `src` (as written in `with`) of a step defined in `dir`.
pub fn check(dir: &Path, src: &str) -> Checked {
    if crate::template::Templates::is_template(src) {
        return Checked::Skipped;
    }
    let expanded = crate::paths::expand_home(src);
    let path = if expanded.is_absolute() {
        expanded
    } else {
        dir.join(expanded)
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Checked::Skipped;
    };
    let refs = if src.ends_with(".j2") {
        crate::jinja::references(src, &text)
    } else {
        crate::template::references(&text).map_err(|e| TemplateError {
            message: format!("{src}: {}", e.message),
        })
    };
    match refs {
        Ok(refs) => Checked::Refs(
            refs.into_iter()
                .map(|var| FileRef {
                    line: line_of(&text, &var.path[0]),
                    var,
                })
                .collect(),
        ),
        Err(e) => Checked::Invalid(e),
    }
}

/// The first line where `name` appears as a word.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.match_indices(name).any(|(i, _)| {
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(l[..i].chars().next_back()) && !ident(l[i + name.len()..].chars().next())
            })
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_of_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.j2"),
            "x\n{% for r in runners %}{{ r.name }}{% endfor %}\n{{ tagz }}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.hbs"),
            "{{#each l}}{{this}}{{/each}}\n{{host.name}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.j2"), "{% if x %}\n").unwrap();
        let Checked::Refs(r) = check(dir.path(), "a.j2") else {
            panic!()
        };
        let got: Vec<(String, Option<usize>)> = r.iter().map(|f| (f.var.path.join("."), f.line)).collect();
        assert_eq!(got, [("runners".to_owned(), Some(2)), ("tagz".to_owned(), Some(3))]);
        let Checked::Refs(r) = check(dir.path(), "b.hbs") else {
            panic!()
        };
        assert_eq!(
            r.iter().map(|f| f.var.path.join(".")).collect::<Vec<_>>(),
            ["l", "host.name"]
        );
        assert!(matches!(check(dir.path(), "c.j2"), Checked::Invalid(_)));
        assert!(matches!(check(dir.path(), "{{x}}.j2"), Checked::Skipped));
        assert!(matches!(check(dir.path(), "missing.j2"), Checked::Skipped));
    }
}
