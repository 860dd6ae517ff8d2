//! Behaviour of the client against a small scripted HTTPS server on loopback: token
//! refresh, retries, paging, error mapping, client certificates, size caps.
//!
//! The server is rustls with an rcgen CA, one thread per connection, `Connection: close`
//! on every answer; a test scripts it with a closure from (request, index) to a reply.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Client;
use crate::kube::target::{self, Material, Target, TokenSource};
use crate::kube::{Error, NewSecret, Source, Timeouts};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn json(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn status_body(code: u16, reason: &str) -> Reply {
    json(
        code,
        &format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"m","reason":"{reason}","code":{code}}}"#
        ),
    )
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A CA plus certificates it signed, as PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let skey = KeyPair::generate().unwrap();
    let scert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&skey, &ca)
        .unwrap();
    let ckey = KeyPair::generate().unwrap();
    let mut cparams = CertificateParams::new(Vec::<String>::new()).unwrap();
    cparams
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes-admin");
    let ccert = cparams.signed_by(&ckey, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: scert.pem(),
        server_key: skey.serialize_pem(),
        client_cert: ccert.pem(),
        client_key: ckey.serialize_pem(),
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(pki: &Pki, require_client_cert: bool, handler: Box<Handler>) -> Server {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
                .unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        } else {
            builder.with_no_client_auth()
        };
        let config = Arc::new(builder.with_single_cert(chain, key).unwrap());

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::from(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (config, handler, seen, count) = (
                    config.clone(),
                    handler.clone(),
                    seen2.clone(),
                    count.clone(),
                );
                std::thread::spawn(move || serve(tcp, config, &*handler, &seen, &count));
            }
        });
        Server {
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
    count: &AtomicUsize,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(&buf[..head_end]).is_err() {
        return;
    }
    let mut hmap = BTreeMap::new();
    for h in req.headers.iter() {
        hmap.insert(
            h.name.to_ascii_lowercase(),
            String::from_utf8_lossy(h.value).into_owned(),
        );
    }
    let len: usize = hmap
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let s = Seen {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers: hmap,
        body,
    };
    seen.lock().unwrap().push(s.clone());
    let reply = handler(&s, count.fetch_add(1, Ordering::SeqCst));
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = tls.write_all(out.as_bytes());
    let _ = tls.write_all(&reply.body);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "joinery-kube-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    }
}

fn token_client(server: &Server, pki: &Pki, token: TokenSource) -> Client {
    Client::from_target(
        Target {
            server: server.url(),
            ca: Material::Inline(pki.ca_pem.clone().into_bytes()),
            token: Some(token),
            client_cert: None,
            origin: "test".into(),
        },
        quick(),
    )
    .unwrap()
}

fn node(name: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","uid":"u-{name}"}},"status":{{"conditions":[{{"type":"Ready","status":"True"}}],"addresses":[{{"type":"InternalIP","address":"10.0.0.1"}}]}}}}"#
    )
}

#[test]
fn client_is_shareable() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Client>();
}

#[test]
fn lists_nodes_across_pages_with_bearer_token() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, _| {
            let (items, cont) = if req.path.contains("continue=p2") {
                (vec![node("c")], None)
            } else if req.path.contains("continue=p1") {
                (vec![node("b")], Some("p2"))
            } else {
                (vec![node("a")], Some("p1"))
            };
            let meta = cont.map_or("{}".to_string(), |c| format!(r#"{{"continue":"{c}"}}"#));
            json(
                200,
                &format!(
                    r#"{{"kind":"NodeList","metadata":{meta},"items":[{}]}}"#,
                    items.join(",")
                ),
            )
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("tok-1".into()));
    let nodes = c.list_nodes().unwrap();
    let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(nodes[0].ready);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/api/v1/nodes?limit=500");
    assert_eq!(seen[2].path, "/api/v1/nodes?limit=500&continue=p2");
    assert!(seen
        .iter()
        .all(|s| s.headers.get("authorization").map(String::as_str) == Some("Bearer tok-1")));
}

/// A server that answers node n1 to `Bearer new-token` and 401 to anything else.
fn only_new_token_server(pki: &Pki) -> Server {
    Server::start(
        pki,
        false,
        Box::new(|req, _| {
            if req.headers.get("authorization").map(String::as_str) == Some("Bearer new-token") {
                json(200, &node("n1"))
            } else {
                status_body(401, "Unauthorized")
            }
        }),
    )
}

#[test]
fn rotated_token_file_is_reread_after_401() {
    let pki = pki();
    let dir = TempDir::new();
    let tok = dir.file("token", "old-token\n");
    let server = only_new_token_server(&pki);
    let c = token_client(&server, &pki, TokenSource::File(tok.clone()));

    // The file vanishes: the re-read after the 401 fails, the old token is kept, and the
    // request is not resent with the same token.
    std::fs::remove_file(&tok).unwrap();
    assert_eq!(c.get_node("n1"), Err(Error::Unauthorized));
    assert_eq!(server.seen().len(), 1);

    // The kubelet writes the rotated token: the next 401 re-reads it and resends once.
    std::fs::write(&tok, "new-token\n").unwrap();
    assert_eq!(c.get_node("n1").unwrap().name, "n1");
    let auth: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.headers["authorization"].clone())
        .collect();
    assert_eq!(
        auth,
        ["Bearer old-token", "Bearer old-token", "Bearer new-token"]
    );
}

