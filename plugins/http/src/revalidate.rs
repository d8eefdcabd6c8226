//! The conditional request of a revalidation (the record itself is kept by
//! `stagehost_plugin_api::validators`).

/// The conditional header that asks whether `validator` is still current.
pub(crate) fn condition(validator: &str) -> (&'static str, String) {
    if validator.starts_with('"') || validator.starts_with("W/") {
        ("If-None-Match", validator.to_owned())
    } else {
        ("If-Modified-Since", validator.to_owned())
    }
}
