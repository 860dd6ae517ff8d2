//! Flags and environment variables become one validated [`Config`].
//!
//! Every flag of `joinery serve` also reads an environment variable (`--api-port` ↔
//! `JOINERY_API_PORT`); a flag on the command line wins over the environment, which wins
//! over the default. Raw strings are turned into typed values here, once, so a mistake is
//! a start-up error that names the flag and says what would be accepted, never a surprise
//! at request time. The table in [`FLAGS`] is the single source for `joinery serve --help` and
//! the configuration table in docs/configuration.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon finds the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// A kubeconfig file (k0s's admin kubeconfig on a bare controller).
    Kubeconfig(PathBuf),
    /// The pod's service account.
    InCluster,
}

/// The validated configuration of `joinery serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_port: u16,
    /// `None`: find the node's InternalIP at start-up, else listen on 0.0.0.0.
    pub bind_address: Option<IpAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub namespace: String,
    pub kube: KubeSource,
    pub kube_timeout: Duration,
    pub password_hash_file: Option<PathBuf>,
    pub signing_key_file: Option<PathBuf>,
    pub node_name: Option<String>,
    /// Where `build` looks for the bind address first (k0s's `spec.api.address`) when
    /// `--bind-address` is not given.
    pub k0s_config: PathBuf,
    /// `--ec-config`, `--license`, `--artifacts-dir`: all three, or none (joins off).
    pub join: Option<JoinInputs>,
    /// Wrong passwords allowed per address and minute before it is locked out.
    pub login_failures: u32,
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold at once.
    pub max_connections_per_address: usize,
    /// Bytes per second a client must take a response at while the server waits on
    /// it; 0: no minimum.
    pub min_transfer_rate: u64,
    /// Open waiters and node streams at once (never more than half the connections).
    pub max_waiters: usize,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The local Unix socket (plain HTTP, admin for `socket_uid`); `None`: disabled.
    pub socket: Option<PathBuf>,
    pub socket_uid: u32,
}

/// The files joins are made from.
#[derive(Debug, Clone)]
pub struct JoinInputs {
    pub ec_config: PathBuf,
    pub license: PathBuf,
    pub artifacts_dir: PathBuf,
}

/// One flag of `joinery serve`: its name, environment variable, default and meaning.
pub struct Flag {
    pub name: &'static str,
    pub env: &'static str,
    pub default: FlagDefault,
    pub help: &'static str,
}

/// A flag's default, as `--help` and docs/configuration.md show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagDefault {
    /// A value, parsed exactly as if the user had given it: the one place the default
    /// is written, for the help, the docs and the parser alike.
    Value(&'static str),
    /// What happens without the flag, in words (no single value stands for it).
    Described(&'static str),
}

impl std::fmt::Display for FlagDefault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagDefault::Value(v) | FlagDefault::Described(v) => f.write_str(v),
        }
    }
}

/// Where the local socket is unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/joinery/joinery.sock";

/// The data directory unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/joinery";

