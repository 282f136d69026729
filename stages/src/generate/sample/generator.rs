//! `method = "generator"`: the `generator` stage's model ([`crate::generate::generator`]) with a fresh
//! noise `ξ` per draw.

use rand_chacha::ChaCha8Rng;
use wspace_stage_api::{Params, StageError};

use super::{Method, MethodInputs, Sampler};
use crate::data::Task;
use crate::generate::generator::{Generator, Prompt};
use crate::tensors::NamedTensors;

pub const METHOD: Method = Method {
    name: "generator",
    inputs: &[("generator", "method generator: a `generator` stage")],
    params: &[],
    validate: super::nothing_to_check,
    load,
};

fn load(inputs: &MethodInputs, _: Params) -> Result<Box<dyn Sampler>, StageError> {
    Ok(Box::new(Generator::load(inputs.need("generator")?, &inputs.device)?))
}

impl Sampler for Generator {
    fn loss_range(&self) -> (f64, f64) {
        (self.config.loss_min, self.config.loss_max)
    }
    fn arch(&self) -> &str {
        "cnn-s"
    }
    fn make(&self, task: &Task, grid: &[f64], draws: usize, rng: &mut ChaCha8Rng) -> Result<Vec<NamedTensors>, StageError> {
        let prompts: Vec<Prompt> = grid
            .iter()
            .flat_map(|&t| (0..draws).map(move |_| t))
            .map(|t| Prompt { classes: task.classes, target_loss: t, xi: self.draw(rng) })
            .collect();
        Ok(self.generate(&prompts)?.iter().map(|m| m.named_tensors().into()).collect())
    }
}
