//! Small formatters of command output: sizes, ages, warnings about unreadable cache entries.

use std::path::PathBuf;

pub(super) fn human_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}

pub(super) fn ago(t: u64) -> String {
    let d = crate::cache::now().saturating_sub(t);
    match d {
        0..120 => format!("{d} s ago"),
        120..7200 => format!("{} min ago", d / 60),
        7200..172_800 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

pub(super) fn report_unreadable(unreadable: &[(PathBuf, String)]) {
    for (dir, why) in unreadable {
        eprintln!("warning: unreadable entry {}: {why} (`wspace fsck --repair` removes it)", dir.display());
    }
}
