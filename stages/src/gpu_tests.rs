//! The learned stages' networks on CUDA GPU 0 against the same networks on the CPU: built with the
//! `cuda` feature only, and run by `scripts/gpu-check.sh` (`cargo test --features cuda gpu_`).
//!
//! Each test builds one network from one seed on both devices, runs a forward pass on the same input
//! and the backward pass of `Σ c ⊙ output` (`c` a fixed pattern, so no gradient cancels by symmetry),
//! and compares the outputs and every variable's gradient. Tolerance, as for the CPU comparisons: the
//! two devices sum products in different orders, so a value may differ by its longest reduction's
//! length times ε_f32 (6e-8) of its tensor's scale. The longest reductions here are under 2,000 terms
//! (the generator body's gradient sums 8 models; the token transformer's weight gradients 4 models ×
//! 41 tokens; the cnn-s graph's conv1 weight gradient 20 images × 576 positions, 11,520, has
//! its own bound below), so 2,000 · ε_f32 ≈ 1.2e-4 of the scale.

use candle_core::{Device, Tensor, Var};

use crate::generate::flow::model::Prompt as FlowPrompt;
use crate::generate::generator::{Generator, GeneratorConfig, Prompt};
use crate::generate::model::{AlignConfig, Aligner};
use crate::nn::{logits_f32, CnnS, BODY_PARAMS, IMAGE_PIXELS};
use crate::weights::autoencoder::{Activation, Autoencoder, AutoencoderConfig};
use crate::weights::behaviour::{Engine, Probe};
use crate::weights::tokens::TokenLayout;
use crate::weights::transformer::{Normaliser, TokenAutoencoder, TransformerConfig};

const TOLERANCE: f64 = 1.2e-4;

fn gpu() -> Device {
    Device::new_cuda(0).expect("gpu tests need CUDA GPU 0")
}

fn pattern(n: usize, phase: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.618 + phase).sin()).collect()
}

/// A network's output and its variables' gradients of `Σ c ⊙ output`, as host values.
fn run(output: &Tensor, vars: &[Var]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let c = Tensor::from_vec(pattern(output.elem_count(), 0.3), output.shape(), output.device()).unwrap();
    let grads = (output * c).unwrap().sum_all().unwrap().backward().unwrap();
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (values(output), vars.iter().map(|v| grads.get(v).map_or_else(Vec::new, values)).collect())
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - *w as f64).abs() <= rel * scale + 1e-9, "{what} [{i}]: GPU {g} vs CPU {w} (scale {scale})");
    }
}

/// Builds a network on a device and returns its output and variables; compared across the devices.
fn compare(what: &str, build: impl Fn(&Device) -> (Tensor, Vec<Var>)) {
    let (cpu_out, cpu_vars) = build(&Device::Cpu);
    let (gpu_out, gpu_vars) = build(&gpu());
    assert!(gpu_out.device().is_cuda(), "{what}: the output is on the GPU");
    let (cpu, gpu) = (run(&cpu_out, &cpu_vars), run(&gpu_out, &gpu_vars));
    assert_close(&format!("{what} output"), &gpu.0, &cpu.0, TOLERANCE);
    for (i, (g, c)) in gpu.1.iter().zip(&cpu.1).enumerate() {
        assert_close(&format!("{what} gradient of variable {i}"), g, c, TOLERANCE);
    }
}

#[test]
fn gpu_behavioural_graph_matches_the_cpu_kernel() {
    // As `nn::graph`'s CPU test: conv1's weight gradient sums 20 · 576 = 11,520 products (7e-4 of the
    // scale); the loss 1e-5 relative.
    let probes: Vec<Probe> = (0..3)
        .map(|i| {
            let images = pattern(20 * IMAGE_PIXELS, i as f32).iter().map(|v| v.abs()).collect::<Vec<_>>();
            let teacher = logits_f32(&CnnS::init(40 + i), &images);
            Probe { images, teacher, labels: (0..20).map(|j| (j % 3) as u8).collect() }
        })
        .collect();
    let weights: Vec<Vec<f32>> = (0..3).map(|i| CnnS::init(50 + i).flat().to_vec()).collect();
    let refs: Vec<&Probe> = probes.iter().collect();
    let kernel = Engine::Kernel.losses(&weights, &refs, 2.0, 0.25, true).unwrap();
    let graph = Engine::Graph(gpu()).losses(&weights, &refs, 2.0, 0.25, true).unwrap();
    for ((lk, gk), (lg, gg)) in kernel.iter().zip(&graph) {
        assert!((lk - lg).abs() <= 1e-5 * lk.abs(), "loss: GPU {lg} vs CPU kernel {lk}");
        assert_close("behavioural gradient", gg, gk, 7e-4);
    }
}

