//! The zoo's per-model hyperparameters, drawn from seeded distributions that are stage parameters.
//!
//! Each model draws from its own ChaCha8 stream, seeded by (stage seed, model id), so a model's recipe
//! does not depend on how many models there are or on the order in which threads finish.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{choice_enum, params, Param, Params, StageError, Value};

use crate::sampling::{below, normal, uniform};

choice_enum! {
    /// Where the learning rate comes from: `log-uniform` on [a, b], or `log-normal` with ln(lr) ~ N(a, b).
    pub enum LrDistribution { LogUniform = "log-uniform", LogNormal = "log-normal" }
}

/// Where a model's initial weights come from (`init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitScheme {
    /// `"random"`: each model its own seeded initialisation (drawn with the rest of its recipe).
    Random,
    /// `"shared"`: every model starts from one seeded initialisation.
    Shared,
    /// An integer K: K seeded initialisations, model `i` takes number `i mod K`.
    Groups(usize),
}

impl InitScheme {
    /// Parses the `init` parameter: `"random"`, `"shared"` or an integer K ≥ 1.
    pub fn parse(v: &Value) -> Result<InitScheme, StageError> {
        match v {
            Value::Str(s) if s == "random" => Ok(InitScheme::Random),
            Value::Str(s) if s == "shared" => Ok(InitScheme::Shared),
            Value::Int(k) if *k >= 1 => Ok(InitScheme::Groups(*k as usize)),
            other => Err(StageError::param(
                "init",
                format!("must be \"random\", \"shared\" or an integer K ≥ 1 (K seeded inits, round-robin), got {other}"),
            )),
        }
    }

    /// The shared initialisation model `id` starts from (`None` for its own), as recorded in `zoo.csv`'s
    /// `init` column: `random`, `shared`, or the group index `0..K`.
    pub fn group(self, id: usize) -> Option<usize> {
        match self {
            InitScheme::Random => None,
            InitScheme::Shared => Some(0),
            InitScheme::Groups(k) => Some(id % k),
        }
    }

    /// `zoo.csv`'s `init` value for model `id`.
    pub fn label(self, id: usize) -> String {
        match (self, self.group(id)) {
            (InitScheme::Shared, _) => "shared".into(),
            (_, Some(g)) => g.to_string(),
            (_, None) => "random".into(),
        }
    }
}

/// The distributions (all stage parameters; see [`super::ZooKind`]'s parameter docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub seed: u64,
    pub init: InitScheme,
    pub adam_fraction: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr_distribution: LrDistribution,
    pub adam_lr: [f64; 2],
    pub sgd_lr: [f64; 2],
    pub batch_sizes: Vec<usize>,
    /// Uniform over [min, max], inclusive.
    pub early_epoch: [usize; 2],
    /// Normal(mean, std), rounded, clipped to `final_epoch_range`.
    pub final_epoch: [f64; 2],
    pub final_epoch_range: [usize; 2],
}

/// One model's draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPlan {
    pub adam: bool,
    pub lr: f64,
    pub batch_size: usize,
    pub early_epoch: usize,
    pub final_epoch: usize,
    /// Seeds the weights' initialisation (shared by the models of one init group).
    pub init_seed: u64,
    /// `zoo.csv`'s `init` column: `random`, `shared` or the init group's index.
    pub init: String,
    /// Seeds the data order.
    pub data_seed: u64,
}

fn pair_f64(p: Params, param: &Param) -> Result<[f64; 2], StageError> {
    let name = param.name;
    match p.value(param)?.as_list() {
        Some([a, b]) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if a.is_finite() && b.is_finite() => Ok([a, b]),
            _ => Err(StageError::param(name, "must be two finite numbers")),
        },
        _ => Err(StageError::param(name, "must be a pair [a, b]")),
    }
}

fn pair_usize(p: Params, param: &Param) -> Result<[usize; 2], StageError> {
    let [a, b] = pair_f64(p, param)?;
    if a < 1.0 || b < a || a.fract() != 0.0 || b.fract() != 0.0 {
        return Err(StageError::param(param.name, "must be whole numbers [min, max] with 1 ≤ min ≤ max"));
    }
    Ok([a as usize, b as usize])
}

