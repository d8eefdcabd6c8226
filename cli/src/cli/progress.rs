//! Progress for `stagehost run` and `stagehost stage`: on a terminal, an overall bar and one bar per active
//! transfer (indicatif); on a pipe, one plain line per finished transfer and per failed
//! task, and every `--stats` seconds while files move a line with the bytes, the
//! throughput and the time left (as rclone's `--stats` off a terminal).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stagehost::engine::{Observer, TaskReport, TaskStatus};
use stagehost::observer::Finished;
use stagehost::{Direction, ProgressSink, WorkMode};

static STATS_INTERVAL: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();

/// How often, off a terminal, a progress line is written (`--stats`; 0 or less: never).
pub fn set_stats_interval(seconds: f64) {
    let _ = STATS_INTERVAL.set(stats_interval(seconds));
}

/// Zero, negative, NaN: no lines; past what a Duration holds: none either (the first
/// would never come).
fn stats_interval(seconds: f64) -> Option<Duration> {
    (seconds > 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

fn stats(quiet: bool) -> Option<Arc<Stats>> {
    let interval = STATS_INTERVAL
        .get()
        .copied()
        .unwrap_or(Some(Duration::from_secs(10)))?;
    (!quiet).then(|| Arc::new(Stats::new(interval)))
}

/// Chooses bars or lines from whether stderr is a terminal.
pub fn observer(quiet: bool) -> Arc<dyn Observer> {
    if std::io::stderr().is_terminal() && !quiet {
        Arc::new(Bars::new(true))
    } else {
        Arc::new(Lines {
            quiet,
            active: Mutex::new(HashMap::new()),
            stats: stats(quiet),
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
            stats: stats(false),
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
        if !report.status.is_ok() {
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
    fn run_finished(&self) {
        self.clear();
    }
    fn transfer_finished(&self, id: u64, _result: Result<Finished, &str>) {
        if let Some(bar) = self.transfers.lock().expect("bars lock").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Bars {
    fn clear(&self) {
        for (_, bar) in self.transfers.lock().expect("bars lock").drain() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.clear();
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
    stats: Option<Arc<Stats>>,
}

/// The numbers behind the periodic progress line.
struct Stats {
    interval: Duration,
    state: Mutex<StatsState>,
}

struct StatsState {
    /// Per active transfer: bytes done, and the total when known.
    active: HashMap<u64, (u64, Option<u64>)>,
    /// Bytes moved since the command began (every transfer's progress, summed).
    moved: u64,
    /// When the last line was written (or the first transfer began), and `moved` then.
    last: Instant,
    last_moved: u64,
}

impl Stats {
    fn new(interval: Duration) -> Stats {
        Stats {
            interval,
            state: Mutex::new(StatsState {
                active: HashMap::new(),
                moved: 0,
                last: Instant::now(),
                last_moved: 0,
            }),
        }
    }

    fn started(&self, id: u64) {
        let mut s = self.state.lock().expect("stats lock");
        if s.active.is_empty() && s.moved == s.last_moved {
            // Nothing moved since the last line: the interval counts from now.
            s.last = Instant::now();
        }
        s.active.insert(id, (0, None));
    }

    fn update(&self, id: u64, done: u64, total: Option<u64>) {
        let mut s = self.state.lock().expect("stats lock");
        let Some(entry) = s.active.get_mut(&id) else {
            return;
        };
        let before = entry.0;
        *entry = (done, total.or(entry.1));
        s.moved += done.saturating_sub(before);
        let now = Instant::now();
        let elapsed = now.duration_since(s.last);
        if elapsed < self.interval {
            return;
        }
        let rate = (s.moved - s.last_moved) as f64 / elapsed.as_secs_f64();
        let line = progress_line(s.active.values().copied(), rate);
        (s.last, s.last_moved) = (now, s.moved);
        drop(s);
        eprintln!("stagehost: {line}");
    }

    fn finished(&self, id: u64) {
        self.state.lock().expect("stats lock").active.remove(&id);
    }
}

/// `progress: 2 transfer(s), 1.20 GiB of 4.00 GiB, 110.30 MiB/s, ETA 26s`: the active
/// transfers' bytes (of their totals, where every total is known), the throughput over
/// the last interval and the time left at that rate.
fn progress_line(active: impl Iterator<Item = (u64, Option<u64>)>, rate: f64) -> String {
    let (mut n, mut done, mut total, mut all_known) = (0usize, 0u64, 0u64, true);
    for (d, t) in active {
        n += 1;
        done += d;
        match t {
            Some(t) => total += t.max(d),
            None => all_known = false,
        }
    }
    let mut line = format!("progress: {n} transfer(s), {}", HumanBytes(done));
    if all_known && n > 0 {
        line.push_str(&format!(" of {}", HumanBytes(total)));
    }
    line.push_str(&format!(", {}/s", HumanBytes(rate.max(0.0) as u64)));
    if all_known && n > 0 && rate >= 1.0 {
        let left = Duration::from_secs_f64((total - done) as f64 / rate);
        line.push_str(&format!(", ETA {}", eta(left)));
    } else {
        line.push_str(", ETA unknown");
    }
    line
}

/// A short duration: `26s`, `4m05s`, `2h03m`.
fn eta(left: Duration) -> String {
    let s = left.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

struct StatsSink {
    id: u64,
    stats: Arc<Stats>,
}

impl ProgressSink for StatsSink {
    fn update(&self, done: u64, total: Option<u64>) {
        self.stats.update(self.id, done, total);
    }
}

impl Observer for Lines {
    fn task_finished(&self, report: &TaskReport) {
        // Failures are shown even with -q ("only the summary and errors").
        if !report.status.is_ok() {
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
        let stats = self.stats.as_ref()?;
        stats.started(id);
        Some(Arc::new(StatsSink {
            id,
            stats: stats.clone(),
        }))
    }
    fn transfer_finished(&self, id: u64, result: Result<Finished, &str>) {
        if let Some(stats) = &self.stats {
            stats.finished(id);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_gives_sizes_throughput_and_time_left() {
        let mib = 1 << 20;
        let line = progress_line(
            [(mib, Some(4 * mib)), (mib, Some(4 * mib))].into_iter(),
            mib as f64,
        );
        assert_eq!(
            line,
            "progress: 2 transfer(s), 2.00 MiB of 8.00 MiB, 1.00 MiB/s, ETA 6s"
        );
        // A transfer of unknown size: no total and no ETA.
        let line = progress_line([(mib, None), (mib, Some(4 * mib))].into_iter(), mib as f64);
        assert_eq!(
            line,
            "progress: 2 transfer(s), 2.00 MiB, 1.00 MiB/s, ETA unknown"
        );
        assert_eq!(eta(Duration::from_secs(245)), "4m05s");
        assert_eq!(eta(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn any_stats_value_is_an_interval_or_none_and_never_a_panic() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(stats_interval(bad), None, "{bad}");
        }
        assert_eq!(stats_interval(0.5), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_line_comes_once_an_interval_has_passed_and_counts_what_moved() {
        let stats = Stats::new(Duration::from_millis(30));
        stats.started(1);
        stats.update(1, 100, Some(1000));
        assert_eq!(
            stats.state.lock().unwrap().last_moved,
            0,
            "no line before the interval"
        );
        std::thread::sleep(Duration::from_millis(40));
        stats.update(1, 300, Some(1000));
        let s = stats.state.lock().unwrap();
        assert_eq!(
            (s.moved, s.last_moved),
            (300, 300),
            "a line was written at 300 bytes"
        );
    }
}
