//! `stagehost report RUN.json -o run.html`: one self-contained page (inline CSS and
//! SVG; no script, no network) from a `run --report` document: the summary, a timeline
//! of the tasks per executor, bytes/s over time, per-provider totals and the failures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use stagehost::report::VERSION;
use stagehost::ConfigError;

use super::CliError;

/// `stagehost report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A report written by `stagehost run --report FILE`; `-` for stdin
    pub report: PathBuf,
    /// Where the page goes (default: the report's name with .html; stdout when the
    /// report comes from stdin); `-` for stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn report(args: &ReportArgs) -> Result<ExitCode, CliError> {
    let from_stdin = args.report.as_os_str() == "-";
    let shown = if from_stdin {
        "stdin".to_owned()
    } else {
        stagehost_plugin_api::display::path(&args.report).to_string()
    };
    let out = args.output.clone().unwrap_or_else(|| {
        if from_stdin {
            PathBuf::from("-")
        } else {
            args.report.with_extension("html")
        }
    });
    // The page never replaces the report it is drawn from; a path it cannot be
    // written at is told before the report is read.
    if out.as_os_str() != "-" {
        let flag = if args.output.is_some() {
            "-o"
        } else {
            "the page"
        };
        let input = (!from_stdin).then(|| {
            (
                std::path::absolute(&args.report).unwrap_or_default(),
                super::output::resolve(&args.report),
            )
        });
        super::output::check(flag, &out, &super::output::PAGE, |p| {
            let (absolute, resolved) = input.as_ref()?;
            super::output::same_file(absolute, resolved.as_deref(), p)
                .then(|| "the report it is drawn from".to_owned())
        })?;
    }
    let text = if from_stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(&args.report)
    }
    .map_err(|e| {
        // A report that is not there is "not found" (3), as for any input.
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Failed {
                line: format!("{shown}: {e}"),
                code: stagehost::report::FailureClass::NotFound.exit_code(),
            }
        } else {
            CliError::Config(ConfigError(format!("{shown}: {e}")))
        }
    })?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Config(ConfigError(format!("{shown}: not a JSON report: {e}"))))?;
    if doc["version"].as_u64() != Some(u64::from(VERSION)) || doc["command"] != "run" {
        return Err(CliError::Config(ConfigError(format!(
            "{shown}: not a report of `stagehost run` (version {VERSION}); write one with `stagehost run --report FILE`"
        ))));
    }
    let page = page(&doc);
    match super::output::write(&out, "page", |w| w.write_all(page.as_bytes()), false) {
        Ok(()) => {}
        // The reader of stdout went away (`| head`), as a shell shows a SIGPIPE death.
        Err(super::output::WriteError::Closed) => std::process::exit(141),
        Err(super::output::WriteError::Other(e)) => return Err(CliError::Staging(e)),
    }
    if out.as_os_str() != "-" {
        eprintln!(
            "stagehost: wrote {} ({} bytes)",
            stagehost_plugin_api::display::path(&out),
            page.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Text for HTML: `&`, `<`, `>`, quotes escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human_bytes(n: f64) -> String {
    indicatif::HumanBytes(n.max(0.0) as u64).to_string()
}

/// Per provider: files, bytes moved, cached, retries, failures.
#[derive(Default)]
struct Totals {
    files: u64,
    bytes: u64,
    cached: u64,
    retries: u64,
    failures: u64,
}

fn page(doc: &Value) -> String {
    let tasks: &[Value] = doc["tasks"].as_array().map_or(&[], Vec::as_slice);
    let summary = &doc["summary"];
    let name = doc["workflow"].as_str().unwrap_or("workflow");
    let span = tasks
        .iter()
        .map(|t| t["started_at"].as_f64().unwrap_or(0.0) + t["seconds"].as_f64().unwrap_or(0.0))
        .fold(summary["seconds"].as_f64().unwrap_or(0.0), f64::max)
        .max(1e-6);

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>stagehost run: {title}</title><style>{CSS}</style></head><body>\n\
         <h1>stagehost run: {title}</h1>\n",
        title = esc(name)
    );
    // The summary.
    let count = |k: &str| summary[k].as_u64().unwrap_or(0);
    let _ = writeln!(
        html,
        "<p class=\"summary\">{} task(s): {} succeeded, {} skipped (unchanged), {} failed, \
         {} stage-out failed, {} lost an input, {} cancelled; {} file(s) moved ({}), \
         {} already current, {} failed; {:.3} s</p>",
        count("tasks"),
        count("succeeded"),
        count("skipped"),
        count("failed"),
        count("stage_out_failed"),
        count("dependency_failed"),
        count("cancelled"),
        count("files_moved"),
        human_bytes(count("bytes_moved") as f64),
        count("files_cached"),
        count("files_failed"),
        summary["seconds"].as_f64().unwrap_or(0.0),
    );
    timeline(&mut html, tasks, span);
    throughput(&mut html, tasks, span);
    providers(&mut html, tasks);
    failures(&mut html, tasks);
    html.push_str("</body></html>\n");
    html
}

/// Per executor, one lane per worker its tasks' bodies ran on (a node's lane splits
/// into rows where its tasks overlapped), and a lane for the tasks whose body did not
/// run (skipped, lost an input, cancelled, failed staging in); a bar per task from its
/// start to its end, coloured by how it ended, named inside when it fits.
fn timeline(html: &mut String, tasks: &[Value], span: f64) {
    let mut by_executor: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for t in tasks {
        by_executor
            .entry(t["executor"].as_str().unwrap_or("?"))
            .or_default()
            .push(t);
    }
    html.push_str(
        "<h2>Timeline</h2>\n<p class=\"legend\"><span class=\"succeeded\">succeeded</span> \
         <span class=\"skipped\">skipped (unchanged)</span> <span class=\"failed\">failed</span> \
         <span class=\"dependency-failed\">lost an input</span> \
         <span class=\"cancelled\">cancelled</span></p>\n",
    );
    let (width, row, label) = (1000.0, 18.0, 220.0);
    let start_of = |t: &Value| t["started_at"].as_f64().unwrap_or(0.0);
    let end_of = |t: &Value| start_of(t) + t["seconds"].as_f64().unwrap_or(0.0);
    for (executor, tasks) in by_executor {
        // Lanes by worker, in name order; the tasks with no body last.
        let mut lanes: BTreeMap<(bool, &str), Vec<&Value>> = BTreeMap::new();
        for t in tasks {
            let key = match t["worker"].as_str() {
                Some(w) => (false, w),
                None => (true, "no body run"),
            };
            lanes.entry(key).or_default().push(t);
        }
        // Each lane's rows: a task goes in the first row free when it starts.
        let mut rows: Vec<(String, Vec<&Value>)> = Vec::new();
        for ((_, lane), mut lane_tasks) in lanes {
            lane_tasks.sort_by(|a, b| start_of(a).total_cmp(&start_of(b)));
            let mut lane_rows: Vec<(f64, Vec<&Value>)> = Vec::new();
            for t in lane_tasks {
                match lane_rows.iter_mut().find(|(end, _)| *end <= start_of(t)) {
                    Some((end, ts)) => {
                        *end = end_of(t);
                        ts.push(t);
                    }
                    None => lane_rows.push((end_of(t), vec![t])),
                }
            }
            for (k, (_, ts)) in lane_rows.into_iter().enumerate() {
                let name = if k == 0 {
                    lane.to_owned()
                } else {
                    String::new()
                };
                rows.push((name, ts));
            }
        }
        let height = row * rows.len() as f64 + 24.0;
        let _ = write!(
            html,
            "<h3>executor {}</h3>\n<svg class=\"timeline\" width=\"{w}\" height=\"{height}\" \
             viewBox=\"0 0 {w} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
            esc(executor),
            w = width + label
        );
        for (i, (lane, ts)) in rows.iter().enumerate() {
            let y = row * i as f64;
            let _ = writeln!(
                html,
                "<text class=\"lane\" x=\"0\" y=\"{ty}\">{}</text>",
                esc(lane),
                ty = y + row - 5.0
            );
            for t in ts {
                let (start, secs) = (start_of(t), t["seconds"].as_f64().unwrap_or(0.0));
                let status = t["status"].as_str().unwrap_or("failed");
                let name = t["name"].as_str().unwrap_or("?");
                let x = label + width * start / span;
                // A task of no measurable length still shows.
                let w = (width * secs / span).max(3.0);
                // Its name inside the bar when it fits (7 px a character).
                let inside = if w > 7.0 * name.chars().count() as f64 + 6.0 {
                    format!(
                        "<text class=\"name\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                        x + 3.0,
                        y + row - 6.0,
                        esc(name)
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    html,
                    "<g class=\"task {status}\" data-task=\"{n}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" \
                     width=\"{w:.1}\" height=\"{h}\"><title>{n}: {status}, {secs:.3} s from \
                     {start:.3} s{on}</title></rect>{inside}</g>",
                    n = esc(name),
                    status = esc(status),
                    h = row - 4.0,
                    on = t["worker"]
                        .as_str()
                        .map(|w| format!(", on {}", esc(w)))
                        .unwrap_or_default(),
                );
            }
        }
        let _ = writeln!(
            html,
            "<text x=\"{label}\" y=\"{y}\">0 s</text><text x=\"{end}\" y=\"{y}\" \
             text-anchor=\"end\">{span:.3} s</text></svg>",
            y = row * rows.len() as f64 + 18.0,
            end = label + width
        );
    }
}

/// Bytes/s over time: each task's moved bytes spread over its interval, in 60 steps.
fn throughput(html: &mut String, tasks: &[Value], span: f64) {
    const STEPS: usize = 60;
    let step = span / STEPS as f64;
    let mut rate = [0.0f64; STEPS];
    for t in tasks {
        let moved: f64 = t["files"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|f| moved(f))
            .map(|f| f["bytes"].as_f64().unwrap_or(0.0))
            .sum();
        let (start, secs) = (
            t["started_at"].as_f64().unwrap_or(0.0),
            t["seconds"].as_f64().unwrap_or(0.0).max(step),
        );
        if moved <= 0.0 {
            continue;
        }
        for (k, r) in rate.iter_mut().enumerate() {
            let (a, b) = (k as f64 * step, (k + 1) as f64 * step);
            let overlap = (b.min(start + secs) - a.max(start)).max(0.0);
            *r += moved * overlap / secs / step;
        }
    }
    let peak = rate.iter().copied().fold(0.0, f64::max);
    // The same time axis as the timeline's bars.
    let (label, width, height) = (220.0, 1000.0, 120.0);
    let points: Vec<String> = rate
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let x = label + width * (k as f64 + 0.5) / STEPS as f64;
            let y = height - if peak > 0.0 { height * r / peak } else { 0.0 };
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = writeln!(
        html,
        "<h2>Bytes/s over time</h2>\n<p>peak {}/s</p>\n<svg class=\"throughput\" width=\"{w}\" \
         height=\"{height}\" viewBox=\"0 0 {w} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <polyline points=\"{}\"/></svg>",
        human_bytes(peak),
        points.join(" "),
        w = label + width
    );
}

/// Whether a file's bytes moved (as the summary counts them).
fn moved(f: &Value) -> bool {
    f["attempts"].as_u64().unwrap_or(0) > 0
        && f["error"].is_null()
        && f["cached"] != true
        && f["deduplicated"] != true
}

fn providers(html: &mut String, tasks: &[Value]) {
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for f in tasks
        .iter()
        .flat_map(|t| t["files"].as_array().map_or(&[][..], Vec::as_slice))
    {
        // A file no provider planned: counted only if that was its failure (a skipped
        // task's files were not staged at all).
        let Some(provider) = f["provider"]
            .as_str()
            .or_else(|| f["error"].is_string().then_some("(none)"))
        else {
            continue;
        };
        let provider = provider.to_owned();
        let t = totals.entry(provider).or_default();
        t.files += 1;
        if moved(f) {
            t.bytes += f["bytes"].as_u64().unwrap_or(0);
        }
        t.cached += u64::from(f["cached"] == true);
        t.retries += f["attempts"].as_u64().unwrap_or(0).saturating_sub(1);
        t.failures += u64::from(!f["error"].is_null());
    }
    html.push_str(
        "<h2>Providers</h2>\n<table class=\"providers\"><tr><th>provider</th><th>files</th>\
         <th>bytes moved</th><th>cached</th><th>retries</th><th>failures</th></tr>\n",
    );
    for (name, t) in totals {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name),
            t.files,
            human_bytes(t.bytes as f64),
            t.cached,
            t.retries,
            t.failures
        );
    }
    html.push_str("</table>\n");
}

