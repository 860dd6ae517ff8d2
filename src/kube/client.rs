//! The I/O half of the Kubernetes client: reading credentials, the HTTPS agent, the
//! request loop (token refresh on 401, bounded retries of GETs) and the typed calls.
//!
//! Everything that decides (kubeconfig, status mapping, paging, wire conversion) lives in
//! pure sibling modules; this file only moves bytes. Invariants:
//! - the server certificate is always verified against the configured cluster CA;
//! - only GETs are retried, and every logical call (retries included) ends within
//!   `Timeouts::request`;
//! - every body is read with a size cap;
//! - tokens are sent only in the `Authorization` header and never logged.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ureq::http::{Method, Request};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::kubeconfig::{self, header_safe};
use super::paging::{list_path, next_page, segment, selectors, Next};
use super::status::error_from_response;
use super::target::{self, Material, Target, TokenSource};
use super::types::{NewSecret, Secret, Source, Timeouts};
use super::wire::{self, Kind};
use super::Error;

/// Cap on a list page body (a page of 500 nodes is a few MiB at most).
const LIST_BODY_LIMIT: u64 = 64 << 20;
/// Cap on a single object (Secrets are at most 1 MiB; nodes with many images are larger).
const OBJECT_BODY_LIMIT: u64 = 16 << 20;
/// Cap on an error body: a Status object is small.
const ERROR_BODY_LIMIT: u64 = 1 << 20;
/// Cap on kubeconfig, PEM and token files.
const FILE_LIMIT: u64 = 4 << 20;
/// Re-read a token file at least this often (projected tokens rotate).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(60);
/// Retries of a GET that found the API server unavailable, and the pause before each.
const GET_BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];
/// Do not start an attempt with less time than this left.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// A handle on the API server. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    /// The configuration of watch agents (see [`Client::stream_agent`]).
    watch_config: ureq::config::Config,
    server: String,
    token: Option<Token>,
    timeouts: Timeouts,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server)
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A bearer token, re-read from its file when stale or refused.
struct Token {
    path: Option<PathBuf>,
    /// For a token written inline in a kubeconfig: that kubeconfig, re-read (and its
    /// token taken again) like a token file, so a kubeconfig rewritten with a new token
    /// is picked up after a 401 instead of never.
    kubeconfig: Option<PathBuf>,
    /// [`TOKEN_MAX_AGE`]; a field so tests need not wait a minute.
    max_age: Duration,
    state: Mutex<TokenState>,
}

struct TokenState {
    value: String,
    read_at: Instant,
}

impl Token {
    /// The token to send now, re-reading the file if the copy is older than a minute.
    fn current(&self) -> String {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.rereadable() && st.read_at.elapsed() >= self.max_age {
            self.reread(&mut st);
        }
        st.value.clone()
    }

    /// After a 401: re-read now. Returns a token different from `used` if there is one.
    fn after_unauthorized(&self, used: &str) -> Option<String> {
        if !self.rereadable() {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.reread(&mut st);
        (st.value != used).then(|| st.value.clone())
    }

    fn rereadable(&self) -> bool {
        self.path.is_some() || self.kubeconfig.is_some()
    }

    fn reread(&self, st: &mut TokenState) {
        // Stamp the attempt either way, so a broken file is retried once a minute, not per call.
        st.read_at = Instant::now();
        let (path, read) = match (&self.path, &self.kubeconfig) {
            (Some(p), _) => (p, read_token(p)),
            (None, Some(k)) => (k, read_kubeconfig_token(k)),
            (None, None) => return,
        };
        match read {
            Ok(v) => st.value = v,
            Err(e) => crate::log::warn(
                "kubernetes token re-read failed; keeping the previous token",
                &[
                    ("path", path.display().to_string().into()),
                    ("error", e.into()),
                ],
            ),
        }
    }
}

/// The inline token of a kubeconfig file, read again. The error never quotes it.
fn read_kubeconfig_token(path: &Path) -> Result<String, String> {
    let bytes = read_capped(path, FILE_LIMIT).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "kubeconfig is not UTF-8".to_string())?;
    match kubeconfig::parse(&text, path)
        .map_err(|e| e.to_string())?
        .token
    {
        Some(TokenSource::Static(v)) => Ok(v),
        _ => Err("the kubeconfig no longer holds an inline token".into()),
    }
}

