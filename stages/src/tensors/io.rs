//! Whole-file reads and writes whose errors name the path: bytes, pretty JSON, CSV (through the `csv`
//! crate, so fields with commas, quotes or line breaks are quoted), and candle errors with their context.

use std::path::Path;

use wspace_stage_api::StageError;

pub fn read(path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path).map_err(|e| StageError::io(path, e))
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(path, bytes).map_err(|e| StageError::io(path, e))
}

/// Writes pretty JSON with a trailing newline.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StageError> {
    write(path, &json_bytes(path, value)?)
}

/// Writes `value` (a JSON object once serialised) with the keys of `extra` added.
pub fn write_json_with(path: &Path, value: &impl serde::Serialize, extra: serde_json::Value) -> Result<(), StageError> {
    let mut json = serde_json::to_value(value).map_err(|e| StageError::msg(e.to_string()))?;
    if let (Some(obj), Some(more)) = (json.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    write_json(path, &json)
}

/// Pretty JSON with a trailing newline (what [`write_json`] writes); `path` names the file in errors.
pub fn json_bytes(path: &Path, value: &impl serde::Serialize) -> Result<Vec<u8>, StageError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| StageError::msg(format!("{}: cannot encode JSON: {e}", path.display())))?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Writes `bytes` through a temporary file and a rename ([`wspace_stage_api::write_atomic`]): a killed
/// run never leaves a half-written `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    wspace_stage_api::write_atomic(path, bytes).map_err(|(at, e)| StageError::io(at, e))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::msg(format!("{}: invalid JSON: {e}", path.display())))
}

/// A finite number as JSON, else `null` (JSON has no NaN or ∞).
pub fn finite_json(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// The value at a dotted path (`"nn_noise_matched.accuracy"`) of a JSON object, if there is one.
pub fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn csv_error(path: &Path) -> impl Fn(csv::Error) -> StageError + '_ {
    move |e| StageError::msg(format!("{}: {e}", path.display()))
}

/// Every record of a CSV file with a header row, as `T`s (serde: columns by name).
pub fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, StageError> {
    let mut r = csv::Reader::from_path(path).map_err(csv_error(path))?;
    r.deserialize().collect::<Result<Vec<T>, _>>().map_err(csv_error(path))
}

/// Writes `rows` as a CSV file, one record each, the header from their field names (serde).
pub fn write_records<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), StageError> {
    let mut w = csv::Writer::from_path(path).map_err(csv_error(path))?;
    for r in rows {
        w.serialize(r).map_err(csv_error(path))?;
    }
    w.flush().map_err(|e| StageError::io(path, e))
}

/// Writes a CSV table: the header, then one record per row, `\n`-terminated; a field is quoted only
/// where it must be (a comma, a quote, `\r` or `\n` in it). Fields are written as given, so numbers
/// keep the text their caller formatted.
pub fn write_csv<R, F>(path: &Path, header: &[&str], rows: impl IntoIterator<Item = R>) -> Result<(), StageError>
where
    R: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let fail = csv_error(path);
    let mut w = csv::Writer::from_path(path).map_err(&fail)?;
    w.write_record(header).map_err(&fail)?;
    for row in rows {
        w.write_record(row).map_err(&fail)?;
    }
    w.flush().map_err(|e| StageError::io(path, e))
}

/// One CSV record for [`write_csv`]: each expression as its `Display` text (`csv_row![id, name, 0.5]`),
/// so numbers are written exactly as `format!("{}")` writes them.
macro_rules! csv_row {
    ($($field:expr),* $(,)?) => { vec![$($field.to_string()),*] };
}
pub(crate) use csv_row;

/// A candle error as a [`StageError`] that says where it happened: `.map_err(candle_error("align"))`.
pub fn candle_error(context: impl std::fmt::Display) -> impl Fn(candle_core::Error) -> StageError {
    move |e| StageError::msg(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_the_fields_that_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let rows = [["1", "plain", "0.25"], ["2", "a,b", "say \"x\""], ["3", "cr\rlf\n", "NaN"]];
        write_csv(&path, &["id", "name", "value"], rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "id,name,value\n1,plain,0.25\n2,\"a,b\",\"say \"\"x\"\"\"\n3,\"cr\rlf\n\",NaN\n");
    }

    #[test]
    fn errors_name_the_path() {
        let err = read_json::<serde_json::Value>(Path::new("/no/such/file.json")).unwrap_err().to_string();
        assert!(err.contains("/no/such/file.json"), "{err}");
    }
}
