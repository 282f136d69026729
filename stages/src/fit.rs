//! AdamW with early stopping: the training loop shared by the stages that fit a small candle network
//! on rows of a table (the weight autoencoder, the aligner).
//!
//! # Brief overview
//! A stage describes its model through [`Objective`] — the trainable variables, one batch's loss, the
//! validation loss — and [`fit`] runs the loop:
//!
//! ```text
//! for epoch in 1..=epochs:
//!     shuffle the train rows (ChaCha8 seeded with `shuffle_seed`, Fisher–Yates, crate::sampling::shuffle)
//!     for each batch of `batch_size` rows (a last batch shorter than `min_batch` is skipped):
//!         (loss, value) = objective.batch_loss(rows);  AdamW step on loss
//!     train loss = mean of the batch values, weighted by batch length
//!     val loss = objective.val_loss()        (None: no validation rows)
//!     keep a snapshot of the variables if val improved (always, without validation rows);
//!     stop after `patience` epochs without improvement
//! restore the best snapshot
//! ```
//!
//! A non-finite train loss is an error that names the stage and the epoch. The objective sees every
//! epoch's [`EpochLoss`] through [`Objective::after_epoch`] (e.g. to record a picture after epoch 1), and
//! the run's [`Progress`] counts epochs.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ParamsAdamW;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use rayon::prelude::*;
use wspace_stage_api::{params, Fixed, Param, ParamSpec, Params, Progress, StageError};

use crate::device::{DeviceName, DEVICE};
use crate::tensors::candle_error;

/// The loop's parameters as a stage declares them: [`FitParams::specs`] in [`StageKind::params`],
/// [`FitParams::from_params`] in `validate` and `run`.
///
/// [`StageKind::params`]: wspace_stage_api::StageKind::params
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitParams {
    pub epochs: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Seeds the stage's initial weights and (with a salt of the stage's) the batch order.
    pub seed: u64,
    /// Where the network trains ([`crate::device`]).
    pub device: DeviceName,
}

params! {
    BATCH_SIZE = "batch_size": Int = 32, "mini-batch size";
    EPOCHS = "epochs": Int = 100, "maximum epochs";
    PATIENCE = "patience": Int = 30, "epochs without val improvement before stopping";
    LR = "lr": Float = 1e-3, "AdamW learning rate";
    WEIGHT_DECAY = "weight_decay": Float = 0.0, "AdamW (decoupled) weight decay";
    SEED = "seed": Int = 0, "seeds the initial weights and the batch order";
}

impl FitParams {
    /// `batch_size`, `epochs`, `patience`, `lr`, `weight_decay`, `seed` with these defaults, and
    /// `device`; `batch_doc` says what a batch is to this stage.
    pub fn specs(defaults: &FitParams, batch_doc: &'static str) -> Vec<ParamSpec> {
        let int = |v: usize| Some(Fixed::Int(v as i64));
        Param::specs(&[
            Param { default: int(defaults.batch_size), doc: batch_doc, ..BATCH_SIZE },
            Param { default: int(defaults.epochs), ..EPOCHS },
            Param { default: int(defaults.patience), ..PATIENCE },
            Param { default: Some(Fixed::Float(defaults.lr)), ..LR },
            Param { default: Some(Fixed::Float(defaults.weight_decay)), ..WEIGHT_DECAY },
            Param { default: Some(Fixed::Int(defaults.seed as i64)), ..SEED },
            DEVICE,
        ])
    }

    /// A kind's parameters: its own (`own`), then the loop's ([`FitParams::specs`]).
    pub fn specs_after(own: &[Param], defaults: &FitParams, batch_doc: &'static str) -> Vec<ParamSpec> {
        let mut specs = Param::specs(own);
        specs.extend(FitParams::specs(defaults, batch_doc));
        specs
    }

