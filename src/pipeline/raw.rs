//! The raw layer: the text of a pipeline file → [`RawPipeline`], every item with its byte span.
//! No I/O and no knowledge of stage kinds; [`super::check`] resolves what this layer keeps.

use std::ops::Range;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;
use wspace_stage_api::Value;

use crate::diag::{Diagnostic, Diagnostics, Source};

/// A value with the byte range it came from.
#[derive(Debug, Clone)]
pub struct Sp<T> {
    pub value: T,
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct RawStage {
    pub name: Sp<String>,
    pub kind: Option<Sp<String>>,
    /// `(slot, upstream stage name)` in file order.
    pub inputs: Vec<(Sp<String>, Sp<String>)>,
    /// Every other key of the stage table, in file order.
    pub params: Vec<(Sp<String>, Sp<Value>)>,
}

#[derive(Debug, Clone)]
pub struct RawPipeline {
    pub source: Source,
    pub name: Option<Sp<String>>,
    pub seed: Option<Sp<i64>>,
    pub description: Option<String>,
    pub stages: Vec<RawStage>,
    /// `"stage.param" = [values...]`, in file order.
    pub sweep: Vec<(Sp<String>, Vec<Sp<Value>>)>,
    pub executor: RawExecutor,
}

/// `key = value` pairs in file order.
pub type Settings = Vec<(Sp<String>, Sp<Value>)>;

/// `[executor]`: its own settings and `[executor.stages.NAME]` tables.
#[derive(Debug, Clone, Default)]
pub struct RawExecutor {
    pub settings: Settings,
    pub stages: Vec<(Sp<String>, Settings)>,
}

fn sp<T>(value: T, span: Range<usize>) -> Sp<T> {
    Sp { value, span }
}

/// Converts a TOML value to a parameter value; `Err` carries the span of the part that cannot be one.
pub fn to_value(v: &DeValue<'_>, span: Range<usize>) -> Result<Value, (String, Range<usize>)> {
    Ok(match v {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let n = i64::from_str_radix(&digits, i.radix()).map_err(|_| ("integer out of range".to_string(), span.clone()))?;
            Value::Int(n)
        }
        DeValue::Float(x) => {
            let t = x.as_str().replace('_', "");
            if matches!(t.trim_start_matches(['+', '-']), "inf" | "nan") {
                // Parameters are stored in JSON manifests and hashed into keys: only finite numbers.
                return Err((format!("`{t}` is not allowed: parameter values must be finite numbers"), span));
            }
            let f = t.parse::<f64>().map_err(|_| ("malformed float".to_string(), span.clone()))?;
            if !f.is_finite() {
                return Err((format!("`{t}` is out of range for a 64-bit float"), span));
            }
            Value::Float(f)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(_) => return Err(("dates and times are not supported as parameter values".into(), span)),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                out.push(to_value(item.get_ref(), item.span())?);
            }
            Value::List(out)
        }
        DeValue::Table(t) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, item) in t.iter() {
                out.insert(k.get_ref().to_string(), to_value(item.get_ref(), item.span())?);
            }
            Value::Table(out)
        }
    })
}

/// Parses a pipeline file's text. All problems found are returned together.
pub fn parse(source: Source) -> Result<RawPipeline, Diagnostics> {
    let text = source.text.clone();
    let doc = DeTable::parse(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        Diagnostics::from(Diagnostic::at(format!("invalid TOML: {}", e.message().trim()), &source, span))
    })?;
    let mut errors = Vec::new();
    let mut raw = RawPipeline {
        source: source.clone(),
        name: None,
        seed: None,
        description: None,
        stages: vec![],
        sweep: vec![],
        executor: RawExecutor::default(),
    };

    for (key, item) in doc.get_ref().iter() {
        let (k, kspan) = (key.get_ref().as_ref(), key.span());
        match (k, item.get_ref()) {
            ("pipeline", DeValue::Table(t)) => parse_header(&source, t, &mut raw, &mut errors),
            ("stages", DeValue::Table(t)) => {
                for (name, stage) in t.iter() {
                    match stage.get_ref() {
                        DeValue::Table(st) => {
                            raw.stages.push(parse_stage(&source, sp(name.get_ref().to_string(), name.span()), st, &mut errors))
                        }
                        _ => errors.push(Diagnostic::at(
                            format!("stage `{}` must be a table (`[stages.{}]`)", name.get_ref(), name.get_ref()),
                            &source,
                            stage.span(),
                        )),
                    }
                }
            }
            ("sweep", DeValue::Table(t)) => parse_sweep(&source, t, "", &mut raw.sweep, &mut errors),
            ("executor", DeValue::Table(t)) => parse_executor(&source, t, &mut raw.executor, &mut errors),
            ("pipeline" | "stages" | "sweep" | "executor", _) => {
                errors.push(Diagnostic::at(format!("`{k}` must be a table (`[{k}]`)"), &source, kspan))
            }
            _ => errors.push(
                Diagnostic::at(format!("unknown top-level key `{k}`"), &source, kspan)
                    .with_help("a pipeline file has the tables [pipeline], [stages.NAME], [sweep] and [executor]"),
            ),
        }
    }
    if errors.is_empty() {
        Ok(raw)
    } else {
        Err(Diagnostics(errors))
    }
}

