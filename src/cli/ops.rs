//! The operator commands (`health`, `nodes`, `node`, `join-command`, `joins`, `drain`,
//! `resume`, `remove`, `pin`): the API from a shell, through the local socket by default or
//! `--api URL` from anywhere.
//!
//! Output: tables like kubectl's by default, `-o json` prints exactly the API's JSON.
//! Exit codes are [`Exit`]: the API's answer decides between "not found" (404),
//! "refused" (401, 403, 409, 429), a usage error (400, 422: the request was wrong) and a
//! run-time failure (5xx); no answer at all is "unreachable". Credentials come from
//! files or stdin, never from the command line, where every user of the host could
//! read them.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{self, Answer, Client, Target, Trust};
use super::{output_format, table, value_once, Exit};
use crate::config;

/// The flags every API command takes, for its help.
const CONNECTION_HELP: &str = "\
Connection (the local socket unless --api is given; a flag beats a variable,
JOINERY_API beats JOINERY_SOCKET, --pin beats --cacert, a token file beats a
password file):
  --socket PATH       (JOINERY_SOCKET) the daemon's local socket; default
                      /run/joinery/joinery.sock; needs the --socket-uid user
  --api URL           (JOINERY_API) https://HOST:PORT of a joinery, instead
  --pin PIN           (JOINERY_PIN) its certificate's pin, sha256//... (from
                      `joinery pin` on the controller)
  --cacert FILE       (JOINERY_CACERT) or: PEM CA that signed its certificate
  --token-file FILE   (JOINERY_TOKEN_FILE) a file holding an API token (jnr_...)
                      or session token; - reads stdin
  --password-file F   (JOINERY_PASSWORD_FILE) or: a file holding the installer
                      password, to log in with; - reads stdin

Exit codes: 0 done; 1 failed at run time; 2 usage error or a request the API
called invalid; 3 not found; 4 refused (credentials, scope, or the cluster's
state); 5 the API could not be reached.
";

/// Each command: name, usage lines, what it does.
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "health",
        "joinery health [-o table|json]",
        "The cluster's health: etcd quorum and failure tolerance, the leader, every\n\
         node's readiness and drain state. -o json prints the API's JSON.\n",
    ),
    (
        "nodes",
        "joinery nodes [-o table|json|wide]",
        "Every node: name, readiness, roles and InternalIP (wide adds the labels).\n\
         -o json prints the API's JSON.\n",
    ),
    (
        "node",
        "joinery node NAME [-o table|json]",
        "One node in detail: addresses, conditions, taints, drain state and, for a\n\
         controller, its etcd membership. -o json prints the API's JSON.\n",
    ),
    (
        "join-command",
        "joinery join-command --roles ROLE[,ROLE...] [-o sh|json]",
        "The steps that join a new host with these roles (role names of the Embedded\n\
         Cluster config), as a shell script to run on it (sh, the default) or as the\n\
         API's JSON. The steps hold a single-use join token valid for an hour.\n",
    ),
    (
        "drain",
        "joinery drain NODE [--deadline SECONDS] [--wait]",
        "Cordons the node and evicts its pods, respecting disruption budgets.\n\
         \x20 --deadline S  give up on the pods left after S seconds (1 to 3600;\n\
         \x20               without it the API drains now and waits up to 60 s)\n\
         \x20 --wait        print a line per change of the drain until it ends;\n\
         \x20               exit 0 once drained, 1 if resumed meanwhile\n",
    ),
    (
        "joins",
        "joinery joins [-o table|json]",
        "The ledger of join commands from every controller, newest first: state\n\
         (issued, downloading, downloaded, expired, revoked, joined), roles, the node\n\
         that joined. -o json prints the API's JSON.\n",
    ),
    (
        "resume",
        "joinery resume NODE",
        "Makes a drained (or draining) node schedulable again.\n",
    ),
    (
        "remove",
        "joinery remove NODE [--force]",
        "Removes a drained node from the cluster (a controller leaves etcd first).\n\
         \x20 --force  remove it even though it is not drained (never past etcd quorum)\n",
    ),
];

