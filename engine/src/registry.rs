//! The set of step kinds a run knows, by name.

use crate::step::StepKind;
use indexmap::IndexMap;
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct Registry {
    kinds: IndexMap<&'static str, Arc<dyn StepKind>>,
}

impl Registry {
    pub fn new(kinds: Vec<Box<dyn StepKind>>) -> Self {
        let kinds = kinds.into_iter().map(|k| (k.info().name, Arc::from(k))).collect();
        Self { kinds }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StepKind>> {
        self.kinds.values()
    }
}
