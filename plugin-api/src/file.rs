//! `File`: a URL a task reads or writes, parsed the way Parsl's `File` parses it.
//!
//! Invariant: the parsed parts are derived from `url` once, at construction, and never
//! change afterwards; only `local_path` is mutable.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::std_types::{ROption, RString};
use abi_stable::StableAbi;

use crate::error::{ErrorKind, StageError};

/// A file named by a URL, as Parsl's `parsl.data_provider.files.File`.
///
/// - `scheme` is `file` when the URL has none;
/// - `netloc` is the authority after `//` (empty when there is none);
/// - `path` excludes the query and the fragment, which stay in `url`;
/// - `filename` is the last component of `path`;
/// - `local_path` is unset until a provider sets it.
///
/// ```
/// use stagehost_plugin_api::File;
/// let f = File::parse("http://host/a/b.txt?x=1#top").unwrap();
/// assert_eq!((f.scheme(), f.netloc(), f.path(), f.filename()), ("http", "host", "/a/b.txt", "b.txt"));
/// assert_eq!(f.url(), "http://host/a/b.txt?x=1#top");
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq, Hash)]
pub struct File {
    url: RString,
    scheme: RString,
    netloc: RString,
    path: RString,
    filename: RString,
    local_path: ROption<RString>,
}

/// Schemes whose last path segment may carry `;params`, which Python's `urlparse`
/// (and so Parsl) strips from `path`. Bare paths are deliberately not in this list:
/// a `;` in a local file name is part of the name.
const SCHEMES_WITH_PARAMS: &[&str] = &["http", "https", "ftp", "sftp"];

impl File {
    /// Parses `url`. A bare relative or absolute path gets the scheme `file` and keeps
    /// its path unchanged.
    ///
    /// Fails with [`ErrorKind::InvalidUrl`] on an empty URL or one holding a control
    /// character.
    pub fn parse(url: &str) -> Result<File, StageError> {
        if url.is_empty() {
            return Err(StageError::new(ErrorKind::InvalidUrl, "empty URL"));
        }
        if let Some(c) = url.chars().find(|c| c.is_control()) {
            return Err(StageError::new(
                ErrorKind::InvalidUrl,
                format!(
                    "URL {} holds the control character {}",
                    redact_url(url),
                    c.escape_default()
                ),
            ));
        }
        let (scheme, rest) = split_scheme(url);
        let (netloc, rest) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
            None => ("", rest),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let mut path = rest.split('?').next().unwrap_or_default();
        let scheme = if scheme.is_empty() {
            "file".to_owned()
        } else {
            scheme.to_ascii_lowercase()
        };
        if SCHEMES_WITH_PARAMS.contains(&scheme.as_str()) {
            let last_segment = path.rfind('/').map_or(0, |i| i + 1);
            if let Some(semi) = path[last_segment..].find(';') {
                path = &path[..last_segment + semi];
            }
        }
        let filename = path.rsplit('/').next().unwrap_or_default();
        Ok(File {
            url: url.into(),
            scheme: scheme.into(),
            netloc: netloc.into(),
            path: path.into(),
            filename: filename.into(),
            local_path: ROption::RNone,
        })
    }

