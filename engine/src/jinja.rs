//! Jinja2 templates (`.j2` files), so that an Ansible role's templates render
//! unchanged with the same variables handlebars templates see. minijinja (by
//! Jinja2's author) does the rendering, set up as Ansible's `template`
//! module sets Jinja2 up: undefined variables are errors (but `is defined`
//! and `default` work), `trim_blocks` on, the file's final newline kept, no
//! HTML escaping. Ansible's common filters that Jinja2 lacks are added in
//! [`filters`]. Errors name the template file and line, and for an
//! undefined value the variable. [`references`] lists a template's free
//! variables for the loader's checks.

mod filters;

use crate::template::{TemplateError, VarRef};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// Filters and tests flowrun adds to minijinja's built-ins (Ansible's).
pub use filters::{ANSIBLE_FILTERS, ANSIBLE_TESTS};

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Values are written as they are: a config file is not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        if let Ok(syntax) = SyntaxConfig::builder()
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        filters::register(&mut env);
        env
    })
}

/// Render `text` (a template file named `name` in errors) with `vars`.
pub fn render(name: &str, text: &str, vars: &Value) -> Result<String, TemplateError> {
    let env = env();
    let tpl = env
        .template_from_named_str(name, text)
        .map_err(|e| describe(name, text, &e, None))?;
    tpl.render(minijinja::Value::from(minijinja::value::Serde(vars)))
        .map_err(|e| describe(name, text, &e, Some(vars)))
}

/// The variables a template needs from its context (dotted paths such as
/// `steps.vm.outputs.ip`), without those it sets itself (`set`, loop
/// variables, macros) and those it guards (`x | default(...)`, `x is
/// defined`: asked for, not required). A syntax error is an error with the line.
pub fn references(name: &str, text: &str) -> Result<Vec<VarRef>, TemplateError> {
    let env = env();
    let tpl = env
        .template_from_named_str(name, text)
        .map_err(|e| describe(name, text, &e, None))?;
    let names: BTreeSet<String> = tpl.undeclared_variables(true).into_iter().collect();
    Ok(names
        .into_iter()
        // Globals of the environment (`range`, `namespace`, ...) are not variables.
        .filter(|n| env.globals().all(|(g, _)| g != n.split('.').next().unwrap_or_default()))
        .filter(|n| !guarded(text, n))
        .map(|n| VarRef {
            path: n.split('.').map(str::to_owned).collect(),
        })
        .collect())
}

/// Whether the template asks whether `path` is there rather than needing
/// it: some use of it goes through `default`/`d` or an `is defined` test.
fn guarded(text: &str, path: &str) -> bool {
    let pattern = format!(
        r"(?:^|[^\w.]){}(?:\.[A-Za-z_]\w*)*\s*(?:\|\s*(?:default|d)\b|is\s+(?:not\s+)?(?:defined|undefined|none)\b)",
        regex::escape(path)
    );
    regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(text))
}

/// `NAME:LINE: what went wrong`, naming the undefined variable when one is.
fn describe(name: &str, text: &str, e: &minijinja::Error, vars: Option<&Value>) -> TemplateError {
    let place = match e.line() {
        Some(l) => format!("{name}:{l}"),
        None => name.to_owned(),
    };
    let what = match (e.kind(), vars) {
        (ErrorKind::UndefinedError, Some(vars)) => {
            match undefined_on_line(name, text, e.line(), vars).or_else(|| span_path(text, e.range())) {
                Some(var) => format!("undefined variable `{var}`"),
                None => e.detail().map_or_else(|| "undefined value".to_owned(), str::to_owned),
            }
        }
        _ => match e.detail() {
            Some(d) => format!("{}: {d}", kind_text(e.kind())),
            None => kind_text(e.kind()),
        },
    };
    TemplateError {
        message: format!("{place}: {what}"),
    }
}

