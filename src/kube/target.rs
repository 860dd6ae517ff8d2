//! Where the API server is and how we prove who we are, before any file is read.
//!
//! Pure: a [`Target`] comes from a kubeconfig text (`kubeconfig.rs`) or from the in-cluster
//! environment variables ([`in_cluster`]); `client.rs` reads the files it names. Nothing here
//! derives `Debug` over secret bytes: the hand-written impls print sizes and paths only.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Error;

/// Default service-account directory inside a pod.
pub(crate) const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// PEM bytes given inline (kubeconfig `*-data`, already base64-decoded) or a file to read.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Material {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Material::Inline(b) => write!(f, "Inline({} bytes)", b.len()),
            Material::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// A bearer token: fixed (kubeconfig `token`) or re-read from a file (projected
/// service-account tokens rotate; kubeconfig `tokenFile` behaves the same).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Static(String),
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Static(_) => write!(f, "Static(<redacted>)"),
            TokenSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// Everything needed to build a client, with file contents not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `https://host:port` plus any path prefix, without a trailing slash.
    pub server: String,
    /// The cluster CA bundle; we never fall back to a system store or skip verification.
    pub ca: Material,
    pub token: Option<TokenSource>,
    /// (certificate chain, private key).
    pub client_cert: Option<(Material, Material)>,
    /// Where this came from, for error messages: "kubeconfig /path" or "in-cluster config".
    pub origin: String,
}

/// Check an API server URL and normalise it (no trailing slash). The error is a phrase
/// to embed in a sentence.
pub(crate) fn check_server(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.contains('@') {
        // userinfo in the URL would be a credential: refuse without echoing the URL.
        return Err("server URL must not contain user:password@".to_string());
    }
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("http://") {
        return Err(format!(
            "server {raw} is plain http; joinery only talks to the API server over https"
        ));
    }
    if !lower.starts_with("https://") {
        return Err(format!("server {raw:?} is not an https:// URL"));
    }
    let uri: ureq::http::Uri = raw
        .parse()
        .map_err(|_| format!("server {raw:?} is not a valid URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("server {raw:?} has no host"))?;
    if authority.host().is_empty() {
        return Err(format!("server {raw:?} has no host"));
    }
    if uri.query().is_some() || raw.contains('#') {
        return Err(format!("server {raw:?} must not have a query or fragment"));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// The in-cluster target from `KUBERNETES_SERVICE_HOST` / `_PORT` and the service-account
/// directory. Pure: the caller passes the variables' values and reads the files.
pub(crate) fn in_cluster(
    host: Option<&str>,
    port: Option<&str>,
    sa_dir: &Path,
) -> Result<Target, Error> {
    let fix = "run joinery in a pod with a service account, or give it a kubeconfig \
               (on a k0s controller: /var/lib/k0s/pki/admin.conf)";
    let host = host.map(str::trim).unwrap_or("");
    let port = port.map(str::trim).unwrap_or("");
    if host.is_empty() {
        return Err(Error::Config(format!(
            "in-cluster config: KUBERNETES_SERVICE_HOST is not set; {fix}"
        )));
    }
    if port.is_empty() {
        return Err(Error::Config(format!(
            "in-cluster config: KUBERNETES_SERVICE_PORT is not set; {fix}"
        )));
    }
    let port_ok = port.parse::<u16>().map(|p| p != 0).unwrap_or(false);
    if !port_ok {
        return Err(Error::Config(format!(
            "in-cluster config: KUBERNETES_SERVICE_PORT={port:?} is not a port number (1-65535)"
        )));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(Error::Config(format!(
            "in-cluster config: KUBERNETES_SERVICE_HOST={host:?} is not a host name or IP address"
        )));
    }
    // An IPv6 literal needs brackets in a URL; the variable carries it bare.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let server = check_server(&format!("https://{host}:{port}"))
        .map_err(|m| Error::Config(format!("in-cluster config: {m}")))?;
    Ok(Target {
        server,
        ca: Material::File(sa_dir.join("ca.crt")),
        token: Some(TokenSource::File(sa_dir.join("token"))),
        client_cert: None,
        origin: "in-cluster config".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_of(host: Option<&str>, port: Option<&str>) -> Result<String, String> {
        in_cluster(host, port, Path::new("/sa"))
            .map(|t| t.server)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn in_cluster_builds_https_url_and_brackets_ipv6() {
        assert_eq!(
            server_of(Some("10.96.0.1"), Some("443")).unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            server_of(Some("fd00::1"), Some("6443")).unwrap(),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            server_of(Some("[fd00::1]"), Some("6443")).unwrap(),
            "https://[fd00::1]:6443"
        );
    }

    #[test]
    fn in_cluster_requires_both_variables() {
        let e = server_of(None, Some("443")).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST is not set"), "{e}");
        assert!(e.contains("admin.conf"), "{e}");
        let e = server_of(Some("10.96.0.1"), Some("")).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_PORT is not set"), "{e}");
        let e = server_of(Some("10.96.0.1"), Some("http")).unwrap_err();
        assert!(e.contains("not a port number"), "{e}");
        let e = server_of(Some("evil/path"), Some("443")).unwrap_err();
        assert!(e.contains("not a host name"), "{e}");
    }

    #[test]
    fn in_cluster_uses_service_account_files() {
        let t = in_cluster(Some("h"), Some("1"), Path::new("/sa")).unwrap();
        assert_eq!(t.ca, Material::File("/sa/ca.crt".into()));
        assert_eq!(t.token, Some(TokenSource::File("/sa/token".into())));
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            check_server("https://localhost:6443/").unwrap(),
            "https://localhost:6443"
        );
        assert_eq!(
            check_server("https://rancher/k8s/clusters/c-1").unwrap(),
            "https://rancher/k8s/clusters/c-1"
        );
        assert!(check_server("http://localhost:8080")
            .unwrap_err()
            .contains("plain http"));
        assert!(check_server("localhost:6443").is_err());
        assert!(check_server("https://").is_err());
        let e = check_server("https://admin:hunter2@h:6443").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let d = format!(
            "{:?} {:?}",
            TokenSource::Static("sekrit-token".into()),
            Material::Inline(b"-----BEGIN PRIVATE KEY-----".to_vec())
        );
        assert!(!d.contains("sekrit") && !d.contains("BEGIN"), "{d}");
    }
}