/// Every flag of `joinery serve`, in the order `joinery serve --help` prints them.
pub const FLAGS: &[Flag] = &[
    Flag {
        name: "--api-port",
        env: "JOINERY_API_PORT",
        default: FlagDefault::Value("30081"),
        help: "TCP port of the HTTPS API (0 picks a free port).",
    },
    Flag {
        name: "--bind-address",
        env: "JOINERY_BIND_ADDRESS",
        default: FlagDefault::Described(
            "k0s's API address, else 127.0.0.1 and then the node's InternalIP",
        ),
        help: "IP address to listen on.",
    },
    Flag {
        name: "--tls-cert",
        env: "JOINERY_TLS_CERT",
        default: FlagDefault::Described("self-signed in --data-dir"),
        help: "PEM certificate chain; needs --tls-key.",
    },
    Flag {
        name: "--tls-key",
        env: "JOINERY_TLS_KEY",
        default: FlagDefault::Described("self-signed in --data-dir"),
        help: "PEM private key (PKCS#8, PKCS#1 or SEC1); needs --tls-cert.",
    },
    Flag {
        name: "--data-dir",
        env: "JOINERY_DATA_DIR",
        default: FlagDefault::Value(DEFAULT_DATA_DIR),
        help: "Directory for the generated certificate and caches (created 0700).",
    },
    Flag {
        name: "--namespace",
        env: "JOINERY_NAMESPACE",
        default: FlagDefault::Value("kotsadm"),
        help: "Namespace of the installer password and joinery's own Secrets.",
    },
    Flag {
        name: "--kubeconfig",
        env: "JOINERY_KUBECONFIG",
        default: FlagDefault::Described("in-cluster, else /var/lib/k0s/pki/admin.conf"),
        help: "Kubeconfig file to reach the Kubernetes API.",
    },
    Flag {
        name: "--kube-timeout",
        env: "JOINERY_KUBE_TIMEOUT",
        default: FlagDefault::Value("10"),
        help: "Seconds one Kubernetes API call may take.",
    },
    Flag {
        name: "--password-hash-file",
        env: "JOINERY_PASSWORD_HASH_FILE",
        default: FlagDefault::Described("Secret kotsadm-password"),
        help: "File holding the installer password's bcrypt hash.",
    },
    Flag {
        name: "--signing-key-file",
        env: "JOINERY_SIGNING_KEY_FILE",
        default: FlagDefault::Described("Secret joinery-signing-key"),
        help: "File holding the 32-byte token signing key (raw or base64).",
    },
    Flag {
        name: "--node-name",
        env: "JOINERY_NODE_NAME",
        default: FlagDefault::Described("the host name"),
        help: "This controller's Kubernetes node name.",
    },
    Flag {
        name: "--k0s-config",
        env: "JOINERY_K0S_CONFIG",
        default: FlagDefault::Value("/etc/k0s/k0s.yaml"),
        help: "k0s's configuration; its spec.api.address is the default bind address.",
    },
    Flag {
        name: "--ec-config",
        env: "JOINERY_EC_CONFIG",
        default: FlagDefault::Described("none (joins off)"),
        help: "Embedded Cluster Config YAML: the roles nodes can join with.",
    },
    Flag {
        name: "--license",
        env: "JOINERY_LICENSE",
        default: FlagDefault::Described("none (joins off)"),
        help: "KOTS License YAML: app slug and multi-node entitlement.",
    },
    Flag {
        name: "--artifacts-dir",
        env: "JOINERY_ARTIFACTS_DIR",
        default: FlagDefault::Described("none (joins off)"),
        help: "Directory of files every join bundle carries (the app binary first).",
    },
    Flag {
        name: "--login-failures",
        env: "JOINERY_LOGIN_FAILURES",
        default: FlagDefault::Value("5"),
        help: "Wrong passwords one address may send per minute before a lockout.",
    },
    Flag {
        name: "--max-connections",
        env: "JOINERY_MAX_CONNECTIONS",
        default: FlagDefault::Value("512"),
        help: "Connections open at once (idle keep-alive ones included); past it a new one gets 503. A worker thread serves a connection only while a request is in progress.",
    },
    Flag {
        name: "--max-connections-per-address",
        env: "JOINERY_MAX_CONNECTIONS_PER_ADDRESS",
        default: FlagDefault::Value("64"),
        help: "Connections one client address (an IPv6 /64) may hold at once; past it, 503.",
    },
    Flag {
        name: "--min-transfer-rate",
        env: "JOINERY_MIN_TRANSFER_RATE",
        default: FlagDefault::Value("1024"),
        help: "Bytes/s a client must read a response at while joinery waits on it (after 10 s of slack); slower ones are closed; 0 turns it off.",
    },
    Flag {
        name: "--max-waiters",
        env: "JOINERY_MAX_WAITERS",
        default: FlagDefault::Value("64"),
        help: "Open waits (?waitFor=) and node streams (?watch=true) at once, at most half of --max-connections; past it 503.",
    },
    Flag {
        name: "--idle-timeout",
        env: "JOINERY_IDLE_TIMEOUT",
        default: FlagDefault::Value("30"),
        help: "Seconds an idle keep-alive connection is kept open.",
    },
    Flag {
        name: "--shutdown-grace",
        env: "JOINERY_SHUTDOWN_GRACE",
        default: FlagDefault::Value("10"),
        help: "Seconds in-flight requests get to finish after SIGTERM.",
    },
    Flag {
        name: "--socket",
        env: "JOINERY_SOCKET",
        default: FlagDefault::Value(DEFAULT_SOCKET),
        help: "Local Unix socket serving the API without TLS, as admin to --socket-uid (mode 0600); '' or none turns it off.",
    },
    Flag {
        name: "--socket-uid",
        env: "JOINERY_SOCKET_UID",
        default: FlagDefault::Value("0"),
        help: "The only user id served on --socket (checked with SO_PEERCRED); others get 403.",
    },
];

