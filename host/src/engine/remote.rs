//! Task bodies that run elsewhere: the wire protocol between a run and its workers,
//! the run's side (a [`Dispatcher`] that hands tasks to connected workers), and the
//! node's side ([`serve_worker`], behind `stagehost worker`).
//!
//! The protocol is one JSON message per line over TLS 1.3 pinned to the run's own
//! certificate ([`super::channel`]). A worker opens with `hello` (protocol version, a
//! nonce, its block and host, its slots); the run answers with a `challenge` (its own
//! nonce and its proof of the secret); the worker checks that proof and answers with
//! its own `proof`; the run answers `welcome` or `refused` and closes. Neither side
//! ever sends the secret. Then the run sends `task`s, the worker answers each with
//! `done`, and both send `heartbeat`s; a peer silent for three heartbeat periods is
//! lost. `shutdown` ends a worker.
//!
//! Before a peer has proved itself everything read is bounded (a deadline, a few KiB
//! per message), and at most [`MAX_UNAUTHENTICATED`] connections wait for their proof
//! at once: a flood of idle or endless connections cannot exhaust the run's memory or
//! threads, and the real workers still get in.
//!
//! The node re-plans each file that has an in-task step, from the same config, the
//! executor label, the URL and the destination planned on the submit side (a plan
//! holds plugin objects and cannot be shipped), and runs the steps and the command
//! there. Separate jobs never reach the node.
//!
//! Invariants: a connection that has not proved the secret gets no task, and a worker
//! runs nothing from a peer that has not proved it; a task
//! in flight on a worker that is lost fails with the cause, and the engine retries
//! it within the task's retries.

use std::collections::{HashMap, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::data_manager::Direction;

use super::attempt;
use super::channel::{
    proof, random_hex, same, Channel, RunKey, WorkerKey, HANDSHAKE_DEADLINE, LIMIT, PRE_AUTH_LIMIT,
};
use super::command::{self, Commands};
use super::protocol::{self, Message, PROTOCOL};
pub use super::protocol::{NodeFile, NodeFileResult, NodeResult, NodeTask};
use stagehost_core::runner::StageRunner;

/// Connections that may wait for their proof at once; a new one beyond closes the
/// oldest waiting (which has had the most time), so a flood of silent connections
/// neither exhausts threads nor keeps a real worker out.
pub const MAX_UNAUTHENTICATED: usize = 64;

/// Logs at most one line a second about refused connections (a flood must not flood
/// the log too), saying how many were left unsaid.
fn log_refusal(label: &str, line: &str) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match &mut *last {
        Some((at, unsaid)) if at.elapsed() < Duration::from_secs(1) => *unsaid += 1,
        _ => {
            let unsaid = last.map_or(0, |(_, n)| n);
            if unsaid > 0 {
                tracing::warn!("executor {label:?}: {line} ({unsaid} more refusals not logged)");
            } else {
                tracing::warn!("executor {label:?}: {line}");
            }
            *last = Some((Instant::now(), 0));
        }
    }
}

/// Time left before `deadline` (at least 1 ms).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
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

/// Where a task's result goes: the submit side awaits it, holding no thread.
type Reply = tokio::sync::oneshot::Sender<Result<NodeResult, String>>;

/// What [`Dispatcher::submit`] returns: the task's result, once it arrives.
pub type Receipt = tokio::sync::oneshot::Receiver<Result<NodeResult, String>>;

struct Pending {
    task: NodeTask,
    reply: Reply,
}

/// A worker that proved the secret: its channel, and what its hello said.
struct Joined {
    channel: Arc<Channel>,
    block: String,
    host: String,
    slots: usize,
    features: Vec<String>,
}

