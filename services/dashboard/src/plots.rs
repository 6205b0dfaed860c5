//! SVG plots drawn with `plotters`: a loss landscape per parameter, the loss histogram and the
//! comparison scatter of two jobs. One colour per target, from plotters' 99-colour palette, in
//! the same order on every plot of a page. Losses arrive already on the drawn scale (log10 when
//! the caller chose a log scale); a log axis is labelled with the values it stands for (`1e-2`),
//! and every tick as people write numbers (`0`, never `-0`; counts without decimals).

use plotters::prelude::*;

/// Width and height of a landscape plot, in pixels.
const SMALL: (u32, u32) = (380, 260);
/// Width and height of the histogram and comparison plots.
const WIDE: (u32, u32) = (620, 300);

/// The points of one target.
#[derive(Debug, Clone)]
pub struct Series {
    /// The target's name (legend).
    pub label: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// An empty series named `label`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            points: Vec::new(),
        }
    }
}

/// The colour of the `index`-th target.
pub fn colour(index: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
    RGBColor(r, g, b)
}

/// The CSS hex of the `index`-th target's colour (for legends outside the plots).
pub fn colour_hex(index: usize) -> String {
    let RGBColor(r, g, b) = colour(index);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// `lo..hi` widened a little, and to a unit when empty or a point.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = (lo.abs() * 0.05).max(0.5);
        return (lo - pad)..(hi + pad);
    }
    let pad = (hi - lo) * 0.04;
    (lo - pad)..(hi + pad)
}

fn bounds<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// Whether losses from `lo` to `hi` are drawn on a log scale by default: all positive and
/// spanning over 1000×. Every loss axis of the dashboard follows this one rule.
pub fn spans_log_scale(lo: f64, hi: f64) -> bool {
    lo > 0.0 && lo.is_finite() && hi / lo > 1e3
}

fn loss_label(log: bool, what: &str) -> String {
    if log { format!("{what} (log scale)") } else { what.to_owned() }
}

/// A tick label as people write the number: `0` (never `-0`), `0.25`, `1200`, `3.5e-5`.
pub fn tick(value: &f64) -> String {
    let value = *value;
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() { "0".into() } else { value.to_string() };
    }
    let magnitude = value.abs();
    let text = if (1e-3..1e6).contains(&magnitude) {
        // Six significant digits, trailing zeros dropped (ticks are round numbers).
        let decimals = (5 - magnitude.log10().floor() as i32).max(0) as usize;
        let fixed = format!("{value:.decimals$}");
        if fixed.contains('.') { fixed.trim_end_matches('0').trim_end_matches('.').to_owned() } else { fixed }
    } else {
        let scientific = format!("{value:.3e}");
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        format!("{mantissa}e{exponent}")
    };
    if text == "-0" { "0".into() } else { text }
}

/// A tick label of a log10 axis, as the value it stands for: `1e-2` for -2, `3.2e-2` for -1.5.
pub fn log_tick(exponent: &f64) -> String {
    let rounded = exponent.round();
    if (exponent - rounded).abs() < 1e-9 {
        format!("1e{}", rounded as i64)
    } else {
        let scientific = format!("{:.1e}", 10f64.powf(*exponent));
        scientific.replace(".0e", "e")
    }
}

/// A tick label of a count axis: whole numbers only (a tick between two counts has none).
pub fn count_tick(value: &f64) -> String {
    let rounded = value.round();
    if (value - rounded).abs() < 1e-9 { format!("{}", rounded as i64) } else { String::new() }
}

/// The tick labeller of a loss axis.
fn loss_ticks(log: bool) -> fn(&f64) -> String {
    if log { log_tick } else { tick }
}

fn failed(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// Draws the legend of a chart with several targets.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, DB, CT>, position: SeriesLabelPosition) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(failed)
}

