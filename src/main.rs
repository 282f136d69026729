use std::process::ExitCode;

fn main() -> ExitCode {
    let mut registry = wspace::registry::Registry::with_builtins(wspace_stages::kinds());
    for (name, f) in wspace_stages::benches() {
        registry.add_bench(name, f);
    }
    wspace::cli::main(registry)
}
