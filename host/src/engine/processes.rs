//! The `processes` scheduler: each block is one `stagehost worker` started as a child
//! process of the run, on this machine, in a process group of its own. A multi-process
//! pilot without a batch system, and the pilot path's integration tests without one.
//! The block policy is `blocks.rs`'s.

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::blocks::{new_file, Scheduler};

/// The worker processes of one executor; their output goes to `run_dir`.
pub struct Processes {
    run_dir: PathBuf,
    children: Mutex<HashMap<String, Child>>,
    logs: Mutex<HashMap<String, PathBuf>>,
}

impl Processes {
    pub fn new(run_dir: PathBuf) -> Processes {
        Processes {
            run_dir,
            children: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Scheduler for Processes {
    fn noun(&self) -> &'static str {
        "worker process"
    }

    fn submit(&self, n: usize, worker: &[String]) -> Result<String, String> {
        let id = format!("p{n}");
        let log = self.run_dir.join(format!("block-{n}.out"));
        let out = new_file(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let (exe, args) = worker.split_first().ok_or("no worker command")?;
        let child = Command::new(exe)
            .args(args)
            .args(["--block", &id])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start worker process {id} ({exe}): {e}"))?;
        self.lock().insert(id.clone(), child);
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), log);
        Ok(id)
    }

    fn log_tail(&self, id: &str) -> Option<String> {
        let path = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)?
            .clone();
        let text = std::fs::read(path).ok()?;
        let text = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned();
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
        Some(
            stagehost_plugin_api::display::escape(line)
                .chars()
                .take(300)
                .collect(),
        )
    }

    fn alive(&self, ids: &[String]) -> Option<Vec<String>> {
        let mut children = self.lock();
        Some(
            ids.iter()
                .filter(|id| {
                    children
                        .get_mut(id.as_str())
                        .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
                })
                .cloned()
                .collect(),
        )
    }

    fn ended(&self, id: &str) -> Option<String> {
        let status = self.lock().get_mut(id)?.try_wait().ok()??;
        Some(match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended".into(),
        })
    }

    fn cancel(&self, ids: &[String]) {
        let mut children = self.lock();
        let mut stopping = Vec::new();
        for id in ids {
            if let Some(child) = children.get_mut(id.as_str()) {
                if matches!(child.try_wait(), Ok(None)) {
                    // The worker's whole group: the worker and the commands it runs.
                    let group = i32::try_from(child.id()).unwrap_or(0);
                    super::command::signal_group(group, rustix::process::Signal::TERM);
                    stopping.push(id.clone());
                }
            }
        }
        // A moment to exit (a worker stops its commands' groups first: SIGTERM, then
        // SIGKILL after 2 s), then SIGKILL; every child is reaped.
        let deadline = Instant::now() + Duration::from_secs(6);
        for id in stopping {
            let Some(child) = children.get_mut(&id) else {
                continue;
            };
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let group = i32::try_from(child.id()).unwrap_or(0);
                super::command::signal_group(group, rustix::process::Signal::KILL);
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        self.cancel(&ids);
    }
}
