//! The kit for a provider that moves bytes to and from a remote place (http, ftp,
//! object stores, rsync): implement [`Transfer`] (its settings, what it claims, the
//! job that fetches a file and the one that sends it) and export
//! [`TransferProvider<YourTransfer>`](TransferProvider). The kit writes Parsl's
//! planning quartet once, the same for every such provider:
//! - `can_stage_in`/`can_stage_out` (and their `try_` forms) ask [`Transfer::claims`];
//! - `stage_in` sets the host's destination as the file's `local_path` (a provider
//!   never picks the path) and returns the fetching job when the work is a separate
//!   job (`mode = "separate"`); `replace_task` returns it when it is an in-task step
//!   (`mode = "in-task"`);
//! - `stage_out` keeps a `local_path` the task already has (else the host's
//!   destination) and returns the sending job the same way.
//!
//! A fetching job writes its file with [`download`]: the one loop that reads a body in
//! chunks into an [`AtomicFile`](crate::fs::AtomicFile), reports progress and checks
//! for cancellation per chunk, checks the announced length, and resumes a body that
//! broke off where it stopped (HTTP's `Range`, FTP's `REST`) through the protocol's
//! [`Passes`].
//!
//! ```
//! use stagehost_plugin_api::transfer::{Transfer, TransferProvider};
//! use stagehost_plugin_api::{File, Job, Settings, StageError, WorkPlace};
//!
//! struct Echo;
//! impl Transfer for Echo {
//!     fn new(_settings: &Settings) -> Result<Self, StageError> {
//!         Ok(Echo)
//!     }
//!     fn place(&self) -> WorkPlace {
//!         WorkPlace::Separate
//!     }
//!     fn claims(&self, file: &File) -> Result<bool, StageError> {
//!         Ok(file.scheme() == "echo")
//!     }
//!     fn get(&self, _file: &File) -> Result<Job, StageError> {
//!         Ok(Job::new(|_ctx| Ok(())))
//!     }
//!     fn put(&self, _file: &File) -> Result<Job, StageError> {
//!         Ok(Job::new(|_ctx| Ok(())))
//!     }
//! }
//! pub type EchoProvider = TransferProvider<Echo>;
//! ```

use std::io::{Read, Write};
use std::path::Path;

use crate::capability::{Entry, List, Schemes, Stat};
use crate::{display, Context, ErrorKind, File, Job, Provider, Settings, StageError, WorkPlace};

/// What a provider that moves bytes implements; [`TransferProvider`] makes it a
/// [`Provider`].
pub trait Transfer: Send + Sync + Sized + 'static {
    /// Reads the instance's settings.
    fn new(settings: &Settings) -> Result<Self, StageError>;
    /// Where its work runs: a separate job or an in-task step (its `mode` setting).
    fn place(&self) -> WorkPlace;
    /// Whether it stages `file`; an error for a URL it would claim but cannot use (a
    /// host that does not parse), which ends the file's planning with one line.
    fn claims(&self, file: &File) -> Result<bool, StageError>;
    /// The job that fetches `file` to its `local_path` (already set to the host's
    /// destination), or the error that refuses it at planning.
    fn get(&self, file: &File) -> Result<Job, StageError>;
    /// The job that sends `file` from its `local_path`, or the error that refuses it
    /// at planning.
    fn put(&self, file: &File) -> Result<Job, StageError>;
    /// The `stat` capability ([`Stat`]): override it and list `stat` in
    /// `export_provider!`'s `capabilities`. The default says the protocol cannot.
    fn stat(&self, _ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!("{}: this provider cannot stat", file.redacted_url()),
        ))
    }
    /// The `schemes` capability ([`Schemes`]): the only schemes [`Transfer::claims`]
    /// ever says yes to; override it and list `schemes` in `export_provider!`'s
    /// `capabilities`. The default, none, makes no promise.
    fn schemes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The `list` capability ([`List`]): override it and list `list` in
    /// `export_provider!`'s `capabilities`. The default says the protocol cannot.
    fn list(
        &self,
        _ctx: &Context<'_>,
        dir: &File,
        _recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!("{}: this provider cannot list", dir.redacted_url()),
        ))
    }
}

