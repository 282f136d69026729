//! Parameter values against their declared types: what a file, a sweep or `--set` may give a
//! parameter.

use std::path::Path;

use wspace_stage_api::{ParamSpec, ParamType, Value};

/// The help line that lists a kind's parameters.
pub fn known_params(specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        "this kind takes no parameters".into()
    } else {
        format!("known parameters: {}", specs.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))
    }
}

/// Checks `v` against `ty`; integers become floats where a float is wanted.
pub fn conform(ty: &ParamType, v: Value) -> Result<Value, String> {
    let found = v.type_name();
    match (ty, v) {
        (ParamType::Any, v) => Ok(v),
        (ParamType::Bool, v @ Value::Bool(_)) => Ok(v),
        (ParamType::Int, v @ Value::Int(_)) => Ok(v),
        (ParamType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (ParamType::Float, v @ Value::Float(_)) => Ok(v),
        (ParamType::Str | ParamType::Path, v @ Value::Str(_)) => Ok(v),
        (ParamType::Choice(choices), Value::Str(s)) => {
            if choices.contains(&s.as_str()) {
                Ok(Value::Str(s))
            } else {
                Err(format!("expected {}, found \"{s}\"", ty.describe()))
            }
        }
        (ParamType::List(item), Value::List(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, x) in items.into_iter().enumerate() {
                out.push(conform(item, x).map_err(|e| format!("item {i}: {e}"))?);
            }
            Ok(Value::List(out))
        }
        (ParamType::Table, v @ Value::Table(_)) => Ok(v),
        _ => Err(format!("expected {}, found {found}", ty.describe())),
    }
}

/// A `Path` parameter (or list of them) must name an existing file or directory. An empty string means
/// "none".
pub fn missing_path(ty: &ParamType, v: &Value, workdir: &Path) -> Option<String> {
    match (ty, v) {
        (ParamType::Path, Value::Str(p)) if !p.is_empty() && !workdir.join(p).exists() => {
            Some(format!("no file or directory {}", workdir.join(p).display()))
        }
        (ParamType::List(item), Value::List(items)) => items.iter().find_map(|x| missing_path(item, x, workdir)),
        _ => None,
    }
}
