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

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept, and `+` is
/// kept (a URL's path and userinfo are not form-encoded; a query is, see
/// [`crate::file::redact_url`]). Bytes that do not form UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
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

/// The origin of a URL: scheme, host and port (the scheme's default port when it names
/// none), lower-cased; what credentials are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http`, `https`, ...
    pub scheme: String,
    /// Host name or address, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// The origin of `url` (`scheme://[userinfo@]host[:port]/...`), if it has one.
    ///
    /// ```
    /// use stagehost_plugin_api::net::Origin;
    /// let o = Origin::of("HTTPS://me:pw@Data.Example.org/x").unwrap();
    /// assert_eq!((o.scheme.as_str(), o.host.as_str(), o.port), ("https", "data.example.org", 443));
    /// ```
    pub fn of(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let netloc = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            "ftp" => 21,
            "ftps" => 990,
            _ => 0,
        };
        let (host, port) = host_port(netloc, default_port)?;
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Where a redirect leads, and what goes with the request there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The absolute URL to ask next (without userinfo).
    pub url: String,
    /// The method of the next request: the same one, or `GET` (a 301, 302 or 303 to a
    /// `GET` or `HEAD`).
    pub method: String,
    /// Whether the request's credentials (authorization, configured headers, cookies)
    /// may go to it.
    pub keep_credentials: bool,
}

/// The one redirect rule of every HTTP-speaking provider, as curl keeps it without
/// `--location-trusted`:
/// - a `GET` or `HEAD` follows 301, 302, 303, 307 and 308;
/// - any other method (an upload's `PUT`) follows only 307 and 308, re-sending its
///   body; a 301, 302 or 303 would turn it into a `GET` that uploads nothing, so it is an
///   error naming the status;
/// - only `http` and `https` are followed, at most `max` hops;
/// - credentials go only to the origin they were set for (scheme, host and port of the
///   first URL), or to a host of the instance's `hosts` patterns when it has some, and
///   never over a downgrade from `https` to plain `http`.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    origin: Option<Origin>,
    trusted: HostPatterns,
    max: u32,
    hops: u32,
}

impl RedirectPolicy {
    /// The policy for a request first sent to `url`; `trusted` are the instance's
    /// `hosts` patterns (empty: only the first URL's origin is trusted).
    pub fn new(url: &str, trusted: &HostPatterns, max: u32) -> RedirectPolicy {
        RedirectPolicy {
            origin: Origin::of(url),
            trusted: trusted.clone(),
            max,
            hops: 0,
        }
    }

    /// Whether credentials may be sent to `url`.
    pub fn credentials_allowed(&self, url: &str) -> bool {
        let (Some(first), Some(next)) = (&self.origin, Origin::of(url)) else {
            return false;
        };
        if first.scheme == "https" && next.scheme != "https" {
            return false;
        }
        if *first == next {
            return true;
        }
        let netloc = format!("{}:{}", next.host, next.port);
        !self.trusted.0.is_empty() && self.trusted.claims(&netloc) && next.scheme == first.scheme
    }

    /// The next request after `method` to `current` was answered with the redirect
    /// `status` and its `Location`; an error (kind `Other`) when it must not be
    /// followed. `shown` is the redacted URL for messages.
    pub fn follow(
        &mut self,
        current: &str,
        method: &str,
        status: u16,
        location: Option<&str>,
        shown: &str,
    ) -> Result<Redirect, StageError> {
        let refuse =
            |why: String| StageError::new(ErrorKind::Other, format!("{method} {shown}: {why}"));
        let keeps_method = matches!(status, 307 | 308);
        let is_read = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        if !keeps_method && !matches!(status, 301..=303) {
            return Err(refuse(format!(
                "HTTP {status} is not a redirect that can be followed"
            )));
        }
        if !is_read && !keeps_method {
            return Err(refuse(format!(
                "answered HTTP {status}, a redirect that would re-send the request as a GET, so nothing would be uploaded; only 307 and 308 are followed for an upload"
            )));
        }
        self.hops += 1;
        if self.hops > self.max {
            return Err(refuse(format!(
                "too many redirects (more than {}; a redirect loop?)",
                self.max
            )));
        }
        let location = location
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| refuse(format!("HTTP {status} without a Location")))?;
        let next = resolve(current, location)
            .ok_or_else(|| refuse(format!("HTTP {status} to an unreadable Location")))?;
        let (next, _) = split_userinfo(&next);
        let scheme = next
            .split("://")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(refuse(format!(
                "redirected to another scheme ({scheme}:), which is not followed"
            )));
        }
        Ok(Redirect {
            keep_credentials: self.credentials_allowed(&next),
            // A read stays what it was (a HEAD is never turned into a GET that would
            // fetch the body, as curl -I keeps it); anything else got here through 307
            // or 308, which keep the method.
            method: method.to_owned(),
            url: next,
        })
    }
}