    /// The URL exactly as given, query and fragment included.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The URL with its secrets replaced by `***` and control characters escaped:
    /// what logs, errors and reports show (see [`redact_url`]).
    ///
    /// ```
    /// # use stagehost_plugin_api::File;
    /// let f = File::parse("https://me:s3cret@host/x").unwrap();
    /// assert_eq!(f.redacted_url(), "https://me:***@host/x");
    /// ```
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
    /// The scheme, lower-cased; `file` when the URL has none.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }
    /// The authority (`user@host:port`), or empty.
    pub fn netloc(&self) -> &str {
        &self.netloc
    }
    /// The path, without query or fragment.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The last component of the path (may be empty).
    pub fn filename(&self) -> &str {
        &self.filename
    }
    /// Where a provider placed (or will place) the file, if it said so.
    pub fn local_path(&self) -> Option<&Path> {
        self.local_path
            .as_ref()
            .map(|p| Path::new(p.as_str()))
            .into_option()
    }
    /// Sets where the file lives on the task's side.
    pub fn set_local_path(&mut self, path: impl AsRef<Path>) {
        self.local_path = ROption::RSome(path.as_ref().to_string_lossy().into_owned().into());
    }
    /// A copy with `local_path` unset, as Parsl's `cleancopy()`.
    pub fn clean_copy(&self) -> File {
        File {
            local_path: ROption::RNone,
            ..self.clone()
        }
    }
    /// Moves the file out, leaving an empty one (no URL) in its place: for the host,
    /// which lends `self` to a plugin where it can and moves it where it must.
    #[doc(hidden)]
    pub fn take(&mut self) -> File {
        std::mem::replace(
            self,
            File {
                url: RString::new(),
                scheme: RString::new(),
                netloc: RString::new(),
                path: RString::new(),
                filename: RString::new(),
                local_path: ROption::RNone,
            },
        )
    }

    /// The path a task uses: `local_path` if set, else `path` for the `file` scheme.
    ///
    /// Fails with "No local_path set for URL" otherwise, as Parsl's `filepath`.
    pub fn filepath(&self) -> Result<PathBuf, StageError> {
        if let Some(local) = self.local_path() {
            return Ok(local.to_path_buf());
        }
        if self.scheme == "file" {
            return Ok(PathBuf::from(self.path.as_str()));
        }
        Err(StageError::new(
            ErrorKind::Other,
            format!("No local_path set for {}", self.redacted_url()),
        ))
    }
}

/// `url` as logs, errors and reports show it: the password of its userinfo
/// (`user:password@`) and the values of credential-bearing query parameters (`sig`,
/// `token`, `X-Amz-Signature`, ... see [`is_secret_name`](crate::display::is_secret_name))
/// replaced by `***`, and control characters escaped so it stays on one line.
///
/// ```
/// use stagehost_plugin_api::redact_url;
/// assert_eq!(
///     redact_url("https://me:pw@h/x?X-Amz-Signature=abc&part=2"),
///     "https://me:***@h/x?X-Amz-Signature=***&part=2"
/// );
/// assert_eq!(redact_url("/a\nb"), "/a\\nb");
/// ```
pub fn redact_url(url: &str) -> String {
    // Secrets live in a userinfo or a query: a URL with neither is shown as it is,
    // escaped (the common case, decided without parsing).
    if !url.contains(['@', '?']) {
        return crate::display::escape(url).into_owned();
    }
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let authority_end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        match userinfo_span(url).map(|(_, at)| at) {
            Some(at) => {
                let info = &url[start..at];
                let (user, password) = match info.split_once(':') {
                    Some((user, _)) => (user, true),
                    None => (info, false),
                };
                out.push_str(&url[..start]);
                if crate::display::is_plain_user_name(user) {
                    out.push_str(user);
                } else {
                    out.push_str("***");
                }
                if password {
                    out.push_str(":***");
                }
                let host_end = url[at..]
                    .find(['/', '?', '#'])
                    .map_or(url.len(), |i| at + i);
                out.push_str(&url[at..host_end]);
                rest = &url[host_end..];
            }
            None => {
                out.push_str(&url[..authority_end]);
                rest = &url[authority_end..];
            }
        }
    }
    let (before_fragment, fragment) = match rest.find('#') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _)) if crate::display::is_secret_name(&query_key(key)) => {
                        out.push_str(key);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    crate::display::escape(&out).into_owned()
}

