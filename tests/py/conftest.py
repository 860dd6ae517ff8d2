"""Fixtures for the Python tests: the fake Kubernetes API server and the real daemon.

The daemon is the binary cargo built (target/debug/joinery, or $JOINERY_BIN); the tests
call it over HTTPS the way outside clients do (PyJWT, requests, requests-oauthlib).
"""

import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("JOINERY_BIN", ROOT / "target" / "debug" / "joinery"))
PASSWORD = "correct horse battery staple"


def _start(cmd, ready, name, **kw):
    """Starts a process and waits (bounded) for the line for which `ready` is true."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    lines, found = [], threading.Event()
    holder = {}

    def pump():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if not found.is_set() and ready(line):
                holder["line"] = line
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(30):
        proc.kill()
        raise RuntimeError(f"{name} did not start:\n" + "\n".join(lines))
    return proc, holder["line"], lines


class Fake:
    def __init__(self, nodes=3, extra=()):
        self.dir = tempfile.mkdtemp(prefix="fake-kube-")
        cmd = ["python3", str(ROOT / "tests/support/fake_kube.py"), "--port", "0",
               "--dir", self.dir, "--nodes", str(nodes), *extra]
        self.proc, line, self.lines = _start(cmd, lambda l: l.startswith("listening on "), "fake kube")
        self.url = line.split("listening on ", 1)[1].strip()
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Daemon:
    def __init__(self, fake, extra=(), password_file=True):
        self.dir = tempfile.mkdtemp(prefix="joinery-")
        args = [str(BIN), "serve", "--api-port", "0", "--bind-address", "127.0.0.1",
                "--kubeconfig", fake.kubeconfig, "--data-dir", self.dir]
        if password_file:
            hash_ = subprocess.run([str(BIN), "hash-password"], input=PASSWORD, text=True,
                                   capture_output=True, check=True).stdout.strip()
            path = os.path.join(self.dir, "password.hash")
            Path(path).write_text(hash_ + "\n")
            args += ["--password-hash-file", path]
        if not any(str(a).startswith("--socket") for a in extra):
            args.append("--socket=none")  # keep off the host's /run/joinery
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        self.proc, line, self.lines = _start(args + list(extra), lambda l: '"msg":"listening"' in l,
                                             "joinery", env=env)
        info = json.loads(line)
        self.url = info["address"]
        self.pin = info["pin"]
        self.ca = os.path.join(self.dir, "tls.crt")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def fake_kube():
    f = Fake()
    yield f
    f.stop()


@pytest.fixture
def daemon(fake_kube):
    d = Daemon(fake_kube)
    yield d
    d.stop()
