//! flowrun's engine: loads workflows and inventories, checks them, plans the
//! DAG of step instances, runs it against hosts through transports, journals
//! every result, and reports. It knows nothing of particular steps: they come
//! in through the [`step::StepKind`] registry.

pub mod clock;
pub mod diag;
pub mod exec;
pub mod host;
pub mod inventory;
pub mod jinja;
pub mod journal;
pub mod loader;
pub mod model;
pub mod paths;
pub mod plan;
pub mod pool;
pub mod registry;
pub mod report;
pub mod schema;
pub mod secrets;
pub mod status;
pub mod step;
pub mod template;
pub mod template_files;
pub mod transport;
pub mod yaml;
