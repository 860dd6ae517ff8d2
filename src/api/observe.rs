//! `GET /metrics` (Prometheus text format, read scope) and `GET /openapi.yaml` (the
//! OpenAPI 3.0 document of the whole API, public).
//!
//! The document is `openapi.yaml` beside this file, compiled in; a test below fails when
//! a route exists that the document lacks, or the reverse, and when a route's documented
//! security differs from what the router enforces.

use super::{Access, ApiError, Context, Identity, Route};
use crate::auth::Scope;
use crate::http::{Body, Request, Response};
use crate::metrics::{self, Connections};

/// The OpenAPI document served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

/// The media type of the exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(content_type: &str, body: Vec<u8>) -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: Body::Bytes(body),
        subject: None,
    }
}

pub fn metrics(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let mut conns = Connections::default();
    for s in &ctx.server.stats {
        conns.open += s.active_connections() as u64;
        conns.accepted += s.accepted();
        conns.rejected_busy += s.rejected_busy();
    }
    let mut page = metrics::global().render(conns);
    page.push_str(&metrics::render_cache(&ctx.cache.stats()));
    Ok(text(METRICS_CONTENT_TYPE, page.into_bytes()))
}

pub fn openapi(_: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    Ok(text("application/yaml", OPENAPI_YAML.as_bytes().to_vec()))
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/metrics",
        access: Access::Needs(Scope::Read),
        handler: metrics,
    },
    Route {
        method: "GET",
        path: "/openapi.yaml",
        access: Access::Public,
        handler: openapi,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_yaml_ng::Value;

    use super::super::{route_table, routes, Access};
    use super::OPENAPI_YAML;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_yaml_ng::from_str(OPENAPI_YAML).expect("openapi.yaml is valid YAML")
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_mapping().expect("paths is a mapping") {
            let path = path.as_str().unwrap();
            for (method, _) in item.as_mapping().unwrap() {
                let method = method.as_str().unwrap();
                if METHODS.contains(&method) {
                    out.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc = document();
        let served: BTreeSet<(String, String)> = route_table()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let documented = documented(&doc);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from src/api/openapi.yaml: {undocumented:?}"
        );
        assert!(
            phantom.is_empty(),
            "src/api/openapi.yaml documents routes the router does not serve: {phantom:?}"
        );
    }

    #[test]
    fn documented_security_matches_the_router() {
        let doc = document();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..4]), Some("3.0."));
        assert!(doc["components"]["securitySchemes"]["bearer"].is_mapping());
        assert!(doc["components"]["schemas"]["Error"].is_mapping());
        for r in routes() {
            let op = &doc["paths"][r.path][r.method.to_lowercase().as_str()];
            let security = &op["security"];
            let public = security.as_sequence().is_some_and(|s| s.is_empty());
            assert_eq!(
                public,
                r.access == Access::Public,
                "{} {}: the document's security ({security:?}) disagrees with the router",
                r.method,
                r.path
            );
            if r.access != Access::Public {
                for status in ["401", "403"] {
                    assert!(
                        op["responses"][status].is_mapping(),
                        "{} {} does not document {status}",
                        r.method,
                        r.path
                    );
                }
            }
            // Creation answers 201 and revocation 204; every route has some success.
            let success = op["responses"].as_mapping().is_some_and(|m| {
                m.keys()
                    .any(|k| k.as_str().is_some_and(|s| s.starts_with('2')))
            });
            assert!(success, "{} {} documents no 2xx", r.method, r.path);
            assert!(op["operationId"].is_string(), "{} {}", r.method, r.path);
        }
    }

    #[test]
    fn path_parameters_are_declared() {
        // `{name}` in a path must be a declared `in: path` parameter, or tools refuse it.
        let doc = document();
        for (path, item) in doc["paths"].as_mapping().unwrap() {
            let path = path.as_str().unwrap();
            let templated: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            for (method, op) in item.as_mapping().unwrap() {
                if !METHODS.contains(&method.as_str().unwrap()) {
                    continue;
                }
                let mut declared: Vec<&str> = Vec::new();
                for params in [&item["parameters"], &op["parameters"]] {
                    for p in params.as_sequence().into_iter().flatten() {
                        let p = match p["$ref"].as_str() {
                            Some(r) => {
                                &doc["components"]["parameters"][r.rsplit('/').next().unwrap()]
                            }
                            None => p,
                        };
                        if p["in"].as_str() == Some("path") {
                            declared.push(p["name"].as_str().unwrap());
                        }
                    }
                }
                declared.sort_unstable();
                let mut want = templated.clone();
                want.sort_unstable();
                assert_eq!(declared, want, "{path}: path parameters");
            }
        }
    }
}
