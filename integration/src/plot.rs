//! Latency-by-percentile plots (PNG) of a benchmark phase: one line per
//! offered rate, x = percentile on a "nines" scale (-log10(1 - q), so 90 %,
//! 99 % and 99.9 % are evenly spaced), y = milliseconds. The text needs a
//! TrueType font; plotters' pure-Rust `ab_glyph` renderer draws it from a
//! font file of the system (Debian's fonts-dejavu-core), so no fontconfig or
//! freetype is linked.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PlotError {
    #[error("no TrueType font found (looked at {0}); install fonts-dejavu-core")]
    NoFont(String),
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
}

/// One line: its legend and `(quantile, ms)` points.
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font as "sans-serif" once per process.
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        FONT_FILES.iter().any(|file| {
            let Ok(bytes) = std::fs::read(file) else {
                return false;
            };
            // plotters keeps the font for the process's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    });
    if registered {
        Ok(())
    } else {
        Err(PlotError::NoFont(FONT_FILES.join(", ")))
    }
}

fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

fn percentile_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    if q < 90.0 {
        return format!("{q:.0}%");
    }
    let digits = format!("{q:.3}");
    format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
}

/// Draws `curves` into a PNG at `path`.
pub fn latency_by_percentile(path: &Path, title: &str, curves: &[Curve]) -> Result<(), PlotError> {
    register_font()?;
    let draw_error = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let max_x = 4.0;
    let max_ms = curves
        .iter()
        .flat_map(|curve| curve.points.iter().map(|&(_, ms)| ms))
        .fold(1.0f64, f64::max);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..max_x, (0.1f64..max_ms * 1.5).log_scale())
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency from scheduled start (ms)")
        .x_labels(5)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (index, curve) in curves.iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .map(|&(q, ms)| (nines(q).min(max_x), ms.max(0.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| draw_error(&e))?
            .label(&curve.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_reads_in_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }

    #[test]
    fn a_plot_is_a_png_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.png");
        let curves = vec![Curve {
            label: "100/s".to_owned(),
            points: vec![(0.0, 1.0), (0.5, 2.0), (0.99, 9.0), (0.9999, 30.0)],
        }];
        // `./dev` installs the font (fonts-dejavu-core) before it tests.
        latency_by_percentile(&path, "checkout", &curves).expect("draws");
        let bytes = std::fs::read(&path).expect("reads");
        assert_eq!(&bytes[..4], b"\x89PNG");
        assert!(bytes.len() > 10_000, "a drawn chart, not an empty image");
    }
}
