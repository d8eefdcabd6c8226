//! The `stat` capability: one `HEAD`, through the same redirects, credentials and
//! proxies as a `GET`. HTTP has no listing, so `list` is not offered.

use std::time::{Duration, UNIX_EPOCH};

use stagehost_plugin_api::capability::Entry;
use stagehost_plugin_api::{Context, File, StageError};

use super::{Http, Target};

impl Http {
    /// What `file` names: its size (when sent as is), Last-Modified and ETag; `None`
    /// on 404 or 410.
    pub(crate) fn head(&self, ctx: &Context<'_>, file: &File) -> Result<Option<Entry>, StageError> {
        ctx.check()?;
        let target = Target::of(file);
        let response = self.shared.exchange(ctx, &target, "HEAD", &[], None)?;
        let status = response.status().as_u16();
        if matches!(status, 404 | 410) {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(super::refused(ctx, "HEAD", &target.shown, &response, false));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut entry = Entry::file("");
        // A length of an encoded body is not the file's size.
        if header("content-encoding").is_none_or(|e| e.eq_ignore_ascii_case("identity")) {
            entry.size = header("content-length").and_then(|l| l.trim().parse().ok());
        }
        entry.modified = header("last-modified")
            .and_then(|d| super::revalidate::http_date(&d))
            .and_then(|secs| u64::try_from(secs).ok())
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        entry.validator = header("etag").unwrap_or_default();
        Ok(Some(entry))
    }
}