#[test]
fn gpu_mlp_autoencoder_matches_the_cpu() {
    let config = AutoencoderConfig { input_dim: 40, hidden: vec![64], latent_dim: 8, activation: Activation::Elu };
    compare("mlp autoencoder", |dev| {
        let ae = Autoencoder::init(config.clone(), 3, dev).unwrap();
        let x = Tensor::from_vec(pattern(6 * 40, 1.0), (6, 40), dev).unwrap();
        let y = ae.decode_tensor(&ae.encode_tensor(&x).unwrap()).unwrap();
        (y, ae.vars())
    });
}

#[test]
fn gpu_token_transformer_matches_the_cpu() {
    let layout = TokenLayout::new("cnn-s", None).unwrap();
    let flat: Vec<Vec<f32>> = (0..4).map(|i| CnnS::init(60 + i).flat().to_vec()).collect();
    let refs: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
    let normaliser = Normaliser::fit(layout.clone(), &refs);
    let config = TransformerConfig {
        arch: "cnn-s".into(),
        tokens: layout.tokens(),
        token_width: layout.width,
        d_model: 32,
        heads: 4,
        layers: 2,
        token_latent: 16,
    };
    let x: Vec<f32> = flat.iter().flat_map(|w| normaliser.normalise(w)).collect();
    compare("token transformer", |dev| {
        let model = TokenAutoencoder::init(config.clone(), normaliser.clone(), 5, dev).unwrap();
        let x = Tensor::from_slice(&x, (4, config.tokens, config.token_width), dev).unwrap();
        let y = model.decode_tensor(&model.encode_tensor(&x).unwrap()).unwrap();
        (y, model.vars())
    });
}

#[test]
fn gpu_aligner_matches_the_cpu() {
    let config = AlignConfig {
        dataset_dim: 48,
        results_dim: 16,
        bins: 5,
        loss_min: 0.2,
        loss_max: 1.2,
        hidden: vec![32],
        latent_dim: 8,
        tau: 0.1,
    };
    compare("aligner", |dev| {
        let al = Aligner::init(config.clone(), 7, dev).unwrap();
        let d = Tensor::from_vec(pattern(6 * 48, 2.0), (6, 48), dev).unwrap();
        (al.forward(&d, &[0, 1, 2, 3, 4, 2]).unwrap(), al.vars())
    });
}

#[test]
fn gpu_generator_matches_the_cpu() {
    let config =
        GeneratorConfig { classes: 5, dataset_dim: 4, hidden: vec![16], noise_dim: 2, noise: 1.0, loss_min: 0.1, loss_max: 1.1 };
    let body = pattern(BODY_PARAMS, 0.7);
    let emb = pattern(20, 1.7);
    let prompts: Vec<Prompt> = (0..8)
        .map(|i| Prompt { classes: [i % 5, (i + 1) % 5, (i + 3) % 5], target_loss: 0.1 * i as f64, xi: pattern(6, i as f32) })
        .collect();
    compare("generator", |dev| {
        let g = Generator::init(config.clone(), &body, emb.clone(), 3, dev).unwrap();
        (g.forward(&prompts).unwrap(), g.vars())
    });
}

#[test]
fn gpu_flow_matches_the_cpu() {
    let prompts: Vec<Option<FlowPrompt>> =
        (0..6).map(|i| (i % 3 != 0).then_some(FlowPrompt { classes: [i % 4, (i + 1) % 4, (i + 2) % 4], loss: 0.5 })).collect();
    let t: Vec<f32> = (0..6).map(|i| i as f32 / 6.0).collect();
    compare("flow", |dev| {
        let f = crate::generate::flow::tests::tiny_flow_on(9, dev);
        (f.forward(&pattern(60, 0.5), &t, &prompts).unwrap(), f.vars())
    });
}