/// The help of an operator command, or `None` when `cmd` is not one.
pub fn help(cmd: &str) -> Option<String> {
    if cmd == "pin" {
        return Some(PIN_USAGE.to_string());
    }
    let (_, usage, what) = COMMANDS.iter().find(|(c, _, _)| *c == cmd)?;
    Some(format!("Usage: {usage}\n\n{what}\n{CONNECTION_HELP}"))
}

/// The names of the operator commands (for `joinery help` and "did you mean").
pub fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(c, _, _)| *c).chain(["pin"])
}

/// A failure before or after the request, and how the command ends.
struct Stop(Exit, String);

impl From<String> for Stop {
    fn from(m: String) -> Stop {
        Stop(Exit::Usage, m)
    }
}

/// Runs operator command `cmd` with its arguments.
pub fn run(cmd: &str, args: Vec<OsString>) -> Exit {
    let result = if cmd == "pin" {
        pin(args)
    } else {
        api_command(cmd, args)
    };
    match result {
        Ok(exit) => exit,
        Err(Stop(exit, message)) => {
            eprintln!("joinery {cmd}: {message}");
            exit
        }
    }
}

/// The value of `flag`, else its variable `env` (named in errors as the origin).
fn flag_or_env(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    env: &'static str,
) -> Result<Option<(String, &'static str)>, String> {
    if let Some(v) = value_once(args, flag)? {
        return Ok(Some((v, flag)));
    }
    Ok(std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| (v, env)))
}

/// Everything the connection flags say, checked, before any file is read.
struct Connection {
    socket: PathBuf,
    api: Option<(String, u16)>,
    trust: Option<(Trust, &'static str)>,
    token_file: Option<(String, &'static str)>,
    password_file: Option<(String, &'static str)>,
}

/// Which target the flags and variables choose, most specific first: `--api`, then
/// `--socket`, then `JOINERY_API`, then `JOINERY_SOCKET`, then the default socket. So
/// one env file can name both (as the demo's does) and a flag still picks the other.
/// Credentials and trust set for the socket are refused when given as flags (a mistake
/// to point out) and ignored when they come from variables.
fn connection_flags(args: &mut pico_args::Arguments) -> Result<Connection, String> {
    let socket_flag = value_once(args, "--socket")?;
    let api_flag = value_once(args, "--api")?;
    let pin = flag_or_env(args, "--pin", "JOINERY_PIN")?;
    let cacert = flag_or_env(args, "--cacert", "JOINERY_CACERT")?;
    let token_file = flag_or_env(args, "--token-file", "JOINERY_TOKEN_FILE")?;
    let password_file = flag_or_env(args, "--password-file", "JOINERY_PASSWORD_FILE")?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (api, socket) = match (api_flag, socket_flag) {
        (Some(_), Some(_)) => return Err("give --api or --socket, not both".into()),
        (Some(url), None) => (Some((url, "--api")), None),
        (None, Some(s)) => (None, Some((s, "--socket"))),
        (None, None) => match (env("JOINERY_API"), env("JOINERY_SOCKET")) {
            (Some(url), _) => (Some((url, "JOINERY_API")), None),
            (None, s) => (None, s.map(|s| (s, "JOINERY_SOCKET"))),
        },
    };
    let socket = match socket {
        None => PathBuf::from(config::DEFAULT_SOCKET),
        Some((s, from)) if !s.starts_with('/') => {
            return Err(format!("{from}: {s:?} is not an absolute path"))
        }
        Some((s, _)) => PathBuf::from(s),
    };
    let Some((url, from)) = api else {
        let flagged = [&pin, &cacert, &token_file, &password_file]
            .into_iter()
            .flatten()
            .find(|(_, from)| from.starts_with("--"));
        if let Some((_, from)) = flagged {
            return Err(format!(
                "{from} is for --api URL; the local socket needs no credentials"
            ));
        }
        return Ok(Connection {
            socket,
            api: None,
            trust: None,
            token_file: None,
            password_file: None,
        });
    };
    let api = Some(parse_api_url(&url).map_err(|e| format!("{from}: {e}"))?);
    // A pin is the stronger check; with both, the pin is used.
    let trust = match (pin, cacert) {
        (Some((p, from)), _) => {
            if !p.starts_with("sha256//") || p.len() != 52 {
                return Err(format!(
                    "{from}: {p:?} is not a pin: it looks like sha256//BASE64 (44 \
                     characters after //), as `joinery pin` prints it"
                ));
            }
            (Trust::Pin(p), from)
        }
        (None, Some((f, from))) => {
            let pem = std::fs::read(&f).map_err(|e| format!("{from} {f}: {e}"))?;
            (Trust::CaCert(pem), from)
        }
        (None, None) => {
            return Err(
                "--api needs --pin PIN (from `joinery pin` on the controller) or \
                        --cacert FILE"
                    .into(),
            )
        }
    };
    // A token file is used before a password file (it needs no login).
    let password_file = if token_file.is_some() {
        None
    } else {
        password_file
    };
    if token_file.is_none() && password_file.is_none() {
        return Err("--api needs --token-file FILE or --password-file FILE".into());
    }
    Ok(Connection {
        socket,
        api,
        trust: Some(trust),
        token_file,
        password_file,
    })
}

/// `https://HOST[:PORT][/]` into host and port (30081 when absent).
fn parse_api_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https:// URL (e.g. https://10.0.0.11:30081)"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{url:?}: give only https://HOST:PORT (e.g. https://10.0.0.11:30081)"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: {p:?} is not a port number"))?,
        ),
        _ => (authority, 30081),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host.to_string(), port))
}