/// Issue 12 item 8: a token written inline in a kubeconfig was never re-read, so a
/// kubeconfig rewritten with a new token (k0s regenerating its admin.conf) left joinery
/// on the dead one until a restart.
#[test]
fn inline_kubeconfig_token_is_reread_after_401() {
    let pki = pki();
    let dir = TempDir::new();
    let server = only_new_token_server(&pki);
    let ca = dir.file("ca.crt", &pki.ca_pem);
    let kubeconfig = |token: &str| {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  \
             cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  \
             context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n    token: \
             {token}\n",
            server.url(),
            ca.display()
        )
    };
    let path = dir.file("kubeconfig", &kubeconfig("old-token"));
    let c = Client::new(&Source::Kubeconfig(path.clone()), quick()).unwrap();
    assert_eq!(c.get_node("n1"), Err(Error::Unauthorized));
    std::fs::write(&path, kubeconfig("new-token")).unwrap();
    assert_eq!(c.get_node("n1").unwrap().name, "n1");
}

#[test]
fn stale_token_file_is_reread_before_sending() {
    let pki = pki();
    let dir = TempDir::new();
    let tok = dir.file("token", "first");
    let server = Server::start(&pki, false, Box::new(|_, _| json(200, &node("n1"))));
    let mut c = token_client(&server, &pki, TokenSource::File(tok.clone()));
    c.get_node("n1").unwrap();
    std::fs::write(&tok, "second").unwrap();
    // Within the minute the cached token is used...
    c.get_node("n1").unwrap();
    // ...and once it is stale, the file is read again before the request goes out.
    Arc::get_mut(&mut c.inner)
        .unwrap()
        .token
        .as_mut()
        .unwrap()
        .max_age = Duration::ZERO;
    c.get_node("n1").unwrap();
    let auth: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.headers["authorization"].clone())
        .collect();
    assert_eq!(auth, ["Bearer first", "Bearer first", "Bearer second"]);
}

#[test]
fn unauthorized_with_unchanged_token_is_not_resent() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|_, _| status_body(401, "Unauthorized")),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(c.get_node("x"), Err(Error::Unauthorized));
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn gets_are_retried_on_5xx_writes_are_not() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, i| {
            if req.method == "GET" && i >= 2 {
                json(200, &node("n1"))
            } else {
                status_body(503, "ServiceUnavailable")
            }
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(c.get_node("n1").unwrap().name, "n1");
    assert_eq!(server.seen().len(), 3);

    let new = NewSecret {
        name: "s".into(),
        ..Default::default()
    };
    match c.create_secret("kube-system", &new) {
        Err(Error::Unavailable(m)) => assert!(m.contains("503"), "{m}"),
        r => panic!("{r:?}"),
    }
    assert_eq!(server.seen().len(), 4, "a POST is sent exactly once");
}

#[test]
fn secret_calls_map_status_codes() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, _| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v1/namespaces/kotsadm/secrets/missing") => status_body(404, "NotFound"),
            ("GET", "/api/v1/namespaces/kotsadm/secrets/kotsadm-password") => json(
                200,
                r#"{"metadata":{"name":"kotsadm-password","namespace":"kotsadm","uid":"u1"},"data":{"passwordBcrypt":"JDJiJDEwJHh4"}}"#,
            ),
            ("POST", "/api/v1/namespaces/kube-system/secrets") => {
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                if v["metadata"]["name"] == "taken" {
                    status_body(409, "AlreadyExists")
                } else {
                    let mut v = v;
                    v["metadata"]["uid"] = "new-uid".into();
                    json(201, &v.to_string())
                }
            }
            ("DELETE", _) if req.body.is_empty() => status_body(404, "NotFound"),
            ("DELETE", _) => {
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                if v["preconditions"]["uid"] == "right" {
                    json(200, r#"{"kind":"Status","status":"Success"}"#)
                } else {
                    status_body(409, "Conflict")
                }
            }
            ("GET", p) if p.starts_with("/api/v1/namespaces/kube-system/secrets?") => {
                status_body(403, "Forbidden")
            }
            _ => status_body(500, "InternalError"),
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(c.get_secret("kotsadm", "missing"), Ok(None));
    let s = c
        .get_secret("kotsadm", "kotsadm-password")
        .unwrap()
        .unwrap();
    assert_eq!(s.data["passwordBcrypt"], b"$2b$10$xx");

    let mut new = NewSecret {
        name: "bootstrap-token-abcdef".into(),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        ..Default::default()
    };
    new.data.insert("token-id".into(), b"abcdef".to_vec());
    let created = c.create_secret("kube-system", &new).unwrap();
    assert_eq!(created.uid, "new-uid");
    assert_eq!(created.data["token-id"], b"abcdef");
    assert_eq!(
        server.seen().last().unwrap().headers["content-type"],
        "application/json"
    );
    new.name = "taken".into();
    assert_eq!(
        c.create_secret("kube-system", &new),
        Err(Error::AlreadyExists)
    );

    assert_eq!(c.delete_secret("kube-system", "s", Some("right")), Ok(()));
    assert_eq!(
        c.delete_secret("kube-system", "s", Some("wrong")),
        Err(Error::Conflict)
    );
    assert_eq!(
        c.delete_secret("kube-system", "s", None),
        Err(Error::NotFound)
    );
    assert_eq!(
        c.list_secrets("kube-system", "a=b"),
        Err(Error::Forbidden {
            message: "m".into()
        })
    );
}

