use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`wspace ls | head`), as Unix tools do.
    // SAFETY: setting a signal disposition to its default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let mut registry = wspace::registry::Registry::with_builtins(wspace_stages::kinds());
    for (name, f) in wspace_stages::benches() {
        registry.add_bench(name, f);
    }
    wspace::cli::main(registry)
}

/// The learned stages' candle graphs allocate and free buffers of a few hundred KiB to a few MiB at
/// every operation. glibc's defaults serve those with fresh `mmap`s, or give the heap's top back to the
/// kernel when freed, so each operation page-faults its output in again (`perf`: ~15 % of the token
/// transformer's time in page faults). Serving them from the heap and keeping freed memory (up to
/// 512 MiB) makes `wspace bench flow` 2× and `wspace bench align` 1.7× faster; the numbers computed
/// are the same.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