/// A secret from a file (or stdin for `-`): one line, at most 4 KiB.
fn read_secret(path: &str, from: &str) -> Result<String, Stop> {
    let mut raw = Vec::new();
    let read = if path == "-" {
        std::io::stdin().take(4096).read_to_end(&mut raw)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut raw))
    };
    read.map_err(|e| Stop(Exit::Usage, format!("{from} {path}: {e}")))?;
    let text = String::from_utf8(raw)
        .map_err(|_| Stop(Exit::Usage, format!("{from} {path}: not UTF-8 text")))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(Stop(
            Exit::Usage,
            format!("{from} {path}: the file is empty"),
        ));
    }
    Ok(secret)
}

/// The client for these connection flags, logged in when `--api` needs it.
fn connect(c: Connection) -> Result<Client, Stop> {
    let timeout = Duration::from_secs(90);
    let Some((host, port)) = c.api else {
        return Ok(Client {
            target: Target::Socket(c.socket),
            timeout,
        });
    };
    let (trust, _) = c.trust.expect("checked with the flags");
    let tls = client::tls_config(trust).map_err(|e| Stop(Exit::Usage, e))?;
    let mut client = Client {
        target: Target::Api {
            host,
            port,
            tls,
            authorization: None,
        },
        timeout,
    };
    let bearer = match (c.token_file, c.password_file) {
        (Some((path, from)), _) => read_secret(&path, from)?,
        (None, Some((path, from))) => {
            let password = read_secret(&path, from)?;
            let answer = call(
                &client,
                "POST",
                "/v1/auth/token",
                Some(&json!({ "password": password })),
            )?;
            answer
                .json()
                .and_then(|v| v["token"].as_str().map(str::to_string))
                .ok_or_else(|| Stop(Exit::Failed, "the login answer had no token".into()))?
        }
        (None, None) => unreachable!("checked with the flags"),
    };
    if let Target::Api { authorization, .. } = &mut client.target {
        *authorization = Some(format!("Bearer {bearer}"));
    }
    Ok(client)
}

