//! The whole-object checksums a store sends with an object, and their verification:
//! S3's `x-amz-checksum-crc32`, `-crc32c`, `-crc64nvme`, `-sha1` and `-sha256`, Google
//! Cloud Storage's `x-goog-hash` (CRC32C, MD5) and Azure Blob's `Content-MD5`.
//!
//! S3 sends them only when asked (`x-amz-checksum-mode: ENABLED`, a header every
//! request of ours carries, so that it is signed) and only for a GET of the whole
//! object; object_store does not read them, so [`Recorder`], a layer between
//! object_store and its HTTP client, copies them into the response's extensions, where
//! [`object_store::GetResult::extensions`] hands them to us.
//!
//! A composite checksum (`…-N`, of a multipart upload's part checksums) cannot be
//! checked without the part layout and is reported as not checked.

use async_trait::async_trait;
use base64::Engine;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
};
use object_store::ClientOptions;
use sha1::Digest as _;

/// The header that asks S3 for the checksums.
pub const MODE_HEADER: &str = "x-amz-checksum-mode";

/// A checksum the store gave: the algorithm's name as S3 spells it, and the value as
/// sent (base64 of the big-endian digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub algorithm: &'static str,
    pub value: String,
}

/// What a response said about the object's checksums.
#[derive(Debug, Clone, Default)]
pub struct Checksums {
    pub given: Vec<Given>,
    /// The object is encrypted with SSE-KMS or a customer's key, so its ETag is not
    /// its MD5 even when it looks like one.
    pub etag_not_md5: bool,
}

const ALGORITHMS: [(&str, &str); 5] = [
    ("x-amz-checksum-crc32", "CRC32"),
    ("x-amz-checksum-crc32c", "CRC32C"),
    ("x-amz-checksum-crc64nvme", "CRC64NVME"),
    ("x-amz-checksum-sha1", "SHA1"),
    ("x-amz-checksum-sha256", "SHA256"),
];

/// An object_store HTTP client that records the checksum headers of each response,
/// over the plugin's own client ([`crate::client::reqwest_client`]: plugin-api's
/// redirect rule); `headers` go with every request.
#[derive(Debug, Default)]
pub struct Connector {
    pub headers: http::HeaderMap,
}

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = HttpClient::new(crate::client::reqwest_client(options, &self.headers)?);
        Ok(HttpClient::new(Recorder { inner }))
    }
}

#[derive(Debug)]
struct Recorder {
    inner: HttpClient,
}

#[async_trait]
impl HttpService for Recorder {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut response = self.inner.execute(req).await?;
        let headers = response.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut given: Vec<Given> = ALGORITHMS
            .iter()
            .filter_map(|(header, algorithm)| {
                Some(Given {
                    algorithm,
                    value: text(header)?.trim().to_owned(),
                })
            })
            .collect();
        // Google Cloud Storage: `x-goog-hash: crc32c=…,md5=…`.
        for item in text("x-goog-hash").unwrap_or("").split(',') {
            match item.trim().split_once('=') {
                Some(("crc32c", v)) => given.push(Given {
                    algorithm: "CRC32C",
                    value: v.to_owned(),
                }),
                Some(("md5", v)) => given.push(Given {
                    algorithm: "MD5",
                    value: v.to_owned(),
                }),
                _ => {}
            }
        }
        // Azure Blob: the blob's stored `Content-MD5`, on a read of the whole blob.
        if let (Some(md5), None) = (text("content-md5"), text("content-range")) {
            given.push(Given {
                algorithm: "MD5",
                value: md5.trim().to_owned(),
            });
        }
        let etag_not_md5 = text("x-amz-server-side-encryption").is_some_and(|v| v.contains("kms"))
            || text("x-amz-server-side-encryption-customer-algorithm").is_some();
        response.extensions_mut().insert(Checksums {
            given,
            etag_not_md5,
        });
        Ok(response)
    }
}

/// A running digest of one of the algorithms.
pub enum Running {
    Crc(crc_fast::Digest, usize),
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Running {
    /// A digest for `given`, if it is a whole-object checksum of a known algorithm.
    pub fn for_given(given: &Given) -> Option<Running> {
        if given.value.contains('-') {
            return None; // composite: of the parts' checksums
        }
        use crc_fast::CrcAlgorithm::*;
        Some(match given.algorithm {
            "CRC32" => Running::Crc(crc_fast::Digest::new(Crc32IsoHdlc), 4),
            "CRC32C" => Running::Crc(crc_fast::Digest::new(Crc32Iscsi), 4),
            "CRC64NVME" => Running::Crc(crc_fast::Digest::new(Crc64Nvme), 8),
            "MD5" => Running::Md5(md5::Md5::new()),
            "SHA1" => Running::Sha1(sha1::Sha1::new()),
            "SHA256" => Running::Sha256(sha2::Sha256::new()),
            _ => return None,
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Running::Crc(d, _) => d.update(data),
            Running::Md5(d) => d.update(data),
            Running::Sha1(d) => d.update(data),
            Running::Sha256(d) => d.update(data),
        }
    }

    /// The digest as S3 writes it: base64 of its big-endian bytes.
    pub fn finish(self) -> String {
        let bytes = match self {
            Running::Crc(d, width) => d.finalize().to_be_bytes()[8 - width..].to_vec(),
            Running::Md5(d) => d.finalize().to_vec(),
            Running::Sha1(d) => d.finalize().to_vec(),
            Running::Sha256(d) => d.finalize().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(algorithm: &'static str, data: &[u8]) -> String {
        let mut running = Running::for_given(&Given {
            algorithm,
            value: String::new(),
        })
        .unwrap();
        running.update(&data[..3]);
        running.update(&data[3..]);
        running.finish()
    }

    #[test]
    fn digests_are_written_as_s3_writes_them() {
        // The values moto (as S3) gives for b"hello world", uploaded by boto3.
        assert_eq!(of("CRC32", b"hello world"), "DUoRhQ==");
        assert_eq!(of("SHA1", b"hello world"), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(
            of("SHA256", b"hello world"),
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
        assert_eq!(of("MD5", b"hello world"), "XrY7u+Ae7tCTyyK7j1rNww==");
        // CRC32C and CRC64/NVME of "123456789": their standard check values.
        let be = |v: u64, w: usize| {
            base64::engine::general_purpose::STANDARD.encode(&v.to_be_bytes()[8 - w..])
        };
        assert_eq!(of("CRC32C", b"123456789"), be(0xe306_9283, 4));
        assert_eq!(of("CRC64NVME", b"123456789"), be(0xae8b_1486_0a79_9888, 8));
    }

    #[test]
    fn composite_checksums_are_not_taken_for_whole_object_ones() {
        let composite = Given {
            algorithm: "CRC32",
            value: "NOKgrg==-3".into(),
        };
        assert!(Running::for_given(&composite).is_none());
    }
}
