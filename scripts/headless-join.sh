#!/bin/sh
# headless-join.sh: join a node to an Embedded Cluster through joinery's API, with only
# sh, curl and POSIX tools on the machine running it (jq is used when present).
#
# USAGE
#   headless-join.sh --api https://CONTROLLER:30081 (--pin sha256//... | --cacert FILE | --insecure)
#                    (--password-file FILE | --token-file FILE) --roles ROLE[,ROLE...]
#                    (--ssh [USER@]HOST | --print) [OPTIONS]
#
# It waits (bounded) until the cluster has a Ready controller, asks joinery for the join
# steps, then either runs them on the new host (--ssh: `ssh HOST sh -s`, the steps on
# stdin) and waits until the new node is Ready, or prints them as a shell script
# (--print) for another tool to run with `sh`. Progress goes to stderr. The wait for
# the new node is one long call (GET /v1/nodes/NAME?waitFor=ready), not polling.
#
# OPTIONS
#   --api URL            joinery on a controller, https://IP:30081
#   --pin PIN            the controller's key pin (joinery install prints it; the daemon
#                        logs it); checked on every call
#   --cacert FILE        trust the certificate in FILE instead of a pin
#   --insecure           check nothing (prints a warning; anyone on the path could read
#                        the password and the join token)
#   --password-file F    the installer password (first line of F)
#   --token-file F       a session token from POST /v1/auth/token (first line of F)
#   --roles a,b          the roles the new node joins with
#   --ssh [USER@]HOST    run the steps there; the user needs passwordless sudo
#   --ssh-command CMD    the ssh command (default: env JOINERY_SSH, else
#                        "ssh -o BatchMode=yes"); it is called as: CMD HOST sh -s
#   --remote-dir DIR     where the steps run on HOST (default: a new
#                        /var/tmp/joinery-join.XXXXXX)
#   --node-name NAME     the new node's Kubernetes name, or its InternalIP (default:
#                        HOST without USER@)
#   --print              print the steps (they hold a single-use token) and exit
#   --timeout SECONDS    bound on each wait (default 600)
#   --wait [SECONDS]     bound on the wait for the new node to be Ready (default: the
#                        --timeout); the node is waited for with --ssh in any case
#   --interval SECONDS   between polls (default 5)
#   -h, --help           this text
#   --flat               (alone; debugging) print JSON from stdin the way this
#                        script reads it: one "path<TAB>value" line per value
#
# The password and tokens never appear on a command line: curl reads them from files
# in a private temporary directory (mode 0700, removed on exit).
#
# EXIT CODES
#   0  done (--ssh: the node is Ready; --print: the steps are printed)
#   1  the API is unreachable, its TLS identity does not match, or it answered
#      something unexpected
#   2  usage: a missing or bad option
#   3  authentication failed (wrong password, bad or expired token)
#   4  no Ready controller within --timeout
#   5  the join command was refused (unknown roles, license, joins not configured)
#   6  a join step failed on the new host, or ssh did
#   7  the new node was not Ready within --timeout

# Single-quoted $... is jq's, awk's or the remote shell's on purpose (SC2016), and
# `set -- $(node_state)` splits words on purpose (SC2046; globbing is off).
# shellcheck disable=SC2016,SC2046
set -u
set -f
PROG=headless-join.sh

