//! Why a stage reruns, as sentences: "`components` changed (16 → 32)", "input `zoo` changed",
//! "code version 2 → 3". Computed by comparing a stage's [`Ingredients`] with those of the last
//! recorded run of the same stage name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use wspace_stage_api::Value;

use crate::key::Ingredients;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Kind { old: String, new: String },
    Version { old: u32, new: u32 },
    Param { name: String, old: Option<String>, new: Option<String> },
    File { name: String, path: String },
    Input { slot: String, stage: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Kind { old, new } => write!(f, "kind changed ({old} → {new})"),
            Change::Version { old, new } => write!(f, "code version {old} → {new}"),
            Change::Param { name, old: Some(o), new: Some(n) } => write!(f, "`{name}` changed ({o} → {n})"),
            Change::Param { name, old: None, new: Some(n) } => write!(f, "`{name}` added ({n})"),
            Change::Param { name, old: Some(o), new: None } => write!(f, "`{name}` removed (was {o})"),
            Change::Param { name, .. } => write!(f, "`{name}` changed"),
            Change::File { name, path } => write!(f, "file `{name}` ({path}) changed"),
            Change::Input { slot, stage } => write!(f, "input `{slot}` changed (stage `{stage}`)"),
        }
    }
}

/// Every difference between the recorded ingredients and the current ones, in a stable order.
pub fn diff(old: &Ingredients, new: &Ingredients) -> Vec<Change> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Change::Kind { old: old.kind.clone(), new: new.kind.clone() });
    }
    if old.version != new.version {
        out.push(Change::Version { old: old.version, new: new.version });
    }
    diff_table("", &old.params, &new.params, &mut out);
    for (name, f) in changed(&old.files, &new.files, |f| &f.hash) {
        out.push(Change::File { name: name.clone(), path: f.path.clone() });
    }
    for (slot, i) in changed(&old.inputs, &new.inputs, |i| &i.hash) {
        out.push(Change::Input { slot: slot.clone(), stage: i.stage.clone() });
    }
    out
}

/// Parameter changes; tables (a `command` stage's `params`) are compared key by key: `params.n`.
fn diff_table(prefix: &str, old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>, out: &mut Vec<Change>) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let full = format!("{prefix}{name}");
        match (old.get(name), new.get(name)) {
            (Some(Value::Table(a)), Some(Value::Table(b))) => diff_table(&format!("{full}."), a, b, out),
            (o, n) if o != n => {
                out.push(Change::Param { name: full, old: o.map(|v| v.to_string()), new: n.map(|v| v.to_string()) })
            }
            _ => {}
        }
    }
}

/// The names whose hash differs between `old` and `new`, or that only one of them has, in order; each
/// with its entry in `new` (else in `old`).
fn changed<'a, T>(
    old: &'a BTreeMap<String, T>,
    new: &'a BTreeMap<String, T>,
    hash: fn(&T) -> &String,
) -> Vec<(&'a String, &'a T)> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (o, n) = (old.get(name), new.get(name));
            if o.map(hash) == n.map(hash) {
                return None;
            }
            Some((name, n.or(o)?))
        })
        .collect()
}

/// What changed between the recorded ingredients and the current ones, as one `; `-separated line;
/// `None` if nothing did.
pub fn since(old: &Ingredients, now: &Ingredients) -> Option<String> {
    let changes = diff(old, now);
    (!changes.is_empty()).then(|| changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; "))
}

/// Why a stage must run, given the last recorded run of its name (if any).
pub fn rerun_reason(last: Option<&Ingredients>, now: &Ingredients) -> String {
    match last {
        None => "no earlier run recorded".into(),
        Some(old) => since(old, now).unwrap_or_else(|| "not in the cache (removed, or never finished)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SlotInput;

    #[test]
    fn sentences_name_old_and_new_values() {
        let mut old = Ingredients {
            kind: "pca".into(),
            version: 2,
            params: [("components".to_string(), Value::Int(16))].into(),
            files: Default::default(),
            inputs: [("zoo".to_string(), SlotInput { stage: "zoo".into(), hash: "a".into() })].into(),
        };
        let mut new = old.clone();
        new.version = 3;
        new.params.insert("components".into(), Value::Int(32));
        new.params.insert("whiten".into(), Value::Bool(true));
        new.inputs.get_mut("zoo").unwrap().hash = "b".into();
        assert_eq!(
            rerun_reason(Some(&old), &new),
            "code version 2 → 3; `components` changed (16 → 32); `whiten` added (true); input `zoo` changed (stage `zoo`)"
        );
        old = new.clone();
        assert_eq!(rerun_reason(Some(&old), &new), "not in the cache (removed, or never finished)");
        assert_eq!(rerun_reason(None, &new), "no earlier run recorded");
        // A table parameter (a command stage's `params`) is compared key by key.
        old.params.insert("params".into(), Value::Table(Default::default()));
        let mut cmd = old.clone();
        cmd.params.insert("params".into(), Value::Table([("n".to_string(), Value::Int(2))].into()));
        assert_eq!(rerun_reason(Some(&old), &cmd), "`params.n` added (2)");
    }
}
