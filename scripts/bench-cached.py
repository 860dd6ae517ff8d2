#!/usr/bin/env python3
"""The cached join bundle against nginx serving the same file, many interleaved rounds.

    python3 scripts/bench-cached.py [--rounds 15] [--unpinned] BIN [BIN2]

Both servers serve the same 189 MiB file over TLS 1.3 (same certificate, same suite) to
the same curl writing to /dev/null, in `bench.cached_rounds`: servers pinned to one CPU,
curl to the other, one uncounted download each, then interleaved rounds. Prints, per
server, the median seconds per download with the spread (half the interquartile range),
the server's CPU ms per MiB (/proc/PID/stat), curl's CPU ms per MiB and each round; then
each build's ratio to nginx (nginx's time / its time; above 1 is faster). With two
builds this is the before/after comparison. `--unpinned` leaves placement to the
scheduler (to see what pinning removes).
"""
import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def summary(rs: list[dict]) -> str:
    secs = [r["secs"] for r in rs]
    per_mib = lambda key: statistics.median(r[key] / r["size"] * bench.MIB * 1000 for r in rs)  # noqa: E731
    return (f"{statistics.median(secs):.3f} s +/-{bench.spread(secs) * 100:.0f}%, server "
            f"{per_mib('cpu'):.3f} CPU ms/MiB, curl {per_mib('client_cpu'):.3f} CPU ms/MiB; "
            f"{rs[0].get('suite')}; rounds " + ", ".join(f"{s:.3f}" for s in secs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bins", nargs="+", type=Path, help="one or two joinery binaries")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--mb", type=int, default=256, help="size of generated artifacts, MiB")
    ap.add_argument("--unpinned", action="store_true", help="do not pin servers and curl")
    a = ap.parse_args()
    if a.unpinned:
        bench.SERVER_CPU = bench.CLIENT_CPU
    work = Path(tempfile.mkdtemp(prefix="bench-cached-"))
    benches = [bench.Bench(b, work) for b in a.bins]
    try:
        files = bench.make_artifacts(work / "artifacts", a.mb * bench.MIB)
        fake = benches[0].fake(3)
        servers = {}
        first = None
        for i, b in enumerate(benches):
            d = b.daemon(fake, extra=b.join_args(files), name=f"joinery{i}")
            d.proc.wait_for(r"bundle cache (ready|warm-up failed)", 600)
            token, _ = bench.login(d)
            first = first or (d, token)
            servers[f"{b.bin}"] = ([d.pid], lambda cpu, d=d, t=token: bench.curl_bundle(d, t, cpu=cpu))
        docs = work / "nginx-docs"
        docs.mkdir()
        saved = bench.curl_bundle(*first, out=docs / "bundle.tar.gz")
        work.chmod(0o711)  # nginx's workers run as an unprivileged user
        docs.chmod(0o755)
        (docs / "bundle.tar.gz").chmod(0o644)
        n, port = benches[0].nginx(first[0], f"        location / {{ root {docs}; }}",
                                   name="nginx-files")
        url = f"https://127.0.0.1:{port}/bundle.tar.gz"
        ngx = bench.family(n.pid)
        servers["nginx"] = (ngx, lambda cpu: bench.curl_url(url, pids=ngx, cpu=cpu))
        runs = bench.cached_rounds(servers, a.rounds)
        for name, rs in runs.items():
            # An admin bundle carries a fresh bootstrap token: a few bytes may differ.
            assert all(abs(r["size"] - saved["size"]) < 4096 for r in rs), f"{name}: other bytes"
            print(f"{name}: {summary(rs)}")
        ng = statistics.median(r["secs"] for r in runs["nginx"])
        for name in servers:
            if name != "nginx":
                print(f"{name} vs nginx: {ng / statistics.median(r['secs'] for r in runs[name]):.2f}x")
        print(f"pinned: {'no' if a.unpinned else f'servers on CPU {bench.SERVER_CPU}, curl on CPU {bench.CLIENT_CPU}'}; "
              f"load average {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    finally:
        for b in benches:
            b.close()
        shutil.rmtree(work, ignore_errors=True)  # 256 MiB of artifacts, the cache, a copy


if __name__ == "__main__":
    main()