#[test]
fn a_sweep_deletes_only_the_stale_secrets_each_in_the_incarnation_listed() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, _| match req.method.as_str() {
            "GET" => json(
                200,
                r#"{"kind":"SecretList","metadata":{"resourceVersion":"7"},"items":[
                    {"metadata":{"name":"old","namespace":"ns","uid":"u-old","annotations":{"x":"old"}}},
                    {"metadata":{"name":"fresh","namespace":"ns","uid":"u-fresh","annotations":{"x":"new"}}}]}"#,
            ),
            "DELETE" => json(200, r#"{"kind":"Status","status":"Success"}"#),
            _ => status_body(500, "InternalError"),
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    c.sweep_secrets("ns", "a=true", |s| {
        s.annotations.get("x").is_some_and(|v| v == "old")
    });
    let seen = server.seen();
    let deletes: Vec<_> = seen.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{seen:?}");
    assert_eq!(deletes[0].path, "/api/v1/namespaces/ns/secrets/old");
    let body: serde_json::Value = serde_json::from_slice(&deletes[0].body).unwrap();
    assert_eq!(body["preconditions"]["uid"], "u-old");
    assert!(
        seen[0].path.contains("labelSelector=a%3Dtrue"),
        "{}",
        seen[0].path
    );
}

#[test]
fn too_many_requests_carries_retry_after() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|_, _| {
            let mut r = status_body(429, "TooManyRequests");
            r.headers.push(("Retry-After", "3".into()));
            r
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(
        c.get_node("n"),
        Err(Error::TooManyRequests {
            retry_after: Some(3)
        })
    );
    assert_eq!(server.seen().len(), 1, "429 is not retried");
}

