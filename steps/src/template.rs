//! `template`: a file rendered from a template beside the workflow, Jinja2
//! for `.j2` files (so Ansible roles' templates work unchanged), handlebars
//! otherwise. Rendering happens when the step is built (strict: an undefined
//! variable is an error naming it and the template); from then on it is
//! exactly a `copy` of the rendered text.

use crate::attrs;
use crate::copy::{read_src, ContentStep, BACKUP, DEST, OUTPUTS};
use crate::params::Params;
use flowrun_engine::step::{BuildContext, KindInfo, ParamSpec, ParamType, Step, StepError, StepKind};
use serde_json::{Map, Value};

pub struct TemplateKind;

static INFO: KindInfo = KindInfo {
    name: "template",
    version: 1,
    doc: "Render a template into a file on the target: Jinja2 for `.j2` files (as Ansible), handlebars otherwise; strict: undefined variables are errors",
    params: &[
        ParamSpec::req(
            "src",
            ParamType::Str,
            "the template file on this machine, relative to the workflow file",
        ),
        DEST,
        attrs::MODE,
        attrs::OWNER,
        attrs::GROUP,
        BACKUP,
    ],
    one_of: &[],
    outputs: OUTPUTS,
    secret_outputs: &[],
    journal: true,
};

impl StepKind for TemplateKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let src = p.str("src")?;
        let text = String::from_utf8(read_src(cx, "src", &src)?)
            .map_err(|_| StepError::param("src", format!("`{src}` is not UTF-8 text")))?;
        let rendered = if src.ends_with(".j2") {
            // Jinja2, as Ansible roles write it: errors name `src:line`.
            let name = cx.workflow_path(&src).display().to_string();
            flowrun_engine::jinja::render(&name, &text, cx.vars)
                .map_err(|e| StepError::failed(format!("template {e}")))?
        } else {
            cx.render(&format!("template `{src}`"), &text)?
        };
        Ok(Box::new(ContentStep::from_params(&p, rendered.into_bytes())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;
    use crate::testing::{assert_idempotent, build, local_context};
    use flowrun_engine::step::Check;
    use serde_json::json;

    #[tokio::test]
    async fn renders_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml.hbs"),
            "concurrent = {{concurrent}}\n{{#each runners}}[[runners]]\nname = \"{{this}}\"\n{{/each}}",
        )
        .unwrap();
        let dest = dir.path().join("config.toml");
        let vars = json!({"concurrent": 4, "runners": ["a", "b"]});
        let s = build(
            &TemplateKind,
            json!({"src": "config.toml.hbs", "dest": dest, "mode": "0600"}),
            vars,
            dir.path(),
        )
        .unwrap();
        let want = "concurrent = 4\n[[runners]]\nname = \"a\"\n[[runners]]\nname = \"b\"\n";
        assert_eq!(s.fingerprint_extra(), Some(sha256_hex(want.as_bytes())));
        let cx = local_context();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::Drift(_)));
        assert!(!dest.exists(), "check wrote the file");
        assert_idempotent(s.as_ref(), &cx).await;
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), want);
    }

    #[test]
    fn undefined_variable_names_it_and_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.hbs"), "x = {{missing_var}}\n").unwrap();
        let e = build(
            &TemplateKind,
            json!({"src": "t.hbs", "dest": "/tmp/never-written"}),
            json!({}),
            dir.path(),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("`missing_var`"), "{e}");
        assert!(e.message.contains("template `t.hbs`"), "{e}");
        let e = build(
            &TemplateKind,
            json!({"src": "nope.hbs", "dest": "/tmp/x"}),
            json!({}),
            dir.path(),
        )
        .err()
        .unwrap();
        assert!(e.message.starts_with("parameter `src`: cannot read"), "{e}");
    }
}
