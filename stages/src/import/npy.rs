//! A 2-D little-endian float32 `.npy` file (NumPy format 1.0–3.0), read one row at a time: the
//! header is parsed, the file's length checked against it, and each row read with one seek, so a
//! 5 GB `weights.npy` costs one row of memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An open `.npy` matrix of `rows × cols` float32.
#[derive(Debug)]
pub struct NpyRows {
    path: PathBuf,
    file: File,
    data_offset: u64,
    pub rows: usize,
    pub cols: usize,
}

impl NpyRows {
    /// Opens `path` and checks its header and length. Errors name the file.
    pub fn open(path: &Path) -> Result<NpyRows, String> {
        let fail = |m: String| format!("{}: {m}", path.display());
        let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(|_| fail("too short for a .npy header (truncated?)".into()))?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err(fail("not a .npy file (no \\x93NUMPY magic)".into()));
        }
        let header_len = match magic[6] {
            1 => {
                let mut b = [0u8; 2];
                file.read_exact(&mut b).map_err(|_| fail("truncated .npy header".into()))?;
                u16::from_le_bytes(b) as usize
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                file.read_exact(&mut b).map_err(|_| fail("truncated .npy header".into()))?;
                u32::from_le_bytes(b) as usize
            }
            v => return Err(fail(format!("unsupported .npy format version {v}"))),
        };
        let mut header = vec![0u8; header_len];
        file.read_exact(&mut header).map_err(|_| fail("truncated .npy header".into()))?;
        let header = String::from_utf8_lossy(&header).into_owned();
        let descr = dict_value(&header, "descr").ok_or_else(|| fail(format!("header has no 'descr': {header}")))?;
        if descr.trim_matches(['\'', '"']) != "<f4" {
            return Err(fail(format!("holds {descr}, not little-endian float32 ('<f4')")));
        }
        if dict_value(&header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
            return Err(fail("is in Fortran (column-major) order; rows cannot be streamed".into()));
        }
        let shape = dict_value(&header, "shape").ok_or_else(|| fail(format!("header has no 'shape': {header}")))?;
        let dims: Vec<usize> = shape
            .trim_start_matches('(')
            .split(')')
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| fail(format!("bad shape {shape}"))))
            .collect::<Result<_, _>>()?;
        let [rows, cols] = dims[..] else {
            return Err(fail(format!("has shape {dims:?}; a 2-D (rows, weights) matrix is expected")));
        };
        let data_offset = file.stream_position().map_err(|e| fail(e.to_string()))?;
        let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        let want = data_offset + (rows * cols * 4) as u64;
        if len < want {
            return Err(fail(format!(
                "truncated .npy: the header says {rows} × {cols} float32 ({want} bytes with the header), the file has {len} bytes"
            )));
        }
        Ok(NpyRows { path: path.to_path_buf(), file, data_offset, rows, cols })
    }

    /// Row `i`.
    pub fn row(&mut self, i: usize) -> Result<Vec<f32>, String> {
        if i >= self.rows {
            return Err(format!("{}: row {i} is out of range ({} rows)", self.path.display(), self.rows));
        }
        let mut bytes = vec![0u8; self.cols * 4];
        self.file
            .seek(SeekFrom::Start(self.data_offset + (i * self.cols * 4) as u64))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|e| format!("{}: row {i}: {e}", self.path.display()))?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// The value of `'key'` in a NumPy header dict: a tuple `( … )` whole, anything else up to the
/// next `,` or `}`.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}']).unwrap_or(rest.len()) };
    Some(rest[..end].trim())
}
