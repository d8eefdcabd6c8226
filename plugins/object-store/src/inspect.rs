//! The `stat` and `list` capabilities: an object's HEAD, and a prefix's listing (one
//! request per page of up to 1,000 keys, as the stores page them).
//!
//! Object stores have no directories: a prefix that some key continues with `/` reads
//! as one. A prefix with nothing below it does not exist (`NotFound`), except a
//! bucket's root, which is an empty listing.

use std::collections::BTreeSet;
use std::time::SystemTime;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use stagehost_plugin_api::capability::Entry;
use stagehost_plugin_api::{Context, ErrorKind, File, StageError};

use super::{classify, Stores, Target, RUNTIME};

/// `scheme://bucket/prefix/`: the bucket and the prefix without its slashes (empty for
/// the bucket's root).
fn prefix_of(file: &File) -> Result<(Target, String), StageError> {
    let shown = file.redacted_url();
    let bucket = file.netloc().to_owned();
    if bucket.is_empty() {
        return Err(StageError::new(
            ErrorKind::InvalidUrl,
            format!("{shown}: write {}://bucket/prefix/", file.scheme()),
        ));
    }
    let prefix = file.path().trim_matches('/').to_owned();
    let key = if prefix.is_empty() {
        ObjectPath::default()
    } else {
        ObjectPath::parse(&prefix)
            .map_err(|e| StageError::new(ErrorKind::InvalidUrl, format!("{shown}: {e}")))?
    };
    Ok((
        Target {
            scheme: file.scheme().to_owned(),
            bucket,
            key,
            shown,
        },
        prefix,
    ))
}

fn entry(name: String, meta: &ObjectMeta) -> Entry {
    let mut entry = Entry::file(name)
        .with_size(meta.size)
        .with_modified(SystemTime::from(meta.last_modified));
    if let Some(etag) = &meta.e_tag {
        entry.validator = etag.clone();
    }
    entry
}

impl Stores {
    pub(crate) fn stat_object(
        &self,
        ctx: &Context<'_>,
        file: &File,
    ) -> Result<Option<Entry>, StageError> {
        ctx.check()?;
        let (target, prefix) = prefix_of(file)?;
        let store = self.shared.store(&target)?;
        RUNTIME.block_on(async {
            if !prefix.is_empty() && !file.path().ends_with('/') {
                match store.head(&target.key).await {
                    Ok(meta) => return Ok(Some(entry(String::new(), &meta))),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(classify("cannot stat", &target, &e)),
                }
            }
            // No object by that name: a prefix some key continues is a directory.
            let below = if prefix.is_empty() {
                None
            } else {
                Some(&target.key)
            };
            let first = store
                .list(below)
                .try_next()
                .await
                .map_err(|e| classify("cannot stat", &target, &e))?;
            Ok((first.is_some() || prefix.is_empty()).then(|| Entry::directory("")))
        })
    }

    pub(crate) fn list_prefix(
        &self,
        ctx: &Context<'_>,
        dir: &File,
        recursive: bool,
    ) -> Result<Vec<Entry>, StageError> {
        ctx.check()?;
        let (target, prefix) = prefix_of(dir)?;
        let store = self.shared.store(&target)?;
        let below = (!prefix.is_empty()).then_some(&target.key);
        let strip = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let relative = |location: &ObjectPath| -> Option<String> {
            location
                .as_ref()
                .strip_prefix(strip.as_str())
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        };
        let entries = RUNTIME.block_on(async {
            let mut entries = Vec::new();
            if recursive {
                let mut dirs = BTreeSet::new();
                let mut objects = store.list(below);
                while let Some(meta) = objects
                    .try_next()
                    .await
                    .map_err(|e| classify("cannot list", &target, &e))?
                {
                    ctx.check()?;
                    let Some(name) = relative(&meta.location) else {
                        continue;
                    };
                    // The directories a key implies, each once.
                    let mut at = 0;
                    while let Some(i) = name[at..].find('/') {
                        dirs.insert(name[..at + i].to_owned());
                        at += i + 1;
                    }
                    entries.push(entry(name, &meta));
                }
                entries.extend(dirs.into_iter().map(Entry::directory));
            } else {
                let listed = store
                    .list_with_delimiter(below)
                    .await
                    .map_err(|e| classify("cannot list", &target, &e))?;
                for p in &listed.common_prefixes {
                    if let Some(name) = relative(p) {
                        entries.push(Entry::directory(name));
                    }
                }
                for meta in &listed.objects {
                    if let Some(name) = relative(&meta.location) {
                        entries.push(entry(name, meta));
                    }
                }
            }
            Ok::<_, StageError>(entries)
        })?;
        if entries.is_empty() && !prefix.is_empty() {
            return Err(StageError::new(
                ErrorKind::NotFound,
                format!("cannot list {}: no object has this prefix", target.shown),
            ));
        }
        Ok(entries)
    }
}
