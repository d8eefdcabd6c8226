//! The `stat` and `list` capabilities: `MLST` and `MLSD` (RFC 3659), one `MLSD` per
//! directory; for a server without them, `SIZE`/`MDTM` and `CWD` for `stat`, and
//! `LIST` (Unix or DOS lines) for `list`.

use stagehost_plugin_api::capability::{Entry, EntryKind};
use stagehost_plugin_api::{Context, ErrorKind, File, StageError};
use suppaftp::list::{File as Listed, ListParser};
use suppaftp::{FtpError, Status};

use std::collections::HashSet;
use std::io::Read;

use super::{classify, unknown_command, Ftp, FtpTransfer, Shared, Target};

/// `ftp://host/dir/` (or a file) for `stat` and `list`.
fn target_of(file: &File) -> Result<Target, StageError> {
    Target::parse(file, true)
}

fn entry(name: String, listed: &Listed) -> Entry {
    let kind = if listed.is_directory() {
        EntryKind::Directory
    } else if listed.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    let mut entry = Entry {
        kind,
        ..Entry::file(name)
    };
    if kind == EntryKind::File {
        entry.size = Some(listed.size() as u64);
    }
    entry.modified = Some(listed.modified());
    entry
}

/// Whether a reply is 550 (no such file or directory, for a read).
fn is_550(error: &FtpError) -> bool {
    matches!(error, FtpError::UnexpectedResponse(r) if r.status.code() == 550)
}

impl Shared {
    fn stat(&self, ftp: &mut Ftp, target: &Target) -> Result<Option<Entry>, StageError> {
        self.stat_unique(ftp, target).map(|s| s.map(|(e, _)| e))
    }

    /// [`Shared::stat`], with the server's `unique` fact for the path when it gives one.
    fn stat_unique(
        &self,
        ftp: &mut Ftp,
        target: &Target,
    ) -> Result<Option<(Entry, Option<String>)>, StageError> {
        let path = (!target.path.is_empty()).then_some(target.path.as_str());
        // Ask for the `unique` fact too (a server without it ignores or refuses this).
        let _ = ftp.opts("MLST", Some("type;size;modify;unique;"));
        match ftp.mlst(path) {
            Ok(line) => {
                let unique = line
                    .split_once("; ")
                    .and_then(|(facts, _)| {
                        facts.split(';').find_map(|f| {
                            f.strip_prefix("unique=")
                                .or_else(|| f.strip_prefix("UNIQUE="))
                        })
                    })
                    .map(str::to_owned);
                let listed = ListParser::parse_mlst(&line).map_err(|e| {
                    StageError::new(
                        ErrorKind::Other,
                        format!(
                            "cannot stat {}: an MLST line it cannot read ({e})",
                            target.shown
                        ),
                    )
                })?;
                return Ok(Some((entry(String::new(), &listed), unique)));
            }
            Err(e) if is_550(&e) => return Ok(None),
            Err(e) if unknown_command(&e) => {}
            Err(e) => return Err(classify("cannot MLST", &target.shown, e, false)),
        }
        // Without MLST: the login directory is one; a size means a file; else a
        // directory we can enter.
        if target.path.is_empty() {
            return Ok(Some((Entry::directory(""), None)));
        }
        match ftp.size(&target.path) {
            Ok(n) => {
                let mut entry = Entry::file("").with_size(n as u64);
                entry.modified = ftp.mdtm(&target.path).ok().map(|t| t.and_utc().into());
                return Ok(Some((entry, None)));
            }
            Err(e) if is_550(&e) || unknown_command(&e) => {}
            Err(e) => return Err(classify("cannot SIZE", &target.shown, e, false)),
        }
        let home = ftp
            .pwd()
            .map_err(|e| classify("cannot PWD on", &target.shown, e, false))?;
        match ftp.cwd(&target.path) {
            Ok(()) => {
                ftp.cwd(&home)
                    .map_err(|e| classify("cannot CWD back on", &target.shown, e, false))?;
                Ok(Some((Entry::directory(""), None)))
            }
            Err(e) if is_550(&e) => Ok(None),
            Err(e) => Err(classify("cannot CWD", &target.shown, e, false)),
        }
    }

