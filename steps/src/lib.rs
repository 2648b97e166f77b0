//! flowrun's built-in steps, one module per step kind, each against the
//! engine's `StepKind`/`Step` contract. `registry()` lists them all.

pub mod params;
#[doc(hidden)]
pub mod testing;

use flowrun_engine::step::StepKind;

/// Every built-in step kind.
pub fn registry() -> Vec<Box<dyn StepKind>> {
    vec![]
}
