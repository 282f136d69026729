//! How far apart two versions of one output file are, number by number: what `wspace verify` reports
//! when a recomputed stage wrote different bytes.
//!
//! # Brief overview
//! [`compare_files`] reads both versions and returns a [`Comparison`]:
//! - **safetensors**: tensor by tensor. The names, dtypes and shapes must agree. `F32` and `F64` values
//!   are compared numerically, other dtypes byte for byte.
//! - **text** (CSV, JSON, SVG, HTML, …): token by token. Runs of non-numeric text must be equal, and
//!   numbers are compared numerically. Two numbers printed to the same fixed precision (`12.35`,
//!   `12.34`) may also differ by one unit in their last digit, since rounding for print can turn a
//!   difference of 1e-9 into one of 0.01.
//! - anything else: bytes.
//!
//! Two values `a`, `b` are *numerically equal within* a [`Tolerance`] when
//! `|a − b| ≤ atol + rtol · max(|a|, |b|)`, as NumPy's `isclose` has it but symmetric. NaN equals NaN
//! only bit for bit. The comparison reports the largest absolute and relative differences it saw, and
//! where.

use std::path::Path;

use crate::digest::{path_err, PathError};

/// When two numbers count as equal: `|a − b| ≤ atol + rtol · max(|a|, |b|)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    fn allows(&self, a: f64, b: f64, slack: f64) -> bool {
        if a.is_nan() || b.is_nan() {
            return a.to_bits() == b.to_bits();
        }
        a == b || (a - b).abs() <= self.atol + self.rtol * a.abs().max(b.abs()) + slack
    }
}

/// What comparing two versions of a file found.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    Identical,
    /// Same structure; every number within the tolerance.
    Close(Differences),
    /// Same structure, but some number is outside the tolerance.
    Far(Differences),
    /// The files cannot be set side by side: the reason.
    Structure(String),
}

/// The largest differences between corresponding numbers, and where each was.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Differences {
    /// Numbers compared.
    pub count: u64,
    /// Numbers that differ at all.
    pub differing: u64,
    pub max_abs: f64,
    /// `|a − b| / max(|a|, |b|)`.
    pub max_rel: f64,
    /// Where `max_abs` was (a tensor name, or a line of a text file).
    pub at: String,
    /// The first number outside the tolerance: where, and the two values.
    pub outside: Option<(String, f64, f64)>,
}

impl Differences {
    fn add(&mut self, a: f64, b: f64, slack: f64, tol: &Tolerance, at: &dyn Fn() -> String) {
        self.count += 1;
        if a.to_bits() == b.to_bits() {
            return;
        }
        self.differing += 1;
        let abs = (a - b).abs();
        if abs > self.max_abs || (abs.is_nan() && !self.max_abs.is_nan()) {
            self.max_abs = abs;
            self.at = at();
        }
        let scale = a.abs().max(b.abs());
        if scale > 0.0 {
            self.max_rel = self.max_rel.max(abs / scale);
        }
        if self.outside.is_none() && !tol.allows(a, b, slack) {
            self.outside = Some((at(), a, b));
        }
    }

    fn verdict(self) -> Comparison {
        match (self.differing, &self.outside) {
            (0, _) => Comparison::Identical,
            (_, None) => Comparison::Close(self),
            (_, Some(_)) => Comparison::Far(self),
        }
    }
}

impl std::fmt::Display for Differences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} numbers differ; max |Δ| {:.3e} (at {}), max relative {:.3e}",
            self.differing, self.count, self.max_abs, self.at, self.max_rel
        )?;
        if let Some((at, a, b)) = &self.outside {
            write!(f, "; outside the tolerance first at {at}: {a} vs {b}")?;
        }
        Ok(())
    }
}

/// Compares `old` and `new` (two versions of one output file) within `tol`.
pub fn compare_files(old: &Path, new: &Path, tol: &Tolerance) -> Result<Comparison, PathError> {
    let a = std::fs::read(old).map_err(path_err(old))?;
    let b = std::fs::read(new).map_err(path_err(new))?;
    Ok(compare_bytes(&a, &b, old.extension().and_then(|e| e.to_str()), tol))
}

/// [`compare_files`] on the contents; `extension` picks the format.
pub fn compare_bytes(a: &[u8], b: &[u8], extension: Option<&str>, tol: &Tolerance) -> Comparison {
    if a == b {
        return Comparison::Identical;
    }
    if extension == Some("safetensors") {
        return match (safetensors(a), safetensors(b)) {
            (Ok(x), Ok(y)) => compare_tensors(&x, &y, tol),
            (Err(e), _) | (_, Err(e)) => Comparison::Structure(format!("not a readable safetensors file: {e}")),
        };
    }
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(x), Ok(y)) => compare_text(x, y, tol),
        _ => Comparison::Structure("binary files with different bytes".into()),
    }
}

/// One tensor of a safetensors file: name, dtype, shape and its bytes.
struct Tensor<'a> {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    data: &'a [u8],
}

