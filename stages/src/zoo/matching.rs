//! Weight matching (Git Re-Basin, Ainsworth et al. 2023) on any architecture described in
//! [`crate::import::arch`]: its permutation symmetries as the alignment sees them ([`Net`]), a group
//! element ([`Alignment`]) and how it acts on flat weights, and the alignment of one model to a
//! reference ([`align`]). The maths and the order of the steps: the [`super::canonical`] module doc.

use crate::import::arch::{members, tensors_of, ImportArch, Nlin};

/// One hidden layer as the alignment sees it: its own tensor (rows = units), its bias, and the next
/// tensor, whose columns come in one block of `block` values per unit of this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    pub units: usize,
    /// Offset of the weight tensor (`units × row`).
    pub w: usize,
    /// Incoming values per unit.
    pub row: usize,
    /// Offset of the bias (`units`).
    pub b: usize,
    /// Offset of the next layer's weight tensor (`next_rows × units·block`).
    pub next: usize,
    pub next_rows: usize,
    /// Columns of the next tensor owned by one unit (conv kernels: k·k; cnn-s conv3 → fc1: the 3×3
    /// map; a global average pool: 1).
    pub block: usize,
    /// Whether a sign flip of a unit is an exact symmetry (tanh straight after the layer).
    pub signs: bool,
}

/// A network's symmetries: its hidden layers, input to output, then the output layer, whose units
/// (the classes) stay in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub hidden: Vec<Layer>,
    /// The output layer's weight: offset, rows, values per row (its bias is left alone).
    pub head: (usize, usize, usize),
    /// Values in all (flat, `state_dict` order).
    pub len: usize,
}

impl Net {
    /// The symmetries of `arch` ([`ImportArch::layers`], [`ImportArch::symmetries`]).
    pub fn of(arch: &ImportArch) -> Net {
        let layers = arch.layers();
        let mut offsets = Vec::with_capacity(layers.len());
        let mut at = 0;
        for l in &layers {
            let size: usize = l.weight_shape.iter().product();
            offsets.push((at, at + size));
            at += size + l.weight_shape[0];
        }
        let fan_in = |i: usize| -> usize { layers[i].weight_shape[1..].iter().product() };
        let flips = arch.symmetries().sign_flips;
        let last = layers.len() - 1;
        let hidden = (0..last)
            .map(|i| {
                let units = layers[i].weight_shape[0];
                Layer {
                    name: layers[i].name,
                    units,
                    w: offsets[i].0,
                    row: fan_in(i),
                    b: offsets[i].1,
                    next: offsets[i + 1].0,
                    next_rows: layers[i + 1].weight_shape[0],
                    block: fan_in(i + 1) / units,
                    signs: flips.contains(&layers[i].name),
                }
            })
            .collect();
        Net { hidden, head: (offsets[last].0, layers[last].weight_shape[0], fan_in(last)), len: at }
    }

    /// The project's `cnn-s`.
    pub fn cnn_s() -> Net {
        Net::of(&ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh })
    }

    /// The symmetries of the zoo architecture `arch`: an [`ImportArch`] name, or `mixed:<names>` whose
    /// members have the same tensors (sign flips then only where every member has them).
    pub fn from_arch(arch: &str) -> Option<Net> {
        tensors_of(arch).ok()?;
        let mut nets = members(arch).into_iter().filter_map(ImportArch::from_name).map(|a| Net::of(&a));
        let mut net = nets.next()?;
        for other in nets {
            for (l, o) in net.hidden.iter_mut().zip(&other.hidden) {
                l.signs &= o.signs;
            }
        }
        Some(net)
    }

    /// Hidden units in all.
    pub fn hidden_units(&self) -> usize {
        self.hidden.iter().map(|l| l.units).sum()
    }

    /// Tensor `t`'s weight: offset, rows, values per row (the hidden layers, then the head).
    fn tensor(&self, t: usize) -> (usize, usize, usize) {
        match self.hidden.get(t) {
            Some(l) => (l.w, l.units, l.row),
            None => self.head,
        }
    }
}

/// A group element: per hidden layer, aligned unit `i` = model unit `perm[l][i]`, negated if `flip[l][i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alignment {
    pub perm: Vec<Vec<usize>>,
    pub flip: Vec<Vec<bool>>,
}

fn signed(v: f32, neg: bool) -> f32 {
    if neg {
        -v
    } else {
        v
    }
}

impl Alignment {
    pub fn identity(net: &Net) -> Self {
        Alignment {
            perm: net.hidden.iter().map(|l| (0..l.units).collect()).collect(),
            flip: net.hidden.iter().map(|l| vec![false; l.units]).collect(),
        }
    }

    /// The aligned weights: `p` (flat, `state_dict` order) transformed. Only copies and negations, so
    /// the result is exact.
    pub fn apply(&self, net: &Net, p: &[f32]) -> Vec<f32> {
        self.apply_except(net, p, None)
    }

