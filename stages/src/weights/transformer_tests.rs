//! Tests of the tokenised encoder: the tokeniser's layout and exact round trip, the normaliser's
//! gradient pull-back, and the transformer end to end on a tiny real zoo (determinism, codec,
//! evaluation, bad input).

use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::Value;

use super::behaviour::WeightMap;
use super::tests::{read_metrics, tiny_zoo};
use super::tokens::TokenLayout;
use super::transformer::{random_permutation, Normaliser, TokenAutoencoder};
use super::*;
use crate::nn::{CnnS, NUM_PARAMS, PARAM_SPECS};
use crate::sampling::normal_f32;
use crate::tensors::NamedTensors;
use crate::test_util::{run_stage, s};

fn random_flat(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..NUM_PARAMS).map(|_| normal_f32(&mut rng)).collect()
}

/// The layout written out by hand from the cnn-s table (`nn::cnn_s`): token `t` of layer `l` holds
/// that unit's row of `l.weight` and then its bias, the rest zeros.
#[test]
fn tokens_hold_each_units_incoming_weights_and_bias_and_round_trip_exactly() {
    let layout = TokenLayout::new("cnn-s", None).unwrap();
    assert_eq!((layout.tokens(), layout.width), (8 + 6 + 4 + 20 + 3, 201));
    assert_eq!(layout.mask().iter().filter(|&&m| m == 1.0).count(), NUM_PARAMS);
    let flat = random_flat(3);
    let tokens = layout.tokenise(&flat);
    let token = |t: usize| &tokens[t * 201..(t + 1) * 201];
    // conv2 unit 3 = token 8 + 3: conv2.weight[3] (offset 208, 200 per unit), then conv2.bias[3] (offset 1408).
    assert_eq!(&token(11)[..200], &flat[208 + 3 * 200..208 + 4 * 200]);
    assert_eq!(token(11)[200], flat[1408 + 3]);
    // fc1 unit 5 = token 8 + 6 + 4 + 5: fc1.weight[5] (offset 1514, 36 per unit), fc1.bias[5] (2234), zeros.
    assert_eq!(&token(23)[..36], &flat[1514 + 5 * 36..1514 + 6 * 36]);
    assert_eq!(token(23)[36], flat[2234 + 5]);
    assert!(token(23)[37..].iter().all(|&v| v == 0.0));
    // fc2 unit 2 is the last token: fc2.weight[2] (offset 2254, 20 per unit), fc2.bias[2] (2314).
    assert_eq!(&token(40)[..20], &flat[2254 + 40..2254 + 60]);
    assert_eq!(token(40)[20], flat[2316]);
    let positions: Vec<(usize, usize)> = layout.positions().collect();
    assert_eq!((positions[11], positions[23], positions[40]), ((1, 3), (3, 5), (4, 2)));

    // Exact round trip, flat and named (the zoo's names, shapes and order).
    let back = layout.detokenise(&tokens);
    assert!(back.iter().zip(&flat).all(|(a, b)| a.to_bits() == b.to_bits()));
    let named = layout.named(&back);
    let names: Vec<&str> = named.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, PARAM_SPECS.iter().map(|s| s.name).collect::<Vec<_>>());
    assert!(named.iter().zip(PARAM_SPECS.iter()).all(|(t, s)| t.shape == s.shape && t.values == flat[s.range()]));
    assert_eq!(layout.tokenise(&layout.flat_of(&named).unwrap()), tokens);
    // A wider token only adds padding.
    let wide = TokenLayout::new("cnn-s", Some(256)).unwrap();
    assert_eq!(wide.detokenise(&wide.tokenise(&flat)), flat);
}