/// The tensors of a safetensors file, in name order (the format: an 8-byte little-endian header
/// length, a JSON header naming each tensor's dtype, shape and byte range, then the data).
fn safetensors(bytes: &[u8]) -> Result<Vec<Tensor<'_>>, String> {
    let n = bytes.get(..8).ok_or("shorter than its header length")?;
    let n = u64::from_le_bytes(n.try_into().map_err(|_| "bad header length")?) as usize;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or("shorter than its header")?;
    let data = &bytes[8 + n..];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    let mut out = Vec::new();
    for (name, info) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let field = |f: &str| info.get(f).ok_or_else(|| format!("tensor `{name}` has no `{f}`"));
        let dtype = field("dtype")?.as_str().unwrap_or("").to_string();
        let shape = field("shape")?.as_array().map(|s| s.iter().filter_map(|d| d.as_u64()).collect()).unwrap_or_default();
        let range = field("data_offsets")?.as_array().map(|r| r.iter().filter_map(|d| d.as_u64()).collect::<Vec<_>>());
        let (start, end) = match range.as_deref() {
            Some(&[s, e]) if s <= e => (s as usize, e as usize),
            _ => return Err(format!("tensor `{name}` has bad data_offsets")),
        };
        let data = data.get(start..end).ok_or_else(|| format!("tensor `{name}` runs past the end of the file"))?;
        out.push(Tensor { name, dtype, shape, data });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn compare_tensors(a: &[Tensor], b: &[Tensor], tol: &Tolerance) -> Comparison {
    let names = |t: &[Tensor]| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return Comparison::Structure(format!("different tensors: {:?} vs {:?}", names(a), names(b)));
    }
    let mut d = Differences::default();
    for (x, y) in a.iter().zip(b) {
        if (&x.dtype, &x.shape) != (&y.dtype, &y.shape) {
            return Comparison::Structure(format!("tensor `{}`: {} {:?} vs {} {:?}", x.name, x.dtype, x.shape, y.dtype, y.shape));
        }
        let values = |t: &Tensor| -> Option<Vec<f64>> {
            match t.dtype.as_str() {
                "F32" => Some(t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()),
                "F64" => Some(t.data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
                _ => None,
            }
        };
        match (values(x), values(y)) {
            (Some(u), Some(v)) => {
                for (i, (p, q)) in u.iter().zip(&v).enumerate() {
                    d.add(*p, *q, 0.0, tol, &|| format!("`{}`[{i}]", x.name));
                }
            }
            _ if x.data != y.data => {
                return Comparison::Structure(format!("tensor `{}` ({}) has different bytes", x.name, x.dtype))
            }
            _ => {}
        }
    }
    d.verdict()
}

/// A text split into alternating runs: `Text` that must match, and numbers.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Text(&'a str),
    /// The value, and one unit in its last printed digit (0 for exponent or integer-free forms).
    Number(f64, f64),
}

