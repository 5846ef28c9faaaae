//! `--plot FILE.svg`: the workload curves drawn as SVG (plotters' SVG backend; text is written as
//! SVG `<text>`, so no font library or system font is needed).
//!
//! Four panels: the CPU-bound job's speedup per worker count (threads, processes, and the ideal
//! line capped at the cores); the I/O-bound job's wall time and memory per wait against the number
//! of concurrent waits (log scales), threads against async; and the foreground's wake-up latency
//! under each background. Every measured point carries a bar: its 95 % interval (the memory panel:
//! minimum to maximum; the foreground: p50 to p99, with a cross at the maximum). Log axes are
//! labelled at round values (10, 100, 1,000 waits; 1 KiB, 10 KiB, 100 KiB …).

use super::ProbeError;
use super::curves::IoSide;
use super::foreground::Scenario;
use super::schema::Report;
use super::stats::{Bytes, Unit, thousands};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use std::error::Error;
use std::path::Path;

const THREADS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PROCESSES: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const ASYNC: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const IDEAL: RGBColor = RGBColor(0x99, 0x99, 0x99);
const IDLE: RGBColor = RGBColor(0x55, 0x55, 0x55);

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

/// Points of a curve, each with the low and high end of its bar.
type Series = Vec<(f64, f64)>;
type Bars = Vec<(f64, f64, f64)>;

/// One side of the I/O curve: each point's value and bar, for the points whose value a log axis can
/// show (a growth too small to register, 0 bytes, is left out).
fn io_series(
    report: &Report,
    pick: impl Fn(&IoSide, f64) -> (f64, f64, f64),
    threads: bool,
) -> (Series, Bars) {
    let mut line = Series::new();
    let mut bars = Bars::new();
    for p in &report.curves.io.points {
        let side = if threads {
            p.threads.as_ref()
        } else {
            p.async_.as_ref()
        };
        let Some(side) = side else { continue };
        let n = p.concurrency as f64;
        let (y, lo, hi) = pick(side, n);
        if y > 0.0 && y.is_finite() {
            line.push((n, y));
            bars.push((n, lo.max(y / 1e3), hi));
        }
    }
    (line, bars)
}

fn bounds(bars: &[&Bars]) -> (f64, f64) {
    let ys = bars
        .iter()
        .flat_map(|s| s.iter().flat_map(|&(_, lo, hi)| [lo, hi]))
        .filter(|y| *y > 0.0 && y.is_finite());
    let lo = ys.clone().fold(f64::INFINITY, f64::min);
    let hi = ys.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo / 2.0, hi * 2.0)
    } else {
        (1.0, 10.0)
    }
}

/// Round values for a log axis from `lo` to `hi`: 1, 10, 100 of a unit step (`steps`), or 1, 2, 5 of
/// them when a decade alone would give fewer than four labels.
pub(crate) fn log_ticks(lo: f64, hi: f64, steps: &[f64]) -> Vec<f64> {
    let mut decades = Vec::new();
    let mut fine = Vec::new();
    for &step in steps {
        for k in [1.0, 10.0, 100.0] {
            for m in [1.0, 2.0, 5.0] {
                let v = step * k * m;
                if v >= lo && v <= hi {
                    fine.push(v);
                    if m == 1.0 {
                        decades.push(v);
                    }
                }
            }
        }
    }
    let mut ticks = if decades.len() >= 4 { decades } else { fine };
    ticks.sort_by(f64::total_cmp);
    ticks.dedup_by(|a, b| (*a / *b - 1.0).abs() < 1e-9);
    ticks
}

/// Unit steps for byte ticks (1 B, 1 KiB, 1 MiB, 1 GiB) and time ticks in ms (1 µs … 1 s).
const BYTE_STEPS: [f64; 4] = [1.0, 1024.0, 1048576.0, 1073741824.0];
const MS_STEPS: [f64; 3] = [1e-3, 1.0, 1e3];

/// A tick label: a round value with its unit, no needless digits (`1 KiB`, `10 ms`, `500 µs`).
pub(crate) fn tick_label(v: f64, unit: Unit) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match unit {
        Unit::Bytes => {
            let b = Bytes(v).to_string();
            match b.split_once(' ') {
                Some((n, u)) => format!("{} {u}", trim(n.parse().unwrap_or(v))),
                None => b,
            }
        }
        Unit::Millis | Unit::Micros | Unit::Nanos => {
            let ns = match unit {
                Unit::Millis => v * 1e6,
                Unit::Micros => v * 1e3,
                _ => v,
            };
            if ns >= 1e9 {
                format!("{} s", trim(ns / 1e9))
            } else if ns >= 1e6 {
                format!("{} ms", trim(ns / 1e6))
            } else if ns >= 1e3 {
                format!("{} µs", trim(ns / 1e3))
            } else {
                format!("{} ns", trim(ns))
            }
        }
        Unit::MibPerSec => format!("{} MiB/s", trim(v)),
    }
}

