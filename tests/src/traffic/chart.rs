//! The PNG chart of the traffic benchmark: packets per second against the
//! extra prefix count, one panel per scenario, for netpol-agent, nftables and
//! the XDP limit of that scenario.
use std::path::Path;

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Debian's fonts-dejavu-core (installed by `cargo xtask setup`).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub struct Panel {
    pub title: String,
    /// Extra prefix counts, in x order (0 = the LOCAL-PLUS policy alone).
    pub prefixes: Vec<usize>,
    /// (label, Mpps per prefix count; None where not measured).
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// (label, Mpps): flat reference lines.
    pub limits: Vec<(String, f64)>,
}

fn register_font() -> anyhow::Result<()> {
    let bytes = std::fs::read(FONT).with_context(|| {
        format!("reading {FONT} (install fonts-dejavu-core: cargo xtask setup)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable font"))
}

pub fn draw(path: &Path, title: &str, panels: &[Panel]) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let areas = root.split_evenly((2, 2));
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let n = panel.prefixes.len();
        let mut ymax: f64 = 0.1;
        for (_, v) in &panel.series {
            for y in v.iter().flatten() {
                ymax = ymax.max(*y);
            }
        }
        for (_, y) in &panel.limits {
            ymax = ymax.max(*y);
        }
        ymax *= 1.15;
        let labels: Vec<String> = panel
            .prefixes
            .iter()
            .map(|&p| {
                if p == 0 {
                    "LOCAL-PLUS".into()
                } else {
                    format!("+{p}")
                }
            })
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.3f64..(n as f64 - 0.7), 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("extra prefixes")
            .y_desc("Mpps")
            .label_style(("sans-serif", 13))
            .draw()?;
        let mut ci = 0;
        for (label, v) in &panel.series {
            let color = colors[ci % colors.len()];
            ci += 1;
            let pts: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .filter_map(|(i, y)| y.map(|y| (i as f64, y)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        for (label, y) in &panel.limits {
            let color = colors[ci % colors.len()];
            ci += 1;
            let style = ShapeStyle::from(&color).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(-0.3, *y), (n as f64 - 0.7, *y)],
                    8,
                    5,
                    style,
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