/// A configuration mistake, worded for the person who made it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where raw values come from: the command line first, then the environment.
pub struct Sources<'a> {
    pub args: pico_args::Arguments,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    /// The raw value of a flag, from the command line, else its environment variable,
    /// else its [`FlagDefault::Value`], with where it came from (the flag, the
    /// variable's name or "the default of FLAG"), for error messages. `None` only for a
    /// flag whose default is [`FlagDefault::Described`]. A flag given twice is refused
    /// rather than silently taking one of the values.
    fn raw_from(&mut self, flag: &'static str) -> Result<Option<(String, String)>, ConfigError> {
        let take = |args: &mut pico_args::Arguments| {
            args.opt_value_from_str::<_, String>(flag)
                .map_err(|_| ConfigError(format!("{flag} needs a value")))
        };
        if let Some(v) = take(&mut self.args)? {
            if let Some(again) = take(&mut self.args)? {
                return Err(ConfigError(format!(
                    "{flag} is given twice ({v:?} and {again:?}); give it once"
                )));
            }
            return Ok(Some((v, flag.to_string())));
        }
        let Some(f) = FLAGS.iter().find(|f| f.name == flag) else {
            return Ok(None);
        };
        if let Some(v) = (self.env)(f.env).filter(|v| !v.is_empty()) {
            return Ok(Some((v, f.env.to_string())));
        }
        Ok(match f.default {
            FlagDefault::Value(v) => Some((v.to_string(), format!("the default of {flag}"))),
            FlagDefault::Described(_) => None,
        })
    }

    fn raw(&mut self, flag: &'static str) -> Result<Option<String>, ConfigError> {
        Ok(self.raw_from(flag)?.map(|(v, _)| v))
    }

    fn path(&mut self, flag: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.raw(flag)?.map(PathBuf::from))
    }

    /// The value of a flag whose default is a [`FlagDefault::Value`].
    fn value(&mut self, flag: &'static str) -> Result<(String, String), ConfigError> {
        self.raw_from(flag)?
            .ok_or_else(|| ConfigError(format!("{flag} has no default value")))
    }

    /// A whole number in `range`, from the flag, its variable or its default.
    fn number<T>(&mut self, flag: &'static str, range: (T, T)) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let (raw, from) = self.value(flag)?;
        match raw.trim().parse::<T>() {
            Ok(v) if v >= range.0 && v <= range.1 => Ok(v),
            _ => Err(ConfigError(format!(
                "{from}: {raw:?} is not a whole number from {} to {}",
                range.0, range.1
            ))),
        }
    }

    /// Takes what is left on the command line: up to `positional` plain words are
    /// returned; an unknown flag or one word too many is an error naming it (with the
    /// nearest flag of `cmd` when the word looks like a typo). Called before anything
    /// looks at the disk or the network, so a typo is reported as a typo.
    pub fn rest(&mut self, cmd: &str, positional: usize) -> Result<Vec<String>, ConfigError> {
        let args = std::mem::replace(&mut self.args, pico_args::Arguments::from_vec(Vec::new()));
        leftovers(args, cmd, FLAGS.iter().map(|f| f.name), positional)
    }

    /// Rejects anything left on the command line, so a typo never goes unnoticed.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        self.rest("serve", 0).map(|_| ())
    }
}

/// What is left of a command line once its flags were taken: up to `positional` plain
/// words are returned; an unknown flag (with the nearest of `known` when it looks like a
/// typo) or a word too many is an error naming it.
pub fn leftovers<'a>(
    args: pico_args::Arguments,
    cmd: &str,
    known: impl Iterator<Item = &'a str>,
    positional: usize,
) -> Result<Vec<String>, ConfigError> {
    let known: Vec<&str> = known.collect();
    let mut words = Vec::new();
    for arg in args.finish() {
        let word = arg.to_string_lossy().into_owned();
        if word.starts_with('-') && word.len() > 1 {
            let name = word.split('=').next().unwrap_or(&word);
            let hint = nearest(name, known.iter().copied())
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            return Err(ConfigError(format!(
                "unknown flag {name:?}{hint} (`joinery {cmd} --help` lists the flags)"
            )));
        }
        if words.len() == positional {
            return Err(ConfigError(format!(
                "unexpected argument {word:?} (`joinery {cmd} --help` shows the usage)"
            )));
        }
        words.push(word);
    }
    Ok(words)
}

