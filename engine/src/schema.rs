//! JSON Schemas of workflow and inventory files, for editors (the YAML
//! language server completes keys, shows parameter docs and flags mistakes
//! while typing). The workflow schema is generated from the step registry
//! every time it is asked for: each step kind, its parameters with their
//! types, choices, docs and which are required, so it cannot drift from the
//! code that loads the files. It accepts what the loader accepts (a template
//! wherever a typed value may be templated) and rejects what the loader
//! rejects where JSON Schema can say so; the loader stays the authority.
//! Draft-07, the newest draft editors' YAML tooling supports in full.

use crate::inventory::CONN_KEYS;
use crate::registry::Registry;
use crate::step::{KindInfo, ParamSpec, ParamType};
use serde_json::{json, Map, Value};

const DRAFT: &str = "http://json-schema.org/draft-07/schema#";

/// The keys of a step, with their schema and what they mean.
fn step_keys(handler: bool) -> Vec<(&'static str, Value)> {
    let scalar = || json!({"type": ["string", "number", "boolean"]});
    let mut keys = vec![
        (
            "id",
            json!({"type": ["string", "integer"], "pattern": "^[A-Za-z0-9_-]+$",
                   "description": "Unique within the workflow: letters, digits, `-` and `_`."}),
        ),
        ("name", described(scalar(), "A human-readable name shown in output.")),
        (
            "uses",
            json!({"type": "string", "description": "The built-in step this runs (`flowrun steps` lists them)."}),
        ),
        (
            "with",
            json!({"type": ["object", "null"], "description": "The step's parameters (`flowrun steps NAME`)."}),
        ),
        (
            "when",
            described(
                scalar(),
                "A condition (template) rendered before the step runs; falsy skips it.",
            ),
        ),
        ("retry", retry()),
        (
            "timeout",
            described(duration(), "Abort an attempt after this long (`30s`, `5m`)."),
        ),
        ("become", described(bool_(), "Run with sudo on the target.")),
        (
            "become_user",
            described(scalar(), "The user sudo switches to (default root)."),
        ),
        (
            "ignore_errors",
            described(bool_(), "A failure of this step does not stop what depends on it."),
        ),
        (
            "changed_when",
            described(
                scalar(),
                "A condition with `outputs` in scope: whether a run that happened counts as a change.",
            ),
        ),
    ];
    if !handler {
        keys.extend(dag_keys());
    }
    keys
}

/// The keys of a step that handlers do not have: where it runs and its place in the DAG.
fn dag_keys() -> Vec<(&'static str, Value)> {
    let scalar = || json!({"type": ["string", "number", "boolean"]});
    vec![
        (
            "hosts",
            described(
                scalar(),
                "Host pattern: a group, a host, `all`, `localhost` (default), with `:`, `:&`, `:!`.",
            ),
        ),
        (
            "needs",
            described(str_list(), "Steps that must finish before this one (DAG edges)."),
        ),
        (
            "runs",
            json!({"enum": ["on_success", "on_failure", "always"],
                   "description": "`on_success` (default): when its needs succeeded; `on_failure`: only when one of them failed, was cancelled or was left unfinished by a run that died (a rollback); `always`: either way (a cleanup). `failure` and `failures` are in scope."}),
        ),
        (
            "notify",
            described(
                str_list(),
                "Handlers to run once per host, after the steps, when this step changed something.",
            ),
        ),
        (
            "for_each",
            json!({"type": ["array", "string"],
                   "description": "One instance per item (`item` in scope): a list, or a template that renders to one."}),
        ),
        (
            "label",
            described(
                json!({"type": "string"}),
                "How a `for_each` item is shown in output: a template with `item` in scope (default: its `name`).",
            ),
        ),
        ("tags", described(str_list(), "Tags for `--tags` and `--skip-tags`.")),
        (
            "journal",
            described(
                json!({"type": "boolean"}),
                "false: run every time (probes, validations); default per step kind.",
            ),
        ),
    ]
}

fn described(mut schema: Value, doc: &str) -> Value {
    schema["description"] = Value::String(doc.to_owned());
    schema
}

fn template() -> Value {
    json!({"$ref": "#/definitions/template"})
}

fn bool_() -> Value {
    json!({"anyOf": [{"type": ["boolean", "null"]}, template()]})
}

