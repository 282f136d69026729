//! What a stage's output says of itself in its `metrics.json`: scalar metrics (the sweep table's
//! columns), and the document it names with its headline numbers (listed after `wspace run`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The output's `metrics.json`, if it is there and is JSON.
pub fn read(out: &Path) -> Option<Value> {
    let bytes = std::fs::read(out.join("metrics.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The scalar values of `metrics.json`, nested objects flattened with `.`.
pub fn scalars(out: &Path) -> BTreeMap<String, String> {
    fn flatten(prefix: &str, v: &Value, into: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&name, v, into);
                }
            }
            Value::Number(n) => {
                into.insert(prefix.to_string(), n.to_string());
            }
            Value::Bool(b) => {
                into.insert(prefix.to_string(), b.to_string());
            }
            Value::String(s) => {
                into.insert(prefix.to_string(), s.clone());
            }
            _ => {}
        }
    }
    let mut out_map = BTreeMap::new();
    if let Some(v) = read(out).filter(Value::is_object) {
        flatten("", &v, &mut out_map);
    }
    out_map
}

/// A stage's document and headline, from its output's `metrics.json`: `"document"` is a relative path
/// inside the output (a file that exists; anything else is ignored), `"headline"` an object of a few
/// named values. Any stage kind may write them (the `report` kind does); the runner names the document
/// and prints the headline at the end of `wspace run`.
pub fn document(out: &Path) -> Option<(PathBuf, Option<Map<String, Value>>)> {
    let v = read(out)?;
    let rel = Path::new(v.get("document")?.as_str()?);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return None;
    }
    let path = out.join(rel);
    if !path.is_file() {
        return None;
    }
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    Some((path, v.get("headline").and_then(|h| h.as_object()).cloned()))
}
