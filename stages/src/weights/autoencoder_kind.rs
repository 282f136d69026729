//! `kind = "autoencoder"`: its parameters, and which weight codec it trains — the thesis's MLP on the
//! PCA coefficients ([`super::autoencoder`], `architecture = "mlp"`) or the token transformer
//! ([`super::transformer`], `architecture = "transformer"`). Both share the training loop's
//! parameters and the behavioural loss ([`super::behaviour`]); each writes its own output files (its
//! module's doc) and `codec.json`, which names the codec for every stage that loads it
//! ([`super::codec`]).

use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::autoencoder::{run_autoencoder, Activation, MlpOptions};
use super::behaviour::BehaviourOptions;
use super::codec;
use super::tokens::TokenLayout;
use super::transformer::{run_transformer, TransformerOptions};
use crate::data::{Dataset, Tasks};
use crate::fit::FitParams;
use crate::zoo::store::Zoo;

/// Which network the stage trains, with the options only it has.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    Mlp(MlpOptions),
    Transformer(TransformerOptions),
}

/// The `autoencoder` stage's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderOptions {
    pub architecture: Architecture,
    /// Epochs, patience, AdamW, batch size, seed.
    pub fit: FitParams,
    /// `None`: the thesis's MSE alone; `Some`: the behavioural loss.
    pub behaviour: Option<BehaviourOptions>,
}

choice_enum! {
    /// `architecture`: which network learns the codec.
    pub enum ArchitectureName { Mlp = "mlp", Transformer = "transformer" }
}

choice_enum! {
    /// `loss`: the thesis's MSE, or the behavioural loss.
    pub enum Loss { Mse = "mse", Behaviour = "behaviour" }
}

params! {
    HIDDEN = "hidden": [Int] = [256], "hidden layer sizes of the encoder (the decoder mirrors them)";
    LATENT_DIM = "latent_dim": Int = 32, "latent size";
    ACTIVATION = "activation": choice(Activation) = "elu", "hidden nonlinearity";
    LOSS = "loss": choice(Loss) = "mse", "mse: the thesis's coefficient MSE; behaviour: beta·MSE + (1 − beta)·distillation of the decoded model's outputs (needs the zoo, tasks and data inputs)";
    BETA = "beta": Float = 0.1, "loss = behaviour: weight of the coefficient MSE, in [0, 1]";
    PROBE_IMAGES = "probe_images": Int = 128, "loss = behaviour: training images of each model's own task on which outputs are matched";
    TEMPERATURE = "temperature": Float = 2.0, "loss = behaviour: distillation temperature T";
    ARCHITECTURE = "architecture": choice(ArchitectureName) = "mlp", "mlp: the thesis's MLP on the PCA coefficients; transformer: a SANE-style transformer on weight tokens (one per neuron; needs the zoo input)";
    D_MODEL = "d_model": Int = 64, "transformer: token embedding width";
    HEADS = "heads": Int = 4, "transformer: attention heads (must divide d_model)";
    LAYERS = "layers": Int = 2, "transformer: blocks in the encoder and in the decoder";
    TOKEN_LATENT = "token_latent": Int = 32, "transformer: latent values per token (latent = tokens × token_latent)";
    TOKEN_WIDTH = "token_width": Int = 0, "transformer: values per token (0: the widest layer's fan_in + 1); narrower than a layer is refused";
    PERMUTE = "permute": Bool = false, "transformer: augment with random permutations of the hidden units (for random-init zoos)";
    NOISE = "noise": Float = 0.05, "transformer: std of the noise added to the normalised input tokens";
    CONTRASTIVE_WEIGHT = "contrastive_weight": Float = 0.1, "transformer: weight of the NT-Xent term between the two augmented views (0: off)";
    TAU = "tau": Float = 0.1, "transformer: NT-Xent temperature";
}

/// The parameters before the training loop's, then those after it (the order `wspace kinds` lists).
const PARAMS: (&[Param], &[Param]) = (
    &[HIDDEN, LATENT_DIM, ACTIVATION, LOSS, BETA, PROBE_IMAGES, TEMPERATURE],
    &[ARCHITECTURE, D_MODEL, HEADS, LAYERS, TOKEN_LATENT, TOKEN_WIDTH, PERMUTE, NOISE, CONTRASTIVE_WEIGHT, TAU],
);

/// The defaults of the training loop's parameters.
const FIT_DEFAULTS: FitParams = FitParams {
    epochs: 300,
    patience: 30,
    lr: 1e-3,
    weight_decay: 1e-5,
    batch_size: 32,
    seed: 0,
    device: crate::device::DeviceName::Cpu,
};

