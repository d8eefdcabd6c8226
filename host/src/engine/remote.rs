//! Task bodies that run elsewhere: the wire protocol between a run and its workers,
//! the run's side (a [`Dispatcher`] that hands tasks to connected workers), and the
//! node's side ([`serve_worker`], behind `stagehost worker`).
//!
//! The protocol is one JSON message per line over TCP. A worker opens with `hello`
//! (protocol version, the run's secret, its block and host, its slots); the run
//! answers `welcome` or `refused` and closes. Then the run sends `task`s, the worker
//! answers each with `done`, and both send `heartbeat`s; a peer silent for three
//! heartbeat periods is lost. `shutdown` ends a worker.
//!
//! The node re-plans each file that has an in-task step, from the same config, the
//! executor label, the URL and the destination planned on the submit side (a plan
//! holds plugin objects and cannot be shipped), and runs the steps and the command
//! there. Separate jobs never reach the node.
//!
//! Invariants: a connection that has not presented the secret gets no task; a task
//! in flight on a worker that is lost fails with the cause, and the engine retries
//! it within the task's retries.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data_manager::{Direction, StageOptions};
use crate::DataManager;

use super::command::{self, Commands};
use super::task::TaskFiles;

/// The protocol's version; a worker of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// One message, either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Worker → run, first.
    Hello {
        version: u32,
        secret: String,
        block: String,
        host: String,
        slots: usize,
    },
    /// Run → worker: accepted.
    Welcome { version: u32, heartbeat_secs: f64 },
    /// Run → worker: refused, and why; the connection closes.
    Refused { reason: String },
    /// Run → worker: run this.
    Task(NodeTask),
    /// Worker → run: this task ended.
    Done(NodeResult),
    /// Either way: still here.
    Heartbeat,
    /// Run → worker: end.
    Shutdown,
}

/// A task as the node runs it: the command (placeholders already expanded to the
/// planned paths) and the files whose in-task steps run there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeTask {
    pub id: u64,
    pub name: String,
    pub executor: String,
    pub command: String,
    pub files: TaskFiles,
    pub timeout_secs: Option<f64>,
    pub staged: Vec<NodeFile>,
}

/// One file with an in-task step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    pub url: String,
    pub direction: Direction,
    pub local_path: Option<PathBuf>,
}

/// What the node did with a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResult {
    pub id: u64,
    /// The body's error (the command's exit, a missing output, a failed stage-in).
    pub error: Option<String>,
    /// Per staged file, in the order sent.
    pub staged: Vec<NodeFileResult>,
    /// Where it ran: `host` (block).
    pub place: String,
}

/// One file's in-task step on the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFileResult {
    pub ran: bool,
    pub seconds: f64,
    pub attempts: u32,
    pub cached: bool,
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

fn send(stream: &Mutex<TcpStream>, message: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut s = stream.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(&line)
}

fn receive(reader: &mut impl BufRead) -> std::io::Result<Option<Message>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Constant-time comparison of two secrets.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh secret: 32 random bytes from the OS, as hex.
pub fn new_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

// ---------------------------------------------------------------------------------
// The run's side.

/// Starts and ends the pilot jobs whose workers connect to a [`Dispatcher`]: the part
/// of an executor kind that knows its scheduler (`slurm::Blocks` for Slurm; a
/// Kubernetes kind would start pods).
pub trait Provisioner: Send + Sync {
    /// Starts more blocks if the work waiting needs them (called as tasks arrive).
    fn scale(&self);
    /// Ends every block this run started and closes the dispatcher.
    fn shutdown(&self);
}

type Reply = mpsc::Sender<Result<NodeResult, String>>;

struct Pending {
    task: NodeTask,
    reply: Reply,
}

struct Worker {
    block: String,
    host: String,
    slots: usize,
    busy: HashMap<u64, Reply>,
    stream: Arc<Mutex<TcpStream>>,
    idle_since: Instant,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    workers: HashMap<u64, Worker>,
    /// Why a block ended, once known (`Slurm job 42 ended (TIMEOUT)`).
    ended: HashMap<String, String>,
    closed: bool,
}

