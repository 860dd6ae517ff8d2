//! The operator commands' HTTP client: one HTTP/1.1 request per connection, over the
//! local Unix socket (plain HTTP, authenticated by the kernel's peer credentials) or
//! over TLS to `--api URL`, verified by `--pin` (the certificate's public key) or
//! `--cacert` (a CA bundle).
//!
//! Deliberately minimal: `Connection: close`, a body read to its `Content-Length` (or
//! chunks), a 16 MiB cap on answers and a deadline on every read and write. The server's
//! code in `src/http/` is not used here; only the pin's definition is shared with it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The largest answer read (a node list of thousands of nodes fits).
const MAX_BODY: usize = 16 << 20;

/// Where requests go.
pub enum Target {
    /// The local socket: plain HTTP, no credentials needed.
    Socket(PathBuf),
    /// `--api URL`: TLS to `host:port`, with `Authorization` once logged in.
    Api {
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        authorization: Option<String>,
    },
}

/// Why a request got no answer. Every variant is "unreachable" to the caller.
#[derive(Debug)]
pub struct Unreachable(pub String);

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub struct Client {
    pub target: Target,
    pub timeout: Duration,
}

impl Client {
    /// Where requests go, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Socket(p) => format!("the local socket {}", p.display()),
            Target::Api { host, port, .. } => format!("https://{}", authority(host, *port)),
        }
    }

    /// Sends one request and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Unreachable> {
        let fail = |what: String| Unreachable(format!("{}: {what}", self.describe()));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: joinery-cli\r\n\
             Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            match &self.target {
                Target::Socket(_) => "localhost".to_string(),
                Target::Api { host, port, .. } => authority(host, *port),
            },
            body.len()
        );
        if !body.is_empty() {
            head += "Content-Type: application/json\r\n";
        }
        if let Target::Api {
            authorization: Some(a),
            ..
        } = &self.target
        {
            head += &format!("Authorization: {a}\r\n");
        }
        head += "\r\n";
        let raw = match &self.target {
            Target::Socket(p) => {
                let s = UnixStream::connect(p).map_err(|e| {
                    fail(format!(
                        "{e} (is joinery running? `systemctl status joinery`; reading it needs \
                         the --socket-uid user, root by default)"
                    ))
                })?;
                s.set_read_timeout(Some(self.timeout)).ok();
                s.set_write_timeout(Some(self.timeout)).ok();
                exchange(s, &head, body.as_bytes())
            }
            Target::Api {
                host, port, tls, ..
            } => {
                let addr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?
                    .next()
                    .ok_or_else(|| fail(format!("{host} has no address")))?;
                let tcp = TcpStream::connect_timeout(&addr, self.timeout)
                    .map_err(|e| fail(e.to_string()))?;
                tcp.set_read_timeout(Some(self.timeout)).ok();
                tcp.set_write_timeout(Some(self.timeout)).ok();
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| fail(format!("{host:?} is not a host name")))?;
                let conn = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| fail(e.to_string()))?;
                exchange(rustls::StreamOwned::new(conn, tcp), &head, body.as_bytes())
            }
        };
        let raw = raw.map_err(|e| fail(e.to_string()))?;
        parse_answer(&raw).map_err(|e| fail(format!("bad answer: {e}")))
    }
}

/// `host:port` as a URL and a Host header write it: an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Writes the request and reads until the server closes (capped).
fn exchange(mut s: impl Read + Write, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    let read = s.take(MAX_BODY as u64 + 65_536).read_to_end(&mut raw);
    match read {
        Ok(_) => Ok(raw),
        // A TLS peer that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

/// Status and body of a complete HTTP/1.1 answer (Content-Length, chunked, or to EOF).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the connection closed mid-answer".into()),
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.code.ok_or("no status")?;
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    let body = if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if rest.len() < len {
            return Err("the connection closed mid-body".into());
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 || out.len() + size > MAX_BODY {
            return Err("truncated or oversized chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Accepts exactly the server whose certificate's public key has this pin
/// (`sha256//BASE64`, as `joinery pin` and the daemon's "listening" line print it).
/// The name and validity dates are not checked: the pin is the identity, as with
/// `curl --pinnedpubkey` and a self-signed certificate.
#[derive(Debug)]
struct PinVerifier {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = crate::http::tls::spki_pin(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if pin == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's pin is {pin}, not the --pin given"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How the server's certificate is checked.
pub enum Trust {
    Pin(String),
    /// PEM CA certificates.
    CaCert(Vec<u8>),
}

/// The TLS client configuration for `trust`; an error is the operator's to fix.
pub fn tls_config(trust: Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(crate::http::tls::provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
            .with_no_client_auth(),
        Trust::CaCert(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("--cacert: {e}"))?;
                roots.add(cert).map_err(|e| format!("--cacert: {e}"))?;
            }
            if roots.is_empty() {
                return Err("--cacert: no PEM certificate in the file".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(authority("::1", 9443), "[::1]:9443");
        assert_eq!(authority("10.0.0.11", 30081), "10.0.0.11:30081");
        assert_eq!(authority("cp-1", 1), "cp-1:1");
    }

    #[test]
    fn answers_are_read_by_length_chunks_or_close() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        let a = parse_answer(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"abcd"[..]));
        let a = parse_answer(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(a.body, b"all of it");
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
