//! Stage keys: what identifies a stage's result in the cache.
//!
//! A [`StageKey`] is blake3 over a canonical, type-tagged encoding of the stage's [`Ingredients`]:
//! kind, code version, fully resolved parameters (defaults included, sorted by name), the content hash
//! of every `Path` parameter, and the output hash of every input slot. Each value is written with a type
//! tag and a length prefix, so `"1"` and `1`, or `["a","b"]` and `["ab"]`, never collide. The stage's
//! name, the pipeline file's location and `Path` parameters' path strings are deliberately left out
//! (see `cache.rs` for the whole contract).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wspace_stage_api::{ParamType, Value};

use crate::digest::{hash_path, PathError};
use crate::pipeline::Stage;

/// A file a `Path` parameter names: the path as written (shown, not hashed) and its content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInput {
    pub path: String,
    pub hash: String,
}

/// An input slot: the upstream stage's name (shown, not hashed) and its output hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotInput {
    pub stage: String,
    pub hash: String,
}

/// Everything a stage's key is made of; stored with each run so `explain` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ingredients {
    pub kind: String,
    pub version: u32,
    /// Resolved parameters, without the `Path` ones (those are in `files`).
    pub params: BTreeMap<String, Value>,
    /// `param` or `param[i]` → file.
    pub files: BTreeMap<String, FileInput>,
    pub inputs: BTreeMap<String, SlotInput>,
}

/// The hex blake3 key of a stage result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageKey(pub String);

impl StageKey {
    /// The first 12 hex digits, as tables show it.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl std::fmt::Display for StageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ingredients {
    /// Collects a stage's ingredients; `inputs` gives each slot's upstream name and output hash.
    /// Hashes the content of `Path` parameters (relative to `workdir`).
    pub fn of(stage: &Stage, inputs: BTreeMap<String, SlotInput>, workdir: &Path) -> Result<Ingredients, PathError> {
        let mut params = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (name, value) in &stage.params {
            let ty = stage.spec(name).map(|s| s.ty);
            match (ty, value) {
                (Some(ParamType::Path), Value::Str(p)) => {
                    if !p.is_empty() {
                        files.insert(name.clone(), FileInput { path: p.clone(), hash: hash_path(&workdir.join(p))? });
                    }
                }
                (Some(ParamType::List(item)), Value::List(items)) if *item == ParamType::Path => {
                    for (i, p) in items.iter().enumerate() {
                        if let Value::Str(p) = p {
                            files.insert(
                                format!("{name}[{i}]"),
                                FileInput { path: p.clone(), hash: hash_path(&workdir.join(p))? },
                            );
                        }
                    }
                }
                _ => {
                    params.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(Ingredients { kind: stage.kind.name().to_string(), version: stage.kind.version(), params, files, inputs })
    }

    pub fn key(&self) -> StageKey {
        let mut e = Encoder(blake3::Hasher::new());
        e.raw(b"wspace-stage-key-v1\0");
        e.str(&self.kind);
        e.raw(&self.version.to_le_bytes());
        e.table(&self.params);
        e.len(self.files.len());
        for (name, f) in &self.files {
            e.str(name);
            e.str(&f.hash);
        }
        e.len(self.inputs.len());
        for (slot, input) in &self.inputs {
            e.str(slot);
            e.str(&input.hash);
        }
        StageKey(e.0.finalize().to_hex().to_string())
    }
}

/// The canonical encoding: a one-byte type tag, then a fixed-width or length-prefixed payload.
struct Encoder(blake3::Hasher);

impl Encoder {
    fn raw(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    fn len(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.update(s.as_bytes());
    }
    fn table(&mut self, t: &BTreeMap<String, Value>) {
        self.len(t.len());
        for (k, v) in t {
            self.str(k);
            self.value(v);
        }
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Bool(b) => self.raw(&[b'b', *b as u8]),
            Value::Int(i) => {
                self.raw(b"i");
                self.raw(&i.to_le_bytes());
            }
            Value::Float(f) => {
                self.raw(b"f");
                // One NaN; -0.0 and 0.0 stay distinct (a stage may tell them apart).
                let bits = if f.is_nan() { f64::NAN.to_bits() } else { f.to_bits() };
                self.raw(&bits.to_le_bytes());
            }
            Value::Str(s) => {
                self.raw(b"s");
                self.str(s);
            }
            Value::List(items) => {
                self.raw(b"l");
                self.len(items.len());
                for x in items {
                    self.value(x);
                }
            }
            Value::Table(t) => {
                self.raw(b"t");
                self.table(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingredients(params: &[(&str, Value)]) -> Ingredients {
        Ingredients {
            kind: "k".into(),
            version: 1,
            params: params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            files: BTreeMap::new(),
            inputs: BTreeMap::new(),
        }
    }

    #[test]
    fn values_are_type_tagged_and_length_prefixed() {
        let k = |v: Value| ingredients(&[("a", v)]).key();
        assert_ne!(k(Value::Int(1)), k(Value::Str("1".into())));
        assert_ne!(k(Value::Int(1)), k(Value::Float(1.0)));
        let ab = Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]);
        assert_ne!(k(ab), k(Value::List(vec![Value::Str("ab".into())])));
        assert_eq!(k(Value::Float(f64::NAN)), k(Value::Float(-f64::NAN)));
    }

    #[test]
    fn upstream_names_and_paths_are_not_hashed() {
        let mut a = ingredients(&[]);
        a.inputs.insert("x".into(), SlotInput { stage: "one".into(), hash: "h".into() });
        a.files.insert("path".into(), FileInput { path: "/abs/a.bin".into(), hash: "file:1".into() });
        let mut b = a.clone();
        b.inputs.get_mut("x").unwrap().stage = "two".into();
        b.files.get_mut("path").unwrap().path = "elsewhere/a.bin".into();
        assert_eq!(a.key(), b.key());
        b.inputs.get_mut("x").unwrap().hash = "h2".into();
        assert_ne!(a.key(), b.key());
        let mut c = a.clone();
        c.version = 2;
        assert_ne!(a.key(), c.key());
    }
}
