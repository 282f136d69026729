//! wspace stage kinds: the science. Each kind implements [`wspace_stage_api::StageKind`]; [`kinds`]
//! lists them for the runner's registry. Nothing here knows about the cache.

pub mod data;
pub mod nn;

use wspace_stage_api::StageKind;

/// Every stage kind this crate provides.
pub fn kinds() -> Vec<Box<dyn StageKind>> {
    vec![Box::new(data::DatasetKind), Box::new(data::TasksKind)]
}