/// One plot of `size` as SVG: a white frame with `caption` and the margins and label areas
/// every plot shares; `draw` builds the chart's coordinates on the builder and draws.
fn render(size: (u32, u32), caption: &str, draw: impl FnOnce(&mut ChartBuilder<'_, '_, SVGBackend<'_>>) -> Result<(), String>) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(caption, ("sans-serif", 15)).margin(8).x_label_area_size(32).y_label_area_size(56);
        draw(&mut builder)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// A scatter of loss against one parameter, one colour per target, each target's lowest loss
/// ringed; with `log_x` the points' x are log10 of the parameter.
pub fn landscape(param: &str, series: &[Series], log_loss: bool, log_x: bool) -> Result<String, String> {
    let xs = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| &p.0)));
    let ys = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| &p.1)));
    render(SMALL, param, |builder| {
        let mut chart = builder
            .build_cartesian_2d(padded(xs.0, xs.1), padded(ys.0, ys.1))
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc(loss_label(log_x, param))
            .y_desc(loss_label(log_loss, "loss"))
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&loss_ticks(log_x))
            .y_label_formatter(&loss_ticks(log_loss))
            .light_line_style(WHITE)
            .draw()
            .map_err(failed)?;
        let drawn: usize = series.iter().map(|s| s.points.len()).sum();
        let radius = if drawn <= 500 { 3 } else { 2 };
        for (index, one) in series.iter().enumerate() {
            let colour = colour(index);
            chart
                .draw_series(one.points.iter().map(|&point| Circle::new(point, radius, colour.mix(0.55).filled())))
                .map_err(failed)?
                .label(one.label.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
            // Ring the target's lowest loss, so the best set can be found on every plot.
            if let Some(&best) = one.points.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
                chart
                    .draw_series(std::iter::once(Circle::new(best, 6, colour.stroke_width(2))))
                    .map_err(failed)?;
            }
        }
        if series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

/// Bins of a histogram: 40 equal bins over all values; each series' counts per bin.
fn bin(series: &[(&str, Vec<f64>)]) -> (f64, f64, Vec<Vec<u64>>) {
    const BINS: usize = 40;
    let (lo, hi) = bounds(series.iter().flat_map(|(_, v)| v.iter()));
    let width = if hi > lo { (hi - lo) / BINS as f64 } else { 1.0 };
    let counts = series
        .iter()
        .map(|(_, values)| {
            let mut counts = vec![0u64; BINS];
            for v in values.iter().filter(|v| v.is_finite()) {
                let at = (((v - lo) / width) as usize).min(BINS - 1);
                counts[at] += 1;
            }
            counts
        })
        .collect();
    (lo, width, counts)
}

/// The loss histogram: every row's loss, one translucent layer per target.
pub fn histogram(series: &[(&str, Vec<f64>)], log_loss: bool) -> Result<String, String> {
    let (lo, width, counts) = bin(series);
    let bins = counts.first().map_or(0, Vec::len);
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    render(WIDE, "Loss distribution", |builder| {
        let mut chart = builder
            .build_cartesian_2d(lo..(lo + width * bins as f64), 0.0..top * 1.05)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc(loss_label(log_loss, "loss"))
            .y_desc("rows")
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&loss_ticks(log_loss))
            .y_label_formatter(&count_tick)
            .light_line_style(WHITE)
            .draw()
            .map_err(failed)?;
        for (index, ((label, _), counts)) in series.iter().zip(&counts).enumerate() {
            let colour = colour(index);
            chart
                .draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, &c)| {
                    let x0 = lo + width * b as f64;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], colour.mix(0.45).filled())
                }))
                .map_err(failed)?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], colour.filled()));
        }
        if series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

