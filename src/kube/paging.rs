//! List paging and URL building: which request comes next, and how names and query values
//! are put in a path safely.
//!
//! Pure. Lists are fetched `limit=500` at a time and followed through `continue` tokens; the
//! bounds here keep a confused or hostile server from making us loop or grow forever.

use super::Error;

/// Items per list page.
pub(crate) const PAGE_LIMIT: usize = 500;
/// Items per page of the lists the watch-fed view starts from (`*_versioned`): a page
/// of full objects is parsed whole before each is made compact, and at 5,000 nodes 100
/// per page instead of 500 measured a peak of 9.0 MiB instead of 14.3 MiB and left
/// 1.59x the `/v1/nodes` answer held instead of 1.75x (what musl keeps after the
/// transient). It costs 50 requests instead of 10 per (rare) full list.
pub(crate) const VIEW_PAGE_LIMIT: usize = 100;
/// Most items one list call collects (a cluster of this many nodes is far beyond our use).
pub(crate) const MAX_ITEMS: usize = 100_000;
/// Most pages one list call follows (empty pages with fresh tokens would otherwise loop).
pub(crate) const MAX_PAGES: usize = 1_000;

/// What to do after a page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The list is complete.
    Done,
    /// Fetch the page with this `continue` token.
    Fetch(String),
}

/// Decide the next request from a page's `continue` token, the token that fetched it,
/// the pages fetched so far and the items collected so far.
pub(crate) fn next_page(
    page_continue: Option<&str>,
    requested_with: Option<&str>,
    pages: usize,
    items: usize,
) -> Result<Next, Error> {
    if items > MAX_ITEMS {
        return Err(Error::Protocol(format!(
            "list has more than {MAX_ITEMS} items"
        )));
    }
    let token = match page_continue {
        None | Some("") => return Ok(Next::Done),
        Some(t) => t,
    };
    if Some(token) == requested_with {
        return Err(Error::Protocol(
            "api server returned the same continue token twice".into(),
        ));
    }
    if pages >= MAX_PAGES {
        return Err(Error::Protocol(format!(
            "list did not end after {MAX_PAGES} pages"
        )));
    }
    Ok(Next::Fetch(token.to_string()))
}

/// A list's selectors as query parameters (`labelSelector=..&fieldSelector=..`), encoded;
/// empty selectors are left out.
pub(crate) fn selectors(label: &str, field: &str) -> String {
    let mut q = String::new();
    for (name, value) in [("labelSelector", label), ("fieldSelector", field)] {
        if !value.is_empty() {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(name);
            q.push('=');
            q.push_str(&encode(value));
        }
    }
    q
}

/// The path and query of one list page; `query` comes from [`selectors`].
pub(crate) fn list_path(
    base: &str,
    query: &str,
    continue_token: Option<&str>,
    limit: usize,
) -> String {
    let mut p = format!("{base}?limit={limit}");
    if !query.is_empty() {
        p.push('&');
        p.push_str(query);
    }
    if let Some(c) = continue_token {
        p.push_str("&continue=");
        p.push_str(&encode(c));
    }
    p
}

/// The path and query of a watch from `resource_version`, with bookmarks, ended by the
/// server after `timeout_seconds`.
pub(crate) fn watch_path(
    base: &str,
    query: &str,
    resource_version: &str,
    timeout_seconds: u64,
) -> String {
    let mut p = format!(
        "{base}?watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={timeout_seconds}",
        encode(resource_version)
    );
    if !query.is_empty() {
        p.push('&');
        p.push_str(query);
    }
    p
}

/// A name as one path segment. Kubernetes names never need escaping, but a name that
/// came from a caller must not be able to add segments or a query (`a/b`, `x?y`, `..`).
pub(crate) fn segment(name: &str, what: &str) -> Result<String, Error> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Invalid(format!("{what} name {name:?} is not valid")));
    }
    Ok(encode(name))
}

/// Percent-encode everything outside RFC 3986 "unreserved".
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_decisions() {
        assert_eq!(next_page(None, None, 1, 500).unwrap(), Next::Done);
        assert_eq!(next_page(Some(""), Some("a"), 2, 600).unwrap(), Next::Done);
        assert_eq!(
            next_page(Some("b"), Some("a"), 2, 1000).unwrap(),
            Next::Fetch("b".into())
        );
        assert_eq!(
            next_page(Some("a"), None, 1, 500).unwrap(),
            Next::Fetch("a".into())
        );
    }

    #[test]
    fn paging_refuses_loops_and_runaway_lists() {
        assert!(matches!(
            next_page(Some("a"), Some("a"), 2, 500),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            next_page(Some("z"), Some("y"), MAX_PAGES, 0),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            next_page(None, None, 3, MAX_ITEMS + 1),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn list_paths() {
        assert_eq!(
            list_path("/api/v1/nodes", "", None, PAGE_LIMIT),
            "/api/v1/nodes?limit=500"
        );
        assert_eq!(
            list_path("/api/v1/nodes", "", None, VIEW_PAGE_LIMIT),
            "/api/v1/nodes?limit=100"
        );
        assert_eq!(
            list_path(
                "/api/v1/namespaces/kube-system/secrets",
                &selectors("app=joinery,tier in (a b)", ""),
                Some("eyJ2Ijo+/="),
                PAGE_LIMIT
            ),
            "/api/v1/namespaces/kube-system/secrets?limit=500\
             &labelSelector=app%3Djoinery%2Ctier%20in%20%28a%20b%29&continue=eyJ2Ijo%2B%2F%3D"
        );
    }

    #[test]
    fn selector_and_watch_queries() {
        assert_eq!(selectors("", ""), "");
        assert_eq!(
            selectors("a=b", "spec.nodeName=n 1"),
            "labelSelector=a%3Db&fieldSelector=spec.nodeName%3Dn%201"
        );
        assert_eq!(
            watch_path("/api/v1/nodes", "", "12", 300),
            "/api/v1/nodes?watch=1&allowWatchBookmarks=true&resourceVersion=12&timeoutSeconds=300"
        );
    }

    #[test]
    fn segments_cannot_escape() {
        assert_eq!(segment("node-1.example", "node").unwrap(), "node-1.example");
        assert_eq!(segment("a/b?c", "node").unwrap(), "a%2Fb%3Fc");
        assert!(matches!(segment("", "node"), Err(Error::Invalid(_))));
        assert!(matches!(segment("..", "node"), Err(Error::Invalid(_))));
    }
}