/// Sends a request; a non-2xx answer becomes the exit code its status means, with the
/// server's own message.
fn call(client: &Client, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, Stop> {
    let answer = client
        .request(method, path, body)
        .map_err(|e| Stop(Exit::Unreachable, e.0))?;
    check(answer)
}

/// A 2xx answer, or the exit code and message a refusal means.
fn check(answer: Answer) -> Result<Answer, Stop> {
    if (200..300).contains(&answer.status) {
        return Ok(answer);
    }
    let (code, message) = match answer.json() {
        Some(v) => (
            v["error"].as_str().unwrap_or("").to_string(),
            v["message"].as_str().unwrap_or("").to_string(),
        ),
        None => (
            String::new(),
            String::from_utf8_lossy(&answer.body).into_owned(),
        ),
    };
    let exit = match answer.status {
        400 | 413 | 415 | 422 => Exit::Usage,
        401 | 403 | 409 | 410 | 429 => Exit::Refused,
        404 => Exit::NotFound,
        _ => Exit::Failed,
    };
    Err(Stop(
        exit,
        format!("{message} (HTTP {} {code})", answer.status)
            .replace(" )", ")")
            .trim()
            .to_string(),
    ))
}

/// A node name as a path segment: the API checks it too; this keeps the path intact.
fn node_path(name: &str, suffix: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        return Err(format!(
            "{name:?} is not a node name (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(format!("/v1/nodes/{name}{suffix}"))
}

fn api_command(cmd: &str, args: Vec<OsString>) -> Result<Exit, Stop> {
    let mut args = pico_args::Arguments::from_vec(args);
    let conn = connection_flags(&mut args)?;
    // Each command's own flags, then its words; nothing is sent before all are checked.
    let mut format = "table";
    let mut roles: Vec<String> = Vec::new();
    let mut deadline: Option<u64> = None;
    let (mut wait, mut force) = (false, false);
    let positional = match cmd {
        "health" | "joins" => {
            format = output_format(&mut args, &["table", "json"])?;
            0
        }
        "nodes" => {
            format = output_format(&mut args, &["table", "json", "wide"])?;
            0
        }
        "node" => {
            format = output_format(&mut args, &["table", "json"])?;
            1
        }
        "join-command" => {
            format = output_format(&mut args, &["sh", "json"])?;
            let raw = value_once(&mut args, "--roles")?.ok_or_else(|| {
                "--roles ROLE[,ROLE...] is required (e.g. --roles controller)".to_string()
            })?;
            roles = raw
                .split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() {
                return Err(Stop::from(format!("--roles: {raw:?} names no role")));
            }
            0
        }
        "drain" => {
            if let Some(raw) = value_once(&mut args, "--deadline")? {
                deadline = Some(
                    raw.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|d| (1..=3600).contains(d))
                        .ok_or_else(|| {
                            format!("--deadline: {raw:?} is not a number of seconds from 1 to 3600")
                        })?,
                );
            }
            wait = once_switch(&mut args, "--wait")?;
            1
        }
        "resume" => 1,
        "remove" => {
            force = once_switch(&mut args, "--force")?;
            1
        }
        _ => unreachable!("only operator commands come here"),
    };
    let known = [
        "--socket",
        "--api",
        "--pin",
        "--cacert",
        "--token-file",
        "--password-file",
        "-o",
        "--output",
        "--roles",
        "--deadline",
        "--wait",
        "--force",
    ];
    let words =
        config::leftovers(args, cmd, known.into_iter(), positional).map_err(|e| e.to_string())?;
    if words.len() < positional {
        return Err(Stop::from(format!(
            "give the node's name (`joinery nodes` lists them): {}",
            COMMANDS.iter().find(|c| c.0 == cmd).map_or("", |c| c.1)
        )));
    }
    let name = words.first().cloned().unwrap_or_default();
    let client = connect(conn)?;
    match cmd {
        "health" => health(&client, format),
        "nodes" => nodes(&client, format),
        "node" => node(&client, &node_path(&name, "")?, format),
        "join-command" => join_command(&client, &roles, format),
        "joins" => joins(&client, format),
        "drain" => drain(&client, &name, deadline, wait),
        "resume" => {
            call(&client, "POST", &node_path(&name, "/resume")?, None)?;
            println!("{name}: resumed (schedulable again)");
            Ok(Exit::Ok)
        }
        _ => {
            let path = node_path(&name, if force { "?force=true" } else { "" })?;
            let answer = call(&client, "DELETE", &path, None)?;
            let v = answer.json().unwrap_or_default();
            for step in v["steps"].as_array().into_iter().flatten() {
                println!(
                    "{name}: {}: {}",
                    step["step"].as_str().unwrap_or(""),
                    step["result"].as_str().unwrap_or("")
                );
            }
            println!("{name}: removed");
            Ok(Exit::Ok)
        }
    }
}

/// A switch (no value), refused when given twice.
fn once_switch(args: &mut pico_args::Arguments, flag: &'static str) -> Result<bool, String> {
    let on = args.contains(flag);
    if on && args.contains(flag) {
        return Err(format!("{flag} is given twice; give it once"));
    }
    Ok(on)
}

fn print_json(answer: &Answer) -> Result<Exit, Stop> {
    let v: Value = answer
        .json()
        .ok_or_else(|| Stop(Exit::Failed, "the answer was not JSON".into()))?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(Exit::Ok)
}

fn strs(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "<none>".into()
    } else {
        list.join(",")
    }
}

fn ready(v: &Value) -> &'static str {
    if v["ready"].as_bool() == Some(true) {
        "Ready"
    } else {
        "NotReady"
    }
}

