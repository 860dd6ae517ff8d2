//! Where `joinery serve` listens when `--bind-address` is not given, decided without
//! waiting for Kubernetes: after a reboot the API server can take minutes to answer,
//! and `/v1/health` must answer at once.
//!
//! 1. k0s's configuration (`--k0s-config`, `spec.api.address`), when that address is
//!    one of this host's (it can be bound): listen there at once. On a k0s controller
//!    it is the address k0s serves and advertises its API on, which kubelet also
//!    registers as the node's InternalIP.
//! 2. Otherwise listen on 127.0.0.1 at once, and look up this node's InternalIP in the
//!    background ([`InternalIp`]), retrying with back-off; once found, a second
//!    listener on it, same port, same limits. Until then (for ever, if the node is never
//!    found) only this host can connect. Never all addresses: the fallback before this
//!    listened on 0.0.0.0 whenever the lookup failed, so a slow API server at boot
//!    opened the API on every interface. (Loopback adds no reach: a local process can
//!    connect to the InternalIP anyway.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::http::{self, ShutdownHandle};
use crate::kube;
use crate::log;

/// Where to listen first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// This address (given, or found locally), and only it.
    At(IpAddr),
    /// 127.0.0.1 now, this node's InternalIP once the API server names it.
    LoopbackThenInternalIp,
}

impl Plan {
    /// Decide from the flags and local files only: no Kubernetes call.
    pub fn new(cfg: &Config) -> Plan {
        if let Some(ip) = cfg.bind_address {
            log::info(
                "bind address from configuration",
                &[("address", ip.to_string().into())],
            );
            return Plan::At(ip);
        }
        match k0s_api_address(&cfg.k0s_config) {
            Some(ip) => {
                log::info(
                    "bind address is k0s's API address",
                    &[
                        ("address", ip.to_string().into()),
                        ("file", cfg.k0s_config.display().to_string().into()),
                    ],
                );
                Plan::At(ip)
            }
            None => Plan::LoopbackThenInternalIp,
        }
    }

    /// The address of the first listener.
    pub fn first(self) -> IpAddr {
        match self {
            Plan::At(ip) => ip,
            Plan::LoopbackThenInternalIp => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The addresses a self-signed certificate made now should name besides localhost,
    /// 127.0.0.1 and the node name: the bind address; or, when the InternalIP is not
    /// known yet, every address of this host (the InternalIP is one of them), so that a
    /// client checking the certificate against the InternalIP's URL is not refused.
    pub fn certificate_addresses(self) -> Vec<IpAddr> {
        match self {
            Plan::At(ip) if ip.is_unspecified() || ip.is_loopback() => Vec::new(),
            Plan::At(ip) => vec![ip],
            Plan::LoopbackThenInternalIp => {
                let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
                let mut all = ipv4_local(&read("/proc/net/fib_trie"));
                all.extend(ipv6_local(&read("/proc/net/if_inet6")));
                all
            }
        }
    }

    /// The one address this daemon is known by, for join commands; unspecified when it
    /// is not one fixed address (then the node's InternalIP is used).
    pub fn advertised(self) -> IpAddr {
        match self {
            Plan::At(ip) => ip,
            Plan::LoopbackThenInternalIp => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// `spec.api.address` of the k0s configuration at `path`, if it is one of this host's
/// addresses. A missing or unreadable file, or any other shape, is `None`.
fn k0s_api_address(path: &Path) -> Option<IpAddr> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    api_address_in(&text).filter(|ip| is_local(*ip))
}

/// `spec.api.address` in k0s configuration YAML, when it is a specific IP address.
fn api_address_in(yaml: &str) -> Option<IpAddr> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).ok()?;
    let ip: IpAddr = doc
        .get("spec")?
        .get("api")?
        .get("address")?
        .as_str()?
        .trim()
        .parse()
        .ok()?;
    (!ip.is_unspecified() && !ip.is_multicast()).then_some(ip)
}

/// This host's IPv4 addresses but loopback, from the kernel's `/proc/net/fib_trie`: each
/// `|-- ADDRESS` line followed by `/32 host LOCAL`.
fn ipv4_local(fib_trie: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut last = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse::<Ipv4Addr>().ok();
        } else if line == "/32 host LOCAL" {
            if let Some(ip) = last.take().filter(|ip| !ip.is_loopback()) {
                if !found.contains(&IpAddr::V4(ip)) {
                    found.push(IpAddr::V4(ip));
                }
            }
        }
    }
    found
}

/// This host's global IPv6 addresses (not loopback or link-local), from the kernel's
/// `/proc/net/if_inet6`: 32 hex digits first on each line.
fn ipv6_local(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|l| u128::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .map(std::net::Ipv6Addr::from)
        .filter(|ip| !ip.is_loopback() && !ip.is_unicast_link_local())
        .map(IpAddr::V6)
        .collect()
}

