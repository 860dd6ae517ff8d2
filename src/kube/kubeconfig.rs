//! Kubeconfig parsing: YAML text → the cluster and user that `current-context` names.
//!
//! Pure: no file is read here. Relative paths in the file are resolved against the
//! kubeconfig's directory (as kubectl does) and returned for `client.rs` to read.
//!
//! The document is walked as a generic YAML value rather than deserialised into structs,
//! because serde's type errors quote the offending value and a value here may be a token
//! or a key. Every error names the file and the field path, never the field's content.

use std::path::Path;

use base64::Engine;
use serde_yaml_ng::Value;

use super::target::{check_server, Material, Target, TokenSource};
use super::Error;

/// Parse kubeconfig `text` read from `path` into a [`Target`].
pub(crate) fn parse(text: &str, path: &Path) -> Result<Target, Error> {
    let file = path.display().to_string();
    let err = |msg: String| Error::Config(format!("kubeconfig {file}: {msg}"));
    let base = path.parent().unwrap_or(Path::new("."));

    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        // Only the location: the message of a YAML error may quote file content.
        match e.location() {
            Some(l) => err(format!(
                "not valid YAML (line {}, column {})",
                l.line(),
                l.column()
            )),
            None => err("not valid YAML".to_string()),
        }
    })?;
    if !doc.is_mapping() {
        return Err(err(
            "not a kubeconfig (expected a mapping with clusters, contexts, users)".into(),
        ));
    }

    let current = string(&doc, "current-context", "").map_err(&err)?;
    let Some(current) = current else {
        return Err(err(
            "current-context is not set; pick one with `kubectl config use-context NAME` \
             or use a kubeconfig with a single context"
                .into(),
        ));
    };

    let context = named(&doc, "contexts", current, "context").map_err(&err)?;
    let ctx_path = format!("contexts[{current:?}].context");
    let cluster_name = string(context, "cluster", &ctx_path)
        .map_err(&err)?
        .ok_or_else(|| err(format!("{ctx_path}.cluster is not set")))?;
    let user_name = string(context, "user", &ctx_path).map_err(&err)?;

    // Cluster: server and CA.
    let cluster = named(&doc, "clusters", cluster_name, "cluster").map_err(&err)?;
    let cl_path = format!("clusters[{cluster_name:?}].cluster");
    let server = string(cluster, "server", &cl_path)
        .map_err(&err)?
        .ok_or_else(|| err(format!("{cl_path}.server is not set")))?;
    let server = check_server(server).map_err(|m| err(format!("{cl_path}: {m}")))?;
    if boolean(cluster, "insecure-skip-tls-verify", &cl_path).map_err(&err)? {
        return Err(err(format!(
            "{cl_path} sets insecure-skip-tls-verify; joinery always verifies the API server. \
             Remove it and set certificate-authority-data to the cluster CA \
             (k0s: /var/lib/k0s/pki/ca.crt)"
        )));
    }
    for unsupported in ["tls-server-name", "proxy-url"] {
        if string(cluster, unsupported, &cl_path)
            .map_err(&err)?
            .is_some()
        {
            return Err(err(format!(
                "{cl_path}.{unsupported} is not supported by joinery; remove it"
            )));
        }
    }
    let ca = material(cluster, "certificate-authority", base, &cl_path)
        .map_err(&err)?
        .ok_or_else(|| {
            err(format!(
                "{cl_path} has neither certificate-authority-data nor certificate-authority; \
                 joinery needs the cluster CA to verify the API server"
            ))
        })?;

    // User: token, token file and/or client certificate.
    let (token, client_cert) = match user_name {
        None => (None, None),
        Some(user_name) => {
            let user = named(&doc, "users", user_name, "user").map_err(&err)?;
            let u_path = format!("users[{user_name:?}].user");
            let token = match (
                string(user, "tokenFile", &u_path).map_err(&err)?,
                string(user, "token", &u_path).map_err(&err)?,
            ) {
                // A token file wins over an inline token, as in client-go, since it rotates.
                (Some(f), _) => Some(TokenSource::File(base.join(f))),
                (None, Some(t)) => {
                    if !header_safe(t) {
                        return Err(err(format!(
                            "{u_path}.token contains characters not allowed in an HTTP header"
                        )));
                    }
                    Some(TokenSource::Static(t.to_string()))
                }
                (None, None) => None,
            };
            let cert = material(user, "client-certificate", base, &u_path).map_err(&err)?;
            let key = material(user, "client-key", base, &u_path).map_err(&err)?;
            let client_cert = match (cert, key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(err(format!(
                        "{u_path} has a client certificate but no client-key-data or client-key"
                    )))
                }
                (None, Some(_)) => {
                    return Err(err(format!(
                        "{u_path} has a client key but no client-certificate-data or client-certificate"
                    )))
                }
            };
            if token.is_none() && client_cert.is_none() {
                let kind = if present(user, "exec") {
                    "an exec credential plugin"
                } else if present(user, "auth-provider") {
                    "an auth-provider"
                } else if present(user, "username") || present(user, "password") {
                    "basic auth (username/password)"
                } else {
                    "no credentials"
                };
                return Err(err(format!(
                    "{u_path} uses {kind}; joinery supports token, tokenFile and client \
                     certificates (k0s: /var/lib/k0s/pki/admin.conf)"
                )));
            }
            (token, client_cert)
        }
    };
    if token.is_none() && client_cert.is_none() {
        return Err(err(format!(
            "{ctx_path}.user is not set; joinery needs credentials for the API server"
        )));
    }

    Ok(Target {
        server,
        ca,
        token,
        client_cert,
        origin: format!("kubeconfig {file}"),
    })
}