    /// [`Alignment::apply`] with layer `skip` left as it is in `p`.
    fn apply_except(&self, net: &Net, p: &[f32], skip: Option<usize>) -> Vec<f32> {
        assert_eq!(p.len(), net.len);
        let mut q = p.to_vec();
        let map = |l: usize, i: usize| -> (usize, bool) {
            if skip == Some(l) {
                (i, false)
            } else {
                (self.perm[l][i], self.flip[l][i])
            }
        };
        // Every weight tensor (rows: hidden layer t; the head's rows fixed); columns in blocks of the
        // previous layer's units (the first layer's: the image, fixed).
        let hidden = net.hidden.len();
        for t in 0..=hidden {
            let (w, rows, row_len) = net.tensor(t);
            let (blocks, blk) = if t > 0 { (net.hidden[t - 1].units, net.hidden[t - 1].block) } else { (1, row_len) };
            for i in 0..rows {
                let (si, fi) = if t < hidden { map(t, i) } else { (i, false) };
                for c in 0..blocks {
                    let (sc, fc) = if t > 0 { map(t - 1, c) } else { (c, false) };
                    let (from, to) = (w + si * row_len + sc * blk, w + i * row_len + c * blk);
                    for k in 0..blk {
                        q[to + k] = signed(p[from + k], fi ^ fc);
                    }
                }
                if t < hidden {
                    let b = net.hidden[t].b;
                    q[b + i] = signed(p[b + si], fi);
                }
            }
        }
        q
    }

    /// Number of hidden units not at their own index, per layer.
    pub fn moved(&self) -> Vec<usize> {
        self.perm.iter().map(|p| p.iter().enumerate().filter(|(i, x)| i != *x).count()).collect()
    }

    /// Number of negated units (all layers).
    pub fn flipped(&self) -> usize {
        self.flip.iter().map(|f| f.iter().filter(|x| **x).count()).sum()
    }
}

/// Unit `j`'s vector of layer `l` in flat weights `q`: incoming row, bias, then (if `outgoing`) its
/// block of every row of the next tensor.
fn unit_vector(net: &Net, q: &[f32], l: usize, j: usize, outgoing: bool, out: &mut Vec<f32>) {
    let layer = net.hidden[l];
    out.clear();
    out.extend_from_slice(&q[layer.w + j * layer.row..layer.w + (j + 1) * layer.row]);
    out.push(q[layer.b + j]);
    if outgoing {
        let next_row = layer.units * layer.block;
        for r in 0..layer.next_rows {
            let s = layer.next + r * next_row + j * layer.block;
            out.extend_from_slice(&q[s..s + layer.block]);
        }
    }
}

/// Maximum-weight perfect matching of the `n × n` matrix `c` (row-major): `assign[i]` is the column of
/// row `i`, maximising `Σ_i c[i][assign[i]]`. Exact (Hungarian method in its shortest-augmenting-path
/// form with row and column potentials, `O(n³)`). Non-finite entries count as 0. Ties go to the
/// lowest column index met first, deterministically.
pub fn max_assignment(c: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(c.len(), n * n);
    // Minimise cost = −c. Indices are 1-based below; column 0 is a virtual start column.
    let cost = |i: usize, j: usize| {
        let v = c[(i - 1) * n + (j - 1)];
        if v.is_finite() {
            -v
        } else {
            0.0
        }
    };
    let mut row_pot = vec![0.0f64; n + 1];
    let mut col_pot = vec![0.0f64; n + 1];
    // owner[j]: the row matched to column j (0 = free); prev[j]: the column before j on the path.
    let mut owner = vec![0usize; n + 1];
    let mut prev = vec![0usize; n + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col = 0usize;
        let mut dist = vec![f64::INFINITY; n + 1];
        let mut done = vec![false; n + 1];
        // Grow a shortest-path tree from the new row until it reaches a free column.
        loop {
            done[col] = true;
            let r = owner[col];
            let mut step = f64::INFINITY;
            let mut next = 0usize;
            for j in 1..=n {
                if done[j] {
                    continue;
                }
                let reduced = cost(r, j) - row_pot[r] - col_pot[j];
                if reduced < dist[j] {
                    dist[j] = reduced;
                    prev[j] = col;
                }
                if dist[j] < step {
                    step = dist[j];
                    next = j;
                }
            }
            if next == 0 {
                break; // unreachable for finite costs: some column is always left
            }
            for j in 0..=n {
                if done[j] {
                    row_pot[owner[j]] += step;
                    col_pot[j] -= step;
                } else {
                    dist[j] -= step;
                }
            }
            col = next;
            if owner[col] == 0 {
                break;
            }
        }
        // Flip the matching along the path back to the virtual column.
        while col != 0 {
            let p = prev[col];
            owner[col] = owner[p];
            col = p;
        }
    }
    let mut assign = vec![0usize; n];
    for j in 1..=n {
        if owner[j] != 0 {
            assign[owner[j] - 1] = j - 1;
        }
    }
    assign
}

