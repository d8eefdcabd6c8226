//! `data`: a third-party stagehost provider for `data:` URLs (RFC 2397).
//!
//! `data:,hello%20world` and `data:text/plain;base64,aGVsbG8=` stage in as files at the
//! host's destination (`<working_dir>/<the URL's basename>`, as for every provider: the
//! host decides where staged files land). The decoding runs as a separate staging job;
//! it is written atomically.

use std::io::Write;

use stagehost_plugin_api::fs::AtomicFile;
use stagehost_plugin_api::{Context, ErrorKind, File, Job, Provider, Settings, StageError};

pub struct DataProvider;

impl Provider for DataProvider {
    fn new(settings: &Settings) -> Result<Self, StageError> {
        if settings.as_str().trim().is_empty() {
            Ok(DataProvider)
        } else {
            Err(StageError::other("the data provider takes no settings"))
        }
    }

    fn can_stage_in(&self, file: &File) -> bool {
        file.scheme() == "data"
    }

    fn stage_in(&self, ctx: &Context<'_>, file: &mut File) -> Result<Option<Job>, StageError> {
        let (_media_type, bytes) = decode(file.url())?;
        // The host decides where a staged file lands; a provider never picks a path.
        let dest = ctx.destination().to_path_buf();
        file.set_local_path(&dest);
        Ok(Some(Job::new(move |ctx| {
            ctx.check()?;
            let mut out = AtomicFile::create(&dest)?;
            out.write_all(&bytes)
                .map_err(|e| StageError::io(format_args!("cannot write {}", dest.display()), &e))?;
            ctx.progress(bytes.len() as u64, Some(bytes.len() as u64));
            out.commit()
        })))
    }
}

fn invalid(message: impl Into<String>) -> StageError {
    StageError::new(ErrorKind::InvalidUrl, message)
}

/// The media type and the bytes of a `data:` URL.
fn decode(url: &str) -> Result<(String, Vec<u8>), StageError> {
    let rest = url
        .get(5..)
        .filter(|_| url[..5].eq_ignore_ascii_case("data:"))
        .ok_or_else(|| invalid("not a data: URL"))?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| invalid("a data: URL needs a comma before its data"))?;
    let data = data.split('#').next().unwrap_or_default();
    let (media_type, is_base64) = match meta.strip_suffix(";base64") {
        Some(m) => (m, true),
        None => (meta, false),
    };
    let raw = percent_decode(data)?;
    let bytes = if is_base64 { base64_decode(&raw)? } else { raw };
    Ok((
        media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        bytes,
    ))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, StageError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| invalid("a % escape is cut short"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| invalid(format!("%{hex} is not a hex escape")))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn base64_decode(input: &[u8]) -> Result<Vec<u8>, StageError> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input
        .iter()
        .filter(|c| !c.is_ascii_whitespace() && **c != b'=')
    {
        let v = value(c).ok_or_else(|| invalid(format!("{:?} is not base64", c as char)))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The promise behind `capabilities: [schemes]`: this provider claims `data:` URLs
/// and nothing else, so the host never asks it about any other file (plugin-api 0.1.7).
impl stagehost_plugin_api::capability::Schemes for DataProvider {
    fn schemes(&self) -> Vec<String> {
        vec!["data".into()]
    }
}

stagehost_plugin_api::export_provider! {
    provider: DataProvider,
    name: "data",
    schemes: ["data"],
    description: "data: URLs (RFC 2397), decoded into the working directory",
    capabilities: [schemes],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_and_base64() {
        assert_eq!(
            decode("data:,hello%20world").unwrap(),
            ("".into(), b"hello world".to_vec())
        );
        assert_eq!(
            decode("data:text/plain;base64,aGVsbG8=").unwrap(),
            ("text/plain".into(), b"hello".to_vec())
        );
        assert!(decode("data:nocomma").is_err());
    }

    #[test]
    fn a_data_url_stages_in_as_a_separate_job_through_the_test_kit() {
        use stagehost_plugin_api::testing::TestHost;
        let host = TestHost::new();
        let provider = DataProvider::new(&Settings::from_toml("")).unwrap();
        let staged = host
            .stage_in(&provider, "data:text/plain;base64,aGVsbG8=")
            .unwrap();
        assert_eq!(staged.ran, ["separate job"]);
        let path = staged.file.filepath().unwrap();
        assert_eq!(path, host.destination(&File::parse("data:text/plain;base64,aGVsbG8=").unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(host.progress().last(), Some(&(5, Some(5))));
    }

    #[test]
    fn it_keeps_the_hosts_rules() {
        use stagehost_plugin_api::testing::{conformance, Conformance};
        let provider = DataProvider::new(&Settings::from_toml("")).unwrap();
        conformance(
            &provider,
            Conformance {
                good: "data:text/plain;base64,aGVsbG8=",
                missing: Some("data:nocomma"),
                secrets: &[],
            },
        )
        .unwrap();
    }

    #[test]
    fn a_malformed_data_url_is_an_invalid_url_and_writes_nothing() {
        use stagehost_plugin_api::testing::TestHost;
        let host = TestHost::new();
        let provider = DataProvider::new(&Settings::from_toml("")).unwrap();
        let err = host.stage_in(&provider, "data:nocomma").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert_eq!(std::fs::read_dir(host.working_dir()).unwrap().count(), 0);
    }
}