fn str_list() -> Value {
    json!({"type": ["array", "string", "number", "boolean", "null"],
           "items": {"type": ["string", "number", "boolean"]}})
}

fn duration() -> Value {
    json!({"anyOf": [{"type": ["number", "null"], "minimum": 0}, {"$ref": "#/definitions/duration"}, template()]})
}

fn retry() -> Value {
    json!({
        "type": "object",
        "description": "Retry a failing step: `{ attempts: 5, delay: 2s, backoff: 2.0, until: \"...\" }`.",
        "additionalProperties": false,
        "properties": {
            "attempts": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Attempts in all (default 3)."},
            "delay": described(duration(), "Wait before the second attempt (default 1s)."),
            "backoff": {"type": "number", "minimum": 1, "maximum": 10, "description": "Multiplies the delay after each attempt (default 1.0)."},
            "max_delay": described(duration(), "No wait between attempts is longer than this (default 5m)."),
            "jitter": {"anyOf": [{"type": "boolean"}, {"type": "number", "minimum": 0, "maximum": 1}],
                       "description": "Shorten each wait by a random part of up to this fraction of it (`true` is 0.5)."},
            "deadline": described(duration(), "An overall bound on all attempts and waits together."),
            "until": {"type": ["string", "number", "boolean"], "description": "A condition with `outputs` in scope; retry until it is true."}
        }
    })
}

/// The schema of one parameter type, as the loader checks literal values:
/// a template (`{{...}}`) and null are accepted wherever a value is.
pub fn param_type(ty: ParamType) -> Value {
    let t = template();
    match ty {
        ParamType::Str => json!({"type": ["string", "number", "boolean", "null"]}),
        ParamType::Int => json!({"anyOf": [
            {"type": ["integer", "null"]},
            {"type": "string", "pattern": "^\\s*[-+]?[0-9]+\\s*$"},
            t
        ]}),
        ParamType::Bool => json!({"anyOf": [{"type": ["boolean", "null"]}, t]}),
        ParamType::StrList => json!({"anyOf": [
            {"type": ["string", "integer", "null"]},
            {"type": "array", "items": {"type": ["string", "number", "boolean"]}}
        ]}),
        ParamType::List => json!({"anyOf": [{"type": ["array", "null"]}, t]}),
        ParamType::Map => json!({"anyOf": [{"type": ["object", "null"]}, t]}),
        ParamType::Duration => duration(),
        ParamType::Enum(choices) => json!({"anyOf": [{"enum": choices}, {"type": "null"}, t]}),
        ParamType::Mode => json!({"anyOf": [
            {"type": ["integer", "null"], "minimum": 0, "maximum": 7777},
            {"type": "string", "pattern": "^\\s*(0o)?[0-7]{1,4}\\s*$"},
            t
        ]}),
        ParamType::Url => {
            json!({"anyOf": [{"type": "string", "pattern": "^https?://[^\\s/?#]+"}, {"type": "null"}, t]})
        }
        ParamType::Any => json!({}),
    }
}

fn param_schema(p: &ParamSpec) -> Value {
    let need = if p.required { "required" } else { "optional" };
    described(param_type(p.ty), &format!("{} ({need}; {})", p.doc, p.ty))
}

/// The schema of a step kind's `with`.
fn with_schema(info: &KindInfo) -> Value {
    let props: Map<String, Value> = info
        .params
        .iter()
        .map(|p| (p.name.to_owned(), param_schema(p)))
        .collect();
    let required: Vec<&str> = info.params.iter().filter(|p| p.required).map(|p| p.name).collect();
    let mut s = json!({
        "type": if required.is_empty() && info.one_of.is_empty() { json!(["object", "null"]) } else { json!("object") },
        "description": format!("Parameters of `{}`: {}", info.name, info.doc),
        "additionalProperties": false,
        "properties": props,
    });
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    // Exactly one of each group: `oneOf` of `required` does it.
    let groups: Vec<Value> = info
        .one_of
        .iter()
        .map(|g| json!({"oneOf": g.iter().map(|n| json!({"required": [n]})).collect::<Vec<_>>()}))
        .collect();
    if !groups.is_empty() {
        s["allOf"] = Value::Array(groups);
    }
    s
}