impl<T: Transfer> Stat for TransferProvider<T> {
    fn stat(&self, ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        self.0.stat(ctx, file)
    }
}

impl<T: Transfer> Schemes for TransferProvider<T> {
    fn schemes(&self) -> Vec<String> {
        self.0.schemes()
    }
}

impl<T: Transfer> List for TransferProvider<T> {
    fn list(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        self.0.list(ctx, dir, recursive)
    }
}

/// A [`Transfer`] as a [`Provider`]: the planning quartet, written once.
pub struct TransferProvider<T>(pub T);

impl<T: Transfer> TransferProvider<T> {
    /// `job()` when the work runs at `here`.
    fn job_at(
        &self,
        here: WorkPlace,
        job: impl FnOnce() -> Result<Job, StageError>,
    ) -> Result<Option<Job>, StageError> {
        if self.0.place() == here {
            job().map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: Transfer> Provider for TransferProvider<T> {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        T::new(settings).map(TransferProvider)
    }

    fn can_stage_in(&self, file: &File) -> bool {
        self.0.claims(file).unwrap_or(false)
    }

    fn can_stage_out(&self, file: &File) -> bool {
        self.0.claims(file).unwrap_or(false)
    }

    fn try_can_stage_in(&self, file: &File) -> Result<bool, StageError> {
        self.0.claims(file)
    }

    fn try_can_stage_out(&self, file: &File) -> Result<bool, StageError> {
        self.0.claims(file)
    }

    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        file.set_local_path(ctx.destination());
        self.job_at(WorkPlace::Separate, || self.0.get(file))
    }

    fn replace_task(&self, _ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        self.job_at(WorkPlace::InTask, || self.0.get(file))
    }

    fn stage_out(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        if file.local_path().is_none() {
            file.set_local_path(ctx.destination());
        }
        self.job_at(WorkPlace::Separate, || self.0.put(file))
    }

    fn replace_task_stage_out(
        &self,
        _ctx: &Context<'_>,
        file: &mut File,
    ) -> Result<Option<Job>, StageError> {
        self.job_at(WorkPlace::InTask, || self.0.put(file))
    }
}

/// How much [`download`] reads between two progress reports and cancellation checks.
pub const CHUNK: usize = 256 << 10;

/// A remote body as a protocol serves it to [`download`]: in passes, each opened at
/// the byte where the last one stopped.
pub trait Passes {
    /// What one pass reads.
    type Body: Read;
    /// Opens the pass that starts at byte `offset` (`0` first; later, where a broken
    /// pass stopped, once [`Passes::resume`] agreed).
    fn open(&mut self, ctx: &Context<'_>, offset: u64) -> Result<Self::Body, StageError>;
    /// The pass's body ended (a read gave 0 bytes): an error when its end says the
    /// transfer failed (FTP's closing reply). The default takes the end as it is.
    fn end(&mut self, body: Self::Body) -> Result<(), StageError> {
        drop(body);
        Ok(())
    }
    /// A read failed after `done` bytes in all: the error that says so (its kind
    /// decides whether a resume is tried). The body was dropped; a source whose
    /// connection is spent closes it here.
    fn broke(&mut self, done: u64, error: std::io::Error) -> StageError;
    /// The body held `done` bytes where `expected` were announced (`SIZE`,
    /// `Content-Length`).
    fn mismatch(&self, done: u64, expected: u64) -> StageError;
    /// Before a pass that resumes at `done`: what the log says it does ("resuming with
    /// REST 1024"), `None` when this body cannot resume (no validator, no ranges), or
    /// the error that refuses it (the file changed meanwhile: never stitched together).
    fn resume(&mut self, ctx: &Context<'_>, done: u64) -> Result<Option<String>, StageError>;
    /// The host cancelled mid-pass: end the pass at once (the default drops it).
    fn abort(&mut self, body: Self::Body) {
        drop(body);
    }
}

/// What [`download`] is asked to do.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    /// Where the file lands (written under a temporary name, renamed when whole).
    pub dest: &'a Path,
    /// The length the server announced, if it did: checked at the end, and what a
    /// short body resumes towards.
    pub expected: Option<u64>,
    /// How often one download may resume.
    pub max_resumes: u32,
    /// The most bytes the body may hold (a decoder's output), and the error beyond.
    pub limit: Option<(u64, String)>,
}

/// Reads `passes` into `download.dest`: chunks of [`CHUNK`] into an
/// [`AtomicFile`](crate::fs::AtomicFile), progress and a cancellation check per
/// chunk; a pass that breaks off (a transient error) or ends short of the announced
/// length resumes where it stopped, up to `max_resumes` times, when the source agrees;
/// the length is checked before the file is committed. The bytes written, once the
/// file is in place. On any error nothing is left at `dest` or beside it.
pub fn download<P: Passes>(
    ctx: &Context<'_>,
    passes: &mut P,
    download: Download<'_>,
) -> Result<u64, StageError> {
    let Download {
        dest,
        expected,
        max_resumes,
        limit,
    } = download;
    let mut out = crate::fs::AtomicFile::create(dest)?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut resumes = 0;
    ctx.progress(0, expected);
    loop {
        let mut body = passes.open(ctx, done)?;
        // Why this pass ended, if it failed.
        let broke = loop {
            if let Err(e) = ctx.check() {
                passes.abort(body);
                return Err(e);
            }
            match body.read(&mut buf) {
                Ok(0) => break passes.end(body).err(),
                Ok(n) => {
                    out.write_all(&buf[..n]).map_err(|e| {
                        StageError::io(format_args!("cannot write {}", display::path(dest)), &e)
                    })?;
                    done += n as u64;
                    if let Some((_, error)) = limit.as_ref().filter(|(most, _)| done > *most) {
                        return Err(StageError::new(ErrorKind::Other, error.clone()));
                    }
                    ctx.progress(done, expected);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    drop(body);
                    break Some(passes.broke(done, e));
                }
            }
        };
        let short = expected.is_some_and(|n| done < n);
        if broke.is_none() && !short {
            break;
        }
        let why = broke.unwrap_or_else(|| passes.mismatch(done, expected.unwrap_or_default()));
        if !(short && done > 0 && resumes < max_resumes && why.kind().is_transient()) {
            return Err(why);
        }
        match passes.resume(ctx, done)? {
            Some(note) => {
                resumes += 1;
                ctx.info(&format!("{}; {note}", why.message()));
            }
            None => return Err(why),
        }
    }
    if let Some(n) = expected.filter(|&n| n != done) {
        return Err(passes.mismatch(done, n));
    }
    out.commit()?;
    Ok(done)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    /// Bytes served in passes; the first `breaks` passes break off after `cut` bytes.
    struct Flaky {
        data: Vec<u8>,
        cut: usize,
        breaks: usize,
        resumable: bool,
        opened_at: Vec<u64>,
    }

    impl Passes for Flaky {
        type Body = std::io::Chain<std::io::Cursor<Vec<u8>>, Broken>;
        fn open(&mut self, _ctx: &Context<'_>, offset: u64) -> Result<Self::Body, StageError> {
            self.opened_at.push(offset);
            let rest = &self.data[offset as usize..];
            let (take, broken) = if self.breaks > 0 {
                self.breaks -= 1;
                (self.cut.min(rest.len()), true)
            } else {
                (rest.len(), false)
            };
            Ok(std::io::Cursor::new(rest[..take].to_vec()).chain(Broken(broken)))
        }
        fn broke(&mut self, done: u64, error: std::io::Error) -> StageError {
            StageError::transient(format!("broke off after {done} bytes: {error}"))
        }
        fn mismatch(&self, done: u64, expected: u64) -> StageError {
            StageError::transient(format!("{done} bytes, {expected} announced"))
        }
        fn resume(&mut self, _ctx: &Context<'_>, done: u64) -> Result<Option<String>, StageError> {
            Ok(self.resumable.then(|| format!("resuming at {done}")))
        }
    }

    /// A reader that fails (a reset connection) or ends.
    struct Broken(bool);
    impl Read for Broken {
        fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 {
                Err(std::io::ErrorKind::ConnectionReset.into())
            } else {
                Ok(0)
            }
        }
    }

