//! What editors and shells need from flowrun: JSON Schemas of its files
//! (generated from the step registry, so they never drift from the code).

use crate::cli::SchemaKind;
use flowrun_engine::registry::Registry;
use std::io::Write as _;

/// `flowrun schema workflow|inventory`: the schema on stdout.
pub fn schema(kind: SchemaKind, registry: &Registry) -> i32 {
    let doc = match kind {
        SchemaKind::Workflow => flowrun_engine::schema::workflow(registry),
        SchemaKind::Inventory => flowrun_engine::schema::inventory(),
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    );
    0
}
