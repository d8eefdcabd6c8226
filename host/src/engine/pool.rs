//! An executor's workers: a fixed set of OS threads that take task phases (planning,
//! in-task steps, the body) from one queue, as Parsl's ThreadPoolExecutor does.
//!
//! Invariant: at most `workers` phases of one executor run at once; a busy pool never
//! sleeps between phases, so a queue of short tasks costs no thread wake-up per task.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// A fixed pool of worker threads.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Starts `workers` threads named `stagehost-<label>-<n>`; fails when the OS
    /// refuses a thread (the threads already started end with the pool).
    pub fn new(label: &str, workers: usize) -> Result<WorkerPool, String> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let pool = WorkerPool { shared };
        for n in 0..workers.max(1) {
            let shared = pool.shared.clone();
            std::thread::Builder::new()
                .name(format!("stagehost-{label}-{n}"))
                .spawn(move || worker(&shared))
                .map_err(|e| {
                    format!("executor {label:?}: cannot start worker thread {n} of {workers}: {e}")
                })?;
        }
        Ok(pool)
    }

    /// Queues `job` and wakes one worker.
    fn push(&self, job: Job) {
        self.shared
            .queue
            .lock()
            .expect("the pool lock is never poisoned")
            .jobs
            .push_back(job);
        self.shared.ready.notify_one();
    }

    /// Queues `f` for a worker and returns at once. `f` must not panic (the worker
    /// survives a panic, but nobody hears of it): catch what it calls.
    pub fn execute(&self, f: impl FnOnce() + Send + 'static) {
        self.push(Box::new(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }));
    }

    /// Runs `f` on a worker and waits for its result; `Err` with the panic message if
    /// `f` panicked (the worker survives).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.push(Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|payload| panic_message(&*payload));
            let _ = tx.send(result);
        }));
        rx.await
            .expect("a worker runs every job it takes, and jobs catch their panics")
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared
                .queue
                .lock()
                .expect("the pool lock is never poisoned");
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared
                    .ready
                    .wait(q)
                    .expect("the pool lock is never poisoned");
            }
        };
        job();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .expect("the pool lock is never poisoned")
            .closed = true;
        self.shared.ready.notify_all();
    }
}
