//! Property tests of the parsers and of redaction, shared by the test suite (a few
//! hundred cases each) and by `benches/properties.rs` (millions): none of them panics,
//! parsed parts keep their invariants, the table-by-table workflow parser agrees with a
//! whole-document parse, and a secret placed in a URL's password, in a credential
//! query parameter or under a secret settings key at any depth never reaches an output.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use stagehost::config::{Config as HostConfig, ConfigSource};
use stagehost::engine::{expand_command, shell_quote, TaskFiles};
use stagehost::workflow::Workflow;
use stagehost_plugin_api::{redact_url, File};

/// A secret no other generated text contains by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{12,20}".prop_map(|s| format!("Zq9{s}"))
}

/// Text with the characters that break parsers: quotes, braces, control characters,
/// separators of URLs and of TOML, and non-ASCII.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-z0-9/:?#&=@%;.\\[\\]{}'\"\\\\ \\n\\t\\x00\\x1bé-]{0,40}",
    ]
}

fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("http://".to_owned()),
        Just("https://".to_owned()),
        Just("ftp://".to_owned()),
        Just("file://".to_owned()),
        Just("s3://".to_owned()),
        "[a-zA-Z][a-zA-Z0-9+.-]{0,6}:(//)?",
    ]
}

/// A credential-bearing query parameter name, in any case.
fn secret_param() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "sig",
            "token",
            "access_token",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "X-Amz-Security-Token",
            "X-Goog-Signature",
            "X-Goog-Credential",
            "password",
            "api_key",
            "client_secret",
        ]),
        any::<bool>(),
    )
        .prop_map(|(name, upper)| {
            if upper {
                name.to_ascii_uppercase()
            } else {
                name.to_owned()
            }
        })
}

/// A URL with `secret` in its password or in a credential query parameter, among
/// arbitrary other parts (which may hold control characters).
fn url_with_secret() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("http://"),
            Just("https://"),
            Just("ftp://"),
            Just("s3://"),
            Just("sftp://")
        ],
        "[a-z]{1,8}",
        "[a-z0-9.-]{1,12}",
        nasty().prop_map(|p| p.replace(['?', '#', '@'], "")),
        prop::collection::vec(("[a-z]{1,6}", "[a-z0-9]{0,6}"), 0..3),
        secret_param(),
        any::<bool>(),
        "[a-z0-9=]{0,12}",
        secret(),
    )
        .prop_map(
            |(scheme, user, host, path, other, param, in_password, fragment, secret)| {
                let mut url = if in_password {
                    format!("{scheme}{user}:{secret}@{host}/{path}")
                } else {
                    format!("{scheme}{user}@{host}/{path}")
                };
                let mut query: Vec<String> =
                    other.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !in_password {
                    query.insert(query.len() / 2, format!("{param}={secret}"));
                }
                if !query.is_empty() {
                    url.push('?');
                    url.push_str(&query.join("&"));
                }
                if !fragment.is_empty() {
                    url.push('#');
                    url.push_str(&fragment);
                }
                (url, secret)
            },
        )
}

/// `File::parse` never panics; what it returns keeps Parsl's invariants, and what it
/// shows has no control character.
pub fn file_parse(url: &str) -> Result<(), TestCaseError> {
    match File::parse(url) {
        Ok(f) => {
            prop_assert_eq!(f.url(), url);
            prop_assert!(!f.scheme().is_empty());
            prop_assert_eq!(f.scheme(), f.scheme().to_ascii_lowercase());
            prop_assert!(!f.path().contains(['?', '#']));
            prop_assert_eq!(f.filename(), f.path().rsplit('/').next().unwrap_or(""));
            prop_assert!(f.local_path().is_none());
            prop_assert!(!f.redacted_url().chars().any(char::is_control));
            if f.scheme() == "file" {
                prop_assert!(f.filepath().is_ok());
            }
        }
        Err(e) => prop_assert!(!e.to_string().chars().any(char::is_control), "{e}"),
    }
    Ok(())
}

/// A secret in a URL never appears in what stagehost shows of it: the redacted URL,
/// `File`'s `Display` and `Debug`, and parse errors (a control character added).
pub fn secret_url(url: &str, secret: &str, junk: char) -> Result<(), TestCaseError> {
    let shown = redact_url(url);
    prop_assert!(!shown.contains(secret), "{shown}");
    if let Ok(f) = File::parse(url) {
        prop_assert!(!f.to_string().contains(secret));
        let debug = format!("{f:?}");
        prop_assert!(!debug.contains(secret));
        prop_assert!(!f.redacted_url().contains(secret));
    }
    let broken = format!("{url}{junk}");
    if let Err(e) = File::parse(&broken) {
        prop_assert!(!e.to_string().contains(secret), "{e}");
    }
    prop_assert!(!redact_url(&broken).contains(secret));
    Ok(())
}

