use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`wspace ls | head`), as Unix tools do.
    // SAFETY: setting a signal disposition to its default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut registry = wspace::registry::Registry::with_builtins(wspace_stages::kinds());
    for (name, f) in wspace_stages::benches() {
        registry.add_bench(name, f);
    }
    wspace::cli::main(registry)
}
