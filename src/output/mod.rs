//! Everything the CLI prints besides errors: result lines as a run goes
//! (`lines`, with live bars from `progress` and colour from `paint` on a
//! terminal), the recap at its end (`recap`), `plan` (`plan`), `history` and
//! `show` (`history`), and step documentation (`steps`). Commands compute,
//! these render; each returns text so the caller masks it once.

pub mod history;
pub mod lines;
pub mod paint;
pub mod plan;
pub mod progress;
pub mod recap;
pub mod steps;
