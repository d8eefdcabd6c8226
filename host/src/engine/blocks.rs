//! Pilot blocks over a [`Scheduler`]: the policy every pilot kind shares. Blocks
//! start on demand (up to `blocks`, while the tasks waiting and running need more
//! slots), are watched (an ended block's cause asked of the scheduler), end when idle,
//! are given up when their worker is lost while the block still runs, and are all
//! cancelled when the run ends, fails or is cancelled.
//!
//! A scheduler only starts, lists, explains and cancels blocks: `slurm.rs` (sbatch,
//! squeue, scontrol/sacct, scancel) and `processes.rs` (child processes). Adding PBS
//! is one more file.
//!
//! Invariant: every block this run started is cancelled by [`Blocks::shutdown`]
//! (called at the end of a run, and on drop).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::PilotConfig;

use super::dispatcher::{Dispatcher, Provisioner};

/// What starts, lists, explains and cancels blocks.
pub trait Scheduler: Send + Sync + 'static {
    /// What a block is called in messages ("Slurm job", "worker process").
    fn noun(&self) -> &'static str;
    /// Starts block number `n`, each of whose nodes runs `worker` (an argument vector)
    /// followed by `--block <the block's id>`; returns that id.
    fn submit(&self, n: usize, worker: &[String]) -> Result<String, String>;
    /// Those of `ids` that are still queued or running; `None` when the scheduler
    /// cannot tell right now.
    fn alive(&self, ids: &[String]) -> Option<Vec<String>>;
    /// How block `id` ended (`TIMEOUT`, `exit status 1`), if it has ended.
    fn ended(&self, id: &str) -> Option<String>;
    /// Ends blocks, without waiting.
    fn cancel(&self, ids: &[String]);
    /// The last line block `id` wrote to its log, if the scheduler keeps one here.
    fn log_tail(&self, _id: &str) -> Option<String> {
        None
    }
}

/// Blocks in a row that may end before their worker joins the run before the tasks
/// waiting for one fail (a worker that cannot start would be started again forever).
const FAILED_STARTS: usize = 3;

/// A file of a pilot's run directory (a block's script or log), made new: never
/// through a link, never one that was already there.
pub(crate) fn new_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A started block.
struct Block {
    id: String,
    submitted: Instant,
}

#[derive(Default)]
struct State {
    active: Vec<Block>,
    submitted: usize,
    stopping: bool,
    /// Blocks whose worker joined the run at some point.
    joined: std::collections::HashSet<String>,
    /// Blocks in a row that ended before their worker joined.
    failed_starts: usize,
}

/// The blocks of one pilot executor.
pub struct Blocks {
    label: String,
    policy: PilotConfig,
    scheduler: Arc<dyn Scheduler>,
    dispatcher: Arc<Dispatcher>,
    worker: Vec<String>,
    slots_per_block: usize,
    state: Mutex<State>,
    /// Held while deciding on and starting blocks: one starter at a time.
    scaling: Mutex<()>,
}

