//! A YAML document as a tree whose every key and value knows where it was
//! written, so the loader can point at the exact line and column of anything
//! it rejects. Parsing is serde-saphyr's (syntax errors come with its own
//! snippet); the tree is ours so that semantic checks never lose positions.

use crate::diag::{Diagnostic, Pos, Source};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::fmt;
use std::sync::Arc;

/// A value with its position in a source file.
#[derive(Debug, Clone)]
pub struct Yaml {
    pub pos: Pos,
    pub value: YValue,
}

#[derive(Debug, Clone)]
pub enum YValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Key, Yaml)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Yaml {
    pub fn kind(&self) -> &'static str {
        match self.value {
            YValue::Null => "null",
            YValue::Bool(_) => "a boolean",
            YValue::Int(_) => "an integer",
            YValue::Float(_) => "a number",
            YValue::Str(_) => "a string",
            YValue::Seq(_) => "a list",
            YValue::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Yaml)]> {
        match &self.value {
            YValue::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Yaml]> {
        match &self.value {
            YValue::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, YValue::Null)
    }

    /// Look a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The value as JSON, positions dropped.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            YValue::Null => Value::Null,
            YValue::Bool(b) => Value::Bool(*b),
            YValue::Int(i) => Value::from(*i),
            YValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            YValue::Str(s) => Value::String(s.clone()),
            YValue::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            YValue::Map(entries) => Value::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// Scalars as the text a user wrote (for string-typed fields that got `5` or `true`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            YValue::Str(s) => Some(s.clone()),
            YValue::Int(i) => Some(i.to_string()),
            YValue::Float(f) => Some(f.to_string()),
            YValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Parse a whole file. An empty document is a null at 1:1.
pub fn parse(source: &Arc<Source>) -> Result<Yaml, Diagnostic> {
    if source.text.trim().is_empty() {
        return Ok(Yaml {
            pos: Pos::new(1, 1),
            value: YValue::Null,
        });
    }
    // YAML 1.2 booleans only: `yes`, `no`, `on`, `y` stay strings (no Norway problem).
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<Spanned<Node>>(&source.text, options) {
        Ok(node) => Ok(convert(node)),
        Err(err) => {
            let pos = err.location().map_or(Pos::new(1, 1), |l| pos_of(&l, 1));
            let text = err.to_string();
            // serde-saphyr's message starts `error: line L column C: MSG` followed by a snippet
            // of its own; keep only MSG, our renderer draws the snippet with the file name.
            let first = text.lines().next().unwrap_or("invalid YAML");
            let msg = first
                .trim_start_matches("error: ")
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("line "))
                .map_or(first, |(_, m)| m);
            let pos = if msg.contains("tab") {
                tab_near(&source.text, pos)
            } else {
                pos
            };
            Err(Diagnostic::at(source, pos, format!("invalid YAML: {msg}"))
                .help("YAML indents with spaces; a tab is allowed only inside quoted strings"))
        }
    }
}

/// Where the tab is that a tab error is about: the parser reports where the
/// token it was reading began (possibly the line before), not the tab.
fn tab_near(text: &str, reported: Pos) -> Pos {
    let first = reported.line.saturating_sub(1) as usize;
    for (i, line) in text.lines().enumerate().skip(first).take(3) {
        if let Some(col) = line.chars().position(|c| c == '\t') {
            let line = u32::try_from(i + 1).unwrap_or(reported.line);
            return Pos::new(line, u32::try_from(col + 1).unwrap_or(1));
        }
    }
    reported
}

fn pos_of(loc: &Location, len: u32) -> Pos {
    let line = u32::try_from(loc.line()).unwrap_or(u32::MAX).max(1);
    let col = u32::try_from(loc.column()).unwrap_or(u32::MAX).max(1);
    Pos {
        line,
        col,
        len: len.max(1),
    }
}

fn convert(node: Spanned<Node>) -> Yaml {
    let len = match &node.value {
        Node::Str(s) => u32::try_from(s.chars().count()).unwrap_or(1),
        _ => 1,
    };
    let pos = pos_of(&node.referenced, len);
    let value = match node.value {
        Node::Null => YValue::Null,
        Node::Bool(b) => YValue::Bool(b),
        Node::Int(i) => YValue::Int(i),
        Node::Float(f) => YValue::Float(f),
        Node::Str(s) => YValue::Str(s),
        Node::Seq(items) => YValue::Seq(items.into_iter().map(convert).collect()),
        Node::Map(entries) => YValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let len = u32::try_from(k.value.chars().count()).unwrap_or(1);
                    (
                        Key {
                            pos: pos_of(&k.referenced, len),
                            name: k.value,
                        },
                        convert(v),
                    )
                })
                .collect(),
        ),
    };
    Yaml { pos, value }
}

enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = a.next_key::<Spanned<String>>()? {
                    let value = a.next_value()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Arc<Source> {
        Arc::new(Source::new("t.yml".into(), text.into()))
    }

    #[test]
    fn keys_and_values_carry_positions() {
        let y = parse(&src("name: x\nsteps:\n  - id: a\n    uses: apt\n")).unwrap();
        let steps = y.get("steps").unwrap().as_seq().unwrap();
        let (k, v) = &steps[0].as_map().unwrap()[1];
        assert_eq!(k.name, "uses");
        assert_eq!((k.pos.line, k.pos.col), (4, 5));
        assert_eq!((v.pos.line, v.pos.col, v.pos.len), (4, 11, 3));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse(&src("a: [1, 2\nb: 3\n")).unwrap_err();
        assert_eq!(e.pos.unwrap().line, 2);
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    }

    #[test]
    fn a_tab_error_points_at_the_tab() {
        let e = parse(&src("steps:\n  - id: a\n\tuses: command\n")).unwrap_err();
        assert_eq!(e.pos.map(|p| (p.line, p.col)), Some((3, 1)), "{e}");
        let e = parse(&src("a:\n  b:\n\t  c: 1\n")).unwrap_err();
        assert_eq!(e.pos.map(|p| (p.line, p.col)), Some((3, 1)), "{e}");
    }

    #[test]
    fn only_yaml_12_booleans() {
        let y = parse(&src("a: [y, yes, on, no, true, False]\n")).unwrap();
        let v = y.to_json();
        assert_eq!(v["a"], serde_json::json!(["y", "yes", "on", "no", true, false]));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let e = parse(&src("a: 1\na: 2\n")).unwrap_err();
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }
}