/// The values of `url`'s query parameters that [`redact_url`] hides (those whose names
/// look secret: `token`, `sig`, `X-Amz-Signature`, ...), as written; the same reading of
/// the query as redaction's, so a message can be scrubbed of exactly what a URL shown
/// would hide.
///
/// ```
/// use stagehost_plugin_api::file_secret_query_values as values;
/// assert_eq!(values("https://h/x?token=T1&page=2#f"), ["T1"]);
/// assert!(values("https://h/x?page=2").is_empty());
/// ```
pub fn secret_query_values(url: &str) -> Vec<String> {
    let before_fragment = url.split('#').next().unwrap_or(url);
    let Some((_, query)) = before_fragment.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, value)| !value.is_empty() && crate::display::is_secret_name(&query_key(key)))
        .map(|(_, value)| value.to_owned())
        .collect()
}

/// Where the userinfo of `url` lies: `(start, at)`, the userinfo being `url[start..at]`
/// and `url[at]` its `@`; `None` when there is none. The one reading of a userinfo
/// that every output's redaction follows:
/// - it ends at the authority's last `@`;
/// - when a password holds an unencoded `/`, `?` or `#`, the authority seems to end
///   early with a "port" that is no number, and the userinfo runs to the URL's last
///   `@`.
///
/// ```
/// use stagehost_plugin_api::userinfo_span;
/// let url = "https://me:pa/ss@h/x";
/// let (start, at) = userinfo_span(url).unwrap();
/// assert_eq!(&url[start..at], "me:pa/ss");
/// assert_eq!(userinfo_span("http://h:8080/a@b"), None);
/// ```
pub fn userinfo_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    let at = authority.rfind('@').map(|i| start + i).or_else(|| {
        let bad_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.bytes().all(|b| b.is_ascii_digit()));
        bad_port
            .then(|| url[authority_end..].rfind('@').map(|i| authority_end + i))
            .flatten()
    })?;
    Some((start, at))
}

/// A query key decoded as a form field's name (`+` is a space, `%XX` a byte), for
/// comparing it with secret names.
fn query_key(key: &str) -> String {
    form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// Splits `scheme:rest` the way Python's `urlsplit` does: a scheme is a letter followed
/// by letters, digits, `+`, `-` or `.`, ended by `:`.
fn split_scheme(url: &str) -> (&str, &str) {
    if let Some(colon) = url.find(':') {
        let candidate = &url[..colon];
        let mut chars = candidate.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            return (candidate, &url[colon + 1..]);
        }
    }
    ("", url)
}

/// Shows the redacted URL: a `File` printed by mistake never leaks a secret.
impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("url", &self.redacted_url())
            .field("local_path", &self.local_path())
            .finish()
    }
}

