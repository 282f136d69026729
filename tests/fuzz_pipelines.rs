//! Mutated pipeline files through parse and check (every kind's `validate` included): errors are
//! fine, panics are not. A fuzz-style harness on stable Rust: the shipped pipelines and a few
//! snippets, each mutated 1–4 times per iteration by a seeded generator (byte splices, line swaps and
//! insertions of TOML tokens and values the checker must refuse), so every run is reproducible.
//!
//! `cargo test --test fuzz_pipelines` runs 3,000 iterations; the long run is
//! `WSPACE_FUZZ_ITERS=1000000 cargo test --release --test fuzz_pipelines -- --nocapture`
//! (`WSPACE_FUZZ_SEED` picks another sequence).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use wspace::diag::Source;
use wspace::pipeline::{check, raw};
use wspace::registry::Registry;

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Text the mutator inserts: structure, names, and values at and beyond every kind's limits.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "=",
    ",",
    ".",
    "\n",
    "#",
    " ",
    "[stages.x]\n",
    "[sweep]\n",
    "[executor]\n",
    "[executor.stages.zoo]\nshards = 3\n",
    "[pipeline]\nname = \"..\"\n",
    "kind = \"zoo\"\n",
    "kind = \"command\"\nrun = \"true\"\n",
    "inputs = { data = \"data\", tasks = \"tasks\" }\n",
    "inputs = { x = \"x\" }\n",
    "\"tasks.count\" = [0, 1, -1]\n",
    "\"pca.components\" = [0.5, 2, { default = 3 }]\n",
    "\"zoo.adam_lr\" = [[0.0, 1.0], [1e-3]]\n",
    "[stages.\"../y\"]\n",
    "count = -5\n",
    "val_tasks = 1.5\n",
    "epochs = 0\n",
    "path = \"nowhere\"\n",
    "format = \"idx\"\n",
    "inf",
    "-inf",
    "nan",
    "1e400",
    "-0.0",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "0x7f",
    "1_000",
    "true",
    "\"\"",
    "\"é\"",
    "\u{0}",
    "\u{feff}",
    "[[stages.a]]\n",
    "a.b.c = 1\n",
    "seed = 1\n",
    "components = { default = 0 }\n",
    "hidden = []\n",
    "batch_sizes = [0]\n",
    "final_epoch_range = [3, 1]\n",
    "checkpoints = []\n",
    "shards = 0\n",
    "1979-05-27T07:32:00Z",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut b: Vec<u8> = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(6) {
            0 => {
                let end = (at + rng.below(40)).min(b.len());
                b.drain(at..end);
            }
            1 | 2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            3 => {
                let (from, len) = (rng.below(b.len()), rng.below(60));
                let chunk: Vec<u8> = b[from..(from + len).min(b.len())].to_vec();
                b.splice(at..at, chunk);
            }
            4 => {
                let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(|l| l.to_vec()).collect();
                let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(i, j);
                b = lines.join(&b'\n');
            }
            _ => {
                if let Some(x) = b.get_mut(at) {
                    *x = b"0123456789-.e\"[]{}=\n"[rng.below(20)];
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<String> = ["pipelines", "benches"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap().filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    out.push("[stages.a]\nkind = \"command\"\nrun = \"true\"\nparams = { n = 1 }\n\n[sweep]\n\"a.n\" = [1, 2]\n".into());
    out.push("[stages.d]\nkind = \"dataset\"\nformat = \"idx\"\npath = \"data\"\n".into());
    out
}

#[test]
fn mutated_pipelines_never_panic() {
    let iterations: u64 = std::env::var("WSPACE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let seed: u64 = std::env::var("WSPACE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED);
    let registry = Registry::with_builtins(wspace_stages::kinds());
    let workdir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(workdir.path().join("data")).unwrap();
    let seeds = seeds();
    let (mut accepted, mut panics) = (0u64, Vec::new());
    let started = std::time::Instant::now();
    for i in 0..iterations {
        let mut rng = Rng(seed ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let text = mutate(&seeds[rng.below(seeds.len())], &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let source = Source { name: "fuzz.toml".into(), text: text.as_str().into() };
            let checked = raw::parse(source).and_then(|raw| check::check(raw, &registry, workdir.path(), "fuzz"));
            match checked {
                Ok(p) => {
                    let _ = p.variants().len();
                    true
                }
                Err(d) => {
                    let _ = d.to_string();
                    false
                }
            }
        }));
        match outcome {
            Ok(ok) => accepted += ok as u64,
            Err(_) => panics.push((i, text)),
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "… {} files, {accepted} accepted, {} panics, {:.0} s",
                i + 1,
                panics.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "{iterations} mutated pipeline files (seed {seed:#x}): {accepted} accepted, {} refused, {} panics, {:.1} s",
        iterations - accepted - panics.len() as u64,
        panics.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(panics.is_empty(), "{} panics; the first, iteration {}:\n{}", panics.len(), panics[0].0, panics[0].1);
}
