//! Helpers for providers of network URLs (`scheme://[user[:password]@]host[:port]/path`):
//! credentials out of the URL, percent-decoding, host patterns that scope an
//! instance, timeouts read from settings.
//!
//! Pure Rust, outside the ABI: a provider compiles them into its own `.so`.

use std::time::Duration;

use crate::error::{ErrorKind, StageError};

/// `url` without its userinfo, and the user and password the userinfo held
/// (percent-decoded; a user without `:` has the empty password).
///
/// ```
/// use stagehost_plugin_api::net::split_userinfo;
/// let (url, info) = split_userinfo("ftp://me:s%40cret@h:2121/a");
/// assert_eq!(url, "ftp://h:2121/a");
/// assert_eq!(info, Some(("me".to_owned(), "s@cret".to_owned())));
/// ```
pub fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => {
            let info = &url[start..start + at];
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let bare = format!("{}{}", &url[..start], &url[start + at + 1..]);
            (bare, Some((percent_decode(user), percent_decode(password))))
        }
        None => (url.to_owned(), None),
    }
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept. Bytes that
/// do not form UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host:port` without the port (`[::1]:80` keeps its brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The host and port of a netloc (userinfo dropped, brackets taken off an IPv6
/// literal), with `default_port` when it names none.
///
/// ```
/// use stagehost_plugin_api::net::host_port;
/// assert_eq!(host_port("u:p@[::1]:2121", 21), Some(("::1".to_owned(), 2121)));
/// assert_eq!(host_port("example.org", 21), Some(("example.org".to_owned(), 21)));
/// assert_eq!(host_port("example.org:x", 21), None);
/// ```
pub fn host_port(netloc: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = netloc.rsplit('@').next().unwrap_or_default();
    let host = strip_port(authority);
    let port = match &authority[host.len()..] {
        "" => default_port,
        rest => rest.strip_prefix(':')?.parse().ok()?,
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        // A colon outside brackets is a port that is not a number.
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Host patterns that narrow what an instance claims: `example.org`, `*.example.org`
/// (any subdomain), `host:8080` (that port only); none claims every host.
#[derive(Debug, Clone, Default)]
pub struct HostPatterns(Vec<String>);

impl HostPatterns {
    /// The patterns, as a `hosts` setting lists them.
    pub fn new(patterns: &[String]) -> HostPatterns {
        HostPatterns(patterns.iter().map(|h| h.to_ascii_lowercase()).collect())
    }

    /// Whether a URL with this netloc (userinfo allowed) is claimed.
    ///
    /// ```
    /// use stagehost_plugin_api::net::HostPatterns;
    /// let p = HostPatterns::new(&["*.example.org".into(), "127.0.0.1:8080".into()]);
    /// assert!(p.claims("me@data.example.org:443"));
    /// assert!(!p.claims("example.org"));
    /// assert!(p.claims("127.0.0.1:8080"));
    /// assert!(!p.claims("127.0.0.1:9090"));
    /// assert!(HostPatterns::default().claims("anything"));
    /// ```
    pub fn claims(&self, netloc: &str) -> bool {
        let host = netloc
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.0.is_empty() || self.0.iter().any(|p| host_matches(p, &host))
    }
}

/// `host` (without userinfo, with any port) matches `pattern`: equal, or
/// `*.suffix` matching a subdomain; a pattern without a port ignores the port.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = if pattern.contains(':') && !pattern.starts_with('[') || pattern.contains("]:") {
        host
    } else {
        strip_port(host)
    };
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.')),
        None => host == pattern,
    }
}

/// The kind of a network I/O error: a timed-out read (`TimedOut`, or `WouldBlock`
/// from a socket read timeout) timed out; a refused, reset, aborted or cut connection
/// transient (the host retries it); anything else, such as bad data, permanent.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::TimedOut | Io::WouldBlock => ErrorKind::TimedOut,
        Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::ConnectionRefused
        | Io::BrokenPipe
        | Io::UnexpectedEof
        | Io::Interrupted
        | Io::NotConnected => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// A number of seconds from settings as a `Duration`: above 0 and at most 1e9, or an
/// `InvalidSettings` error naming the setting.
pub fn seconds(name: &str, value: f64) -> Result<Duration, StageError> {
    if value > 0.0 && value <= 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(StageError::invalid_settings(format!(
            "invalid settings: {name} must be a number of seconds above 0 and at most 1e9, not {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_taken_out_of_the_url() {
        let (url, info) = split_userinfo("https://me:s%40cret@h:8443/a?b#c");
        assert_eq!(url, "https://h:8443/a?b#c");
        assert_eq!(info, Some(("me".into(), "s@cret".into())));
        assert_eq!(split_userinfo("http://h/x@y").1, None);
        assert_eq!(
            split_userinfo("ftp://anonymous@h/x").1,
            Some(("anonymous".into(), String::new()))
        );
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("example.org", "example.org"));
        assert!(host_matches("example.org", "example.org:8080"));
        assert!(!host_matches("example.org", "www.example.org"));
        assert!(host_matches("*.example.org", "data.example.org:443"));
        assert!(!host_matches("*.example.org", "example.org"));
        assert!(host_matches("127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!host_matches("127.0.0.1:8080", "127.0.0.1:9090"));
        assert!(host_matches("[::1]", "[::1]:2121"));
        assert!(host_matches("[::1]:2121", "[::1]:2121"));
        assert!(!host_matches("[::1]:21", "[::1]:2121"));
    }

    #[test]
    fn host_and_port() {
        assert_eq!(host_port("h", 21), Some(("h".into(), 21)));
        assert_eq!(host_port("h:2121", 21), Some(("h".into(), 2121)));
        assert_eq!(host_port("[::1]", 21), Some(("::1".into(), 21)));
        assert_eq!(host_port("", 21), None);
        assert_eq!(host_port("h:99999", 21), None);
        assert_eq!(host_port("h:x", 21), None);
        assert_eq!(host_port("[::1", 21), None);
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }

    #[test]
    fn seconds_are_bounded() {
        assert!(seconds("t", 0.5).is_ok());
        assert!(seconds("t", 0.0).is_err());
        assert!(seconds("t", f64::NAN).is_err());
    }
}
