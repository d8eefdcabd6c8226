//! The `stat` and `list` capabilities: `rsync --list-only`, over ssh or to a daemon,
//! with the same command line rules as a transfer (no shell, `--protect-args`, the
//! instance's ssh command and password). One rsync run answers a whole tree (`-r`).
//!
//! rsync prints a listing as `perms size YYYY/MM/DD HH:MM:SS name`, times in the
//! local zone of the process (set to UTC here), names with unprintable bytes as
//! `\#ooo`.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use stagehost_plugin_api::capability::{Entry, EntryKind};
use stagehost_plugin_api::{Context, ErrorKind, File, StageError};

use super::{Rsync, Transfer};

/// A listing stops collecting here (a tree of ten million entries).
pub(crate) const MAX_LINES: usize = 10_000_000;

/// `\#ooo` sequences decoded; `None` when the bytes are not UTF-8.
fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'#') && i + 5 <= bytes.len() {
            let digits = &name[i + 2..i + 5];
            if let Ok(b) = u8::from_str_radix(digits, 8) {
                out.push(b);
                i += 5;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// One `--list-only` line as an entry; `None` for a line that is not one.
fn parse_line(line: &str) -> Option<Result<Entry, String>> {
    let mut rest = line.trim_end_matches('\n');
    let mut fields = [""; 4];
    for field in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        *field = &rest[..end];
        rest = &rest[end + 1..];
    }
    let [perms, size, date, time] = fields;
    if perms.len() != 10 || date.len() != 10 || time.len() != 8 {
        return None;
    }
    let Some(name) = unescape(rest) else {
        return Some(Err(rest.to_owned()));
    };
    let kind = match perms.as_bytes()[0] {
        b'-' => EntryKind::File,
        b'd' => EntryKind::Directory,
        _ => EntryKind::Other,
    };
    let mut entry = Entry {
        kind,
        ..Entry::file(name)
    };
    if kind == EntryKind::File {
        entry.size = size.replace(',', "").parse().ok();
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (y, mo, d) = (num(&date[0..4])?, num(&date[5..7])?, num(&date[8..10])?);
    let (h, mi, s) = (num(&time[0..2])?, num(&time[3..5])?, num(&time[6..8])?);
    let secs =
        stagehost_plugin_api::calendar::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    entry.modified = u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    Some(Ok(entry))
}

impl Rsync {
    /// `rsync --list-only` of `remote` (with `args`), its entries.
    fn list_only(
        &self,
        ctx: &Context<'_>,
        file: &File,
        remote: &str,
        args: &[&str],
        what: &str,
    ) -> Result<Vec<Entry>, StageError> {
        let transfer = Transfer {
            remote,
            shown: file.redacted_url(),
            local: Path::new(""),
            daemon: file.scheme() == "rsync",
        };
        let mut cmd: Command = self.runner.base(&transfer)?;
        cmd.env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .arg("--list-only")
            .arg("--no-human-readable")
            .args(args)
            .arg("--")
            .arg(remote);
        let lines = Arc::new(Mutex::new(Vec::new()));
        self.runner.run_with(
            ctx,
            cmd,
            &format!("{what} {}", transfer.shown),
            Some(lines.clone()),
        )?;
        let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
        let mut entries = Vec::with_capacity(lines.len());
        for line in &lines {
            match parse_line(line) {
                Some(Ok(entry)) => entries.push(entry),
                Some(Err(raw)) => {
                    return Err(StageError::new(
                        ErrorKind::InvalidUrl,
                        format!(
                            "{what} {}: a name that is not UTF-8 ({}); stagehost refuses it rather than alter it",
                            transfer.shown,
                            stagehost_plugin_api::display::escape(&raw)
                        ),
                    ))
                }
                None => {}
            }
        }
        Ok(entries)
    }

    /// Whether an error says the path is not there (rsync's exit 23 after a failed
    /// `link_stat` or `change_dir`).
    fn missing(e: &StageError) -> bool {
        e.message().contains("No such file or directory")
    }

    pub(crate) fn stat_remote(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<Entry>, StageError> {
        let remote = self.remote(file);
        let remote = remote.trim_end_matches('/');
        match self.list_only(ctx, file, remote, &["--dirs"], "cannot stat") {
            Ok(entries) => Ok(entries.into_iter().next().map(|e| Entry {
                name: String::new(),
                ..e
            })),
            Err(e) if Rsync::missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn list_remote(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        let remote = format!("{}/", self.remote(dir).trim_end_matches('/'));
        let args: &[&str] = if recursive { &["--recursive"] } else { &[] };
        let entries = self
            .list_only(ctx, dir, &remote, args, "cannot list")
            .map_err(|e| {
                if Rsync::missing(&e) {
                    StageError::new(ErrorKind::NotFound, e.message().to_owned())
                } else if e.message().contains("Not a directory") {
                    StageError::new(
                        ErrorKind::InvalidUrl,
                        format!("{}; it is a file, not a directory", e.message()),
                    )
                } else {
                    e
                }
            })?;
        // The listed directory itself is `.`.
        Ok(entries.into_iter().filter(|e| e.name != ".").collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_only_lines_become_entries() {
        let e = parse_line("-rw-r--r--           2 2024/02/29 12:30:58 sub/b c.txt")
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("sub/b c.txt", EntryKind::File, Some(2))
        );
        assert_eq!(
            e.modified,
            Some(UNIX_EPOCH + Duration::from_secs(1_709_209_858))
        );
        let d = parse_line("drwxr-xr-x        4,096 2024/02/29 12:30:58 sub")
            .unwrap()
            .unwrap();
        assert_eq!((d.kind, d.size), (EntryKind::Directory, None));
        let l = parse_line("lrwxrwxrwx           3 2024/02/29 12:30:58 link")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, EntryKind::Other);
        assert_eq!(
            parse_line("-rw-r--r--           1 2024/02/29 12:30:58 caf\\#303\\#251")
                .unwrap()
                .unwrap()
                .name,
            "café"
        );
        assert!(
            parse_line("-rw-r--r--           1 2024/02/29 12:30:58 bad\\#377")
                .unwrap()
                .is_err()
        );
        assert!(parse_line("receiving incremental file list").is_none());
        assert!(parse_line("").is_none());
    }
}
