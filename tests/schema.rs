//! `flowrun schema`: the JSON Schemas editors use. Every workflow, example and
//! inventory the repository ships must pass them (whatever step kinds and
//! files exist when the test runs), and known-bad files must not, checked
//! with a real JSON Schema validator and against the loader's own verdict.

use crate::harness::Sandbox;
use flowrun_engine::diag::Source;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn schema(kind: &str) -> Value {
    let ran = Sandbox::new().run(&["schema", kind], 0);
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("`flowrun schema {kind}` is not JSON: {e}"))
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft7::new(schema).unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

fn yaml_json(path: &Path) -> Value {
    let src = Source::read(path).unwrap();
    flowrun_engine::yaml::parse(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_json()
}

/// Errors of `instance` against `v`, one line each with the place.
fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(p);
        }
    }
}

/// A workflow file: at the top of `workflows/` or `examples/` (their
/// subdirectories hold templates and files), or anything with `steps`.
fn workflow_files() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for d in ["workflows", "examples"] {
        yaml_files(&repo().join(d), &mut all);
    }
    all.into_iter()
        .filter(|p| {
            let top = p
                .parent()
                .is_some_and(|d| d == repo().join("workflows") || d == repo().join("examples"));
            top || yaml_json(p).get("steps").is_some()
        })
        .collect()
}

#[test]
fn schemas_are_valid_draft_7() {
    for kind in ["workflow", "inventory"] {
        let s = schema(kind);
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("the {kind} schema is not a valid JSON Schema: {e}");
        }
    }
}

#[test]
fn every_step_kind_and_parameter_is_in_the_workflow_schema() {
    let s = schema("workflow");
    let steps = Sandbox::new().run(&["steps"], 0);
    let kinds: Vec<&str> = steps
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(kinds.len() >= 10, "{kinds:?}");
    let uses: Vec<&str> = s["definitions"]["step"]["properties"]["uses"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(uses, kinds);
    for k in &kinds {
        let with = &s["definitions"][format!("with.{k}")];
        let described = Sandbox::new().run(&["steps", k], 0).stdout;
        for line in described.lines().filter(|l| l.contains(", ") && l.starts_with("  ")) {
            let name = line.split_whitespace().next().unwrap();
            if name.starts_with('(') {
                continue;
            }
            let p = &with["properties"][name];
            assert!(p.is_object(), "`{k}.{name}` is not in the schema");
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()));
            if line.contains(" required, ") {
                assert!(
                    with["required"].as_array().unwrap().iter().any(|r| r == name),
                    "`{k}.{name}` should be required"
                );
            }
        }
    }
    // Choices come through as enums.
    let state = &s["definitions"]["with.apt"]["properties"]["state"]["anyOf"][0]["enum"];
    assert!(state.as_array().unwrap().iter().any(|v| v == "present"), "{state}");
}

#[test]
fn shipped_workflows_examples_and_inventories_pass() {
    let wf = validator(&schema("workflow"));
    let files = workflow_files();
    assert!(
        files.len() >= 6,
        "found only {files:?}: the walk of workflows/ and examples/ is broken"
    );
    let mut failures = Vec::new();
    for f in &files {
        for e in errors(&wf, &yaml_json(f)) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    let inv_schema = schema("inventory");
    let inv = validator(&inv_schema);
    // group_vars/ and host_vars/ files are mappings of variables.
    let mut vars_schema = inv_schema.clone();
    vars_schema["$ref"] = "#/definitions/vars".into();
    vars_schema.as_object_mut().unwrap().remove("additionalProperties");
    let vars = validator(&vars_schema);
    let mut inventories = Vec::new();
    yaml_files(&repo().join("inventory"), &mut inventories);
    assert!(inventories.len() >= 3, "{inventories:?}");
    for f in &inventories {
        let in_vars_dir = f
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "group_vars" || d == "host_vars");
        let v = if in_vars_dir { &vars } else { &inv };
        for e in errors(v, &yaml_json(f)) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "schema violations:\n{}", failures.join("\n"));
}

