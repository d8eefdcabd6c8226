//! The run's side of a pilot executor: a [`Dispatcher`] that hands tasks to the
//! workers that connected with the run's secret, on one thread whatever the number of
//! workers, slots or connections.
//!
//! Every connection is a task on the dispatcher's own single-threaded tokio runtime:
//! the TLS handshake and the mutual proof (see `protocol.rs` for the messages), then
//! one loop that reads results and heartbeats and one that writes tasks, heartbeats
//! and `shutdown`. Handing out tasks is not a loop of its own: whenever a task
//! arrives, a result comes back, a worker joins or the last block comes up, the
//! waiting tasks go to the workers with free slots, under the state's lock, as
//! messages on each worker's outbox.
//!
//! Before a peer has proved itself everything read is bounded (a deadline, a few KiB
//! per message), and at most [`MAX_UNAUTHENTICATED`] connections wait for their proof
//! at once: a flood of idle or endless connections cannot exhaust the run's memory,
//! and the real workers still get in.
//!
//! Invariants: a connection that has not proved the secret gets no task; a task in
//! flight on a worker that is lost fails with the cause, and the engine retries it
//! within the task's retries.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::{proof, random_hex, same, RunKey, HANDSHAKE_DEADLINE, LIMIT, PRE_AUTH_LIMIT};
use super::protocol::{self, Message, NodeResult, NodeTask, PROTOCOL};

/// Connections that may wait for their proof at once; a new one beyond closes the
/// oldest of those that got least far (no TLS yet, before those with TLS but no
/// hello), so a flood of silent connections neither exhausts the run nor keeps a real
/// worker, which gets through TLS in a moment, out.
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

/// Starts and ends the pilot jobs whose workers connect to a [`Dispatcher`]: the part
/// of an executor kind that knows its scheduler (`blocks::Blocks` over Slurm or child
/// processes; a Kubernetes kind would start pods).
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

struct Worker {
    block: String,
    host: String,
    slots: usize,
    /// It takes tasks beyond its slots, queued on the node (its `prefetch` feature).
    queues: bool,
    busy: HashMap<u64, Reply>,
    /// What the connection's writer sends, in order.
    outbox: mpsc::UnboundedSender<Message>,
    /// Ends the connection (the worker is dropped).
    hangup: CancellationToken,
    idle_since: Instant,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    workers: HashMap<u64, Worker>,
    /// Why a block ended, once known (`Slurm job 42 ended (TIMEOUT)`).
    ended: HashMap<String, String>,
    /// Every block a worker of which joined, even for a moment.
    joined: std::collections::HashSet<String>,
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
    saturated: AtomicBool,
    explain: Mutex<Option<Explain>>,
    abandon: Mutex<Option<Abandon>>,
    key: RunKey,
    /// Connections still before their proof, oldest first, with what closes each.
    waiting: Mutex<VecDeque<Waiting>>,
    heartbeat: Duration,
    address: std::net::SocketAddr,
    state: Mutex<State>,
    /// Ends the accept loop (the run is ending).
    stop: CancellationToken,
    next_conn: AtomicU64,
}

/// A connection still to prove the secret: what closes it, and how far it got (0
/// connected, 1 through TLS, 2 said hello).
struct Waiting {
    conn: u64,
    handle: tokio::task::AbortHandle,
    progress: Arc<std::sync::atomic::AtomicU8>,
}

/// Reads message lines from a connection, each at most a given size.
struct Lines<R> {
    inner: BufReader<R>,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    /// The next message (at most `limit` bytes), `None` at the end of the connection.
    /// Never holds more than `limit` bytes plus one buffer of a line.
    async fn next<T: serde::de::DeserializeOwned>(
        &mut self,
        limit: usize,
    ) -> std::io::Result<Option<T>> {
        let mut line = Vec::new();
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return if line.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
            let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            if line.len() > limit + 1 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a message longer than {limit} bytes"),
                ));
            }
            if complete {
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// Writes one message line.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, message: &Message) -> std::io::Result<()> {
    send_all(w, std::slice::from_ref(message)).await
}

/// Writes message lines in one go (one TLS record and one write for a burst of tasks).
async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, messages: &[Message]) -> std::io::Result<()> {
    let mut lines = Vec::with_capacity(512 * messages.len());
    for message in messages {
        serde_json::to_writer(&mut lines, message).map_err(std::io::Error::other)?;
        lines.push(b'\n');
    }
    w.write_all(&lines).await?;
    w.flush().await
}

