"""Docs that run: every fenced `sh` block of README.md and docs/*.md, in order, in one
shell, against the demo that README's first block keeps running (scripts/demo.sh --keep).

The convention (docs/testing.md, "Writing docs"): `sh` blocks are run by this test, as a
reader would paste them into one terminal; `console` blocks show commands with a prompt
that this test does not run (they need a real controller, or are the test suite
itself); `text`, `json`, `yaml`, `python` and the like are not commands. A block
without a language, or in `bash`/`shell`, is refused, so no command slips past both.
"""

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
DEMO_DIR = Path("/tmp/joinery-demo")  # where README's blocks say the kept demo lives
RUN = "sh"
NOT_RUN = {"console", "text", "json", "yaml", "python", "toml", "diff"}
# The whole run: building is done by then (scripts/test.sh builds first); the walk, the
# joins and the drain take well under a minute.
DEADLINE_S = 300

FENCE = re.compile(r"^(```+|~~~+)\s*([^\s`]*)")


def blocks(path):
    """(info, first line number, text) of each fenced block of a Markdown file."""
    out, lines, i = [], path.read_text().split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(1), m.group(2), i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path.name}:{start}: a fenced block is never closed"
        out.append((info, start, "\n".join(body)))
        i += 1
    return out


def _running(pid):
    """True while `pid` exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_every_block_says_whether_it_runs():
    bad = []
    for path in DOCS:
        for info, line, _ in blocks(path):
            if info != RUN and info not in NOT_RUN:
                bad.append(f"{path.relative_to(ROOT)}:{line}: ```{info}")
    assert not bad, (
        "fenced blocks must say `sh` (run by this test) or one of "
        f"{sorted(NOT_RUN)} (not run); see docs/testing.md:\n" + "\n".join(bad)
    )


def test_readme_is_a_five_minute_read():
    size = (ROOT / "README.md").stat().st_size
    assert size < 16 * 1024, f"README.md is {size} bytes; move detail to docs/ (limit 16 KiB)"


def test_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS[1:] if f"](docs/{p.name})" not in readme]
    assert not missing, f"README's 'Where the rest is' does not link {missing}"


def _slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_links_between_docs_resolve():
    bad = []
    for path in DOCS + [ROOT / "ARCHITECTURE.md"]:
        text = path.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s) and mailto links are not checked offline
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.relative_to(ROOT)}: ({target}): no file {file}")
                continue
            if anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    bad.append(f"{path.relative_to(ROOT)}: ({target}): no heading #{anchor}")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_sh_blocks_run_in_order_against_the_kept_demo():
    runnable = [(p, line, text) for p in DOCS for info, line, text in blocks(p) if info == RUN]
    assert runnable, "no sh blocks found"
    assert "scripts/demo.sh --keep" in runnable[0][2], "the first sh block must start the demo"
    script = ["set -euo pipefail"]
    for n, (path, line, text) in enumerate(runnable):
        script.append(f"echo '@@docs-block {n}'")
        script.append(text)
    env = dict(os.environ, JOINERY_API_PORT="0")  # never clash with a joinery on 30081
    env.pop("JOINERY_DEMO_DIR", None)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write("\n".join(script) + "\n")
    pids = []
    try:
        proc = subprocess.Popen(
            ["bash", f.name], cwd=ROOT, env=env, text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=DEADLINE_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        if (DEMO_DIR / "pids").exists():
            pids = [int(l.split()[0]) for l in (DEMO_DIR / "pids").read_text().splitlines()]
        if timed_out or proc.returncode != 0:
            marks = re.findall(r"^@@docs-block (\d+)$", out, re.M)
            n = int(marks[-1]) if marks else 0
            path, line, text = runnable[n]
            tail = out[out.rfind(f"@@docs-block {n}\n") :].split("\n", 1)[-1]
            why = f"timed out after {DEADLINE_S} s" if timed_out else f"exit {proc.returncode}"
            raise AssertionError(
                f"the sh block at {path.relative_to(ROOT)}:{line} failed ({why}).\n"
                f"--- block ---\n{text}\n--- its output ---\n{tail[-6000:]}"
            )
        # scripts/demo.sh --keep said where everything is and how to stop it.
        for what in ("API:", "pin:", "password file:", "socket:", "env file:", "scripts/demo.sh --stop"):
            assert what in out, f"demo --keep did not print {what!r}:\n{out[:6000]}"
    finally:
        os.unlink(f.name)
        stop = subprocess.run(
            ["bash", "scripts/demo.sh", "--stop"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert pids, "the kept demo recorded no processes"
    alive = [p for p in pids if _running(p)]
    assert not alive, f"scripts/demo.sh --stop left {alive} running"
    assert not DEMO_DIR.exists(), "scripts/demo.sh --stop left its directory"
