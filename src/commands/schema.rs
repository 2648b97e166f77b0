//! `flowrun schema workflow|inventory`: the JSON Schema of those files on
//! stdout, for editors. Generated from the step registry at each call, so it
//! never drifts from the code.

use crate::cli::SchemaKind;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::registry;
use std::io::Write as _;

pub fn schema(kind: SchemaKind) -> Result<ExitStatus, Error> {
    let doc = match kind {
        SchemaKind::Workflow => flowrun_engine::schema::workflow(&registry()),
        SchemaKind::Inventory => flowrun_engine::schema::inventory(),
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    );
    Ok(ExitStatus::Success)
}
