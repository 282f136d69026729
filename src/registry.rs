//! The one place that maps a `kind = "..."` string to its implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use wspace_stage_api::{Bench, StageKind};

#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
    benches: BTreeMap<&'static str, Bench>,
}

impl Registry {
    /// The built-in kinds (`command`) plus `extra`. A later kind of the same name replaces an earlier one.
    pub fn with_builtins(extra: Vec<Box<dyn StageKind>>) -> Self {
        let mut r = Registry::default();
        r.add(Box::new(crate::builtin::command::Command));
        for k in extra {
            r.add(k);
        }
        r
    }
    pub fn add(&mut self, kind: Box<dyn StageKind>) {
        self.kinds.insert(kind.name(), Arc::from(kind));
    }
    pub fn add_bench(&mut self, name: &'static str, f: Bench) {
        self.benches.insert(name, f);
    }
    pub fn bench(&self, name: &str) -> Option<Bench> {
        self.benches.get(name).copied()
    }
    pub fn bench_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.benches.keys().copied()
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> {
        self.kinds.values()
    }
}
