//! Reporting finished jobs: output, joblog and the progress bar.

use super::tally::{MAX_FAILED_EXIT, percent};
use super::*;

/// Prints, logs and shows progress for finished jobs. Slots report to it under a lock, so no
/// thread hand-off (and no wake-up of another thread) is paid per job.
pub(super) struct Reporter {
    print: Print,
    printer: Printer,
    joblog: Option<Joblog>,
    bar: Option<ProgressBar>,
    own_error: Option<RunError>,
    stdout_closed: bool,
}

impl Reporter {
    pub(super) fn new(config: &Config, joblog: Option<Joblog>, total: Option<u64>) -> Self {
        let print = match config.output {
            // As GNU parallel: output stored by --results is not printed too.
            OutputMode::Group | OutputMode::LineBuffer if config.results.is_some() => {
                Print::Nothing
            }
            OutputMode::Group => Print::Grouped { tag: config.tag },
            OutputMode::Json => Print::Json,
            OutputMode::LineBuffer | OutputMode::Ungroup => Print::Nothing,
        };
        Reporter {
            print,
            printer: Printer::new(print, config.keep_order, config.results.clone())
                .verbose(config.verbose)
                .files(config.files.clone())
                .column_names(config.column_names.clone()),
            joblog,
            bar: progress_bar(config, total),
            own_error: None,
            stdout_closed: false,
        }
    }

    /// Runs `f`, which writes to stderr, with the progress bar out of the way.
    fn around_stderr(bar: &Option<ProgressBar>, f: &mut dyn FnMut()) {
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// An error of the runner itself: the first one is reported, and no new job starts.
    pub(super) fn fail(&mut self, shared: &Shared, error: RunError) {
        shared.stop.store(true, Ordering::SeqCst);
        self.own_error.get_or_insert(error);
    }

    /// Reports one finished job. Returns whether the running jobs must be killed (stdout closed).
    pub(super) fn report(&mut self, shared: &Shared, outcome: Outcome, notes: &[String]) -> bool {
        let config = &shared.config;
        // Jobs killed by `--halt now` are logged but their output is not shown.
        let quiet = outcome.suppressed || self.stdout_closed;
        if let Some(log) = &mut self.joblog {
            if let Err(e) = log.record(&outcome) {
                self.fail(shared, e);
            }
        }
        let bar = &self.bar;
        // Grouped and JSON output carry the reason with the job; other modes print it here.
        if let Some(reason) = &outcome.spawn_error {
            if self.print == Print::Nothing {
                Self::around_stderr(bar, &mut || {
                    let _ = writeln!(io::stderr().lock(), "martelli run: {reason}");
                });
            }
        }
        if outcome.timed_out && !quiet {
            let command = String::from_utf8_lossy(&outcome.command).into_owned();
            Self::around_stderr(bar, &mut || {
                let _ = writeln!(
                    io::stderr().lock(),
                    "martelli run: job {} timed out and was killed: {command}",
                    outcome.seq
                );
            });
        }
        let mut kill = false;
        match self
            .printer
            .push(outcome, quiet, &|f| Self::around_stderr(bar, f))
        {
            Ok(()) => {}
            Err(PrintError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                // Nobody reads our output any more: stop, as `head` expects, and succeed.
                self.stdout_closed = true;
                shared.stop.store(true, Ordering::SeqCst);
                shared.killing.store(true, Ordering::SeqCst);
                kill = true;
            }
            Err(PrintError::Stdout(e)) => {
                self.fail(
                    shared,
                    RunError::System {
                        what: "cannot write to stdout",
                        source: e,
                    },
                );
            }
            Err(PrintError::Run(e)) => self.fail(shared, e),
        }
        if !notes.is_empty() && !self.stdout_closed {
            Self::around_stderr(&self.bar, &mut || {
                let mut err = io::stderr().lock();
                for note in notes {
                    let _ = writeln!(err, "{note}");
                }
            });
        }
        if let Some(bar) = &self.bar {
            update_bar(bar, config, shared);
        }
        kill
    }

    /// After the last job: prints what `-k` still holds, and decides the exit status.
    pub(super) fn finish(&mut self, shared: &Shared) -> u8 {
        let bar = &self.bar;
        if let Err(PrintError::Stdout(e)) = self.printer.flush(&|f| Self::around_stderr(bar, f)) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                self.own_error.get_or_insert(RunError::System {
                    what: "cannot write to stdout",
                    source: e,
                });
            }
        }
        if let Some(bar) = &self.bar {
            // The final state stays on screen, as GNU parallel leaves its bar at 100%.
            bar.finish();
        }
        if let Some(e) = &self.own_error {
            let _ = writeln!(io::stderr().lock(), "martelli run: error: {e}");
            return EXIT_OWN_ERROR;
        }
        let signal = shared.interrupted.load(Ordering::SeqCst);
        if signal != 0 {
            return u8::try_from(128 + signal).unwrap_or(EXIT_OWN_ERROR);
        }
        if self.stdout_closed {
            return 0;
        }
        let tally = lock(&shared.tally);
        if let Some(status) = tally.halt_status {
            return status;
        }
        // With `--halt …=P%` that never triggered, GNU parallel's status is the share that failed.
        if let Some(Threshold::Percent(_)) = shared.config.halt.map(|h| h.threshold) {
            if tally.failed > 0 {
                return percent(tally.failed, tally.finished);
            }
        }
        u8::try_from(tally.failed.min(MAX_FAILED_EXIT)).unwrap_or(EXIT_OWN_ERROR)
    }
}

fn progress_bar(config: &Config, total: Option<u64>) -> Option<ProgressBar> {
    let p = config.progress;
    if !p.any() {
        return None;
    }
    let mut template = String::new();
    if p.bar {
        template.push_str(if total.is_some() {
            "{wide_bar} {pos}/{len} {percent}% "
        } else {
            "{spinner} {pos} done "
        });
    }
    if p.counts {
        template.push_str("{msg} ");
    }
    if p.eta && total.is_some() {
        template.push_str("ETA {eta} ");
    }
    template.push_str("{elapsed}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    // Asked for, progress is drawn even when stderr is not a terminal (indicatif's own stderr target
    // would hide it then); it never goes to stdout.
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 4)
    };
    let bar = ProgressBar::with_draw_target(total, target).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    Some(bar)
}

fn update_bar(bar: &ProgressBar, config: &Config, shared: &Shared) {
    let (finished, failed) = {
        let tally = lock(&shared.tally);
        (tally.finished, tally.failed)
    };
    bar.set_position(finished);
    if config.progress.counts {
        let running = running(shared);
        bar.set_message(format!(
            "running {running}, done {finished}, failed {failed}"
        ));
    }
}