impl Blocks {
    /// Block management for executor `label`, whose workers run `worker` with `slots`
    /// slots each.
    pub fn start(
        label: &str,
        policy: PilotConfig,
        scheduler: Arc<dyn Scheduler>,
        dispatcher: Arc<Dispatcher>,
        worker: Vec<String>,
        slots: usize,
    ) -> Arc<Blocks> {
        let slots_per_block = slots * policy.nodes_per_block;
        let blocks = Arc::new(Blocks {
            label: label.to_owned(),
            policy,
            scheduler,
            dispatcher,
            worker,
            slots_per_block,
            state: Mutex::new(State::default()),
            scaling: Mutex::new(()),
        });
        let explain = blocks.scheduler.clone();
        blocks.dispatcher.set_explain(Arc::new(move |id: &str| {
            explain
                .ended(id)
                .map(|how| format!("{} {id} ended ({how})", explain.noun()))
        }));
        let weak = Arc::downgrade(&blocks);
        blocks.dispatcher.set_abandon(Arc::new(move |id: &str| {
            if let Some(blocks) = weak.upgrade() {
                blocks.abandon(id);
            }
        }));
        let watcher = Arc::downgrade(&blocks);
        let _ = std::thread::Builder::new()
            .name(format!("stagehost-{label}-blocks"))
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(blocks) = watcher.upgrade() else {
                    break;
                };
                if blocks.lock().stopping {
                    break;
                }
                blocks.watch();
                blocks.scale();
            });
        blocks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts blocks while the tasks waiting and running need more slots than the
    /// blocks started give, up to `blocks`.
    pub fn scale(&self) {
        let _one_at_a_time = self.scaling.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, busy, _) = self.dispatcher.load();
        let needed = pending + busy;
        loop {
            let n = {
                let state = self.lock();
                let have = state.active.len() * self.slots_per_block;
                if state.stopping
                    || needed <= have
                    || state.active.len() >= self.policy.blocks
                    || pending == 0
                {
                    return;
                }
                state.submitted
            };
            match self.scheduler.submit(n, &self.worker) {
                Ok(id) => {
                    tracing::info!("executor {:?}: started block {id}", self.label);
                    let mut state = self.lock();
                    state.active.push(Block {
                        id,
                        submitted: Instant::now(),
                    });
                    state.submitted += 1;
                }
                Err(e) => {
                    tracing::warn!("executor {:?}: {e}", self.label);
                    if self.lock().active.is_empty() {
                        self.dispatcher.fail_pending(&e);
                    }
                    return;
                }
            }
        }
    }

    /// Notices blocks that ended (and why), and ends blocks idle too long.
    fn watch(&self) {
        let ids: Vec<String> = self.lock().active.iter().map(|b| b.id.clone()).collect();
        if ids.is_empty() {
            self.dispatcher.set_saturated(false);
            return;
        }
        let Some(alive) = self.scheduler.alive(&ids) else {
            return;
        };
        let connected = self.dispatcher.blocks();
        {
            let mut state = self.lock();
            for id in connected.keys() {
                if state.joined.insert(id.clone()) {
                    state.failed_starts = 0;
                }
            }
        }
        let mut ended = Vec::new();
        {
            let mut state = self.lock();
            state.active.retain(|b| {
                // A block just started may not be listed yet.
                if !alive.contains(&b.id) && b.submitted.elapsed() > Duration::from_secs(2) {
                    ended.push(b.id.clone());
                    false
                } else {
                    true
                }
            });
        }
        let noun = self.scheduler.noun();
        for id in ended {
            let how = self.scheduler.ended(&id).unwrap_or_else(|| "ended".into());
            let cause = format!("{noun} {id} ended ({how})");
            tracing::info!("executor {:?}: {cause}", self.label);
            // The dispatcher saw every worker that joined, even one lost between two
            // looks of this watcher.
            let seen = self.dispatcher.has_joined(&id);
            let never_joined = {
                let mut state = self.lock();
                let never = !state.joined.contains(&id) && !seen;
                if never {
                    state.failed_starts += 1;
                }
                never.then_some(state.failed_starts)
            };
            if let Some(in_a_row) = never_joined {
                let tail = self
                    .scheduler
                    .log_tail(&id)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                let why = format!("{cause} before its worker joined the run{tail}");
                tracing::warn!("executor {:?}: {why}", self.label);
                if in_a_row >= FAILED_STARTS {
                    self.lock().failed_starts = 0;
                    self.dispatcher
                        .fail_pending(&format!("{in_a_row} blocks in a row ended before their worker joined the run; the last: {why}"));
                }
            }
            self.dispatcher.block_ended(&id, cause);
        }
        // Saturated: as many blocks as allowed, every one with its workers connected.
        {
            let state = self.lock();
            let all_up = state.active.len() >= self.policy.blocks
                && state.active.iter().all(|b| connected.contains_key(&b.id));
            self.dispatcher.set_saturated(all_up);
        }
        // Idle blocks.
        let (pending, _, _) = self.dispatcher.load();
        if pending == 0 {
            let limit = Duration::from_secs_f64(self.policy.max_idle_secs);
            for (id, since) in connected {
                let cause = format!("{noun} {id} ended: idle for {}s", self.policy.max_idle_secs);
                if since.is_some_and(|t| t.elapsed() > limit)
                    && self.dispatcher.retire_if_idle(&id, cause)
                {
                    tracing::info!("executor {:?}: block {id} idle, ending it", self.label);
                    self.lock().active.retain(|b| b.id != id);
                    self.scheduler.cancel(std::slice::from_ref(&id));
                }
            }
        }
    }

    /// Cancels a block whose worker was lost while the scheduler still runs it (a
    /// hung node), so that another block can take its place.
    fn abandon(&self, id: &str) {
        let mut state = self.lock();
        let before = state.active.len();
        state.active.retain(|b| b.id != id);
        if state.active.len() < before {
            drop(state);
            tracing::warn!(
                "executor {:?}: block {id} lost its worker but still runs; cancelling it",
                self.label
            );
            self.scheduler.cancel(&[id.to_owned()]);
        }
    }

    /// Cancels every block and waits (a little) until the scheduler lists none.
    pub fn shutdown(&self) {
        let ids: Vec<String> = {
            let mut state = self.lock();
            if state.stopping {
                return;
            }
            state.stopping = true;
            state.active.drain(..).map(|b| b.id).collect()
        };
        self.dispatcher.close();
        if ids.is_empty() {
            return;
        }
        self.scheduler.cancel(&ids);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.scheduler.alive(&ids) {
                Some(alive) if !alive.is_empty() => std::thread::sleep(Duration::from_millis(200)),
                _ => break,
            }
        }
    }
}

