//! Tests of the flow: the class-order augmentation, sampling's determinism and guidance, and a
//! save/load round trip.

use super::model::{Flow, FlowConfig, Predict, Prompt};
use super::{permute_head, ORDERS};
use crate::sampling::normal_f32;
use crate::tensors::NamedTensors;
use rand_chacha::rand_core::SeedableRng;

/// A flow of 5 tokens × 2 values over 4 classes, d 8, one layer, on `device` (also the GPU tests').
pub(crate) fn tiny_flow_on(seed: u64, device: &candle_core::Device) -> Flow {
    let config = FlowConfig {
        codec: "transformer".into(),
        tokens: 5,
        width: 2,
        class_token: 2,
        classes: 4,
        class_dim: 3,
        d_model: 8,
        heads: 2,
        layers: 1,
        predict: Predict::Velocity,
        loss_min: 0.2,
        loss_max: 1.2,
    };
    let coords: Vec<f32> = (0..12).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
    Flow::init(config, vec![0.5; 10], vec![2.0; 10], coords, seed, device).unwrap()
}

fn tiny_flow(seed: u64) -> Flow {
    tiny_flow_on(seed, &candle_core::Device::Cpu)
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| normal_f32(&mut rng)).collect()
}

#[test]
fn permuting_the_head_moves_its_rows_and_leaves_the_body() {
    let mut w = NamedTensors::new();
    w.push("conv.weight", vec![2, 2], vec![9.0, 8.0, 7.0, 6.0]);
    w.push("fc.weight", vec![3, 2], vec![0.0, 0.1, 1.0, 1.1, 2.0, 2.1]);
    w.push("fc.bias", vec![3], vec![0.0, 1.0, 2.0]);
    let p = permute_head(&w, [2, 0, 1]).unwrap();
    assert_eq!(
        p.iter().map(|t| t.values.clone()).collect::<Vec<_>>(),
        [vec![9.0, 8.0, 7.0, 6.0], vec![2.0, 2.1, 0.0, 0.1, 1.0, 1.1], vec![2.0, 0.0, 1.0]]
    );
    for order in ORDERS {
        let inverse = [0, 1, 2].map(|s| order.iter().position(|&o| o == s).unwrap());
        assert_eq!(permute_head(&permute_head(&w, order).unwrap(), inverse).unwrap(), w, "{order:?}");
    }
    let mut bad = NamedTensors::new();
    bad.push("fc.weight", vec![10, 2], vec![0.0; 20]);
    bad.push("fc.bias", vec![10], vec![0.0; 10]);
    assert!(permute_head(&bad, [0, 1, 2]).unwrap_err().to_string().contains("3-class head"));
}

#[test]
fn sampling_is_a_function_of_the_noise_and_the_prompt_and_guidance_0_ignores_the_prompt() {
    let flow = tiny_flow(3);
    let prompts = [Prompt { classes: [0, 1, 2], loss: 0.4 }, Prompt { classes: [3, 1, 0], loss: 1.0 }];
    let x0 = noise(20, 1);
    let a = flow.sample(&prompts, x0.clone(), 4, 1.0).unwrap();
    assert_eq!(a, flow.sample(&prompts, x0.clone(), 4, 1.0).unwrap(), "same noise, same bytes");
    assert_ne!(a, flow.sample(&prompts, noise(20, 2), 4, 1.0).unwrap(), "other noise, other latents");
    let swapped = [prompts[1], prompts[0]];
    let b = flow.sample(&swapped, x0.clone(), 4, 1.0).unwrap();
    assert_ne!(a[..10], b[..10], "the prompt conditions the draw");
    let (u, v) = (flow.sample(&prompts, x0.clone(), 4, 0.0).unwrap(), flow.sample(&swapped, x0, 4, 0.0).unwrap());
    assert_eq!(u[..10], v[..10], "guidance 0: the unconditional velocity alone");
    assert!(flow.check(&Prompt { classes: [0, 4, 1], loss: 0.5 }).unwrap_err().to_string().contains("class 4"));
}

#[test]
fn a_saved_flow_loads_to_the_same_samples() {
    let flow = tiny_flow(5);
    let dir = std::env::temp_dir().join(format!("wspace-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    flow.save(&dir, serde_json::json!({ "best_epoch": 1 })).unwrap();
    let back = Flow::load(&dir, &candle_core::Device::Cpu).unwrap();
    assert_eq!(back.config, flow.config);
    let p = [Prompt { classes: [2, 0, 1], loss: 0.7 }];
    assert_eq!(back.sample(&p, noise(10, 4), 3, 2.0).unwrap(), flow.sample(&p, noise(10, 4), 3, 2.0).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
