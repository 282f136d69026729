//! Argument parsing shared by the `wspace bench NAME` benchmarks: `--flag value` pairs.

/// The `(flag, value)` pairs of `args`; `--help` (or a flag without a value) returns the usage text.
pub(crate) fn pairs<'a>(args: &'a [String], usage: &str) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(usage.into());
        }
        let value = it.next().ok_or_else(|| format!("error: {flag} needs a value\n{usage}"))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

/// A positive integer value of `flag`.
pub(crate) fn positive(flag: &str, value: &str) -> Result<usize, String> {
    value.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("error: {flag} {value}: expected a positive integer"))
}
