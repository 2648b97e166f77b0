//! Templates: handlebars in strict mode, without HTML escaping, with the
//! helpers workflows need (`quote`, `json`, `default`, `join`, plus
//! handlebars' own `eq ne and or not lt gt len`). Besides rendering, this
//! module lists the variables a template refers to, so the loader can reject
//! an undefined variable before anything runs.

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, JsonRender, Output, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Renderable, StringOutput, Template,
};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A template failed to parse or render.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

/// The template engine. Compiled templates are cached by their text, so a
/// parameter rendered for 10,000 instances is parsed once.
pub struct Templates {
    hb: Handlebars<'static>,
    compiled: RwLock<HashMap<String, Arc<Template>>>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Names of the helpers available in templates.
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len", "quote",
    "json", "default", "join", "lower", "upper", "trim", "replace", "split",
];

impl Templates {
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("quote", Box::new(quote_helper));
        hb.register_helper("json", Box::new(json_helper));
        hb.register_helper("default", Box::new(default_helper));
        hb.register_helper("join", Box::new(join_helper));
        hb.register_helper("lower", Box::new(lower_helper));
        hb.register_helper("upper", Box::new(upper_helper));
        hb.register_helper("trim", Box::new(trim_helper));
        hb.register_helper("replace", Box::new(replace_helper));
        hb.register_helper("split", Box::new(split_helper));
        Self {
            hb,
            compiled: RwLock::new(HashMap::new()),
        }
    }

    /// Variables as a render context (built once, used for many renders).
    pub fn context(vars: Value) -> Context {
        Context::from(vars)
    }

    fn compile(&self, text: &str) -> Result<Arc<Template>, TemplateError> {
        if let Some(t) = self
            .compiled
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(text)
        {
            return Ok(t.clone());
        }
        let t = Arc::new(Template::compile(text).map_err(|e| TemplateError {
            message: describe_template_error(&e),
        })?);
        let mut cache = self.compiled.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(text.to_owned(), t.clone());
        Ok(t)
    }

    /// Whether a string needs rendering at all.
    pub fn is_template(text: &str) -> bool {
        text.contains("{{")
    }

    /// Render `text` with `vars`; `name` (e.g. `step install-docker, with.packages`) appears in errors.
    pub fn render_text(&self, name: &str, text: &str, vars: &Value) -> Result<String, TemplateError> {
        if !Self::is_template(text) {
            return Ok(text.to_owned());
        }
        let ctx = Context::wraps(vars).map_err(|e| TemplateError { message: e.to_string() })?;
        self.render_with(name, text, &ctx)
    }

    /// Render `text` in a context made with [`Templates::context`].
    pub fn render_with(&self, name: &str, text: &str, ctx: &Context) -> Result<String, TemplateError> {
        if !Self::is_template(text) {
            return Ok(text.to_owned());
        }
        let tpl = self.compile(text).map_err(|e| TemplateError {
            message: format!("{name}: {}", e.message),
        })?;
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        tpl.render(&self.hb, ctx, &mut rc, &mut out)
            .map_err(|e| TemplateError {
                message: format!("{name}: {}", describe_render_error(&e)),
            })?;
        out.into_string().map_err(|e| TemplateError {
            message: format!("{name}: {e}"),
        })
    }

    /// Render a string to a value: a string that is one `{{path}}` and nothing
    /// else yields the variable's own value (a list stays a list, as in
    /// Ansible); anything else renders to a string.
    pub fn render_value(&self, name: &str, text: &str, vars: &Value) -> Result<Value, TemplateError> {
        if !Self::is_template(text) {
            return Ok(Value::String(text.to_owned()));
        }
        let ctx = Context::wraps(vars).map_err(|e| TemplateError { message: e.to_string() })?;
        self.render_value_in(name, text, &ctx)
    }

    /// [`Templates::render_value`] in a prepared context.
    pub fn render_value_in(&self, name: &str, text: &str, ctx: &Context) -> Result<Value, TemplateError> {
        if !Self::is_template(text) {
            return Ok(Value::String(text.to_owned()));
        }
        if let Some(path) = sole_path(text) {
            return lookup(ctx.data(), &path).cloned().ok_or_else(|| TemplateError {
                message: format!("{name}: variable `{}` is not defined", path.join(".")),
            });
        }
        self.render_with(name, text, ctx).map(Value::String)
    }

    /// Render every string inside a JSON value.
    pub fn render_tree(&self, name: &str, value: &Value, vars: &Value) -> Result<Value, TemplateError> {
        if !Self::tree_has_template(value) {
            return Ok(value.clone());
        }
        let ctx = Context::wraps(vars).map_err(|e| TemplateError { message: e.to_string() })?;
        self.render_tree_in(name, value, &ctx)
    }

    /// [`Templates::render_tree`] in a prepared context.
    pub fn render_tree_in(&self, name: &str, value: &Value, ctx: &Context) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.render_value_in(name, s, ctx)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_tree_in(name, v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_tree_in(&format!("{name}.{k}"), v, ctx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Whether a value contains any template.
    pub fn tree_has_template(value: &Value) -> bool {
        match value {
            Value::String(s) => Self::is_template(s),
            Value::Array(items) => items.iter().any(Self::tree_has_template),
            Value::Object(map) => map.values().any(Self::tree_has_template),
            _ => false,
        }
    }
}

/// Truthiness of a rendered condition (`when`, `until`, `assert`).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no" | "off" | "null" | "none" | "[]" | "{}"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Look up a dotted path (`a.b.0.c`) in a JSON value.
pub fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A variable reference found in a template: its path, e.g. `["steps", "vm", "outputs", "ip"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    pub path: Vec<String>,
}

/// Parse a template and list the variables it reads. Paths inside `#each` and
/// `#with` blocks are relative to their own context and not listed; the first
/// argument of `default` is optional by design and not listed either.
pub fn references(text: &str) -> Result<Vec<VarRef>, TemplateError> {
    if !Templates::is_template(text) {
        return Ok(Vec::new());
    }
    let tpl = Template::compile(text).map_err(|e| TemplateError {
        message: describe_template_error(&e),
    })?;
    let mut refs = Vec::new();
    let mut unknown_helpers = Vec::new();
    walk_elements(&tpl.elements, &mut refs, &mut unknown_helpers);
    if let Some(h) = unknown_helpers.first() {
        let mut message = format!("unknown helper `{h}`");
        if let Some(s) = crate::diag::did_you_mean(h, HELPERS.iter().copied()) {
            message.push_str(&format!(" (did you mean `{s}`?)"));
        }
        return Err(TemplateError { message });
    }
    Ok(refs)
}

fn walk_elements(elements: &[TemplateElement], refs: &mut Vec<VarRef>, unknown: &mut Vec<String>) {
    for el in elements {
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) | TemplateElement::HelperBlock(h) => {
                walk_helper(h, refs, unknown);
            }
            _ => {}
        }
    }
}

