//! Argument parsing of the `wspace bench NAME` benchmarks, through clap: each benchmark declares its
//! arguments as a `#[derive(clap::Parser)]` struct and parses with [`parse`], so `--help`, unknown or
//! missing flags and bad values behave as they do for the `wspace` command itself.

use clap::{Parser, ValueEnum};
use wspace_stage_api::Choice;

use crate::device::DeviceName;

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

/// A number in `[0, 1]` (a weight such as `--label-weight`).
pub(crate) fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a number in [0, 1]".into()),
    }
}

/// `--device cpu|cuda` of a learned stage's benchmark; `cuda` in a build without the `cuda` feature is
/// refused with how to build.
pub(crate) fn device(value: &str) -> Result<DeviceName, String> {
    let name = DeviceName::from_name(value).ok_or_else(|| format!("expected one of: {}", DeviceName::NAMES.join(", ")))?;
    crate::device::built(name).map_err(|e| e.to_string())
}

/// A benchmark's training loop: `epochs` epochs, all of them run (patience = epochs), AdamW at 1e-3,
/// seed 0.
pub(crate) fn fit_params(epochs: usize, batch_size: usize, weight_decay: f64, device: DeviceName) -> crate::fit::FitParams {
    crate::fit::FitParams { epochs, patience: epochs, lr: 1e-3, weight_decay, batch_size, seed: 0, device }
}

/// The candle device of `--device` (GPU 0, opened once per process).
pub(crate) fn open(name: DeviceName) -> Result<candle_core::Device, String> {
    crate::device::open_name(name).map_err(|e| e.to_string())
}

/// Runs `f` `repeats` times (at least once): the best and the median wall time, in seconds.
pub(crate) fn time_runs(repeats: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<(f64, f64), String> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[times.len() / 2]))
}

/// A learned stage's benchmark result, the run's best and median wall time: per run `count` models
/// (or examples), and `images` probe images through the `cnn-s` kernel (forward and backward); `what`
/// describes the run, `extra` adds its settings to the JSON.
pub(crate) fn report(
    bench: &str,
    what: String,
    (best, median): (f64, f64),
    (count, images): (usize, usize),
    extra: serde_json::Value,
    format: Format,
) -> String {
    let threads = rayon::current_num_threads();
    let (rows_per_s, images_per_s) = (count as f64 / median, images as f64 / median);
    if format == Format::Json {
        let mut j = serde_json::json!({
            "bench": bench, "threads": threads, "best_s": best, "median_s": median,
            "rows_per_s": rows_per_s, "rows_per_s_per_thread": rows_per_s / threads as f64, "images_per_s": images_per_s, "images_per_s_per_thread": images_per_s / threads as f64,
        });
        if let (Some(o), Some(x)) = (j.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        j.to_string()
    } else {
        let images = if images > 0 {
            format!(", {images_per_s:.0} behavioural images/s, {:.0} per thread", images_per_s / threads as f64)
        } else {
            String::new()
        };
        format!("{what}, {threads} threads: best {best:.3} s, median {median:.3} s ({rows_per_s:.1} rows/s{images})")
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