params! {
    SEED = "seed": Int = 0, "seeds every model's recipe, weights and data order";
    INIT = "init": Any(Str) = "random", "initial weights: \"random\" (one seeded init per model), \"shared\" (every model starts from one seeded init) or an integer K (K seeded inits, model i takes i mod K)";
    ADAM_FRACTION = "adam_fraction": Float = 0.5, "probability that a model uses Adam (else SGD)";
    MOMENTUM = "momentum": Float = 0.9, "SGD momentum";
    WEIGHT_DECAY = "weight_decay": Float = 0.0, "L2 weight decay (PyTorch semantics) for both optimizers";
    LR_DISTRIBUTION = "lr_distribution": choice(LrDistribution) = "log-uniform", "log-uniform: lr in [a, b]; log-normal: ln(lr) ~ N(a, b)";
    ADAM_LR = "adam_lr": [Float] = [1e-4, 3e-3], "[a, b] of the learning-rate distribution for Adam";
    SGD_LR = "sgd_lr": [Float] = [1e-3, 1e-1], "[a, b] of the learning-rate distribution for SGD";
    BATCH_SIZES = "batch_sizes": [Int] = [32, 64], "drawn uniformly";
    EARLY_EPOCH = "early_epoch": [Int] = [5, 10], "[min, max]: the early checkpoint's epoch, uniform (thesis: U(5,10))";
    FINAL_EPOCH = "final_epoch": [Float] = [100.0, 15.0], "[mean, std]: the final checkpoint's epoch, normal (thesis: N(100,15))";
    FINAL_EPOCH_RANGE = "final_epoch_range": [Int] = [50, 150], "[min, max] the final epoch is clipped to (thesis: [50,150])";
}

impl Recipe {
    /// The recipe's parameters (of the `zoo` kind), in the order `wspace kinds` lists them.
    pub const PARAMS: &[Param] = &[
        SEED,
        INIT,
        ADAM_FRACTION,
        MOMENTUM,
        WEIGHT_DECAY,
        LR_DISTRIBUTION,
        ADAM_LR,
        SGD_LR,
        BATCH_SIZES,
        EARLY_EPOCH,
        FINAL_EPOCH,
        FINAL_EPOCH_RANGE,
    ];

    pub fn from_params(p: Params) -> Result<Recipe, StageError> {
        let batch_sizes: Vec<usize> = p
            .value(&BATCH_SIZES)?
            .as_list()
            .unwrap_or(&[])
            .iter()
            .filter_map(Value::as_i64)
            .filter(|&b| b > 0)
            .map(|b| b as usize)
            .collect();
        if batch_sizes.is_empty() {
            return Err(StageError::param(BATCH_SIZES.name, "must list at least one positive batch size"));
        }
        let r = Recipe {
            seed: p.seed(&SEED)?,
            init: InitScheme::parse(p.value(&INIT)?)?,
            adam_fraction: p.fraction(&ADAM_FRACTION, false)?,
            momentum: p.float(&MOMENTUM)?,
            weight_decay: p.float(&WEIGHT_DECAY)?,
            lr_distribution: p.choice(&LR_DISTRIBUTION)?,
            adam_lr: pair_f64(p, &ADAM_LR)?,
            sgd_lr: pair_f64(p, &SGD_LR)?,
            batch_sizes,
            early_epoch: pair_usize(p, &EARLY_EPOCH)?,
            final_epoch: pair_f64(p, &FINAL_EPOCH)?,
            final_epoch_range: pair_usize(p, &FINAL_EPOCH_RANGE)?,
        };
        if r.lr_distribution == LrDistribution::LogUniform {
            for (param, [lo, hi]) in [(&ADAM_LR, r.adam_lr), (&SGD_LR, r.sgd_lr)] {
                if !(lo > 0.0 && hi >= lo) {
                    return Err(StageError::param(param.name, "(log-uniform bounds) must satisfy 0 < low ≤ high"));
                }
            }
        }
        Ok(r)
    }

