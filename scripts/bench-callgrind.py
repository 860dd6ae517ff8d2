#!/usr/bin/env python3
"""Instructions per keep-alive `GET /v1/health` request, counted by callgrind.

    python3 scripts/bench-callgrind.py BINARY [N1 N2]    # default 100 600

Runs BINARY under `valgrind --tool=callgrind` twice against the fake Kubernetes API
server, serving N1 and then N2 requests on one TLS keep-alive connection, and prints
(I(N2) - I(N1)) / (N2 - N1): start-up and shut-down cancel out. Instruction counts do
not depend on the machine's load, so before/after figures from a shared machine can be
compared; they count user space only (system calls show in `strace -f -c`).
Needs valgrind (Debian: valgrind). A benchmark, never a test.
"""

import http.client
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main() -> int:
    binary = Path(sys.argv[1]).resolve()
    n1, n2 = (int(a) for a in sys.argv[2:4]) if len(sys.argv) >= 4 else (100, 600)
    work = Path(tempfile.mkdtemp(prefix="joinery-callgrind-"))
    b = bench.Bench(binary, work)
    counts = {}
    try:
        fake = b.fake(3)
        for n in (n1, n2):
            data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg-{n}.out"]
            p = b.spawn(f"callgrind-{n}", argv + b.daemon_argv(fake, data))
            m = p.wait_for(r'"address":"https://127\.0\.0\.1:(\d+)"[^\n]*"msg":"listening"', 300)
            c = http.client.HTTPSConnection("127.0.0.1", int(m.group(1)), context=bench.CTX,
                                            timeout=120)
            for _ in range(n):
                bench.get(c, "/v1/health")
            c.close()
            p.p.send_signal(signal.SIGTERM)
            p.p.wait(300)
            counts[n] = int(re.search(r"Collected : (\d+)", p.err.read_text()).group(1))
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    per = (counts[n2] - counts[n1]) / (n2 - n1)
    print(f"{binary}: {per:,.0f} instructions per request (callgrind, {n1} vs {n2} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
