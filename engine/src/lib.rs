//! flowrun's engine: loads workflows and inventories, checks them, plans the
//! DAG of step instances, runs it against hosts through transports, journals
//! every result, and reports. It knows nothing of particular steps: they come
//! in through the [`step::StepKind`] registry.

pub mod diag;
pub mod host;
pub mod model;
pub mod paths;
pub mod secrets;
pub mod step;
pub mod template;
pub mod transport;
pub mod yaml;
