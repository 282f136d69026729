//! Scenario helpers: a throwaway project directory, the `wspace` binary run in it, the JSON summary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project { dir: tempfile::tempdir().expect("temp dir") }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }
    /// `wspace ARGS` in the project directory, with the cache in `./cache`. With
    /// `WSPACE_TEST_WRAPPER` set (e.g. `qemu-x86_64 -cpu Nehalem`), the binary runs under that command,
    /// as cargo's `target.<triple>.runner` runs the test binaries: how the README's other CPU
    /// configurations are tested.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_wspace");
        let wrapper: Vec<String> =
            std::env::var("WSPACE_TEST_WRAPPER").unwrap_or_default().split_whitespace().map(str::to_string).collect();
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.args(args).current_dir(self.dir.path()).env_remove("WSPACE_CACHE").env_remove("RUST_LOG");
        c
    }
    pub fn wspace(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run wspace")
    }
    /// `wspace run FILE ARGS --format json`, asserting it exits with `code`; the parsed summary.
    pub fn run_json(&self, file: &str, args: &[&str], code: i32) -> Summary {
        let mut all = vec!["run", file, "--format", "json"];
        all.extend_from_slice(args);
        let out = self.wspace(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "wspace {all:?} exited with {:?}\nstdout: {stdout}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        Summary(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}")))
    }
    /// Lines in a file a command stage appends to: counts how often it really ran.
    pub fn count_lines(&self, rel: &str) -> usize {
        self.read(rel).lines().count()
    }
}

pub struct Summary(pub serde_json::Value);

impl Summary {
    pub fn variants(&self) -> &Vec<serde_json::Value> {
        self.0["variants"].as_array().expect("variants")
    }
    /// stage name → status, for variant `v`.
    pub fn statuses(&self, v: usize) -> BTreeMap<String, String> {
        self.variants()[v]["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
            .collect()
    }
    pub fn stage(&self, v: usize, name: &str) -> &serde_json::Value {
        self.variants()[v]["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).expect("stage in summary")
    }
}

/// `[("a", "ran"), ...]` as a map, for comparisons.
pub fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Makes every file below `dir` writable (entries are stored read-only).
pub fn make_writable(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&p, perm).unwrap();
        if p.is_dir() {
            make_writable(&p);
        }
    }
}