/// A step (or handler): the common keys, and per kind the schema of its `with`.
fn step_schema(registry: &Registry, handler: bool) -> Value {
    let mut props: Map<String, Value> = step_keys(handler).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let kinds: Vec<&str> = registry.names();
    let docs: Vec<&str> = registry.kinds().map(|k| k.info().doc).collect();
    props["uses"]["enum"] = json!(kinds);
    // Shown by editors beside each choice (vscode-json-languageservice's extension).
    props["uses"]["enumDescriptions"] = json!(docs);
    let per_kind: Vec<Value> = registry
        .kinds()
        .map(|k| {
            let info = k.info();
            let mut then = json!({"properties": {"with": {"$ref": format!("#/definitions/with.{}", info.name)}}});
            if info.params.iter().any(|p| p.required) || !info.one_of.is_empty() {
                then["required"] = json!(["with"]);
            }
            json!({"if": {"properties": {"uses": {"const": info.name}}, "required": ["uses"]}, "then": then})
        })
        .collect();
    json!({
        "type": "object",
        "description": if handler { "A handler: runs once per host after the steps, when notified." } else { "A step: one built-in step kind run on hosts." },
        "required": ["id", "uses"],
        "additionalProperties": false,
        "properties": props,
        "allOf": per_kind,
    })
}

/// One place a secret may come from.
fn secret_source() -> Value {
    let one = |doc: &str| json!({"type": "string", "description": doc});
    json!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": false,
        "properties": {
            "env": one("An environment variable; set when defined and not empty."),
            "file": one("A file (`~` and `$VAR` expanded; an unset `$VAR` skips it); its text without the final newline."),
            "command": one("A shell command; its standard output without the final newline, when it exits 0."),
        }
    })
}

fn secret_schema() -> Value {
    let one_or_more = |doc: &str| {
        json!({"description": doc, "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]})
    };
    json!({
        "description": "Where a secret comes from. Sources are tried in order, the first that is set wins: in a mapping env, then file, then command; in a list (or `from:`), the list's order. Never printed or journaled in plaintext.",
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "env": one_or_more("Environment variables, tried first."),
                    "file": one_or_more("Files, tried after `env`."),
                    "command": one_or_more("Shell commands, tried last."),
                    "from": {"type": "array", "items": {"$ref": "#/definitions/secret_source"}, "minItems": 1,
                             "description": "Sources in the order to try them."},
                    "optional": {"type": "boolean", "description": "true: no source set is fine, the secret is empty."}
                },
                "anyOf": [{"required": ["env"]}, {"required": ["file"]}, {"required": ["command"]}, {"required": ["from"]}],
                "not": {"anyOf": [
                    {"required": ["from", "env"]}, {"required": ["from", "file"]}, {"required": ["from", "command"]}
                ]}
            },
            {"type": "array", "items": {"$ref": "#/definitions/secret_source"}, "minItems": 1}
        ]
    })
}

fn common_definitions() -> Map<String, Value> {
    let mut defs = Map::new();
    defs.insert(
        "template".into(),
        json!({"type": "string", "pattern": "\\{\\{", "description": "A handlebars template, rendered when the step runs."}),
    );
    defs.insert(
        "duration".into(),
        json!({"type": "string", "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[A-Za-zµ]*\\s*)+$",
               "description": "A duration: `500ms`, `30s`, `5m`, `1h30m`, or a number of seconds."}),
    );
    defs
}