    /// One directory's entries (not `.` or `..`), by MLSD or else LIST, each with the
    /// server's `unique` fact when it sends one.
    fn list_one(
        &self,
        ftp: &mut Ftp,
        target: &Target,
        dir: &str,
    ) -> Result<Vec<(Listed, Option<String>)>, StageError> {
        let shown = &target.shown;
        let command = |verb: &str| {
            if dir.is_empty() {
                verb.to_owned()
            } else {
                format!("{verb} {dir}")
            }
        };
        let open = |ftp: &mut Ftp, verb: &str| {
            self.open(ftp, target, 0, |f| {
                f.custom_data_command(command(verb), &[Status::AboutToSend, Status::AlreadyOpen])
            })
        };
        let (machine, (_, mut stream)) = match open(ftp, "MLSD") {
            Ok(opened) => (true, opened),
            Err(e) if unknown_command(&e) => (
                false,
                open(ftp, "LIST").map_err(|e| classify("cannot LIST", shown, e, false))?,
            ),
            Err(e) => return Err(classify("cannot MLSD", shown, e, false)),
        };
        let lines = read_lines(&mut stream, shown);
        let lines = match lines {
            Ok(lines) => lines,
            Err(e) => {
                // The session is spent: nothing waits for the rest of that transfer.
                let _ = ftp.get_ref().shutdown(std::net::Shutdown::Both);
                return Err(e);
            }
        };
        stream
            .finish()
            .map_err(|e| classify("cannot list", shown, e, false))?;
        let mut out = Vec::with_capacity(lines.len());
        for line in &lines {
            let bad = |why: &str| {
                StageError::new(
                    ErrorKind::Integrity,
                    format!(
                        "cannot list {shown}: the server sent {why}: {}",
                        stagehost_plugin_api::display::escape(&String::from_utf8_lossy(line))
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ),
                )
            };
            let Ok(text) = std::str::from_utf8(line) else {
                return Err(bad("a line that is not UTF-8"));
            };
            let (listed, unique) = if machine {
                // `facts; name`: a line without its facts is no MLSD entry (a name
                // holding a line break, split by a careless server).
                let Some((facts, _)) = text.split_once("; ") else {
                    return Err(bad("a line that is not an MLSD entry"));
                };
                if !facts.to_ascii_lowercase().contains("type=") {
                    return Err(bad("a line that is not an MLSD entry"));
                }
                let unique = facts
                    .split(';')
                    .find_map(|f| {
                        f.strip_prefix("unique=")
                            .or_else(|| f.strip_prefix("UNIQUE="))
                    })
                    .map(str::to_owned);
                match ListParser::parse_mlsd(text) {
                    Ok(listed) => (listed, unique),
                    Err(_) => return Err(bad("an MLSD line it cannot read")),
                }
            } else {
                if text.starts_with("total ") {
                    continue;
                }
                match ListParser::parse_posix(text).or_else(|_| ListParser::parse_dos(text)) {
                    Ok(listed) => (listed, None),
                    Err(_) => return Err(bad("a LIST line it cannot read")),
                }
            };
            if matches!(listed.name(), "." | "..") || listed.name().contains('/') {
                continue;
            }
            out.push((listed, unique));
        }
        Ok(out)
    }