impl AutoencoderOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let architecture = match p.choice(&ARCHITECTURE)? {
            ArchitectureName::Transformer => {
                let width = p.count(&TOKEN_WIDTH)?;
                Architecture::Transformer(TransformerOptions {
                    d_model: p.positive(&D_MODEL)?,
                    heads: p.positive(&HEADS)?,
                    layers: p.positive(&LAYERS)?,
                    token_latent: p.positive(&TOKEN_LATENT)?,
                    token_width: (width > 0).then_some(width),
                    permute: p.bool(&PERMUTE)?,
                    noise: p.non_negative(&NOISE)?,
                    contrastive_weight: p.non_negative(&CONTRASTIVE_WEIGHT)?,
                    tau: p.positive_float(&TAU)?,
                })
            }
            ArchitectureName::Mlp => Architecture::Mlp(MlpOptions {
                hidden: p.positive_list(&HIDDEN)?,
                latent_dim: p.positive(&LATENT_DIM)?,
                activation: p.choice(&ACTIVATION)?,
            }),
        };
        let behaviour = match p.choice(&LOSS)? {
            Loss::Behaviour => Some(BehaviourOptions {
                beta: p.fraction(&BETA, false)?,
                probe_images: p.positive(&PROBE_IMAGES)?,
                temperature: p.positive_float(&TEMPERATURE)? as f32,
            }),
            Loss::Mse => None,
        };
        Ok(AutoencoderOptions { architecture, fit: FitParams::from_params(p)?, behaviour })
    }
}

/// `kind = "autoencoder"`: see the [module doc](self).
pub struct AutoencoderKind;

impl StageKind for AutoencoderKind {
    fn name(&self) -> &'static str {
        "autoencoder"
    }
    fn version(&self) -> u32 {
        3
    }
    fn summary(&self) -> &'static str {
        "weight autoencoder, early-stopped on the val split: an MLP on the normalised PCA coefficients, or a transformer on weight tokens"
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut specs = FitParams::specs_after(PARAMS.0, &FIT_DEFAULTS, "mini-batch size");
        specs.extend(Param::specs(PARAMS.1));
        specs
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("pca", true, "a `pca` stage (its rows and splits; the MLP's coefficients)"),
            ("zoo", false, "the zoo the `pca` stage encoded (loss = behaviour; architecture = transformer)"),
            ("tasks", false, "its `tasks` stage (loss = behaviour)"),
            ("data", false, "its `dataset` stage (loss = behaviour)"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        AutoencoderOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = AutoencoderOptions::from_params(ctx.view())?;
        let needs_zoo = matches!(opts.architecture, Architecture::Transformer(_));
        let zoo = match ctx.inputs.get("zoo") {
            Some(dir) if needs_zoo || opts.behaviour.is_some() => Some(Zoo::load(dir)?),
            None if needs_zoo => {
                return Err(StageError::input(
                    "zoo",
                    "must be connected: with `architecture` = \"transformer\" the stage tokenises its weights",
                ))
            }
            _ => None,
        };
        let probes_from = match (opts.behaviour, ctx.inputs.get("tasks"), ctx.inputs.get("data"), &zoo) {
            (Some(_), Some(t), Some(d), Some(_)) => Some((Tasks::load(t)?, Dataset::load(d)?)),
            (Some(_), ..) => {
                let missing = ["zoo", "tasks", "data"].into_iter().find(|s| !ctx.inputs.contains_key(*s)).unwrap_or("zoo");
                return Err(StageError::input(
                    missing,
                    "must be connected: `loss` = \"behaviour\" needs the inputs `zoo`, `tasks` and `data`",
                ));
            }
            _ => None,
        };
        let probes_from = probes_from.as_ref().map(|(t, d)| (t, d));
        let pca = ctx.input("pca")?;
        match &opts.architecture {
            Architecture::Mlp(mlp) => {
                ctx.progress.message("training the weight autoencoder");
                let sources = zoo.as_ref().zip(probes_from).map(|(z, (t, d))| (z, t, d));
                run_autoencoder(pca, sources, (mlp, &opts.fit, opts.behaviour), ctx.out, ctx.progress)?;
                codec::write_name(ctx.out, codec::mlp::NAME)?;
            }
            Architecture::Transformer(t) => {
                let zoo = zoo.as_ref().expect("loaded above");
                // Refused before any weight is read or trained: an unknown architecture, a too-narrow token.
                TokenLayout::new(&zoo.meta.arch, t.token_width)?;
                ctx.progress.message("training the token transformer");
                run_transformer(pca, (zoo, probes_from), (t, &opts.fit, opts.behaviour), ctx.out, ctx.progress)?;
                codec::write_name(ctx.out, codec::tokens::NAME)?;
            }
        }
        Ok(())
    }
}