#[test]
fn expired_continue_token_restarts_list_once() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, i| {
            if req.path.contains("continue=") {
                if i == 1 {
                    status_body(410, "Expired")
                } else {
                    json(200, &format!(r#"{{"items":[{}]}}"#, node("b")))
                }
            } else {
                json(
                    200,
                    &format!(
                        r#"{{"metadata":{{"continue":"t{i}"}},"items":[{}]}}"#,
                        node("a")
                    ),
                )
            }
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    let names: Vec<String> = c
        .list_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["a", "b"], "items of the abandoned pass are dropped");
    assert_eq!(server.seen().len(), 4);
}

#[test]
fn ping_falls_back_to_version() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|req, _| match req.path.as_str() {
            "/version" => json(200, r#"{"gitVersion":"v1.31.1+k0s"}"#),
            _ => json(404, "404 page not found"),
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(c.ping(), Ok(()));
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/readyz", "/version"]);
}

#[test]
fn oversized_body_is_refused() {
    let pki = pki();
    let server = Server::start(
        &pki,
        false,
        Box::new(|_, _| {
            json(
                200,
                &format!(r#"{{"data":{{"k":"{}"}}}}"#, "x".repeat(70 << 10)),
            )
        }),
    );
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    // ping reads at most 64 KiB.
    match c.ping() {
        Err(Error::Protocol(m)) => assert!(m.contains("larger than"), "{m}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn kubeconfig_with_client_certificate_files() {
    let pki = pki();
    let server = Server::start(
        &pki,
        true,
        Box::new(|req, _| {
            assert!(!req.headers.contains_key("authorization"));
            json(200, &node("ctl-0"))
        }),
    );
    let dir = TempDir::new();
    dir.file("ca.crt", &pki.ca_pem);
    dir.file("admin.crt", &pki.client_cert);
    dir.file("admin.key", &pki.client_key);
    let kc = dir.file(
        "admin.conf",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: Default\n\
             clusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: ca.crt\n\
             contexts:\n- name: Default\n  context:\n    cluster: local\n    user: user\n\
             users:\n- name: user\n  user:\n    client-certificate: admin.crt\n    client-key: admin.key\n",
            server.url()
        ),
    );
    let c = Client::new(&Source::Kubeconfig(kc), quick()).unwrap();
    assert_eq!(c.server(), server.url());
    assert_eq!(c.get_node("ctl-0").unwrap().name, "ctl-0");
}

#[test]
fn mismatched_client_key_fails_at_start_up() {
    let pki = pki();
    let other = KeyPair::generate().unwrap().serialize_pem();
    let t = Target {
        server: "https://127.0.0.1:1".into(),
        ca: Material::Inline(pki.ca_pem.clone().into_bytes()),
        token: None,
        client_cert: Some((
            Material::Inline(pki.client_cert.clone().into_bytes()),
            Material::Inline(other.clone().into_bytes()),
        )),
        origin: "kubeconfig /x".into(),
    };
    match Client::from_target(t, quick()) {
        Err(Error::Config(m)) => {
            assert!(m.contains("cannot be used together"), "{m}");
            assert!(!m.contains("PRIVATE KEY"), "{m}");
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn bad_ca_and_missing_files_are_config_errors() {
    let t = |ca: Material| Target {
        server: "https://127.0.0.1:1".into(),
        ca,
        token: Some(TokenSource::Static("t".into())),
        client_cert: None,
        origin: "kubeconfig /x".into(),
    };
    let e = Client::from_target(t(Material::Inline(b"not pem".to_vec())), quick()).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    let e =
        Client::from_target(t(Material::File("/nonexistent/ca.crt".into())), quick()).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read certificate-authority /nonexistent/ca.crt"),
        "{e}"
    );
    let e = Client::new(
        &Source::Kubeconfig("/nonexistent/admin.conf".into()),
        quick(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[test]
fn in_cluster_service_account_files() {
    let pki = pki();
    let server = Server::start(&pki, false, Box::new(|_, _| json(200, "ok")));
    let sa = TempDir::new();
    sa.file("ca.crt", &pki.ca_pem);
    sa.file("token", "sa-token\n");
    let t = target::in_cluster(
        Some("127.0.0.1"),
        Some(&server.addr.port().to_string()),
        &sa.0,
    )
    .unwrap();
    let c = Client::from_target(t, quick()).unwrap();
    c.ping().unwrap();
    assert_eq!(server.seen()[0].headers["authorization"], "Bearer sa-token");

    // No token file: a start-up error naming the file.
    let empty = TempDir::new();
    empty.file("ca.crt", &pki.ca_pem);
    let t = target::in_cluster(Some("127.0.0.1"), Some("443"), &empty.0).unwrap();
    let e = Client::from_target(t, quick()).unwrap_err().to_string();
    assert!(
        e.contains("cannot read token file") && e.contains("token"),
        "{e}"
    );
}

#[test]
fn untrusted_server_is_unavailable_not_skipped() {
    let pki_a = pki();
    let pki_b = pki();
    let server = Server::start(&pki_a, false, Box::new(|_, _| json(200, &node("n"))));
    let c = token_client(&server, &pki_b, TokenSource::Static("t".into()));
    match c.get_node("n") {
        Err(Error::Unavailable(m)) => assert!(m.contains("tls"), "{m}"),
        r => panic!("{r:?}"),
    }
    assert!(
        server.seen().is_empty(),
        "no request crossed an unverified connection"
    );
}

#[test]
fn refused_connection_is_unavailable_within_the_budget() {
    let pki = pki();
    // Bind then drop: the port is (almost certainly) closed now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::from_target(
        Target {
            server: format!("https://127.0.0.1:{port}"),
            ca: Material::Inline(pki.ca_pem.into_bytes()),
            token: Some(TokenSource::Static("sekrit".into())),
            client_cert: None,
            origin: "test".into(),
        },
        Timeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_secs(2),
        },
    )
    .unwrap();
    let start = Instant::now();
    let e = c.list_nodes().unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    assert!(!e.to_string().contains("sekrit"));
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!format!("{c:?}").contains("sekrit"));
}

#[test]
fn caller_names_cannot_change_the_path() {
    let pki = pki();
    let server = Server::start(&pki, false, Box::new(|_, _| status_body(404, "NotFound")));
    let c = token_client(&server, &pki, TokenSource::Static("t".into()));
    assert_eq!(c.get_node("../secrets"), Err(Error::NotFound));
    assert_eq!(server.seen()[0].path, "/api/v1/nodes/..%2Fsecrets");
    assert!(matches!(c.get_node(""), Err(Error::Invalid(_))));
    assert_eq!(server.seen().len(), 1);
}