impl Provisioner for Blocks {
    fn scale(&self) {
        Blocks::scale(self);
    }
    fn shutdown(&self) {
        Blocks::shutdown(self);
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::channel::RunKey;
    use crate::engine::protocol::NodeTask;

    /// A scheduler that starts nothing real: it records what the policy asks of it.
    #[derive(Default)]
    struct Ledger {
        submitted: Mutex<Vec<String>>,
        cancelled: Mutex<Vec<String>>,
    }

    impl Scheduler for Ledger {
        fn noun(&self) -> &'static str {
            "test block"
        }
        fn submit(&self, n: usize, worker: &[String]) -> Result<String, String> {
            assert_eq!(worker, ["stagehost", "worker"]);
            let id = format!("b{n}");
            self.submitted.lock().unwrap().push(id.clone());
            Ok(id)
        }
        fn alive(&self, ids: &[String]) -> Option<Vec<String>> {
            let cancelled = self.cancelled.lock().unwrap();
            Some(
                ids.iter()
                    .filter(|i| !cancelled.contains(i))
                    .cloned()
                    .collect(),
            )
        }
        fn ended(&self, _id: &str) -> Option<String> {
            None
        }
        fn cancel(&self, ids: &[String]) {
            self.cancelled.lock().unwrap().extend_from_slice(ids);
        }
    }

    fn task(id: u64) -> NodeTask {
        NodeTask {
            id,
            name: format!("t{id}"),
            executor: "x".into(),
            command: "true".into(),
            files: Default::default(),
            timeout_secs: None,
            staged: Vec::new(),
        }
    }

    #[test]
    fn blocks_start_on_demand_up_to_the_limit_and_all_end_with_the_run() {
        let dispatcher = Dispatcher::start(
            "x",
            "127.0.0.1",
            RunKey::generate().unwrap(),
            Duration::from_secs(5),
            0,
        )
        .unwrap();
        let ledger = Arc::new(Ledger::default());
        let policy = PilotConfig {
            blocks: 3,
            nodes_per_block: 1,
            max_idle_secs: 60.0,
            heartbeat_secs: 5.0,
            prefetch: 0,
            address: "127.0.0.1".into(),
        };
        let worker = vec!["stagehost".to_owned(), "worker".to_owned()];
        let blocks = Blocks::start("x", policy, ledger.clone(), dispatcher.clone(), worker, 2);
        // Nothing waits: nothing starts.
        blocks.scale();
        assert!(ledger.submitted.lock().unwrap().is_empty());
        // Three tasks on two slots a block: two blocks.
        let mut receipts: Vec<_> = (0..3)
            .map(|i| dispatcher.submit(task(i)).unwrap())
            .collect();
        blocks.scale();
        assert_eq!(*ledger.submitted.lock().unwrap(), ["b0", "b1"]);
        // Ten: never more than three.
        receipts.extend((3..10).map(|i| dispatcher.submit(task(i)).unwrap()));
        blocks.scale();
        blocks.scale();
        assert_eq!(*ledger.submitted.lock().unwrap(), ["b0", "b1", "b2"]);
        // The run ends: every block is cancelled, every waiting task fails.
        blocks.shutdown();
        assert_eq!(*ledger.cancelled.lock().unwrap(), ["b0", "b1", "b2"]);
        for mut r in receipts {
            assert!(matches!(r.try_recv(), Ok(Err(_))));
        }
    }
}
