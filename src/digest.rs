//! Content hashes (blake3) of files and directory trees.
//!
//! A file's hash is blake3 of its bytes. A tree's hash is blake3 over its files sorted by relative path
//! (`/`-separated), each contributing `path, file hash`; names, bytes and layout count, nothing else
//! (no mtimes, permissions or absolute paths).

use std::io;
use std::path::{Path, PathBuf};

/// A file inside a hashed tree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// Relative, `/`-separated.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// An I/O error with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PathError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub fn path_err(path: &Path) -> impl FnOnce(io::Error) -> PathError + '_ {
    move |source| PathError { path: path.to_path_buf(), source }
}

pub fn hash_file(path: &Path) -> Result<(String, u64), PathError> {
    let mut f = std::fs::File::open(path).map_err(path_err(path))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(&mut f).map_err(path_err(path))?;
    let size = f.metadata().map_err(path_err(path))?.len();
    Ok((h.finalize().to_hex().to_string(), size))
}

/// Every regular file below `root`, sorted by relative path, with its hash.
pub fn list_tree(root: &Path) -> Result<Vec<FileRecord>, PathError> {
    let mut out = Vec::new();
    visit(root, "", &mut |rel, path, _| {
        let (blake3, size) = hash_file(path)?;
        out.push(FileRecord { path: rel, size, blake3 });
        Ok(())
    })?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A file's size and modification time, as `stat` reports them: what [`list_stamps`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp { size: meta.len(), mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128 }
    }
}

/// Every regular file below `root`, sorted by relative path, with its [`Stamp`] (no file is read).
pub fn list_stamps(root: &Path) -> Result<Vec<(String, Stamp)>, PathError> {
    let mut out = Vec::new();
    visit(root, "", &mut |rel, _, meta| {
        out.push((rel, Stamp::of(meta)));
        Ok(())
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

type Visitor<'a> = dyn FnMut(String, &Path, &std::fs::Metadata) -> Result<(), PathError> + 'a;

/// Calls `f(relative path, path, metadata)` for every regular file below `dir` (symlinks followed).
fn visit(dir: &Path, rel: &str, f: &mut Visitor) -> Result<(), PathError> {
    for entry in std::fs::read_dir(dir).map_err(path_err(dir))? {
        let entry = entry.map_err(path_err(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = std::fs::metadata(&path).map_err(path_err(&path))?;
        if meta.is_dir() {
            visit(&path, &rel_path, f)?;
        } else if meta.is_file() {
            f(rel_path, &path, &meta)?;
        }
    }
    Ok(())
}

/// The hash of a tree given its (sorted) file records.
pub fn tree_hash(files: &[FileRecord]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"wspace-tree-v1\0");
    h.update(&(files.len() as u64).to_le_bytes());
    for f in files {
        h.update(&(f.path.len() as u64).to_le_bytes());
        h.update(f.path.as_bytes());
        h.update(f.blake3.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The content hash of a file or of a directory tree.
pub fn hash_path(path: &Path) -> Result<String, PathError> {
    let meta = std::fs::metadata(path).map_err(path_err(path))?;
    if meta.is_dir() {
        Ok(format!("tree:{}", tree_hash(&list_tree(path)?)))
    } else {
        Ok(format!("file:{}", hash_file(path)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_depends_on_names_and_bytes_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/x.txt"), b"hello").unwrap();
            std::fs::write(d.join("y"), b"").unwrap();
        }
        let ha = hash_path(a.path()).unwrap();
        assert_eq!(ha, hash_path(b.path()).unwrap(), "same content in two places hashes the same");
        std::fs::write(b.path().join("sub/x.txt"), b"hellO").unwrap();
        assert_ne!(ha, hash_path(b.path()).unwrap(), "one byte changes the hash");
        std::fs::rename(a.path().join("y"), a.path().join("z")).unwrap();
        assert_ne!(ha, hash_path(a.path()).unwrap(), "a rename changes the hash");
        // blake3("hello"), from the reference implementation (`b3sum` / Python `blake3`).
        let files = list_tree(b.path()).unwrap();
        assert_eq!(files[0].path, "sub/x.txt");
        assert_eq!(
            hash_file(&a.path().join("sub/x.txt")).unwrap().0,
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }
}