/// A panel of the plot.
type Area<DB> = DrawingArea<DB, plotters::coord::Shift>;

/// A panel's chart: its caption, margin and label areas (`y_area` pixels for the y labels).
fn chart_on<'a, 'b, DB: DrawingBackend>(
    area: &'a Area<DB>,
    caption: &str,
    y_area: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_area);
    builder
}

/// Draws a vertical bar from `lo` to `hi` at `x`, with short caps.
fn draw_bars<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    bars: &Bars,
    color: RGBColor,
) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let style = color.mix(0.7).stroke_width(1);
    chart.draw_series(
        bars.iter()
            .map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], style)),
    )?;
    for y in [1, 2] {
        chart.draw_series(bars.iter().map(|&(x, lo, hi)| {
            let at = if y == 1 { lo } else { hi };
            EmptyElement::at((x, at)) + PathElement::new(vec![(-4, 0), (4, 0)], style)
        }))?;
    }
    Ok(())
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
    let root = SVGBackend::new(path, (1400, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let m = &report.machine;
    let title = format!(
        "martelli probe: {} ({} usable cores, tier {}); bars: 95 % intervals",
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.available_cores,
        m.tier.level
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let panels = root.split_evenly((2, 2));
    cpu_panel(report, &panels[0])?;
    io_panels(report, &panels[1], &panels[2])?;
    foreground_panel(report, &panels[3])?;
    root.present()?;
    Ok(())
}

fn cpu_panel<DB>(report: &Report, area: &Area<DB>) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let cpu = &report.curves.cpu.points;
    let side = |threads: bool| -> (Series, Bars) {
        cpu.iter()
            .map(|p| {
                let w = p.workers as f64;
                let (s, ci) = if threads {
                    (p.threads_speedup, p.threads_speedup_ci)
                } else {
                    (p.processes_speedup, p.processes_speedup_ci)
                };
                ((w, s), (w, ci[0], ci[1]))
            })
            .filter(|((_, s), _)| s.is_finite())
            .unzip()
    };
    let (threads, threads_bars) = side(true);
    let (procs, procs_bars) = side(false);
    let cores = report.machine.available_cores as f64;
    let ideal: Series = cpu
        .iter()
        .map(|p| (p.workers as f64, (p.workers as f64).min(cores)))
        .collect();
    let max_w = cpu.iter().map(|p| p.workers).max().unwrap_or(1) as f64;
    // The axis shows the curves and the ideal whole; bars that reach far beyond are cut.
    let max_s = threads
        .iter()
        .chain(&procs)
        .chain(&ideal)
        .map(|&(_, s)| s)
        .filter(|s| s.is_finite())
        .fold(1.0, f64::max)
        * 1.3;
    let clip = |b: &Bars| -> Bars {
        b.iter()
            .map(|&(x, lo, hi)| (x, lo.max(0.0), hi.min(max_s)))
            .collect()
    };
    let mut chart = chart_on(area, "CPU-bound job: speedup", 50)
        .build_cartesian_2d(0.5f64..max_w + 0.5, 0f64..max_s)?;
    chart
        .configure_mesh()
        .x_labels(cpu.len().max(2))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(12)
        .y_label_formatter(&|y| format!("{y:.1}×"))
        .x_desc("workers")
        .y_desc("speedup over 1 worker (×)")
        .draw()?;
    draw_bars(&mut chart, &clip(&threads_bars), THREADS)?;
    draw_bars(&mut chart, &clip(&procs_bars), PROCESSES)?;
    draw_lines(
        &mut chart,
        &[
            (&ideal, IDEAL, "ideal (capped at the cores)"),
            (&threads, THREADS, "threads"),
            (&procs, PROCESSES, "processes"),
        ],
    )?;
    Ok(())
}

fn io_panels<DB>(
    report: &Report,
    wall_area: &Area<DB>,
    memory_area: &Area<DB>,
) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let io = &report.curves.io;
    let max_n = io.points.iter().map(|p| p.concurrency).max().unwrap_or(10) as f64;
    let x_ticks: Vec<f64> = io.points.iter().map(|p| p.concurrency as f64).collect();
    let panels = [
        (
            wall_area,
            format!("I/O-bound job: wall time ({} ms waits)", io.wait_ms),
            Unit::Millis,
            "wall time",
            &MS_STEPS[..],
            io_series(
                report,
                |s, _| (s.wall.median, s.wall.ci_low, s.wall.ci_high),
                true,
            ),
            io_series(
                report,
                |s, _| (s.wall.median, s.wall.ci_low, s.wall.ci_high),
                false,
            ),
        ),
        (
            memory_area,
            "I/O-bound job: memory per wait (bars: min to max)".to_owned(),
            Unit::Bytes,
            "resident memory per wait",
            &BYTE_STEPS[..],
            io_series(
                report,
                |s, n| (s.memory.median / n, s.memory.min / n, s.memory.max / n),
                true,
            ),
            io_series(
                report,
                |s, n| (s.memory.median / n, s.memory.min / n, s.memory.max / n),
                false,
            ),
        ),
    ];
    for (area, caption, unit, y_desc, steps, (t, tb), (a, ab)) in panels {
        let (lo, hi) = bounds(&[&tb, &ab]);
        let lo = lo.max(1e-3);
        let mut chart = chart_on(area, &caption, 70).build_cartesian_2d(
            (5f64..max_n * 2.0)
                .log_scale()
                .with_key_points(x_ticks.clone()),
            (lo..hi)
                .log_scale()
                .with_key_points(log_ticks(lo, hi, steps)),
        )?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| thousands(x.round() as u64))
            .y_label_formatter(&|y| tick_label(*y, unit))
            .x_desc("concurrent waits")
            .y_desc(y_desc)
            .draw()?;
        draw_bars(&mut chart, &tb, THREADS)?;
        draw_bars(&mut chart, &ab, ASYNC)?;
        draw_lines(
            &mut chart,
            &[
                (&t, THREADS, "threads (1 per wait)"),
                (&a, ASYNC, "async (1 thread)"),
            ],
        )?;
    }
    Ok(())
}

