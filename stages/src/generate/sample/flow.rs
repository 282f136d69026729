//! `method = "flow"`: whole networks from the `flow` stage's conditional flow ([`crate::generate::flow`]).
//! A draw is seeded standard-normal noise, carried to a latent by `steps` Euler steps of the
//! guided velocity (`guidance` w: `v(∅) + w·(v(prompt) − v(∅))`; 1 is the conditional velocity alone),
//! then decoded by the codec the flow was trained on: every value of every layer is drawn.

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use wspace_stage_api::{params, Params, StageError};

use super::{Method, MethodInputs, Sampler};
use crate::data::{Dataset, Task};
use crate::generate::flow::model::{Flow, Prompt};
use crate::nn::NUM_CLASSES;
use crate::sampling::normal_f32;
use crate::tensors::NamedTensors;
use crate::weights::behaviour::{task_probe_images, Probe, RefineOptions};
use crate::weights::{codec, Codec};

pub const METHOD: Method = Method {
    name: "flow",
    inputs: &[
        ("flow", "method flow: a `flow` stage"),
        ("pca", "methods align, kde, flow: the `pca` stage the autoencoder was trained on"),
        ("autoencoder", "methods align, kde, flow: the `autoencoder` stage (its codec; kde: its latents)"),
    ],
    params: &[STEPS, GUIDANCE, REFINE_STEPS, REFINE_LR, REFINE_IMAGES],
    validate: |p| options(p).map(|_| ()),
    load,
};

params! {
    STEPS = "steps": Int = 32, "method flow: Euler steps from noise to latent (1 to 1000)";
    GUIDANCE = "guidance": Float = 1.0, "method flow: classifier-free guidance scale, 0 (unconditional) to 20; 1 = the conditional velocity alone";
    REFINE_STEPS = "refine_steps": Int = 0, "method flow: Adam steps on each drawn latent through the decoder, minimising cross-entropy on training images of its task (input `data`); 0: none";
    REFINE_LR = "refine_lr": Float = 0.01, "method flow: the refinement's learning rate";
    REFINE_IMAGES = "refine_images": Int = 256, "method flow: training images of the task the refinement sees";
}

/// `(steps, guidance)`, range-checked.
fn options(p: Params) -> Result<(usize, f64), StageError> {
    p.count(&REFINE_STEPS)?;
    p.positive_float(&REFINE_LR)?;
    p.positive(&REFINE_IMAGES)?;
    let steps = p.positive(&STEPS)?;
    if steps > 1000 {
        return Err(StageError::param(STEPS.name, format!("must be at most 1000, got {steps}")));
    }
    let guidance = p.float(&GUIDANCE)?;
    if !(0.0..=20.0).contains(&guidance) {
        return Err(StageError::param(GUIDANCE.name, format!("must be in [0, 20], got {guidance}")));
    }
    Ok((steps, guidance))
}

struct FlowSampler {
    flow: Flow,
    codec: Box<dyn Codec>,
    steps: usize,
    guidance: f64,
    /// The refinement's settings and the training images it reads (`refine_steps > 0`).
    refine: Option<(RefineOptions, Dataset)>,
}

fn load(inputs: &MethodInputs, p: Params) -> Result<Box<dyn Sampler>, StageError> {
    let (steps, guidance) = options(p)?;
    let flow = Flow::load(inputs.need("flow")?, &inputs.device)?;
    let codec = codec::load(inputs.need("pca")?, inputs.need("autoencoder")?, &inputs.device)?;
    if codec.name() != flow.config.codec || codec.latent_dim() != flow.config.latent_dim() {
        return Err(StageError::input(
            "autoencoder",
            format!(
                "holds a `{}` codec with latent {:?}; the flow was trained on a `{}` codec's {} × {} latents: connect that one",
                codec.name(),
                codec.latent_shape(),
                flow.config.codec,
                flow.config.tokens,
                flow.config.width
            ),
        ));
    }
    let refine = match p.count(&REFINE_STEPS)? {
        0 => None,
        steps => {
            let o = RefineOptions {
                steps,
                lr: p.positive_float(&REFINE_LR)?,
                probe_images: p.positive(&REFINE_IMAGES)?,
                temperature: 1.0,
                label_weight: 1.0,
            };
            Some((o, Dataset::load(inputs.need("data")?)?))
        }
    };
    Ok(Box::new(FlowSampler { flow, codec, steps, guidance, refine }))
}

impl Sampler for FlowSampler {
    fn loss_range(&self) -> (f64, f64) {
        (self.flow.config.loss_min, self.flow.config.loss_max)
    }
    fn arch(&self) -> &str {
        self.codec.arch()
    }
    fn make(&self, task: &Task, grid: &[f64], draws: usize, rng: &mut ChaCha8Rng) -> Result<Vec<NamedTensors>, StageError> {
        let prompts: Vec<Prompt> =
            grid.iter().flat_map(|&loss| std::iter::repeat_n(Prompt { classes: task.classes, loss }, draws)).collect();
        for p in &prompts {
            self.flow.check(p)?;
        }
        let noise: Vec<f32> = (0..prompts.len() * self.flow.config.latent_dim()).map(|_| normal_f32(rng)).collect();
        let mut latents = self.flow.sample(&prompts, noise, self.steps, self.guidance)?;
        if let Some((o, data)) = &self.refine {
            let (images, labels) = task_probe_images(task, data, o.probe_images)?;
            let probe = Probe { teacher: vec![[0.0; NUM_CLASSES]; labels.len()], images, labels };
            let k = self.flow.config.latent_dim();
            let refined: Vec<Vec<f32>> =
                latents.par_chunks(k).map(|h| self.codec.refine(h, &probe, o)).collect::<Result<_, _>>()?;
            latents = refined.concat();
        }
        self.codec.decode(&latents)
    }
}