/// Read a token file: trimmed, non-empty, usable in a header. The error never quotes it.
fn read_token(path: &Path) -> Result<String, String> {
    let bytes = read_capped(path, 64 << 10).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "token file is not UTF-8".to_string())?;
    let t = text.trim();
    if t.is_empty() {
        return Err("token file is empty".into());
    }
    if !header_safe(t) {
        return Err("token file holds characters not allowed in an HTTP header".into());
    }
    Ok(t.to_string())
}

fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// A whole list: the kept items and the version a watch of it starts from (empty if
/// the server sent none).
pub struct Listed<U> {
    pub items: Vec<U>,
    pub resource_version: String,
}

/// What the paging loop learns from a page.
struct PageSeen {
    continue_token: Option<String>,
    resource_version: Option<String>,
    /// Items kept so far, this page's included.
    kept: usize,
}

/// The page callback of [`Client::pages`]: `(body, restarted)`.
type OnPage<'a> = dyn FnMut(&[u8], bool) -> Result<PageSeen, Error> + 'a;

/// One answer from the API server, body already read under a cap.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) retry_after: Option<String>,
    pub(super) body: Vec<u8>,
}

impl Client {
    /// Build a client at start-up. Reads the kubeconfig (or the service-account files),
    /// checks the CA and client certificate, and fails with [`Error::Config`] on anything
    /// unusable. Does not contact the API server (see [`Client::ping`]).
    pub fn new(source: &Source, timeouts: Timeouts) -> Result<Client, Error> {
        let target = match source {
            Source::Kubeconfig(path) => {
                let bytes = read_capped(path, FILE_LIMIT).map_err(|e| {
                    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                        " (k0s's admin kubeconfig is readable by root only)"
                    } else {
                        ""
                    };
                    Error::Config(format!(
                        "cannot read kubeconfig {}: {e}{hint}",
                        path.display()
                    ))
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::Config(format!("kubeconfig {} is not UTF-8 text", path.display()))
                })?;
                kubeconfig::parse(&text, path)?
            }
            Source::InCluster => {
                let dir = std::env::var_os("JOINERY_SA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(target::SA_DIR));
                target::in_cluster(
                    std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
                    std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
                    &dir,
                )?
            }
        };
        let mut client = Client::from_target(target, timeouts)?;
        if let (Source::Kubeconfig(path), Some(inner)) = (source, Arc::get_mut(&mut client.inner)) {
            if let Some(token) = inner.token.as_mut().filter(|t| t.path.is_none()) {
                token.kubeconfig = Some(path.clone());
            }
        }
        Ok(client)
    }

    /// Build from an already-parsed target: read its files and set up TLS.
    pub(crate) fn from_target(t: Target, timeouts: Timeouts) -> Result<Client, Error> {
        let origin = &t.origin;
        let cfg = |m: String| Error::Config(format!("{origin}: {m}"));

        let ca_pem = load(&t.ca, "certificate-authority").map_err(&cfg)?;
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| cfg("certificate-authority is not valid PEM".into()))?;
        if roots.is_empty() {
            return Err(cfg(
                "certificate-authority holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    .into(),
            ));
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        for c in &roots {
            store.add(c.clone()).map_err(|e| {
                cfg(format!(
                    "certificate-authority holds a certificate rustls cannot use: {e}"
                ))
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| cfg(format!("tls setup failed: {e}")))?
            .with_root_certificates(store);

        let client_cert = match &t.client_cert {
            None => None,
            Some((cert_m, key_m)) => {
                let cert_pem = load(cert_m, "client-certificate").map_err(&cfg)?;
                let key_pem = load(key_m, "client-key").map_err(&cfg)?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|_| cfg("client-certificate is not valid PEM".into()))?;
                if chain.is_empty() {
                    return Err(cfg("client-certificate holds no PEM certificate".into()));
                }
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    cfg("client-key holds no PEM private key (PKCS#1, PKCS#8 or SEC1)".into())
                })?;
                // ureq would panic on a key rustls rejects; find out now, with a sentence.
                builder
                    .clone()
                    .with_client_auth_cert(chain.clone(), key)
                    .map_err(|e| {
                        cfg(format!(
                            "client-certificate and client-key cannot be used together: {e}"
                        ))
                    })?;
                let chain: Vec<Certificate<'static>> = chain
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect();
                // The same first key, in ureq's type (both parsers take the first key block).
                let key = PrivateKey::from_pem(&key_pem)
                    .map_err(|_| cfg("client-key holds no PEM private key".into()))?;
                Some(ClientCert::new_with_certs(&chain, key))
            }
        };

