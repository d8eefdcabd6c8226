//! The shared AWS files, as the aws CLI reads them: `~/.aws/credentials` (sections
//! named by profile) and `~/.aws/config` (`[default]` and `[profile NAME]`), or the
//! files `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` name. The profile is the
//! one asked for, else `AWS_PROFILE`, else `default`.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile holds.
#[derive(Debug, Default, PartialEq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// `key = value` lines by section, in an INI file's text.
fn sections(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            out.entry(current.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    out
}

fn file(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))
}

/// The profile `name` (else `AWS_PROFILE`, else `default`) from the shared files, if
/// either holds it.
pub fn load(name: Option<&str>) -> Option<Profile> {
    let name = name
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "default".to_owned());
    let read = |path: Option<PathBuf>| {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| sections(&t))
            .unwrap_or_default()
    };
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config = read(file("AWS_CONFIG_FILE", "config"));
    from_sections(&name, &credentials, &config)
}

fn from_sections(
    name: &str,
    credentials: &HashMap<String, HashMap<String, String>>,
    config: &HashMap<String, HashMap<String, String>>,
) -> Option<Profile> {
    let creds = credentials.get(name);
    let conf = if name == "default" {
        config.get("default")
    } else {
        config.get(&format!("profile {name}"))
    };
    if creds.is_none() && conf.is_none() {
        return None;
    }
    let pick = |key: &str| {
        creds
            .and_then(|c| c.get(key))
            .or_else(|| conf.and_then(|c| c.get(key)))
            .cloned()
    };
    Some(Profile {
        access_key_id: pick("aws_access_key_id"),
        secret_access_key: pick("aws_secret_access_key"),
        session_token: pick("aws_session_token"),
        region: conf.and_then(|c| c.get("region")).cloned(),
        endpoint_url: conf.and_then(|c| c.get("endpoint_url")).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_read_as_the_aws_cli_reads_them() {
        let creds = sections("[default]\naws_access_key_id = AK\naws_secret_access_key=SK\n\n[site]\naws_access_key_id = SITE\naws_secret_access_key = SS\naws_session_token = T\n");
        let conf = sections("# comment\n[default]\nregion = us-east-1\n[profile site]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:5000\n");
        let site = from_sections("site", &creds, &conf).unwrap();
        assert_eq!(site.access_key_id.as_deref(), Some("SITE"));
        assert_eq!(site.session_token.as_deref(), Some("T"));
        assert_eq!(site.region.as_deref(), Some("eu-west-1"));
        assert_eq!(site.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        let default = from_sections("default", &creds, &conf).unwrap();
        assert_eq!(default.secret_access_key.as_deref(), Some("SK"));
        assert_eq!(default.region.as_deref(), Some("us-east-1"));
        assert!(from_sections("missing", &creds, &conf).is_none());
    }
}