struct Worker {
    block: String,
    host: String,
    slots: usize,
    /// It takes tasks beyond its slots, queued on the node (its `prefetch` feature).
    queues: bool,
    busy: HashMap<u64, Reply>,
    channel: Arc<Channel>,
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
    key: RunKey,
    /// Connections still before their proof, oldest first (with a handle to close).
    waiting: Mutex<VecDeque<(u64, TcpStream)>>,
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
        key: RunKey,
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
            key,
            waiting: Mutex::new(VecDeque::new()),
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
                let mut pause = Duration::from_millis(10);
                loop {
                    let accepted = listener.accept();
                    if d.lock().closed {
                        break;
                    }
                    let stream = match accepted {
                        Ok((stream, _)) => {
                            pause = Duration::from_millis(10);
                            stream
                        }
                        Err(e) => {
                            // Out of descriptors (EMFILE) or memory: back off instead
                            // of spinning, and let the held connections go first.
                            log_refusal(&d.label, &format!("cannot accept a connection: {e}"));
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_secs(1));
                            continue;
                        }
                    };
                    let Ok(handle) = stream.try_clone() else {
                        continue;
                    };
                    let conn = d.next_conn.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut waiting = d.waiting.lock().unwrap_or_else(|p| p.into_inner());
                        if waiting.len() >= MAX_UNAUTHENTICATED {
                            if let Some((_, oldest)) = waiting.pop_front() {
                                let _ = oldest.shutdown(std::net::Shutdown::Both);
                            }
                            log_refusal(
                                &d.label,
                                &format!(
                                    "closed the oldest of {MAX_UNAUTHENTICATED} connections still to prove the secret"
                                ),
                            );
                        }
                        waiting.push_back((conn, handle));
                    }
                    let spawned = std::thread::Builder::new()
                        .name(format!("stagehost-{}-conn", d.label))
                        .spawn({
                            let d = d.clone();
                            move || d.serve_connection(stream, conn)
                        });
                    if spawned.is_err() {
                        d.forget_waiting(conn);
                    }
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

    /// Queues `task` for a worker; the receipt resolves when it ends or its worker is
    /// lost.
    pub fn submit(&self, task: NodeTask) -> Result<Receipt, String> {
        let (reply, receipt) = tokio::sync::oneshot::channel();
        {
            let mut state = self.lock();
            if state.closed {
                return Err("the run is ending".into());
            }
            state.pending.push_back(Pending { task, reply });
        }
        self.changed.notify_all();
        Ok(receipt)
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
            let _ = w.channel.send(&Message::Shutdown);
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
        let channels: Vec<Arc<Channel>> = {
            let mut state = self.lock();
            state.closed = true;
            state.workers.values().map(|w| w.channel.clone()).collect()
        };
        for c in channels {
            let _ = c.send(&Message::Shutdown);
        }
        self.fail_pending("the run ended");
        self.changed.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect(self.address);
    }

    /// Takes connection `conn` off the list of those still to prove the secret.
    fn forget_waiting(&self, conn: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = waiting.iter().position(|(c, _)| *c == conn) {
            waiting.remove(at);
        }
    }

    fn serve_connection(self: &Arc<Self>, stream: TcpStream, conn: u64) {
        let authenticated = self.authenticate(stream);
        self.forget_waiting(conn);
        if let Some(joined) = authenticated {
            self.serve_worker_connection(joined);
        }
    }

    /// The TLS handshake and the mutual proof, bounded in time and bytes: the worker's
    /// channel, block, host and slots, or `None` (refused, logged).
    fn authenticate(&self, stream: TcpStream) -> Option<Joined> {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        let refuse = |why: &str| {
            log_refusal(&self.label, &format!("refused a worker from {peer}: {why}"));
        };
        let channel = match Channel::accept(stream, &self.key, deadline) {
            Ok(channel) => Arc::new(channel),
            Err(e) => {
                refuse(&format!("no TLS handshake ({e})"));
                return None;
            }
        };
        let hello = channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline)));
        let Ok(Some(Message::Hello {
            version,
            protocol,
            features,
            nonce,
            block,
            host,
            slots,
        })) = hello
        else {
            refuse("no hello");
            return None;
        };
        if let Err(reason) = protocol::compatible(protocol.as_deref(), version) {
            refuse(&reason);
            let _ = channel.send(&Message::Refused { reason });
            return None;
        }
        tracing::debug!(
            "executor {:?}: a worker of protocol {} ({})",
            self.label,
            protocol
                .as_deref()
                .map(stagehost_plugin_api::display::escape)
                .unwrap_or_default(),
            features.join(", ")
        );
        let Ok(run_nonce) = random_hex(32) else {
            return None;
        };
        let challenge = Message::Challenge {
            proof: proof(&self.key.secret, "run", &nonce, &run_nonce),
            nonce: run_nonce.clone(),
        };
        if channel.send(&challenge).is_err() {
            return None;
        }
        let expected = proof(&self.key.secret, "worker", &nonce, &run_nonce);
        match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline))) {
            Ok(Some(Message::Proof { proof })) if same(&proof, &expected) => {}
            _ => {
                refuse("wrong secret");
                let _ = channel.send(&Message::Refused {
                    reason: "wrong secret".into(),
                });
                return None;
            }
        }
        if channel
            .send(&Message::Welcome {
                protocol: PROTOCOL.to_owned(),
                features: protocol::features(),
                heartbeat_secs: self.heartbeat.as_secs_f64(),
            })
            .is_err()
        {
            return None;
        }
        Some(Joined {
            channel,
            block,
            host,
            slots: slots.max(1),
            features,
        })
    }

    fn serve_worker_connection(self: &Arc<Self>, joined: Joined) {
        let Joined {
            channel,
            block,
            host,
            slots,
            features,
        } = joined;
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
                queues: protocol::has(&features, "prefetch"),
                busy: HashMap::new(),
                channel: channel.clone(),
                idle_since: Instant::now(),
            },
        );
        // Heartbeats out, tasks out, results in.
        let beat = {
            let (d, c) = (self.clone(), channel.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(d.heartbeat);
                if !d.lock().workers.contains_key(&id) || c.send(&Message::Heartbeat).is_err() {
                    break;
                }
            })
        };
        let feeder = {
            let d = self.clone();
            std::thread::spawn(move || d.feed(id))
        };
        let lost_because = loop {
            match channel.receive::<Message>(LIMIT, Some(self.heartbeat * 3)) {
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
            let queued = if !worker.queues {
                0
            } else if self.saturated.load(Ordering::Relaxed) {
                self.prefetch.max(worker.slots)
            } else {
                self.prefetch
            };
            if worker.busy.len() < worker.slots + queued && !state.pending.is_empty() {
                let p = state.pending.pop_front().expect("not empty");
                let worker = state.workers.get_mut(&id).expect("present");
                let channel = worker.channel.clone();
                worker.busy.insert(p.task.id, p.reply);
                drop(state);
                let sent = channel.send(&Message::Task(p.task.clone()));
                state = self.lock();
                if sent.is_err() {
                    // The reader sees the broken connection and fails the task.
                    channel.shutdown();
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
        worker.channel.shutdown();
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
    /// The run's secret and certificate fingerprint, from the secret file.
    pub key: WorkerKey,
    pub executor: String,
    pub block: String,
    pub slots: usize,
}

/// Connects to the run and serves tasks until told to stop or the run is lost.
/// Call within a tokio runtime's `block_on` context is not needed: this blocks.
pub fn serve_worker(
    runner: Arc<StageRunner>,
    options: WorkerOptions,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    let host = hostname();
    let (channel, heartbeat) = join_run(
        &options.connect,
        &options.key,
        &options.block,
        &host,
        options.slots,
    )?;
    let commands =
        Arc::new(Commands::new(runtime.clone()).map_err(|e| format!("cannot create a pipe: {e}"))?);
    {
        let c = channel.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(heartbeat);
            if c.send(&Message::Heartbeat).is_err() {
                break;
            }
        });
    }
    // SIGTERM, SIGINT or SIGHUP (the scheduler ending the block, a user): stop as when
    // the run says so, its commands' groups killed before this process exits.
    {
        let (c, commands) = (channel.clone(), commands.clone());
        runtime.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
            }
            commands.cancel();
            c.shutdown();
        });
    }
    let (tasks_tx, tasks_rx) = mpsc::channel::<NodeTask>();
    let tasks_rx = Arc::new(Mutex::new(tasks_rx));
    let mut slots = Vec::new();
    for n in 0..options.slots.max(1) {
        let (rx, s, runner, commands, runtime) = (
            tasks_rx.clone(),
            channel.clone(),
            runner.clone(),
            commands.clone(),
            runtime.clone(),
        );
        let place = format!("{host} (block {})", options.block);
        let slot = std::thread::Builder::new()
            .name(format!("stagehost-worker-{n}"))
            .spawn(move || loop {
                let task = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                    Ok(t) => t,
                    Err(_) => break,
                };
                let result = run_node_task(&runner, &runtime, &commands, task, &place);
                if s.send(&Message::Done(result)).is_err() {
                    break;
                }
            })
            .map_err(|e| e.to_string())?;
        slots.push(slot);
    }
    let ended = loop {
        match channel.receive::<Message>(LIMIT, Some(heartbeat * 3)) {
            Ok(Some(Message::Task(task))) => {
                let _ = tasks_tx.send(task);
            }
            Ok(Some(Message::Heartbeat)) => {}
            Ok(Some(Message::Shutdown)) => break Ok(()),
            Ok(Some(other)) => break Err(format!("unexpected message from the run: {other:?}")),
            Ok(None) => break Err("the run closed the connection".into()),
            Err(e) => break Err(format!("lost the run: {}", e.kind())),
        }
    };
    // Every command is stopped and its group killed (SIGTERM, then SIGKILL after the
    // grace) before this process exits: none outlives the worker.
    commands.cancel();
    drop(tasks_tx);
    let until = Instant::now() + Duration::from_secs(10);
    for slot in slots {
        while !slot.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    commands.kill_leftovers();
    ended
}