fn walk_helper(h: &HelperTemplate, refs: &mut Vec<VarRef>, unknown: &mut Vec<String>) {
    let name = match &h.name {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(p) if h.params.is_empty() && h.hash.is_empty() && h.template.is_none() => {
            // `{{x}}`: a variable, unless `x` is a helper that takes no argument.
            let raw = path_raw(p);
            if !HELPERS.contains(&raw.as_str()) {
                walk_param(&h.name, refs, unknown);
            }
            None
        }
        Parameter::Path(p) => Some(path_raw(p)),
        other => {
            walk_param(other, refs, unknown);
            None
        }
    };
    let Some(name) = name else { return };
    if !HELPERS.contains(&name.as_str()) {
        unknown.push(name.clone());
    }
    for (i, p) in h.params.iter().enumerate() {
        if name == "default" && i == 0 {
            continue;
        }
        walk_param(p, refs, unknown);
    }
    for p in h.hash.values() {
        walk_param(p, refs, unknown);
    }
    // Inside #each/#with, paths are relative to the block's own context.
    if name != "each" && name != "with" {
        if let Some(t) = &h.template {
            walk_elements(&t.elements, refs, unknown);
        }
        if let Some(t) = &h.inverse {
            walk_elements(&t.elements, refs, unknown);
        }
    }
}

fn walk_param(p: &Parameter, refs: &mut Vec<VarRef>, unknown: &mut Vec<String>) {
    match p {
        Parameter::Path(handlebars::Path::Relative((segs, raw))) => {
            if raw.starts_with('@') || raw.starts_with("this") || raw.starts_with("../") {
                return;
            }
            let parts: Vec<String> = segs
                .iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            if !parts.is_empty() {
                refs.push(VarRef { path: parts });
            }
        }
        Parameter::Subexpression(sub) => {
            if let TemplateElement::Expression(h) = sub.as_element() {
                walk_helper(h, refs, unknown);
            }
        }
        _ => {}
    }
}

fn path_raw(p: &handlebars::Path) -> String {
    match p {
        handlebars::Path::Relative((_, raw)) | handlebars::Path::Local((_, _, raw)) => raw.clone(),
    }
}

/// `{{ a.b.c }}` alone (whitespace around allowed) → the path.
fn sole_path(text: &str) -> Option<Vec<String>> {
    // Whitespace inside the braces only: "{{x}}\n" is a string with a newline.
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    if inner.is_empty()
        || !inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        || HELPERS.contains(&inner)
        || inner.starts_with('.')
    {
        return None;
    }
    Some(inner.split('.').map(str::to_owned).collect())
}

fn describe_template_error(e: &handlebars::TemplateError) -> String {
    let reason = e.reason().to_string();
    match e.pos() {
        Some((l, c)) => format!("invalid template (line {l}, column {c} of the template): {reason}"),
        None => format!("invalid template: {reason}"),
    }
}

fn describe_render_error(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("variable `{path}` is not defined"),
        RenderErrorReason::MissingVariable(None) => "a variable is not defined".into(),
        RenderErrorReason::TemplateError(t) => describe_template_error(t),
        other => other.to_string(),
    }
}

fn param_value<'a>(h: &'a Helper<'_>, i: usize, name: &str) -> Result<&'a Value, RenderError> {
    h.param(i)
        .map(handlebars::PathAndJson::value)
        .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex(name_static(name), i).into())
}

