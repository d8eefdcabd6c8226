//! `Settings`: a provider instance's `settings` table, handed over as TOML text and
//! read with serde.

use serde::de::DeserializeOwned;

use crate::error::StageError;

/// The `settings` table of a `[[provider]]` in the host's config, as TOML text.
#[derive(Debug, Clone)]
pub struct Settings {
    text: String,
}

impl Settings {
    /// Wraps TOML text (a document whose top level is the settings table).
    pub fn from_toml(text: impl Into<String>) -> Settings {
        Settings { text: text.into() }
    }
    /// The TOML text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// Reads the settings into `T`. Put `#[serde(deny_unknown_fields)]` on `T`: an
    /// unknown key is then an error that names the key, with its line and column in
    /// the settings text. The host maps the key back to its place in the config file.
    ///
    /// ```
    /// use stagehost_plugin_api::Settings;
    /// #[derive(serde::Deserialize, Default, Debug)]
    /// #[serde(deny_unknown_fields, default)]
    /// struct S { mode: String }
    /// let s: S = Settings::from_toml("mode = \"copy\"").parse().unwrap();
    /// assert_eq!(s.mode, "copy");
    /// let err = Settings::from_toml("mode = \"copy\"\nmod = 1").parse::<S>().unwrap_err();
    /// assert!(err.to_string().contains("unknown field `mod`"), "{err}");
    /// assert!(err.to_string().contains("line 2, column 1"), "{err}");
    /// ```
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        toml::from_str(&self.text).map_err(|e| {
            let what = e.message().trim();
            match e.span() {
                Some(span) => {
                    let (line, column) = line_column(&self.text, span.start);
                    StageError::invalid_settings(format!(
                        "invalid settings: {what} (line {line}, column {column} of the settings)"
                    ))
                }
                None => StageError::invalid_settings(format!("invalid settings: {what}")),
            }
        })
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a provider's work runs, read from a `mode` setting: `"separate"` (a separate
/// job, the default) or `"in-task"` (an in-task step). Parsl ships some providers in
/// both kinds (`HTTPSeparateTaskStaging`, `HTTPInTaskStaging`); a setting lets a site
/// choose.
///
/// ```
/// use stagehost_plugin_api::{Settings, WorkPlace};
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default)]
/// struct S { mode: WorkPlace }
/// let s: S = Settings::from_toml("mode = \"in-task\"").parse().unwrap();
/// assert_eq!(s.mode, WorkPlace::InTask);
/// assert_eq!(S::default().mode, WorkPlace::Separate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkPlace {
    /// A separate job, run by the host as a task of its own.
    #[default]
    Separate,
    /// An in-task step, run inside the task just before or after its body.
    InTask,
}

impl WorkPlace {
    /// What `stage_in`/`stage_out` return: the job when the work is separate.
    pub fn separate_job(self, job: impl FnOnce() -> crate::Job) -> Option<crate::Job> {
        (self == WorkPlace::Separate).then(job)
    }

    /// What `replace_task`/`replace_task_stage_out` return: the job when the work is
    /// an in-task step.
    pub fn in_task_step(self, job: impl FnOnce() -> crate::Job) -> Option<crate::Job> {
        (self == WorkPlace::InTask).then(job)
    }
}

/// The secret a `*_env` setting points at: the value of the environment variable
/// named `var` by the setting `setting` (`bearer_token_env`, `password_env`), or
/// `None` when the setting is not given. A variable that is not set (or is empty) is
/// a `Permission` error naming both, at once: a provider never goes on without the
/// credential the site asked for, and never prompts for it.
///
/// The host treats the value as a secret: it never appears in an error or a log line.
///
/// ```
/// use stagehost_plugin_api::env_secret;
/// assert_eq!(env_secret("token_env", None).unwrap(), None);
/// let e = env_secret("token_env", Some("STAGEHOST_DOC_UNSET_VARIABLE")).unwrap_err();
/// assert_eq!(e.message(), "the variable STAGEHOST_DOC_UNSET_VARIABLE that token_env names is not set");
/// ```
pub fn env_secret(setting: &str, var: Option<&str>) -> Result<Option<String>, StageError> {
    let Some(var) = var else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ => Err(StageError::new(
            crate::ErrorKind::Permission,
            format!("the variable {var} that {setting} names is not set"),
        )),
    }
}
