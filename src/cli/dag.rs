//! `wspace dag`: the stage graph as text or Graphviz.

use petgraph::dot::{Config, Dot, RankDir};
use petgraph::graph::EdgeReference;

use crate::pipeline::{Pipeline, Stage};

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

/// petgraph's DOT writer over [`Pipeline::graph`]: nodes are stage indices labelled `name\n(kind)`,
/// edges run upstream → downstream labelled by their slot, left to right.
pub(super) fn dot(p: &Pipeline) -> String {
    let graph = p.graph();
    let config = [Config::GraphContentOnly, Config::RankDir(RankDir::LR), Config::NodeNoLabel, Config::EdgeNoLabel];
    let edge = |_, e: EdgeReference<&str>| format!("label = \"{}\" ", quoted(e.weight()));
    let node = |_, (_, st): (_, &&Stage)| format!("label = \"{}\\n({})\" ", quoted(&st.name), quoted(st.kind.name()));
    let body = Dot::with_attr_getters(&graph, &config, &edge, &node);
    format!("digraph \"{}\" {{\n{body}}}", quoted(&p.name))
}

/// Text inside a DOT string: `"` and `\` escaped.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use crate::diag::Source;
    use crate::pipeline::{check, raw};
    use crate::registry::Registry;

    #[test]
    fn dot_names_every_stage_and_slot() {
        let text = "[stages.a]\nkind = \"command\"\nrun = \"true\"\n\n[stages.b]\nkind = \"command\"\nrun = \"true\"\ninputs = { up = \"a\", again = \"a\" }\n";
        let raw = raw::parse(Source { name: "p.toml".into(), text: text.into() }).unwrap();
        let p = check::check(raw, &Registry::with_builtins(vec![]), std::path::Path::new("."), "p").unwrap();
        assert_eq!(
            super::dot(&p),
            "digraph \"p\" {\n    rankdir=\"LR\"\n    0 [ label = \"a\\n(command)\" ]\n    1 [ label = \"b\\n(command)\" ]\n    0 -> 1 [ label = \"again\" ]\n    0 -> 1 [ label = \"up\" ]\n}"
        );
    }
}
