//! The `cnn-s` network on one block of [`L`] images: forward, loss, backward, all in a preallocated
//! [`Workspace`], compiled once per instruction set and picked at run time.
//!
//! Shapes per image (lane-innermost, see [`super::kernels`]):
//!
//! | step                         | tensor  | shape       |
//! |------------------------------|---------|-------------|
//! | input (pixels / 255)         | `x`     | [1, 28, 28] |
//! | conv1 (1→8, k5)              | `c1`    | [8, 24, 24] |
//! | max-pool 2, tanh             | `a1`    | [8, 12, 12] |
//! | conv2 (8→6, k5)              | `c2`    | [6, 8, 8]   |
//! | max-pool 2, tanh             | `a2`    | [6, 4, 4]   |
//! | conv3 (6→4, k2), tanh        | `a3`    | [4, 3, 3] = 36 (C, H, W flatten order) |
//! | fc1 (36→20), tanh            | `h`     | [20]        |
//! | fc2 (20→C)                   | `z`     | [C] logits  |
//!
//! `C` is the head size: 3 for a zoo model, 10 for one model on every class (see
//! [`super::SUPPORTED_CLASSES`]); each is compiled separately and picked from the parameter count.
//!
//! The backward pass reuses `c1` and `c2` for the gradients at the conv outputs (the forward values are
//! dead by then: max-pool backward needs only the argmax).

use super::cnn_s::*;
use super::kernels::*;
#[cfg(target_arch = "x86_64")]
use super::kernels::{Avx2, Avx512};

/// The widest head the workspace holds logits for.
const MAX_CLASSES: usize = 10;

/// Preallocated per-block buffers (≈ 0.5 MB); one per trainer / worker thread.
#[derive(Clone)]
pub struct Workspace {
    pub(crate) x: Vec<f32>,
    pub(crate) c1: Vec<f32>,
    pub(crate) a1: Vec<f32>,
    pub(crate) i1: Vec<u8>,
    pub(crate) c2: Vec<f32>,
    pub(crate) a2: Vec<f32>,
    pub(crate) i2: Vec<u8>,
    pub(crate) a3: Vec<f32>,
    pub(crate) h: Vec<f32>,
    pub(crate) z: Vec<f32>,
    pub(crate) dz: Vec<f32>,
    pub(crate) dh: Vec<f32>,
    pub(crate) da3: Vec<f32>,
    pub(crate) da2: Vec<f32>,
    pub(crate) da1: Vec<f32>,
    pub(crate) labels: [u8; L],
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    /// Allocate all buffers (zeroed).
    pub fn new() -> Self {
        let f = |n: usize| vec![0.0f32; n * L];
        Workspace {
            x: f(IMAGE_PIXELS),
            c1: f(8 * 24 * 24),
            a1: f(8 * 12 * 12),
            i1: vec![0; 8 * 12 * 12 * L],
            c2: f(6 * 8 * 8),
            a2: f(6 * 4 * 4),
            i2: vec![0; 6 * 4 * 4 * L],
            a3: f(36),
            h: f(20),
            z: f(MAX_CLASSES),
            dz: f(MAX_CLASSES),
            dh: f(20),
            da3: f(36),
            da2: f(6 * 4 * 4),
            da1: f(8 * 12 * 12),
            labels: [0; L],
        }
    }

    /// Load up to [`L`] images `u8` (pixels/255) chosen by `index` from `images` (`N × 784`);
    /// unused lanes are zero.
    pub(crate) fn load_u8(&mut self, images: &[u8], index: &[u32]) {
        assert!(index.len() <= L);
        for (l, &i) in index.iter().enumerate() {
            let img = &images[i as usize * IMAGE_PIXELS..(i as usize + 1) * IMAGE_PIXELS];
            for (p, &px) in img.iter().enumerate() {
                self.x[p * L + l] = px as f32 / 255.0;
            }
        }
        for l in index.len()..L {
            for p in 0..IMAGE_PIXELS {
                self.x[p * L + l] = 0.0;
            }
        }
    }

    /// Load up to [`L`] images already as f32 (`n × 784`, contiguous).
    pub(crate) fn load_f32(&mut self, images: &[f32]) {
        let n = images.len() / IMAGE_PIXELS;
        assert!(n <= L && images.len() == n * IMAGE_PIXELS);
        for l in 0..L {
            for p in 0..IMAGE_PIXELS {
                self.x[p * L + l] = if l < n { images[l * IMAGE_PIXELS + p] } else { 0.0 };
            }
        }
    }

    /// Logits of lane `l` after a forward pass of a 3-class network.
    pub(crate) fn logits(&self, l: usize) -> [f32; 3] {
        [self.z[l], self.z[L + l], self.z[2 * L + l]]
    }

    /// Logits of lane `l` after a forward pass of a `classes`-way network.
    pub(crate) fn logits_n(&self, l: usize, classes: usize) -> Vec<f32> {
        (0..classes).map(|k| self.z[k * L + l]).collect()
    }
}

