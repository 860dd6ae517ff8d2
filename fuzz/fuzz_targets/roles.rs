//! The roles of `GET /v1/join-bundle?roles=...` and of a create-join-command body:
//! parsed from any query (through the shared query parser) and checked against a
//! config, with no panic.
#![no_main]

use std::sync::OnceLock;

use joinery::Params;
use joinery::{check_roles, roles_from_param};
use joinery::{parse_roles, Roles};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  \
roles:\n    controller:\n      name: controller\n    custom:\n    - name: app\n    - name: gpu\n";

fn roles() -> &'static Roles {
    static R: OnceLock<Roles> = OnceLock::new();
    R.get_or_init(|| parse_roles(CONFIG).expect("the fixed config parses"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(q) = Params::parse(&text, &["roles"]) {
        if let Ok(list) = roles_from_param(q.get("roles")) {
            let _ = check_roles(&list, roles());
        }
    }
    // The body path: `{"roles": [...]}`'s array, straight into check_roles.
    if let Ok(list) = serde_json::from_slice::<Vec<String>>(data) {
        let _ = check_roles(&list, roles());
    }
});
