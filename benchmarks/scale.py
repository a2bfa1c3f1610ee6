"""Scale benchmarks (issue 18), printed in one run: `python benchmarks/scale.py [--quick]`.

On the benchmark farm (`python -m probe.lab.farm 20 DOMAINS`: 20 MX listeners with STARTTLS,
DOMAINS domains spread over them):

- the per-MX cache: sessions opened and time for the same list without any reuse, with
  connection facts reused (targets with RCPT), and for domain-only targets with a cold and a
  warm --cache file;
- the Ray backend (a local Ray, 2 actors) against the single-process batch on the same list:
  the overhead Ray adds per session on one machine. Skipped when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import _farm, _stop  # noqa: E402
from probe.lab.farm import client_args  # noqa: E402


def batch(args: list[str], info: dict[str, object], out: Path) -> tuple[int, float]:
    """(sessions opened, wall seconds) of one `smtp-probe batch` run."""
    cmd = [sys.executable, "-m", "probe", "batch", *args, *client_args(info)]
    cmd += ["--concurrency", "100", "--per-host", "5", "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if p.returncode not in (0, 69, 75):
        raise SystemExit(f"batch failed ({p.returncode}): {p.stderr[-2000:]}")
    opened = 0
    for line in out.read_text().splitlines():
        for s in json.loads(line).get("sessions", ()):
            opened += s.get("cache") is None and not s.get("reused")
    return opened, took


def row(name: str, opened: int, took: float, n: int) -> None:
    print(f"| {name} | {opened:,} | {took:.1f} s | {n / took:,.0f}/s |")


def main() -> None:
    quick = "--quick" in sys.argv
    n = 2000 if quick else 10000
    farm, info = _farm(20, n)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            rcpt = tmp / "rcpt.txt"
            rcpt.write_text("".join(f"user{i}@d{i}.test\n" for i in range(n)))
            domains = tmp / "domains.txt"
            domains.write_text("".join(f"d{i}.test\n" for i in range(n)))
            out, db = tmp / "out.jsonl", tmp / "mx.sqlite"
            print(f"{n:,} targets over 20 MX hosts (STARTTLS, a certificate each)\n")
            print("| run | sessions opened | time | targets/s |")
            print("|---|---:|---:|---:|")
            row("RCPT, no reuse (--reuse 1)", *batch([str(rcpt), "--reuse", "1"], info, out), n)
            row("RCPT, connection facts reused", *batch([str(rcpt)], info, out), n)
            cached = [str(domains), "--quit-after", "tls", "--cache", str(db)]
            row("domains, cold --cache", *batch(cached, info, out), n)
            row("domains, warm --cache", *batch(cached, info, out), n)
            ray_vs_single(rcpt, info, out, n)
    finally:
        _stop(farm)


def ray_vs_single(rcpt: Path, info: dict[str, object], out: Path, n: int) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("\nRay: not installed, skipped (pip install 'smtp-probe[ray]')")
        return
    print("\n| backend (RCPT, --reuse 1) | sessions | time | per session |")
    print("|---|---:|---:|---:|")
    single = batch([str(rcpt), "--reuse", "1"], info, out)
    on_ray = batch([str(rcpt), "--ray", "--workers", "2"], info, out)
    for name, (opened, took) in (("single process", single), ("local Ray, 2 actors", on_ray)):
        print(f"| {name} | {opened:,} | {took:.1f} s | {took / max(opened, 1) * 1000:.2f} ms |")
    extra = (on_ray[1] - single[1]) / max(n, 1) * 1000
    print(f"\nRay adds {extra:.2f} ms per session on this machine (start-up of Ray included).")


if __name__ == "__main__":
    main()