    /// The draw for model `id`.
    pub fn plan(&self, id: usize) -> ModelPlan {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let adam = uniform(&mut rng) < self.adam_fraction;
        let [a, b] = if adam { self.adam_lr } else { self.sgd_lr };
        let lr = match self.lr_distribution {
            LrDistribution::LogUniform => libm::exp(libm::log(a) + uniform(&mut rng) * (libm::log(b) - libm::log(a))),
            LrDistribution::LogNormal => libm::exp(a + b * normal(&mut rng)),
        };
        let batch_size = self.batch_sizes[below(&mut rng, self.batch_sizes.len() as u64) as usize];
        let [e0, e1] = self.early_epoch;
        let early_epoch = e0 + below(&mut rng, (e1 - e0 + 1) as u64) as usize;
        let [lo, hi] = self.final_epoch_range;
        let drawn = (self.final_epoch[0] + self.final_epoch[1] * normal(&mut rng)).round();
        let final_epoch = (drawn.clamp(lo as f64, hi as f64) as usize).max(early_epoch + 1);
        let own_init = rng.next_u64();
        let data_seed = rng.next_u64();
        // A group's seed is drawn from a stream of its own, so "random" models keep the exact draws
        // (and bytes) they had before `init` existed.
        let init_seed = match self.init.group(id) {
            None => own_init,
            Some(g) => {
                ChaCha8Rng::seed_from_u64(self.seed ^ 0x1417_5eed ^ (g as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
            }
        };
        ModelPlan { adam, lr, batch_size, early_epoch, final_epoch, init_seed, init: self.init.label(id), data_seed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            seed: 3,
            init: InitScheme::Random,
            adam_fraction: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_distribution: LrDistribution::LogUniform,
            adam_lr: [1e-4, 1e-2],
            sgd_lr: [1e-3, 1e-1],
            batch_sizes: vec![32, 64],
            early_epoch: [5, 10],
            final_epoch: [100.0, 15.0],
            final_epoch_range: [50, 150],
        }
    }

    #[test]
    fn draws_follow_the_distributions() {
        let r = recipe();
        let plans: Vec<ModelPlan> = (0..2000).map(|i| r.plan(i)).collect();
        let adam = plans.iter().filter(|p| p.adam).count() as f64 / 2000.0;
        assert!((adam - 0.5).abs() < 0.05, "Adam fraction {adam}");
        assert!(plans.iter().all(|p| (5..=10).contains(&p.early_epoch) && (50..=150).contains(&p.final_epoch)));
        assert!(plans.iter().filter(|p| p.adam).all(|p| (1e-4..=1e-2).contains(&p.lr)));
        let mean = plans.iter().map(|p| p.final_epoch as f64).sum::<f64>() / 2000.0;
        assert!((mean - 100.0).abs() < 1.5, "final epoch mean {mean}");
        let sd = (plans.iter().map(|p| (p.final_epoch as f64 - mean).powi(2)).sum::<f64>() / 2000.0).sqrt();
        assert!((sd - 15.0).abs() < 1.5, "final epoch sd {sd}");
        // Median of a log-uniform on [1e-4, 1e-2] is 1e-3.
        let mut lrs: Vec<f64> = plans.iter().filter(|p| p.adam).map(|p| p.lr).collect();
        lrs.sort_by(f64::total_cmp);
        let median = lrs[lrs.len() / 2];
        assert!((median.log10() + 3.0).abs() < 0.15, "median lr {median}");
        for size in [32, 64] {
            assert!(plans.iter().any(|p| p.batch_size == size));
        }
    }

    #[test]
    fn init_schemes_share_seeds_as_documented_and_leave_the_rest_of_the_draw_alone() {
        let random = recipe();
        let shared = Recipe { init: InitScheme::Shared, ..recipe() };
        let groups = Recipe { init: InitScheme::Groups(3), ..recipe() };
        let seeds = |r: &Recipe| (0..9).map(|i| r.plan(i).init_seed).collect::<Vec<_>>();
        let own = seeds(&random);
        // Random: all different. Shared: one seed, not any model's own. Groups: i and i + 3 share.
        assert_eq!(own.iter().collect::<std::collections::BTreeSet<_>>().len(), 9);
        let s = seeds(&shared);
        assert!(s.iter().all(|&x| x == s[0]) && !own.contains(&s[0]));
        let g = seeds(&groups);
        assert_eq!(g.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
        assert!((0..6).all(|i| g[i] == g[i + 3]));
        assert_eq!(g[0], s[0], "group 0 of K is the shared init (same seed, same stream)");
        // Only the init seed and its label change: the optimizer, lr, batch size, epochs and data order stay.
        for i in 0..9 {
            let (a, b) = (random.plan(i), groups.plan(i));
            assert_eq!(
                (a.adam, a.lr, a.batch_size, a.early_epoch, a.final_epoch, a.data_seed),
                (b.adam, b.lr, b.batch_size, b.early_epoch, b.final_epoch, b.data_seed)
            );
            assert_eq!((a.init.as_str(), b.init.clone()), ("random", (i % 3).to_string()));
        }
        assert_eq!(shared.plan(4).init, "shared");
        for bad in [Value::Str("same".into()), Value::Int(0), Value::Float(2.0)] {
            let e = InitScheme::parse(&bad).unwrap_err().to_string();
            assert!(e.contains("parameter `init`"), "{e}");
        }
    }

    #[test]
    fn a_model_draw_depends_on_its_id_and_the_seed_only() {
        let r = recipe();
        assert_eq!(r.plan(7), r.plan(7));
        assert_ne!(r.plan(7), r.plan(8));
        let mut other = r.clone();
        other.seed = 4;
        assert_ne!(r.plan(7), other.plan(7));
    }
}