fn foreground_panel<DB>(report: &Report, area: &Area<DB>) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let f = &report.foreground;
    let scenarios: [(&str, &Option<Scenario>, RGBColor); 5] = [
        ("idle", &f.idle, IDLE),
        ("processes, nice 0", &f.processes_nice_0, PROCESSES),
        ("processes, nice 10", &f.processes_nice_10, PROCESSES),
        ("processes, nice 19", &f.processes_nice_19, PROCESSES),
        ("threads", &f.threads, THREADS),
    ];
    let points: Vec<(f64, &Scenario, RGBColor)> = scenarios
        .iter()
        .enumerate()
        .filter_map(|(i, (_, s, c))| s.as_ref().map(|s| (i as f64 + 1.0, s, *c)))
        .collect();
    let bars: Bars = points
        .iter()
        .map(|&(x, s, _)| (x, s.latency.p50, s.latency.max))
        .collect();
    let (lo, hi) = bounds(&[&bars]);
    let lo = lo.max(0.1);
    let names: Vec<&str> = scenarios.iter().map(|(n, ..)| *n).collect();
    let caption = format!(
        "Foreground: wake-up latency of 1 ms sleeps ({} background workers)",
        f.background_workers
    );
    let mut chart = chart_on(area, &caption, 70).build_cartesian_2d(
        0.5f64..5.5,
        (lo..hi)
            .log_scale()
            .with_key_points(log_ticks(lo, hi, &[1e-3, 1.0, 1e3])),
    )?;
    chart
        .configure_mesh()
        .x_labels(11)
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            // Labels fall every half step: only whole ones name a scenario.
            if (x - x.round()).abs() > 1e-6 {
                return String::new();
            }
            let i = x.round() as usize;
            names
                .get(i.wrapping_sub(1))
                .copied()
                .unwrap_or("")
                .to_owned()
        })
        .y_label_formatter(&|y| tick_label(*y, Unit::Micros))
        .x_desc("background")
        .y_desc("late by (p50 to p99, × at max)")
        .draw()?;
    for &(x, s, color) in &points {
        let l = &s.latency;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, l.p50), (x, l.p99)],
            color.stroke_width(6),
        )))?;
        chart.draw_series(std::iter::once(Circle::new((x, l.p50), 4, color.filled())))?;
        chart.draw_series(std::iter::once(Cross::new(
            (x, l.max),
            5,
            color.stroke_width(2),
        )))?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("p50 (dot) to p99 (bar)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], IDLE.stroke_width(6)));
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("max")
        .legend(|(x, y)| Cross::new((x + 10, y), 5, IDLE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_round_values() {
        let kib = |k: f64| k * 1024.0;
        assert_eq!(
            log_ticks(300.0, kib(3000.0), &BYTE_STEPS),
            [kib(1.0), kib(10.0), kib(100.0), kib(1024.0)]
        );
        // A range under four decades gets 1, 2, 5 steps.
        assert_eq!(log_ticks(8.0, 120.0, &MS_STEPS), [10.0, 20.0, 50.0, 100.0]);
        assert_eq!(tick_label(kib(10.0), Unit::Bytes), "10 KiB");
        assert_eq!(tick_label(kib(1024.0), Unit::Bytes), "1 MiB");
        assert_eq!(tick_label(100.0, Unit::Millis), "100 ms");
        assert_eq!(tick_label(2000.0, Unit::Millis), "2 s");
        assert_eq!(tick_label(500.0, Unit::Micros), "500 µs");
        assert_eq!(tick_label(0.05, Unit::Millis), "50 µs");
    }

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