fn failures(html: &mut String, tasks: &[Value]) {
    let failed: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["status"] != "succeeded" && t["status"] != "skipped")
        .collect();
    html.push_str("<h2>Failures</h2>\n");
    if failed.is_empty() {
        html.push_str("<p class=\"none\">none</p>\n");
        return;
    }
    html.push_str("<ul class=\"failures\">\n");
    for t in failed {
        let _ = write!(
            html,
            "<li><b>{}</b> on executor {} {}: {}",
            esc(t["name"].as_str().unwrap_or("?")),
            esc(t["executor"].as_str().unwrap_or("?")),
            esc(t["status"].as_str().unwrap_or("?")),
            esc(t["error"].as_str().unwrap_or("no cause was given"))
        );
        let files: Vec<&Value> = t["files"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|f| !f["error"].is_null())
            .collect();
        if !files.is_empty() {
            html.push_str("<ul>");
            for f in files {
                let _ = write!(
                    html,
                    "<li>{}: {}</li>",
                    esc(f["url"].as_str().unwrap_or("?")),
                    esc(f["error"].as_str().unwrap_or("?"))
                );
            }
            html.push_str("</ul>");
        }
        html.push_str("</li>\n");
    }
    html.push_str("</ul>\n");
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
.summary{font-size:1.1em}\
svg text{font-size:12px;font-family:monospace}\
.task rect{fill:#4a8}.task.failed rect,.task.stage-out-failed rect{fill:#c44}\
.task.dependency-failed rect{fill:#e90}.task.cancelled rect{fill:#999}.task.skipped rect{fill:#9cb}\
.throughput polyline{fill:none;stroke:#36c;stroke-width:2}\
svg{max-width:100%;height:auto}\
.timeline .name{fill:#fff;font-size:11px}\
.legend span{padding:1px 6px;margin-right:4px;color:#fff;background:#4a8}\
.legend .skipped{background:#9cb}.legend .failed{background:#c44}\
.legend .dependency-failed{background:#e90}.legend .cancelled{background:#999}\
.throughput{border-bottom:1px solid #999}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}\
.failures li{margin:4px 0;font-family:monospace}";
