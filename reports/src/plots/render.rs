//! Drawing a [`PlotSpec`] with plotters, onto any backend (SVG string or PNG file).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::data::{Chart, PlotSpec};
use super::font::FONT_FAMILY;

/// Pixel size of every chart.
pub const PLOT_SIZE: (u32, u32) = (960, 540);

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The series palette: distinguishable, and readable on white.
fn series_color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

/// x position of quantile `q` on the `log10(1/(1-q))` axis.
fn percentile_x(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The axis label of `x = log10(1/(1-q))`: 50%, 90%, 99%, 99.9%, 99.99%, …
fn percentile_label(x: &f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

fn sparse_percentile_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        percentile_label(&x.round())
    } else if (x - 0.3).abs() < 1e-6 {
        percentile_label(&2f64.log10())
    } else {
        String::new()
    }
}

pub(crate) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &PlotSpec) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    match &spec.chart {
        Chart::Percentiles { series } => draw_percentiles(root, &spec.title, series),
        Chart::Histogram { buckets } => draw_histogram(root, &spec.title, buckets),
        Chart::Throughput { bars } => draw_throughput(root, &spec.title, bars),
        Chart::Memory { live, reserved } => draw_memory(root, &spec.title, live, reserved),
    }?;
    root.present().map_err(err)
}

fn caption_style() -> TextStyle<'static> {
    (FONT_FAMILY, 22).into_font().into()
}

fn draw_percentiles<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(q, _)| percentile_x(q)))
        .fold(2.0_f64, f64::max)
        .ceil();
    let max_ns = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .fold(10.0_f64, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption_style())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, (1.0..max_ns * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ns)")
        .disable_x_mesh()
        // Ticks every 0.1 of log10(1/(1-p)); labels only at 0%, 50% (x = 0.301, drawn at
        // 0.3), 90%, 99%, 99.9%, ...
        .x_labels(max_x as usize * 10 + 1)
        .x_label_formatter(&sparse_percentile_label)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (backend, points)) in series.iter().enumerate() {
        let color = series_color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(q, v)| (percentile_x(q), v.max(1.0))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(backend.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    buckets: &[(f64, f64, u64)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let max_ns = buckets.iter().map(|b| b.1).fold(2.0_f64, f64::max);
    let max_count = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption_style())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.5..max_ns * 2.0).log_scale(),
            0u64..max_count + max_count / 10 + 1,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ns, power-of-two buckets)")
        .y_desc("operations")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(buckets.iter().map(|&(lo, hi, count)| {
            Rectangle::new([(lo, 0), (hi, count)], series_color(0).mix(0.8).filled())
        }))
        .map_err(err)?;
    Ok(())
}

fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    bars: &[(String, f64, f64, f64)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let n = bars.len().max(1);
    let max_ops = bars.iter().map(|b| b.3.max(b.1)).fold(1.0_f64, f64::max);
    let (scale, unit) = if max_ops >= 1e6 {
        (1e6, "Mops/s")
    } else {
        (1e3, "kops/s")
    };
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let label = move |v: &SegmentValue<usize>| -> String {
        match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption_style())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        // `into_segmented` adds a segment after the range's last value: end at n - 1.
        .build_cartesian_2d(
            (0..(n - 1).max(1)).into_segmented(),
            0.0..max_ops / scale * 1.15,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(format!("throughput ({unit})"))
        .x_label_formatter(&label)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.1 / scale),
                ],
                series_color(i).mix(0.8).filled(),
            );
            bar.set_margin(0, 0, 24, 24);
            bar
        }))
        .map_err(err)?;
    // Whiskers: min to max over runs, with caps 16 px wide.
    let style = BLACK.stroke_width(2);
    for (i, b) in bars.iter().enumerate() {
        let (x, lo, hi) = (SegmentValue::CenterOf(i), b.2 / scale, b.3 / scale);
        let cap = |y: f64| {
            EmptyElement::at((x.clone(), y)) + PathElement::new(vec![(-8, 0), (8, 0)], style)
        };
        chart
            .draw_series([PathElement::new(
                vec![(x.clone(), lo), (x.clone(), hi)],
                style,
            )])
            .map_err(err)?;
        chart.draw_series([cap(lo), cap(hi)]).map_err(err)?;
    }
    Ok(())
}

fn draw_memory<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    live: &[(f64, f64)],
    reserved: &[(String, Vec<(f64, f64)>)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = live
        .iter()
        .chain(reserved.iter().flat_map(|(_, p)| p.iter()));
    let (max_seq, max_bytes) = all.fold((1.0_f64, 1.0_f64), |(s, b), &(x, y)| (s.max(x), b.max(y)));
    let (scale, unit) = if max_bytes >= 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max_bytes >= 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else {
        (1024.0, "KiB")
    };
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption_style())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_seq, 0.0..max_bytes / scale * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("event (global sequence number)")
        .y_desc(format!("bytes ({unit})"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            live.iter().map(|&(x, y)| (x, y / scale)),
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("live (ideal)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (i, (backend, points)) in reserved.iter().enumerate() {
        let color = series_color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y)| (x, y / scale)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{backend} reserved"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        let labels: Vec<String> = [0.0, 2f64.log10(), 1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(percentile_label)
            .collect();
        assert_eq!(labels, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"]);
        assert!((percentile_x(0.999) - 3.0).abs() < 1e-9);
    }
}