#[test]
fn the_tokeniser_refuses_unknown_architectures_and_too_narrow_tokens() {
    let e = TokenLayout::new("resnet18", None).unwrap_err().to_string();
    assert!(e.contains("`resnet18`") && e.contains("cnn-s"), "{e}");
    let e = TokenLayout::new("cnn-s", Some(100)).unwrap_err().to_string();
    assert!(e.contains("`token_width`") && e.contains("`conv2`") && e.contains("201"), "{e}");
    let layout = TokenLayout::new("cnn-s", None).unwrap();
    let mut named = layout.named(&vec![0.0; NUM_PARAMS]);
    named.iter_mut().next().unwrap().shape = vec![8, 25];
    let e = layout.flat_of(&named).unwrap_err().to_string();
    assert!(e.contains("conv1.weight"), "{e}");
}

/// `flat_gradient_to_output` is the transpose of the (affine) map `y → weights`: ⟨g, A y⟩ = ⟨Aᵀ g, y⟩
/// with `A y = to_flat(y) − to_flat(0)`.
#[test]
fn normaliser_gradient_pullback_is_the_transpose_of_decoding() {
    let layout = TokenLayout::new("cnn-s", None).unwrap();
    let rows: Vec<Vec<f32>> = (0..5).map(random_flat).collect();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let n = Normaliser::fit(layout.clone(), &refs);
    // Normalising then de-normalising returns the weights (up to f32 rounding of (w − m)/s·s + m).
    let back = n.denormalise(&n.normalise(&rows[0]));
    assert!(back.iter().zip(&rows[0]).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
    let y: Vec<f32> = (0..41 * 201).map(|i| (0.37 * i as f32).sin()).collect();
    let g = random_flat(9);
    let (wy, w0) = (n.to_flat(&y), n.to_flat(&vec![0.0; y.len()]));
    let lhs: f64 = g.iter().zip(wy.iter().zip(&w0)).map(|(g, (a, b))| *g as f64 * (*a as f64 - *b as f64)).sum();
    let rhs: f64 = n.flat_gradient_to_output(&g).iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
    // Sums of ~2,300 f32 products of O(1) terms: 1e-4 relative covers their rounding.
    assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "⟨g, Ay⟩ = {lhs}, ⟨Aᵀg, y⟩ = {rhs}");
    // Padding entries get no gradient.
    let mask = layout.mask();
    assert!(n.flat_gradient_to_output(&g).iter().zip(&mask).all(|(v, m)| *m == 1.0 || *v == 0.0));
}

/// The permutation augmentation changes the weights, never the function.
#[test]
fn permutation_augmentation_keeps_the_function() {
    let flat = random_flat(4);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let net = crate::zoo::matching::Net::cnn_s();
    let permuted = random_permutation(&net, &mut rng).apply(&net, &flat);
    assert_ne!(permuted, flat);
    let images: Vec<f32> = (0..4 * 784).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let (x, y) =
        (crate::nn::logits_f32(&CnnS::from_flat(flat), &images), crate::nn::logits_f32(&CnnS::from_flat(permuted), &images));
    for (p, q) in x.iter().zip(&y) {
        assert!(p.iter().zip(q).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + a.abs())), "{p:?} vs {q:?}");
    }
}