fn health(client: &Client, format: &str) -> Result<Exit, Stop> {
    let answer = call(client, "GET", "/v1/cluster/health", None)?;
    if format == "json" {
        return print_json(&answer);
    }
    let v = answer.json().unwrap_or_default();
    println!(
        "healthy: {}\ncontrollers: {} ready of {} (quorum {}, failure tolerance {})\nleader: {}\n",
        v["healthy"],
        v["readyControllers"],
        v["controllers"].as_array().map_or(0, Vec::len),
        v["quorum"],
        v["failureTolerance"],
        v["leader"].as_str().unwrap_or("<unknown>"),
    );
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                n["name"].as_str().unwrap_or("").to_string(),
                ready(n).to_string(),
                strs(&n["roles"]),
                n["drainState"].as_str().unwrap_or("").to_string(),
                n["stableSince"].as_str().unwrap_or("<unknown>").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NAME", "STATUS", "ROLES", "DRAIN", "STABLE SINCE"], &rows)
    );
    Ok(Exit::Ok)
}

fn nodes(client: &Client, format: &str) -> Result<Exit, Stop> {
    let answer = call(client, "GET", "/v1/nodes", None)?;
    if format == "json" {
        return print_json(&answer);
    }
    let v = answer.json().unwrap_or_default();
    let wide = format == "wide";
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let mut row = vec![
                n["name"].as_str().unwrap_or("").to_string(),
                ready(n).to_string(),
                strs(&n["roles"]),
                n["internalIP"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("<none>")
                    .to_string(),
            ];
            if wide {
                let labels: Vec<String> = n["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                row.push(labels.join(","));
            }
            row
        })
        .collect();
    let mut headers = vec!["NAME", "STATUS", "ROLES", "INTERNAL-IP"];
    if wide {
        headers.push("LABELS");
    }
    print!("{}", table(&headers, &rows));
    Ok(Exit::Ok)
}

fn node(client: &Client, path: &str, format: &str) -> Result<Exit, Stop> {
    let answer = call(client, "GET", path, None)?;
    if format == "json" {
        return print_json(&answer);
    }
    let n = answer.json().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or("<none>").to_string();
    let mut out = String::new();
    out += &format!("Name:           {}\n", s(&n["name"]));
    out += &format!("Status:         {}\n", ready(&n));
    out += &format!("Roles:          {}\n", strs(&n["roles"]));
    out += &format!("InternalIP:     {}\n", s(&n["internalIP"]));
    let addresses: Vec<String> = n["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}={}", s(&a["type"]), s(&a["address"])))
        .collect();
    out += &format!("Addresses:      {}\n", addresses.join(", "));
    out += &format!(
        "Schedulable:    {}\n",
        if n["unschedulable"].as_bool() == Some(true) {
            "no (cordoned)"
        } else {
            "yes"
        }
    );
    out += &format!("Drain:          {}\n", s(&n["drainState"]));
    for (k, label) in [
        ("drainStarted", "Drain started:  "),
        ("drainDeadline", "Drain deadline: "),
    ] {
        if let Some(t) = n[k].as_str() {
            out += &format!("{label}{t}\n");
        }
    }
    if let Some(left) = n["drainRemaining"].as_array().filter(|a| !a.is_empty()) {
        out += &format!("Pods left:      {}\n", strs(&Value::Array(left.clone())));
    }
    let info = &n["nodeInfo"];
    out += &format!(
        "System:         {} {}, kernel {}, kubelet {}, {}\n",
        s(&info["operatingSystem"]),
        s(&info["architecture"]),
        s(&info["kernelVersion"]),
        s(&info["kubeletVersion"]),
        s(&info["containerRuntimeVersion"]),
    );
    out += &format!(
        "Capacity:       cpu {}, memory {}\n",
        s(&n["capacity"]["cpu"]),
        s(&n["capacity"]["memory"])
    );
    if let Some(etcd) = n.get("etcd") {
        out += &match etcd {
            Value::Null => "Etcd:           no EtcdMember (or it cannot be read)\n".to_string(),
            e => format!(
                "Etcd:           member {}, peer {}, joined {}, leave requested {}\n",
                s(&e["memberId"]),
                s(&e["peerAddress"]),
                e["joined"],
                e["leaveRequested"]
            ),
        };
    }
    out += "Labels:\n";
    for (k, v) in n["labels"].as_object().into_iter().flatten() {
        out += &format!("  {k}={}\n", v.as_str().unwrap_or(""));
    }
    out += "Taints:\n";
    for t in n["taints"].as_array().into_iter().flatten() {
        out += &format!(
            "  {}={}:{}\n",
            s(&t["key"]),
            t["value"].as_str().unwrap_or(""),
            s(&t["effect"])
        );
    }
    out += "Conditions:\n";
    let rows: Vec<Vec<String>> = n["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["type"]),
                s(&c["status"]),
                s(&c["reason"]),
                s(&c["lastTransitionTime"]),
            ]
        })
        .collect();
    for line in table(&["TYPE", "STATUS", "REASON", "SINCE"], &rows).lines() {
        out += &format!("  {line}\n");
    }
    print!("{out}");
    Ok(Exit::Ok)
}

