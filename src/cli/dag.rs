//! `wspace dag`: the stage graph as text or Graphviz.

use crate::pipeline::Pipeline;

pub(super) fn text(p: &Pipeline) -> String {
    let mut out = format!("pipeline `{}`: {} stages", p.name, p.stages.len());
    for (i, st) in p.stages.iter().enumerate() {
        out.push_str(&format!("\n{} ({})", st.name, st.kind.name()));
        for (slot, up) in p.upstream_names(i) {
            out.push_str(&format!("\n  {slot} ← {up}"));
        }
    }
    out
}

pub(super) fn dot(p: &Pipeline) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", p.name);
    for st in &p.stages {
        out.push_str(&format!("  \"{}\" [label=\"{}\\n({})\"];\n", st.name, st.name, st.kind.name()));
    }
    for (i, st) in p.stages.iter().enumerate() {
        for (slot, up) in p.upstream_names(i) {
            out.push_str(&format!("  \"{up}\" -> \"{}\" [label=\"{slot}\"];\n", st.name));
        }
    }
    out.push('}');
    out
}