usage_text() { sed -n '2,/^$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { code=$1; shift; say "$*"; exit "$code"; }

# ---- JSON without jq -----------------------------------------------------------------
# flat: JSON on stdin -> one line per scalar, "path<TAB>value", path parts joined by "."
# (nodes.0.name), strings unquoted with their JSON escapes kept except \" (so a value is
# always one line). With jq when present (JOINERY_JQ names another, empty = never), else
# awk; both print the same.
JQ=${JOINERY_JQ-jq}
if [ -n "$JQ" ] && ! command -v "$JQ" >/dev/null 2>&1; then JQ=; fi
flat() {
    if [ -n "$JQ" ]; then
        "$JQ" -r '
          def esc: if type == "string" then tojson | .[1:-1] | gsub("\\\\\""; "\"")
                   else tostring end;
          paths(type != "object" and type != "array") as $p
          | ($p | map(esc) | join(".")) + "\t" + (getpath($p) | esc)'
    else
        LC_ALL=C awk '
        function fail(m) { print "headless-join.sh: bad JSON: " m > "/dev/stderr"; bad = 1; exit 1 }
        function ws(   c) { while (i <= n) { c = substr(s, i, 1); if (c == " " || c == "\t" || c == "\n" || c == "\r") i++; else break } }
        function hex(h,   v, k, c) { v = 0; for (k = 1; k <= 4; k++) { c = index("0123456789abcdef", tolower(substr(h, k, 1))); if (c == 0) fail("bad \\u escape"); v = v * 16 + c - 1 } return v }
        function utf8(cp) {
            if (cp < 128) return sprintf("%c", cp)
            if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
            if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
            return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
        }
        # A string at s[i] (the opening quote), in the output form described above.
        function str(   out, c, e, cp, lo) {
            i++; out = ""
            for (;;) {
                if (i > n) fail("unterminated string")
                c = substr(s, i, 1)
                if (c == "\"") { i++; return out }
                if (c == "\\") {
                    e = substr(s, i + 1, 1); i += 2
                    if (e == "\"" || e == "/") out = out e
                    else if (e == "\\") out = out "\\\\"
                    else if (index("bfnrt", e)) out = out "\\" e
                    else if (e == "u") {
                        cp = hex(substr(s, i, 4)); i += 4
                        if (cp >= 55296 && cp < 56320 && substr(s, i, 2) == "\\u") {
                            lo = hex(substr(s, i + 2, 4))
                            if (lo >= 56320 && lo < 57344) { cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); i += 6 }
                        }
                        if (cp == 8) out = out "\\b"; else if (cp == 9) out = out "\\t"
                        else if (cp == 10) out = out "\\n"; else if (cp == 12) out = out "\\f"
                        else if (cp == 13) out = out "\\r"; else if (cp == 92) out = out "\\\\"
                        else if (cp < 32 || cp == 127) out = out sprintf("\\u%04x", cp)
                        else out = out utf8(cp)
                    } else fail("bad escape")
                    continue
                }
                if (c == "\177") out = out "\\u007f"; else out = out c
                i++
            }
        }
        function value(path,   c, k, idx, lit) {
            ws(); c = substr(s, i, 1)
            if (c == "{") {
                i++; ws()
                if (substr(s, i, 1) == "}") { i++; return }
                for (;;) {
                    ws(); if (substr(s, i, 1) != "\"") fail("expected a key")
                    k = str(); ws()
                    if (substr(s, i, 1) != ":") fail("expected :")
                    i++; value(path == "" ? k : path "." k); ws()
                    c = substr(s, i, 1); i++
                    if (c == "}") return
                    if (c != ",") fail("expected , or }")
                }
            }
            if (c == "[") {
                i++; ws(); idx = 0
                if (substr(s, i, 1) == "]") { i++; return }
                for (;;) {
                    value(path == "" ? idx : path "." idx); idx++; ws()
                    c = substr(s, i, 1); i++
                    if (c == "]") return
                    if (c != ",") fail("expected , or ]")
                }
            }
            if (c == "\"") { k = str(); print path "\t" k; return }
            lit = ""
            while (i <= n && index("-+.0123456789eEtruefalsn", substr(s, i, 1))) { lit = lit substr(s, i, 1); i++ }
            if (lit == "") fail("unexpected character")
            print path "\t" lit
        }
        { s = s $0 "\n" }
        END { if (bad) exit 1; n = length(s); i = 1; value(""); ws(); if (i <= n) fail("trailing data") }'
    fi
}
# The value at PATH in a flat file.
get() { awk -F '\t' -v k="$1" '$1 == k { print substr($0, length(k) + 2); exit }' "$2"; }
# Debugging aid: show how this script reads a JSON document.
if [ "${1-}" = --flat ]; then flat; exit; fi