/// The known name closest to `word` (at most two edits away), for "did you mean".
pub fn nearest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j]))
                    .min(row[j] + 1)
                    .min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .map(|k| (distance(word, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl Config {
    /// Reads every flag of `serve`. `kube_default` decides the Kubernetes source when
    /// `--kubeconfig` is absent (it looks at the process environment and the disk).
    pub fn from_sources(
        src: &mut Sources<'_>,
        kube_default: impl FnOnce() -> Result<KubeSource, ConfigError>,
    ) -> Result<Config, ConfigError> {
        let api_port = src.number::<u16>("--api-port", (0, u16::MAX))?;
        let bind_address = match src.raw_from("--bind-address")? {
            None => None,
            Some((raw, from)) => Some(raw.trim().parse::<IpAddr>().map_err(|_| {
                ConfigError(format!(
                    "{from}: {raw:?} is not an IP address (e.g. 10.0.0.11 or 0.0.0.0)"
                ))
            })?),
        };
        let tls_cert = src.path("--tls-cert")?;
        let tls_key = src.path("--tls-key")?;
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError(
                "--tls-cert and --tls-key go together: give both, or neither to use a \
                 self-signed certificate"
                    .into(),
            ));
        }
        let data_dir = PathBuf::from(src.value("--data-dir")?.0);
        let namespace = namespace(src)?;
        let kubeconfig = src.path("--kubeconfig")?;
        let kube_timeout = Duration::from_secs(src.number("--kube-timeout", (1, 300))?);
        let password_hash_file = src.path("--password-hash-file")?;
        let signing_key_file = src.path("--signing-key-file")?;
        let node_name = src.raw("--node-name")?;
        let k0s_config = PathBuf::from(src.value("--k0s-config")?.0);
        let join = match (
            src.path("--ec-config")?,
            src.path("--license")?,
            src.path("--artifacts-dir")?,
        ) {
            (Some(ec_config), Some(license), Some(artifacts_dir)) => Some(JoinInputs {
                ec_config,
                license,
                artifacts_dir,
            }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError(
                    "--ec-config, --license and --artifacts-dir go together: give all three \
                     to serve joins, or none"
                        .into(),
                ))
            }
        };
        let login_failures = src.number::<u32>("--login-failures", (1, 100_000))?;
        let max_connections = src.number::<usize>("--max-connections", (1, 65_536))?;
        let max_connections_per_address =
            src.number::<usize>("--max-connections-per-address", (1, 65_536))?;
        let min_transfer_rate = src.number::<u64>("--min-transfer-rate", (0, 1 << 30))?;
        // Waiting requests hold a connection each: keep half for everything else.
        let max_waiters = src
            .number::<usize>("--max-waiters", (0, 32_768))?
            .min(max_connections / 2);
        let idle_timeout = Duration::from_secs(src.number("--idle-timeout", (1, 3600))?);
        let shutdown_grace = Duration::from_secs(src.number("--shutdown-grace", (0, 600))?);
        let socket = match src.value("--socket")? {
            (s, _) if s.is_empty() || s == "none" => None,
            (s, from) if !s.starts_with('/') => {
                return Err(ConfigError(format!(
                    "{from}: {s:?} is not an absolute path (e.g. {DEFAULT_SOCKET}); '' or \
                     none turns the socket off"
                )))
            }
            (s, _) => Some(PathBuf::from(s)),
        };
        let socket_uid = src.number::<u32>("--socket-uid", (0, u32::MAX - 1))?;
        // Every flag is read: a typo is reported before the disk is looked at.
        src.rest("serve", 0)?;
        let kube = match kubeconfig {
            Some(p) => KubeSource::Kubeconfig(p),
            None => kube_default()?,
        };
        Ok(Config {
            api_port,
            bind_address,
            tls_cert,
            tls_key,
            data_dir,
            namespace,
            kube,
            kube_timeout,
            password_hash_file,
            signing_key_file,
            node_name,
            k0s_config,
            join,
            login_failures,
            max_connections,
            max_connections_per_address,
            min_transfer_rate,
            max_waiters,
            idle_timeout,
            shutdown_grace,
            socket,
            socket_uid,
        })
    }
}

