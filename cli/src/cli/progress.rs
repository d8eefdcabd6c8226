//! Progress for `stagehost run` and `stagehost stage`: on a terminal, an overall bar and one bar per active
//! transfer (indicatif); on a pipe, one plain line per finished transfer and per failed
//! task.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stagehost::engine::{Observer, TaskReport, TaskStatus};
use stagehost::observer::Finished;
use stagehost::{Direction, ProgressSink, WorkMode};

/// Chooses bars or lines from whether stderr is a terminal.
pub fn observer(quiet: bool) -> Arc<dyn Observer> {
    if std::io::stderr().is_terminal() && !quiet {
        Arc::new(Bars::new(true))
    } else {
        Arc::new(Lines {
            quiet,
            active: Mutex::new(HashMap::new()),
        })
    }
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    transfers: Mutex<HashMap<u64, ProgressBar>>,
    /// Set once the run said how many tasks it has: submissions no longer count.
    total_known: std::sync::atomic::AtomicBool,
}

struct BarSink(ProgressBar);

impl ProgressSink for BarSink {
    fn update(&self, done: u64, total: Option<u64>) {
        if let Some(t) = total {
            self.0.set_length(t);
        }
        self.0.set_position(done);
    }
}

/// Progress for `stagehost stage`: on a terminal, one bar per active transfer; on a
/// pipe nothing (the command prints one line per file when it is done).
pub fn transfer_observer() -> Arc<dyn Observer> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bars::new(false))
    } else {
        Arc::new(Lines {
            quiet: true,
            active: Mutex::new(HashMap::new()),
        })
    }
}

impl Bars {
    /// Bars, with the run's overall task bar when `tasks`.
    fn new(tasks: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = if tasks {
            multi.add(ProgressBar::new(0))
        } else {
            ProgressBar::hidden()
        };
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {pos}/{len} tasks {elapsed_precise} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        overall.set_prefix("run");
        Bars {
            multi,
            overall,
            transfers: Mutex::new(HashMap::new()),
            total_known: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Observer for Bars {
    fn tasks_expected(&self, tasks: usize) {
        self.overall.set_length(tasks as u64);
        self.total_known
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    fn task_submitted(&self, _name: &str) {
        if !self.total_known.load(std::sync::atomic::Ordering::Relaxed) {
            self.overall.inc_length(1);
        }
    }
    fn task_finished(&self, report: &TaskReport) {
        self.overall.inc(1);
        if report.status != TaskStatus::Succeeded {
            self.multi.println(failure_line(report)).ok();
        }
    }
    fn transfer_started(
        &self,
        id: u64,
        url: &str,
        direction: Direction,
        _mode: WorkMode,
    ) -> Option<Arc<dyn ProgressSink>> {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(match direction {
            Direction::In => "stage in",
            Direction::Out => "stage out",
        });
        bar.set_message(url.to_owned());
        self.transfers
            .lock()
            .expect("bars lock")
            .insert(id, bar.clone());
        Some(Arc::new(BarSink(bar)))
    }
    fn transfer_finished(&self, id: u64, _result: Result<Finished, &str>) {
        if let Some(bar) = self.transfers.lock().expect("bars lock").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.overall.finish_and_clear();
    }
}

/// The one line about a task that did not succeed: its name, its executor, what
/// became of it and why.
fn failure_line(report: &TaskReport) -> String {
    let what = match report.status {
        TaskStatus::Cancelled => "was cancelled",
        TaskStatus::DependencyFailed => "lost an input",
        _ => "failed",
    };
    let why = report.error.as_deref().unwrap_or("no cause was given");
    format!(
        "stagehost: task {:?} on executor {:?} {what}: {why}",
        report.name, report.executor
    )
}

struct Lines {
    quiet: bool,
    active: Mutex<HashMap<u64, (String, Direction, std::time::Instant)>>,
}

impl Observer for Lines {
    fn task_finished(&self, report: &TaskReport) {
        // Failures are shown even with -q ("only the summary and errors").
        if report.status != TaskStatus::Succeeded {
            eprintln!("{}", failure_line(report));
        }
    }
    fn transfer_started(
        &self,
        id: u64,
        url: &str,
        direction: Direction,
        _mode: WorkMode,
    ) -> Option<Arc<dyn ProgressSink>> {
        self.active
            .lock()
            .expect("lines lock")
            .insert(id, (url.to_owned(), direction, std::time::Instant::now()));
        None
    }
    fn transfer_finished(&self, id: u64, result: Result<Finished, &str>) {
        let Some((url, direction, start)) = self.active.lock().expect("lines lock").remove(&id)
        else {
            return;
        };
        if self.quiet {
            return;
        }
        let verb = match direction {
            Direction::In => "staged in",
            Direction::Out => "staged out",
        };
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(Finished { cached: true, .. }) => {
                eprintln!("stagehost: {url} is current (cached, nothing moved, {secs:.3}s)")
            }
            Ok(Finished {
                bytes: Some(bytes), ..
            }) => eprintln!("stagehost: {verb} {url} ({bytes} bytes, {secs:.3}s)"),
            Ok(Finished { bytes: None, .. }) => eprintln!("stagehost: {verb} {url} ({secs:.3}s)"),
            // A retry says so in its own warning; the last failure is in its task's
            // line: an attempt's end adds nothing.
            Err(_) => {}
        }
    }
}
