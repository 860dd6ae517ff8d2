//! What a token lets its holder do: the `scope` claim of a session token.
//!
//! Two levels are enough for this API: `admin` may change the cluster (create join
//! commands, download join bundles), `read` may only look (list nodes). The claim is a
//! plain string on the wire so tokens stay readable with any JWT tool.

/// A permission level carried in a token's `scope` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including actions that change the cluster.
    Admin,
    /// Read-only endpoints.
    Read,
}

impl Scope {
    /// The scope named by `s` exactly as written in a token (`"admin"` or `"read"`),
    /// or `None` for anything else, so an unknown scope never grants access.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }

    /// The wire form written into the `scope` claim.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }

    /// Whether a token with this scope may do something that needs `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        match (self, needed) {
            (Scope::Admin, _) => true,
            (Scope::Read, Scope::Read) => true,
            (Scope::Read, Scope::Admin) => false,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn parse_round_trips_and_is_exact() {
        for scope in [Scope::Admin, Scope::Read] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        // Case, padding and unknown names never grant anything.
        for bad in [
            "Admin",
            "ADMIN",
            " admin",
            "read ",
            "",
            "write",
            "admin read",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn admin_allows_everything_read_only_reads() {
        let check = |have: Scope, needed: Scope, expected: bool| {
            assert_eq!(have.allows(needed), expected, "{have} allows {needed}");
        };
        check(Scope::Admin, Scope::Admin, true);
        check(Scope::Admin, Scope::Read, true);
        check(Scope::Read, Scope::Read, true);
        check(Scope::Read, Scope::Admin, false);
    }
}
