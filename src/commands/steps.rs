//! `flowrun steps [NAME]`: the built-in steps, or one step's parameters and outputs.

use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::registry;
use flowrun_engine::diag::{suggest, Diagnostic};

pub fn steps(name: Option<&str>) -> Result<ExitStatus, Error> {
    let registry = registry();
    let Some(name) = name else {
        for k in registry.kinds() {
            let info = k.info();
            println!("{:<14} {}", info.name, info.doc);
        }
        return Ok(ExitStatus::Success);
    };
    let Some(kind) = registry.get(name) else {
        let d = suggest(
            Diagnostic::new(format!("unknown step `{name}`")),
            name,
            &registry.names(),
            "steps",
        );
        return Err(d.into());
    };
    print!("{}", crate::output::steps::describe(kind.info()));
    Ok(ExitStatus::Success)
}