# ---- the command line ------------------------------------------------------------------
api='' pin='' cacert='' insecure=0 password_file='' token_file='' roles='' ssh_target='' print=0
ssh_cmd=${JOINERY_SSH:-ssh -o BatchMode=yes} remote_dir='' node_name='' timeout=600 interval=5 wait=
need() { [ $# -ge 2 ] || die 2 "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --api) need "$@"; api=$2; shift 2 ;;
        --pin) need "$@"; pin=$2; shift 2 ;;
        --cacert) need "$@"; cacert=$2; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --password-file) need "$@"; password_file=$2; shift 2 ;;
        --token-file) need "$@"; token_file=$2; shift 2 ;;
        --roles) need "$@"; roles=$2; shift 2 ;;
        --ssh) need "$@"; ssh_target=$2; shift 2 ;;
        --ssh-command) need "$@"; ssh_cmd=$2; shift 2 ;;
        --remote-dir) need "$@"; remote_dir=$2; shift 2 ;;
        --node-name) need "$@"; node_name=$2; shift 2 ;;
        --print) print=1; shift ;;
        --timeout) need "$@"; timeout=$2; shift 2 ;;
        --wait)
            # The value is optional: taken only when the next word is a number.
            case ${2-} in ''|*[!0-9]*) wait=default; shift ;; *) wait=$2; shift 2 ;; esac ;;
        --interval) need "$@"; interval=$2; shift 2 ;;
        -h|--help) usage_text; exit 0 ;;
        *) die 2 "unknown argument $1 (see --help)" ;;
    esac
done

# ---- checks on the command line -------------------------------------------------------
case $api in
    https://?*) api=${api%/} ;;
    '') die 2 "give --api https://CONTROLLER:30081" ;;
    *) die 2 "--api $api: joinery speaks only https:// URLs" ;;
esac
n=0; [ -n "$pin" ] && n=$((n + 1)); [ -n "$cacert" ] && n=$((n + 1)); [ "$insecure" = 1 ] && n=$((n + 1))
[ "$n" = 1 ] || die 2 "give one of --pin (the controller's key pin), --cacert FILE or --insecure"
if [ -n "$pin" ]; then
    case $pin in
        sha256//*) case ${pin#sha256//} in ''|*[!A-Za-z0-9+/=\;]*) die 2 "--pin: not a pin of the form sha256//BASE64" ;; esac ;;
        *) die 2 "--pin: not a pin of the form sha256//BASE64" ;;
    esac
fi
[ -z "$cacert" ] || [ -r "$cacert" ] || die 2 "--cacert $cacert: cannot read it"
if [ -n "$password_file" ] && [ -n "$token_file" ]; then
    die 2 "give --password-file or --token-file, not both"
fi
[ -n "$password_file$token_file" ] || die 2 "give --password-file FILE or --token-file FILE"
for f in "$password_file" "$token_file"; do
    [ -z "$f" ] || [ -r "$f" ] || die 2 "$f: cannot read it"
done
[ -n "$roles" ] || die 2 "give --roles ROLE[,ROLE...] (e.g. --roles controller)"
roles_json=
old_ifs=$IFS; IFS=,
for r in $roles; do
    case $r in ''|*[!A-Za-z0-9._-]*) IFS=$old_ifs; die 2 "--roles: \"$r\" is not a role name (letters, digits, '-', '_', '.')" ;; esac
    roles_json="$roles_json${roles_json:+,}\"$r\""
done
IFS=$old_ifs
case $roles in *,|,*|*,,*) die 2 "--roles: an empty role name in \"$roles\"" ;; esac
if [ "$print" = 1 ] && [ -n "$ssh_target" ]; then die 2 "give --ssh HOST or --print, not both"; fi
[ "$print" = 1 ] || [ -n "$ssh_target" ] || die 2 "give --ssh [USER@]HOST to run the steps there, or --print"
case $timeout in ''|*[!0-9]*) die 2 "--timeout: a whole number of seconds" ;; esac
case $interval in ''|*[!0-9]*|0) die 2 "--interval: a whole number of seconds, at least 1" ;; esac
case $wait in
    '') wait=$timeout ;;
    default) wait=$timeout; [ "$print" = 0 ] || die 2 "--wait needs --ssh: with --print the steps run later, elsewhere" ;;
    *) [ "$print" = 0 ] || die 2 "--wait needs --ssh: with --print the steps run later, elsewhere" ;;