impl Dispatcher {
    /// Listens on `bind` (port 0: any) for the workers of executor `label`, on a
    /// thread of its own.
    pub fn start(
        label: &str,
        bind: &str,
        key: RunKey,
        heartbeat: Duration,
        prefetch: usize,
    ) -> std::io::Result<Arc<Dispatcher>> {
        let listener = std::net::TcpListener::bind((bind, 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Asking the scheduler why a worker was lost, or cancelling its block,
            // waits for a command: that happens off the connections' thread.
            .max_blocking_threads(8)
            .thread_name(format!("stagehost-{label}-dispatch"))
            .build()?;
        let dispatcher = Arc::new(Dispatcher {
            label: label.to_owned(),
            prefetch,
            saturated: AtomicBool::new(false),
            explain: Mutex::new(None),
            abandon: Mutex::new(None),
            key,
            waiting: Mutex::new(VecDeque::new()),
            heartbeat,
            address,
            state: Mutex::new(State::default()),
            stop: CancellationToken::new(),
            next_conn: AtomicU64::new(1),
        });
        let d = dispatcher.clone();
        std::thread::Builder::new()
            .name(format!("stagehost-{label}-dispatch"))
            .spawn(move || runtime.block_on(d.accept_loop(listener)))?;
        Ok(dispatcher)
    }

    /// Accepts connections until the run ends, then gives the workers' connections a
    /// moment to deliver their `shutdown`.
    async fn accept_loop(self: Arc<Self>, listener: std::net::TcpListener) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                log_refusal(&self.label, &format!("cannot listen: {e}"));
                self.fail_pending(&format!("executor {:?} cannot listen: {e}", self.label));
                return;
            }
        };
        let mut connections = tokio::task::JoinSet::new();
        let mut pause = Duration::from_millis(10);
        loop {
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    pause = Duration::from_millis(10);
                    stream
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) or memory: back off instead of
                    // spinning, and let the held connections go first.
                    log_refusal(&self.label, &format!("cannot accept a connection: {e}"));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let progress = Arc::new(std::sync::atomic::AtomicU8::new(0));
            let handle = connections.spawn(self.clone().serve_connection(
                stream,
                conn,
                progress.clone(),
            ));
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len() >= MAX_UNAUTHENTICATED {
                // The oldest of those that got least far (the queue is oldest first).
                let least = waiting
                    .iter()
                    .map(|w| w.progress.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0);
                if let Some(at) = waiting
                    .iter()
                    .position(|w| w.progress.load(Ordering::Relaxed) == least)
                {
                    if let Some(closed) = waiting.remove(at) {
                        closed.handle.abort();
                    }
                }
                log_refusal(
                    &self.label,
                    &format!(
                        "closed one of {MAX_UNAUTHENTICATED} connections still to prove the secret"
                    ),
                );
            }
            waiting.push_back(Waiting {
                conn,
                handle,
                progress,
            });
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
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
            self.dispatch(&mut self.lock());
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
        let mut state = self.lock();
        if state.closed {
            return Err("the run is ending".into());
        }
        state.pending.push_back(Pending { task, reply });
        self.dispatch(&mut state);
        Ok(receipt)
    }

    /// Hands waiting tasks to workers with room, the emptiest first.
    fn dispatch(&self, state: &mut State) {
        if state.closed {
            return;
        }
        let saturated = self.saturated.load(Ordering::Relaxed);
        while !state.pending.is_empty() {
            // Free slots first; then, on a worker that queues on its node, `prefetch`
            // tasks more than its slots, which hide the round trip between one task's
            // end and the next one's start (HTEX's prefetch_capacity). While more
            // blocks may come, none by default, so they get the work; once all are
            // up, as many as the worker's slots.
            let room = |w: &Worker| {
                let queued = if !w.queues {
                    0
                } else if saturated {
                    self.prefetch.max(w.slots)
                } else {
                    self.prefetch
                };
                let free = w.slots.saturating_sub(w.busy.len());
                let total = (w.slots + queued).saturating_sub(w.busy.len());
                (free, total)
            };
            let Some((_, worker)) = state
                .workers
                .iter_mut()
                .map(|(id, w)| (room(w), (id, w)))
                .filter(|((_, total), _)| *total > 0)
                .max_by_key(|(room, (id, _))| (*room, std::cmp::Reverse(**id)))
                .map(|(_, w)| w)
            else {
                return;
            };
            let Pending { task, reply } = state.pending.pop_front().expect("not empty");
            worker.busy.insert(task.id, reply);
            // A worker whose writer is gone is being lost: the task fails with it.
            let _ = worker.outbox.send(Message::Task(task));
        }
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

    /// Whether a worker of `block` ever joined this run.
    pub fn has_joined(&self, block: &str) -> bool {
        self.lock().joined.contains(block)
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
        let mut state = self.lock();
        if state
            .workers
            .values()
            .any(|w| w.block == block && !w.busy.is_empty())
        {
            return false;
        }
        state.ended.insert(block.to_owned(), cause);
        state.workers.retain(|_, w| {
            if w.block != block {
                return true;
            }
            // The writer sends it, then ends the connection (the outbox is dropped).
            let _ = w.outbox.send(Message::Shutdown);
            false
        });
        true
    }

    /// Fails every waiting task with `reason` (no worker will come).
    pub fn fail_pending(&self, reason: &str) {
        let pending: Vec<Pending> = self.lock().pending.drain(..).collect();
        for p in pending {
            let _ = p.reply.send(Err(reason.to_owned()));
        }
    }

    /// Ends the run's side: workers are told to shut down, waiting tasks fail, the
    /// listener closes.
    pub fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            for w in state.workers.values() {
                let _ = w.outbox.send(Message::Shutdown);
            }
        }
        self.fail_pending("the run ended");
        self.stop.cancel();
    }

    /// Takes connection `conn` off the list of those still to prove the secret.
    fn forget_waiting(&self, conn: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = waiting.iter().position(|w| w.conn == conn) {
            waiting.remove(at);
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        conn: u64,
        progress: Arc<std::sync::atomic::AtomicU8>,
    ) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let deadline = tokio::time::Instant::now() + HANDSHAKE_DEADLINE;
        let authenticated =
            match tokio::time::timeout_at(deadline, self.authenticate(stream, &progress)).await {
                Ok(Ok(joined)) => Some(joined),
                Ok(Err(why)) => {
                    log_refusal(&self.label, &format!("refused a worker from {peer}: {why}"));
                    None
                }
                Err(_) => {
                    log_refusal(
                        &self.label,
                        &format!("refused a worker from {peer}: no proof within the deadline"),
                    );
                    None
                }
            };
        self.forget_waiting(conn);
        if let Some(joined) = authenticated {
            self.serve_worker(joined).await;
        }
    }

    /// The TLS handshake and the mutual proof, bounded in bytes (the caller bounds
    /// the time): the worker's connection and what its hello said, or why it was
    /// refused.
    async fn authenticate(
        &self,
        stream: tokio::net::TcpStream,
        progress: &std::sync::atomic::AtomicU8,
    ) -> Result<Joined, String> {
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.key.server_config());
        let tls = acceptor
            .accept(stream)
            .await
            .map_err(|e| format!("no TLS handshake ({e})"))?;
        progress.store(1, Ordering::Relaxed);
        let (reader, mut writer) = tokio::io::split(tls);
        let mut lines = Lines {
            inner: BufReader::with_capacity(16 << 10, reader),
        };
        let Ok(Some(Message::Hello {
            version,
            protocol,
            features,
            nonce,
            block,
            host,
            slots,
        })) = lines.next::<Message>(PRE_AUTH_LIMIT).await
        else {
            return Err("no hello".into());
        };
        progress.store(2, Ordering::Relaxed);
        if let Err(reason) = protocol::compatible(protocol.as_deref(), version) {
            let _ = send(
                &mut writer,
                &Message::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(reason);
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
        let run_nonce = random_hex().map_err(|e| format!("cannot make a nonce: {e}"))?;
        let challenge = Message::Challenge {
            proof: proof(&self.key.secret, "run", &nonce, &run_nonce),
            nonce: run_nonce.clone(),
        };
        send(&mut writer, &challenge)
            .await
            .map_err(|e| e.to_string())?;
        let expected = proof(&self.key.secret, "worker", &nonce, &run_nonce);
        match lines.next::<Message>(PRE_AUTH_LIMIT).await {
            Ok(Some(Message::Proof { proof })) if same(&proof, &expected) => {}
            // An answer that is not the proof is told why; a connection that broke
            // or ended is not written to again.
            Ok(Some(_)) => {
                let _ = send(
                    &mut writer,
                    &Message::Refused {
                        reason: "wrong secret".into(),
                    },
                )
                .await;
                return Err("wrong secret".into());
            }
            Ok(None) => return Err("it closed the connection before its proof".into()),
            Err(e) => return Err(format!("no proof ({e})")),
        }
        let welcome = Message::Welcome {
            protocol: PROTOCOL.to_owned(),
            features: protocol::features(),
            heartbeat_secs: self.heartbeat.as_secs_f64(),
        };
        send(&mut writer, &welcome)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Joined {
            lines,
            writer,
            block,
            host,
            slots: slots.max(1),
            features,
        })
    }

    /// A worker that proved the secret: tasks, heartbeats and `shutdown` out, results
    /// and heartbeats in, until it is lost, retired or the run ends.
    async fn serve_worker(self: Arc<Self>, joined: Joined) {
        let Joined {
            mut lines,
            mut writer,
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
        let (outbox, mut queued) = mpsc::unbounded_channel();
        let hangup = CancellationToken::new();
        let joined = {
            let mut state = self.lock();
            if state.closed {
                false
            } else {
                state.joined.insert(block.clone());
                state.workers.insert(
                    id,
                    Worker {
                        block,
                        host,
                        slots,
                        queues: protocol::has(&features, "prefetch"),
                        busy: HashMap::new(),
                        outbox,
                        hangup: hangup.clone(),
                        idle_since: Instant::now(),
                    },
                );
                self.dispatch(&mut state);
                true
            }
        };
        if !joined {
            let _ = send(&mut writer, &Message::Shutdown).await;
            return;
        }
        let heartbeat = self.heartbeat;
        let write = async {
            let mut beat = tokio::time::interval(heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat.tick().await;
            let mut burst = Vec::new();
            loop {
                let message = tokio::select! {
                    m = queued.recv() => match m {
                        Some(m) => m,
                        // Retired or closed: the `shutdown` went first.
                        None => {
                            let _ = writer.shutdown().await;
                            return None;
                        }
                    },
                    _ = beat.tick() => Message::Heartbeat,
                };
                burst.push(message);
                while burst.len() < 64 {
                    match queued.try_recv() {
                        Ok(m) => burst.push(m),
                        Err(_) => break,
                    }
                }
                if let Err(e) = send_all(&mut writer, &burst).await {
                    return Some(format!("cannot write to it: {e}"));
                }
                burst.clear();
            }
        };
        let read = async {
            loop {
                match tokio::time::timeout(heartbeat * 3, lines.next::<Message>(LIMIT)).await {
                    Ok(Ok(Some(Message::Done(result)))) => self.finished(id, result),
                    Ok(Ok(Some(Message::Heartbeat))) => {}
                    Ok(Ok(Some(other))) => return format!("unexpected message {other:?}"),
                    Ok(Ok(None)) => return "it closed the connection".to_owned(),
                    // Without TLS's close_notify: a worker killed, a node gone.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return "it closed the connection".to_owned()
                    }
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => {
                        return format!("no heartbeat for {:.0}s", (heartbeat * 3).as_secs_f64())
                    }
                }
            }
        };
        let why = tokio::select! {
            why = read => Some(why),
            why = write => why,
            _ = hangup.cancelled() => None,
        };
        // Asking the scheduler why waits for a command.
        let d = self.clone();
        let _ = tokio::task::spawn_blocking(move || d.lose(id, why)).await;
    }

    /// Worker `id` finished a task: its result goes to the submit side, its slot to
    /// the next task.
    fn finished(&self, id: u64, result: NodeResult) {
        let reply = {
            let mut state = self.lock();
            let reply = state.workers.get_mut(&id).and_then(|w| {
                let r = w.busy.remove(&result.id);
                if w.busy.is_empty() {
                    w.idle_since = Instant::now();
                }
                r
            });
            self.dispatch(&mut state);
            reply
        };
        if let Some(reply) = reply {
            let _ = reply.send(Ok(result));
        }
    }

    /// Drops worker `id`; its tasks in flight fail as lost, with the block's cause
    /// when known. Blocks (it may ask the scheduler).
    fn lose(&self, id: u64, why: Option<String>) {
        let (worker, cause) = {
            let mut state = self.lock();
            let Some(worker) = state.workers.remove(&id) else {
                return;
            };
            let cause = state.ended.get(&worker.block).cloned();
            (worker, cause)
        };
        worker.hangup.cancel();
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
            // A run that is ending (cancelled) loses its workers on purpose.
            if self.lock().closed {
                tracing::debug!(
                    "executor {:?}: worker {id} on {} stopped with {} task(s): {reason}",
                    self.label,
                    worker.host,
                    worker.busy.len()
                );
            } else {
                tracing::warn!(
                    "executor {:?}: worker {id} on {} lost with {} task(s): {reason}",
                    self.label,
                    worker.host,
                    worker.busy.len()
                );
            }
        }
        for (_, reply) in worker.busy {
            let _ = reply.send(Err(format!("worker lost: {reason}")));
        }
    }
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A worker that proved the secret: its connection, and what its hello said.
struct Joined {
    lines: Lines<tokio::io::ReadHalf<TlsStream>>,
    writer: tokio::io::WriteHalf<TlsStream>,
    block: String,
    host: String,
    slots: usize,
    features: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::channel::{Channel, WorkerKey};
    use crate::engine::node::join_run;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn dispatcher_named(label: &str) -> (Arc<Dispatcher>, WorkerKey) {
        let key = RunKey::generate().unwrap();
        let worker = WorkerKey::parse(&key.file_text()).unwrap();
        let d = Dispatcher::start(label, "127.0.0.1", key, Duration::from_secs(5), 0).unwrap();
        (d, worker)
    }

