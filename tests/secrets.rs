//! Secrets with fallbacks through the real binary: the first source that is
//! set wins (env, then file, then command; or a list's order), `optional`
//! makes none set an empty value, and a missing required secret names every
//! source tried, with nothing run and the value never printed.

use crate::harness::Sandbox;

const WF: &str = r#"
    secrets:
      token:
        env: FLOWRUN_T_TOKEN
        file: [$FLOWRUN_T_TOKEN_FILE, "$DIR/default-token"]
      ordered:
        - command: "exit 1"
        - env: FLOWRUN_T_ORDERED
        - file: "$DIR/ordered"
      maybe: { env: FLOWRUN_T_MAYBE, optional: true }
    steps:
      - id: write
        uses: copy
        with: { dest: "$DIR/out", content: "{{secrets.token}}|{{secrets.ordered}}|{{secrets.maybe}}|\n", mode: "0600" }
"#;

#[test]
fn the_first_source_that_is_set_wins() {
    let sb = Sandbox::new();
    sb.write("wf.yml", WF);
    sb.write("default-token", "from-default-file\n");
    sb.write("named-token", "from-named-file\n");
    sb.write("ordered", "ordered-from-file\n");
    let named = sb.path("named-token").display().to_string();
    let run = |env: &[(&str, &str)]| {
        std::fs::remove_file(sb.path("out")).ok();
        let mut c = sb.cmd(&["run", "wf.yml", "--force"]);
        for (k, v) in env {
            c = c.env(k, v);
        }
        let ran = c.expect(0);
        assert!(!ran.stdout.contains("from-"), "a secret in the output:\n{}", ran.stdout);
        sb.read("out")
    };
    assert_eq!(run(&[]), "from-default-file|ordered-from-file||\n");
    assert_eq!(
        run(&[("FLOWRUN_T_TOKEN_FILE", &named), ("FLOWRUN_T_ORDERED", "ordered-env")]),
        "from-named-file|ordered-env||\n"
    );
    assert_eq!(
        run(&[
            ("FLOWRUN_T_TOKEN", "from-env"),
            ("FLOWRUN_T_TOKEN_FILE", &named),
            ("FLOWRUN_T_MAYBE", "maybe-set")
        ]),
        "from-env|ordered-from-file|maybe-set|\n"
    );
}

#[test]
fn a_missing_required_secret_names_every_source_and_nothing_runs() {
    let sb = Sandbox::new();
    sb.write("wf.yml", WF);
    sb.write("ordered", "ordered-from-file\n");
    let ran = sb.run(&["run", "wf.yml"], 2);
    ran.stderr_has("wf.yml:2:3")
        .stderr_has("secret `token` is not set: tried environment variable `FLOWRUN_T_TOKEN` (not set), file `$FLOWRUN_T_TOKEN_FILE` (`$FLOWRUN_T_TOKEN_FILE` is not set), file `")
        .stderr_has("default-token` (does not exist)")
        .stderr_has("optional: true");
    assert!(!sb.exists("out"), "nothing ran");
}

#[test]
fn declaration_errors_point_at_the_line() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yml",
        "secrets:\n  t: { from: [ {env: A} ], file: /x }\n  u: { optional: yes-please, env: B }\nsteps: []\n",
    );
    sb.run(&["validate", "wf.yml"], 2)
        .stderr_has("wf.yml:2:")
        .stderr_has("does not mix")
        .stderr_has("wf.yml:3:")
        .stderr_has("`optional` of secret `u` must be a boolean");
}
