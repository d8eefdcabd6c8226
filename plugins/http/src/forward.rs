//! Plain `http://` through an HTTP proxy as a forward proxy: the request goes to the
//! proxy in absolute form (`GET http://host:port/path HTTP/1.1`), as curl sends it,
//! instead of a `CONNECT` tunnel. Many proxies (tinyproxy and squid by default) allow
//! `CONNECT` only to port 443, so a tunnel to port 80 or 8080 is refused.
//!
//! ureq always tunnels. `ForwardConnector` sits first in ureq's connector chain: for an
//! `http://` target with an HTTP proxy it opens a TCP connection to the proxy and
//! wraps it in `AbsoluteForm`, which rewrites each request line on its way out (and
//! adds `Proxy-Authorization` when the proxy URL holds credentials). The connectors
//! after it see a transport already made and pass it along; `https://` still goes
//! through ureq's `CONNECT`.
//!
//! Invariant: only the first line (and one added header) of a request is changed;
//! bodies and responses pass through byte for byte.

use std::fmt;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport,
};
use ureq::ProxyProtocol;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ForwardConnector;

impl<In: Transport> Connector<In> for ForwardConnector {
    type Out = Either<In, AbsoluteForm>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let target = details.uri;
        let Some(proxy) = details.config.proxy() else {
            return Ok(None);
        };
        if target.scheme_str() != Some("http")
            || proxy.protocol() != ProxyProtocol::Http
            || proxy.is_no_proxy(target)
        {
            return Ok(None);
        }
        let Some(authority) = target.authority() else {
            return Ok(None);
        };
        let addrs = details
            .resolver
            .resolve(proxy.uri(), details.config, details.timeout)?;
        let to_proxy = ConnectionDetails {
            uri: proxy.uri(),
            addrs,
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: details.register_shutdown.clone(),
        };
        let Some(tcp) = TcpConnector::default().connect(&to_proxy, None::<()>)? else {
            return Ok(None);
        };
        let authorization = proxy.username().map(|user| {
            let credentials = format!("{user}:{}", proxy.password().unwrap_or(""));
            format!(
                "Proxy-Authorization: Basic {}\r\n",
                crate::base64(credentials.as_bytes())
            )
        });
        let size = details.config.input_buffer_size();
        Ok(Some(Either::B(AbsoluteForm {
            inner: Box::new(tcp),
            buffers: LazyBuffers::new(size, details.config.output_buffer_size()),
            origin: format!(
                "http://{}",
                authority.as_str().rsplit('@').next().unwrap_or("")
            ),
            authorization,
            request_starts: true,
        })))
    }
}

/// A transport to a forward proxy that puts each request line in absolute form.
pub(crate) struct AbsoluteForm {
    inner: Box<dyn Transport>,
    /// What ureq writes and reads; moved to and from `inner` with the rewrite.
    buffers: LazyBuffers,
    /// `http://host:port`, put before each request's path.
    origin: String,
    /// A `Proxy-Authorization` header line, secret.
    authorization: Option<String>,
    /// The next bytes sent begin a request: nothing was sent yet, or a response was
    /// read since (HTTP/1.1 without pipelining).
    request_starts: bool,
}

impl fmt::Debug for AbsoluteForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbsoluteForm")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `data` with its request line in absolute form (and `header` after it), or `None`
/// when `data` does not start with an origin-form request line.
fn absolute_form(data: &[u8], origin: &str, header: Option<&str>) -> Option<Vec<u8>> {
    let end = data.windows(2).position(|w| w == b"\r\n")?;
    let line = &data[..end];
    let space = line.iter().position(|&b| b == b' ')?;
    let method_ok = space > 0 && line[..space].iter().all(u8::is_ascii_uppercase);
    let version_ok = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    if !(method_ok && version_ok && line.get(space + 1) == Some(&b'/')) {
        return None;
    }
    let header = header.unwrap_or("");
    let mut out = Vec::with_capacity(data.len() + origin.len() + header.len());
    out.extend_from_slice(&data[..=space]);
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(&data[space + 1..end + 2]);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data[end + 2..]);
    Some(out)
}

impl Transport for AbsoluteForm {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let written = &self.buffers.output()[..amount];
        let rewritten = if std::mem::take(&mut self.request_starts) {
            absolute_form(written, &self.origin, self.authorization.as_deref())
        } else {
            None
        };
        let data = rewritten.as_deref().unwrap_or(written);
        let mut sent = 0;
        while sent < data.len() {
            let out = self.inner.buffers().output();
            let n = out.len().min(data.len() - sent);
            out[..n].copy_from_slice(&data[sent..sent + n]);
            self.inner.transmit_output(n, timeout)?;
            sent += n;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.request_starts = true;
        if self.inner.buffers().input().is_empty() && !self.inner.await_input(timeout)? {
            return Ok(false);
        }
        let available = self.inner.buffers().input();
        let space = self.buffers.input_append_buf();
        let n = space.len().min(available.len());
        space[..n].copy_from_slice(&available[..n]);
        self.buffers.input_appended(n);
        self.inner.buffers().input_consume(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_origin_form_request_line_is_rewritten() {
        let req = b"GET /a/b?c HTTP/1.1\r\nHost: h:8080\r\n\r\n";
        let out = absolute_form(
            req,
            "http://h:8080",
            Some("Proxy-Authorization: Basic eA==\r\n"),
        );
        assert_eq!(
            out.unwrap(),
            b"GET http://h:8080/a/b?c HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\nHost: h:8080\r\n\r\n"
        );
        assert_eq!(
            absolute_form(b"PUT /x HTTP/1.1\r\n\r\n", "http://h", None).unwrap(),
            b"PUT http://h/x HTTP/1.1\r\n\r\n"
        );
        for body in [
            &b"some body bytes"[..],
            b"GET /x\r\n",
            b"get /x HTTP/1.1\r\n",
            b"GET x HTTP/1.1\r\n",
        ] {
            assert_eq!(absolute_form(body, "http://h", None), None);
        }
    }
}