    fn run(
        host: &TestHost,
        flaky: Flaky,
        expected: Option<u64>,
    ) -> (Result<u64, StageError>, Flaky) {
        let file = File::parse("x://h/data.bin").unwrap();
        let dest = host.destination(&file);
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(flaky)));
        let (out, inner) = (
            std::sync::Arc::new(std::sync::Mutex::new(None)),
            shared.clone(),
        );
        let result_slot = out.clone();
        let job = Job::new(move |ctx| {
            let mut flaky = inner.lock().unwrap().take().unwrap();
            let r = download(
                ctx,
                &mut flaky,
                Download {
                    dest: &dest,
                    expected,
                    max_resumes: 3,
                    limit: None,
                },
            );
            let ok = r.as_ref().map(|_| ()).map_err(Clone::clone);
            *result_slot.lock().unwrap() = Some(r);
            *inner.lock().unwrap() = Some(flaky);
            ok
        });
        let _ = host.run_job(job, &file);
        let r = out.lock().unwrap().take().unwrap();
        let flaky = shared.lock().unwrap().take().unwrap();
        (r, flaky)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_body_that_breaks_off_resumes_where_it_stopped_and_lands_whole() {
        let host = TestHost::new();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let flaky = Flaky {
            data: data.clone(),
            cut: CHUNK + 5,
            breaks: 2,
            resumable: true,
            opened_at: Vec::new(),
        };
        let (r, flaky) = run(&host, flaky, Some(data.len() as u64));
        assert_eq!(r.unwrap(), data.len() as u64);
        let cut = (CHUNK + 5) as u64;
        assert_eq!(flaky.opened_at, [0, cut, 2 * cut]);
        assert_eq!(
            std::fs::read(host.working_dir().join("data.bin")).unwrap(),
            data
        );
        let logs: Vec<String> = host.logs().into_iter().map(|(_, l)| l).collect();
        assert!(
            logs.iter()
                .any(|l| l.ends_with(&format!("; resuming at {cut}"))),
            "{logs:?}"
        );
        assert_eq!(
            host.progress().last(),
            Some(&(data.len() as u64, Some(data.len() as u64)))
        );
    }

    #[test]
    fn a_body_that_cannot_resume_or_is_short_leaves_nothing() {
        let host = TestHost::new();
        let data = vec![7u8; 1000];
        // Broken off, and the source cannot resume: its error, nothing left behind.
        let flaky = Flaky {
            data: data.clone(),
            cut: 300,
            breaks: 1,
            resumable: false,
            opened_at: Vec::new(),
        };
        let (r, _) = run(&host, flaky, Some(1000));
        assert_eq!(
            r.unwrap_err().message(),
            "broke off after 300 bytes: connection reset"
        );
        assert!(
            entries(host.working_dir()).is_empty(),
            "{:?}",
            entries(host.working_dir())
        );
        // More bytes than announced: the mismatch, nothing left behind.
        let flaky = Flaky {
            data,
            cut: 0,
            breaks: 0,
            resumable: true,
            opened_at: Vec::new(),
        };
        let (r, _) = run(&host, flaky, Some(999));
        assert_eq!(r.unwrap_err().message(), "1000 bytes, 999 announced");
        assert!(
            entries(host.working_dir()).is_empty(),
            "{:?}",
            entries(host.working_dir())
        );
    }
}
