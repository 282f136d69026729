//! The figures stages write: SVG charts and heat maps from [`wspace_plot`] (plotters' SVG backend),
//! written as files. See that crate's doc for what a chart looks like and why its bytes are stable.

use std::path::Path;

pub use wspace_plot::{short_number, viridis, Axis, Chart, Heatmap, Mark, PlotError, Scale, Series};
pub use wspace_plot::{BLUE, CYCLE, GREEN, GREY, ORANGE, PURPLE, RED};
use wspace_stage_api::StageError;

use crate::tensors;

fn plot_error(path: &Path, e: PlotError) -> StageError {
    StageError::msg(format!("{}: {e}", path.display()))
}

/// Writes `chart` as an SVG file.
pub fn write_chart(path: &Path, chart: &Chart) -> Result<(), StageError> {
    tensors::write(path, chart.to_svg().map_err(|e| plot_error(path, e))?.as_bytes())
}

/// Writes `map` as an SVG file.
pub fn write_heatmap(path: &Path, map: &Heatmap) -> Result<(), StageError> {
    tensors::write(path, map.to_svg().map_err(|e| plot_error(path, e))?.as_bytes())
}
