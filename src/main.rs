use std::process::ExitCode;

fn main() -> ExitCode {
    let registry = wspace::registry::Registry::with_builtins(wspace_stages::kinds());
    wspace::cli::main(registry)
}
