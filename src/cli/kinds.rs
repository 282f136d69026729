//! `wspace kinds [KIND]`: the stage kinds, their parameters and inputs.

use crate::registry::Registry;

use super::fail::Fail;

pub(super) fn kinds(registry: &Registry, only: Option<&str>) -> Result<u8, Fail> {
    if let Some(k) = only {
        if registry.get(k).is_none() {
            return Err(Fail(
                format!("error: no kind `{k}`; known kinds: {}", registry.names().collect::<Vec<_>>().join(", ")),
                2,
            ));
        }
    }
    for kind in registry.kinds().filter(|k| only.is_none_or(|o| o == k.name())) {
        println!("{} (version {}): {}", kind.name(), kind.version(), kind.summary());
        match kind.inputs() {
            wspace_stage_api::Inputs::Any => println!("  inputs: any slot names"),
            wspace_stage_api::Inputs::Slots(slots) => {
                for (s, required, doc) in slots {
                    println!("  input {s}{}: {doc}", if required { "" } else { " (optional)" });
                }
            }
        }
        for p in kind.params() {
            let default = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
            println!("  {}: {}{default} — {}", p.name, p.ty.describe(), p.doc);
        }
        println!();
    }
    Ok(0)
}
