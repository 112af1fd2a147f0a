//! The SVG plot of a [`History`]: loss on the left, accuracy on the right, epochs along x.

use crate::history::History;
use kiln_autograd::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// At most this many points of the per-step loss curve are drawn.
const MAX_STEP_POINTS: usize = 2000;

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("plot: {e}"))
}

/// The per-step losses as `(epoch position, moving average)` points, thinned to at most
/// [`MAX_STEP_POINTS`]. The window is a twentieth of an epoch.
fn smoothed_steps(h: &History) -> Vec<(f64, f64)> {
    let spe = h.steps_per_epoch.max(1);
    let w = (spe / 20).max(1);
    let stride = h.step_losses.len().div_ceil(MAX_STEP_POINTS).max(1);
    let (mut sum, mut n) = (0.0f64, 0usize);
    let mut out = Vec::with_capacity(h.step_losses.len() / stride + 1);
    for (i, &l) in h.step_losses.iter().enumerate() {
        if l.is_finite() {
            sum += l as f64;
            n += 1;
        }
        if i >= w {
            let old = h.step_losses[i - w];
            if old.is_finite() {
                sum -= old as f64;
                n -= 1;
            }
        }
        if n > 0 && (i % stride == 0 || i + 1 == h.step_losses.len()) {
            out.push(((i + 1) as f64 / spe as f64, sum / n as f64));
        }
    }
    out
}

pub(crate) fn plot_history(h: &History, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(550);

    let steps = smoothed_steps(h);
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let train_loss: Vec<(f64, f64)> =
        h.epochs.iter().filter_map(|e| Some((e.epoch as f64, finite(Some(e.train_loss))?))).collect();
    let val_loss: Vec<(f64, f64)> =
        h.epochs.iter().filter_map(|e| Some((e.epoch as f64, finite(e.val_loss())?))).collect();
    let pct = |v: Option<f64>| finite(v).map(|v| 100.0 * v);
    let train_acc: Vec<(f64, f64)> =
        h.epochs.iter().filter_map(|e| Some((e.epoch as f64, pct(e.train_accuracy)?))).collect();
    let val_acc: Vec<(f64, f64)> =
        h.epochs.iter().filter_map(|e| Some((e.epoch as f64, pct(e.val_accuracy())?))).collect();

    let last_step = steps.last().map_or(0.0, |p| p.0);
    let x_max = (h.epochs.len() as f64).max(last_step).max(1.0);
    let y_max = steps.iter().chain(&train_loss).chain(&val_loss).map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.05;

    let series = |chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<_, _>>,
                  pts: &[(f64, f64)],
                  color: RGBColor,
                  label: &str,
                  dashed_alpha: Option<f64>|
     -> Result<()> {
        if pts.is_empty() {
            return Ok(());
        }
        let style = match dashed_alpha {
            Some(a) => color.mix(a).stroke_width(1),
            None => color.stroke_width(2),
        };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if dashed_alpha.is_none() {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
        Ok(())
    };

    let mut chart = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").y_desc("loss").draw().map_err(plot_err)?;
    series(&mut chart, &steps, BLUE, "train (per step, smoothed)", Some(0.35))?;
    series(&mut chart, &train_loss, BLUE, "train (epoch mean)", None)?;
    series(&mut chart, &val_loss, RED, "validation", None)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)?;

    let lo = train_acc.iter().chain(&val_acc).map(|p| p.1).fold(100.0f64, f64::min);
    let a_min = if lo.is_finite() { (lo - 2.0).clamp(0.0, 99.0).floor() } else { 0.0 };
    let mut chart = ChartBuilder::on(&right)
        .caption("accuracy (%)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, a_min..100f64)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").y_desc("accuracy (%)").draw().map_err(plot_err)?;
    series(&mut chart, &train_acc, BLUE, "train", None)?;
    series(&mut chart, &val_acc, RED, "validation", None)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}