/// Reads `quoted` the way `sh` reads one word of plain and single-quoted text.
fn unquote(quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut i = 0;
    while i < quoted.len() {
        match (quoted[i], in_quotes) {
            (b'\'', _) => in_quotes = !in_quotes,
            (b'\\', false) if i + 1 < quoted.len() => {
                i += 1;
                out.push(quoted[i]);
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    out
}

/// Placeholder expansion never panics; with a valid command every placeholder is
/// replaced by its path quoted so that `sh` reads the exact bytes back; text without
/// placeholders is unchanged.
pub fn expansion(command: &str, paths: &[Vec<u8>]) -> Result<(), TestCaseError> {
    use std::os::unix::ffi::OsStrExt;
    let path = |b: &Vec<u8>| PathBuf::from(std::ffi::OsStr::from_bytes(b));
    let files = TaskFiles {
        working_dir: PathBuf::from("/wd"),
        inputs: paths.iter().take(2).map(path).collect(),
        outputs: paths.iter().skip(2).take(2).map(path).collect(),
        stdout: paths.get(4).map(path),
        stderr: None,
        ..TaskFiles::default()
    };
    match expand_command(command, &files) {
        Ok(expanded) => {
            if !command.contains('{') {
                prop_assert_eq!(expanded.as_bytes(), command.as_bytes());
            }
            if command == "{inputs[0]}" {
                prop_assert_eq!(unquote(expanded.as_bytes()), paths[0].clone());
            }
        }
        Err(e) => prop_assert!(e.starts_with("the command uses {"), "{e}"),
    }
    for p in paths {
        if let Ok(text) = std::str::from_utf8(p) {
            prop_assert_eq!(unquote(shell_quote(text).as_bytes()), p.clone());
        }
    }
    Ok(())
}

fn source(text: &str) -> ConfigSource {
    ConfigSource::File {
        path: "prop.toml".into(),
        found_by: "proptest",
        text: text.into(),
    }
}

/// Any text given as a config: `Config::parse` never panics, and an error is one line.
pub fn config_text(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = HostConfig::parse(text, source(text)) {
        prop_assert!(!e.to_string().contains('\n'), "{e}");
    }
    Ok(())
}

/// A secret settings key, spelled as people spell it.
fn secret_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "password",
        "Password",
        "apiKey",
        "API_KEY",
        "api-key",
        "privateKey",
        "private_key",
        "accessKey",
        "secret_access_key",
        "passphrase",
        "pwd",
        "Authorization",
        "token",
        "sasToken",
        "client_secret",
        "credentials",
    ])
    .prop_map(str::to_owned)
}

/// A settings value holding `secret` under a secret key, at some depth, among
/// ordinary keys; as TOML text for `settings = ...`.
fn settings_with_secret() -> impl Strategy<Value = (String, String)> {
    (
        secret_key(),
        secret(),
        0usize..3,
        any::<bool>(),
        "[a-z]{1,8}",
        "[a-z0-9]{0,8}",
    )
        .prop_map(|(key, secret, depth, in_array, plain_key, plain_value)| {
            let mut value = format!(
                "{{ {} = {} }}",
                toml_key(&key),
                toml::Value::String(secret.clone())
            );
            for level in 0..depth {
                value = if in_array && level == 0 {
                    format!("{{ list = [{value}, {{ x = 1 }}] }}")
                } else {
                    format!("{{ nested{level} = {value} }}")
                };
            }
            let text = format!(
                "{{ {plain_key}_plain = {}, inner = {value} }}",
                toml::Value::String(plain_value)
            );
            (text, secret)
        })
}

fn toml_key(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        toml::Value::String(key.to_owned()).to_string()
    }
}

/// `config show` never shows a secret setting.
pub fn config_secret(settings: &str, secret: &str) -> Result<(), TestCaseError> {
    let text = format!("[[provider]]\nname = \"p\"\nplugin = \"x\"\nsettings = {settings}\n");
    let config =
        HostConfig::parse(&text, source(&text)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let shown = config.to_toml_redacted(&Default::default());
    prop_assert!(!shown.contains(secret), "{shown}");
    Ok(())
}

/// One generated task: its name, command and optional input reference.
#[derive(Debug, Clone)]
pub struct GenTask {
    name: String,
    command: String,
    input: Option<usize>,
    comment: bool,
}

fn gen_task() -> impl Strategy<Value = GenTask> {
    (
        nasty(),
        nasty(),
        prop::option::of(0usize..20),
        any::<bool>(),
    )
        .prop_map(|(name, command, input, comment)| GenTask {
            name,
            command,
            input,
            comment,
        })
}

/// The workflow's text and the line of each task's header, as written.
fn workflow_text(tasks: &[GenTask]) -> (String, Vec<usize>) {
    let mut text = String::from("# generated\n\n");
    let mut headers = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        headers.push(text.matches('\n').count() + 1);
        text.push_str(if t.comment {
            "  [[ task ]] # next\n"
        } else {
            "[[task]]\n"
        });
        // Unique names, so that the workflow can be checked.
        let name = format!("{i}:{}", t.name);
        text.push_str(&format!("name = {}\n", toml::Value::String(name)));
        text.push_str(&format!(
            "command = {}\n",
            toml::Value::String(t.command.clone())
        ));
        text.push_str(&format!("outputs = [\"out/{i}.txt\"]\n"));
        if let Some(p) = t.input.filter(|&p| p < i) {
            text.push_str(&format!(
                "inputs = [{{ task = {}, output = 0 }}]\n",
                toml::Value::String(format!("{p}:{}", tasks[p].name))
            ));
        }
        text.push('\n');
    }
    (text, headers)
}