fn transformer_params(extra: &[(&'static str, Value)]) -> Vec<(&'static str, Value)> {
    let mut p = vec![
        ("architecture", s("transformer")),
        ("d_model", Value::Int(16)),
        ("heads", Value::Int(2)),
        ("layers", Value::Int(1)),
        ("token_latent", Value::Int(4)),
        ("epochs", Value::Int(6)),
        ("batch_size", Value::Int(4)),
        ("patience", Value::Int(6)),
        ("loss", s("behaviour")),
        ("probe_images", Value::Int(16)),
        ("permute", Value::Bool(true)),
    ];
    for (k, v) in extra {
        p.retain(|(name, _)| name != k);
        p.push((k, v.clone()));
    }
    p
}

#[test]
fn transformer_trains_deterministically_and_serves_as_the_weight_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let (data_dir, tasks_dir, zoo_dir) = tiny_zoo(tmp.path());
    let pca_dir = tmp.path().join("pca");
    run_stage(&PcaKind, &[("components", Value::Int(4))], &[("zoo", &zoo_dir)], &pca_dir).unwrap();
    let sources: [(&str, &Path); 4] = [("pca", &pca_dir), ("zoo", &zoo_dir), ("tasks", &tasks_dir), ("data", &data_dir)];

    // Bad input, refused before training: no zoo, a token narrower than conv2, heads not dividing d_model.
    let e = run_stage(&AutoencoderKind, &transformer_params(&[("loss", s("mse"))]), &sources[..1], &tmp.path().join("x1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`zoo`") && e.contains("`architecture`"), "{e}");
    let e =
        run_stage(&AutoencoderKind, &transformer_params(&[("token_width", Value::Int(100))]), &sources, &tmp.path().join("x2"))
            .unwrap_err()
            .to_string();
    assert!(e.contains("`token_width`") && e.contains("`conv2`"), "{e}");
    let e = run_stage(&AutoencoderKind, &transformer_params(&[("heads", Value::Int(3))]), &sources, &tmp.path().join("x3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`heads`"), "{e}");

    // Two runs with the same seed write the same bytes.
    let (a, b) = (tmp.path().join("tok-a"), tmp.path().join("tok-b"));
    run_stage(&AutoencoderKind, &transformer_params(&[]), &sources, &a).unwrap();
    run_stage(&AutoencoderKind, &transformer_params(&[]), &sources, &b).unwrap();
    for f in ["transformer.safetensors", "transformer.json", "latents.safetensors", "history.csv", "metrics.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let m = read_metrics(&a);
    assert_eq!(
        (m["architecture"].as_str(), m["tokens"].as_u64(), m["latent_dim"].as_u64()),
        (Some("transformer"), Some(41), Some(164))
    );
    // It learns: the best val loss is below the first epoch's.
    let history = std::fs::read_to_string(a.join("history.csv")).unwrap();
    let val: Vec<f64> = history.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert!(val.iter().cloned().fold(f64::INFINITY, f64::min) < val[0], "val loss {val:?}");

    // The codec: load, encode a zoo model (= its row of latents.safetensors), decode to runnable weights.
    let codec = super::codec::load(&pca_dir, &a, &candle_core::Device::Cpu).unwrap();
    assert_eq!((codec.name(), codec.latent_shape(), codec.latent_dim()), ("transformer", vec![41, 4], 164));
    let coefficients = pca::Coefficients::load(&pca_dir).unwrap();
    let zoo = crate::zoo::Zoo::load(&zoo_dir).unwrap();
    let row = zoo.row_of(&coefficients.meta.rows[2]).unwrap();
    let latent = codec.encode(&[&zoo.weights(row).unwrap()]).unwrap();
    let stored = crate::tensors::TensorFile::open(&a.join("latents.safetensors")).unwrap().f32("latents").unwrap();
    assert_eq!(stored.shape, vec![coefficients.meta.rows.len(), 164]);
    let want = &stored.values[2 * 164..3 * 164];
    assert!(latent.iter().zip(want).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs())), "encode ≠ latents row");
    let decoded = codec.decode(&latent).unwrap().remove(0);
    CnnS::from_named_tensors(decoded.triples()).unwrap();
    // The codec's decoding is the saved transformer's, detokenised under the zoo's names.
    let t = TokenAutoencoder::load(&a, &candle_core::Device::Cpu).unwrap();
    assert!(t.decode(&latent).unwrap()[0] == decoded.flat(), "codec decoding differs from the transformer's");

    // evaluate-reconstruction takes it: `tokens_ae` and `tokens_ae_refined` beside `pca` and `mean`.
    let ev = tmp.path().join("eval");
    let inputs = [("zoo", zoo_dir.as_path()), ("pca", &pca_dir), ("autoencoder", &a), ("tasks", &tasks_dir), ("data", &data_dir)];
    let params = [("synthetic_images", Value::Int(16)), ("refine_steps", Value::Int(4)), ("probe_images", Value::Int(16))];
    run_stage(&EvaluateReconstructionKind, &params, &inputs, &ev).unwrap();
    let em = read_metrics(&ev);
    for v in ["pca", "tokens_ae", "tokens_ae_refined", "mean"] {
        assert!(em[v]["real"]["agreement"].as_f64().is_some(), "{v} missing: {em}");
    }
    assert!(em.get("pca_ae").is_none());

    // SANE's KDE sampling on its latents: on the zoo's own tasks the kernels are the task's own models;
    // on unseen tasks all train-split models; without the `zoo` input it names what is missing.
    use crate::generate::SampleKind;
    let kde_inputs = [("pca", pca_dir.as_path()), ("autoencoder", &a), ("zoo", &zoo_dir), ("tasks", &tasks_dir)];
    let kde = |prompts: &str, out: &str| {
        let params =
            [("method", s("kde")), ("prompts", s(prompts)), ("targets", Value::Int(1)), ("samples_per_prompt", Value::Int(2))];
        run_stage(&SampleKind, &params, &kde_inputs, &tmp.path().join(out)).map(|_| read_metrics(&tmp.path().join(out)))
    };
    let tasks = crate::data::Tasks::load(&tasks_dir).unwrap();
    let train_tasks = tasks.split(crate::data::TaskSplit::Train).count();
    let m = kde("train", "kde-train").unwrap();
    assert_eq!((m["tasks"].as_u64(), m["kde_own_task_prompts"].as_u64()), (Some(train_tasks as u64), Some(train_tasks as u64)));
    assert_eq!(m["samples"].as_u64(), Some(2 * train_tasks as u64));
    let m = kde("test", "kde-test").unwrap();
    assert_eq!(m["kde_own_task_prompts"].as_u64(), Some(0));
    let rows = crate::generate::sample::load_samples(&tmp.path().join("kde-test")).unwrap();
    let w = NamedTensors::read(&tmp.path().join("kde-test").join(&rows[0].file)).unwrap();
    CnnS::from_named_tensors(w.triples()).unwrap();
    let params = [("method", s("kde"))];
    let no_zoo = [kde_inputs[0], kde_inputs[1], kde_inputs[3]];
    let e = run_stage(&SampleKind, &params, &no_zoo, &tmp.path().join("kde-bad")).unwrap_err().to_string();
    assert!(e.contains("`kde`") && e.contains("`zoo`"), "{e}");
}