    pub fn from_params(p: Params) -> Result<FitParams, StageError> {
        Ok(FitParams {
            epochs: p.positive(&EPOCHS)?,
            patience: p.positive(&PATIENCE)?,
            lr: p.positive_float(&LR)?,
            weight_decay: p.non_negative(&WEIGHT_DECAY)?,
            batch_size: p.positive(&BATCH_SIZE)?,
            seed: p.seed(&SEED)?,
            device: crate::device::check(p)?,
        })
    }

    /// The candle device the network trains on (the same one for every call in a process).
    pub fn device(&self) -> Result<Device, StageError> {
        crate::device::open_name(self.device)
    }
}

/// The loop's settings.
pub struct FitOptions<'a> {
    pub params: FitParams,
    /// The smallest batch worth a step (NT-Xent needs two rows); shorter last batches are skipped and
    /// `batch_size` is raised to it.
    pub min_batch: usize,
    /// XORed into `params.seed` to seed the per-epoch shuffle of the train rows (so the batch order
    /// and the initial weights draw from different streams).
    pub shuffle_salt: u64,
    /// Names the stage in errors ("autoencoder").
    pub what: &'a str,
    /// Counts epochs (`start(epochs, "epochs")`, one `inc` per epoch).
    pub progress: &'a dyn Progress,
}

/// One epoch of the loss history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLoss {
    /// 1-based.
    pub epoch: usize,
    /// Mean over the epoch's batches, each measured before its update.
    pub train: f64,
    /// NaN without validation rows.
    pub val: f64,
}

/// What [`fit`] needs of the model it trains.
pub trait Objective {
    /// The trainable variables: what AdamW updates and early stopping snapshots and restores.
    fn vars(&self) -> Vec<Var>;
    /// The loss of the train rows `rows` (indices into the objective's own train table) to
    /// differentiate, and the value it contributes to the epoch's train loss (per row).
    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError>;
    /// The loss on the validation rows with the current variables; `None` without validation rows
    /// (then every epoch is kept and all `epochs` run).
    fn val_loss(&mut self) -> Result<Option<f64>, StageError>;
    /// Called once an epoch's losses are known, before the early-stopping decision.
    fn after_epoch(&mut self, loss: &EpochLoss) -> Result<(), StageError> {
        let _ = loss;
        Ok(())
    }
}

/// The outcome of [`fit`]; the objective's variables hold the weights of `best_epoch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub history: Vec<EpochLoss>,
    /// 1-based; the epoch whose weights were kept (0 if none ran).
    pub best_epoch: usize,
}

impl Fitted {
    /// The losses of the kept epoch.
    pub fn at_best(&self) -> Option<EpochLoss> {
        self.history.get(self.best_epoch.checked_sub(1)?).copied()
    }
}

/// Writes `history.csv`: `epoch,train_loss,val_loss`, one row per epoch run.
pub fn write_history(path: &std::path::Path, history: &[EpochLoss]) -> Result<(), StageError> {
    let rows = history.iter().map(|h| crate::tensors::csv_row![h.epoch, h.train, h.val]);
    crate::tensors::write_csv(path, &["epoch", "train_loss", "val_loss"], rows)
}

/// The train and val loss per epoch as a chart (blue, orange; epoch on x), for a stage's `loss.svg`.
pub fn loss_chart(title: &str, y_label: &str, history: &[EpochLoss]) -> crate::plot::Chart {
    use crate::plot::{self, Chart, Series};
    let xy = |f: fn(&EpochLoss) -> f64| history.iter().map(|h| (h.epoch as f64, f(h))).collect::<Vec<_>>();
    Chart::new(title, "epoch", y_label).series(Series::line("train", plot::BLUE, xy(|h| h.train))).series(Series::line(
        "val",
        plot::ORANGE,
        xy(|h| h.val),
    ))
}

/// candle-nn's `AdamW` step, fused: the same f32 operations in the same order (so the same bits; its
/// `t · c` and `t + c` are `t · c + 0` and `t · 1 + c`, kept here), in one pass over each variable,
/// where candle-nn makes a dozen tensor operations that each allocate a variable-sized buffer. The
/// moments live here as plain vectors.
struct FusedAdamW {
    vars: Vec<(Var, Vec<f32>, Vec<f32>)>,
    params: ParamsAdamW,
    step: i32,
}

