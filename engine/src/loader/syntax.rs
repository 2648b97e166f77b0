//! Small readers of YAML values the loader shares: strings, lists of
//! strings, booleans and durations, each reporting a wrong kind of value at
//! its position, and the "unknown key" diagnostic with its suggestions.

use crate::diag::{suggest, Diagnostic, Diagnostics, Pos, Source};
use crate::model::parse_duration;
use crate::yaml::{Key, YValue, Yaml};
use std::time::Duration;

/// A scalar as written, with where it was written.
#[derive(Debug, Clone)]
pub(super) struct Text {
    pub value: String,
    pub pos: Pos,
}

/// The position of a key, as wide as its name.
pub(super) fn key_pos(k: &Key) -> Pos {
    k.pos.with_len(u32::try_from(k.name.chars().count()).unwrap_or(1))
}

pub(super) fn unknown_key(src: &Source, k: &Key, what: &str, valid: &[&str]) -> Diagnostic {
    suggest(
        Diagnostic::at(src, key_pos(k), format!("unknown key `{}` in {what}", k.name)),
        &k.name,
        valid,
        "keys",
    )
}

/// A string (a number or boolean is taken as the text written).
pub(super) fn text(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<Text> {
    match v.scalar_text() {
        Some(value) => Some(Text { value, pos: v.pos }),
        None => {
            errs.push(Diagnostic::at(
                src,
                v.pos,
                format!("`{what}` must be a string, found {}", v.kind()),
            ));
            None
        }
    }
}

pub(super) fn string(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<String> {
    text(src, v, what, errs).map(|t| t.value)
}

/// A condition: a template, or a literal boolean.
pub(super) fn condition(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<Text> {
    match &v.value {
        YValue::Bool(b) => Some(Text {
            value: b.to_string(),
            pos: v.pos,
        }),
        _ => text(src, v, what, errs),
    }
}

/// A list of strings; a single string is a list of one.
pub(super) fn text_list(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Vec<Text> {
    let wrong = |i: &Yaml, errs: &mut Diagnostics| {
        errs.push(Diagnostic::at(
            src,
            i.pos,
            format!("`{what}` must be a list of strings, found {}", i.kind()),
        ));
    };
    match &v.value {
        YValue::Seq(items) => items
            .iter()
            .filter_map(|i| match i.scalar_text() {
                Some(value) => Some(Text { value, pos: i.pos }),
                None => {
                    wrong(i, errs);
                    None
                }
            })
            .collect(),
        YValue::Null => Vec::new(),
        _ => match v.scalar_text() {
            Some(value) => vec![Text { value, pos: v.pos }],
            None => {
                wrong(v, errs);
                Vec::new()
            }
        },
    }
}

pub(super) fn boolean(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<bool> {
    if let YValue::Bool(b) = v.value {
        return Some(b);
    }
    errs.push(Diagnostic::at(src, v.pos, format!("`{what}` must be a boolean")));
    None
}

pub(super) fn duration(src: &Source, v: &Yaml, errs: &mut Diagnostics) -> Option<Duration> {
    let text = v.scalar_text().unwrap_or_default();
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(Diagnostic::at(src, v.pos, e));
            None
        }
    }
}