    fn list(
        &self,
        ctx: &Context<'_>,
        ftp: &mut Ftp,
        target: &Target,
        recursive: bool,
        root_unique: Option<String>,
    ) -> Result<Vec<Entry>, StageError> {
        let mut entries = Vec::new();
        let mut pending = vec![(target.path.clone(), String::new(), 0usize)];
        // Directories by the server's `unique` fact: a link back up is walked once.
        let mut seen: HashSet<String> = root_unique.into_iter().collect();
        let mut listed_dirs = 0usize;
        while let Some((dir, prefix, depth)) = pending.pop() {
            ctx.check()?;
            listed_dirs += 1;
            if listed_dirs > MAX_DIRECTORIES || depth > MAX_DEPTH || entries.len() > MAX_ENTRIES {
                return Err(StageError::new(
                    ErrorKind::Other,
                    format!(
                        "cannot list {}: the tree goes beyond {MAX_DIRECTORIES} directories, {MAX_DEPTH} levels or {MAX_ENTRIES} entries (a link loop on the server?)",
                        target.shown
                    ),
                ));
            }
            for (listed, unique) in self.list_one(ftp, target, &dir)? {
                let name = format!("{prefix}{}", listed.name());
                let fresh = unique.is_none_or(|u| seen.insert(u));
                if recursive && listed.is_directory() && fresh {
                    let below = if dir.is_empty() {
                        listed.name().to_owned()
                    } else {
                        format!("{dir}/{}", listed.name())
                    };
                    pending.push((below, format!("{name}/"), depth + 1));
                }
                entries.push(entry(name, &listed));
            }
        }
        Ok(entries)
    }
}

/// A listing stops with an error past any of these: a server's link loop, or a tree no
/// one meant to list whole.
const MAX_DIRECTORIES: usize = 100_000;
const MAX_DEPTH: usize = 64;
const MAX_ENTRIES: usize = 10_000_000;
/// The longest line a listing may send, and the most bytes one directory's may.
const MAX_LINE: usize = 8 << 10;
const MAX_LISTING: u64 = 256 << 20;

/// The lines of a listing's data connection: CRLF ends a line (a bare LF stays inside
/// it, so a name holding one cannot forge a second entry), within [`MAX_LINE`] and
/// [`MAX_LISTING`].
fn read_lines(stream: &mut impl Read, shown: &str) -> Result<Vec<Vec<u8>>, StageError> {
    let too_much = |what: &str| {
        StageError::new(
            ErrorKind::Integrity,
            format!("cannot list {shown}: the server sent {what}"),
        )
    };
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StageError::io(
                    format_args!("cannot list {shown}: the listing broke off"),
                    &e,
                ))
            }
        };
        total += n as u64;
        if total > MAX_LISTING {
            return Err(too_much("a listing of more than 256 MiB for one directory"));
        }
        for &b in &buf[..n] {
            line.push(b);
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                } else {
                    line.clear();
                }
            } else if line.len() > MAX_LINE {
                return Err(too_much("a listing line longer than 8 KiB"));
            }
        }
    }
    // A last line without its CRLF (a server that ends with LF alone).
    let last = line.strip_suffix(b"\n").unwrap_or(&line);
    if !last.is_empty() {
        lines.push(last.to_vec());
    }
    Ok(lines)
}

impl FtpTransfer {
    pub(crate) fn stat_path(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<Entry>, StageError> {
        ctx.check()?;
        let target = target_of(file)?;
        let (mut ftp, key) = self.shared.session(ctx, &target)?;
        let answer = self.shared.stat(&mut ftp, &target)?;
        self.shared.give_back(key, ftp);
        Ok(answer)
    }

    pub(crate) fn list_dir(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        ctx.check()?;
        let target = target_of(dir)?;
        let (mut ftp, key) = self.shared.session(ctx, &target)?;
        // A file, or nothing: said before a listing could mistake one for the other.
        let root_unique = match self.shared.stat_unique(&mut ftp, &target)? {
            None => {
                self.shared.give_back(key, ftp);
                return Err(StageError::new(
                    ErrorKind::NotFound,
                    format!("cannot list {}: no such directory", target.shown),
                ));
            }
            Some((e, _)) if e.kind != EntryKind::Directory => {
                self.shared.give_back(key, ftp);
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "cannot list {}: it is a file, not a directory",
                        target.shown
                    ),
                ));
            }
            Some((_, unique)) => unique,
        };
        let entries = self
            .shared
            .list(ctx, &mut ftp, &target, recursive, root_unique)?;
        self.shared.give_back(key, ftp);
        Ok(entries)
    }
}