impl FusedAdamW {
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<FusedAdamW> {
        let vars = vars
            .into_iter()
            .map(|v| {
                if v.dtype() != DType::F32 {
                    candle_core::bail!("AdamW: a {:?} variable (the loop trains f32 ones)", v.dtype());
                }
                let n = v.elem_count();
                Ok((v, vec![0.0; n], vec![0.0; n]))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(FusedAdamW { vars, params, step: 0 })
    }

    fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let p = &self.params;
        let scale_m = 1f64 / (1f64 - p.beta1.powi(self.step));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(self.step));
        let f = |x: f64| x as f32;
        let (b1, c1, b2, c2) = (f(p.beta1), f(1.0 - p.beta1), f(p.beta2), f(1.0 - p.beta2));
        let (sm, sv, decay, eps, lr) = (f(scale_m), f(scale_v), f(1f64 - p.lr * p.weight_decay), f(p.eps), f(p.lr));
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var) else { continue };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let mut next = vec![0.0f32; theta.len()];
            next.par_iter_mut()
                .zip(m.par_iter_mut())
                .zip(v.par_iter_mut())
                .zip(theta.par_iter())
                .zip(g.par_iter())
                .with_min_len(1 << 14)
                .for_each(|((((out, m), v), &th), &g)| {
                    let next_m = (*m * b1 + 0.0) + (g * c1 + 0.0);
                    let next_v = (*v * b2 + 0.0) + ((g * g) * c2 + 0.0);
                    let (m_hat, v_hat) = (next_m * sm + 0.0, next_v * sv + 0.0);
                    let adjusted = m_hat / (v_hat.sqrt() * 1.0 + eps);
                    *out = (th * decay + 0.0) - (adjusted * lr + 0.0);
                    (*m, *v) = (next_m, next_v);
                });
            var.set(&Tensor::from_vec(next, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

/// The loop's AdamW: [`FusedAdamW`] on the CPU; off it candle-nn's, whose updates stay on the device
/// (the fused one reads every variable back to the host).
enum AdamW {
    Fused(FusedAdamW),
    OnDevice(candle_nn::AdamW),
}

impl AdamW {
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<AdamW> {
        if vars.iter().all(|v| v.device().is_cpu()) {
            FusedAdamW::new(vars, params).map(AdamW::Fused)
        } else {
            <candle_nn::AdamW as candle_nn::Optimizer>::new(vars, params).map(AdamW::OnDevice)
        }
    }

    fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        match self {
            AdamW::Fused(o) => o.backward_step(loss),
            AdamW::OnDevice(o) => candle_nn::Optimizer::backward_step(o, loss),
        }
    }
}

fn snapshot(vars: &[Var], what: &str) -> Result<Vec<Tensor>, StageError> {
    vars.iter().map(|v| v.as_tensor().copy().map_err(candle_error(what))).collect()
}

/// Trains `objective` on the train rows `rows` (see the module doc).
pub fn fit(objective: &mut impl Objective, rows: &[usize], opts: &FitOptions) -> Result<Fitted, StageError> {
    let e = candle_error(format!("{} training", opts.what));
    let p = &opts.params;
    let vars = objective.vars();
    let adamw = ParamsAdamW { lr: p.lr, weight_decay: p.weight_decay, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), adamw).map_err(&e)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ opts.shuffle_salt);
    let mut order = rows.to_vec();
    let mut history = Vec::new();
    let (mut best, mut best_epoch, mut best_val) = (snapshot(&vars, opts.what)?, 0, f64::INFINITY);
    let min_batch = opts.min_batch.max(1);
    opts.progress.start(p.epochs as u64, "epochs");
    for epoch in 1..=p.epochs {
        crate::sampling::shuffle(&mut order, &mut rng);
        let (mut sum, mut count) = (0.0, 0);
        for chunk in order.chunks(p.batch_size.max(min_batch)) {
            if chunk.len() < min_batch {
                continue;
            }
            wspace_stage_api::check_stop()?;
            let (loss, value) = objective.batch_loss(chunk)?;
            sum += value * chunk.len() as f64;
            count += chunk.len();
            opt.backward_step(&loss).map_err(&e)?;
        }
        let train = sum / count.max(1) as f64;
        if !train.is_finite() {
            return Err(StageError::msg(format!(
                "{}: training loss became {train} at epoch {epoch} (try a smaller `lr`)",
                opts.what
            )));
        }
        let val = objective.val_loss()?;
        let loss = EpochLoss { epoch, train, val: val.unwrap_or(f64::NAN) };
        history.push(loss);
        objective.after_epoch(&loss)?;
        opts.progress.inc(1);
        // Without validation every epoch is kept; with it, only a strictly lower loss (NaN never is).
        let improved = val.is_none_or(|v| v < best_val);
        if improved {
            best_val = val.unwrap_or(best_val);
            best_epoch = epoch;
            best = snapshot(&vars, opts.what)?;
        } else if epoch - best_epoch >= p.patience {
            break;
        }
    }
    for (v, t) in vars.iter().zip(&best) {
        v.set(t).map_err(candle_error(opts.what))?;
    }
    Ok(Fitted { history, best_epoch })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use wspace_stage_api::NoProgress;

