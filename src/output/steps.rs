//! `flowrun steps NAME`: a step kind's parameters, outputs and journaling.

use flowrun_engine::step::KindInfo;
use std::fmt::Write as _;

pub fn describe(info: &KindInfo) -> String {
    let mut out = format!("{}: {}\n\nparameters:\n", info.name, info.doc);
    for p in info.params {
        let req = if p.required { "required" } else { "optional" };
        let _ = writeln!(out, "  {:<18} {req}, {}: {}", p.name, p.ty, p.doc);
    }
    for group in info.one_of {
        let _ = writeln!(out, "  (exactly one of: {})", group.join(", "));
    }
    if !info.outputs.is_empty() {
        let outs: Vec<String> = info
            .outputs
            .iter()
            .map(|o| {
                if info.secret_outputs.contains(o) {
                    format!("{o} (secret)")
                } else {
                    (*o).to_owned()
                }
            })
            .collect();
        let _ = writeln!(out, "outputs: {}", outs.join(", "));
    }
    if !info.journal {
        out.push_str("not journaled by default: it runs on every run (a probe)\n");
    }
    out
}