esac
if [ -n "$ssh_target" ] && [ -z "$node_name" ]; then
    node_name=${ssh_target#*@}
fi
command -v curl >/dev/null 2>&1 || die 1 "curl is needed"

# ---- private scratch space: credentials live here, never on a command line ------------
umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/headless-join.XXXXXX") || die 1 "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

# A value for a curl config file: double-quoted, \ and " escaped.
conf_quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
    echo 'silent'
    echo 'show-error'
    echo 'proto = "=https"'
    echo 'connect-timeout = 10'
    echo 'max-time = 60'
    if [ -n "$pin" ]; then
        # -k skips the CA check only; the pin still refuses any other key.
        echo 'insecure'
        echo "pinnedpubkey = $(conf_quote "$pin")"
    elif [ -n "$cacert" ]; then
        echo "cacert = $(conf_quote "$cacert")"
    else
        echo 'insecure'
    fi
} >"$tmp/curl.conf"
if [ "$insecure" = 1 ]; then
    say "WARNING: --insecure: the controller's identity is NOT checked; anyone on the"
    say "WARNING: network path can read the password and the join token. Use --pin."
fi

# ---- calls to the API ------------------------------------------------------------------
# call METHOD PATH [curl args...]: the answer's body in $tmp/body (and flattened in
# $tmp/flat when JSON), its HTTP status in $status; returns curl's exit code.
status=000
call() {
    m=$1 p=$2; shift 2
    rm -f "$tmp/body" "$tmp/flat"
    status=$(curl -K "$tmp/curl.conf" "$@" -X "$m" -o "$tmp/body" -w '%{http_code}' "$api$p" 2>"$tmp/curl.err")
    rc=$?
    [ -n "$status" ] || status=000
    if [ -s "$tmp/body" ]; then flat <"$tmp/body" >"$tmp/flat" 2>/dev/null || : >"$tmp/flat"; else : >"$tmp/flat"; fi
    return $rc
}
# Why curl failed, in one line, into $note; exits 1 at once when retrying cannot help
# (the TLS identity is wrong).
curl_problem() {
    why=$(tr '\n' ' ' <"$tmp/curl.err" | sed 's/^curl: //; s/ *$//')
    case $1 in
        51|60|77|83|90) die 1 "the controller's TLS identity does not match (curl $1: $why); check --pin or --cacert" ;;
    esac
    note="cannot reach $api (curl $1: $why)"
}
# The error code and message of an error answer.
api_error() {
    code=$(get error "$tmp/flat") msg=$(get message "$tmp/flat")
    printf '%s' "HTTP $status ${code:-(no error code)}${msg:+: $msg}"
}

authed=0
login() {
    if [ -n "$token_file" ]; then
        IFS= read -r token <"$token_file" || [ -n "${token-}" ] || die 2 "$token_file is empty"
        case $token in ''|*[!A-Za-z0-9._-]*) die 2 "$token_file does not hold a token (expected a JWT)" ;; esac
    else
        IFS= read -r pw <"$password_file" || [ -n "${pw-}" ] || die 2 "$password_file is empty"
        case $pw in '') die 2 "$password_file is empty" ;; *[[:cntrl:]]*) die 2 "$password_file: the password holds a control character" ;; esac
        # printf is a shell builtin: the password never becomes a process argument.
        printf '{"password":"%s"}' "$(printf '%s' "$pw" | sed 's/\\/\\\\/g; s/"/\\"/g')" >"$tmp/login.json"
        unset pw
        if ! call POST /v1/auth/token -H 'Content-Type: application/json' --data-binary "@$tmp/login.json"; then
            curl_problem "$rc"; return 1
        fi
        case $status in
            200) token=$(get token "$tmp/flat") ;;
            401) die 3 "login refused: $(api_error) (check --password-file)" ;;
            *) note="login: $(api_error)"; return 1 ;;
        esac
        case $token in ''|*[!A-Za-z0-9._-]*) die 1 "login answered without a token" ;; esac
    fi
    printf 'header = "Authorization: Bearer %s"\n' "$token" >"$tmp/auth.conf"
    unset token
    authed=1
}

