//! Secret writes beyond create and delete: a resourceVersion-checked replace (PUT) and a
//! merge patch of annotations. The refresh-token families rotate with the first (two
//! controllers racing on one token cannot both succeed); API tokens record their last
//! use with the second.

use std::collections::BTreeMap;

use base64::Engine;
use ureq::http::Method;

use super::paging::segment;
use super::types::{NewSecret, Secret};
use super::wire;
use super::{Client, Error};

/// Secrets are small; this bounds what a misbehaving server can make us buffer.
const BODY_LIMIT: u64 = 1 << 20;

impl Client {
    /// Replace a Secret's labels, annotations and data, only if its `resourceVersion` is
    /// still `resource_version`: [`Error::Conflict`] when someone wrote it in between,
    /// [`Error::NotFound`] when it is gone. Never retried.
    pub fn replace_secret(
        &self,
        ns: &str,
        resource_version: &str,
        new: &NewSecret,
    ) -> Result<Secret, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            segment(ns, "namespace")?,
            segment(&new.name, "secret")?
        );
        let body = replace_body(ns, resource_version, new);
        wire::parse_one::<Secret>(&self.fetch(
            Method::PUT,
            &path,
            Some(("application/json", &body)),
            BODY_LIMIT,
        )?)
    }

    /// Merge `annotations` into a Secret's (a JSON merge patch); [`Error::NotFound`] if
    /// the Secret is gone. A merge patch never recreates a deleted object.
    pub fn annotate_secret(
        &self,
        ns: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            segment(ns, "namespace")?,
            segment(name, "secret")?
        );
        let body = serde_json::json!({ "metadata": { "annotations": annotations } }).to_string();
        self.fetch(
            Method::PATCH,
            &path,
            Some(("application/merge-patch+json", body.as_bytes())),
            BODY_LIMIT,
        )?;
        Ok(())
    }
}

/// The PUT body: the whole object with `metadata.resourceVersion` as the precondition.
fn replace_body(ns: &str, resource_version: &str, s: &NewSecret) -> Vec<u8> {
    let data: BTreeMap<&str, String> = s
        .data
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    let mut body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": s.name,
            "namespace": ns,
            "resourceVersion": resource_version,
            "labels": s.labels,
            "annotations": s.annotations,
        },
        "data": data,
    });
    if let Some(t) = &s.type_ {
        body["type"] = serde_json::Value::String(t.clone());
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_body_carries_the_precondition_and_encodes_data() {
        let s = NewSecret {
            name: "joinery-refresh-abc".into(),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            annotations: BTreeMap::new(),
            data: BTreeMap::from([("hash".into(), b"xyz".to_vec())]),
            type_: Some("Opaque".into()),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&replace_body("kotsadm", "42", &s)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["namespace"], "kotsadm");
        assert_eq!(v["metadata"]["labels"]["a"], "b");
        assert_eq!(v["data"]["hash"], "eHl6");
        assert_eq!(v["type"], "Opaque");
    }
}
