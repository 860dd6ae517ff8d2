//! Pods: the pods bound to a node, one pod, and eviction (a PodDisruptionBudget's 429
//! is its own outcome, [`Eviction::Blocked`]).

use serde_json::json;
use ureq::http::Method;

use super::paging::{segment, selectors};
use super::status::error_from_response;
use super::types::{Eviction, Pod};
use super::wire::disruption_budget_cause;
use super::{Client, Error};

/// Cap on an eviction answer (a Status object).
const OBJECT_LIMIT: u64 = 16 << 20;

impl Client {
    /// Every pod bound to `node`, in all namespaces (`fieldSelector=spec.nodeName=NODE`).
    pub fn list_pods_on_node(&self, node: &str) -> Result<Vec<Pod>, Error> {
        self.list(
            "/api/v1/pods",
            &selectors("", &format!("spec.nodeName={node}")),
        )
    }

    /// Ask the API server to evict a pod (`POST .../pods/NAME/eviction`), honouring
    /// PodDisruptionBudgets. Never retried here: the caller decides when to try again.
    pub fn evict_pod(&self, ns: &str, name: &str) -> Result<Eviction, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/eviction",
            segment(ns, "namespace")?,
            segment(name, "pod")?
        );
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": name, "namespace": ns },
        })
        .to_string();
        let reply = self.call(
            &Method::POST,
            &path,
            Some(("application/json", body.as_bytes())),
            OBJECT_LIMIT,
        )?;
        match reply.status {
            200..=299 => Ok(Eviction::Evicted),
            404 => Ok(Eviction::Gone),
            429 => match disruption_budget_cause(&reply.body) {
                Some(m) => Ok(Eviction::Blocked(m)),
                None => Err(error_from_response(
                    429,
                    &reply.body,
                    reply.retry_after.as_deref(),
                )),
            },
            s => Err(error_from_response(
                s,
                &reply.body,
                reply.retry_after.as_deref(),
            )),
        }
    }
}