/// What the `joinery token` commands need: the same Kubernetes flags as `serve`
/// (`--kubeconfig`, `--namespace`, `--kube-timeout` and their variables).
#[derive(Debug, Clone)]
pub struct KubeAccess {
    pub kube: KubeSource,
    pub namespace: String,
    pub kube_timeout: Duration,
}

impl KubeAccess {
    /// Reads the Kubernetes flags of `cmd`, then the `positional` words it takes
    /// (returned), and only then looks for the default Kubernetes source.
    pub fn from_sources(
        src: &mut Sources<'_>,
        cmd: &str,
        positional: usize,
        kube_default: impl FnOnce() -> Result<KubeSource, ConfigError>,
    ) -> Result<(KubeAccess, Vec<String>), ConfigError> {
        let namespace = namespace(src)?;
        let kubeconfig = src.path("--kubeconfig")?;
        let kube_timeout = Duration::from_secs(src.number("--kube-timeout", (1, 300))?);
        let words = src.rest(cmd, positional)?;
        let kube = match kubeconfig {
            Some(p) => KubeSource::Kubeconfig(p),
            None => kube_default()?,
        };
        Ok((
            KubeAccess {
                kube,
                namespace,
                kube_timeout,
            },
            words,
        ))
    }
}

/// `--namespace`, checked the way Kubernetes checks a namespace name.
fn namespace(src: &mut Sources<'_>) -> Result<String, ConfigError> {
    let (ns, from) = src.value("--namespace")?;
    if !is_dns_label(&ns) {
        return Err(ConfigError(format!(
            "{from}: {ns:?} is not a valid namespace name (lowercase letters, digits and \
             '-', at most 63 characters)"
        )));
    }
    Ok(ns)
}

