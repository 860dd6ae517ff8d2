//! k0s join tokens, made the way `k0s token create` makes them.
//!
//! A token is a bootstrap-token Secret in `kube-system` (`bootstrap-token-<id>`, usage
//! keys for a worker or a controller, a one-hour `expiration`) plus a kubeconfig that
//! points at a controller with the user `<id>.<secret>`: port 6443 and user
//! `kubelet-bootstrap` for workers, port 9443 and `controller-bootstrap` for
//! controllers. The string handed out is base64 of the gzipped kubeconfig.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;

use base64::Engine;

use crate::kube;

/// Namespace of bootstrap-token Secrets.
pub const NAMESPACE: &str = "kube-system";

/// What the token lets the joining node become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Worker,
    Controller,
}

impl Kind {
    fn port(self) -> u16 {
        match self {
            Kind::Worker => 6443,
            Kind::Controller => 9443,
        }
    }

    fn user(self) -> &'static str {
        match self {
            Kind::Worker => "kubelet-bootstrap",
            Kind::Controller => "controller-bootstrap",
        }
    }
}

/// Random characters from `[a-z0-9]`, as bootstrap tokens require.
fn random_token_chars(n: usize) -> Result<String, crate::random::Unavailable> {
    crate::random::chars(b"abcdefghijklmnopqrstuvwxyz0123456789", n)
}

/// The bootstrap-token Secret for a token, valid until `expiration` (RFC 3339 UTC).
pub fn bootstrap_secret(
    id: &str,
    secret: &str,
    kind: Kind,
    expiration: &str,
    description: &str,
) -> kube::NewSecret {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::from([
        ("token-id".to_string(), id.as_bytes().to_vec()),
        ("token-secret".to_string(), secret.as_bytes().to_vec()),
        ("expiration".to_string(), expiration.as_bytes().to_vec()),
        ("description".to_string(), description.as_bytes().to_vec()),
    ]);
    match kind {
        Kind::Worker => {
            data.insert("usage-bootstrap-authentication".into(), b"true".to_vec());
        }
        Kind::Controller => {
            data.insert("usage-bootstrap-controller-join".into(), b"true".to_vec());
            data.insert("usage-controller-join".into(), b"true".to_vec());
        }
    }
    kube::NewSecret {
        name: format!("bootstrap-token-{id}"),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        data,
        type_: Some("bootstrap.kubernetes.io/token".into()),
    }
}

/// The kubeconfig a token carries.
pub fn kubeconfig(ca_pem: &str, controller: IpAddr, kind: Kind, token: &str) -> String {
    let host = match controller {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let user = kind.user();
    let port = kind.port();
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: https://{host}:{port}\n  name: k0s\n\
         contexts:\n\
         - context:\n    cluster: k0s\n    user: {user}\n  name: k0s\n\
         current-context: k0s\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n    token: {token}\n"
    )
}

/// gzip, then standard base64: the form `k0s` reads (it starts with `H4sI`).
pub fn encode(kubeconfig: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(kubeconfig.as_bytes());
    let bytes = gz.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Creates a bootstrap token in the cluster and returns the k0s token string.
pub fn create(
    client: &kube::Client,
    controller: IpAddr,
    kind: Kind,
    expiration: &str,
    description: &str,
) -> Result<Created, CreateError> {
    let ca = client
        .get_configmap(NAMESPACE, "kube-root-ca.crt")
        .map_err(CreateError::Kube)?
        .and_then(|mut m| m.remove("ca.crt"))
        .ok_or(CreateError::NoCa)?;
    let id = random_token_chars(6).map_err(CreateError::Random)?;
    let secret = random_token_chars(16).map_err(CreateError::Random)?;
    client
        .create_secret(
            NAMESPACE,
            &bootstrap_secret(&id, &secret, kind, expiration, description),
        )
        .map_err(CreateError::Kube)?;
    Ok(Created {
        token: encode(&kubeconfig(
            &ca,
            controller,
            kind,
            &format!("{id}.{secret}"),
        )),
        id,
    })
}

/// A bootstrap token just made.
pub struct Created {
    /// What `k0s join` reads.
    pub token: String,
    /// The token id: its Secret is `bootstrap-token-<id>`.
    pub id: String,
}

/// Deletes the bootstrap token `id` (revocation, or a download that failed before the
/// bundle started). A token already gone is fine.
pub fn delete(client: &kube::Client, id: &str) -> Result<(), kube::Error> {
    match client.delete_secret(NAMESPACE, &format!("bootstrap-token-{id}"), None) {
        Ok(()) | Err(kube::Error::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why no k0s token could be made.
#[derive(Debug)]
pub enum CreateError {
    Kube(kube::Error),
    /// ConfigMap kube-system/kube-root-ca.crt lacks `ca.crt`.
    NoCa,
    Random(crate::random::Unavailable),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn token_decodes_to_the_kubeconfig() {
        let kc = kubeconfig(
            "-----BEGIN CERTIFICATE-----\nX\n",
            "10.0.0.11".parse().unwrap(),
            Kind::Worker,
            "abcdef.0123456789abcdef",
        );
        let token = encode(&kc);
        assert!(token.starts_with("H4sI"), "{token}");
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&token)
            .unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, kc);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://10.0.0.11:6443")
        );
        assert_eq!(v["users"][0]["name"].as_str(), Some("kubelet-bootstrap"));
        assert_eq!(
            v["users"][0]["user"]["token"].as_str(),
            Some("abcdef.0123456789abcdef")
        );
        assert_eq!(v["current-context"].as_str(), Some("k0s"));
    }

    #[test]
    fn controller_tokens_use_9443_and_brackets_for_ipv6() {
        let kc = kubeconfig("ca", "fd00::11".parse().unwrap(), Kind::Controller, "t");
        assert!(kc.contains("server: https://[fd00::11]:9443\n"), "{kc}");
        assert!(kc.contains("user: controller-bootstrap\n"));
    }

    #[test]
    fn bootstrap_secret_usages() {
        let w = bootstrap_secret(
            "abcdef",
            "0123456789abcdef",
            Kind::Worker,
            "2026-01-15T13:00:00Z",
            "d",
        );
        assert_eq!(w.name, "bootstrap-token-abcdef");
        assert_eq!(w.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        assert_eq!(w.data["usage-bootstrap-authentication"], b"true");
        assert!(!w.data.contains_key("usage-bootstrap-controller-join"));
        let c = bootstrap_secret("abcdef", "0123456789abcdef", Kind::Controller, "x", "d");
        assert_eq!(c.data["usage-bootstrap-controller-join"], b"true");
        assert_eq!(c.data["usage-controller-join"], b"true");
        assert!(!c.data.contains_key("auth-extra-groups"));
    }

    #[test]
    fn random_chars_follow_the_grammar() {
        let s = random_token_chars(16).unwrap();
        assert_eq!(s.len(), 16);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