/// The redacted URL (see [`redact_url`]); [`File::url`] is the URL as given.
impl fmt::Display for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, String, String) {
        let f = File::parse(url).unwrap();
        (
            f.scheme().into(),
            f.netloc().into(),
            f.path().into(),
            f.filename().into(),
        )
    }

    #[test]
    fn file_url_gives_its_path() {
        assert_eq!(
            parts("file:///x"),
            ("file".into(), "".into(), "/x".into(), "x".into())
        );
    }

    #[test]
    fn bare_paths_get_the_file_scheme_and_keep_their_path() {
        assert_eq!(
            parts("data/in.txt"),
            (
                "file".into(),
                "".into(),
                "data/in.txt".into(),
                "in.txt".into()
            )
        );
        assert_eq!(
            parts("/abs/dir/in.txt"),
            (
                "file".into(),
                "".into(),
                "/abs/dir/in.txt".into(),
                "in.txt".into()
            )
        );
        // A `;` in a local name is part of the name.
        assert_eq!(File::parse("a;b.txt").unwrap().filename(), "a;b.txt");
    }

    #[test]
    fn http_url_parts() {
        assert_eq!(
            parts("http://host/a/b.txt"),
            (
                "http".into(),
                "host".into(),
                "/a/b.txt".into(),
                "b.txt".into()
            )
        );
        assert_eq!(parts("HTTPS://h:8080/x").0, "https");
        assert_eq!(parts("https://u:p@h:8080/x").1, "u:p@h:8080");
    }

    #[test]
    fn query_and_fragment_stay_in_the_url_only() {
        let f = File::parse("http://h/dir/f.csv?version=2&x=y#part").unwrap();
        assert_eq!(f.path(), "/dir/f.csv");
        assert_eq!(f.filename(), "f.csv");
        assert_eq!(f.url(), "http://h/dir/f.csv?version=2&x=y#part");
        let g = File::parse("file:///d/f.txt#frag").unwrap();
        assert_eq!(g.path(), "/d/f.txt");
    }

    #[test]
    fn params_are_stripped_for_network_schemes_as_urlparse_does() {
        assert_eq!(
            File::parse("ftp://h/d/f.txt;type=i").unwrap().path(),
            "/d/f.txt"
        );
    }

    #[test]
    fn local_path_wins_in_filepath() {
        let mut f = File::parse("file:///x").unwrap();
        assert_eq!(f.filepath().unwrap(), PathBuf::from("/x"));
        f.set_local_path("/work/x");
        assert_eq!(f.filepath().unwrap(), PathBuf::from("/work/x"));
        assert_eq!(f.clean_copy().local_path(), None);
    }

    #[test]
    fn filepath_of_remote_file_without_local_path_is_an_error() {
        let err = File::parse("http://h/x").unwrap().filepath().unwrap_err();
        assert!(err.to_string().contains("No local_path"), "{err}");
        assert_eq!(err.to_string(), "No local_path set for http://h/x");
    }

    #[test]
    fn netloc_without_path() {
        assert_eq!(
            parts("http://host"),
            ("http".into(), "host".into(), "".into(), "".into())
        );
        assert_eq!(parts("http://host?q=1").2, "");
    }

    #[test]
    fn invalid_urls_are_rejected() {
        assert_eq!(File::parse("").unwrap_err().kind(), ErrorKind::InvalidUrl);
        assert_eq!(
            File::parse("a\nb").unwrap_err().kind(),
            ErrorKind::InvalidUrl
        );
    }

    #[test]
    fn credential_query_parameters_are_redacted() {
        assert_eq!(
            redact_url("https://acct.blob.core.windows.net/c/b?sv=2020&sig=AbC%2F&se=1"),
            "https://acct.blob.core.windows.net/c/b?sv=2020&sig=***&se=1"
        );
        assert_eq!(
            redact_url("https://h/o?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff#sha256=ab"),
            "https://h/o?X-Amz-Credential=***&X-Amz-Signature=***#sha256=ab"
        );
        assert_eq!(redact_url("/p?access%5Ftoken=t"), "/p?access%5Ftoken=***");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("ftp://u:p@h/x"), "ftp://u:***@h/x");
        assert_eq!(redact_url("ftp://u@h/x"), "ftp://u@h/x");
        assert_eq!(redact_url("/plain/path"), "/plain/path");
        assert_eq!(redact_url("http://h:80/x"), "http://h:80/x");
        // A token as the user name.
        assert_eq!(
            redact_url("https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("https://x-access-token:ghs_abc@h/r"),
            "https://x-access-token:***@h/r"
        );
        // Unencoded `/`, `#` and `?` in a password.
        for url in [
            "https://me:pa/ss@h/x",
            "https://me:pa#ss@h/x",
            "https://me:pa?ss@h/x",
        ] {
            let shown = redact_url(url);
            assert_eq!(shown, "https://me:***@h/x", "{url}");
        }
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
        assert_eq!(redact_url("http://h:8080/a@b"), "http://h:8080/a@b");
        // Query parameters that carry credentials under other names.
        assert_eq!(
            redact_url("https://h/x?jwt=a.b.c&authkey=k&hmac=m&n=1"),
            "https://h/x?jwt=***&authkey=***&hmac=***&n=1"
        );
    }

    #[test]
    fn a_colon_later_in_a_path_is_no_scheme() {
        assert_eq!(parts("dir/a:b").0, "file");
        assert_eq!(parts("1x:y").0, "file");
        assert_eq!(parts("zip:/tmp/a.zip/m.txt").0, "zip");
    }
}
