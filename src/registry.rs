//! The one place that maps a `kind = "..."` string to its implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use wspace_stage_api::StageKind;

#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
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
