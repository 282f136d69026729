//! ResNet-18 device check and step timing.
//!
//! * `resnet18_gpu_check gpu [side]` (build with `--features cuda`): on CUDA device 0, computes one
//!   training-mode loss and gradient and one SGD-momentum step on a batch of 32 synthetic grey images
//!   (side × side, default 28, replicated to 3 channels) and compares them with the CPU (loss, logits,
//!   the gradient norms of 8 tensors, the loss after the step); then trains 20 Adam steps on the GPU
//!   (loss must fall) and times steps at batch 32 for 28×28 and 224×224. Exit status 1 when a
//!   comparison fails, 2 when there is no CUDA device.
//! * `resnet18_gpu_check cpu-time [side] [steps]`: seconds per training step (batch 32, Adam) on the
//!   CPU, default side 28, 3 steps after one warm-up step.
//!
//! * `resnet18_gpu_check export DIR`: trains 3 SGD steps on the CPU, writes `DIR/model.safetensors`
//!   (the zoo's format: every `state_dict` entry as `F32`) and `DIR/check.safetensors` (4 input images
//!   and their eval-mode logits) for `scripts/reference/resnet18_load_check.py`, which loads the model
//!   into `torchvision.models.resnet18(num_classes=3)` with `load_state_dict` and compares the logits.
//!
//! `scripts/gpu-check.sh` builds and runs the `gpu` mode.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wspace_stages::nn::Optimizer;
use wspace_stages::resnet::{loss_and_gradients, ImageSet, InputTransform, ResNet18, ResnetTrainConfig, Trainer};
use wspace_stages::tensors::NamedTensors;

const BATCH: usize = 32;

/// Synthetic grey images (class k brighter in horizontal band k, plus noise) and labels.
fn synthetic(n: usize, side: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        for r in 0..side {
            for _ in 0..side {
                let band = (r * 3 / side) == k;
                let noise = (rng.next_u32() % 60) as i32;
                pixels.push((if band { 170 } else { 50 } + noise) as u8);
            }
        }
        labels.push(k as u8);
    }
    (pixels, labels)
}