/// A generated workflow parses; the table-by-table parser agrees with a parse of the
/// whole document (names, commands, the line of each table); checking never panics.
pub fn workflow(tasks: &[GenTask]) -> Result<(), TestCaseError> {
    let (text, header_lines) = workflow_text(tasks);
    let parsed = Workflow::parse(&text, Path::new("/w/flow.toml"))
        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    let whole: toml::Table = text
        .parse()
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let tables = whole["task"].as_array().expect("task is an array");
    prop_assert_eq!(parsed.tasks.len(), tables.len());
    for (i, (t, table)) in parsed.tasks.iter().zip(tables).enumerate() {
        prop_assert_eq!(Some(t.name.as_str()), table["name"].as_str());
        prop_assert_eq!(Some(t.command.as_str()), table["command"].as_str());
        let location = parsed.location(i);
        let line = location.rsplit(':').nth(1).unwrap_or("").to_owned();
        prop_assert_eq!(line, header_lines[i].to_string());
    }
    let _ = parsed.check(&["local"]);
    Ok(())
}

/// Any text as a workflow: parsing and checking never panic; an error is one line.
pub fn workflow_any(text: &str) -> Result<(), TestCaseError> {
    match Workflow::parse(text, Path::new("/w/flow.toml")) {
        Ok(w) => {
            if let Err(e) = w.check(&["local"]) {
                prop_assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
        Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
    }
    Ok(())
}

/// Text shaped like a workflow, with arbitrary pieces inside.
fn workflow_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("[[task]]\n".to_owned()),
            Just("name = \"a\"\n".to_owned()),
            Just("command = \"true\"\n".to_owned()),
            Just("inputs = [{ task = \"a\", outptu = 1 }]\n".to_owned()),
            Just("outputs = [\"x\"]\n".to_owned()),
            Just("timeout_secs = 1e308\n".to_owned()),
            Just("command = '''\n[[task]]\n'''\n".to_owned()),
            nasty().prop_map(|s| s + "\n"),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// The outcome of one property run.
pub struct Outcome {
    /// The property's name.
    pub name: &'static str,
    /// Cases run.
    pub cases: u32,
    /// Seconds taken.
    pub seconds: f64,
    /// The failure, if one was found (with the minimal input).
    pub failure: Option<String>,
}

fn run<S: Strategy>(
    name: &'static str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Outcome
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let start = std::time::Instant::now();
    let failure = match runner.run(&strategy, test) {
        Ok(()) => None,
        Err(TestError::Fail(why, input)) => Some(format!("{why}; minimal input: {input:?}")),
        Err(e) => Some(e.to_string()),
    };
    Outcome {
        name,
        cases,
        seconds: start.elapsed().as_secs_f64(),
        failure,
    }
}

/// Runs every property with `cases` cases each.
pub fn run_all(cases: u32) -> Vec<Outcome> {
    vec![
        run("File::parse, any text", cases, prop_oneof![nasty(), (scheme(), nasty()).prop_map(|(s, r)| s + &r)], |u| file_parse(&u)),
        run("secrets in URLs", cases, (url_with_secret(), prop::sample::select(vec!['\n', '\r', '\t', '\u{1b}', '\u{7f}'])), |((u, s), j)| secret_url(&u, &s, j)),
        run("placeholder expansion", cases, (prop_oneof![nasty(), Just("{inputs[0]}".to_owned()), "[a-z ]{0,5}\\{(inputs|outputs)\\[[0-9]{1,2}\\]\\}[a-z ]{0,5}\\{stdout\\}"], prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 5)), |(c, p)| expansion(&c, &p)),
        run("config parser, any text", cases, prop_oneof![nasty(), workflow_like(), "(\\[transfers\\]\n(max_concurrent|per_host|timeout_secs|retries) = (-?[0-9]{1,25}|[0-9]e[0-9]{1,3}|nan|inf|\"x\")\n){1,3}"], |t| config_text(&t)),
        run("secrets in settings", cases, settings_with_secret(), |(t, s)| config_secret(&t, &s)),
        run("workflow parser, generated", cases, prop::collection::vec(gen_task(), 1..12), |t| workflow(&t)),
        run("workflow parser, any text", cases, workflow_like(), |t| workflow_any(&t)),
    ]
}
