//! Secrets in settings and URLs, found once and kept out of every line: which keys
//! hold secrets (by name, or declared by the plugin), the values behind them (and
//! behind `*_env` settings), a URL's credentials, and `scrub`, which every error a
//! provider or a config produces passes through before anyone sees it.

use stagehost_plugin_api::display::is_secret_name;

/// Whether settings key `key` holds a secret: by its name, or because the plugin
/// declared it. A `*_env` key (`bearer_token_env = "GCS_TOKEN"`) holds the name of a
/// variable, not a secret: the name is shown, so an error can say which variable is
/// missing; the value behind it is the secret ([`secret_values`]).
pub fn is_secret_key(key: &str, declared: &[String]) -> bool {
    declared.iter().any(|d| d == key) || (is_secret_name(key) && !key.ends_with("_env"))
}

/// Every secret under `table` (by key, or a URL's credentials) shown as `***`.
pub fn redact_table(table: &mut toml::Table, declared: &[String]) {
    for (key, value) in table.iter_mut() {
        if is_secret_key(key, declared) {
            *value = toml::Value::String("***".into());
        } else {
            redact_value(value, declared);
        }
    }
}

fn redact_value(value: &mut toml::Value, declared: &[String]) {
    match value {
        toml::Value::Table(inner) => redact_table(inner, declared),
        toml::Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, declared)),
        // A URL's credentials (an endpoint with `user:password@`) are shown as `***`
        // whatever key holds it.
        toml::Value::String(text) if text.contains("://") => {
            *text = stagehost_plugin_api::redact_url(text);
        }
        _ => {}
    }
}

/// The secrets a URL carries: its userinfo's password (as written and decoded), or
/// its user name when that is a token rather than a name.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Secrets live in a query or a userinfo: a URL with neither has none (the
    // common case, decided without parsing).
    if !url.contains(['?', '@']) {
        return out;
    }
    // Read as redaction reads it, so what is scrubbed is what would be shown: the
    // values of secret-named query parameters, then the userinfo's.
    for value in stagehost_plugin_api::file_secret_query_values(url) {
        let decoded = stagehost_plugin_api::net::percent_decode(&value);
        if decoded != value {
            out.push(decoded);
        }
        out.push(value);
    }
    let Some((start, at)) = stagehost_plugin_api::userinfo_span(url) else {
        return out;
    };
    let info = &url[start..at];
    let (user, password) = match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    };
    for secret in password
        .into_iter()
        .chain((!stagehost_plugin_api::display::is_plain_user_name(user)).then_some(user))
    {
        if !secret.is_empty() {
            out.push(secret.to_owned());
            let decoded = stagehost_plugin_api::net::percent_decode(secret);
            if decoded != secret {
                out.push(decoded);
            }
        }
    }
    out
}

/// Every string value held under a secret key of `table` (at any depth), longest
/// first: what must never appear in a line about these settings.
pub fn secret_values(table: &toml::Table, declared: &[String]) -> Vec<String> {
    fn all_strings(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) if !s.is_empty() => out.push(s.clone()),
            toml::Value::Table(t) => t.values().for_each(|v| all_strings(v, out)),
            toml::Value::Array(a) => a.iter().for_each(|v| all_strings(v, out)),
            other if !matches!(other, toml::Value::String(_)) => out.push(other.to_string()),
            _ => {}
        }
    }
    fn walk(table: &toml::Table, declared: &[String], out: &mut Vec<String>) {
        for (key, value) in table {
            // `token_env = "VAR"`: the value of VAR is what the plugin sends, and may
            // come back quoted in a server's error.
            if let (true, toml::Value::String(var)) = (key.ends_with("_env"), value) {
                if let Some(v) = std::env::var_os(var).and_then(|v| v.into_string().ok()) {
                    if v.len() >= 8 {
                        out.push(v);
                    }
                }
            }
            if is_secret_key(key, declared) {
                all_strings(value, out);
            } else {
                walk_value(value, declared, out);
            }
        }
    }
    fn walk_value(value: &toml::Value, declared: &[String], out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => walk(t, declared, out),
            toml::Value::Array(a) => a.iter().for_each(|v| walk_value(v, declared, out)),
            toml::Value::String(s) if s.contains("://") => out.extend(url_secrets(s)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(table, declared, &mut out);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `text` with every one of `secrets` replaced by `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |t, secret| {
        t.replace(secret.as_str(), "***")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_secrets_are_its_password_and_its_secret_query_values() {
        assert_eq!(
            url_secrets("https://u:p%40ss@h/x?token=T%2B1&page=2&sig=S#frag"),
            ["T+1", "T%2B1", "S", "p%40ss", "p@ss"]
        );
        assert!(url_secrets("https://h/x?page=2").is_empty());
        // What is scrubbed is what redaction hides.
        let scrubbed = scrub(
            "the server said token=T1 twice: T1",
            &url_secrets("s3://b/k?token=T1"),
        );
        assert!(!scrubbed.contains("T1"), "{scrubbed}");
    }

    #[test]
    fn an_env_settings_variable_name_is_shown_and_its_value_is_not() {
        assert!(!is_secret_key("bearer_token_env", &[]));
        assert!(is_secret_key("bearer_token", &[]));
        assert!(is_secret_key("token_env", &["token_env".to_owned()]));
        let mut table: toml::Table =
            toml::from_str("password_env = \"MY_PASSWORD\"\npassword = \"hunter22\"").unwrap();
        redact_table(&mut table, &[]);
        assert_eq!(table["password_env"].as_str(), Some("MY_PASSWORD"));
        assert_eq!(table["password"].as_str(), Some("***"));
    }

    #[test]
    fn the_value_behind_an_env_setting_is_a_secret() {
        std::env::set_var("STAGEHOST_TEST_TOKEN_VALUE", "tok-behind-the-variable");
        let table: toml::Table =
            toml::from_str("token_env = \"STAGEHOST_TEST_TOKEN_VALUE\"\nmode = \"x\"").unwrap();
        let secrets = secret_values(&table, &[]);
        assert!(
            secrets.iter().any(|s| s == "tok-behind-the-variable"),
            "{secrets:?}"
        );
        assert!(!secrets.iter().any(|s| s == "x"), "{secrets:?}");
    }
}
