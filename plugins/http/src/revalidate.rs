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

/// Whether a 304 answering the condition made from `validator` proves the copy is
/// the version recorded: always for an ETag (If-None-Match matched it); for a
/// Last-Modified only when the 304 repeats it, since If-Modified-Since is answered 304
/// by any file not newer than the date.
pub(crate) fn not_modified_proves(validator: &str, last_modified: Option<&str>) -> bool {
    if condition(validator).0 == "If-None-Match" {
        return true;
    }
    last_modified.is_some_and(|lm| lm.trim() == validator.trim())
}

/// Whether a `Last-Modified` value may identify a version: only when the response's
/// `Date` is at least a second after it (RFC 9110 §8.8.2.2). A file changed again
/// within the second it was served in would otherwise keep the same value, and a
/// revalidation would call the old copy current.
pub(crate) fn strong_last_modified(last_modified: &str, date: Option<&str>) -> bool {
    match (http_date(last_modified), date.and_then(http_date)) {
        (Some(modified), Some(date)) => date > modified,
        _ => false,
    }
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// form servers must send; `None` for anything else.
pub(crate) fn http_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().split(' ');
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = stagehost_plugin_api::calendar::days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_counts_only_a_second_before_the_response() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        let lm = "Mon, 07 Dec 2026 10:54:31 GMT";
        assert!(strong_last_modified(
            lm,
            Some("Mon, 07 Dec 2026 10:54:32 GMT")
        ));
        // Served in the second it was changed, or before (a clock ahead), or with no
        // Date: it may change again under the same value.
        assert!(!strong_last_modified(lm, Some(lm)));
        assert!(!strong_last_modified(
            lm,
            Some("Mon, 07 Dec 2026 10:54:30 GMT")
        ));
        assert!(!strong_last_modified(lm, None));
        assert!(!strong_last_modified("yesterday", Some(lm)));
        // A 304 proves an ETag's version; a Last-Modified's only when it repeats it.
        assert!(not_modified_proves("\"abc\"", None));
        assert!(not_modified_proves(lm, Some(lm)));
        assert!(!not_modified_proves(lm, None));
        assert!(!not_modified_proves(
            lm,
            Some("Sat, 01 Jun 2019 00:00:00 GMT")
        ));
    }
}