/// The hand-built encoder and decoder equal PyTorch's `TransformerEncoderLayer` stack on the same
/// weights. Expected numbers: `scripts/weights/transformer_reference.py` → `stages/tests/fixtures/transformer/`
/// (weights N(0, 0.3²) in float32, outputs in float64). Tolerance: both sides are O(1) values after
/// eight f32 layers of width ≤ 201 (each an f32 dot product, relative error ≲ 201·2⁻²⁴ ≈ 1.2e-5 per
/// layer); 1e-4 absolute covers that with room, and a wrong head split, norm placement or GELU is off
/// by ≫ 1e-2.
#[test]
fn transformer_matches_pytorch() {
    use candle_core::{Device, Tensor};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformer");
    let model = TokenAutoencoder::load(&dir, &candle_core::Device::Cpu).unwrap();
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let values = |k: &str| -> Vec<f32> { expected[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let x = Tensor::from_vec(values("input"), (1, 41, 201), &Device::Cpu).unwrap();
    let z: Vec<f32> = model.encode_tensor(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want_z = values("latents");
    assert_eq!(z.len(), want_z.len());
    let worst = z.iter().zip(&want_z).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "encoder differs from PyTorch by {worst}");
    let zt = Tensor::from_vec(want_z, (1, 41, 3), &Device::Cpu).unwrap();
    let y: Vec<f32> = model.decode_tensor(&zt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let worst = y.iter().zip(&values("decoded")).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "decoder differs from PyTorch by {worst}");
}
