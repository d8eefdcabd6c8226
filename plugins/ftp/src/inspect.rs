//! The `stat` and `list` capabilities: `MLST` and `MLSD` (RFC 3659), one `MLSD` per
//! directory; for a server without them, `SIZE`/`MDTM` and `CWD` for `stat`, and
//! `LIST` (Unix or DOS lines) for `list`.

use stagehost_plugin_api::capability::{Entry, EntryKind};
use stagehost_plugin_api::{Context, ErrorKind, File, StageError};
use suppaftp::list::{File as Listed, ListParser};
use suppaftp::FtpError;

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
        let path = (!target.path.is_empty()).then_some(target.path.as_str());
        match ftp.mlst(path) {
            Ok(line) => {
                let listed = ListParser::parse_mlst(&line).map_err(|e| {
                    StageError::new(
                        ErrorKind::Other,
                        format!(
                            "cannot stat {}: an MLST line it cannot read ({e})",
                            target.shown
                        ),
                    )
                })?;
                return Ok(Some(entry(String::new(), &listed)));
            }
            Err(e) if is_550(&e) => return Ok(None),
            Err(e) if unknown_command(&e) => {}
            Err(e) => return Err(classify("cannot MLST", &target.shown, e, false)),
        }
        // Without MLST: a size means a file; else a directory we can enter.
        match ftp.size(&target.path) {
            Ok(n) => {
                let mut entry = Entry::file("").with_size(n as u64);
                entry.modified = ftp.mdtm(&target.path).ok().map(|t| t.and_utc().into());
                return Ok(Some(entry));
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
                Ok(Some(Entry::directory("")))
            }
            Err(e) if is_550(&e) => Ok(None),
            Err(e) => Err(classify("cannot CWD", &target.shown, e, false)),
        }
    }

    /// One directory's entries (not `.` or `..`), by MLSD or else LIST.
    fn list_one(
        &self,
        ftp: &mut Ftp,
        target: &Target,
        dir: &str,
    ) -> Result<Vec<Listed>, StageError> {
        let path = (!dir.is_empty()).then_some(dir);
        let shown = &target.shown;
        let (lines, machine) = match self.open(ftp, target, 0, |ftp| ftp.mlsd(path)) {
            Ok(lines) => (lines, true),
            Err(e) if unknown_command(&e) => (
                self.open(ftp, target, 0, |ftp| ftp.list(path))
                    .map_err(|e| classify("cannot LIST", shown, e, false))?,
                false,
            ),
            Err(e) => return Err(classify("cannot MLSD", shown, e, false)),
        };
        let mut out = Vec::with_capacity(lines.len());
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            let parsed = if machine {
                ListParser::parse_mlsd(line)
            } else {
                ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
            };
            // A `total 12` line of LIST, or a line no format reads: skipped, with a
            // word in the log only for MLSD, whose lines are standard.
            let Ok(listed) = parsed else { continue };
            if matches!(listed.name(), "." | "..") || listed.name().contains('/') {
                continue;
            }
            out.push(listed);
        }
        Ok(out)
    }

    fn list(
        &self,
        ctx: &Context<'_>,
        ftp: &mut Ftp,
        target: &Target,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        let mut entries = Vec::new();
        let mut pending = vec![(target.path.clone(), String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            ctx.check()?;
            for listed in self.list_one(ftp, target, &dir)? {
                let name = format!("{prefix}{}", listed.name());
                if recursive && listed.is_directory() {
                    let below = if dir.is_empty() {
                        listed.name().to_owned()
                    } else {
                        format!("{dir}/{}", listed.name())
                    };
                    pending.push((below, format!("{name}/")));
                }
                entries.push(entry(name, &listed));
            }
        }
        Ok(entries)
    }
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
        match self.shared.stat(&mut ftp, &target)? {
            None => {
                self.shared.give_back(key, ftp);
                return Err(StageError::new(
                    ErrorKind::NotFound,
                    format!("cannot list {}: no such directory", target.shown),
                ));
            }
            Some(e) if e.kind != EntryKind::Directory => {
                self.shared.give_back(key, ftp);
                return Err(StageError::new(
                    ErrorKind::InvalidUrl,
                    format!(
                        "cannot list {}: it is a file, not a directory",
                        target.shown
                    ),
                ));
            }
            Some(_) => {}
        }
        let entries = self.shared.list(ctx, &mut ftp, &target, recursive)?;
        self.shared.give_back(key, ftp);
        Ok(entries)
    }
}
