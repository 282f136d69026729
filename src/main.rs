use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`wspace ls | head`), as Unix tools do.
    // SAFETY: setting a signal disposition to its default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    one_candle_thread_per_operation();
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

/// candle runs each tensor operation on a pool of its own (`CANDLE_NUM_THREADS`, default every core)
/// whose workers spin between operations. At the learned stages' sizes it gains nothing on two cores
/// (`benches/learned.sh 2`), and beside other stages of the run it takes their cores: two flow
/// trainings at once ran at 97 and 105 examples/s each with it, 608 and 597 without. So each operation
/// runs on its caller's thread unless the user sets `CANDLE_NUM_THREADS`; matrix products (gemm) and
/// the project's kernels keep their threads (`RAYON_NUM_THREADS`, the run's `-j`). Element-wise
/// operations give the same values either way.
fn one_candle_thread_per_operation() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any thread exists: nothing reads the environment concurrently.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