        let token = match &t.token {
            None => None,
            Some(TokenSource::Static(v)) => Some(Token {
                path: None,
                kubeconfig: None,
                max_age: TOKEN_MAX_AGE,
                state: Mutex::new(TokenState {
                    value: v.clone(),
                    read_at: Instant::now(),
                }),
            }),
            Some(TokenSource::File(p)) => {
                let v = read_token(p)
                    .map_err(|e| cfg(format!("cannot read token file {}: {e}", p.display())))?;
                Some(Token {
                    path: Some(p.clone()),
                    kubeconfig: None,
                    max_age: TOKEN_MAX_AGE,
                    state: Mutex::new(TokenState {
                        value: v,
                        read_at: Instant::now(),
                    }),
                })
            }
        };

        let roots: Vec<Certificate<'static>> = roots
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .client_cert(client_cert)
            .unversioned_rustls_crypto_provider(provider)
            .build();
        let config = |tls: TlsConfig| {
            ureq::Agent::config_builder()
                .tls_config(tls)
                .https_only(true)
                .http_status_as_error(false)
                // The API server is local or in-cluster: never route it through an env proxy.
                .proxy(None)
                // The API server does not redirect; a 3xx is answered as a protocol error.
                .max_redirects(0)
                .timeout_connect(Some(timeouts.connect))
                .timeout_global(Some(timeouts.request))
                .user_agent(format!("joinery/{}", env!("CARGO_PKG_VERSION")))
                .accept("application/json")
        };
        // Every idle pooled connection keeps its buffers (ureq's default: 128 KiB each
        // way), and the reflectors, the auth loader and handlers call at once: keep the
        // buffers modest and at most two idle connections.
        let agent = config(tls.clone())
            .input_buffer_size(16 << 10)
            .output_buffer_size(8 << 10)
            .max_response_header_size(16 << 10)
            .max_idle_connections(2)
            .max_idle_connections_per_host(2)
            .build()
            .new_agent();
        // Watches send one short request and read lines through their own buffer: small
        // buffers (ureq's default is 128 KiB each way per connection).
        let watch_config = config(tls)
            .input_buffer_size(8 << 10)
            .output_buffer_size(4 << 10)
            .max_response_header_size(8 << 10)
            .build();

