//! `--plot FILE`: measured against model as an SVG line chart, drawn with
//! plotters' SVG backend (no bitmap backend, no font rasteriser: an SVG
//! viewer lays out the text, plotters only estimates its size).
//!
//! x is n, y is T per round in µs. Each workload has one colour (blue for
//! all-to-all, orange for RPC); the model is dashed, the serial measurement
//! solid with dots, the pipelined measurement (everything in flight) a
//! lighter solid line.

use super::Row;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const ALL_TO_ALL: RGBColor = RGBColor(31, 119, 180);
const ALL_TO_ALL_LIGHT: RGBColor = RGBColor(120, 170, 220);
const RPC: RGBColor = RGBColor(230, 110, 0);
const RPC_LIGHT: RGBColor = RGBColor(250, 175, 100);

/// How a line is drawn.
#[derive(Clone, Copy)]
enum Stroke {
    /// Dashed: what the model predicts.
    Model,
    /// Thick, with a dot per point: serial rounds, as measured.
    Serial,
    /// Thin: everything in flight, as measured.
    Pipelined,
}

/// The chart as an SVG document, titled `title`.
pub(super) fn svg(rows: &[Row], title: &str) -> anyhow::Result<String> {
    // label, colour, stroke, value: one line of the chart each.
    type Value = fn(&Row) -> f64;
    let series: [(&str, RGBColor, Stroke, Value); 6] = [
        (
            "all-to-all, model n(n-1)/2·(ts+tr+tp)",
            ALL_TO_ALL,
            Stroke::Model,
            |r| r.all_to_all.model_us,
        ),
        (
            "all-to-all, measured serial (p50)",
            ALL_TO_ALL,
            Stroke::Serial,
            |r| r.all_to_all.measured_p50_us,
        ),
        (
            "all-to-all, measured all in flight (p50)",
            ALL_TO_ALL_LIGHT,
            Stroke::Pipelined,
            |r| r.all_to_all.pipelined_p50_us,
        ),
        ("RPC, model n·(ts+tr+tp)", RPC, Stroke::Model, |r| {
            r.rpc.model_us
        }),
        ("RPC, measured serial (p50)", RPC, Stroke::Serial, |r| {
            r.rpc.measured_p50_us
        }),
        (
            "RPC, measured all in flight (p50)",
            RPC_LIGHT,
            Stroke::Pipelined,
            |r| r.rpc.pipelined_p50_us,
        ),
    ];
    let (first, last) = match (rows.first(), rows.last()) {
        (Some(a), Some(b)) => (a.n as i32, b.n as i32),
        _ => anyhow::bail!("nothing to plot: no node count was measured"),
    };
    let top = series
        .iter()
        .flat_map(|s| rows.iter().map(s.3))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.08;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        // One spare n on each side, so the end points and their dots are
        // not cut by the frame (and a single n still has an axis).
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d((first - 1)..(last + 1), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("n (nodes)")
            .y_desc("T per round (µs)")
            .x_labels(usize::try_from(last - first + 3).unwrap_or(10).min(20))
            .y_labels(10)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (label, color, how, value) in series {
            let points: Vec<(i32, f64)> = rows
                .iter()
                .map(|r| (i32::try_from(r.n).unwrap_or(i32::MAX), value(r)))
                .collect();
            let width = if matches!(how, Stroke::Serial) { 3 } else { 2 };
            let style = color.stroke_width(width);
            match how {
                Stroke::Model => chart
                    .draw_series(DashedLineSeries::new(points, 8, 6, style))?
                    .label(label)
                    .legend(move |(x, y)| {
                        DashedPathElement::new(vec![(x, y), (x + 24, y)], 8, 6, style)
                    }),
                Stroke::Serial => chart
                    .draw_series(LineSeries::new(points, style).point_size(4))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style)),
                Stroke::Pipelined => chart
                    .draw_series(LineSeries::new(points, style))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style)),
            };
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
    }
    Ok(out)
}