/// Known-bad workflows: the schema rejects each one where the loader does,
/// at the place the loader names.
#[test]
fn known_bad_files_are_rejected_by_schema_and_loader() {
    let wf = validator(&schema("workflow"));
    let cases: &[(&str, &str, &str)] = &[
        ("unknown top-level key", "nme: x\nsteps: []\n", ""),
        (
            "unknown step kind",
            "steps:\n  - { id: a, uses: aptt, with: { packages: [x] } }\n",
            "/steps/0/uses",
        ),
        (
            "unknown parameter",
            "steps:\n  - { id: a, uses: file, with: { path: /tmp/x, mdoe: '0644' } }\n",
            "/steps/0/with",
        ),
        (
            "value not among the choices",
            "steps:\n  - { id: a, uses: file, with: { path: /tmp/x, state: dir } }\n",
            "/steps/0/with/state",
        ),
        (
            "missing required parameter",
            "steps:\n  - { id: a, uses: file, with: { state: directory } }\n",
            "/steps/0/with",
        ),
        (
            "both of an exclusive pair",
            "steps:\n  - { id: a, uses: command, with: { argv: [true], shell: 'true' } }\n",
            "/steps/0/with",
        ),
        (
            "an integer that is not one",
            "steps:\n  - { id: a, uses: wait_for, with: { host: 127.0.0.1, port: eighty } }\n",
            "/steps/0/with/port",
        ),
        (
            "unknown step key",
            "steps:\n  - { id: a, uses: command, with: { argv: [true] }, retries: 3 }\n",
            "/steps/0",
        ),
        (
            "secret without a source",
            "secrets:\n  t: { optional: true }\nsteps: []\n",
            "/secrets/t",
        ),
    ];
    let sb = Sandbox::new();
    for (what, text, place) in cases {
        let path = sb.write("bad.yml", text);
        let errs = errors(&wf, &yaml_json(&path));
        assert!(!errs.is_empty(), "{what}: the schema accepted\n{text}");
        assert!(
            errs.iter().any(|e| e.starts_with(place)),
            "{what}: no error at `{place}`: {errs:?}"
        );
        let ran = sb.run(&["validate", "bad.yml"], 2);
        assert!(ran.stderr.contains("bad.yml:"), "{what}: {}", ran.stderr);
    }
    let inv = validator(&schema("inventory"));
    let bad = [
        "all:\n  hosts:\n    a: { host_key_policy: loose }\n",
        "all:\n  hostz:\n    a: {}\n",
        "all:\n  children:\n    g:\n      hosts:\n        a: { port: ssh }\n",
    ];
    for text in bad {
        let p = sb.write("hosts.yml", text);
        assert!(!errors(&inv, &yaml_json(&p)).is_empty(), "inventory accepted:\n{text}");
        let wf = sb.write("ok.yml", "steps: []\n");
        sb.run(&["validate", wf.to_str().unwrap(), "-i", "hosts.yml"], 2);
    }
}

/// The keys the schema knows are exactly those the loader accepts: the
/// loader's own "valid keys" help for each place is compared with the
/// schema's properties there, so a key added to one and not the other fails.
#[test]
fn schema_keys_match_the_loaders() {
    let s = schema("workflow");
    let sb = Sandbox::new();
    let valid = |text: &str, place: &str| -> Vec<String> {
        sb.write("k.yml", text);
        let ran = sb.run(&["validate", "k.yml"], 2);
        let err = &ran.stderr;
        let at = err
            .find(&format!("unknown key `bogus` in {place}"))
            .unwrap_or_else(|| panic!("no error for {place}:\n{err}"));
        let help = err[at..].lines().find(|l| l.contains("valid keys:")).unwrap();
        let mut keys: Vec<String> = help
            .split("valid keys:")
            .nth(1)
            .unwrap()
            .split(',')
            .map(|k| k.trim().trim_matches('`').to_owned())
            .collect();
        keys.sort();
        keys
    };
    let props = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["properties"].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let step = "{ id: a, uses: command, with: { argv: [true] }";
    assert_eq!(valid("bogus: 1\nsteps: []\n", "a workflow"), props(&s));
    assert_eq!(
        valid(&format!("steps:\n  - {step}, bogus: 1 }}\n"), "a step"),
        props(&s["definitions"]["step"])
    );
    assert_eq!(
        valid(&format!("steps: []\nhandlers:\n  - {step}, bogus: 1 }}\n"), "a handler"),
        props(&s["definitions"]["handler"])
    );
    assert_eq!(
        valid(&format!("steps:\n  - {step}, retry: {{ bogus: 1 }} }}\n"), "`retry`"),
        props(&s["definitions"]["step"]["properties"]["retry"])
    );
}
