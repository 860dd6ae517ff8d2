//! k0s's `etcd.k0sproject.io/v1beta1` EtcdMember objects (cluster-scoped, one per
//! controller, named after its node): read, list, and the `spec.leave` request.

use ureq::http::Method;

use super::client::Listed;
use super::paging::segment;
use super::types::EtcdMember;
use super::{wire, Client, Error};

const MERGE_PATCH: &str = "application/merge-patch+json";
/// Cap on one EtcdMember body.
const OBJECT_LIMIT: u64 = 1 << 20;
pub(crate) const ETCD_MEMBERS: &str = "/apis/etcd.k0sproject.io/v1beta1/etcdmembers";

fn etcd_path(name: &str) -> Result<String, Error> {
    Ok(format!("{ETCD_MEMBERS}/{}", segment(name, "etcdmember")?))
}

impl Client {
    /// The EtcdMember of a controller node, or `None` (a worker has none).
    pub fn get_etcd_member(&self, name: &str) -> Result<Option<EtcdMember>, Error> {
        let path = etcd_path(name)?;
        self.get_if_exists(&path)
    }

    /// Ask k0s to remove a controller from etcd: merge-patch `{"spec":{"leave":true}}`.
    pub fn etcd_member_leave(&self, name: &str) -> Result<EtcdMember, Error> {
        let path = etcd_path(name)?;
        let body = br#"{"spec":{"leave":true}}"#;
        let b = self.fetch(
            Method::PATCH,
            &path,
            Some((MERGE_PATCH, body.as_slice())),
            OBJECT_LIMIT,
        )?;
        wire::parse_one(&b)
    }

    /// Every EtcdMember and the list's resourceVersion, where a watch starts.
    pub fn list_etcd_members_versioned(&self) -> Result<Listed<EtcdMember>, Error> {
        self.list_map(ETCD_MEMBERS, "", |m| m)
    }
}
