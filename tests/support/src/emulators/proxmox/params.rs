//! Proxmox VE's parameter handling, as strict as the real API server:
//! parameters come from the query string and the body, which may be
//! form-encoded or JSON; every endpoint has a schema, and anything outside it
//! is a 400 "Parameter verification failed." with one message per parameter.
//! In a form only `0`/`1` are booleans; `sshkeys` must be a percent-encoded
//! string (the server's `urlencoded` format).

use super::super::server::{parse_form, Reply, Request};
use serde_json::{json, Map, Value};

/// The type of a parameter.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Bool,
    Int,
    /// A VM id: an integer from 100 on.
    VmId,
    Str,
    /// The `urlencoded` string format (`sshkeys`).
    UrlEncoded,
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

pub const fn opt(name: &'static str, ty: Ty) -> Spec {
    Spec {
        name,
        ty,
        required: false,
    }
}

pub const fn req(name: &'static str, ty: Ty) -> Spec {
    Spec {
        name,
        ty,
        required: true,
    }
}

/// Validated parameters, as strings (booleans `0`/`1`, integers in decimal).
#[derive(Debug, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.str(name).and_then(|s| s.parse().ok())
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|s| s == "1")
    }
}

/// The 400 answer of a failed parameter verification.
pub fn verification_failed(errors: Map<String, Value>) -> Reply {
    Reply::json(400, &json!({"data": null, "errors": errors})).reason("Parameter verification failed.")
}

/// Collect the request's parameters (query string, then body) and check them against `specs`.
pub fn parse(req: &Request, specs: &[Spec]) -> Result<Params, Reply> {
    let mut raw: Vec<(String, Raw)> = parse_form(req.query.as_bytes())
        .into_iter()
        .map(|(k, v)| (k, Raw::Text(v)))
        .collect();
    if !req.body.is_empty() {
        match req.content_type().as_str() {
            "application/json" => match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(m)) => raw.extend(m.into_iter().map(|(k, v)| (k, Raw::Json(v)))),
                _ => {
                    return Err(Reply::json(400, &json!({"data": null}))
                        .reason("malformed JSON body: expected an object of parameters"))
                }
            },
            "application/x-www-form-urlencoded" | "" => {
                raw.extend(parse_form(&req.body).into_iter().map(|(k, v)| (k, Raw::Text(v))));
            }
            other => {
                return Err(
                    Reply::json(415, &json!({"data": null})).reason(format!("unsupported content type '{other}'"))
                )
            }
        }
    }
    let mut errors = Map::new();
    let mut out = Map::new();
    for (name, value) in raw {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            errors.insert(
                name,
                json!("property is not defined in schema and the schema does not allow additional properties"),
            );
            continue;
        };
        match check(spec.ty, &value) {
            Ok(v) => {
                out.insert(name, Value::String(v));
            }
            Err(e) => {
                errors.insert(name, Value::String(e));
            }
        }
    }
    for spec in specs.iter().filter(|s| s.required) {
        if !out.contains_key(spec.name) && !errors.contains_key(spec.name) {
            errors.insert(
                spec.name.to_owned(),
                json!("property is missing and it is not optional"),
            );
        }
    }
    if errors.is_empty() {
        Ok(Params(out))
    } else {
        Err(verification_failed(errors))
    }
}

enum Raw {
    Text(String),
    Json(Value),
}

fn check(ty: Ty, value: &Raw) -> Result<String, String> {
    let text = match value {
        Raw::Text(s) => s.clone(),
        Raw::Json(Value::String(s)) => s.clone(),
        Raw::Json(Value::Number(n)) => n.to_string(),
        // JSON booleans decode to 1/0 on the server.
        Raw::Json(Value::Bool(b)) => if *b { "1" } else { "0" }.to_owned(),
        Raw::Json(other) => return Err(format!("type check ('string') failed - got {other}")),
    };
    match ty {
        Ty::Bool => {
            if text == "0" || text == "1" {
                Ok(text)
            } else {
                Err(format!("type check ('boolean') failed - got '{text}'"))
            }
        }
        Ty::Int | Ty::VmId => {
            let n: i64 = text
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{text}'"))?;
            if matches!(ty, Ty::VmId) && !(100..=999_999_999).contains(&n) {
                return Err(if n < 100 {
                    "value must have a minimum value of 100".to_owned()
                } else {
                    "value must have a maximum value of 999999999".to_owned()
                });
            }
            Ok(n.to_string())
        }
        Ty::Str => Ok(text),
        Ty::UrlEncoded => {
            if text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c))
            {
                Ok(text)
            } else {
                Err(format!("invalid format - invalid urlencoded string: {text}"))
            }
        }
        Ty::Enum(values) => {
            if values.contains(&text.as_str()) {
                Ok(text)
            } else {
                Err(format!(
                    "value '{text}' does not have a value in the enumeration '{}'",
                    values.join(", ")
                ))
            }
        }
    }
}

/// Whether a decoded `sshkeys` value is a list of OpenSSH public keys (one per line).
pub fn valid_ssh_keys(decoded: &str) -> bool {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut any = false;
    for line in decoded
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
            return false;
        };
        let base64 = blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !TYPES.contains(&kind) || !base64 || blob.len() < 16 {
            return false;
        }
        any = true;
    }
    any
}
