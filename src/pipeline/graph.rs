//! The stage graph, held by petgraph: node `i` is stage `i`, one edge per input, upstream → downstream,
//! weighted by its slot. [`order`] sorts it topologically, in file order where the inputs leave a
//! choice, or finds a cycle, which [`cycle_error`] names whole; [`Pipeline::graph`] is what `wspace dag
//! --dot` writes with petgraph's DOT writer, and [`Pipeline::select`] closes a choice of stages over
//! their ancestors.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction::{Incoming, Outgoing};

use super::model::{Pipeline, Stage};
use super::raw::RawPipeline;
use crate::diag::{stages_help, Diagnostic};

/// The graph of `nodes`: each a weight and its inputs (slot → index of the upstream node), `None` for
/// a stage that failed its checks (it has no edges). A node's input edges are added in slot order.
pub fn build<'a, N>(nodes: impl IntoIterator<Item = (N, Option<&'a BTreeMap<String, usize>>)>) -> DiGraph<N, &'a str> {
    let (weights, inputs): (Vec<N>, Vec<_>) = nodes.into_iter().unzip();
    let mut graph = DiGraph::with_capacity(weights.len(), weights.len());
    for w in weights {
        graph.add_node(w);
    }
    for (i, inputs) in inputs.into_iter().enumerate() {
        for (slot, &up) in inputs.into_iter().flatten() {
            graph.add_edge(NodeIndex::new(up), NodeIndex::new(i), slot.as_str());
        }
    }
    graph
}

/// The node indices in topological order, the lowest index first wherever the edges allow (so listings
/// read like the file); or, if the edges form a cycle, one cycle ([`cycle`]).
///
/// Kahn's algorithm with a min-heap, rather than petgraph's `toposort`, which orders ready nodes by its
/// own traversal and reports a cycle as one node.
pub fn order<N, E>(graph: &DiGraph<N, E>) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting: Vec<usize> = graph.node_indices().map(|n| graph.edges_directed(n, Incoming).count()).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..waiting.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(waiting.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for edge in graph.edges_directed(NodeIndex::new(i), Outgoing) {
            let down = edge.target().index();
            waiting[down] -= 1;
            if waiting[down] == 0 {
                ready.push(Reverse(down));
            }
        }
    }
    if order.len() == waiting.len() {
        Ok(order)
    } else {
        Err(cycle(graph))
    }
}