/// Forward pass of the loaded block up to the logits `z`.
#[inline(always)]
fn forward<S: Lanes, const C: usize>(p: &[f32], ws: &mut Workspace) {
    assert_eq!(p.len(), num_params(C));
    conv_forward::<S, 8>(&ws.x, 1, 28, 28, 5, &p[W1..B1], &p[B1..W2], &mut ws.c1);
    maxpool2_forward(&ws.c1, 8, 24, 24, &mut ws.a1, &mut ws.i1);
    tanh_forward(&mut ws.a1);
    conv_forward::<S, 6>(&ws.a1, 8, 12, 12, 5, &p[W2..B2], &p[B2..W3], &mut ws.c2);
    maxpool2_forward(&ws.c2, 6, 8, 8, &mut ws.a2, &mut ws.i2);
    tanh_forward(&mut ws.a2);
    conv_forward::<S, 4>(&ws.a2, 6, 4, 4, 2, &p[W3..B3], &p[B3..F1W], &mut ws.a3);
    tanh_forward(&mut ws.a3);
    linear_forward::<S, 20>(&ws.a3, 36, &p[F1W..F1B], &p[F1B..F2W], &mut ws.h);
    tanh_forward(&mut ws.h);
    let f2b = F2W + 20 * C;
    linear_forward::<S, C>(&ws.h, 20, &p[F2W..f2b], &p[f2b..], &mut ws.z);
}

/// Backward pass from `dz` (set by the loss), accumulating parameter gradients into `g`.
#[inline(always)]
fn backward<S: Lanes, const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    assert_eq!(p.len(), num_params(C));
    assert_eq!(g.len(), num_params(C));
    let f2b = F2W + 20 * C;
    let (g_w1, rest) = g.split_at_mut(B1);
    let (g_b1, rest) = rest.split_at_mut(W2 - B1);
    let (g_w2, rest) = rest.split_at_mut(B2 - W2);
    let (g_b2, rest) = rest.split_at_mut(W3 - B2);
    let (g_w3, rest) = rest.split_at_mut(B3 - W3);
    let (g_b3, rest) = rest.split_at_mut(F1W - B3);
    let (g_f1w, rest) = rest.split_at_mut(F1B - F1W);
    let (g_f1b, rest) = rest.split_at_mut(F2W - F1B);
    let (g_f2w, g_f2b) = rest.split_at_mut(f2b - F2W);

    linear_backward_weight::<S, C>(&ws.h, 20, &ws.dz, C, g_f2w, g_f2b);
    linear_backward_input::<S, 20>(&ws.dz, C, &p[F2W..f2b], &mut ws.dh);
    tanh_backward(&mut ws.dh, &ws.h);
    linear_backward_weight::<S, 4>(&ws.a3, 36, &ws.dh, 20, g_f1w, g_f1b);
    linear_backward_input::<S, 36>(&ws.dh, 20, &p[F1W..F1B], &mut ws.da3);
    tanh_backward(&mut ws.da3, &ws.a3);
    conv_backward_weight::<S, 4, 2>(&ws.a2, 6, 4, 4, &ws.da3, 4, g_w3, g_b3);
    conv_backward_input::<S, 6>(&ws.da3, 4, 3, 3, 2, &p[W3..B3], &mut ws.da2);
    tanh_backward(&mut ws.da2, &ws.a2);
    maxpool2_backward(&ws.da2, &ws.i2, 6, 8, 8, &mut ws.c2);
    conv_backward_weight::<S, 3, 5>(&ws.a1, 8, 12, 12, &ws.c2, 6, g_w2, g_b2);
    conv_backward_input::<S, 8>(&ws.c2, 6, 8, 8, 5, &p[W2..B2], &mut ws.da1);
    tanh_backward(&mut ws.da1, &ws.a1);
    maxpool2_backward(&ws.da1, &ws.i1, 8, 24, 24, &mut ws.c1);
    conv_backward_weight::<S, 4, 5>(&ws.x, 1, 28, 28, &ws.c1, 8, g_w1, g_b1);
}

#[inline(always)]
fn train_block_inline<S: Lanes, const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace, n: usize, s: f32) -> (f64, u32) {
    forward::<S, C>(p, ws);
    let labels = ws.labels;
    let (loss, correct) = softmax_xent::<C>(&ws.z, &labels, n, s, &mut ws.dz);
    backward::<S, C>(p, g, ws);
    (loss, correct)
}

#[inline(always)]
fn eval_block_inline<S: Lanes, const C: usize>(p: &[f32], ws: &mut Workspace, n_valid: usize) -> (f64, u32) {
    forward::<S, C>(p, ws);
    let labels = ws.labels;
    xent_lanes::<C>(&ws.z, &labels, n_valid)
}

/// Which compiled variant of the block kernels runs. All give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Baseline for the target (SSE2 on x86-64).
    Portable,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
}