/// Whether `ip` is one of this host's addresses: only those can be bound.
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The InternalIP of this daemon's own node, or why it is unknown.
fn own_internal_ip(kube: &kube::Client, node_name: Option<&str>) -> Result<IpAddr, String> {
    let name = node_name.ok_or("the host name is unknown and --node-name is not set")?;
    let node = kube
        .get_node(name)
        .map_err(|e| format!("node {name:?}: {e}; set --node-name or --bind-address"))?;
    let ip = node
        .internal_ip
        .ok_or_else(|| format!("node {name:?} has no InternalIP address"))?;
    ip.parse()
        .map_err(|_| format!("node {name:?} has an InternalIP that is not an IP address"))
}

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The second listener of [`Plan::LoopbackThenInternalIp`], not started yet.
pub struct InternalIp {
    pub kube: kube::Client,
    pub node_name: Option<String>,
    pub tls: Arc<rustls::ServerConfig>,
    pub limits: http::Limits,
}

/// The thread that looks up the InternalIP and then serves on it.
pub struct Started {
    thread: std::thread::JoinHandle<()>,
}

impl InternalIp {
    /// Look up the InternalIP and serve `handler` on it at `port` on a thread of its
    /// own, until `stop` (the daemon's shared shutdown handle) is triggered.
    pub fn start(
        self,
        port: u16,
        handler: Arc<dyn http::Handler>,
        stop: &ShutdownHandle,
    ) -> std::io::Result<Started> {
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("internal-ip".into())
            .spawn(move || self.run(port, &handler, &stop))?;
        Ok(Started { thread })
    }

    fn run(self, port: u16, handler: &Arc<dyn http::Handler>, stop: &ShutdownHandle) {
        let mut pause = RETRY_FIRST;
        let mut said = String::new();
        loop {
            if stop.is_shutdown() {
                return;
            }
            let why = match own_internal_ip(&self.kube, self.node_name.as_deref()) {
                Ok(ip) if ip == Plan::LoopbackThenInternalIp.first() => return,
                Ok(ip) => {
                    let addr = SocketAddr::new(ip, port);
                    match http::Server::bind(addr, self.tls.clone(), self.limits.clone()) {
                        Ok(server) => return serve(server.sharing_shutdown(stop), addr, handler),
                        Err(e) => format!("cannot listen on {addr}: {e}"),
                    }
                }
                Err(why) => why,
            };
            // Said once per reason, not once per try.
            if why != said {
                log::warn(
                    "listening on loopback only until this node's InternalIP is known",
                    &[("reason", why.clone().into())],
                );
                said = why;
            }
            if stop.wait_for(pause) {
                return;
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

/// Serve `server` (which shares the daemon's shutdown handle) until shutdown.
fn serve(server: http::Server, addr: SocketAddr, handler: &Arc<dyn http::Handler>) {
    log::info(
        "listening on this node's InternalIP",
        &[("address", format!("https://{addr}").into())],
    );
    if let Err(e) = server.run(handler.clone()) {
        // As the local socket: the loopback listener carries on.
        log::error(
            "the InternalIP listener stopped",
            &[("error", e.to_string().into())],
        );
    }
}

impl Started {
    /// After the servers' shutdown: join the thread. It is serving (and finishes its
    /// requests within the grace period, as the other servers do), waiting between
    /// lookups (it wakes at once), or inside a lookup (it ends with that call, within
    /// `--kube-timeout`, as the auth-load thread does).
    pub fn stop(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k0s_api_address_is_read_only_when_it_is_a_specific_address() {
        let yaml = |address: &str| {
            format!(
                "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  \
                 name: k0s\nspec:\n  api:\n    address: {address}\n    port: 6443\n"
            )
        };
        assert_eq!(
            api_address_in(&yaml("10.0.0.11")),
            Some("10.0.0.11".parse().unwrap())
        );
        assert_eq!(
            api_address_in(&yaml("\"fd00::b\"")),
            Some("fd00::b".parse().unwrap())
        );
        for bad in ["0.0.0.0", "::", "controller.example", "224.0.0.1", "''"] {
            assert_eq!(api_address_in(&yaml(bad)), None, "{bad}");
        }
        assert_eq!(api_address_in("spec: {}"), None);
        assert_eq!(api_address_in("not: [yaml"), None);
    }

    #[test]
    fn this_hosts_addresses_from_the_kernel() {
        let fib_trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe \
            UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           \
            |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              \
            /32 host LOCAL\n     +-- 10.0.0.0/24 2 0 2\n           |-- 10.0.0.0\n              \
            /24 link UNICAST\n           |-- 10.0.0.11\n              /32 host LOCAL\n        \
            |-- 10.0.0.255\n           /32 link BROADCAST\nLocal:\n           |-- 10.0.0.11\n  \
            /32 host LOCAL\n";
        assert_eq!(
            ipv4_local(fib_trie),
            ["10.0.0.11".parse::<IpAddr>().unwrap()]
        );
        let if_inet6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
            fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
            00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(ipv6_local(if_inet6), ["fd00::2".parse::<IpAddr>().unwrap()]);
        assert!(ipv4_local("").is_empty() && ipv6_local("garbage").is_empty());
    }

    #[test]
    fn only_this_hosts_addresses_are_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("k0s.yaml");
        // Any 127/8 address is local on Linux; TEST-NET-1 is nobody's.
        std::fs::write(&path, "spec:\n  api:\n    address: 127.0.0.9\n").unwrap();
        assert_eq!(k0s_api_address(&path), Some("127.0.0.9".parse().unwrap()));
        std::fs::write(&path, "spec:\n  api:\n    address: 192.0.2.1\n").unwrap();
        assert_eq!(k0s_api_address(&path), None);
        assert_eq!(k0s_api_address(&dir.join("missing.yaml")), None);
    }
}