fn parse_header(source: &Source, t: &DeTable<'_>, raw: &mut RawPipeline, errors: &mut Vec<Diagnostic>) {
    for (key, item) in t.iter() {
        let (k, v, vspan) = (key.get_ref().as_ref(), item.get_ref(), item.span());
        match (k, v) {
            ("name", DeValue::String(s)) => raw.name = Some(sp(s.to_string(), vspan)),
            ("description", DeValue::String(s)) => raw.description = Some(s.to_string()),
            ("seed", DeValue::Integer(_)) => match to_value(v, vspan.clone()) {
                Ok(Value::Int(n)) => raw.seed = Some(sp(n, vspan)),
                _ => errors.push(Diagnostic::at("`seed` is out of range", source, vspan)),
            },
            ("name" | "description", _) => {
                errors.push(Diagnostic::at(format!("`pipeline.{k}` must be a string, found {}", v.type_str()), source, vspan))
            }
            ("seed", _) => {
                errors.push(Diagnostic::at(format!("`pipeline.seed` must be an integer, found {}", v.type_str()), source, vspan))
            }
            _ => errors.push(
                Diagnostic::at(format!("unknown key `{k}` in [pipeline]"), source, key.span())
                    .with_help("[pipeline] takes name, seed and description"),
            ),
        }
    }
}

fn parse_stage(source: &Source, name: Sp<String>, t: &DeTable<'_>, errors: &mut Vec<Diagnostic>) -> RawStage {
    let mut stage = RawStage { name, kind: None, inputs: vec![], params: vec![] };
    for (key, item) in t.iter() {
        let (k, v, vspan) = (key.get_ref().as_ref(), item.get_ref(), item.span());
        match k {
            "kind" => match v {
                DeValue::String(s) => stage.kind = Some(sp(s.to_string(), vspan)),
                _ => errors.push(Diagnostic::at(format!("`kind` must be a string, found {}", v.type_str()), source, vspan)),
            },
            "inputs" => match v {
                DeValue::Table(slots) => {
                    for (slot, up) in slots.iter() {
                        match up.get_ref() {
                            DeValue::String(s) => {
                                stage.inputs.push((sp(slot.get_ref().to_string(), slot.span()), sp(s.to_string(), up.span())))
                            }
                            other => errors.push(Diagnostic::at(
                                format!("input `{}` must name a stage (a string), found {}", slot.get_ref(), other.type_str()),
                                source,
                                up.span(),
                            )),
                        }
                    }
                }
                _ => errors.push(
                    Diagnostic::at(format!("`inputs` must be a table, found {}", v.type_str()), source, vspan)
                        .with_help("write inputs = { slot = \"stage\" }"),
                ),
            },
            _ => match to_value(v, vspan) {
                Ok(value) => stage.params.push((sp(k.to_string(), key.span()), sp(value, item.span()))),
                Err((msg, span)) => errors.push(Diagnostic::at(msg, source, span)),
            },
        }
    }
    stage
}

fn setting(
    source: &Source,
    key: &Spanned<DeString<'_>>,
    item: &Spanned<DeValue<'_>>,
    out: &mut Settings,
    errors: &mut Vec<Diagnostic>,
) {
    match to_value(item.get_ref(), item.span()) {
        Ok(value) => out.push((sp(key.get_ref().to_string(), key.span()), sp(value, item.span()))),
        Err((msg, span)) => errors.push(Diagnostic::at(msg, source, span)),
    }
}

fn parse_executor(source: &Source, t: &DeTable<'_>, raw: &mut RawExecutor, errors: &mut Vec<Diagnostic>) {
    for (key, item) in t.iter() {
        match (key.get_ref().as_ref(), item.get_ref()) {
            ("stages", DeValue::Table(stages)) => {
                for (name, st) in stages.iter() {
                    let DeValue::Table(st) = st.get_ref() else {
                        errors.push(Diagnostic::at(
                            format!("`executor.stages.{}` must be a table, found {}", name.get_ref(), st.get_ref().type_str()),
                            source,
                            st.span(),
                        ));
                        continue;
                    };
                    let mut settings = Settings::new();
                    for (k, v) in st.iter() {
                        setting(source, k, v, &mut settings, errors);
                    }
                    raw.stages.push((sp(name.get_ref().to_string(), name.span()), settings));
                }
            }
            ("stages", other) => errors.push(Diagnostic::at(
                format!("`executor.stages` must be a table of stage tables, found {}", other.type_str()),
                source,
                item.span(),
            )),
            _ => setting(source, key, item, &mut raw.settings, errors),
        }
    }
}

/// `"stage.param" = [...]` or the dotted form `stage.param = [...]` (a nested table).
fn parse_sweep(
    source: &Source,
    t: &DeTable<'_>,
    prefix: &str,
    out: &mut Vec<(Sp<String>, Vec<Sp<Value>>)>,
    errors: &mut Vec<Diagnostic>,
) {
    for (key, item) in t.iter() {
        let full = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        match item.get_ref() {
            DeValue::Table(inner) if prefix.is_empty() => parse_sweep(source, inner, &full, out, errors),
            DeValue::Array(values) if !values.is_empty() => {
                let mut vals = Vec::new();
                for v in values.iter() {
                    match to_value(v.get_ref(), v.span()) {
                        Ok(x) => vals.push(sp(x, v.span())),
                        Err((msg, span)) => errors.push(Diagnostic::at(msg, source, span)),
                    }
                }
                out.push((sp(full, key.span()), vals));
            }
            _ => errors.push(
                Diagnostic::at(format!("sweep `{full}` must be a non-empty array of values"), source, item.span())
                    .with_help("write \"stage.param\" = [value, value, ...]"),
            ),
        }
    }
}
