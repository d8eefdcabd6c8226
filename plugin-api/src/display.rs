//! Text for error lines and logs: control characters escaped so a message stays on
//! one line, paths shown with their exact bytes (a byte that is not UTF-8 is written
//! `\xNN`, never replaced by U+FFFD), and the names that mark a secret.

use std::borrow::Cow;
use std::path::Path;

/// `text` with every control character escaped (`\n`, `\r`, `\t`, `\u{1b}`...), so it
/// cannot break an error line or drive a terminal. Borrowed when nothing needs escaping.
///
/// ```
/// use stagehost_plugin_api::display::escape;
/// assert_eq!(escape("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
/// assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
/// assert_eq!(escape("plain"), "plain");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if hidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A character that changes how a line reads without showing itself: a control
/// character, or a bidirectional override, embedding, isolate or mark (which can make
/// a line show text in another order than it holds).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// `path` for an error line: control characters escaped and every byte that is not
/// UTF-8 written as `\xNN`.
///
/// ```
/// use std::path::Path;
/// use stagehost_plugin_api::display::path;
/// assert_eq!(path(Path::new("/tmp/a\tb")), "/tmp/a\\tb");
/// ```
pub fn path(path: &Path) -> String {
    bytes(path.as_os_str().as_encoded_bytes())
}

fn bytes(mut raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    loop {
        match std::str::from_utf8(raw) {
            Ok(text) => {
                out.push_str(&escape(text));
                return out;
            }
            Err(e) => {
                let (good, rest) = raw.split_at(e.valid_up_to());
                out.push_str(&escape(
                    std::str::from_utf8(good).expect("valid up to this point"),
                ));
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                raw = &rest[bad..];
            }
        }
    }
}

/// Whether a settings key or URL query parameter named `name` holds a secret: a
/// password, passphrase, token, secret, credential, signature, private/access/API key,
/// authorization or session value. Case, `_`, `-` and camelCase do not matter
/// (`apiKey`, `API_KEY` and `api-key` are one name).
///
/// ```
/// use stagehost_plugin_api::display::is_secret_name;
/// for name in ["password", "apiKey", "X-Amz-Signature", "sig", "pwd", "client_secret"] {
///     assert!(is_secret_name(name), "{name}");
/// }
/// assert!(!is_secret_name("bucket") && !is_secret_name("mode") && !is_secret_name("version"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    const WITHIN: &[&str] = &[
        "jwt",
        "hmac",
        "authkey",
        "bearer",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "credential",
        "privatekey",
        "accesskey",
        "apikey",
        "signature",
        "authorization",
        "cookie",
        "session",
    ];
    const EXACT: &[&str] = &["pwd", "pw", "pass", "sig", "auth", "key", "sas", "code"];
    WITHIN.iter().any(|w| folded.contains(w)) || EXACT.contains(&folded.as_str())
}

/// Whether a URL's user name may be shown as it is: an ordinary account name
/// (`anonymous`, `alice`, `svc-data.01`: at most 32 lower-case letters, digits, `.`,
/// `_` or `-`, few digits). Anything else may be a token used as the user name (as
/// GitHub's and many object stores' URLs carry them) and is shown as `***`.
///
/// ```
/// use stagehost_plugin_api::display::is_plain_user_name;
/// assert!(is_plain_user_name("anonymous") && is_plain_user_name("svc-data.01"));
/// assert!(!is_plain_user_name("ghp_16C7e42F292c6912E7710c838347Ae178B4a"));
/// assert!(!is_plain_user_name("AKIAIOSFODNN7EXAMPLE"));
/// ```
pub fn is_plain_user_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && user.bytes().filter(u8::is_ascii_digit).count() <= 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn non_utf8_bytes_are_shown_as_hex() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/d/a\xffb\xc3"));
        assert_eq!(path(p), "/d/a\\xffb\\xc3");
    }
}
