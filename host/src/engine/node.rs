//! The node's side of a pilot executor: `stagehost worker` joins its run (TLS pinned
//! to the run's certificate, then the mutual proof; see `protocol.rs`), runs the tasks
//! it is sent on its slots and answers each with `done`, sending heartbeats, until
//! the run says `shutdown`, the run is lost or a signal ends it.
//!
//! The node re-plans each file that has an in-task step, from the same config, the
//! executor label, the URL and the destination planned on the submit side (a plan
//! holds plugin objects and cannot be shipped), and runs the steps and the command
//! through the same attempt function as the local engine (`attempt.rs`). Separate
//! jobs never reach the node.
//!
//! Invariant: a worker runs nothing from a peer that has not proved the run's secret.

use std::net::TcpStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::data_manager::Direction;
use crate::report::FailureClass;

use super::attempt;
use super::channel::{
    proof, random_hex, same, Channel, WorkerKey, HANDSHAKE_DEADLINE, LIMIT, PRE_AUTH_LIMIT,
};
use super::command::{self, Commands};
use super::error::{BodyError, StepFailure};
use super::protocol::{self, Message, NodeFile, NodeFileResult, NodeResult, NodeTask, PROTOCOL};
use stagehost_core::runner::StageRunner;

/// Time left before `deadline` (at least 1 ms).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

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
    let (channel, heartbeat) = join_run_patiently(
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
    // the run says so, its commands' groups killed before this process exits. The
    // connection closes first: a command this worker stops is not the task's result
    // (the run learns the block's cause, `TIMEOUT`, from the scheduler), and a slot
    // must not report it as "cancelled" in between.
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
            c.shutdown();
            commands.cancel();
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

/// Why joining the run failed, and whether trying again may help (the connection
/// broke or was closed before the proof: a run busy refusing a flood of strangers
/// closes the oldest waiting connections, a real worker's among them).
#[derive(Debug)]
pub(super) struct JoinError {
    message: String,
    /// Another try may succeed.
    pub(super) retry: bool,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl JoinError {
    fn fatal(message: impl Into<String>) -> JoinError {
        JoinError {
            message: message.into(),
            retry: false,
        }
    }

    /// An I/O error: worth another try if the connection broke, timed out or was
    /// refused, not if the peer's TLS identity or data was wrong.
    fn io(message: String, e: &std::io::Error) -> JoinError {
        use std::io::ErrorKind as K;
        let retry = matches!(
            e.kind(),
            K::ConnectionReset
                | K::ConnectionAborted
                | K::ConnectionRefused
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::TimedOut
                | K::WouldBlock
        );
        JoinError { message, retry }
    }
}

/// [`join_run`], tried again (with a growing pause, for at most about 30 s) while
/// its failures are of the kind that another try may mend.
fn join_run_patiently(
    connect: &str,
    key: &WorkerKey,
    block: &str,
    host: &str,
    slots: usize,
) -> Result<(Arc<Channel>, Duration), String> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(50);
    loop {
        match join_run(connect, key, block, host, slots) {
            Ok(joined) => return Ok(joined),
            Err(e) if e.retry && Instant::now() + pause < until => {
                tracing::warn!("{e}; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e.message),
        }
    }
}

/// The worker's side of the handshake: TLS pinned to the run's certificate, then the
/// mutual proof. The channel and the heartbeat period the run asked for.
pub(super) fn join_run(
    connect: &str,
    key: &WorkerKey,
    block: &str,
    host: &str,
    slots: usize,
) -> Result<(Arc<Channel>, Duration), JoinError> {
    let sock = TcpStream::connect(connect)
        .map_err(|e| JoinError::io(format!("cannot connect to the run at {connect}: {e}"), &e))?;
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    // Only the run whose certificate the secret file names completes this: whoever
    // holds the port after the run died does not, and this worker runs nothing.
    let channel = Arc::new(Channel::connect(sock, key, deadline).map_err(|e| {
        JoinError::io(
            format!(
                "no secure channel to the run at {connect} ({e}): it is not this worker's run, or the run is gone"
            ),
            &e,
        )
    })?);
    let nonce = random_hex().map_err(|e| JoinError::fatal(format!("cannot make a nonce: {e}")))?;
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
        .map_err(|e| JoinError::io(format!("cannot greet the run: {e}"), &e))?;
    let secret = &key.secret;
    let run_nonce = match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline))) {
        Ok(Some(Message::Challenge {
            nonce: run_nonce,
            proof: given,
        })) if same(&given, &proof(secret, "run", &nonce, &run_nonce)) => run_nonce,
        Ok(Some(Message::Challenge { .. })) => {
            return Err(JoinError::fatal(
                "the run did not prove the secret: it is not this worker's run",
            ))
        }
        other => {
            return Err(not_answered(
                other,
                "answer the hello",
                "answering the hello",
            ))
        }
    };
    channel
        .send(&Message::Proof {
            proof: proof(secret, "worker", &nonce, &run_nonce),
        })
        .map_err(|e| JoinError::io(format!("cannot answer the run: {e}"), &e))?;
    let heartbeat = match channel.receive::<Message>(PRE_AUTH_LIMIT, Some(left(deadline))) {
        Ok(Some(Message::Welcome {
            protocol: theirs,
            heartbeat_secs,
            ..
        })) => {
            protocol::compatible(Some(&theirs), None).map_err(|why| {
                JoinError::fatal(format!("the run speaks another protocol: {why}"))
            })?;
            Duration::from_secs_f64(heartbeat_secs.clamp(0.05, 86_400.0))
        }
        other => {
            return Err(not_answered(
                other,
                "welcome this worker",
                "welcoming this worker",
            ))
        }
    };
    Ok((channel, heartbeat))
}

/// Why the run's answer during the handshake was not the one expected: a refusal, a
/// wrong message, a closed connection (worth another try) or an I/O error.
fn not_answered(
    answer: std::io::Result<Option<Message>>,
    did_not: &str,
    before: &str,
) -> JoinError {
    match answer {
        Ok(Some(Message::Refused { reason })) => {
            JoinError::fatal(format!("the run refused this worker: {reason}"))
        }
        Ok(Some(_)) => JoinError::fatal(format!("the run did not {did_not}")),
        Ok(None) => JoinError {
            message: format!("the run closed the connection before {before}"),
            retry: true,
        },
        Err(e) => JoinError::io(format!("the run did not {did_not}: {e}"), &e),
    }
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
        .map(|i| {
            Box::new(move || run(i).map_or(Ok(()), |line| Err(StepFailure { line, kind: None })))
                as attempt::StageIn<'_>
        })
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
            BodyError::Command(e)
        })
    };
    let error = attempt::attempt(ins, body, &task.files.outputs, outs)
        .err()
        .map(|e| e.to_string());
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
            result.error_class = Some(FailureClass::of(e.kind()));
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
            if let Err(e) = outcome.result {
                result.error = Some(e.to_string());
                result.error_class = Some(e.class());
            }
        }
        Err(e) => {
            result.attempts = 1;
            result.error = Some(e.to_string());
            result.error_class = Some(e.class());
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}