# nodes: GET /v1/nodes into $tmp/flat; returns 1 with $note set when it could not.
nodes() {
    if ! call GET /v1/nodes -K "$tmp/auth.conf"; then curl_problem "$rc"; return 1; fi
    case $status in
        200) return 0 ;;
        401) die 3 "the API refused the session token: $(api_error)" ;;
        *) note=$(api_error); return 1 ;;
    esac
}

# One awk over the node list: "ready-controllers N", then the state of node $node_name.
node_state() {
    awk -F '\t' -v want="$node_name" '
        { split($1, p, ".") }
        $1 ~ /^nodes\.[0-9]+\.name$/ { name[p[2]] = $2; if (p[2] + 1 > max) max = p[2] + 1 }
        $1 ~ /^nodes\.[0-9]+\.internalIP$/ { ip[p[2]] = $2 }
        $1 ~ /^nodes\.[0-9]+\.ready$/ { ready[p[2]] = $2 }
        $1 ~ /^nodes\.[0-9]+\.roles\.[0-9]+$/ && $2 == "controller" { ctl[p[2]] = 1 }
        END {
            c = 0; state = "absent"
            for (j = 0; j < max; j++) {
                if (ctl[j] && ready[j] == "true") c++
                if (want != "" && (name[j] == want || ip[j] == want))
                    state = (ready[j] == "true") ? "ready " name[j] : "notready " name[j]
            }
            print c " " max " " state
        }' "$tmp/flat"
}

started=0
elapsed() { echo $(($(date +%s) - started)); }

# ---- 1. a Ready controller ---------------------------------------------------------------
started=$(date +%s)
note="no answer yet"
unreachable=1
while :; do
    if [ "$authed" = 0 ]; then login || { unreachable=1; }; fi
    if [ "$authed" = 1 ]; then
        if nodes; then
            unreachable=0
            set -- $(node_state)
            [ "$1" -gt 0 ] && break
            note="no Ready controller yet ($2 nodes)"
        else
            case $note in "cannot reach"*) unreachable=1 ;; *) unreachable=0 ;; esac
        fi
    fi
    t=$(elapsed)
    if [ "$t" -ge "$timeout" ]; then
        [ "$unreachable" = 1 ] && die 1 "$note, for ${timeout}s"
        die 4 "no Ready controller after ${timeout}s: $note"
    fi
    say "waiting for a Ready controller (${t}s of ${timeout}s): $note"
    sleep "$interval"
done
say "a controller is Ready"

# ---- 2. the join steps ---------------------------------------------------------------------
printf '{"roles":[%s]}' "$roles_json" >"$tmp/roles.json"
if ! call POST /v1/create-join-command -K "$tmp/auth.conf" -H 'Content-Type: application/json' \
    --data-binary "@$tmp/roles.json"; then
    curl_problem "$rc"; die 1 "$note"
fi
case $status in
    200) ;;
    401) die 3 "the API refused the session token: $(api_error)" ;;
    409) die 4 "$(api_error)" ;;
    4??|503) die 5 "the join command was refused: $(api_error)" ;;
    *) die 1 "create-join-command: $(api_error)" ;;