impl Isa {
    /// The widest variant this CPU supports; `WSPACE_NN_ISA=portable|avx2|avx512` lowers it.
    pub fn detect() -> Isa {
        let best = Self::best_supported();
        match std::env::var("WSPACE_NN_ISA").ok().as_deref() {
            Some("portable") => Isa::Portable,
            Some("avx2") if best != Isa::Portable => Isa::Avx2,
            _ => best,
        }
    }

    fn best_supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Whether this CPU can run the variant.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => matches!(Self::best_supported(), Isa::Avx2 | Isa::Avx512),
            Isa::Avx512 => Self::best_supported() == Isa::Avx512,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn train_block_avx512<const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace, n: usize, s: f32) -> (f64, u32) {
    train_block_inline::<Avx512, C>(p, g, ws, n, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn train_block_avx2<const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace, n: usize, s: f32) -> (f64, u32) {
    train_block_inline::<Avx2, C>(p, g, ws, n, s)
}

fn train_block_portable<const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace, n: usize, s: f32) -> (f64, u32) {
    train_block_inline::<Portable, C>(p, g, ws, n, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn eval_block_avx512<const C: usize>(p: &[f32], ws: &mut Workspace, n: usize) -> (f64, u32) {
    eval_block_inline::<Avx512, C>(p, ws, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn eval_block_avx2<const C: usize>(p: &[f32], ws: &mut Workspace, n: usize) -> (f64, u32) {
    eval_block_inline::<Avx2, C>(p, ws, n)
}

fn eval_block_portable<const C: usize>(p: &[f32], ws: &mut Workspace, n: usize) -> (f64, u32) {
    eval_block_inline::<Portable, C>(p, ws, n)
}

/// The head size of a flat parameter vector (the kernels' one invariant on `p`).
fn head(p: &[f32]) -> usize {
    classes_of_len(p.len()).unwrap_or_else(|| panic!("cnn-s: {} parameters is no supported head", p.len()))
}

/// Forward + loss + backward on the loaded block (labels in `ws.labels`, first `n_valid` lanes real),
/// `dz` scaled by `scale` (1/batch size); accumulates gradients into `g`. Returns (loss sum, correct).
pub(crate) fn train_block(isa: Isa, p: &[f32], g: &mut [f32], ws: &mut Workspace, n_valid: usize, scale: f32) -> (f64, u32) {
    match head(p) {
        10 => train_block_c::<10>(isa, p, g, ws, n_valid, scale),
        _ => train_block_c::<NUM_CLASSES>(isa, p, g, ws, n_valid, scale),
    }
}

fn train_block_c<const C: usize>(isa: Isa, p: &[f32], g: &mut [f32], ws: &mut Workspace, n: usize, s: f32) -> (f64, u32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the guard checks that the CPU has the target feature.
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => unsafe { train_block_avx512::<C>(p, g, ws, n, s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe { train_block_avx2::<C>(p, g, ws, n, s) },
        _ => train_block_portable::<C>(p, g, ws, n, s),
    }
}

/// Forward + loss on the loaded block. Returns (loss sum, correct); logits stay in `ws`.
pub(crate) fn eval_block(isa: Isa, p: &[f32], ws: &mut Workspace, n_valid: usize) -> (f64, u32) {
    match head(p) {
        10 => eval_block_c::<10>(isa, p, ws, n_valid),
        _ => eval_block_c::<NUM_CLASSES>(isa, p, ws, n_valid),
    }
}

fn eval_block_c<const C: usize>(isa: Isa, p: &[f32], ws: &mut Workspace, n_valid: usize) -> (f64, u32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the guard checks that the CPU has the target feature.
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => unsafe { eval_block_avx512::<C>(p, ws, n_valid) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe { eval_block_avx2::<C>(p, ws, n_valid) },
        _ => eval_block_portable::<C>(p, ws, n_valid),
    }
}

#[inline(always)]
fn backward_from_dz_inline<S: Lanes, const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    backward::<S, C>(p, g, ws);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn backward_from_dz_avx512<const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    backward_from_dz_inline::<Avx512, C>(p, g, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn backward_from_dz_avx2<const C: usize>(p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    backward_from_dz_inline::<Avx2, C>(p, g, ws)
}

/// Backward pass of the block last run forward ([`eval_block`]), from an upstream gradient the caller
/// wrote into `ws.dz` (`∂ℓ/∂z[k]` of lane `l` at `k·L + l`; zero in padding lanes); accumulates the
/// parameter gradients into `g`. For losses other than cross-entropy (e.g. distillation).
pub(crate) fn backward_from_dz(isa: Isa, p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    match head(p) {
        10 => backward_from_dz_c::<10>(isa, p, g, ws),
        _ => backward_from_dz_c::<NUM_CLASSES>(isa, p, g, ws),
    }
}

fn backward_from_dz_c<const C: usize>(isa: Isa, p: &[f32], g: &mut [f32], ws: &mut Workspace) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the guard checks that the CPU has the target feature.
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => unsafe { backward_from_dz_avx512::<C>(p, g, ws) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe { backward_from_dz_avx2::<C>(p, g, ws) },
        _ => backward_from_dz_inline::<Portable, C>(p, g, ws),
    }
}