/// Explains why a block's worker went away: `Some(cause)` once the block has ended.
pub type Explain = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Gives up on a block whose worker was lost while the block still runs (a hung
/// node): it is cancelled, so that another can take its place.
pub type Abandon = Arc<dyn Fn(&str) + Send + Sync>;

/// Hands tasks to the workers that connected with the run's secret.
pub struct Dispatcher {
    label: String,
    prefetch: usize,
    /// Every block that may run is up: no other block will come for queued work, so
    /// each worker also queues as many tasks as it has slots.
    saturated: std::sync::atomic::AtomicBool,
    explain: Mutex<Option<Explain>>,
    abandon: Mutex<Option<Abandon>>,
    secret: String,
    heartbeat: Duration,
    address: std::net::SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
    next_conn: AtomicU64,
}

impl Dispatcher {
    /// Listens on `bind` (port 0: any) for the workers of executor `label`.
    pub fn start(
        label: &str,
        bind: &str,
        secret: String,
        heartbeat: Duration,
        prefetch: usize,
    ) -> std::io::Result<Arc<Dispatcher>> {
        let listener = TcpListener::bind((bind, 0))?;
        let address = listener.local_addr()?;
        let dispatcher = Arc::new(Dispatcher {
            label: label.to_owned(),
            prefetch,
            saturated: std::sync::atomic::AtomicBool::new(false),
            explain: Mutex::new(None),
            abandon: Mutex::new(None),
            secret,
            heartbeat,
            address,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            next_conn: AtomicU64::new(1),
        });
        let d = dispatcher.clone();
        std::thread::Builder::new()
            .name(format!("stagehost-{label}-accept"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if d.lock().closed {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let d = d.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("stagehost-{}-conn", d.label))
                        .spawn(move || d.serve_connection(stream));
                }
            })?;
        Ok(dispatcher)
    }

    /// Sets how a lost worker's block is explained (asking the scheduler).
    pub fn set_explain(&self, explain: Explain) {
        *self.explain.lock().unwrap_or_else(|p| p.into_inner()) = Some(explain);
    }

    /// Sets how a block whose worker was lost, but which still runs, is given up.
    pub fn set_abandon(&self, abandon: Abandon) {
        *self.abandon.lock().unwrap_or_else(|p| p.into_inner()) = Some(abandon);
    }

    /// Says whether every block that may run is up (see `saturated`).
    pub fn set_saturated(&self, saturated: bool) {
        let was = self.saturated.swap(saturated, Ordering::Relaxed);
        if saturated && !was {
            self.changed.notify_all();
        }
    }

    /// Where workers connect.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `task` on a worker, blocking until it ends or its worker is lost.
    pub fn run(&self, task: NodeTask) -> Result<NodeResult, String> {
        let (reply, result) = mpsc::channel();
        {
            let mut state = self.lock();
            if state.closed {
                return Err("the run is ending".into());
            }
            state.pending.push_back(Pending { task, reply });
        }
        self.changed.notify_all();
        result
            .recv()
            .unwrap_or_else(|_| Err("the run ended before the task".into()))
    }

    /// Tasks waiting for a worker, and slots busy or free, for scaling.
    pub fn load(&self) -> (usize, usize, usize) {
        let state = self.lock();
        let busy: usize = state.workers.values().map(|w| w.busy.len()).sum();
        let slots: usize = state.workers.values().map(|w| w.slots).sum();
        (state.pending.len(), busy, slots - busy.min(slots))
    }

    /// The blocks with a connected worker, and whether each is idle and since when.
    pub fn blocks(&self) -> HashMap<String, Option<Instant>> {
        let state = self.lock();
        let mut blocks: HashMap<String, Option<Instant>> = HashMap::new();
        for w in state.workers.values() {
            let idle = w.busy.is_empty().then_some(w.idle_since);
            let entry = blocks.entry(w.block.clone()).or_insert(idle);
            *entry = match (*entry, idle) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        blocks
    }

    /// Records why `block` ended and drops its workers: their tasks fail with it.
    pub fn block_ended(&self, block: &str, cause: String) {
        let lost: Vec<u64> = {
            let mut state = self.lock();
            state.ended.insert(block.to_owned(), cause);
            state
                .workers
                .iter()
                .filter(|(_, w)| w.block == block)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in lost {
            self.lose(id, None);
        }
    }

    /// Ends `block` if none of its workers has a task, atomically with respect to
    /// handing out tasks; whether it did. Its workers are told to shut down.
    pub fn retire_if_idle(&self, block: &str, cause: String) -> bool {
        let retired: Vec<Worker> = {
            let mut state = self.lock();
            if state
                .workers
                .values()
                .any(|w| w.block == block && !w.busy.is_empty())
            {
                return false;
            }
            state.ended.insert(block.to_owned(), cause);
            let ids: Vec<u64> = state
                .workers
                .iter()
                .filter(|(_, w)| w.block == block)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| state.workers.remove(id))
                .collect()
        };
        for w in retired {
            let _ = send(&w.stream, &Message::Shutdown);
        }
        true
    }

    /// Fails every waiting task with `reason` (no worker will come).
    pub fn fail_pending(&self, reason: &str) {
        let pending: Vec<Pending> = self.lock().pending.drain(..).collect();
        for p in pending {
            let _ = p.reply.send(Err(reason.to_owned()));
        }
    }

    /// Ends the run's side: workers are told to shut down, waiting tasks fail.
    pub fn close(&self) {
        let streams: Vec<Arc<Mutex<TcpStream>>> = {
            let mut state = self.lock();
            state.closed = true;
            state.workers.values().map(|w| w.stream.clone()).collect()
        };
        for s in streams {
            let _ = send(&s, &Message::Shutdown);
        }
        self.fail_pending("the run ended");
        self.changed.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect(self.address);
    }

    fn serve_connection(self: &Arc<Self>, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let _ = stream.set_read_timeout(Some(self.heartbeat * 3));
        let _ = stream.set_nodelay(true);
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let stream = Arc::new(Mutex::new(stream));
        let hello = receive(&mut reader);
        let (block, host, slots) = match hello {
            Ok(Some(Message::Hello {
                version,
                secret,
                block,
                host,
                slots,
            })) => {
                if version != PROTOCOL_VERSION {
                    let reason =
                        format!("protocol version {version}, this run speaks {PROTOCOL_VERSION}");
                    tracing::warn!(
                        "executor {:?}: refused a worker from {peer}: {reason}",
                        self.label
                    );
                    let _ = send(&stream, &Message::Refused { reason });
                    return;
                }
                if !same_secret(&secret, &self.secret) {
                    tracing::warn!(
                        "executor {:?}: refused a worker from {peer}: wrong secret",
                        self.label
                    );
                    let _ = send(
                        &stream,
                        &Message::Refused {
                            reason: "wrong secret".into(),
                        },
                    );
                    return;
                }
                (block, host, slots.max(1))
            }
            _ => {
                tracing::warn!(
                    "executor {:?}: refused a connection from {peer}: no hello",
                    self.label
                );
                return;
            }
        };
        if send(
            &stream,
            &Message::Welcome {
                version: PROTOCOL_VERSION,
                heartbeat_secs: self.heartbeat.as_secs_f64(),
            },
        )
        .is_err()
        {
            return;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "executor {:?}: worker {id} connected from {host} (block {block}, {slots} slots)",
            self.label
        );
        self.lock().workers.insert(
            id,
            Worker {
                block,
                host,
                slots,
                busy: HashMap::new(),
                stream: stream.clone(),
                idle_since: Instant::now(),
            },
        );
        // Heartbeats out, tasks out, results in.
        let beat = {
            let (d, s) = (self.clone(), stream.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(d.heartbeat);
                if !d.lock().workers.contains_key(&id) || send(&s, &Message::Heartbeat).is_err() {
                    break;
                }
            })
        };
        let feeder = {
            let d = self.clone();
            std::thread::spawn(move || d.feed(id))
        };
        let lost_because = loop {
            match receive(&mut reader) {
                Ok(Some(Message::Done(result))) => {
                    let reply = {
                        let mut state = self.lock();
                        state.workers.get_mut(&id).and_then(|w| {
                            let r = w.busy.remove(&result.id);
                            if w.busy.is_empty() {
                                w.idle_since = Instant::now();
                            }
                            r
                        })
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(result));
                    }
                    self.changed.notify_all();
                }
                Ok(Some(Message::Heartbeat)) => {}
                Ok(Some(other)) => break Some(format!("unexpected message {other:?}")),
                Ok(None) => break Some("it closed the connection".into()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break Some(format!(
                        "no heartbeat for {:.0}s",
                        (self.heartbeat * 3).as_secs_f64()
                    ))
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        self.lose(id, lost_because);
        let _ = feeder.join();
        let _ = beat.join();
    }

    /// Sends waiting tasks to worker `id` while it has free slots.
    fn feed(&self, id: u64) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let Some(worker) = state.workers.get(&id) else {
                return;
            };
            // `prefetch` tasks more than its slots, queued on the node, hide the round
            // trip between one task's end and the next one's start (HTEX's
            // prefetch_capacity). While more blocks may come, none by default, so they
            // get the work; once all are up, as many as the worker's slots.
            let queued = if self.saturated.load(Ordering::Relaxed) {
                self.prefetch.max(worker.slots)
            } else {
                self.prefetch
            };
            if worker.busy.len() < worker.slots + queued && !state.pending.is_empty() {
                let p = state.pending.pop_front().expect("not empty");
                let worker = state.workers.get_mut(&id).expect("present");
                let stream = worker.stream.clone();
                worker.busy.insert(p.task.id, p.reply);
                drop(state);
                let sent = send(&stream, &Message::Task(p.task.clone()));
                state = self.lock();
                if sent.is_err() {
                    // The reader sees the broken connection and fails the task.
                    let _ = stream
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .shutdown(Shutdown::Both);
                }
                continue;
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Drops worker `id`; its tasks in flight fail as lost, with the block's cause
    /// when known.
    fn lose(&self, id: u64, why: Option<String>) {
        let (worker, cause) = {
            let mut state = self.lock();
            let Some(worker) = state.workers.remove(&id) else {
                return;
            };
            let cause = state.ended.get(&worker.block).cloned();
            (worker, cause)
        };
        let _ = worker
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown(Shutdown::Both);
        // A worker whose connection broke: its block may have just ended (cancelled,
        // out of time); the scheduler tells, a moment later at most.
        let explain = self
            .explain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let cause = match (cause, explain, worker.busy.is_empty()) {
            (None, Some(explain), false) => {
                let deadline = Instant::now() + Duration::from_secs(6);
                loop {
                    if let Some(c) = explain(&worker.block) {
                        break Some(c);
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            (cause, _, _) => cause,
        };
        if cause.is_none() && !self.lock().closed {
            let abandon = self
                .abandon
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(abandon) = abandon {
                abandon(&worker.block);
            }
        }
        let reason = match (cause, why) {
            (Some(cause), _) => cause,
            (None, Some(why)) => format!("{} (block {})", why, worker.block),
            (None, None) => format!("block {} ended", worker.block),
        };
        if !worker.busy.is_empty() {
            tracing::warn!(
                "executor {:?}: worker {id} on {} lost with {} task(s): {reason}",
                self.label,
                worker.host,
                worker.busy.len()
            );
        }
        for (_, reply) in worker.busy {
            let _ = reply.send(Err(format!("worker lost: {reason}")));
        }
        self.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------------
// The node's side.

/// How `stagehost worker` was asked to run.
pub struct WorkerOptions {
    pub connect: String,
    pub secret: String,
    pub executor: String,
    pub block: String,
    pub slots: usize,
    /// Retries of an in-task step whose error is transient.
    pub retries: u32,
}

/// Connects to the run and serves tasks until told to stop or the run is lost.
/// Call within a tokio runtime's `block_on` context is not needed: this blocks.
pub fn serve_worker(
    dm: Arc<DataManager>,
    options: WorkerOptions,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    let stream = TcpStream::connect(&options.connect)
        .map_err(|e| format!("cannot connect to the run at {}: {e}", options.connect))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let stream = Arc::new(Mutex::new(stream));
    let host = hostname();
    send(
        &stream,
        &Message::Hello {
            version: PROTOCOL_VERSION,
            secret: options.secret.clone(),
            block: options.block.clone(),
            host: host.clone(),
            slots: options.slots,
        },
    )
    .map_err(|e| format!("cannot greet the run: {e}"))?;
    let heartbeat = match receive(&mut reader) {
        Ok(Some(Message::Welcome { heartbeat_secs, .. })) => {
            Duration::from_secs_f64(heartbeat_secs.clamp(0.05, 86_400.0))
        }
        Ok(Some(Message::Refused { reason })) => {
            return Err(format!("the run refused this worker: {reason}"))
        }
        Ok(_) => return Err("the run did not answer the hello".into()),
        Err(e) => return Err(format!("the run did not answer the hello: {e}")),
    };
    reader
        .get_ref()
        .set_read_timeout(Some(heartbeat * 3))
        .map_err(|e| e.to_string())?;
    let commands =
        Arc::new(Commands::new(runtime.clone()).map_err(|e| format!("cannot create a pipe: {e}"))?);
    {
        let s = stream.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(heartbeat);
            if send(&s, &Message::Heartbeat).is_err() {
                break;
            }
        });
    }
    let (tasks_tx, tasks_rx) = mpsc::channel::<NodeTask>();
    let tasks_rx = Arc::new(Mutex::new(tasks_rx));
    for n in 0..options.slots.max(1) {
        let (rx, s, dm, commands) = (
            tasks_rx.clone(),
            stream.clone(),
            dm.clone(),
            commands.clone(),
        );
        let place = format!("{host} (block {})", options.block);
        let retries = options.retries;
        std::thread::Builder::new()
            .name(format!("stagehost-worker-{n}"))
            .spawn(move || loop {
                let task = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                    Ok(t) => t,
                    Err(_) => break,
                };
                let result = run_node_task(&dm, &commands, task, &place, retries);
                if send(&s, &Message::Done(result)).is_err() {
                    break;
                }
            })
            .map_err(|e| e.to_string())?;
    }
    loop {
        match receive(&mut reader) {
            Ok(Some(Message::Task(task))) => {
                let _ = tasks_tx.send(task);
            }
            Ok(Some(Message::Heartbeat)) => {}
            Ok(Some(Message::Shutdown)) => {
                commands.cancel();
                return Ok(());
            }
            Ok(Some(other)) => return Err(format!("unexpected message from the run: {other:?}")),
            Ok(None) => {
                commands.cancel();
                return Err("the run closed the connection".into());
            }
            Err(e) => {
                commands.cancel();
                return Err(format!("lost the run: {e}"));
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// One task on the node: in-task stage-ins, the command, in-task stage-outs.
fn run_node_task(
    dm: &DataManager,
    commands: &Commands,
    task: NodeTask,
    place: &str,
    retries: u32,
) -> NodeResult {
    let mut staged: Vec<NodeFileResult> = vec![NodeFileResult::default(); task.staged.len()];
    let mut error = None;
    for (i, f) in task.staged.iter().enumerate() {
        if f.direction == Direction::In {
            staged[i] = run_step(dm, &task.executor, f, retries);
            if let Some(e) = &staged[i].error {
                error = Some(format!("stage-in failed: {e}"));
                break;
            }
        }
    }
    if error.is_none() {
        let timeout = task.timeout_secs.map(Duration::from_secs_f64);
        let outcome = command::run(
            std::ffi::OsStr::new(&task.command),
            &task.files,
            commands,
            timeout,
        );
        match outcome {
            Err(e) => {
                // The scheduler ending the block signals the command and this worker
                // alike; a command killed by a signal is reported only if this worker
                // outlives it by a moment, so that the run blames the block's end
                // (its cause asked of the scheduler), not the command.
                if e.contains("killed by a signal") {
                    std::thread::sleep(Duration::from_secs(2));
                }
                error = Some(e);
            }
            Ok(()) => {
                let missing: Vec<String> = task
                    .files
                    .outputs
                    .iter()
                    .filter(|p| std::fs::symlink_metadata(p).is_err())
                    .map(|p| p.display().to_string())
                    .collect();
                if !missing.is_empty() {
                    error = Some(format!(
                        "missing outputs: the command exited 0 but did not write {}",
                        missing.join(", ")
                    ));
                }
            }
        }
    }
    if error.is_none() {
        for (i, f) in task.staged.iter().enumerate() {
            if f.direction == Direction::Out {
                staged[i] = run_step(dm, &task.executor, f, retries);
            }
        }
    }
    NodeResult {
        id: task.id,
        error,
        staged,
        place: place.to_owned(),
    }
}

/// Plans `f` here and runs its in-task step, retrying transient errors.
fn run_step(dm: &DataManager, executor: &str, f: &NodeFile, retries: u32) -> NodeFileResult {
    let start = Instant::now();
    let mut result = NodeFileResult {
        ran: true,
        ..NodeFileResult::default()
    };
    let file = match stagehost_plugin_api::File::parse(&f.url) {
        Ok(mut file) => {
            if let Some(p) = &f.local_path {
                file.set_local_path(p);
            }
            file
        }
        Err(e) => {
            result.error = Some(format!("{}: {}", e.kind(), e.message()));
            return result;
        }
    };
    let opts = StageOptions::default();
    loop {
        result.attempts += 1;
        let planned = match f.direction {
            Direction::In => dm.plan_stage_in(executor, &file, &opts),
            Direction::Out => dm.plan_stage_out(executor, &file, &opts),
        };
        let outcome = planned.and_then(|mut staging| {
            let done = staging.run_in_task_step(&opts)?;
            Ok((done, staging.file.filepath().ok()))
        });
        match outcome {
            Ok((done, path)) => {
                result.cached = done.cached;
                result.bytes = path
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len());
                result.error = None;
                break;
            }
            Err(e) if e.is_transient() && result.attempts <= retries => {
                std::thread::sleep(Duration::from_millis(200 * u64::from(result.attempts)));
            }
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}
