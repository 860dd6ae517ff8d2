#!/usr/bin/env python3
"""Soak test of joinery on loopback (standard library only; run through scripts/soak.sh).

For a fixed time it runs, all at once: logins with the right password and guesses from
other addresses (which the throttle locks out), node listings, join commands, bundle
downloads with admin and join tokens (and re-use of spent join tokens), idle TLS
connections, slow-loris heads, a health poller, and Kubernetes faults switched on and off
through the fake API server; and two attacks (issue 12): bursts of 50 concurrent wrong
passwords from one address, and a connection hog holding 400 idle TCP connections (no
TLS bytes) from another. Then it checks:

- the daemon never died;
- no 5xx answer outside an injected-fault window (a request counts as inside when its
  time overlaps a window plus one second), and `/v1/health` was never anything but 200;
- the owner's logins (another address) and `/v1/health` are unaffected by the attacks:
  every right password works, and their latency is in the summary line;
- no burst of guesses got more bcrypt checks (401s) than the lockout policy (5);
- every issued join ticket is accounted for: each is still listed as a Secret (tickets
  stay as the ledger of joins), each one a download got is in state `downloading`, and no
  spent token worked for another address (the client that started a download may resume
  it, so reuse is tried from 127.0.0.7);
- after the load stops, open descriptors and RSS are back near their warm baseline.

It prints one summary line of counts and exits non-zero on any failed check.
Faults injected are the ones without side effects (503, 429, connection reset, latency
below the timeout): a fault that lets the API server finish a request the daemon has
already given up on would make ticket accounting ambiguous by design.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import random
import re
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("JOINERY_BIN", ROOT / "target" / "debug" / "joinery"))
PASSWORD = "soak password, not a secret anywhere else"
KUBE_TIMEOUT = 2
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
GRACE = 1.0  # seconds after a fault window in which a 5xx still counts as inside
LOGIN_FAILURES = 5  # the daemon's default --login-failures
BURST = 50  # concurrent wrong passwords per burst, from one address
HOG = 400  # idle TCP connections the hog keeps open, from one address


def start(cmd, ready, name, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, found, holder = [], threading.Event(), {}

    def pump():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if len(lines) > 200000:
                del lines[:100000]
            if not found.is_set() and ready(line):
                holder["line"] = line
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(30):
        proc.kill()
        sys.exit(f"{name} did not start:\n" + "\n".join(lines[-50:]))
    return proc, holder["line"], lines


def write_join_inputs(d: Path) -> list[str]:
    (d / "ec.yaml").write_text(
        "apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n"
        "    controller:\n      name: controller\n    custom:\n    - name: app\n")
    (d / "license.yaml").write_text(
        "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: soak-app\n"
        "  licenseID: soak\n  isEmbeddedClusterMultiNodeEnabled: true\n")
    art = d / "artifacts"
    (art / "images").mkdir(parents=True)
    (art / "soak-app").write_bytes(b"#!/bin/sh\necho soak\n")
    (art / "images" / "air.tar").write_bytes(random.Random(7).randbytes(2 << 20))
    return ["--ec-config", str(d / "ec.yaml"), "--license", str(d / "license.yaml"),
            "--artifacts-dir", str(art)]


class Soak:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.tmp = Path(tempfile.mkdtemp(prefix="joinery-soak-"))
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.results = []  # (t0, t1, kind, status)
        self.windows = []  # [start, end]
        self.issued, self.consumed = {}, set()  # jti -> token; jtis downloaded once
        self.problems = []
        self.stop = threading.Event()
        self.owner_login_ms, self.health_ms = [], []
        self.burst_max, self.hog_peak = 0, 0

    # --- processes ---------------------------------------------------------------------
    def start(self):
        fdir = self.tmp / "fake"
        self.fake, line, self.fake_lines = start(
            ["python3", str(ROOT / "tests/support/fake_kube.py"), "--port", "0", "--dir", str(fdir),
             "--nodes", "3", "--quiet"], lambda l: l.startswith("listening on "), "fake kube")
        self.fake_url = line.split("listening on ", 1)[1].strip()
        self.fake_ctx = ssl.create_default_context(cafile=str(fdir / "ca.crt"))
        self.fake_dir = fdir
        hash_ = subprocess.run([str(BIN), "hash-password"], input=PASSWORD, text=True,
                               capture_output=True, check=True).stdout.strip()
        (self.tmp / "password.hash").write_text(hash_ + "\n")
        args = [str(BIN), "serve", "--api-port", "0", "--bind-address", "127.0.0.1",
                "--kubeconfig", str(fdir / "kubeconfig"), "--data-dir", str(self.tmp / "data"),
                "--node-name", "node-1", "--password-hash-file", str(self.tmp / "password.hash"),
                "--kube-timeout", str(KUBE_TIMEOUT), "--idle-timeout", "5",
                "--socket", "",  # the soak uses TCP only; never collide with a running daemon
                *write_join_inputs(self.tmp)]
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        self.daemon, line, self.daemon_lines = start(args, lambda l: '"msg":"listening"' in l,
                                                     "joinery", env)
        self.port = int(json.loads(line)["address"].rsplit(":", 1)[1])
        self.ctx = ssl.create_default_context(cafile=str(self.tmp / "data" / "tls.crt"))

    # --- clients -----------------------------------------------------------------------
    def request(self, method, path, token=None, body=None, source="127.0.0.1", kind="", read=True):
        headers = {"Host": f"127.0.0.1:{self.port}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        t0 = time.monotonic()
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30,
                                           source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read() if read else resp.read(1)
            status = resp.status
        except (OSError, http.client.HTTPException) as e:
            data, status = str(e).encode(), 0
        finally:
            conn.close()
        t1 = time.monotonic()
        with self.lock:
            self.results.append((t0, t1, kind or path, status))
            self.counts["requests"] += 1
        return status, data

    def fake_call(self, method, path, body=None):
        conn = http.client.HTTPSConnection(self.fake_url.split("//")[1].split(":")[0],
                                           int(self.fake_url.rsplit(":", 1)[1]),
                                           context=self.fake_ctx, timeout=30)
        headers = {"Content-Type": "application/json"}
        token = (self.fake_dir / "token").read_text().strip()
        if not path.startswith("/_fake"):
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        data = conn.getresponse().read()
        conn.close()
        return json.loads(data) if data else None

    def login(self):
        t0 = time.monotonic()
        status, data = self.request("POST", "/v1/auth/token", body={"password": PASSWORD},
                                    source="127.0.0.2", kind="login")
        with self.lock:
            self.owner_login_ms.append((time.monotonic() - t0) * 1000)
        if status != 200 and status < 500:
            # The guesses from other addresses must never lock the owner out.
            self.problems.append(f"the right password got {status}")
        return json.loads(data)["token"] if status == 200 else None

    # --- workers -----------------------------------------------------------------------
    def loop(self, fn):
        def run():
            while not self.stop.is_set():
                try:
                    fn()
                except Exception as e:  # a bug in the soak itself: report, keep going
                    with self.lock:
                        self.problems.append(f"worker error: {e!r}")
                    time.sleep(0.5)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def good_logins(self):
        if self.login():
            self.counts["login_ok"] += 1
        time.sleep(0.3)

    def burst_logins(self):
        """50 wrong passwords at once from 127.0.0.5: at most the policy's worth checked."""
        time.sleep(random.uniform(5, 10))
        if self.stop.is_set():
            return
        statuses = []

        def guess():
            st, _ = self.request("POST", "/v1/auth/token", body={"password": "burst guess"},
                                 source="127.0.0.5", kind="burst-login")
            with self.lock:
                statuses.append(st)
        threads = [threading.Thread(target=guess) for _ in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        checked = statuses.count(401)
        with self.lock:
            self.counts["bursts"] += 1
            self.counts["burst_checked"] += checked
            self.counts["burst_refused"] += sum(1 for st in statuses if st in (429, 503))
            self.burst_max = max(self.burst_max, checked)
        if checked > LOGIN_FAILURES:
            self.problems.append(f"a burst of {BURST} guesses got {checked} password checks")
        odd = [st for st in statuses if st not in (401, 429, 503)]
        if odd:
            self.problems.append(f"burst guesses got {sorted(set(odd))}")

    def hog(self):
        """Keeps HOG idle TCP connections from 127.0.0.6 open, reopening what the daemon
        closes (it keeps 64 per address and closes the refused ones that never speak)."""
        socks = []
        try:
            while not self.stop.is_set():
                alive = []
                for s in socks:
                    try:
                        gone = s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        s.close()
                        self.counts["hog_closed_by_daemon"] += 1
                    else:
                        alive.append(s)
                socks = alive
                while len(socks) < HOG and not self.stop.is_set():
                    try:
                        s = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                                     source_address=("127.0.0.6", 0))
                    except OSError:
                        self.counts["hog_connect_failed"] += 1
                        break
                    socks.append(s)
                    self.counts["hog_opened"] += 1
                self.hog_peak = max(self.hog_peak, len(socks))
                time.sleep(0.5)
        finally:
            for s in socks:
                s.close()

    def bad_logins(self, source):
        status, _ = self.request("POST", "/v1/auth/token", body={"password": "guess"},
                                 source=source, kind="bad-login")
        self.counts[{401: "login_wrong", 429: "login_throttled"}.get(status, f"login_bad_{status}")] += 1
        if status not in (401, 429):
            self.problems.append(f"a wrong password got {status}")
        time.sleep(0.1)

    def nodes(self):
        status, _ = self.request("GET", "/v1/nodes", token=self.admin)
        self.counts["nodes_ok" if status == 200 else "nodes_failed"] += 1
        time.sleep(0.05)

    def health(self):
        t0 = time.monotonic()
        status, _ = self.request("GET", "/v1/health", kind="health")
        with self.lock:
            self.health_ms.append((time.monotonic() - t0) * 1000)
        if status != 200:
            self.problems.append(f"/v1/health answered {status}")
        self.counts["health"] += 1
        time.sleep(0.2)

    def commands(self):
        status, data = self.request("POST", "/v1/create-join-command", token=self.admin,
                                    body={"roles": ["app"]})
        if status == 200:
            token = JWT.search(data.decode()).group(0)
            payload = token.split(".")[1]
            jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
            with self.lock:
                self.issued[jti] = token
            self.counts["commands_ok"] += 1
        else:
            self.counts["commands_failed"] += 1
        time.sleep(0.2)

    def downloads(self):
        with self.lock:
            fresh = [j for j in self.issued if j not in self.consumed]
            spent = list(self.consumed)
        r = random.random()
        if r < 0.3 or not fresh:
            status, data = self.request("GET", "/v1/join-bundle?roles=app", token=self.admin,
                                        kind="bundle-admin")
            self.counts["bundle_admin_ok" if status == 200 else "bundle_admin_failed"] += 1
            if status == 200 and len(data) < (2 << 20):
                self.problems.append(f"short bundle: {len(data)} bytes")
        elif r < 0.4 and spent:
            # From another address: only the client that started a download may resume it.
            jti = random.choice(spent)
            status, _ = self.request("GET", "/v1/join-bundle?roles=app", token=self.issued[jti],
                                     source="127.0.0.7", kind="bundle-reuse")
            if status == 200:
                self.problems.append("a spent join token worked for another address")
            elif status == 410:
                self.counts["reuse_refused"] += 1
        elif random.random() < 0.5:  # leave about half of the tokens unused
            jti = random.choice(fresh)
            with self.lock:
                if jti in self.consumed:
                    return
            status, data = self.request("GET", "/v1/join-bundle?roles=app", token=self.issued[jti],
                                        kind="bundle-join")
            if status == 200:
                with self.lock:
                    self.consumed.add(jti)
                self.counts["bundle_join_ok"] += 1
            elif status == 410:
                # Another worker raced us to the same token: it must be consumed there.
                self.counts["bundle_join_race"] += 1
            else:
                self.counts["bundle_join_failed"] += 1
        time.sleep(0.3)

    def idle(self):
        s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port)),
                                 server_hostname="127.0.0.1")
        s.settimeout(30)
        t = time.monotonic()
        try:
            closed = s.recv(1) == b""  # the server's idle timeout closes it
        except (ssl.SSLError, OSError):
            closed = True
        s.close()
        self.counts["idle_closed" if closed else "idle_open"] += 1
        if time.monotonic() - t > 25:
            self.problems.append("an idle connection was held past the idle timeout")

    def slow(self):
        s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port)),
                                 server_hostname="127.0.0.1")
        s.settimeout(2)
        try:
            for b in b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60:
                if self.stop.is_set():
                    break
                s.sendall(bytes([b]))
                time.sleep(1)
            self.counts["slow_unclosed"] += 1
        except (ssl.SSLError, OSError):
            self.counts["slow_cut"] += 1  # the head timeout ended it
        s.close()

    def faults(self):
        time.sleep(random.uniform(4, 8))
        if self.stop.is_set():
            return
        kind = random.choice([
            {"kind": "status", "code": 503},
            {"kind": "status", "code": 429, "retryAfter": 2},
            {"kind": "reset"},
            {"kind": "latency", "delayMs": 300},
        ])
        with self.lock:
            self.windows.append([time.monotonic(), None])
        self.fake_call("POST", "/_fake/faults", [dict(kind, path="^/api")])
        self.counts["fault_windows"] += 1
        time.sleep(random.uniform(1, 3))
        self.fake_call("DELETE", "/_fake/faults")
        with self.lock:
            self.windows[-1][1] = time.monotonic()

    # --- measurements ------------------------------------------------------------------
    def rss_kb(self):
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.daemon.pid}/fd"))

    def in_window(self, t0, t1):
        return any(t0 <= (end or float("inf")) + GRACE and t1 >= start for start, end in self.windows)

    def run(self):
        self.start()
        self.admin = self.login()
        if not self.admin:
            sys.exit("soak: the first login failed")
        # Warm up: cache built, a few of each request, then the baseline.
        for _ in range(3):
            self.request("GET", "/v1/join-bundle?roles=app", token=self.admin, kind="warmup")
            self.request("GET", "/v1/nodes", token=self.admin, kind="warmup")
        time.sleep(1)
        base_rss, base_fds = self.rss_kb(), self.fds()

        workers = [self.loop(self.good_logins), self.loop(self.health), self.loop(self.faults)]
        workers += [self.loop(lambda s=s: self.bad_logins(s)) for s in ("127.0.0.3", "127.0.0.4")]
        workers += [self.loop(self.nodes) for _ in range(3)]
        workers += [self.loop(self.commands) for _ in range(2)]
        workers += [self.loop(self.downloads) for _ in range(3)]
        workers += [self.loop(self.idle) for _ in range(4)]
        workers += [self.loop(self.slow) for _ in range(2)]
        workers += [self.loop(self.burst_logins), self.loop(self.hog)]
        started = time.monotonic()
        peak_rss = base_rss
        while time.monotonic() - started < self.seconds:
            time.sleep(1)
            if self.daemon.poll() is not None:
                self.problems.append(f"the daemon exited with {self.daemon.returncode}")
                break
            peak_rss = max(peak_rss, self.rss_kb())
        self.stop.set()
        for w in workers:
            w.join(timeout=40)
        self.fake_call("DELETE", "/_fake/faults")
        with self.lock:
            if self.windows and self.windows[-1][1] is None:
                self.windows[-1][1] = time.monotonic()
        elapsed = time.monotonic() - started

        # Settle: idle connections time out (5 s), then measure.
        time.sleep(7)
        alive = self.daemon.poll() is None
        end_rss, end_fds = (self.rss_kb(), self.fds()) if alive else (0, 0)
        if not alive:
            self.problems.append("the daemon died")
        five_in = sum(1 for t0, t1, _, st in self.results if st >= 500 and self.in_window(t0, t1))
        five_out = [(k, st) for t0, t1, k, st in self.results if st >= 500 and not self.in_window(t0, t1)]
        errors = sum(1 for r in self.results if r[3] == 0)
        if five_out:
            self.problems.append(f"{len(five_out)} 5xx outside fault windows: {five_out[:5]}")
        if errors:
            self.problems.append(f"{errors} requests got no HTTP answer")

        # Tickets: every issued one is still listed (the ledger); downloaded ones say so.
        secrets = self.fake_call("GET", "/api/v1/secrets")["items"]
        states = {s["metadata"]["name"].removeprefix("joinery-ticket-"):
                  (s["metadata"].get("annotations") or {}).get("joinery.replicated.com/state")
                  for s in secrets if s["metadata"]["name"].startswith("joinery-ticket-")}
        listed = set(states)
        issued = set(self.issued)
        lost = issued - listed
        if lost:
            self.problems.append(f"{len(lost)} issued tickets not listed")
        not_started = [j for j in self.consumed if states.get(j) != "downloading"]
        if not_started:
            self.problems.append(f"{len(not_started)} downloaded tickets not in state downloading")
        if base_fds and end_fds > base_fds + 8:
            self.problems.append(f"open descriptors {base_fds} -> {end_fds}")
        if base_rss and end_rss > max(2 * base_rss, base_rss + 64 * 1024):
            self.problems.append(f"RSS {base_rss} kB -> {end_rss} kB")

        c = self.counts

        def pct(xs, q):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0
        attack = (
            f"bursts={c['bursts']} burst_checked={c['burst_checked']} "
            f"burst_refused={c['burst_refused']} burst_max_checks={self.burst_max} "
            f"hog_peak_open={self.hog_peak} hog_opened={c['hog_opened']} "
            f"hog_closed_by_daemon={c['hog_closed_by_daemon']} "
            f"owner_login_ms_p50={pct(self.owner_login_ms, 0.5):.0f} "
            f"owner_login_ms_max={pct(self.owner_login_ms, 1.0):.0f} "
            f"health_ms_p50={pct(self.health_ms, 0.5):.0f} "
            f"health_ms_p99={pct(self.health_ms, 0.99):.0f} "
            f"health_ms_max={pct(self.health_ms, 1.0):.0f}")
        summary = (
            f"soak: {elapsed:.0f}s requests={c['requests']} login_ok={c['login_ok']} "
            f"login_wrong={c['login_wrong']} login_throttled={c['login_throttled']} "
            f"nodes_ok={c['nodes_ok']} commands_ok={c['commands_ok']} "
            f"bundles_admin={c['bundle_admin_ok']} bundles_join={c['bundle_join_ok']} "
            f"reuse_refused={c['reuse_refused']} tickets_issued={len(issued)} "
            f"consumed={len(self.consumed)} listed={len(listed & issued)} "
            f"fault_windows={c['fault_windows']} 5xx_in_faults={five_in} "
            f"5xx_outside={len(five_out)} idle_closed={c['idle_closed']} slow_cut={c['slow_cut']} "
            f"rss_kb={base_rss}->{peak_rss}->{end_rss} fds={base_fds}->{end_fds} "
            f"{attack} "
            f"{'OK' if not self.problems else 'FAILED'}")
        print(summary, flush=True)
        for p in self.problems[:20]:
            print(f"  problem: {p}", file=sys.stderr)
        # Secrets never reach the log.
        log = "\n".join(self.daemon_lines)
        if PASSWORD in log or self.admin in log or any(t in log for t in self.issued.values()):
            print("  problem: a secret appeared in the daemon's log", file=sys.stderr)
            self.problems.append("secret logged")
        self.daemon.kill()
        self.fake.kill()
        return 0 if not self.problems else 1


def main():
    # The hog and the daemon hold hundreds of sockets: lift the soft descriptor limit to
    # the hard one for both (the daemon inherits it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else max(soft, 65536), hard))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    random.seed(int(os.environ.get("SOAK_SEED", "1")))
    sys.exit(Soak(args.seconds).run())


if __name__ == "__main__":
    main()