fn kind_text(kind: ErrorKind) -> String {
    // minijinja's descriptions start with a capital; ours do not.
    let s = kind.to_string();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

/// The first free variable used on `line` that `vars` does not define
/// (deepest missing path, e.g. `runner.tagz`).
fn undefined_on_line(name: &str, text: &str, line: Option<usize>, vars: &Value) -> Option<String> {
    let source_line = text.lines().nth(line?.checked_sub(1)?)?;
    let refs = references(name, text).ok()?;
    refs.iter()
        .filter(|r| contains_word(source_line, &r.path[0]))
        .find_map(|r| {
            // The shortest prefix that does not resolve is what is undefined.
            (1..=r.path.len())
                .find(|&n| crate::template::lookup(vars, &r.path[..n]).is_none())
                .map(|n| r.path[..n].join("."))
        })
}

/// The failing expression's text when it is a plain path (`r.nmae`): an
/// attribute of a loop variable, which the free variables do not list.
fn span_path(text: &str, range: Option<std::ops::Range<usize>>) -> Option<String> {
    let range = range?;
    let is_path = |p: &str| {
        !p.is_empty()
            && p.split('.')
                .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    let span = text.get(range.clone())?.trim();
    let path = span.split('|').next()?.trim();
    // A filter that failed on its input (`r.nmae | to_json`): the input is the path before `|`.
    let before = text.get(..range.start)?.trim_end();
    if let Some(head) = before.strip_suffix('|') {
        let head = head.trim_end();
        let start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let input = &head[start..];
        if is_path(input) {
            return Some(input.to_owned());
        }
    }
    is_path(path).then(|| path.to_owned())
}

fn contains_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ansible_defaults_trim_blocks_keep_newline_no_escaping() {
        let v = json!({"xs": ["a", "<b>"], "on": true});
        let out = render(
            "t.j2",
            "{% for x in xs %}\n- {{ x }}\n{% endfor %}\n{% if on %}\nyes\n{% endif %}\n",
            &v,
        )
        .unwrap();
        assert_eq!(out, "- a\n- <b>\nyes\n");
    }

    #[test]
    fn undefined_variables_are_errors_with_file_line_and_name() {
        let v = json!({"runner": {"name": "r1"}});
        let e = render(
            "config.toml.j2",
            "a = 1\nname = \"{{ runner.name }}\"\ntags = {{ runner.tagz }}\n",
            &v,
        )
        .unwrap_err();
        assert_eq!(e.message, "config.toml.j2:3: undefined variable `runner.tagz`");
        let e = render("x.j2", "{% for r in [runner] %}\n{{ r.nmae }}\n{% endfor %}", &v).unwrap_err();
        assert_eq!(e.message, "x.j2:2: undefined variable `r.nmae`");
        let e = render(
            "x.j2",
            "{% for r in [runner] %}\n{{ r.nmae | to_json }}\n{% endfor %}",
            &v,
        )
        .unwrap_err();
        assert_eq!(e.message, "x.j2:2: undefined variable `r.nmae`");
        let e = render("x.j2", "{{ nope | upper }}", &v).unwrap_err();
        assert!(
            e.message.starts_with("x.j2:1: undefined variable `nope`"),
            "{}",
            e.message
        );
        // `is defined` and `default` are how a template asks.
        let out = render(
            "x.j2",
            "{{ nope | default('d') }}{% if runner.x is defined %}!{% endif %}",
            &v,
        )
        .unwrap();
        assert_eq!(out, "d");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = render("x.j2", "ok\n{% if x %}\nno end\n", &json!({"x": 1})).unwrap_err();
        assert!(e.message.starts_with("x.j2:"), "{}", e.message);
        assert!(e.message.contains("syntax error"), "{}", e.message);
        assert!(references("x.j2", "{{ a }\n").is_err());
    }

    #[test]
    fn references_are_free_variables_only() {
        let refs = references(
            "t.j2",
            "{% set n = 3 %}{{ n }}{% for r in runners %}{{ r.name }}{{ loop.index }}{% endfor %}{{ steps.vm.outputs.ip }}{{ host.name }}{% for i in range(2) %}{% endfor %}",
        )
        .unwrap();
        let names: Vec<String> = refs.iter().map(|r| r.path.join(".")).collect();
        assert_eq!(names, ["host.name", "runners", "steps.vm.outputs.ip"]);
        let refs = references(
            "t.j2",
            "{{ a | default(1) }}{{ b.c | d('x') }}{% if e is defined %}{{ e }}{% endif %}{{ f }}",
        )
        .unwrap();
        let names: Vec<String> = refs.iter().map(|r| r.path.join(".")).collect();
        assert_eq!(names, ["f"], "guarded variables are not required");
    }
}