    fn dispatcher() -> (Arc<Dispatcher>, WorkerKey) {
        dispatcher_named("t")
    }

    /// The threads of this process that dispatcher `label` started (named
    /// `stagehost-<label>-…`; Linux keeps 15 bytes of a name). Tests run in parallel,
    /// so the whole process's count would measure the others too.
    fn threads(label: &str) -> usize {
        let prefix = format!("stagehost-{label}-");
        let prefix = &prefix[..prefix.len().min(15)];
        std::fs::read_dir("/proc/self/task").map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
    }

    fn task(id: u64) -> NodeTask {
        NodeTask {
            id,
            name: format!("t{id}"),
            executor: "t".into(),
            command: "true".into(),
            files: Default::default(),
            timeout_secs: None,
            staged: Vec::new(),
        }
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
                    reason.starts_with("protocol version 2, this side speaks 3.1.0"),
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
        let e = join_run(&at, &wrong, "b2", "h", 2).unwrap_err().to_string();
        assert!(e.contains("did not prove the secret"), "{e}");
        // Another run's key (what a process that took a dead run's port holds).
        let (other, _) = dispatcher();
        let e = join_run(&other.address().to_string(), &key, "b3", "h", 2).unwrap_err();
        assert!(!e.retry, "another run is never tried again");
        let e = e.to_string();
        assert!(e.contains("not this worker's run"), "{e}");
        // A run that closes the connection before the proof (as when strangers crowd
        // it) is tried again.
        let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closing_at = closing.local_addr().unwrap().to_string();
        let closer = std::thread::spawn(move || drop(closing.accept()));
        let e = join_run(&closing_at, &key, "b5", "h", 2).unwrap_err();
        assert!(e.retry, "{e}");
        closer.join().unwrap();
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
        let (d, key) = dispatcher_named("silent");
        let at = d.address();
        // Hundreds of connections that never speak: still the dispatcher's one thread.
        let silent: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect(at).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(threads("silent"), 1, "threads with 300 idle connections");
        // At most MAX_UNAUTHENTICATED of them are still held by the run.
        let held = silent
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count();
        assert!(held <= MAX_UNAUTHENTICATED, "{held} idle connections held");
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

    #[test]
    fn strangers_crowding_in_never_close_a_worker_that_got_further() {
        // A real worker gets through TLS in a moment; strangers that never speak,
        // however many arrive after it, are closed before it is.
        let (d, key) = dispatcher_named("crowd");
        let at = d.address();
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        let worker = Channel::connect(TcpStream::connect(at).unwrap(), &key, deadline).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let strangers: Vec<TcpStream> = (0..3 * MAX_UNAUTHENTICATED)
            .filter_map(|_| TcpStream::connect(at).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let nonce = "ab".repeat(32);
        worker
            .send(&Message::Hello {
                version: None,
                protocol: Some(PROTOCOL.to_owned()),
                features: Vec::new(),
                nonce: nonce.clone(),
                block: "b".into(),
                host: "h".into(),
                slots: 1,
            })
            .unwrap();
        let run_nonce =
            match worker.receive::<Message>(PRE_AUTH_LIMIT, Some(Duration::from_secs(5))) {
                Ok(Some(Message::Challenge { nonce, .. })) => nonce,
                other => panic!("the worker was closed by the crowd: {other:?}"),
            };
        worker
            .send(&Message::Proof {
                proof: proof(&key.secret, "worker", &nonce, &run_nonce),
            })
            .unwrap();
        assert!(matches!(
            worker.receive::<Message>(PRE_AUTH_LIMIT, Some(Duration::from_secs(5))),
            Ok(Some(Message::Welcome { .. }))
        ));
        drop(strangers);
        d.close();
    }

    /// Answers tasks at once until the run says `shutdown` (or, with `n`, until `n`
    /// tasks came); the ids answered.
    fn answer_tasks(ch: &Channel, n: Option<usize>) -> Vec<u64> {
        let mut ids = Vec::new();
        while Some(ids.len()) != n {
            match ch.receive::<Message>(LIMIT, Some(Duration::from_secs(10))) {
                Ok(Some(Message::Task(t))) => {
                    ids.push(t.id);
                    ch.send(&Message::Done(NodeResult {
                        id: t.id,
                        error: None,
                        staged: Vec::new(),
                        place: "here".into(),
                    }))
                    .unwrap();
                }
                Ok(Some(Message::Heartbeat)) => {}
                Ok(Some(Message::Shutdown)) if n.is_none() => break,
                other => panic!("{other:?}"),
            }
        }
        ids
    }

    #[test]
    fn many_workers_and_tasks_cost_no_thread_and_every_task_ends_once() {
        let (d, key) = dispatcher_named("many");
        let at = d.address().to_string();
        // Forty workers of four slots: the run side's threads do not grow with them.
        let workers: Vec<Arc<Channel>> = (0..40)
            .map(|i| join_run(&at, &key, &format!("b{i}"), "h", 4).unwrap().0)
            .collect();
        let receipts: Vec<Receipt> = (0..400).map(|i| d.submit(task(i)).unwrap()).collect();
        assert_eq!(threads("many"), 1, "threads with 40 workers");
        // Each worker gets exactly its share (4 slots, nothing queued beyond: no
        // prefetch), once the dispatcher's thread has handed them out.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while d.load() != (240, 160, 0) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(d.load(), (240, 160, 0));
        let first: Vec<u64> = workers
            .iter()
            .flat_map(|w| answer_tasks(w, Some(4)))
            .collect();
        assert_eq!(first.len(), 160);
        // The rest go out as slots free up; every result reaches its receipt.
        let answering: Vec<_> = workers
            .iter()
            .map(|w| {
                let w = w.clone();
                std::thread::spawn(move || answer_tasks(&w, None))
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (i, r) in receipts.into_iter().enumerate() {
            let result = rt.block_on(r).unwrap().unwrap();
            assert_eq!(result.id, i as u64);
        }
        d.close();
        let mut all: Vec<u64> = first
            .into_iter()
            .chain(answering.into_iter().flat_map(|t| t.join().unwrap()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_worker_fails_its_tasks_and_a_retired_one_is_told_to_stop() {
        let (d, key) = dispatcher();
        let at = d.address().to_string();
        let (gone, _) = join_run(&at, &key, "b1", "h", 1).unwrap();
        let (idle, _) = join_run(&at, &key, "b2", "h", 1).unwrap();
        let mut first = d.submit(task(1)).unwrap();
        let mut second = d.submit(task(2)).unwrap();
        // Each worker holds one; the first goes away without answering.
        std::thread::sleep(Duration::from_millis(200));
        gone.shutdown();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let lost = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                tokio::select! {
                    r = &mut first => (1, r),
                    r = &mut second => (2, r),
                }
            })
            .await
        });
        let (which, result) = lost.expect("the lost worker's task ended");
        let error = result.unwrap().unwrap_err();
        assert!(
            error.starts_with("worker lost: it closed the connection (block b1)"),
            "{error}"
        );
        // The other worker answers its task; its block, idle, is retired and it is
        // told to shut down.
        answer_tasks(&idle, Some(1));
        let other = if which == 1 { second } else { first };
        assert!(rt.block_on(other).unwrap().is_ok());
        assert!(d.retire_if_idle("b2", "idle".into()));
        loop {
            match idle.receive::<Message>(LIMIT, Some(Duration::from_secs(10))) {
                Ok(Some(Message::Heartbeat)) => {}
                Ok(Some(Message::Shutdown)) => break,
                other => panic!("{other:?}"),
            }
        }
        d.close();
    }
}
