//! `cluster-seed.json`: what a joining node needs to know about the cluster, signed by
//! the cluster's token key so the node can tell it came from a controller.
//!
//! The file is a JWS in the flattened JSON serialization of RFC 7515 section 7.2.2
//! (`{"protected","payload","signature"}`, HS256), so it stays a JSON file while its
//! payload is covered by the same HMAC as every token joinery issues.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

use super::inputs::Roles;
use crate::roles::ROLE_LABEL;

/// A controller the joining node will talk to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub name: String,
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
}

/// A TCP connection the joining node must be able to open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    pub to: String,
    pub port: u16,
    pub purpose: &'static str,
}

/// The seed's payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    pub versions: BTreeMap<String, String>,
    pub controllers: Vec<Endpoint>,
    pub roles: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
    pub connections: Vec<Connection>,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The labels a node joined with `requested` roles carries, in Embedded Cluster's
/// convention: `role=total-N`, `role-0..N-1` with the controller role first, then each
/// role's own labels in that order, later roles winning on a shared key.
pub fn node_labels(roles: &Roles, requested: &[String]) -> BTreeMap<String, String> {
    let ordered = ordered_roles(roles, requested);
    let mut labels = BTreeMap::new();
    labels.insert(ROLE_LABEL.to_string(), format!("total-{}", ordered.len()));
    for (i, r) in ordered.iter().enumerate() {
        labels.insert(format!("{ROLE_LABEL}-{i}"), r.to_string());
    }
    for r in &ordered {
        if let Some(def) = roles.get(r) {
            labels.extend(def.labels.clone());
        }
    }
    labels
}

/// The requested roles with the controller role moved first.
pub fn ordered_roles<'a>(roles: &Roles, requested: &'a [String]) -> Vec<&'a str> {
    let ctl = roles.controller.name.as_str();
    let mut out: Vec<&str> = requested
        .iter()
        .map(String::as_str)
        .filter(|r| *r == ctl)
        .collect();
    out.extend(requested.iter().map(String::as_str).filter(|r| *r != ctl));
    out
}

/// The connections a node needs: every node reaches controllers on 6443 and 9443;
/// a controller also reaches other controllers on 2380 and 10250, and workers on 10250.
pub fn connections(
    controllers: &[Endpoint],
    workers: &[Endpoint],
    is_controller: bool,
) -> Vec<Connection> {
    let mut out = Vec::new();
    for c in controllers {
        out.push(Connection {
            to: c.internal_ip.clone(),
            port: 6443,
            purpose: "kubernetes api",
        });
        out.push(Connection {
            to: c.internal_ip.clone(),
            port: 9443,
            purpose: "k0s join api",
        });
        if is_controller {
            out.push(Connection {
                to: c.internal_ip.clone(),
                port: 2380,
                purpose: "etcd peers",
            });
            out.push(Connection {
                to: c.internal_ip.clone(),
                port: 10250,
                purpose: "kubelet",
            });
        }
    }
    if is_controller {
        for w in workers {
            out.push(Connection {
                to: w.internal_ip.clone(),
                port: 10250,
                purpose: "kubelet",
            });
        }
    }
    out
}

/// Signs cluster seeds with the serving TLS key, so a joining host checks a seed with
/// what it already trusts: the pin in its join command. The certificate travels in the
/// signed header (`x5c`), its public key hashes to the pin.
#[derive(Clone, Debug)]
pub struct SeedSigner {
    key: std::sync::Arc<dyn rustls::sign::SigningKey>,
    cert_der: Vec<u8>,
    scheme: rustls::SignatureScheme,
    alg: &'static str,
}

impl SeedSigner {
    /// The signer for a TLS key: ES256 (P-256, what joinery generates), ES384 or RS256.
    pub fn new(
        key: std::sync::Arc<dyn rustls::sign::SigningKey>,
        cert_der: &[u8],
    ) -> Result<SeedSigner, String> {
        use rustls::SignatureScheme as S;
        for (scheme, alg) in [
            (S::ECDSA_NISTP256_SHA256, "ES256"),
            (S::ECDSA_NISTP384_SHA384, "ES384"),
            (S::RSA_PKCS1_SHA256, "RS256"),
        ] {
            if key.choose_scheme(&[scheme]).is_some() {
                return Ok(SeedSigner {
                    key,
                    cert_der: cert_der.to_vec(),
                    scheme,
                    alg,
                });
            }
        }
        Err(
            "the TLS key cannot sign the cluster seed (it must be ECDSA P-256, P-384 or \
             RSA); use such a key for --tls-key"
                .into(),
        )
    }

    /// The seed as a flattened JWS JSON document (pretty enough to read): `protected`
    /// (`{"alg","x5c"}`), `payload`, `signature` (JWS form), and in the unprotected
    /// `header` the same signature as `openssl dgst -verify` reads it
    /// (`opensslSignature`, standard base64; DER for ECDSA).
    pub fn sign(&self, seed: &Seed) -> Result<Vec<u8>, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let std64 = base64::engine::general_purpose::STANDARD;
        let header = serde_json::json!({
            "alg": self.alg,
            "x5c": [std64.encode(&self.cert_der)],
        });
        let protected = b64.encode(header.to_string());
        let payload = b64.encode(serde_json::to_vec(seed).unwrap_or_default());
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or("the TLS key no longer offers its signature scheme")?;
        let native = signer
            .sign(format!("{protected}.{payload}").as_bytes())
            .map_err(|e| format!("signing the cluster seed failed: {e}"))?;
        let jws = match self.alg {
            "ES256" => ecdsa_der_to_raw(&native, 32)?,
            "ES384" => ecdsa_der_to_raw(&native, 48)?,
            _ => native.clone(),
        };
        let doc = serde_json::json!({
            "protected": protected,
            "payload": payload,
            "signature": b64.encode(jws),
            "header": { "opensslSignature": std64.encode(&native) },
        });
        let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        out.push(b'\n');
        Ok(out)
    }
}