fn norms(ts: &[Tensor]) -> Vec<f64> {
    ts.iter()
        .map(|t| t.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt())
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn batch(side: usize, seed: u64, dev: &Device) -> (Tensor, Tensor) {
    let (pixels, labels) = synthetic(BATCH, side, seed);
    let set = ImageSet { pixels: &pixels, labels: &labels, shape: [1, side, side] };
    let idx: Vec<u32> = (0..BATCH as u32).collect();
    (set.batch(&idx, &InputTransform::default(), dev).unwrap(), set.batch_labels(&idx, dev).unwrap())
}

/// Seconds per step (mean over `steps` after one warm-up step).
fn time_steps(dev: &Device, side: usize, steps: usize) -> f64 {
    let model = ResNet18::init(3, dev).unwrap();
    let mut cfg = ResnetTrainConfig::new(Optimizer::adam(1e-3), BATCH, 0);
    if dev.is_cuda() {
        cfg.device = wspace_stages::resnet::DeviceChoice::Cuda(0);
    }
    let mut t = Trainer::new(model, &cfg).unwrap();
    let (x, y) = batch(side, 5, dev);
    t.step(&x, &y).unwrap();
    dev.synchronize().unwrap();
    let start = Instant::now();
    for _ in 0..steps {
        t.step(&x, &y).unwrap();
    }
    dev.synchronize().unwrap();
    start.elapsed().as_secs_f64() / steps as f64
}

fn gpu(side: usize) -> i32 {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no CUDA device ({e}); build with `--features cuda` on a machine with an NVIDIA GPU");
            return 2;
        }
    };
    let cpu = Device::Cpu;
    let model_cpu = ResNet18::init(7, &cpu).unwrap();
    let model_gpu = model_cpu.to(&gpu, DType::F32).unwrap();
    let (xc, yc) = batch(side, 1, &cpu);
    let (xg, yg) = batch(side, 1, &gpu);
    let gc = loss_and_gradients(&model_cpu, &xc, &yc).unwrap();
    let gg = loss_and_gradients(&model_gpu, &xg, &yg).unwrap();
    // Every parameter's gradient norm, CPU against GPU.
    let probes = ResNet18::parameter_names();
    let (nc, ng) = (norms(&gc.grads), norms(&gg.grads));
    let mut ok = true;
    let loss_err = rel(gg.loss as f64, gc.loss as f64);
    println!("loss: cpu {:.6} gpu {:.6} (relative difference {loss_err:.2e})", gc.loss, gg.loss);
    ok &= loss_err < 1e-3;
    let lc: Vec<f32> = gc.logits.flatten_all().unwrap().to_vec1().unwrap();
    let lg: Vec<f32> = gg.logits.to_device(&cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let logit_err = lc.iter().zip(&lg).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("logits: max |cpu − gpu| = {logit_err:.2e}");
    ok &= logit_err < 1e-2;
    for ((p, a), b) in probes.iter().zip(&nc).zip(&ng) {
        let e = rel(*b, *a);
        println!("‖∇ {p}‖: cpu {a:.6e} gpu {b:.6e} (relative difference {e:.2e})");
        ok &= e < 1e-2;
    }
    // One SGD-momentum step on each device, then the loss of the updated weights.
    let cfg = ResnetTrainConfig::new(Optimizer::sgd(0.01, 0.9), BATCH, 0);
    let mut tc = Trainer::new(model_cpu, &cfg).unwrap();
    let mut tg =
        Trainer::new(model_gpu, &ResnetTrainConfig { device: wspace_stages::resnet::DeviceChoice::Cuda(0), ..cfg }).unwrap();
    tc.step(&xc, &yc).unwrap();
    tg.step(&xg, &yg).unwrap();
    let (ac, ag) =
        (loss_and_gradients(tc.model(), &xc, &yc).unwrap().loss, loss_and_gradients(tg.model(), &xg, &yg).unwrap().loss);
    let step_err = rel(ag as f64, ac as f64);
    println!("loss after one SGD step: cpu {ac:.6} gpu {ag:.6} (relative difference {step_err:.2e})");
    ok &= step_err < 2e-3;
    // A few Adam steps on the GPU.
    let mut t = Trainer::new(
        ResNet18::init(11, &gpu).unwrap(),
        &ResnetTrainConfig {
            device: wspace_stages::resnet::DeviceChoice::Cuda(0),
            ..ResnetTrainConfig::new(Optimizer::adam(1e-3), BATCH, 0)
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for s in 0..20 {
        let (x, y) = batch(side, 100 + s, &gpu);
        losses.push(t.step(&x, &y).unwrap().loss);
    }
    println!("20 Adam steps on the GPU: losses {:?}", losses.iter().map(|l| format!("{l:.3}")).collect::<Vec<_>>());
    let (first, last) = (losses[..5].iter().sum::<f32>() / 5.0, losses[15..].iter().sum::<f32>() / 5.0);
    ok &= losses.iter().all(|l| l.is_finite()) && last < first;
    for s in [28usize, 224] {
        println!("GPU: {:.4} s per training step (batch {BATCH}, {s}×{s})", time_steps(&gpu, s, 10));
    }
    println!("{}", if ok { "GPU CHECK PASSED" } else { "GPU CHECK FAILED" });
    if ok {
        0
    } else {
        1
    }
}

fn export(dir: &str) -> i32 {
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    let cfg = ResnetTrainConfig::new(Optimizer::sgd(0.05, 0.9), BATCH, 0);
    let mut t = Trainer::new(ResNet18::init(3, &Device::Cpu).unwrap(), &cfg).unwrap();
    for s in 0..3 {
        let (x, y) = batch(28, 20 + s, &Device::Cpu);
        t.step(&x, &y).unwrap();
    }
    t.model().named_tensors().unwrap().write(&dir.join("model.safetensors")).unwrap();
    let (x, _) = batch(28, 99, &Device::Cpu);
    let x = x.narrow(0, 0, 4).unwrap();
    let z = t.model().forward_eval(&x).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut check = NamedTensors::new();
    check.push("input", x.dims().to_vec(), flat(&x));
    check.push("logits", z.dims().to_vec(), flat(&z));
    check.write(&dir.join("check.safetensors")).unwrap();
    println!("wrote {}/model.safetensors and check.safetensors", dir.display());
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).map(|a| a.parse().expect("numeric argument")).unwrap_or(d);
    let code = match args.first().map(String::as_str) {
        Some("gpu") | None => gpu(num(1, 28)),
        Some("cpu-time") => {
            let (side, steps) = (num(1, 28), num(2, 3));
            let s = time_steps(&Device::Cpu, side, steps);
            println!("CPU: {s:.3} s per training step (batch {BATCH}, {side}×{side} grey → 3 channels, Adam)");
            let model = ResNet18::init(3, &Device::Cpu).unwrap();
            let (x, y) = batch(side, 5, &Device::Cpu);
            let start = Instant::now();
            for _ in 0..steps {
                loss_and_gradients(&model, &x, &y).unwrap();
            }
            println!("CPU: {:.3} s of it forward + backward", start.elapsed().as_secs_f64() / steps as f64);
            0
        }
        Some("export") => export(args.get(1).map(String::as_str).unwrap_or("resnet18-export")),
        Some(other) => {
            eprintln!("unknown mode `{other}`: use `gpu [side]` or `cpu-time [side] [steps]`");
            2
        }
    };
    std::process::exit(code);
}