        Ok(Client {
            inner: Arc::new(Inner {
                agent,
                watch_config,
                server: t.server,
                token,
                timeouts,
            }),
        })
    }

    /// The API server's base URL, e.g. `https://127.0.0.1:6443`, for logs.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// One Secret, or `None` if it (or its namespace) does not exist.
    pub fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            segment(ns, "namespace")?,
            segment(name, "secret")?
        );
        self.get_if_exists(&path)
    }

    /// Create a Secret; [`Error::AlreadyExists`] if the name is taken. Never retried.
    pub fn create_secret(&self, ns: &str, new: &NewSecret) -> Result<Secret, Error> {
        segment(&new.name, "secret")?;
        let path = format!("/api/v1/namespaces/{}/secrets", segment(ns, "namespace")?);
        let body = wire::new_secret_body(new);
        wire::parse_one(&self.fetch(
            Method::POST,
            &path,
            Some(("application/json", &body)),
            OBJECT_BODY_LIMIT,
        )?)
    }

    /// Delete a Secret. With `uid_precondition`, only that incarnation is deleted
    /// ([`Error::Conflict`] if the name now belongs to another); [`Error::NotFound`] if absent.
    pub fn delete_secret(
        &self,
        ns: &str,
        name: &str,
        uid_precondition: Option<&str>,
    ) -> Result<(), Error> {
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            segment(ns, "namespace")?,
            segment(name, "secret")?
        );
        let body = uid_precondition.map(wire::delete_options_body);
        let body = body.as_deref().map(|b| ("application/json", b));
        self.fetch(Method::DELETE, &path, body, OBJECT_BODY_LIMIT)?;
        Ok(())
    }

    /// Housekeeping: delete each Secret in `ns` matching `label_selector` that `stale`
    /// picks, each only in the incarnation listed. Best effort: a failed list or delete
    /// waits for the caller's next sweep.
    pub fn sweep_secrets(&self, ns: &str, label_selector: &str, stale: impl Fn(&Secret) -> bool) {
        let Ok(all) = self.list_secrets(ns, label_selector) else {
            return;
        };
        for s in all.iter().filter(|s| stale(s)) {
            let _ = self.delete_secret(ns, &s.name, Some(&s.uid));
        }
    }

    /// Secrets in `ns` matching `label_selector` (empty: all), fetched 500 per page.
    pub fn list_secrets(&self, ns: &str, label_selector: &str) -> Result<Vec<Secret>, Error> {
        let base = format!("/api/v1/namespaces/{}/secrets", segment(ns, "namespace")?);
        self.list(&base, &selectors(label_selector, ""))
    }

    /// A ConfigMap's `data`, or `None` if it does not exist.
    pub fn get_configmap(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/configmaps/{}",
            segment(ns, "namespace")?,
            segment(name, "configmap")?
        );
        match self.fetch(Method::GET, &path, None, OBJECT_BODY_LIMIT) {
            Ok(body) => wire::parse_configmap_data(&body).map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The uid of a namespace; `kube-system`'s serves as the cluster's identity.
    pub fn namespace_uid(&self, name: &str) -> Result<String, Error> {
        let path = format!("/api/v1/namespaces/{}", segment(name, "namespace")?);
        wire::parse_object_uid(&self.fetch(Method::GET, &path, None, OBJECT_BODY_LIMIT)?)
    }

    /// Readiness: `GET /readyz` (open to any caller by default RBAC), falling back to
    /// `GET /version` on servers without it.
    pub fn ping(&self) -> Result<(), Error> {
        match self.fetch(Method::GET, "/readyz", None, 64 << 10) {
            Err(Error::NotFound) => self
                .fetch(Method::GET, "/version", None, 64 << 10)
                .map(drop),
            r => r.map(drop),
        }
    }

    /// One object of kind `K` at `path`.
    pub(super) fn get<K: Kind>(&self, path: &str) -> Result<K, Error> {
        wire::parse_one(&self.fetch(Method::GET, path, None, OBJECT_BODY_LIMIT)?)
    }

    /// One object of kind `K` at `path`, or `None` if it (or its namespace) does not exist.
    pub(super) fn get_if_exists<K: Kind>(&self, path: &str) -> Result<Option<K>, Error> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of kind `K` under `base` matching `query` (from
    /// [`super::paging::selectors`]), fetched 500 per page.
    pub(super) fn list<K: Kind>(&self, base: &str, query: &str) -> Result<Vec<K>, Error> {
        Ok(self.list_map(base, query, |item: K| item)?.items)
    }

    /// [`list`](Self::list), keeping `keep(item)` of each item as its page is read, so
    /// only what `keep` returns outlives the page. An expired continue token (410)
    /// restarts the list once from the beginning, as client-go's pager does; what was
    /// kept so far is dropped and `keep` sees those items again.
    pub(super) fn list_map<K: Kind, U>(
        &self,
        base: &str,
        query: &str,
        mut keep: impl FnMut(K) -> U,
    ) -> Result<Listed<U>, Error> {
        let mut items: Vec<U> = Vec::new();
        let resource_version = self.pages(base, query, &mut |body, restarted| {
            if restarted {
                items.clear();
            }
            let page = wire::parse_page::<K>(body)?;
            items.extend(page.items.into_iter().map(&mut keep));
            Ok(PageSeen {
                continue_token: page.continue_token,
                resource_version: page.resource_version,
                kept: items.len(),
            })
        })?;
        Ok(Listed {
            items,
            resource_version,
        })
    }

    /// The paging loop behind [`list_map`](Self::list_map), written once (not once per
    /// kind: the static binary has a size budget). `on_page(body, restarted)` takes a
    /// page (told when the list started again) and returns its continue token, its
    /// resourceVersion and the items kept so far. Returns the list's resourceVersion.
    fn pages(&self, base: &str, query: &str, on_page: &mut OnPage<'_>) -> Result<String, Error> {
        let mut restarted = false;
        'restart: loop {
            let mut token: Option<String> = None;
            let mut first_version = None;
            let mut pages = 0;
            let mut fresh = restarted;
            loop {
                let path = list_path(base, query, token.as_deref());
                let body = match self.fetch(Method::GET, &path, None, LIST_BODY_LIMIT) {
                    Err(Error::Gone) if token.is_some() && !restarted => {
                        restarted = true;
                        continue 'restart;
                    }
                    r => r?,
                };
                let seen = on_page(&body, fresh)?;
                fresh = false;
                drop(body);
                pages += 1;
                // Every page of one list carries the first page's snapshot version.
                if first_version.is_none() {
                    first_version = seen.resource_version;
                }
                match next_page(
                    seen.continue_token.as_deref(),
                    token.as_deref(),
                    pages,
                    seen.kept,
                )? {
                    Next::Done => return Ok(first_version.unwrap_or_default()),
                    Next::Fetch(t) => token = Some(t),
                }
            }
        }
    }

    /// One logical request: 2xx body or the mapped error.
    pub(super) fn fetch(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &[u8])>,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let reply = self.call(&method, path, body, limit)?;
        if (200..300).contains(&reply.status) {
            Ok(reply.body)
        } else {
            Err(error_from_response(
                reply.status,
                &reply.body,
                reply.retry_after.as_deref(),
            ))
        }
    }

    /// The request loop: refresh the token once on 401, retry GETs on unavailability,
    /// all within one `Timeouts::request` budget. Callers that must read a non-2xx body
    /// (an eviction's 429 causes) use this instead of `fetch`.
    pub(super) fn call(
        &self,
        method: &Method,
        path: &str,
        body: Option<(&str, &[u8])>,
        limit: u64,
    ) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.inner.timeouts.request;
        let retry_unavailable = *method == Method::GET;
        let mut token = self.inner.token.as_ref().map(Token::current);
        let mut refreshed = false;
        let mut retries = 0;
        loop {
            let budget = deadline.saturating_duration_since(Instant::now());
            let outcome = self.attempt(method, path, body, token.as_deref(), budget, limit);
            let unavailable = match &outcome {
                Ok(r) if r.status == 401 && !refreshed => {
                    refreshed = true;
                    let fresh = match (&self.inner.token, &token) {
                        (Some(t), Some(used)) => t.after_unauthorized(used),
                        _ => None,
                    };
                    if fresh.is_some() {
                        // A 401 means the request was not processed: safe to resend, even a write.
                        token = fresh;
                        continue;
                    }
                    false
                }
                Ok(r) => r.status >= 500,
                Err(Error::Unavailable(_)) => true,
                Err(_) => false,
            };
            if !(unavailable && retry_unavailable) || retries >= GET_BACKOFF.len() {
                return outcome;
            }
            let pause = GET_BACKOFF[retries];
            if deadline.saturating_duration_since(Instant::now()) < pause + MIN_ATTEMPT {
                return outcome;
            }
            retries += 1;
            std::thread::sleep(pause);
        }
    }

    /// A fresh agent with this client's TLS and timeouts but a connection pool (and
    /// small buffers) of its own, for watches: shutting it down cuts only their streams.
    pub(super) fn stream_agent(&self) -> ureq::Agent {
        ureq::Agent::new_with_config(self.inner.watch_config.clone())
    }

    /// A streamed GET on `agent` lasting at most `budget`: the 2xx body, unread, or
    /// the mapped error. Never retried: the watcher decides when to try again.
    pub(super) fn open_stream(
        &self,
        agent: &ureq::Agent,
        path: &str,
        budget: Duration,
    ) -> Result<ureq::Body, Error> {
        let token = self.inner.token.as_ref().map(Token::current);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{}", self.inner.server, path));
        if let Some(t) = &token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(())
            .map_err(|_| Error::Invalid("request could not be built".into()))?;
        let req = agent
            .configure_request(req)
            .timeout_global(Some(budget))
            .build();
        let mut resp = agent.run(req).map_err(transport_error)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp.into_body());
        }
        if status == 401 {
            // Re-read the token file now, so the next attempt sends the fresh one.
            if let (Some(t), Some(used)) = (&self.inner.token, &token) {
                t.after_unauthorized(used);
            }
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_vec()
            .unwrap_or_default();
        Err(error_from_response(status, &body, retry_after.as_deref()))
    }

    /// One HTTP exchange with at most `budget` of time.
    fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<(&str, &[u8])>,
        token: Option<&str>,
        budget: Duration,
        limit: u64,
    ) -> Result<Reply, Error> {
        if budget < Duration::from_millis(1) {
            return Err(Error::Unavailable("request timed out".into()));
        }
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.inner.server, path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let agent = &self.inner.agent;
        let bad_request = |_| Error::Invalid("request could not be built".into());
        let result = match body {
            Some((content_type, bytes)) => {
                let req = req
                    .header("Content-Type", content_type)
                    .body(bytes)
                    .map_err(bad_request)?;
                let req = agent
                    .configure_request(req)
                    .timeout_global(Some(budget))
                    .build();
                agent.run(req)
            }
            None => {
                let req = req.body(()).map_err(bad_request)?;
                let req = agent
                    .configure_request(req)
                    .timeout_global(Some(budget))
                    .build();
                agent.run(req)
            }
        };
        let mut resp = result.map_err(transport_error)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ok = (200..300).contains(&status);
        let cap = if ok { limit } else { ERROR_BODY_LIMIT };
        let body = match resp.body_mut().with_config().limit(cap).read_to_vec() {
            Ok(b) => b,
            Err(ureq::Error::BodyExceedsLimit(_)) if ok => {
                return Err(Error::Protocol(format!(
                    "response body larger than {cap} bytes"
                )))
            }
            // An oversized error body still has a usable status code.
            Err(ureq::Error::BodyExceedsLimit(_)) => Vec::new(),
            Err(e) => return Err(transport_error(e)),
        };
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
}