/// The JSON Schema of a workflow file, for the step kinds in `registry`.
pub fn workflow(registry: &Registry) -> Value {
    let mut defs = common_definitions();
    defs.insert("step".into(), step_schema(registry, false));
    defs.insert("handler".into(), step_schema(registry, true));
    defs.insert("secret".into(), secret_schema());
    defs.insert("secret_source".into(), secret_source());
    for k in registry.kinds() {
        let info = k.info();
        defs.insert(format!("with.{}", info.name), with_schema(info));
    }
    json!({
        "$schema": DRAFT,
        "title": "flowrun workflow",
        "description": "A flowrun workflow: variables, secrets, and a DAG of idempotent steps.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": ["string", "number", "boolean"], "description": "The workflow's name (default: the file's stem)."},
            "description": {"type": ["string", "number", "boolean"], "description": "One line shown by `flowrun list`."},
            "imports": {"type": ["array", "string", "null"], "items": {"type": "string"},
                        "description": "Workflow files (relative to this one) whose steps join this DAG."},
            "vars": {"type": ["object", "null"], "description": "Variables of the lowest precedence."},
            "secrets": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/definitions/secret"},
                        "description": "Secrets by name, `secrets.NAME` in templates."},
            "steps": {"type": ["array", "null"], "items": {"$ref": "#/definitions/step"}},
            "handlers": {"type": ["array", "null"], "items": {"$ref": "#/definitions/handler"}},
            "fail_fast": {"type": "boolean", "description": "Stop every host at the first failure."},
            "max_fail_percentage": {"type": "number", "minimum": 0, "maximum": 100,
                                    "description": "Stop the run when more than this share of hosts failed."}
        },
        "definitions": defs,
    })
}

/// The schema of one inventory connection key (`None` for a key this
/// module does not know, which a test forbids).
fn conn_key(key: &str) -> Option<Value> {
    let text = || json!({"type": ["string", "number", "boolean", "null"]});
    Some(match key {
        "address" | "ansible_host" => described(text(), "The address to connect to (default: the host's name)."),
        "port" | "ansible_port" => json!({"description": "The SSH port.", "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 65535},
            {"type": "string", "pattern": "^[0-9]{1,5}$"}
        ]}),
        "user" | "ansible_user" => described(text(), "The SSH user."),
        "identity_file" | "ansible_ssh_private_key_file" => described(text(), "The SSH private key file."),
        "known_hosts_file" => described(text(), "The known_hosts file (default: the user's own)."),
        "ssh_config_file" => described(text(), "An ssh_config file for this host."),
        "host_key_policy" => json!({"enum": ["strict", "accept-new"],
                                    "description": "strict (default): the host key must be known; accept-new: learn it on first contact."}),
        "ssh_args" => json!({"type": ["array", "string"], "items": {"type": ["string", "number", "boolean"]},
                             "description": "Extra ssh arguments."}),
        "become" | "ansible_become" => json!({"type": "boolean", "description": "sudo for every step on this host."}),
        "become_user" | "ansible_become_user" => described(text(), "The user sudo switches to."),
        "connection" | "ansible_connection" => json!({"enum": ["ssh", "local"],
                                                      "description": "ssh (default) or local (run on this machine)."}),
        _ => return None,
    })
}

/// The JSON Schema of an inventory file in Ansible's YAML structure. Its
/// `definitions/vars` is the schema of `group_vars/` and `host_vars/` files.
pub fn inventory() -> Value {
    let conn: Map<String, Value> = CONN_KEYS
        .iter()
        .filter_map(|k| conn_key(k).map(|s| ((*k).to_owned(), s)))
        .collect();
    json!({
        "$schema": DRAFT,
        "title": "flowrun inventory",
        "description": "Hosts and groups in the structure of Ansible's YAML inventory; top-level groups are children of `all`.",
        "type": ["object", "null"],
        "additionalProperties": {"$ref": "#/definitions/group"},
        "definitions": {
            "group": {
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "hosts": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/definitions/vars"},
                              "description": "Hosts by name, each with its variables and connection keys."},
                    "vars": {"$ref": "#/definitions/vars"},
                    "children": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/definitions/group"},
                                 "description": "Groups inside this one."}
                }
            },
            "vars": {
                "type": ["object", "null"],
                "description": "Variables; connection keys among them configure how hosts are reached.",
                "properties": conn,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_key_has_a_schema() {
        for k in CONN_KEYS {
            assert!(conn_key(k).is_some(), "inventory key `{k}` has no schema");
        }
    }

    #[test]
    fn every_param_type_has_a_schema() {
        for ty in [
            ParamType::Str,
            ParamType::Int,
            ParamType::Bool,
            ParamType::StrList,
            ParamType::List,
            ParamType::Map,
            ParamType::Duration,
            ParamType::Enum(&["a"]),
            ParamType::Mode,
            ParamType::Url,
        ] {
            assert!(param_type(ty).as_object().is_some_and(|o| !o.is_empty()), "{ty:?}");
        }
    }
}