    use super::*;

    /// Fits `w` to `target` by squared error; the validation loss follows a script, to drive early
    /// stopping.
    struct Scripted {
        w: Var,
        target: Vec<f32>,
        val: Vec<Option<f64>>,
        batches: Vec<Vec<usize>>,
        seen: Vec<EpochLoss>,
    }

    impl Objective for Scripted {
        fn vars(&self) -> Vec<Var> {
            vec![self.w.clone()]
        }
        fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
            self.batches.push(rows.to_vec());
            let t: Vec<f32> = rows.iter().map(|&r| self.target[r]).collect();
            let t = Tensor::from_vec(t, rows.len(), &Device::Cpu).unwrap();
            let loss = self.w.as_tensor().broadcast_sub(&t).unwrap().sqr().unwrap().mean_all().unwrap();
            let value = loss.to_scalar::<f32>().unwrap() as f64;
            Ok((loss, value))
        }
        fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
            Ok(self.val.get(self.seen.len()).copied().flatten())
        }
        fn after_epoch(&mut self, loss: &EpochLoss) -> Result<(), StageError> {
            self.seen.push(*loss);
            Ok(())
        }
    }

    fn scripted(val: Vec<Option<f64>>) -> Scripted {
        let w = Var::from_vec(vec![0.0f32], 1, &Device::Cpu).unwrap();
        Scripted { w, target: vec![1.0, 2.0, 3.0, 4.0, 5.0], val, batches: Vec::new(), seen: Vec::new() }
    }

    fn options(epochs: usize, patience: usize, min_batch: usize) -> FitOptions<'static> {
        FitOptions {
            params: FitParams {
                epochs,
                patience,
                lr: 0.1,
                weight_decay: 0.0,
                batch_size: 2,
                seed: 7,
                device: crate::device::DeviceName::Cpu,
            },
            min_batch,
            shuffle_salt: 0,
            what: "test",
            progress: &NoProgress,
        }
    }

    #[test]
    fn stops_after_patience_and_restores_the_best_epoch() {
        let mut o = scripted(vec![Some(5.0), Some(3.0), Some(4.0), Some(3.5), Some(1.0)]);
        let fitted = fit(&mut o, &[0, 1, 2, 3, 4], &options(10, 2, 1)).unwrap();
        // Epoch 2 is best; epochs 3 and 4 do not improve: stop after epoch 4, before the better epoch 5.
        assert_eq!(fitted.best_epoch, 2);
        assert_eq!(fitted.history.len(), 4);
        assert_eq!(o.seen, fitted.history);
        assert_eq!(fitted.at_best().unwrap().val, 3.0);
        // The variable holds the weights after epoch 2, not the last ones: rerun two epochs and compare.
        let mut two = scripted(vec![Some(5.0), Some(3.0)]);
        fit(&mut two, &[0, 1, 2, 3, 4], &options(2, 2, 1)).unwrap();
        assert_eq!(o.w.as_tensor().to_vec1::<f32>().unwrap(), two.w.as_tensor().to_vec1::<f32>().unwrap());
        // … and not those after epoch 4 (without validation the last epoch is kept).
        let mut four = scripted(vec![None; 4]);
        fit(&mut four, &[0, 1, 2, 3, 4], &options(4, 9, 1)).unwrap();
        assert_ne!(o.w.as_tensor().to_vec1::<f32>().unwrap(), four.w.as_tensor().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn without_validation_every_epoch_runs_and_the_last_is_kept() {
        let mut o = scripted(vec![None; 6]);
        let fitted = fit(&mut o, &[0, 1, 2, 3, 4], &options(6, 1, 1)).unwrap();
        assert_eq!((fitted.history.len(), fitted.best_epoch), (6, 6));
        assert!(fitted.history.iter().all(|h| h.val.is_nan() && h.train.is_finite()));
        // Train loss falls towards the mean target.
        assert!(fitted.history[5].train < fitted.history[0].train, "{:?}", fitted.history);
    }

    #[test]
    fn batches_are_shuffled_per_epoch_and_short_ones_skipped() {
        let mut o = scripted(vec![None; 3]);
        fit(&mut o, &[0, 1, 2, 3, 4], &options(3, 1, 2)).unwrap();
        // 5 rows, batches of 2: the last row of each epoch's order is skipped (min_batch 2).
        assert_eq!(o.batches.len(), 6);
        assert!(o.batches.iter().all(|b| b.len() == 2));
        let epochs: Vec<Vec<usize>> = o.batches.chunks(2).map(|c| c.concat()).collect();
        assert!(epochs.windows(2).any(|w| w[0] != w[1]), "the order changes between epochs: {epochs:?}");
        let mut again = scripted(vec![None; 3]);
        fit(&mut again, &[0, 1, 2, 3, 4], &options(3, 1, 2)).unwrap();
        assert_eq!(o.batches, again.batches, "the order is a function of the seed");
    }

    #[test]
    fn a_non_finite_train_loss_names_the_stage_and_epoch() {
        let mut o = scripted(vec![None; 2]);
        o.target[0] = f32::NAN;
        let err = fit(&mut o, &[0, 1, 2, 3, 4], &options(2, 1, 1)).unwrap_err().to_string();
        assert!(err.starts_with("test: training loss became NaN at epoch 1"), "{err}");
    }

    /// The fused AdamW (the CPU's) and candle-nn's (what runs off the CPU) give the same bits, step
    /// after step, with weight decay, on a loss whose gradient mixes magnitudes.
    #[test]
    fn fused_adamw_gives_candle_nns_bits() {
        let params = ParamsAdamW { lr: 0.01, weight_decay: 0.1, ..Default::default() };
        let start: Vec<f32> = (0..300).map(|i| ((i as f32) * 0.37).sin() * 10f32.powi(i % 5 - 2)).collect();
        let make = || Var::from_vec(start.clone(), (3, 100), &Device::Cpu).unwrap();
        let (a, b) = (make(), make());
        let mut fused = AdamW::Fused(FusedAdamW::new(vec![a.clone()], params.clone()).unwrap());
        let mut nn = AdamW::OnDevice(<candle_nn::AdamW as candle_nn::Optimizer>::new(vec![b.clone()], params).unwrap());
        let loss = |v: &Var| v.as_tensor().sqr().unwrap().sin().unwrap().sum_all().unwrap();
        for _ in 0..5 {
            fused.backward_step(&loss(&a)).unwrap();
            nn.backward_step(&loss(&b)).unwrap();
            let bits = |v: &Var| {
                v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b));
        }
    }
}
