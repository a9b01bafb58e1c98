//! The QoE report's chart: startup time p50 (ms, left axis) and rebuffer percentage (right
//! axis) per hour, as a PNG.
//!
//! Text needs a TrueType font: `VODSOURCE_FONT`, else DejaVu Sans from Debian's
//! `fonts-dejavu-core` (installed with the FFmpeg packages `scripts/services.sh` sets up).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::register_font;

use crate::report::HourPoint;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Why the chart was not drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// No font to write labels with.
    #[error("no TrueType font: set VODSOURCE_FONT or install fonts-dejavu-core ({0})")]
    Font(String),
    /// Drawing or writing failed.
    #[error("drawing: {0}")]
    Draw(String),
}

fn font() -> Result<(), ChartError> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("VODSOURCE_FONT")
            .into_iter()
            .chain(FONTS.iter().map(|s| (*s).to_owned()))
            .collect();
        let bytes = candidates
            .iter()
            .find_map(|path| std::fs::read(path).ok())
            .ok_or_else(|| format!("tried {}", candidates.join(", ")))?;
        // Registered fonts live for the process: leaked once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "not a TrueType font".to_owned())
    })
    .clone()
    .map_err(ChartError::Font)
}

/// Draws `points` into a 1200×600 PNG at `path`.
///
/// # Errors
/// No font, or the file cannot be written.
pub fn draw(points: &[HourPoint], path: &Path) -> Result<(), ChartError> {
    font()?;
    let draw = |e: &dyn std::fmt::Display| ChartError::Draw(e.to_string());
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let n = points.len().max(1);
    let startup_max = points.iter().filter_map(|p| p.startup_p50_ms).fold(100.0_f64, f64::max) * 1.15;
    let rebuffer_max = points
        .iter()
        .filter_map(|p| p.rebuffer_percentage)
        .fold(1.0_f64, f64::max)
        * 1.15;
    let labels: Vec<String> = points.iter().map(|p| p.hour.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "QoE per hour (UTC): startup time p50 and rebuffer percentage",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0..n, 0.0..startup_max)
        .map_err(|e| draw(&e))?
        .set_secondary_coord(0..n, 0.0..rebuffer_max);
    chart
        .configure_mesh()
        .x_labels(n.min(12))
        .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
        .y_desc("startup time p50 (ms)")
        .x_desc("hour")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| draw(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("rebuffer percentage (%)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| draw(&e))?;
    let startup: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.startup_p50_ms.map(|v| (i, v)))
        .collect();
    let rebuffer: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.rebuffer_percentage.map(|v| (i, v)))
        .collect();
    chart
        .draw_series(LineSeries::new(startup.clone(), BLUE.stroke_width(2)))
        .map_err(|e| draw(&e))?
        .label("startup time p50 (ms)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(startup.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
        .map_err(|e| draw(&e))?;
    chart
        .draw_secondary_series(LineSeries::new(rebuffer.clone(), RED.stroke_width(2)))
        .map_err(|e| draw(&e))?
        .label("rebuffer percentage (%)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_secondary_series(rebuffer.iter().map(|p| Circle::new(*p, 3, RED.filled())))
        .map_err(|e| draw(&e))?;
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