fn join_command(client: &Client, roles: &[String], format: &str) -> Result<Exit, Stop> {
    let answer = call(
        client,
        "POST",
        "/v1/create-join-command",
        Some(&json!({ "roles": roles })),
    )?;
    if format == "json" {
        return print_json(&answer);
    }
    let v = answer.json().unwrap_or_default();
    let mut out = format!(
        "#!/bin/sh\n# Joins this host with roles {}. Run it as root on the new host, within\n\
         # the hour; it works once.\nset -eu\n",
        roles.join(",")
    );
    for step in v["joinSteps"].as_array().into_iter().flatten() {
        let what = step["description"].as_str().unwrap_or("");
        out += &format!(
            "\n# {}\n{}\n",
            what.replace('\n', "\n# "),
            step["command"].as_str().unwrap_or("")
        );
    }
    print!("{out}");
    Ok(Exit::Ok)
}

/// `joinery drain`: starts the drain, then with `--wait` prints a line each time the
/// node's drain state changes until it ends.
///
/// The wait is the API's own (`GET /v1/nodes/{name}?waitFor=drained`, answered from
/// the daemon's watch-fed view at no cost to Kubernetes) in 10-second slices, so a
/// resume is noticed within 10 s and each slice can say where the drain is.
fn drain(client: &Client, name: &str, deadline: Option<u64>, wait: bool) -> Result<Exit, Stop> {
    let body = json!({ "deadlineSeconds": deadline.unwrap_or(0) });
    let answer = call(client, "POST", &node_path(name, "/drain")?, Some(&body))?;
    let state = answer
        .json()
        .and_then(|v| v["drainState"].as_str().map(str::to_string))
        .unwrap_or_default();
    println!("{name}: {state}");
    if !wait || state != "draining" {
        return Ok(if state == "drained" || !wait {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    let give_up = Instant::now() + Duration::from_secs(deadline.unwrap_or(3600) + 120);
    let wait_path = node_path(name, "?waitFor=drained&timeoutSeconds=10")?;
    let mut last = format!("{name}: draining");
    loop {
        let answer = client
            .request("GET", &wait_path, None)
            .map_err(|e| Stop(Exit::Unreachable, e.0))?;
        // 504 wait_timeout: not drained yet; look at where it is.
        let v = if answer.status == 504 {
            call(client, "GET", &node_path(name, "")?, None)?
        } else {
            check(answer)?
        }
        .json()
        .unwrap_or_default();
        let state = v["drainState"].as_str().unwrap_or("").to_string();
        let left = v["drainRemaining"].as_array().map_or(0, Vec::len);
        let line = match state.as_str() {
            "drained" if left > 0 => format!(
                "{name}: drained; the deadline passed with {left} pod(s) left: {}",
                strs(&v["drainRemaining"])
            ),
            "active" => format!("{name}: resumed before the drain ended"),
            s => format!("{name}: {s}"),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        match state.as_str() {
            "drained" => return Ok(Exit::Ok),
            "active" => return Ok(Exit::Failed),
            _ if Instant::now() > give_up => {
                return Err(Stop(Exit::Failed, "still draining; gave up waiting".into()))
            }
            _ => {}
        }
    }
}

/// `joinery joins`: the ledger of join commands from every controller.
fn joins(client: &Client, format: &str) -> Result<Exit, Stop> {
    let answer = call(client, "GET", "/v1/joins", None)?;
    if format == "json" {
        return print_json(&answer);
    }
    let v = answer.json().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or("<none>").to_string();
    let rows: Vec<Vec<String>> = v["joins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            vec![
                s(&j["id"]),
                s(&j["state"]),
                strs(&j["roles"]),
                s(&j["node"]),
                s(&j["requestedBy"]),
                s(&j["created"]),
                s(&j["expires"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "STATE",
                "ROLES",
                "NODE",
                "REQUESTED BY",
                "CREATED",
                "EXPIRES"
            ],
            &rows
        )
    );
    Ok(Exit::Ok)
}

const PIN_USAGE: &str = "\
Usage: joinery pin [--data-dir DIR | --tls-cert FILE]

Prints the pin (sha256// and the SHA-256 of the public key, in base64) of the
certificate joinery serves, read from the file, so no daemon or network is
needed. Give it to clients: `--pin` of the joinery commands, `curl
--pinnedpubkey`.

  --data-dir DIR    (JOINERY_DATA_DIR) where the generated certificate is;
                    default /var/lib/joinery
  --tls-cert FILE   (JOINERY_TLS_CERT) the certificate given to serve instead

Exit codes: 0 done; 2 usage error or no readable certificate.
";

fn pin(args: Vec<OsString>) -> Result<Exit, Stop> {
    let mut args = pico_args::Arguments::from_vec(args);
    let dir = flag_or_env(&mut args, "--data-dir", "JOINERY_DATA_DIR")?;
    let cert = flag_or_env(&mut args, "--tls-cert", "JOINERY_TLS_CERT")?;
    config::leftovers(args, "pin", ["--data-dir", "--tls-cert"].into_iter(), 0)
        .map_err(|e| e.to_string())?;
    let (path, from) = match (cert, dir) {
        (Some((c, from)), _) => (PathBuf::from(c), from),
        (None, Some((d, from))) => (crate::http::tls::pair_paths(d.as_ref()).0, from),
        (None, None) => (
            crate::http::tls::pair_paths("/var/lib/joinery".as_ref()).0,
            "--data-dir",
        ),
    };
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(&path).map_err(|e| format!("{from}: {}: {e}", path.display()))?;
    let first = CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| format!("{from}: {} holds no PEM certificate", path.display()))?;
    let pin = crate::http::tls::spki_pin(&first).map_err(|e| format!("{from}: {e}"))?;
    println!("{pin}");
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/cli.md names every operator command, connection flag and variable.
    #[test]
    fn docs_cover_every_command_and_flag() {
        let docs = include_str!("../../docs/cli.md");
        for name in names() {
            assert!(
                docs.contains(&format!("`joinery {name}")),
                "docs/cli.md lacks {name}"
            );
        }
        for word in CONNECTION_HELP.split_whitespace() {
            let word = word.trim_matches(|c: char| "(),".contains(c));
            if word.starts_with("--") || word.starts_with("JOINERY_") {
                assert!(
                    docs.contains(&format!("`{word}")),
                    "docs/cli.md lacks {word}"
                );
            }
        }
    }

    #[test]
    fn api_urls() {
        for (url, want) in [
            ("https://10.0.0.11:30081", Ok(("10.0.0.11", 30081))),
            ("https://cp-1", Ok(("cp-1", 30081))),
            ("https://[::1]:9443/", Ok(("::1", 9443))),
            ("http://cp-1", Err("https://")),
            ("https://cp-1:0", Err("port")),
            ("https://cp-1/v1", Err("only")),
            ("https://u@cp-1", Err("only")),
            ("https://", Err("only")),
        ] {
            match (parse_api_url(url), want) {
                (Ok((h, p)), Ok((wh, wp))) => assert_eq!((h.as_str(), p), (wh, wp), "{url}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{url}: {e}"),
                (got, _) => panic!("{url}: {got:?}"),
            }
        }
    }
}
