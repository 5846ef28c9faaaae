//! `--plot FILE.svg`: the workload curves drawn as SVG (plotters' SVG backend; text is written as
//! SVG `<text>`, so no font library or system font is needed).
//!
//! Three panels: the CPU-bound job's speedup per worker count (threads, processes, and the ideal
//! line capped at the cores), and the I/O-bound job's wall time and memory per wait against the
//! number of concurrent waits (log scales), threads against async.

use super::ProbeError;
use super::curves::IoSide;
use super::schema::Report;
use super::stats::{Human, Unit};
use plotters::prelude::*;
use std::error::Error;
use std::path::Path;

const THREADS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PROCESSES: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const ASYNC: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const IDEAL: RGBColor = RGBColor(0x99, 0x99, 0x99);

/// Checks, before the probe runs, that `path` can take the plot.
pub(crate) fn check_path(path: &Path) -> Result<(), ProbeError> {
    let fail = |reason: &str| ProbeError::Plot {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let is_svg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !is_svg {
        return Err(fail("the plot is SVG: give a file name that ends in .svg"));
    }
    if path.is_dir() {
        return Err(fail(
            "it is a directory; give a file name that ends in .svg",
        ));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return Err(fail("its directory does not exist; create it first"));
    }
    Ok(())
}

/// Draws the curves of `report` into `path`.
pub(crate) fn draw(report: &Report, path: &Path) -> Result<(), ProbeError> {
    draw_inner(report, path).map_err(|e| ProbeError::Plot {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

type Series = Vec<(f64, f64)>;

fn io_series(report: &Report, pick: impl Fn(&IoSide, f64) -> f64, threads: bool) -> Series {
    report
        .curves
        .io
        .points
        .iter()
        .filter_map(|p| {
            let side = if threads {
                p.threads.as_ref()
            } else {
                p.async_.as_ref()
            }?;
            let n = p.concurrency as f64;
            let y = pick(side, n);
            // A log axis cannot show zero: a growth too small to register is left out.
            (y > 0.0 && y.is_finite()).then_some((n, y))
        })
        .collect()
}

fn bounds(series: &[&Series]) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.iter().map(|&(_, y)| y));
    let lo = ys.clone().fold(f64::INFINITY, f64::min);
    let hi = ys.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo / 2.0, hi * 2.0)
    } else {
        (1.0, 10.0)
    }
}

/// Draws each series as a line with a dot per point, and the legend in the upper left.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: &[(&Series, RGBColor, &str)],
) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for &(series, color, label) in lines {
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(series.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_inner(report: &Report, path: &Path) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let m = &report.machine;
    let title = format!(
        "martelli probe: {} ({} usable cores, tier {})",
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.available_cores,
        m.tier.level
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let panels = root.split_evenly((1, 3));

    // CPU speedup.
    let cpu = &report.curves.cpu.points;
    let threads: Series = cpu
        .iter()
        .map(|p| (p.workers as f64, p.threads_speedup))
        .collect();
    let procs: Series = cpu
        .iter()
        .map(|p| (p.workers as f64, p.processes_speedup))
        .collect();
    let cores = m.available_cores as f64;
    let ideal: Series = cpu
        .iter()
        .map(|p| (p.workers as f64, (p.workers as f64).min(cores)))
        .collect();
    let max_w = cpu.iter().map(|p| p.workers).max().unwrap_or(1) as f64;
    let max_s = threads
        .iter()
        .chain(&procs)
        .chain(&ideal)
        .map(|&(_, s)| s)
        .filter(|s| s.is_finite())
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("CPU-bound job: speedup", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..max_w + 0.5, 0f64..max_s * 1.2)?;
    chart
        .configure_mesh()
        .x_labels(cpu.len().max(2))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("workers")
        .y_desc("speedup over 1 worker (×)")
        .draw()?;
    draw_lines(
        &mut chart,
        &[
            (&ideal, IDEAL, "ideal (capped at the cores)"),
            (&threads, THREADS, "threads"),
            (&procs, PROCESSES, "processes"),
        ],
    )?;

    // I/O: time and memory per wait, log-log.
    let max_n = report
        .curves
        .io
        .points
        .iter()
        .map(|p| p.concurrency)
        .max()
        .unwrap_or(10) as f64;
    let panels_io = [
        (
            &panels[1],
            format!(
                "I/O-bound job: wall time ({} ms waits)",
                report.curves.io.wait_ms
            ),
            Unit::Millis,
            "wall time",
            io_series(report, |s, _| s.wall.median, true),
            io_series(report, |s, _| s.wall.median, false),
        ),
        (
            &panels[2],
            "I/O-bound job: memory per wait".to_owned(),
            Unit::Bytes,
            "resident memory per wait",
            io_series(report, |s, n| s.memory.median / n, true),
            io_series(report, |s, n| s.memory.median / n, false),
        ),
    ];
    for (area, caption, unit, y_desc, t, a) in panels_io {
        let (lo, hi) = bounds(&[&t, &a]);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (5f64..max_n * 2.0).log_scale(),
                (lo.max(1e-3)..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_labels(6)
            .y_label_formatter(&|y| Human(*y, unit).to_string())
            .x_desc("concurrent waits")
            .y_desc(y_desc)
            .draw()?;
        draw_lines(
            &mut chart,
            &[
                (&t, THREADS, "threads (1 per wait)"),
                (&a, ASYNC, "async (1 thread)"),
            ],
        )?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_paths_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(check_path(&dir.path().join("curves.svg")).is_ok());
        assert!(check_path(&dir.path().join("curves.SVG")).is_ok());
        let err = check_path(&dir.path().join("curves.png")).expect_err("png");
        assert!(err.to_string().contains(".svg"), "{err}");
        let err = check_path(&dir.path().join("no/such/dir/c.svg")).expect_err("no dir");
        assert!(err.to_string().contains("does not exist"), "{err}");
        std::fs::create_dir(dir.path().join("d.svg")).expect("mkdir");
        assert!(check_path(&dir.path().join("d.svg")).is_err());
        assert!(check_path(Path::new("relative.svg")).is_ok());
    }
}
