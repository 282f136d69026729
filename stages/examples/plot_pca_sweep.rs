//! Plots the PCA-component sweep of `pipelines/ablation-pca.toml` (its sweep table) as one PNG.
//!
//! ```text
//! cargo run --release -p wspace-stages --example plot_pca_sweep -- sweeps/ablation-pca.csv sweeps/ablation-pca.png
//! ```
//! x: `pca.components` (log scale); y (linear, 0–1), one line each:
//! green = `pca.explained_variance`, grey = `autoencoder.val_loss` (normalised-coefficient MSE),
//! blue = `evaluate.pca.real.agreement` (PCA only), orange = `evaluate.pca_ae.real.agreement`
//! (PCA + autoencoder), purple = `evaluate.pca_ae.real.accuracy`, red = `evaluate.original_accuracy`.
//! What a good encoder reaches: orange near 1 and purple near red; chance agreement is about 1/3.

use std::process::ExitCode;

use wspace_stages::weights::plot::{self, Scale, Series};

const LINES: [(&str, [u8; 3], &str); 6] = [
    ("pca.explained_variance", plot::GREEN, "green"),
    ("autoencoder.val_loss", plot::GREY, "grey"),
    ("evaluate.pca.real.agreement", plot::BLUE, "blue"),
    ("evaluate.pca_ae.real.agreement", plot::ORANGE, "orange"),
    ("evaluate.pca_ae.real.accuracy", plot::PURPLE, "purple"),
    ("evaluate.original_accuracy", plot::RED, "red"),
];

fn run(table: &str, png: &str) -> Result<String, String> {
    let mut reader = csv::Reader::from_path(table).map_err(|e| format!("{table}: {e}"))?;
    let headers = reader.headers().map_err(|e| format!("{table}: {e}"))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let x = col("pca.components").ok_or_else(|| format!("{table}: no column `pca.components`"))?;
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().map_err(|e| format!("{table}: {e}"))?;
    let mut series = Vec::new();
    let mut legend = String::new();
    for (name, colour, colour_name) in LINES {
        let Some(c) = col(name) else { continue };
        let mut points: Vec<(f64, f64)> = records
            .iter()
            .filter_map(|r| Some((r.get(x)?.parse().ok()?, r.get(c).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        legend.push_str(&format!("{colour_name:>6}: {name}\n"));
        series.push(Series { points, colour });
    }
    plot::write_lines(std::path::Path::new(png), &series, Scale::Log, Scale::Linear).map_err(|e| e.to_string())?;
    Ok(legend)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [table, png] = args.as_slice() else {
        eprintln!("usage: plot_pca_sweep SWEEP_TABLE.csv OUT.png");
        return ExitCode::from(2);
    };
    match run(table, png) {
        Ok(legend) => {
            print!("wrote {png}\n{legend}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