/// Two jobs' losses on shared parameter sets: loss_a across, loss_b up, with the diagonal
/// where they agree.
pub fn comparison(job_a: &str, job_b: &str, series: &[Series], log_loss: bool) -> Result<String, String> {
    let all = bounds(series.iter().flat_map(|s| s.points.iter().flat_map(|p| [&p.0, &p.1])));
    let range = padded(all.0, all.1);
    render(WIDE, "Loss of B against loss of A", |builder| {
        let mut chart = builder
            .build_cartesian_2d(range.clone(), range.clone())
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc(loss_label(log_loss, &format!("loss in {job_a}")))
            .y_desc(loss_label(log_loss, &format!("loss in {job_b}")))
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&loss_ticks(log_loss))
            .y_label_formatter(&loss_ticks(log_loss))
            .light_line_style(WHITE)
            .draw()
            .map_err(failed)?;
        chart
            .draw_series(LineSeries::new([(range.start, range.start), (range.end, range.end)], BLACK.mix(0.35)))
            .map_err(failed)?;
        for (index, one) in series.iter().enumerate() {
            let colour = colour(index);
            chart
                .draw_series(one.points.iter().map(|&point| Circle::new(point, 2, colour.mix(0.6).filled())))
                .map_err(failed)?
                .label(one.label.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        if series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_take_a_log_scale_only_when_positive_and_spanning_over_a_thousandfold() {
        assert!(spans_log_scale(1e-4, 1.0));
        assert!(!spans_log_scale(1.0, 999.0));
        assert!(!spans_log_scale(0.0, 1e9), "a zero loss has no logarithm");
        assert!(!spans_log_scale(f64::INFINITY, f64::NEG_INFINITY), "no loss at all");
    }

    #[test]
    fn plots_are_svg_with_one_mark_per_point_and_escaped_text() {
        let mut a = Series::new("incidence:<weekly>");
        a.points = vec![(0.1, 1.0), (0.2, 0.5), (0.3, 0.25)];
        let mut b = Series::new("deaths");
        b.points = vec![(0.15, 2.0)];
        let svg = landscape("β & γ", &[a.clone(), b], false, false).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // three points of the first target, one of the second, a ring on each best, two legend marks
        assert_eq!(svg.matches("<circle").count(), 8, "{svg}");
        assert!(svg.contains("β &amp; γ") && svg.contains("incidence:&lt;weekly&gt;"), "{svg}");
        assert!(!svg.contains("<weekly>"));

        let one = landscape("x", &[Series::new("t")], true, false).unwrap();
        assert!(one.contains("loss (log scale)"));

        let (lo, width, counts) = bin(&[("t", vec![0.0, 1.0, 2.0, 4.0])]);
        assert_eq!((lo, width), (0.0, 0.1));
        assert_eq!(counts[0].iter().sum::<u64>(), 4);
        assert_eq!((counts[0][0], counts[0][10], counts[0][20], counts[0][39]), (1, 1, 1, 1));
        assert!(histogram(&[("t", vec![1.0, 1.0])], false).unwrap().contains("<rect"));
        assert!(comparison("a", "b", &[a], false).unwrap().contains("<polyline"));
    }

    /// The text of every `<text>` element of an SVG.
    fn labels(svg: &str) -> Vec<String> {
        svg.split("<text").skip(1).filter_map(|t| t.split_once('>').and_then(|(_, rest)| rest.split_once("</text>")).map(|(text, _)| text.trim().to_owned())).collect()
    }

    #[test]
    fn ticks_read_as_people_write_numbers() {
        for (value, text) in [(0.0, "0"), (-0.0, "0"), (0.25, "0.25"), (-1.5, "-1.5"), (1200.0, "1200"), (0.1 + 0.2, "0.3"), (3.5e-5, "3.5e-5"), (2.0e7, "2e7"), (-1e-9, "-1e-9")] {
            assert_eq!(tick(&value), text, "{value}");
        }
        for (exponent, text) in [(-2.0, "1e-2"), (0.0, "1e0"), (3.0, "1e3"), (-1.5, "3.2e-2")] {
            assert_eq!(log_tick(&exponent), text, "{exponent}");
        }
        assert_eq!((count_tick(&5.0), count_tick(&2.5)), ("5".to_owned(), String::new()));
        // A landscape around zero, a histogram of counts, and a log-scale landscape, as drawn.
        let mut around_zero = Series::new("t");
        around_zero.points = vec![(-0.2, 1.0), (0.0, 0.5), (0.2, 0.25)];
        let drawn = labels(&landscape("x", &[around_zero], false, false).unwrap());
        assert!(!drawn.iter().any(|l| l == "-0" || l == "-0.0"), "{drawn:?}");
        let counts = labels(&histogram(&[("t", vec![1.0, 1.0, 2.0, 3.0, 3.0, 3.0])], false).unwrap());
        assert!(!counts.iter().any(|l| l.ends_with(".0")), "{counts:?}");
        let mut spread = Series::new("t");
        spread.points = vec![(0.1, -4.0), (0.2, -2.0), (0.3, 0.0)];
        let log = labels(&landscape("x", &[spread], true, false).unwrap());
        assert!(log.iter().any(|l| l == "1e-2"), "{log:?}");
        assert!(!log.iter().any(|l| l.starts_with("-2")), "{log:?}");
    }
}