/// A cycle of `graph`, in data-flow order: the first back edge that a depth-first search meets when it
/// starts from each node in index order and follows input edges (downstream → upstream) in the order
/// they were added. Empty if there is none.
pub fn cycle<N, E>(graph: &DiGraph<N, E>) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<N, E>(graph: &DiGraph<N, E>, n: usize, marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[n] = Mark::OnPath;
        path.push(n);
        let mut ups: Vec<_> = graph.edges_directed(NodeIndex::new(n), Incoming).collect();
        ups.sort_by_key(|e| e.id());
        for up in ups.iter().map(|e| e.source().index()) {
            match marks[up] {
                Mark::OnPath => {
                    let from = path.iter().position(|&s| s == up).unwrap_or(0);
                    return Some(path[from..].to_vec());
                }
                Mark::New => {
                    if let Some(c) = visit(graph, up, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[n] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; graph.node_count()];
    for n in 0..marks.len() {
        if marks[n] == Mark::New {
            if let Some(mut c) = visit(graph, n, &mut marks, &mut Vec::new()) {
                // The search went against the data flow.
                c.reverse();
                return c;
            }
        }
    }
    Vec::new()
}

/// The error for `cycle` (stage indices of `raw`, in data-flow order), at the input that closes it.
pub fn cycle_error(raw: &RawPipeline, cycle: &[usize]) -> Diagnostic {
    let names: Vec<&str> = cycle.iter().map(|&i| raw.stages[i].name.value.as_str()).collect();
    let first = cycle.first().copied().unwrap_or(0);
    let next = cycle.get(1).copied().unwrap_or(first);
    let at = raw.stages[next]
        .inputs
        .iter()
        .find(|(_, up)| up.value == raw.stages[first].name.value)
        .map(|(_, up)| up.span.clone())
        .unwrap_or(raw.stages[first].name.span.clone());
    Diagnostic::at(format!("the stages form a cycle: {} → {}", names.join(" → "), names.first().unwrap_or(&"?")), &raw.source, at)
        .with_help("a stage cannot depend, directly or not, on its own output")
}

impl Pipeline {
    /// `targets` and all their ancestors (all stages when `targets` is empty), as a mask over `stages`.
    pub fn select(&self, targets: &[String]) -> Result<Vec<bool>, Diagnostic> {
        if targets.is_empty() {
            return Ok(vec![true; self.stages.len()]);
        }
        let mut keep = vec![false; self.stages.len()];
        for t in targets {
            let i = self.index(t).ok_or_else(|| {
                Diagnostic::new(format!("no stage `{t}` in {}", self.source.name))
                    .with_help(stages_help(self.stages.iter().map(|s| s.name.as_str())))
            })?;
            keep[i] = true;
        }
        // Stages are topologically ordered: one backward pass closes over ancestors.
        for i in (0..self.stages.len()).rev() {
            if keep[i] {
                for &up in self.stages[i].inputs.values() {
                    keep[up] = true;
                }
            }
        }
        Ok(keep)
    }

    /// The stage graph ([`build`]): node `i` is `stages[i]`, each edge an input, labelled by its slot.
    pub fn graph(&self) -> DiGraph<&Stage, &str> {
        build(self.stages.iter().map(|s| (s, Some(&s.inputs))))
    }

    /// Names of the stages a stage's inputs come from, by slot.
    pub fn upstream_names(&self, i: usize) -> BTreeMap<String, String> {
        self.stages[i].inputs.iter().map(|(slot, &up)| (slot.clone(), self.stages[up].name.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs as (slot, upstream) pairs per node.
    fn inputs(of: &[&[(&str, usize)]]) -> Vec<BTreeMap<String, usize>> {
        of.iter().map(|i| i.iter().map(|&(s, up)| (s.to_string(), up)).collect()).collect()
    }

    #[test]
    fn file_order_where_the_inputs_allow() {
        // 0 ← 2, 1 free, 2 free, 3 ← 0: 1 and 2 are ready first; 0 as soon as 2 is placed.
        let maps = inputs(&[&[("x", 2)], &[], &[], &[("y", 0)]]);
        let g = build(maps.iter().map(|m| ((), Some(m))));
        assert_eq!(order(&g), Ok(vec![1, 2, 0, 3]));
        // A stage that failed its checks has no edges.
        let g = build(maps.iter().enumerate().map(|(i, m)| ((), (i != 0).then_some(m))));
        assert_eq!(order(&g), Ok(vec![0, 1, 2, 3]));
    }

    #[test]
    fn a_cycle_is_found_whole_in_data_flow_order() {
        // 0 ← 2 ← 1 ← 0, and 3 ← 3.
        let maps = inputs(&[&[("x", 2)], &[("x", 0)], &[("x", 1)], &[("me", 3)]]);
        let g = build(maps.iter().map(|m| ((), Some(m))));
        assert_eq!(order(&g), Err(vec![1, 2, 0]));
        let g = build(maps.iter().enumerate().map(|(i, m)| ((), (i != 1).then_some(m))));
        assert_eq!(order(&g), Err(vec![3]));
        // Inputs are followed in slot order: from 0, `a` (→ 2) before `b` (→ 1).
        let maps = inputs(&[&[("b", 1), ("a", 2)], &[("x", 0)], &[("x", 0)]]);
        let g = build(maps.iter().map(|m| ((), Some(m))));
        assert_eq!(order(&g), Err(vec![2, 0]));
    }
}