/// The default Kubernetes source: the pod's service account when running in a pod, else
/// k0s's admin kubeconfig when it exists on this host.
pub fn default_kube_source(
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&str) -> bool,
) -> Result<KubeSource, ConfigError> {
    const K0S_ADMIN: &str = "/var/lib/k0s/pki/admin.conf";
    if env("KUBERNETES_SERVICE_HOST").is_some() {
        Ok(KubeSource::InCluster)
    } else if exists(K0S_ADMIN) {
        Ok(KubeSource::Kubeconfig(PathBuf::from(K0S_ADMIN)))
    } else {
        Err(ConfigError(format!(
            "no Kubernetes API found: not running in a pod (KUBERNETES_SERVICE_HOST is unset) \
             and {K0S_ADMIN} does not exist; pass --kubeconfig FILE"
        )))
    }
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        let args = pico_args::Arguments::from_vec(args.iter().map(OsString::from).collect());
        let mut src = Sources { args, env: &lookup };
        let cfg = Config::from_sources(&mut src, || Ok(KubeSource::InCluster))?;
        src.finish()?;
        Ok(cfg)
    }

    #[test]
    fn defaults() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.api_port, 30081);
        assert_eq!(c.bind_address, None);
        assert_eq!(c.namespace, "kotsadm");
        assert_eq!(c.max_connections, 512);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/joinery"));
        assert_eq!(c.kube, KubeSource::InCluster);
        assert_eq!(c.socket, Some(PathBuf::from("/run/joinery/joinery.sock")));
        assert_eq!(c.socket_uid, 0);
    }

    /// Each default is written once, in [`FLAGS`] (what `--help` and the docs show), and
    /// the configuration gets exactly that value.
    #[test]
    fn every_default_value_is_what_the_config_gets() {
        let c = parse(&[], &[]).unwrap();
        let secs = |d: Duration| d.as_secs().to_string();
        let got = [
            ("--api-port", c.api_port.to_string()),
            ("--data-dir", c.data_dir.display().to_string()),
            ("--namespace", c.namespace.clone()),
            ("--kube-timeout", secs(c.kube_timeout)),
            ("--login-failures", c.login_failures.to_string()),
            ("--max-connections", c.max_connections.to_string()),
            (
                "--max-connections-per-address",
                c.max_connections_per_address.to_string(),
            ),
            ("--min-transfer-rate", c.min_transfer_rate.to_string()),
            ("--max-waiters", c.max_waiters.to_string()),
            ("--idle-timeout", secs(c.idle_timeout)),
            ("--shutdown-grace", secs(c.shutdown_grace)),
            (
                "--socket",
                c.socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("--socket-uid", c.socket_uid.to_string()),
            ("--k0s-config", c.k0s_config.display().to_string()),
        ];
        let mut checked = 0;
        for f in FLAGS {
            if let FlagDefault::Value(v) = f.default {
                let (_, value) = got
                    .iter()
                    .find(|(name, _)| *name == f.name)
                    .unwrap_or_else(|| panic!("{}: add its config value to this test", f.name));
                assert_eq!(
                    value, v,
                    "{}: the config got another value than the default",
                    f.name
                );
                checked += 1;
            }
        }
        assert_eq!(checked, got.len(), "a flag here has no FlagDefault::Value");
        // And the token commands read the same defaults.
        let args = pico_args::Arguments::from_vec(Vec::new());
        let mut src = Sources {
            args,
            env: &|_| None,
        };
        let (k, _) =
            KubeAccess::from_sources(&mut src, "token", 0, || Ok(KubeSource::InCluster)).unwrap();
        assert_eq!((k.namespace, k.kube_timeout), (c.namespace, c.kube_timeout));
    }

    #[test]
    fn socket_can_be_moved_or_turned_off() {
        let c = parse(&["--socket", "/tmp/j.sock", "--socket-uid", "1000"], &[]).unwrap();
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/j.sock")));
        assert_eq!(c.socket_uid, 1000);
        assert_eq!(parse(&["--socket", ""], &[]).unwrap().socket, None);
        assert_eq!(
            parse(&[], &[("JOINERY_SOCKET", "none")]).unwrap().socket,
            None
        );
        let err = parse(&["--socket", "rel.sock"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--socket"), "{err}");
    }

    #[test]
    fn flag_beats_env_beats_default() {
        let c = parse(&["--api-port", "9443"], &[("JOINERY_API_PORT", "8443")]).unwrap();
        assert_eq!(c.api_port, 9443);
        let c = parse(&[], &[("JOINERY_API_PORT", "8443")]).unwrap();
        assert_eq!(c.api_port, 8443);
        let c = parse(&["--kubeconfig=/tmp/k"], &[]).unwrap();
        assert_eq!(c.kube, KubeSource::Kubeconfig("/tmp/k".into()));
    }

    #[test]
    fn mistakes_name_the_flag_or_variable() {
        for (args, env, needle) in [
            (vec!["--api-port", "70000"], vec![], "--api-port"),
            (vec![], vec![("JOINERY_API_PORT", "x")], "JOINERY_API_PORT"),
            (vec!["--bind-address", "nope"], vec![], "--bind-address"),
            (vec!["--tls-cert", "/c"], vec![], "--tls-key"),
            (vec!["--namespace", "Bad_NS"], vec![], "--namespace"),
            (vec!["--max-connections", "0"], vec![], "--max-connections"),
            (vec!["--api-prot", "1"], vec![], "did you mean --api-port?"),
            (
                vec!["--api-port", "1", "--api-port=2"],
                vec![],
                "given twice",
            ),
            (
                vec![],
                vec![("JOINERY_IDLE_TIMEOUT", "x")],
                "JOINERY_IDLE_TIMEOUT",
            ),
            (vec!["stray"], vec![], "unexpected argument \"stray\""),
            (vec!["--license", "/l"], vec![], "--artifacts-dir"),
        ] {
            let err = parse(&args, &env).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn kube_default_prefers_pod_then_k0s() {
        let none = |_: &str| None;
        let pod = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_string());
        assert_eq!(
            default_kube_source(&pod, &|_| true).unwrap(),
            KubeSource::InCluster
        );
        assert_eq!(
            default_kube_source(&none, &|_| true).unwrap(),
            KubeSource::Kubeconfig("/var/lib/k0s/pki/admin.conf".into())
        );
        let err = default_kube_source(&none, &|_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--kubeconfig"), "{err}");
    }
}

#[cfg(test)]
mod docs {
    /// docs/configuration.md's table lists exactly the flags `serve` takes.
    #[test]
    fn configuration_doc_documents_every_flag() {
        let doc = include_str!("../docs/configuration.md");
        for f in super::FLAGS {
            let row = format!(
                "| `{}` | `{}` | {} | {} |",
                f.name, f.env, f.default, f.help
            );
            assert!(
                doc.contains(&row),
                "docs/configuration.md lacks or misstates:\n{row}"
            );
        }
        let rows = doc.lines().filter(|l| l.starts_with("| `--")).count();
        assert_eq!(
            rows,
            super::FLAGS.len(),
            "docs/configuration.md documents flags serve lacks"
        );
    }
}