/// The worker's side of the handshake: TLS pinned to the run's certificate, then the
/// mutual proof. The channel and the heartbeat period the run asked for.
fn join_run(
    connect: &str,
    key: &WorkerKey,
    block: &str,
    host: &str,
    slots: usize,
) -> Result<(Arc<Channel>, Duration), String> {
    let sock = TcpStream::connect(connect)
        .map_err(|e| format!("cannot connect to the run at {}: {e}", connect))?;
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    // Only the run whose certificate the secret file names completes this: whoever
    // holds the port after the run died does not, and this worker runs nothing.
    let channel = Arc::new(Channel::connect(sock, key, deadline).map_err(|e| {
        format!(
            "no secure channel to the run at {} ({e}): it is not this worker's run, or the run is gone",
            connect
        )
    })?);
    let nonce = random_hex(32).map_err(|e| format!("cannot make a nonce: {e}"))?;
    channel
        .send(&Message::Hello {
            version: None,
            protocol: Some(PROTOCOL.to_owned()),
            features: protocol::features(),
            nonce: nonce.clone(),
            block: block.to_owned(),
            host: host.to_owned(),
            slots,
        })
        .map_err(|e| format!("cannot greet the run: {e}"))?;
    let secret = &key.secret;
    let run_nonce = match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline))) {
        Ok(Some(Message::Challenge {
            nonce: run_nonce,
            proof: given,
        })) if same(&given, &proof(secret, "run", &nonce, &run_nonce)) => run_nonce,
        Ok(Some(Message::Challenge { .. })) => {
            return Err("the run did not prove the secret: it is not this worker's run".into())
        }
        Ok(Some(Message::Refused { reason })) => {
            return Err(format!("the run refused this worker: {reason}"))
        }
        Ok(_) => return Err("the run did not answer the hello".into()),
        Err(e) => return Err(format!("the run did not answer the hello: {e}")),
    };
    channel
        .send(&Message::Proof {
            proof: proof(secret, "worker", &nonce, &run_nonce),
        })
        .map_err(|e| format!("cannot answer the run: {e}"))?;
    let heartbeat = match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline))) {
        Ok(Some(Message::Welcome {
            protocol: theirs,
            heartbeat_secs,
            ..
        })) => {
            protocol::compatible(Some(&theirs), None)
                .map_err(|why| format!("the run speaks another protocol: {why}"))?;
            Duration::from_secs_f64(heartbeat_secs.clamp(0.05, 86_400.0))
        }
        Ok(Some(Message::Refused { reason })) => {
            return Err(format!("the run refused this worker: {reason}"))
        }
        Ok(_) => return Err("the run did not welcome this worker".into()),
        Err(e) => return Err(format!("the run did not welcome this worker: {e}")),
    };
    Ok((channel, heartbeat))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// One task on the node: the same attempt as the engine's (`attempt.rs`), its in-task