fn name_static(name: &str) -> &'static str {
    HELPERS.iter().find(|h| **h == name).copied().unwrap_or("helper")
}

fn quote_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0, "quote")?;
    out.write(&crate::transport::quote(&v.render()))?;
    Ok(())
}

fn json_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let v = param_value(h, 0, "json")?;
    let pretty = h.hash_get("pretty").is_some_and(|p| p.value().as_bool() == Some(true));
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    out.write(&text.map_err(|e| RenderErrorReason::Other(e.to_string()))?)?;
    Ok(())
}

/// `{{default x "fallback"}}`: x when defined and not null/empty, else the fallback.
fn default_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let fallback = param_value(h, 1, "default")?;
    let v = h
        .param(0)
        .map(|p| p.value())
        .filter(|v| !v.is_null() && v.as_str() != Some(""));
    out.write(&v.unwrap_or(fallback).render())?;
    Ok(())
}

/// `{{join list ", "}}`.
fn join_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let list = param_value(h, 0, "join")?;
    let sep = h.param(1).map_or_else(|| ",".to_owned(), |p| p.value().render());
    let text = match list {
        Value::Array(items) => items.iter().map(JsonRender::render).collect::<Vec<_>>().join(&sep),
        other => other.render(),
    };
    out.write(&text)?;
    Ok(())
}

fn lower_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&param_value(h, 0, "lower")?.render().to_lowercase())?;
    Ok(())
}

fn upper_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&param_value(h, 0, "upper")?.render().to_uppercase())?;
    Ok(())
}

fn trim_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(param_value(h, 0, "trim")?.render().trim())?;
    Ok(())
}

fn replace_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let s = param_value(h, 0, "replace")?.render();
    let from = param_value(h, 1, "replace")?.render();
    let to = param_value(h, 2, "replace")?.render();
    out.write(&s.replace(&from, &to))?;
    Ok(())
}

/// `{{split "a,b" "," 0}}`: the Nth piece.
fn split_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let s = param_value(h, 0, "split")?.render();
    let sep = param_value(h, 1, "split")?.render();
    let idx = param_value(h, 2, "split")?.as_u64().unwrap_or(0);
    out.write(
        s.split(sep.as_str())
            .nth(usize::try_from(idx).unwrap_or(0))
            .unwrap_or(""),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_and_unescaped() {
        let t = Templates::new();
        let v = json!({"a": "<x & 'y'>", "n": 3, "l": ["p", "q"]});
        assert_eq!(t.render_text("t", "{{a}}", &v).unwrap(), "<x & 'y'>");
        assert_eq!(t.render_text("t", "{{quote a}}", &v).unwrap(), r"'<x & '\''y'\''>'");
        assert_eq!(t.render_text("t", "{{json l}}", &v).unwrap(), r#"["p","q"]"#);
        assert_eq!(t.render_text("t", "{{join l \" \"}}", &v).unwrap(), "p q");
        let e = t.render_text("step x", "{{missing}}", &v).unwrap_err();
        assert!(e.message.contains("`missing`"), "{}", e.message);
    }

    #[test]
    fn default_tolerates_missing_first_argument() {
        let t = Templates::new();
        let v = json!({"a": "set"});
        assert_eq!(t.render_text("t", "{{default a \"x\"}}", &v).unwrap(), "set");
        assert_eq!(t.render_text("t", "{{default nope \"x\"}}", &v).unwrap(), "x");
        assert!(references("{{default nope \"x\"}}").unwrap().is_empty());
    }

    #[test]
    fn conditions() {
        let t = Templates::new();
        let v = json!({"s": 200, "b": false});
        assert_eq!(t.render_text("t", "{{eq s 200}}", &v).unwrap(), "true");
        assert!(!truthy(&t.render_value("t", "{{b}}", &v).unwrap()));
        assert!(truthy(
            &t.render_value("t", "{{#if (eq s 200)}}yes{{/if}}", &v).unwrap()
        ));
    }

    #[test]
    fn sole_path_keeps_native_value() {
        let t = Templates::new();
        let v = json!({"vm": {"list": [1, 2]}});
        assert_eq!(t.render_value("t", "{{ vm.list }}", &v).unwrap(), json!([1, 2]));
        assert_eq!(t.render_value("t", "n={{vm.list.0}}", &v).unwrap(), json!("n=1"));
        assert_eq!(t.render_value("t", "{{vm.list.0}}\n", &v).unwrap(), json!("1\n"));
    }

    #[test]
    fn references_found_everywhere_but_each() {
        let refs = references(
            "{{a.b}} {{#if (eq c 1)}}{{d}}{{else}}{{e}}{{/if}} {{#each l}}{{this.x}}{{y}}{{/each}} {{quote f}}",
        )
        .unwrap();
        let names: Vec<String> = refs.iter().map(|r| r.path.join(".")).collect();
        assert_eq!(names, ["a.b", "c", "d", "e", "l", "f"]);
        assert!(references("{{qoute x}}")
            .unwrap_err()
            .message
            .contains("did you mean `quote`"));
        assert!(references("{{#if x}}").is_err());
    }
}