/// A failed exchange. Connection trouble of every kind means "unavailable"; what remains
/// means the answer made no sense.
pub(super) fn transport_error(e: ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(t) => Error::Unavailable(format!("timed out ({t})")),
        // rustls reports handshake failures (an untrusted server certificate) as io errors.
        ureq::Error::Io(e)
            if e.kind() != std::io::ErrorKind::UnexpectedEof
                && e.get_ref()
                    .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) =>
        {
            Error::Unavailable(format!("tls: {e}"))
        }
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Unavailable("connection closed before the response was complete".into())
        }
        ureq::Error::Io(e) => Error::Unavailable(e.to_string()),
        ureq::Error::HostNotFound => Error::Unavailable("host not found".into()),
        ureq::Error::ConnectionFailed => Error::Unavailable("connection failed".into()),
        ureq::Error::Tls(m) => Error::Unavailable(format!("tls: {m}")),
        ureq::Error::Rustls(e) => Error::Unavailable(format!("tls: {e}")),
        ureq::Error::Protocol(e) => Error::Unavailable(format!("http: {e}")),
        ureq::Error::BodyStalled => Error::Unavailable("response body stalled".into()),
        ureq::Error::BodyExceedsLimit(n) => {
            Error::Protocol(format!("response body larger than {n} bytes"))
        }
        ureq::Error::LargeResponseHeader(..) => Error::Protocol("response header too large".into()),
        other => Error::Protocol(other.to_string()),
    }
}

/// Read inline or file PEM. The error names the field and path, never the content.
fn load(m: &Material, what: &str) -> Result<Vec<u8>, String> {
    match m {
        Material::Inline(b) => Ok(b.clone()),
        Material::File(p) => read_capped(p, FILE_LIMIT)
            .map_err(|e| format!("cannot read {what} {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests;
