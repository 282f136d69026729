//! Argument parsing of the `wspace bench NAME` benchmarks, through clap: each benchmark declares its
//! arguments as a `#[derive(clap::Parser)]` struct and parses with [`parse`], so `--help`, unknown or
//! missing flags and bad values behave as they do for the `wspace` command itself.

use clap::{Parser, ValueEnum};

/// How a benchmark prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One line for a person.
    Text,
    /// One JSON object (the fields scripts rely on).
    Json,
}

/// Parses `args` (what follows `wspace bench NAME`) as `T`. `Err(Ok(text))`: `--help` was asked for
/// (print `text`, succeed); `Err(Err(message))`: the arguments are wrong (print the message, exit 2).
pub(crate) fn parse<T: Parser>(name: &str, args: &[String]) -> Result<T, Result<String, String>> {
    let argv = std::iter::once(format!("wspace bench {name}")).chain(args.iter().cloned());
    T::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Ok(text),
            _ => Err(text.trim_end().to_string()),
        }
    })
}

/// A positive integer (`--models 0` is an error that says so).
pub(crate) fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive integer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Demo {
        #[arg(long, value_parser = positive, default_value_t = 2)]
        models: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_checked_and_help_is_not_an_error() {
        let d: Demo = parse("demo", &args(&["--models", "3", "--format", "json"])).unwrap();
        assert_eq!((d.models, d.format), (3, Format::Json));
        let bad = parse::<Demo>("demo", &args(&["--format", "xml"])).unwrap_err().unwrap_err();
        assert!(bad.contains("invalid value 'xml' for '--format <FORMAT>'"), "{bad}");
        let zero = parse::<Demo>("demo", &args(&["--models", "0"])).unwrap_err().unwrap_err();
        assert!(zero.contains("'0'") && zero.contains("expected a positive integer"), "{zero}");
        let unknown = parse::<Demo>("demo", &args(&["--modles", "3"])).unwrap_err().unwrap_err();
        assert!(unknown.contains("unexpected argument '--modles'"), "{unknown}");
        let help = parse::<Demo>("demo", &args(&["--help"])).unwrap_err().unwrap();
        assert!(help.contains("Usage: wspace bench demo"), "{help}");
    }
}