/// `location` read against `base` (an absolute URL): absolute, scheme-relative
/// (`//host/p`), absolute-path (`/p`), query-only (`?q`) or relative (`p`, `../p`).
fn resolve(base: &str, location: &str) -> Option<String> {
    if location.contains(['\r', '\n', '\0']) {
        return None;
    }
    let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && location[s.len()..].starts_with("://")
    });
    if has_scheme {
        return Some(location.to_owned());
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(tail) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{tail}"));
    }
    let path_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..path_at];
    let base_path = rest[path_at..].split(['?', '#']).next().unwrap_or_default();
    let joined = if location.starts_with('/') {
        location.to_owned()
    } else if location.starts_with('?') {
        format!(
            "{}{location}",
            if base_path.is_empty() { "/" } else { base_path }
        )
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{location}", if dir.is_empty() { "/" } else { dir })
    };
    // Dot segments removed, so `../` never climbs above the root.
    let (path, query) = match joined.find(['?', '#']) {
        Some(i) => joined.split_at(i),
        None => (joined.as_str(), ""),
    };
    let mut parts: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i + 1 == segments.len() {
                    parts.push("");
                }
            }
            ".." => {
                parts.pop();
                if i + 1 == segments.len() {
                    parts.push("");
                }
            }
            s => parts.push(s),
        }
    }
    Some(format!("{scheme}://{authority}/{}{query}", parts.join("/")))
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
    fn redirects_are_resolved_against_the_current_url() {
        let b = "http://h:8080/a/b/c?q=1";
        assert_eq!(resolve(b, "/x").unwrap(), "http://h:8080/x");
        assert_eq!(resolve(b, "d").unwrap(), "http://h:8080/a/b/d");
        assert_eq!(resolve(b, "../d?z").unwrap(), "http://h:8080/a/d?z");
        assert_eq!(resolve(b, "../../../../d").unwrap(), "http://h:8080/d");
        assert_eq!(resolve(b, "?r").unwrap(), "http://h:8080/a/b/c?r");
        assert_eq!(resolve(b, "//o/p").unwrap(), "http://o/p");
        assert_eq!(resolve(b, "https://o/p").unwrap(), "https://o/p");
        assert_eq!(resolve(b, "/x\r\nSet-Cookie: a"), None);
    }

    #[test]
    fn credentials_stay_with_their_origin_and_uploads_follow_only_307_and_308() {
        let none = HostPatterns::default();
        let mut p = RedirectPolicy::new("https://h/a", &none, 6);
        let same = p
            .follow("https://h/a", "GET", 302, Some("/b"), "x")
            .unwrap();
        assert!(same.keep_credentials);
        assert_eq!(same.method, "GET");
        // A HEAD stays a HEAD through every redirect (a GET would fetch the body).
        for status in [301, 302, 303, 307, 308] {
            let head = RedirectPolicy::new("https://h/a", &none, 6)
                .follow("https://h/a", "HEAD", status, Some("/b"), "x")
                .unwrap();
            assert_eq!(head.method, "HEAD", "{status}");
        }
        let other = p
            .follow("https://h/a", "GET", 301, Some("https://o/b"), "x")
            .unwrap();
        assert!(!other.keep_credentials);
        let down = p
            .follow("https://h/a", "GET", 302, Some("http://h/b"), "x")
            .unwrap();
        assert!(!down.keep_credentials, "never over a downgrade");
        let port = p
            .follow("https://h/a", "GET", 302, Some("https://h:8443/b"), "x")
            .unwrap();
        assert!(!port.keep_credentials, "another port is another origin");
        let e = p
            .follow("https://h/a", "GET", 302, Some("ftp://h/b"), "x")
            .unwrap_err();
        assert!(e.message().contains("another scheme"), "{e}");
        let e = p
            .follow("https://h/a", "PUT", 302, Some("/b"), "x")
            .unwrap_err();
        assert!(e.message().contains("nothing would be uploaded"), "{e}");
        let put = p
            .follow("https://h/a", "PUT", 307, Some("/b"), "x")
            .unwrap();
        assert_eq!(put.method, "PUT");
        let e = p
            .follow("https://h/a", "GET", 302, Some("/c"), "x")
            .unwrap_err();
        assert!(e.message().contains("too many redirects"), "{e}");
        // The instance's hosts are trusted, within one scheme.
        let hosts = HostPatterns::new(&["*.example.org".to_owned()]);
        let mut p = RedirectPolicy::new("https://a.example.org/x", &hosts, 5);
        let r = p
            .follow(
                "https://a.example.org/x",
                "GET",
                302,
                Some("https://b.example.org/x"),
                "x",
            )
            .unwrap();
        assert!(r.keep_credentials);
        let r = p
            .follow(
                "https://a.example.org/x",
                "GET",
                302,
                Some("https://evil.org/x"),
                "x",
            )
            .unwrap();
        assert!(!r.keep_credentials);
        // Userinfo in a Location is dropped, never used.
        let r = p
            .follow(
                "https://a.example.org/x",
                "GET",
                302,
                Some("https://u:p@b.example.org/x"),
                "x",
            )
            .unwrap();
        assert_eq!(r.url, "https://b.example.org/x");
    }

    #[test]
    fn seconds_are_bounded() {
        assert!(seconds("t", 0.5).is_ok());
        assert!(seconds("t", 0.0).is_err());
        assert!(seconds("t", f64::NAN).is_err());
    }
}