/// An ECDSA signature from ASN.1 DER (`SEQUENCE { INTEGER r, INTEGER s }`, as TLS
/// carries it) to the JWS form: r and s as fixed-width big-endian numbers.
fn ecdsa_der_to_raw(der: &[u8], width: usize) -> Result<Vec<u8>, String> {
    let bad = || "the TLS key made a malformed ECDSA signature".to_string();
    let body = match der {
        [0x30, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        [0x30, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(2 * width);
    let mut rest = body;
    for _ in 0..2 {
        let [0x02, len, tail @ ..] = rest else {
            return Err(bad());
        };
        let len = usize::from(*len);
        let int = tail.get(..len).ok_or_else(bad)?;
        let int = match int {
            [0, more @ ..] => more,
            _ => int,
        };
        if int.len() > width {
            return Err(bad());
        }
        out.extend(std::iter::repeat_n(0u8, width - int.len()));
        out.extend_from_slice(int);
        rest = &tail[len..];
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::inputs::parse_roles;

    fn roles() -> Roles {
        parse_roles(
            "apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    controller:\n      name: ctl\n      labels: {tier: control, shared: ctl}\n    custom:\n    - name: app\n      labels: {app: \"true\", shared: app}\n    - name: gpu\n      labels: {shared: gpu}\n",
        )
        .unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn labels_put_the_controller_first_and_later_roles_win() {
        let l = node_labels(&roles(), &s(&["gpu", "ctl", "app"]));
        assert_eq!(l["kots.io/embedded-cluster-role"], "total-3");
        assert_eq!(l["kots.io/embedded-cluster-role-0"], "ctl");
        assert_eq!(l["kots.io/embedded-cluster-role-1"], "gpu");
        assert_eq!(l["kots.io/embedded-cluster-role-2"], "app");
        assert_eq!(l["tier"], "control");
        assert_eq!(l["shared"], "app", "the last role in order wins");
        // The labels read back as the same roles.
        assert_eq!(crate::roles::roles_from_labels(&l), ["ctl", "gpu", "app"]);
    }

    #[test]
    fn connection_matrix() {
        let c = vec![Endpoint {
            name: "c0".into(),
            internal_ip: "10.0.0.11".into(),
        }];
        let w = vec![Endpoint {
            name: "w1".into(),
            internal_ip: "10.0.0.12".into(),
        }];
        let ports =
            |v: Vec<Connection>| v.iter().map(|c| (c.to.clone(), c.port)).collect::<Vec<_>>();
        assert_eq!(
            ports(connections(&c, &w, false)),
            [("10.0.0.11".into(), 6443), ("10.0.0.11".into(), 9443)]
        );
        assert_eq!(
            ports(connections(&c, &w, true)),
            [
                ("10.0.0.11".into(), 6443),
                ("10.0.0.11".into(), 9443),
                ("10.0.0.11".into(), 2380),
                ("10.0.0.11".into(), 10250),
                ("10.0.0.12".into(), 10250)
            ]
        );
    }

    #[test]
    fn seeds_are_signed_with_the_tls_key_and_carry_its_certificate() {
        let dir = std::env::temp_dir().join(format!("joinery-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tls = crate::http::tls::load_or_generate(&dir, &["localhost".into()]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let signer = SeedSigner::new(tls.key.clone(), &tls.cert_der).unwrap();
        let seed = Seed {
            cluster_id: "uid".into(),
            versions: BTreeMap::new(),
            controllers: vec![],
            roles: s(&["ctl"]),
            node_labels: BTreeMap::new(),
            connections: vec![],
            issued_at: 1,
            expires_at: 2,
        };
        let doc: serde_json::Value = serde_json::from_slice(&signer.sign(&seed).unwrap()).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(doc["protected"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], "ES256");
        let cert = base64::engine::general_purpose::STANDARD
            .decode(header["x5c"][0].as_str().unwrap())
            .unwrap();
        assert_eq!(cert, tls.cert_der.as_ref());
        // The public key from the certificate (its pin is the one curl checks).
        assert_eq!(crate::http::tls::spki_pin(&tls.cert_der).unwrap(), tls.pin);
        let sig = b64.decode(doc["signature"].as_str().unwrap()).unwrap();
        assert_eq!(sig.len(), 64);
        // openssl verifies it in tests/it/joins.rs, the way the docs tell hosts to.
        let payload = b64.decode(doc["payload"].as_str().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["clusterID"], "uid");
        assert_eq!(v["roles"][0], "ctl");
    }

    #[test]
    fn ecdsa_signatures_convert() {
        // r = 0x00 0x80.. (a leading zero for the sign), s short.
        let mut der = vec![0x30, 0x27, 0x02, 0x21, 0x00, 0x80];
        der.extend([1u8; 31]);
        der.extend([0x02, 0x02, 0x01, 0x02]);
        let raw = ecdsa_der_to_raw(&der, 32).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(raw[0], 0x80);
        assert_eq!(&raw[62..], &[1, 2]);
        assert!(ecdsa_der_to_raw(&[0x30, 0x01, 0x02], 32).is_err());
    }
}