esac
# The steps as a script: "# description" then the command, in order. Commands are
# single lines; a JSON escape other than \\ in one would be a control character.
awk -F '\t' '
    function plain(v,   out, k, c) {
        out = ""
        for (k = 1; k <= length(v); k++) {
            c = substr(v, k, 1)
            if (c == "\\") { k++; if (substr(v, k, 1) != "\\") { bad = 1; return "" } }
            out = out c
        }
        return out
    }
    $1 ~ /^joinSteps\.[0-9]+\.(description|command)$/ {
        split($1, p, "."); v = substr($0, length($1) + 2)
        if (p[3] == "command") cmd[p[2]] = plain(v); else desc[p[2]] = plain(v)
        if (p[2] + 1 > max) max = p[2] + 1
    }
    END {
        if (max == 0 || bad) exit 1
        for (j = 0; j < max; j++) {
            if (!(j in cmd)) exit 1
            print "# " desc[j]
            print cmd[j]
        }
    }' "$tmp/flat" >"$tmp/steps" || die 1 "create-join-command answered without usable joinSteps"

if [ "$print" = 1 ]; then
    printf '#!/bin/sh\n# Join steps from %s for roles %s. The token in them works once.\nset -e\n' "$api" "$roles"
    cat "$tmp/steps"
    say "printed the join steps; run them on the new host with sh (as a user with sudo)"
    exit 0
fi

# ---- 3. run them on the new host -----------------------------------------------------------
# Single-quote for the remote sh.
sq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
{
    echo 'set -e'
    # The steps run inside a function read whole before it starts, with stdin from
    # /dev/null, so no step can swallow the rest of this script from ssh's stdin.
    echo 'joinery_join() {'
    if [ -n "$remote_dir" ]; then
        echo "mkdir -p $(sq "$remote_dir") && cd $(sq "$remote_dir")"
    else
        echo 'cd "$(mktemp -d /var/tmp/joinery-join.XXXXXX)"'
    fi
    echo 'echo "joinery join: working in $(pwd)" >&2'
    cat "$tmp/steps"
    echo '}'
    echo 'joinery_join </dev/null'
} >"$tmp/remote.sh"
say "running the join steps on $ssh_target"
# $ssh_cmd is split into words on purpose (it may carry options); -f is set, so no globbing.
# shellcheck disable=SC2086
$ssh_cmd "$ssh_target" sh -s <"$tmp/remote.sh" >&2
rc=$?
[ "$rc" = 0 ] || die 6 "a join step failed on $ssh_target (exit $rc); its output is above"

# ---- 4. the new node Ready ------------------------------------------------------------------
# By name: when --node-name (or the ssh host) is an address, the node's name is found in
# the node list first (polled only until the node registers).
started=$(date +%s)
name=$node_name
case $node_name in
    *[!0-9.]*) case $node_name in *:*) name='' ;; esac ;;
    *) name='' ;;
esac
while [ -z "$name" ]; do
    if nodes; then
        set -- $(node_state)
        case $3 in ready|notready) name=$4 ;; *) note="node $node_name is not registered yet" ;; esac
    fi
    [ -n "$name" ] && break
    t=$(elapsed)
    [ "$t" -ge "$wait" ] && die 7 "node $node_name was not Ready after ${wait}s: $note"
    say "waiting for node $node_name to register (${t}s of ${wait}s): $note"
    sleep "$interval"
done
case $name in *[!a-z0-9.-]*|'') die 1 "node name \"$name\" is not a Kubernetes node name" ;; esac
while :; do
    t=$(elapsed)
    left=$((wait - t))
    [ "$left" -gt 0 ] || die 7 "node $name was not Ready after ${wait}s: $note"
    [ "$left" -le 600 ] || left=600
    say "waiting for node $name to be Ready (${t}s of ${wait}s)"
    # One call that answers when the node is Ready (504 wait_timeout when time is up).
    if call GET "/v1/nodes/$name?waitFor=ready&timeoutSeconds=$left" -K "$tmp/auth.conf" \
        --max-time $((left + 30)); then
        case $status in
            200) say "node $name is Ready"; echo "joined $name (roles $roles)"; exit 0 ;;
            401) die 3 "the API refused the session token: $(api_error)" ;;
            504) note=$(get message "$tmp/flat") ;;
            *) note=$(api_error); sleep "$interval" ;;
        esac
    else
        curl_problem "$rc"; sleep "$interval"
    fi
done