/// True when `t` can go in an `Authorization` header unchanged.
pub(crate) fn header_safe(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn present(m: &Value, key: &str) -> bool {
    m.get(key).is_some_and(|v| !v.is_null())
}

/// A string field; absent, null and "" all count as unset (as in kubectl).
fn string<'a>(m: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) if at.is_empty() => Err(format!("{key} must be a string")),
        Some(_) => Err(format!("{at}.{key} must be a string")),
    }
}

fn boolean(m: &Value, key: &str, at: &str) -> Result<bool, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(format!("{at}.{key} must be true or false")),
    }
}

/// `<key>-data` (base64 PEM) or `<key>` (a path); the inline form wins, as in client-go.
fn material(m: &Value, key: &str, base: &Path, at: &str) -> Result<Option<Material>, String> {
    let data_key = format!("{key}-data");
    if let Some(b64) = string(m, &data_key, at)? {
        let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| format!("{at}.{data_key} is not valid base64"))?;
        if pem.is_empty() {
            return Err(format!("{at}.{data_key} is empty"));
        }
        return Ok(Some(Material::Inline(pem)));
    }
    Ok(string(m, key, at)?.map(|p| Material::File(base.join(p))))
}

/// The `<singular>` body of the entry named `name` in the list `list`.
fn named<'a>(doc: &'a Value, list: &str, name: &str, singular: &str) -> Result<&'a Value, String> {
    let entries = match doc.get(list) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Sequence(s)) => &s[..],
        Some(_) => return Err(format!("{list} must be a list")),
    };
    let entry = entries
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| match singular {
            "context" => format!("current-context {name:?} is not in contexts"),
            _ => format!("{singular} {name:?} named by the current context is not in {list}"),
        })?;
    match entry.get(singular) {
        Some(v) if v.is_mapping() => Ok(v),
        _ => Err(format!("{list}[{name:?}].{singular} must be a mapping")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn kc(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: Default\n\
             clusters:\n- name: local\n  cluster:\n{cluster}\n\
             contexts:\n- name: Default\n  context:\n    cluster: local\n    namespace: kotsadm\n    user: user\n\
             users:\n- name: user\n  user:\n{user}\n"
        )
    }

    fn ok(text: &str) -> Target {
        parse(text, Path::new("/etc/k/admin.conf")).expect("parses")
    }

    fn fails(text: &str) -> String {
        parse(text, Path::new("/etc/k/admin.conf"))
            .expect_err("must fail")
            .to_string()
    }

    fn server_ca() -> String {
        format!(
            "    server: https://localhost:6443\n    certificate-authority-data: {}",
            b64("CA PEM")
        )
    }

    #[test]
    fn k0s_admin_conf_with_client_cert() {
        let t = ok(&kc(
            &server_ca(),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}",
                b64("CERT"),
                b64("KEY")
            ),
        ));
        assert_eq!(t.server, "https://localhost:6443");
        assert_eq!(t.ca, Material::Inline(b"CA PEM".to_vec()));
        assert_eq!(
            t.client_cert,
            Some((
                Material::Inline(b"CERT".to_vec()),
                Material::Inline(b"KEY".to_vec())
            ))
        );
        assert_eq!(t.token, None);
        assert!(t.origin.contains("/etc/k/admin.conf"));
    }

    #[test]
    fn token_and_token_file() {
        let t = ok(&kc(&server_ca(), "    token: abc.def"));
        assert_eq!(t.token, Some(TokenSource::Static("abc.def".into())));
        // Relative paths resolve against the kubeconfig's directory; tokenFile wins.
        let t = ok(&kc(&server_ca(), "    token: abc\n    tokenFile: tok"));
        assert_eq!(
            t.token,
            Some(TokenSource::File(PathBuf::from("/etc/k/tok")))
        );
    }

    #[test]
    fn ca_and_cert_files() {
        let t = ok(&kc(
            "    server: https://10.0.0.1:6443\n    certificate-authority: pki/ca.crt",
            "    client-certificate: /abs/admin.crt\n    client-key: admin.key",
        ));
        assert_eq!(t.ca, Material::File("/etc/k/pki/ca.crt".into()));
        assert_eq!(
            t.client_cert,
            Some((
                Material::File("/abs/admin.crt".into()),
                Material::File("/etc/k/admin.key".into())
            ))
        );
    }

    #[test]
    fn insecure_skip_verify_is_refused() {
        let e = fails(&kc(
            &format!("{}\n    insecure-skip-tls-verify: true", server_ca()),
            "    token: t",
        ));
        assert!(e.contains("insecure-skip-tls-verify"), "{e}");
        assert!(e.contains("/etc/k/admin.conf"), "{e}");
    }

    #[test]
    fn missing_pieces_are_named() {
        let no_current = kc(&server_ca(), "    token: t").replace("current-context: Default\n", "");
        let e = fails(&no_current);
        assert!(e.contains("current-context is not set"), "{e}");
        let e = fails(&kc("    server: https://h:1", "    token: t"));
        assert!(e.contains("neither certificate-authority-data"), "{e}");
        let e = fails(&kc(&server_ca(), "    exec:\n      command: aws"));
        assert!(e.contains("exec credential plugin"), "{e}");
        let e = fails(&kc(
            &server_ca(),
            &format!("    client-certificate-data: {}", b64("C")),
        ));
        assert!(e.contains("no client-key"), "{e}");
        let e = fails(&kc(
            "    server: http://h:8080\n    certificate-authority: ca",
            "    token: t",
        ));
        assert!(e.contains("plain http"), "{e}");
    }

    #[test]
    fn unknown_context_is_named() {
        let text = kc(&server_ca(), "    token: t")
            .replace("current-context: Default", "current-context: prod");
        let e = fails(&text);
        assert!(
            e.contains("current-context \"prod\" is not in contexts"),
            "{e}"
        );
    }

    #[test]
    fn bad_base64_never_echoes_material() {
        let e = fails(&kc(
            &server_ca(),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: SECRET!!KEY",
                b64("C")
            ),
        ));
        assert!(e.contains("client-key-data is not valid base64"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = fails(&kc(
            "    server: https://h:1\n    certificate-authority-data: \"%%%\"",
            "    token: t",
        ));
        assert!(
            e.contains("certificate-authority-data is not valid base64"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_never_echo_values() {
        let e = fails(&kc(&server_ca(), "    token: [sekrit-token]"));
        assert!(e.contains("token must be a string"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
        let e = fails(&kc(&server_ca(), "    token: \"bad\\ntoken-sekrit\""));
        assert!(e.contains("not allowed in an HTTP header"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
        let e = fails("current-context: [sekrit]");
        assert!(e.contains(": current-context must be a string"), "{e}");
        let e = fails("token: sekrit: : [");
        assert!(e.contains("not valid YAML"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
    }
}