/// steps re-planned here and run through the node's [`StageRunner`] under the run's
/// transfer policy.
fn run_node_task(
    runner: &StageRunner,
    runtime: &tokio::runtime::Handle,
    commands: &Commands,
    task: NodeTask,
    place: &str,
) -> NodeResult {
    // Each step's result, by the index the run sent it at.
    let files = &task.staged;
    let results = std::cell::RefCell::new(vec![NodeFileResult::default(); files.len()]);
    let run = |i: usize| {
        let r = run_step(runner, runtime, &task.executor, &files[i]);
        let failed = r.error.clone();
        results.borrow_mut()[i] = r;
        failed
    };
    let of =
        |direction: Direction| (0..files.len()).filter(move |&i| files[i].direction == direction);
    let ins = of(Direction::In)
        .map(|i| Box::new(move || run(i).map_or(Ok(()), Err)) as attempt::StageIn<'_>)
        .collect();
    let outs = of(Direction::Out)
        .map(|i| {
            Box::new(move || {
                run(i);
            }) as attempt::StageOut<'_>
        })
        .collect();
    let body = || {
        let timeout = task.timeout_secs.map(Duration::from_secs_f64);
        command::run(
            std::ffi::OsStr::new(&task.command),
            &task.files,
            commands,
            timeout,
        )
        .map_err(|e| {
            // The scheduler ending the block signals the command and this worker
            // alike; a command killed by a signal is reported only if this worker
            // outlives it by a moment, so that the run blames the block's end (its
            // cause asked of the scheduler), not the command.
            if e.by_signal() {
                std::thread::sleep(Duration::from_secs(2));
            }
            e.to_string()
        })
    };
    let error = attempt::attempt(ins, body, &task.files.outputs, outs).err();
    let staged = results.into_inner();
    NodeResult {
        id: task.id,
        error,
        staged,
        place: place.to_owned(),
    }
}

/// Plans `f` here and runs its in-task step through `runner` (retries, timeout,
/// limits: the run's `[transfers]`).
fn run_step(
    runner: &StageRunner,
    runtime: &tokio::runtime::Handle,
    executor: &str,
    f: &NodeFile,
) -> NodeFileResult {
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
    match runner.plan_from(executor, &file, f.direction, f.placed) {
        Ok(mut staging) => {
            // The separate job ran on the submit side.
            staging.separate_job = None;
            let outcome = runtime.block_on(runner.run(staging, &file));
            result.attempts = outcome.attempts;
            result.cached = outcome.cached;
            result.bytes = outcome.bytes;
            result.error = outcome.result.err().map(|e| e.to_string());
        }
        Err(e) => {
            result.attempts = 1;
            result.error = Some(e.to_string());
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn dispatcher() -> (Arc<Dispatcher>, WorkerKey) {
        let key = RunKey::generate().unwrap();
        let worker = WorkerKey::parse(&key.file_text()).unwrap();
        let d = Dispatcher::start("t", "127.0.0.1", key, Duration::from_secs(5), 0).unwrap();
        (d, worker)
    }

    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
    }

    #[test]
    fn a_worker_of_another_protocol_is_refused_naming_both_versions() {
        let (d, key) = dispatcher();
        let sock = TcpStream::connect(d.address()).unwrap();
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        let channel = Channel::connect(sock, &key, deadline).unwrap();
        // What a worker of protocol 2 (an older stagehost) says first.
        channel
            .send(&Message::Hello {
                version: Some(2),
                protocol: None,
                features: Vec::new(),
                nonce: "00".repeat(32),
                block: "b".into(),
                host: "h".into(),
                slots: 1,
            })
            .unwrap();
        match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(Duration::from_secs(5))) {
            Ok(Some(Message::Refused { reason })) => {
                assert!(
                    reason.starts_with("protocol version 2, this side speaks 3.0.0"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        d.close();
    }

    #[test]
    fn only_a_worker_that_proves_the_secret_joins_and_it_joins_only_its_run() {
        let (d, key) = dispatcher();
        let at = d.address().to_string();
        assert!(join_run(&at, &key, "b1", "h", 2).is_ok());
        // The right certificate but a wrong secret: refused, by name.
        let wrong = WorkerKey {
            secret: "11".repeat(32),
            ..key.clone()
        };
        let e = join_run(&at, &wrong, "b2", "h", 2).unwrap_err();
        assert!(e.contains("did not prove the secret"), "{e}");
        // Another run's key (what a process that took a dead run's port holds).
        let (other, _) = dispatcher();
        let e = join_run(&other.address().to_string(), &key, "b3", "h", 2).unwrap_err();
        assert!(e.contains("not this worker's run"), "{e}");
        // An impostor that speaks plain text gets nothing it can use: the first bytes
        // a worker sends are a TLS ClientHello, never the secret.
        let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fake_at = fake.local_addr().unwrap().to_string();
        let heard = std::thread::spawn(move || {
            let (mut c, _) = fake.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(b"{\"type\":\"welcome\",\"version\":2,\"heartbeat_secs\":1}\n");
            buf.truncate(n);
            buf
        });
        assert!(join_run(&fake_at, &key, "b4", "h", 2).is_err());
        let bytes = heard.join().unwrap();
        assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record");
        assert!(!String::from_utf8_lossy(&bytes).contains(&key.secret));
        d.close();
        other.close();
    }

    #[test]
    fn silent_and_endless_peers_are_bounded_and_a_real_worker_still_joins() {
        let (d, key) = dispatcher();
        let at = d.address();
        let before = threads();
        // Hundreds of connections that never speak.
        let silent: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect(at).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let during = threads();
        assert!(
            during <= before + MAX_UNAUTHENTICATED + 8,
            "{during} threads with 300 idle connections (from {before})"
        );
        // One that completes TLS, then sends an endless line: cut off after a few KiB.
        let sock = TcpStream::connect(at).unwrap();
        let fake = WorkerKey {
            secret: "22".repeat(32),
            ..key.clone()
        };
        let ch = Channel::connect(sock, &fake, Instant::now() + HANDSHAKE_DEADLINE).unwrap();
        let chunk = "a".repeat(64 << 10);
        let mut sent = 0usize;
        while sent < (64 << 20) {
            if ch.send(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        assert!(sent < (64 << 20), "the run kept reading an endless line");
        // A real worker still gets in.
        assert!(join_run(&at.to_string(), &key, "b", "h", 1).is_ok());
        drop(silent);
        d.close();
    }
}