/// Splits text into numbers (`-1.5`, `2e-3`, `7`) and the text between them. A number is a maximal
/// run of `[0-9.eE+-]` that parses; a `-` or `+` starts one only where a number may start.
fn tokens(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let (mut out, mut text_start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        let starts_number = bytes[i].is_ascii_digit()
            || (matches!(bytes[i], b'-' | b'+' | b'.') && bytes.get(i + 1).is_some_and(|c| c.is_ascii_digit() || *c == b'.'));
        let after_word = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !starts_number || after_word {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len() {
            let c = bytes[j];
            let exp_sign = matches!(c, b'-' | b'+') && matches!(bytes[j - 1], b'e' | b'E');
            if c.is_ascii_digit() || c == b'.' || ((c == b'e' || c == b'E') && j + 1 < bytes.len()) || exp_sign {
                j += 1;
            } else {
                break;
            }
        }
        // Back off characters that do not parse (a trailing `e`, `.` or sign).
        let mut end = j;
        while end > i && s[i..end].parse::<f64>().is_err() {
            end -= 1;
        }
        if end == i {
            i += 1;
            continue;
        }
        let word = &s[i..end];
        if text_start < i {
            out.push(Token::Text(&s[text_start..i]));
        }
        out.push(Token::Number(word.parse().unwrap_or(f64::NAN), last_digit_unit(word)));
        text_start = end;
        i = end;
    }
    if text_start < s.len() {
        out.push(Token::Text(&s[text_start..]));
    }
    out
}

/// One unit in the last printed digit of a decimal number without an exponent (`12.35` → 0.01,
/// `40` → 1); 0 for a number with an exponent, which prints all its digits.
fn last_digit_unit(word: &str) -> f64 {
    if word.contains(['e', 'E']) {
        return 0.0;
    }
    match word.split_once('.') {
        Some((_, frac)) => 10f64.powi(-(frac.len() as i32)),
        None => 1.0,
    }
}

fn compare_text(a: &str, b: &str, tol: &Tolerance) -> Comparison {
    if a.lines().count() != b.lines().count() {
        return Comparison::Structure(format!("{} lines vs {}", a.lines().count(), b.lines().count()));
    }
    let mut d = Differences::default();
    for (n, (la, lb)) in a.lines().zip(b.lines()).enumerate() {
        let (ta, tb) = (tokens(la), tokens(lb));
        if ta.len() != tb.len() {
            return Comparison::Structure(format!("line {} differs in its text", n + 1));
        }
        for (x, y) in ta.iter().zip(&tb) {
            match (x, y) {
                (Token::Text(p), Token::Text(q)) if p == q => {}
                (Token::Number(p, up), Token::Number(q, uq)) => {
                    // Printed to the same fixed precision, both may be rounded by half a unit there.
                    let slack = if up == uq { *up } else { 0.0 };
                    d.add(*p, *q, slack, tol, &|| format!("line {}", n + 1));
                }
                _ => return Comparison::Structure(format!("line {} differs in its text", n + 1)),
            }
        }
    }
    d.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance { rtol: 1e-5, atol: 1e-8 };

    /// A safetensors file of `F32` tensors, written by hand in the format's layout.
    fn st(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
        let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
        for (name, shape, values) in tensors {
            let start = data.len();
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(data);
        out
    }

    #[test]
    fn tensors_are_compared_value_by_value_and_report_the_largest_difference() {
        let a = st(&[("w", &[3], &[1.0, 2.0, 3.0]), ("b", &[1], &[0.5])]);
        let close = st(&[("w", &[3], &[1.0, 2.000001, 3.0]), ("b", &[1], &[0.5])]);
        let far = st(&[("w", &[3], &[1.0, 2.0, 3.1]), ("b", &[1], &[0.5])]);
        assert_eq!(compare_bytes(&a, &a, Some("safetensors"), &TOL), Comparison::Identical);
        let Comparison::Close(d) = compare_bytes(&a, &close, Some("safetensors"), &TOL) else { panic!("not close") };
        assert_eq!((d.count, d.differing, d.at.as_str()), (4, 1, "`w`[1]"));
        assert!((d.max_abs - 9.5367e-7).abs() < 1e-10 && (d.max_rel - 4.7684e-7).abs() < 1e-10, "{d}");
        let Comparison::Far(d) = compare_bytes(&a, &far, Some("safetensors"), &TOL) else { panic!("not far") };
        assert_eq!(d.outside.as_ref().map(|o| o.0.as_str()), Some("`w`[2]"));
        let renamed = st(&[("v", &[3], &[1.0, 2.0, 3.0]), ("b", &[1], &[0.5])]);
        assert!(matches!(compare_bytes(&a, &renamed, Some("safetensors"), &TOL), Comparison::Structure(_)));
        let reshaped = st(&[("w", &[1, 3], &[1.0, 2.0, 3.0]), ("b", &[1], &[0.5])]);
        assert!(matches!(compare_bytes(&a, &reshaped, Some("safetensors"), &TOL), Comparison::Structure(_)));
        assert!(matches!(compare_bytes(&a, &a[..20], Some("safetensors"), &TOL), Comparison::Structure(_)));
    }

    #[test]
    fn text_numbers_are_compared_within_the_tolerance_or_their_last_printed_digit() {
        let csv = "model,loss,acc\nm1,0.123456789,0.9\nm2,1e-3,1\n";
        let close = "model,loss,acc\nm1,0.123456790,0.9\nm2,1.0000001e-3,1\n";
        let Comparison::Close(d) = compare_bytes(csv.as_bytes(), close.as_bytes(), Some("csv"), &TOL) else { panic!() };
        assert_eq!((d.count, d.differing), (4, 2));
        // "12.35" vs "12.34": one unit in the last printed digit, whatever the tolerance.
        let svg = |x: &str| format!("<line x1=\"{x}\" class=\"a1\"/>");
        assert!(matches!(compare_bytes(svg("12.35").as_bytes(), svg("12.34").as_bytes(), None, &TOL), Comparison::Close(_)));
        assert!(matches!(compare_bytes(svg("12.35").as_bytes(), svg("12.33").as_bytes(), None, &TOL), Comparison::Far(_)));
        // Words with digits in them are text: `a1` vs `a2` is a structural difference, as is other text.
        let other = "<line x1=\"12.35\" class=\"a2\"/>";
        assert!(matches!(compare_bytes(svg("12.35").as_bytes(), other.as_bytes(), None, &TOL), Comparison::Structure(_)));
        let json = "{\"loss\": -0.5, \"n\": 3}";
        let json2 = "{\"loss\": -0.50000001, \"n\": 3}";
        assert!(matches!(compare_bytes(json.as_bytes(), json2.as_bytes(), Some("json"), &TOL), Comparison::Close(_)));
        assert!(matches!(compare_bytes(b"a\nb\n", b"a\n", None, &TOL), Comparison::Structure(_)));
    }

    #[test]
    fn numbers_are_found_where_they_start() {
        let t = tokens("x=-1.5e-3, y=2.,id_7 -x 3-4");
        let nums: Vec<f64> = t.iter().filter_map(|t| if let Token::Number(v, _) = t { Some(*v) } else { None }).collect();
        assert_eq!(nums, [-1.5e-3, 2.0, 3.0, 4.0]);
        assert_eq!(last_digit_unit("12.35"), 0.01);
        assert_eq!(last_digit_unit("40"), 1.0);
        assert_eq!(last_digit_unit("4e-3"), 0.0);
    }
}
