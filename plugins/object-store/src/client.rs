//! The HTTP client under object_store: object_store's own client options, with
//! plugin-api's one redirect rule in place of reqwest's.
//!
//! reqwest follows redirects itself and, on a redirect to another origin, drops only
//! `Authorization`, cookies and proxy authorization: a store's other credentials (an S3
//! session token travels in `x-amz-security-token`) would go with the request. So the
//! client is built here, from the [`ClientOptions`] object_store hands its connector,
//! with a redirect policy that asks [`RedirectPolicy`]: a redirect is followed only to
//! the origin the credentials were set for, and only a 307 or 308 (which keep the
//! method and the body; the request's method is not known at this point, so an
//! upload's rule applies to every request). Anything else reaches object_store as the
//! error that names it.

use std::time::Duration;

use object_store::{ClientConfigKey, ClientOptions};
use stagehost_plugin_api::net::{HostPatterns, RedirectPolicy};

/// How many redirects one request may follow.
const MAX_REDIRECTS: u32 = 10;

/// Builds the reqwest client for `options`, as object_store would, with plugin-api's
/// redirect rule. `headers` go with every request (object_store's default headers,
/// which its options do not hand back).
pub fn reqwest_client(
    options: &ClientOptions,
    headers: &http::HeaderMap,
) -> object_store::Result<reqwest::Client> {
    let value = |key: ClientConfigKey| options.get_config_value(&key);
    let flag = |key: ClientConfigKey| value(key).is_some_and(|v| v == "true");
    let duration = |key: ClientConfigKey| -> object_store::Result<Option<Duration>> {
        value(key)
            .map(|v| humantime::parse_duration(&v).map_err(|e| generic(format!("{v}: {e}"))))
            .transpose()
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(redirect))
        .default_headers(headers.clone())
        // As object_store: a body is never decoded, so its length is the object's.
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .https_only(!flag(ClientConfigKey::AllowHttp))
        .user_agent(
            value(ClientConfigKey::UserAgent)
                .unwrap_or_else(|| format!("stagehost-object-store/{}", env!("CARGO_PKG_VERSION"))),
        );
    if let Some(proxy) = value(ClientConfigKey::ProxyUrl) {
        let mut proxy = reqwest::Proxy::all(&proxy).map_err(|e| generic(e.to_string()))?;
        if let Some(pem) = value(ClientConfigKey::ProxyCaCertificate) {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| generic(e.to_string()))?;
            builder = builder.tls_certs_merge(std::iter::once(cert));
        }
        if let Some(excludes) = value(ClientConfigKey::ProxyExcludes) {
            proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&excludes));
        }
        builder = builder.proxy(proxy);
    }
    if let Some(t) = duration(ClientConfigKey::Timeout)? {
        builder = builder.timeout(t);
    }
    if let Some(t) = duration(ClientConfigKey::ConnectTimeout)? {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = duration(ClientConfigKey::ReadTimeout)? {
        builder = builder.read_timeout(t);
    }
    if let Some(t) = duration(ClientConfigKey::PoolIdleTimeout)? {
        builder = builder.pool_idle_timeout(t);
    }
    if let Some(n) = value(ClientConfigKey::PoolMaxIdlePerHost).and_then(|v| v.parse().ok()) {
        builder = builder.pool_max_idle_per_host(n);
    }
    if flag(ClientConfigKey::Http1Only) {
        builder = builder.http1_only();
    }
    if flag(ClientConfigKey::Http2Only) {
        builder = builder.http2_prior_knowledge();
    }
    if flag(ClientConfigKey::AllowInvalidCertificates) {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| generic(e.to_string()))
}

/// reqwest's question, answered by plugin-api's rule.
fn redirect(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    let current = attempt.previous().last().unwrap_or(first).to_string();
    let next = attempt.url().to_string();
    let status = attempt.status().as_u16();
    // Shown by origin only: a path or query may hold a signature.
    let shown = origin_of(&current);
    // `previous` holds the first request and every hop already taken.
    if attempt.previous().len() > MAX_REDIRECTS as usize {
        return attempt.error(format!(
            "{shown}: too many redirects (more than {MAX_REDIRECTS}; a redirect loop?)"
        ));
    }
    let mut policy = RedirectPolicy::new(first.as_str(), &HostPatterns::new(&[]), MAX_REDIRECTS);
    match policy.follow(&current, "PUT", status, Some(&next), &shown) {
        Ok(r) if r.keep_credentials => attempt.follow(),
        Ok(_) => attempt.error(format!(
            "{shown} redirected to {}, another origin; not followed, so the store's credentials do not go there",
            origin_of(&next)
        )),
        Err(e) => attempt.error(e.to_string()),
    }
}

/// `scheme://host[:port]` of `url`.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let netloc = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    format!("{scheme}://{host}")
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "HTTP client",
        source: message.into(),
    }
}

/// Why the redirect rule refused a redirect, if that is what ended the request `e`
/// (the rule's own words, which name origins only).
pub fn redirect_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            if r.is_redirect() {
                return std::error::Error::source(r).map(|why| why.to_string());
            }
        }
        cause = c.source();
    }
    None
}
