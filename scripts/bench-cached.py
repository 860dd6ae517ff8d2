#!/usr/bin/env python3
"""The cached join bundle against nginx serving the same file, many interleaved rounds.

bench.py's bundle section takes 5 rounds; on a 2-vCPU machine both servers swing between
two speeds from one run to the next (where the scheduler puts the server and curl), so a
before/after comparison of two builds needs them in the same run, interleaved:

    python3 scripts/bench-cached.py --rounds 15 BIN [BIN2]

Prints, per server, the median seconds per 189 MiB bundle, server CPU seconds (10 ms
ticks) and curl's CPU per MiB, then each build's ratio to nginx (nginx's time / its time).
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bins", nargs="+", type=Path, help="one or two joinery binaries")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--mb", type=int, default=256, help="size of generated artifacts, MiB")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cached-"))
    benches = [bench.Bench(b, work) for b in a.bins]
    try:
        files = bench.make_artifacts(work / "artifacts", a.mb * bench.MIB)
        fake = benches[0].fake(3)
        servers = []
        for i, b in enumerate(benches):
            d = b.daemon(fake, extra=b.join_args(files), name=f"joinery{i}")
            d.proc.wait_for(r"bundle cache (ready|warm-up failed)", 600)
            token, _ = bench.login(d)
            servers.append((f"{b.bin}", d, token))
        docs = work / "nginx-docs"
        docs.mkdir()
        bench.curl_bundle(servers[0][1], servers[0][2], out=docs / "bundle.tar.gz")
        work.chmod(0o711)  # nginx's workers run as an unprivileged user
        docs.chmod(0o755)
        (docs / "bundle.tar.gz").chmod(0o644)
        n, port = benches[0].nginx(servers[0][1], f"        location / {{ root {docs}; }}",
                                   name="nginx-files")
        url = f"https://127.0.0.1:{port}/bundle.tar.gz"
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in servers}
        runs["nginx"] = []
        for _ in range(a.rounds):
            for name, d, token in servers:
                runs[name].append(bench.curl_bundle(d, token))
            runs["nginx"].append(bench.curl_url(url, pids=bench.family(n.pid)))

        def med(name, f):
            return statistics.median(f(r) for r in runs[name])

        for name, rs in runs.items():
            print(f"{name}: {med(name, lambda r: r['secs']):.3f} s, server "
                  f"{med(name, lambda r: r.get('cpu', 0)):.2f} CPU s, curl "
                  f"{med(name, lambda r: r['client_cpu'] / r['size'] * bench.MIB) * 1000:.3f} "
                  f"CPU ms/MiB; {rs[0].get('suite')}; rounds "
                  + ", ".join(f"{r['secs']:.3f}" for r in rs))
        for name, _, _ in servers:
            print(f"{name} vs nginx: {med('nginx', lambda r: r['secs']) / med(name, lambda r: r['secs']):.2f}x")
    finally:
        for b in benches:
            b.close()


if __name__ == "__main__":
    main()