/// How one model is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignOptions {
    /// Fix the tanh sign symmetry where it is exact ([`Layer::signs`]).
    pub signs: bool,
    /// Cap on coordinate-descent sweeps after the forward pass.
    pub max_sweeps: usize,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions { signs: true, max_sweeps: 20 }
    }
}

/// The result of aligning one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    pub alignment: Alignment,
    pub sweeps: usize,
    /// False when `max_sweeps` ran out before a sweep changed nothing.
    pub converged: bool,
}

/// The best `(perm, flip, value)` for layer `l` given the other layers of `current`.
fn solve_layer(
    net: &Net,
    (model, reference): (&[f32], &[f32]),
    current: &Alignment,
    l: usize,
    outgoing: bool,
    signs: bool,
) -> (Vec<usize>, Vec<bool>, f64) {
    let n = net.hidden[l].units;
    let q = current.apply_except(net, model, Some(l));
    let (mut rv, mut mv) = (Vec::new(), Vec::new());
    let mut sim = vec![0.0f64; n * n];
    let model_vectors: Vec<Vec<f32>> = (0..n)
        .map(|j| {
            unit_vector(net, &q, l, j, outgoing, &mut mv);
            mv.clone()
        })
        .collect();
    for i in 0..n {
        unit_vector(net, reference, l, i, outgoing, &mut rv);
        for (j, m) in model_vectors.iter().enumerate() {
            sim[i * n + j] = rv.iter().zip(m).map(|(a, b)| *a as f64 * *b as f64).sum();
        }
    }
    let free_signs = signs && net.hidden[l].signs;
    let score: Vec<f64> = if free_signs { sim.iter().map(|s| s.abs()).collect() } else { sim.clone() };
    let perm = max_assignment(&score, n);
    let flip: Vec<bool> = (0..n).map(|i| free_signs && sim[i * n + perm[i]] < 0.0).collect();
    let best = value(&score, n, &perm);
    (perm, flip, best)
}

/// `Σ_i score[i][perm[i]]`, summed in row order.
fn value(score: &[f64], n: usize, perm: &[usize]) -> f64 {
    (0..n).map(|i| score[i * n + perm[i]]).sum()
}

/// The alignment of `model` to `reference` (both flat, `state_dict` order, `net.len` values): forward
/// pass, then coordinate-descent sweeps (see the [`super::canonical`] module doc).
pub fn align(net: &Net, model: &[f32], reference: &[f32], opts: AlignOptions) -> Aligned {
    assert_eq!(model.len(), net.len);
    assert_eq!(reference.len(), net.len);
    let hidden = net.hidden.len();
    let mut a = Alignment::identity(net);
    for l in 0..hidden {
        let (perm, flip, _) = solve_layer(net, (model, reference), &a, l, l + 1 == hidden, opts.signs);
        a.perm[l] = perm;
        a.flip[l] = flip;
    }
    let mut sweeps = 0;
    let mut converged = false;
    while sweeps < opts.max_sweeps {
        sweeps += 1;
        let mut changed = false;
        for l in 0..hidden {
            let (perm, flip, best) = solve_layer(net, (model, reference), &a, l, true, opts.signs);
            if perm == a.perm[l] && flip == a.flip[l] {
                continue;
            }
            // The current assignment's value, on the same scores: replace only on a strict gain.
            let now = current_value(net, (model, reference), &a, l, opts.signs);
            if best > now {
                a.perm[l] = perm;
                a.flip[l] = flip;
                changed = true;
            }
        }
        if !changed {
            converged = true;
            break;
        }
    }
    Aligned { alignment: a, sweeps, converged }
}

/// The value of layer `l`'s current assignment with its current signs, summed as [`solve_layer`] sums
/// (a stale sign, after a neighbouring layer changed, counts against it).
fn current_value(net: &Net, (model, reference): (&[f32], &[f32]), a: &Alignment, l: usize, signs: bool) -> f64 {
    let n = net.hidden[l].units;
    let q = a.apply_except(net, model, Some(l));
    let (mut rv, mut mv) = (Vec::new(), Vec::new());
    let free_signs = signs && net.hidden[l].signs;
    let mut total = 0.0f64;
    for i in 0..n {
        unit_vector(net, reference, l, i, true, &mut rv);
        unit_vector(net, &q, l, a.perm[l][i], true, &mut mv);
        let s: f64 = rv.iter().zip(&mv).map(|(a, b)| *a as f64 * *b as f64).sum();
        total += if free_signs && a.flip[l][i] { -s } else { s };
    }
    total
}

/// `model` canonicalised against `reference`: [`align`] then [`Alignment::apply`].
pub fn canonicalise(net: &Net, model: &[f32], reference: &[f32], opts: AlignOptions) -> Vec<f32> {
    align(net, model, reference, opts).alignment.apply(net, model)
}
