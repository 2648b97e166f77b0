//! Ansible's filters and tests that roles' templates use and Jinja2 (so
//! minijinja) lacks, with Ansible's names, arguments and results: what a
//! `config.toml.j2` written for Ansible needs to render the same here.

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest, Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

/// The filters added to minijinja's built-ins (documented in the README).
pub const ANSIBLE_FILTERS: &[&str] = &[
    "to_json",
    "to_nice_json",
    "from_json",
    "to_yaml",
    "to_nice_yaml",
    "from_yaml",
    "bool",
    "mandatory",
    "regex_replace",
    "regex_search",
    "regex_findall",
    "regex_escape",
    "quote",
    "basename",
    "dirname",
    "ternary",
    "combine",
    "dict2items",
    "items2dict",
    "flatten",
    "b64encode",
    "b64decode",
];

/// The tests added (`x is match('...')`).
pub const ANSIBLE_TESTS: &[&str] = &["match", "search", "regex", "truthy", "falsy"];

pub fn register(env: &mut Environment<'static>) {
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("from_json", from_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_nice_yaml", to_yaml);
    env.add_filter("from_yaml", from_yaml);
    env.add_filter("bool", to_bool);
    env.add_filter("mandatory", mandatory);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("regex_escape", |s: String| regex::escape(&s));
    env.add_filter("quote", |s: String| crate::transport::quote(&s));
    env.add_filter("basename", |s: String| {
        std::path::Path::new(&s)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    env.add_filter("dirname", |s: String| {
        std::path::Path::new(&s)
            .parent()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    env.add_filter("ternary", ternary);
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("flatten", flatten);
    env.add_filter("b64encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env.add_filter("b64decode", b64decode);
    env.add_test("match", |v: String, p: String, kw: Kwargs| {
        test_regex(&v, &p, &kw, Anchor::Start)
    });
    env.add_test("search", |v: String, p: String, kw: Kwargs| {
        test_regex(&v, &p, &kw, Anchor::None)
    });
    env.add_test("regex", |v: String, p: String, kw: Kwargs| {
        let anchor = if kw.get::<Option<bool>>("match_type")?.is_some() {
            Anchor::Start
        } else {
            Anchor::None
        };
        test_regex(&v, &p, &kw, anchor)
    });
    env.add_test("truthy", |v: Value| v.is_true());
    env.add_test("falsy", |v: Value| !v.is_true());
}

/// A value as JSON; an undefined one is an error, as in Ansible (strict).
fn json(v: &Value) -> Result<Json, Error> {
    if v.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    serde_json::to_value(v).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("not serializable: {e}")))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn to_json(v: &Value) -> Result<String, Error> {
    serde_json::to_string(&json(v)?).map_err(|e| invalid(e.to_string()))
}

/// `to_nice_json(indent=4)`: Ansible's default indent is 4.
fn to_nice_json(v: &Value, kw: Kwargs) -> Result<String, Error> {
    let indent = kw.get::<Option<usize>>("indent")?.unwrap_or(4);
    kw.assert_all_used()?;
    let pad = " ".repeat(indent);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&json(v)?, &mut ser).map_err(|e| invalid(e.to_string()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn from_json(s: String) -> Result<Value, Error> {
    serde_json::from_str::<Json>(&s)
        .map(|j| Value::from(Serde(&j)))
        .map_err(|e| invalid(format!("from_json: {e}")))
}

fn to_yaml(v: &Value, _kw: Kwargs) -> Result<String, Error> {
    serde_saphyr::to_string(&json(v)?).map_err(|e| invalid(format!("to_yaml: {e}")))
}

fn from_yaml(s: String) -> Result<Value, Error> {
    serde_saphyr::from_str::<Json>(&s)
        .map(|j| Value::from(Serde(&j)))
        .map_err(|e| invalid(format!("from_yaml: {e}")))
}

/// Ansible's `bool`: `yes`, `on`, `true`, `1` (any case) and true numbers are true.
fn to_bool(v: &Value) -> Result<bool, Error> {
    if v.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    Ok(match v.kind() {
        ValueKind::Bool => v.is_true(),
        ValueKind::Number => v.as_i64().is_some_and(|n| n != 0) || v.to_string().parse::<f64>().is_ok_and(|f| f != 0.0),
        ValueKind::String => matches!(
            v.as_str().unwrap_or_default().trim().to_ascii_lowercase().as_str(),
            "yes" | "on" | "true" | "1" | "y" | "t"
        ),
        _ => false,
    })
}

fn mandatory(v: Value, msg: Option<String>) -> Result<Value, Error> {
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            msg.unwrap_or_else(|| "mandatory variable not defined".into()),
        ));
    }
    Ok(v)
}

fn build_regex(pattern: &str, kw: &Kwargs) -> Result<regex::Regex, Error> {
    let ignorecase = kw.get::<Option<bool>>("ignorecase")?.unwrap_or(false);
    let multiline = kw.get::<Option<bool>>("multiline")?.unwrap_or(false);
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase)
        .multi_line(multiline)
        .build()
        .map_err(|e| invalid(format!("invalid regular expression `{pattern}`: {e}")))
}

/// Python's replacement syntax (`\1`, `\g<1>`, `\g<name>`) in Rust's (`${1}`).
fn python_replacement(rep: &str) -> String {
    let mut out = String::new();
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

/// `regex_replace(pattern, replacement='', ignorecase=false, multiline=false, count=0)`.
fn regex_replace(s: String, pattern: String, rep: Option<String>, kw: Kwargs) -> Result<String, Error> {
    let re = build_regex(&pattern, &kw)?;
    let count = kw.get::<Option<usize>>("count")?.unwrap_or(0);
    kw.assert_all_used()?;
    let rep = python_replacement(rep.as_deref().unwrap_or(""));
    Ok(re.replacen(&s, count, rep.as_str()).into_owned())
}

/// `regex_search(pattern, '\\1', ...)`: the match (none when there is
/// none), or with group arguments the list of those groups.
fn regex_search(s: String, pattern: String, groups: Rest<String>, kw: Kwargs) -> Result<Value, Error> {
    let re = build_regex(&pattern, &kw)?;
    kw.assert_all_used()?;
    let Some(caps) = re.captures(&s) else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(caps.get(0).map_or("", |m| m.as_str())));
    }
    let picked: Vec<Value> = groups
        .iter()
        .map(|g| {
            let g = g.trim_start_matches('\\');
            let m = match g.strip_prefix("g<").and_then(|x| x.strip_suffix('>')) {
                Some(name) => caps.name(name),
                None => g.parse::<usize>().ok().and_then(|i| caps.get(i)),
            };
            m.map_or(Value::from(()), |m| Value::from(m.as_str()))
        })
        .collect();
    Ok(Value::from(picked))
}

fn regex_findall(s: String, pattern: String, kw: Kwargs) -> Result<Value, Error> {
    let re = build_regex(&pattern, &kw)?;
    kw.assert_all_used()?;
    let found: Vec<Value> = re
        .captures_iter(&s)
        .map(|c| match c.len() {
            1 => Value::from(c.get(0).map_or("", |m| m.as_str())),
            2 => Value::from(c.get(1).map_or("", |m| m.as_str())),
            _ => Value::from(
                c.iter()
                    .skip(1)
                    .map(|m| Value::from(m.map_or("", |m| m.as_str())))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    Ok(Value::from(found))
}

enum Anchor {
    Start,
    None,
}

fn test_regex(v: &str, pattern: &str, kw: &Kwargs, anchor: Anchor) -> Result<bool, Error> {
    let re = build_regex(pattern, kw)?;
    Ok(match anchor {
        Anchor::Start => re.find(v).is_some_and(|m| m.start() == 0) || re.find_iter(v).any(|m| m.start() == 0),
        Anchor::None => re.is_match(v),
    })
}

/// `ternary(true_value, false_value, none_value)`.
fn ternary(v: Value, yes: Value, no: Value, none: Option<Value>) -> Value {
    match none {
        Some(n) if v.is_none() || v.is_undefined() => n,
        _ if v.is_true() => yes,
        _ => no,
    }
}

fn merge(into: &mut serde_json::Map<String, Json>, from: &serde_json::Map<String, Json>, recursive: bool) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Json::Object(a)), Json::Object(b)) if recursive => merge(a, b, true),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `combine(dict, ..., recursive=false)`: later mappings win.
fn combine(base: &Value, others: Rest<Value>, kw: Kwargs) -> Result<Value, Error> {
    let recursive = kw.get::<Option<bool>>("recursive")?.unwrap_or(false);
    kw.assert_all_used()?;
    let Json::Object(mut out) = json(base)? else {
        return Err(invalid("combine: expects mappings"));
    };
    for o in others.iter() {
        match json(o)? {
            Json::Object(m) => merge(&mut out, &m, recursive),
            Json::Array(list) => {
                for item in list {
                    let Json::Object(m) = item else {
                        return Err(invalid("combine: expects mappings"));
                    };
                    merge(&mut out, &m, recursive);
                }
            }
            _ => return Err(invalid("combine: expects mappings")),
        }
    }
    Ok(Value::from(Serde(Json::Object(out))))
}

fn names(kw: &Kwargs) -> Result<(String, String), Error> {
    let k = kw.get::<Option<String>>("key_name")?.unwrap_or_else(|| "key".into());
    let v = kw
        .get::<Option<String>>("value_name")?
        .unwrap_or_else(|| "value".into());
    kw.assert_all_used()?;
    Ok((k, v))
}

fn dict2items(d: &Value, kw: Kwargs) -> Result<Value, Error> {
    let (kn, vn) = names(&kw)?;
    let Json::Object(m) = json(d)? else {
        return Err(invalid("dict2items: expects a mapping"));
    };
    let items: Vec<Json> = m
        .into_iter()
        .map(|(k, v)| {
            let mut o = serde_json::Map::new();
            o.insert(kn.clone(), Json::String(k));
            o.insert(vn.clone(), v);
            Json::Object(o)
        })
        .collect();
    Ok(Value::from(Serde(items)))
}

fn items2dict(list: &Value, kw: Kwargs) -> Result<Value, Error> {
    let (kn, vn) = names(&kw)?;
    let Json::Array(items) = json(list)? else {
        return Err(invalid("items2dict: expects a list"));
    };
    let mut out = serde_json::Map::new();
    for i in items {
        let key = match i.get(&kn) {
            Some(Json::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(invalid(format!("items2dict: an item has no `{kn}`"))),
        };
        out.insert(key, i.get(&vn).cloned().unwrap_or(Json::Null));
    }
    Ok(Value::from(Serde(Json::Object(out))))
}

fn flatten_into(v: Json, levels: Option<usize>, out: &mut Vec<Json>) {
    match v {
        Json::Array(items) if levels != Some(0) => {
            for i in items {
                flatten_into(i, levels.map(|l| l - 1), out);
            }
        }
        Json::Null => {}
        other => out.push(other),
    }
}

fn flatten(list: &Value, levels: Option<usize>) -> Result<Value, Error> {
    let Json::Array(items) = json(list)? else {
        return Err(invalid("flatten: expects a list"));
    };
    let mut out = Vec::new();
    for i in items {
        flatten_into(i, levels, &mut out);
    }
    Ok(Value::from(Serde(out)))
}

fn b64decode(s: String) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| invalid(format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|_| invalid("b64decode: the data is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use crate::jinja::render;
    use serde_json::json;

    fn r(text: &str) -> String {
        let v =
            json!({"m": {"a": 1, "b": {"c": 2}}, "l": [1, [2, [3]]], "s": "web-01.example.com", "y": "yes", "n": null});
        render("t.j2", text, &v).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn serialization() {
        assert_eq!(r("{{ m | to_json }}"), r#"{"a":1,"b":{"c":2}}"#);
        assert_eq!(
            r("{{ m | to_nice_json(indent=2) }}"),
            "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": 2\n  }\n}"
        );
        assert_eq!(r("{{ m | to_yaml }}").trim_end(), "a: 1\nb:\n  c: 2");
        assert_eq!(r("{{ ('{\"x\": [1]}' | from_json).x[0] }}"), "1");
        assert_eq!(r("{{ ('x: [5]' | from_yaml).x[0] }}"), "5");
        assert_eq!(r("{{ 'hi' | b64encode }} {{ 'aGk=' | b64decode }}"), "aGk= hi");
    }

    #[test]
    fn regexes_with_python_replacements() {
        assert_eq!(
            r(r"{{ s | regex_replace('^([a-z]+)-(\\d+)\\..*$', '\\2/\\1') }}"),
            "01/web"
        );
        assert_eq!(
            r(r"{{ s | regex_replace('(?P<h>[a-z]+)', '<\\g<h>>', count=1) }}"),
            "<web>-01.example.com"
        );
        assert_eq!(r(r"{{ s | regex_search('\\d+') }}"), "01");
        assert_eq!(r(r"{{ s | regex_search('([a-z]+)-(\\d+)', '\\2') | first }}"), "01");
        assert_eq!(r(r"{{ s | regex_findall('[a-z]+') | join(',') }}"), "web,example,com");
        assert_eq!(
            r("{{ s is match('web') }} {{ s is match('example') }} {{ s is search('example') }}"),
            "True False True"
        );
    }

    #[test]
    fn ansible_helpers() {
        assert_eq!(r("{{ y | bool }} {{ 'off' | bool }} {{ 1 | bool }}"), "True False True");
        assert_eq!(
            r("{{ (1 == 1) | ternary('a', 'b') }} {{ n | ternary('a', 'b', 'none') }}"),
            "a none"
        );
        assert_eq!(
            r("{{ m | combine({'b': {'d': 3}}, recursive=true) | to_json }}"),
            r#"{"a":1,"b":{"c":2,"d":3}}"#
        );
        assert_eq!(r("{{ m | combine({'b': 0}) | to_json }}"), r#"{"a":1,"b":0}"#);
        assert_eq!(r("{{ m | dict2items | map(attribute='key') | join(',') }}"), "a,b");
        assert_eq!(
            r("{{ [{'key': 'k', 'value': 1}] | items2dict | to_json }}"),
            r#"{"k":1}"#
        );
        assert_eq!(
            r("{{ l | flatten | to_json }} {{ l | flatten(1) | to_json }}"),
            "[1,2,3] [1,2,[3]]"
        );
        assert_eq!(
            r("{{ '/etc/x/config.toml' | basename }} {{ '/etc/x/config.toml' | dirname }}"),
            "config.toml /etc/x"
        );
        assert_eq!(r("{{ \"it's\" | quote }}"), r"'it'\''s'");
        let e = render("t.j2", "{{ nope | mandatory('set `nope`') }}", &json!({})).unwrap_err();
        assert!(e.message.starts_with("t.j2:1:"), "{}", e.message);
        for f in ["to_json", "to_yaml", "bool", "combine", "flatten"] {
            let e = render("t.j2", &format!("{{{{ nope | {f} }}}}"), &json!({})).unwrap_err();
            assert_eq!(e.message, "t.j2:1: undefined variable `nope`", "{f}");
        }
    }
}
