//! PNG plots for the evaluation report: accuracy against k, and the latency distribution.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::evaluate::{NormalizationRun, MAX_K};

/// Fonts a fresh Debian machine has after `apt-get install fonts-dejavu-core`.
const FONT_FILES: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"];

/// Registers a font for the plots' text (plotters draws text itself, from a TTF file).
pub fn register_fonts() -> Result<(), String> {
    let path = FONT_FILES.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
        format!("no font for the plots: install fonts-dejavu-core (looked for {})", FONT_FILES.join(", "))
    })?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| format!("{path} is not a usable font"))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn series_label(run: &NormalizationRun) -> String {
    let dictionary = if run.dictionary == "ontology" { "" } else { " +train" };
    format!("{} {}{} ({})", run.dataset, run.config, dictionary, run.protocol.name())
}

/// Accuracy@k for k = 1..MAX_K, one line per run.
pub fn accuracy_at_k(runs: &[&NormalizationRun], path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let low = runs.iter().map(|r| r.accuracy_at(1)).fold(1.0f64, f64::min);
    let y_min = ((low * 10.0).floor() / 10.0 - 0.05).max(0.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("Normalization accuracy@k (development sets)", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64..MAX_K as f64, y_min..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("k (candidates considered)")
        .y_desc("accuracy@k")
        .x_labels(MAX_K)
        .x_label_formatter(&|x| format!("{}", x.round() as usize))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = (1..=MAX_K).map(|k| (k as f64, run.accuracy_at(k))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(series_label(run))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Histogram of per-mention latency, one colour per run (pass one protocol's runs: both
/// protocols time the same calls).
pub fn latency(runs: &[&NormalizationRun], path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let all: Vec<f64> = runs.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect();
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // Clip the long tail at the 99th percentile so the bulk stays readable.
    let max = sorted.get(((sorted.len().max(1) - 1) as f64 * 0.99) as usize).copied().unwrap_or(1.0).max(1.0);
    const BINS: usize = 40;
    let width = max / BINS as f64;
    let counts: Vec<Vec<usize>> = runs
        .iter()
        .map(|run| {
            let mut bins = vec![0usize; BINS];
            for &value in &run.latencies_ms {
                bins[((value / width) as usize).min(BINS - 1)] += 1;
            }
            bins
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency per mention (one client, wall time through SQL)", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (last bin: 99th percentile and above)")
        .y_desc("mentions")
        .y_label_formatter(&|y| format!("{}", y.round() as usize))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (run, bins)) in runs.iter().zip(&counts).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let steps: Vec<(f64, f64)> = bins
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| [(b as f64 * width, n as f64), ((b + 1) as f64 * width, n as f64)])
            .collect();
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(series_label(run))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
