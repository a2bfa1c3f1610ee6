"""CPU time per like-for-like session, split by library: time, where counts are not.

    python benchmarks/cpu.py [--sessions 500,4000] [--turns 5] [--concurrency 50] [--top 0]

The raw asyncio client and `smtp-probe batch --reuse 1 --no-tls-resume` (the like-for-like
pair of run.py) run under `perf record -e cpu-clock` against the loopback farm (farm on CPU 0,
client on CPU 1), each with two numbers of sessions; the difference, divided by the difference
in sessions, is per session, so start-up and imports drop out. Printed: microseconds of CPU
per session in the interpreter, OpenSSL, the kernel, libc, uvloop and the rest, for each
client, and what batch adds. cpu-clock is a software event: it works on VMs that expose no
hardware counters (where `perf stat` cannot count cycles), and it counts the kernel's share,
which valgrind (instructions.py) cannot see. With --top N, the N symbols whose time differs
most between the two.

Samples are time, so the figures move with the machine as timed runs do; the clients take
turns and each figure is the median of the turns. Read the split, not the totals: differences
of runs on a shared VM come out wider than run.py's ratios (on the seventh day the totals gave
0.69x where the timed pairs gave about 0.8x), but every run put batch's extra time in the same
places. Needs perf (Debian package `linux-perf`).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import _farm, _pinned, _stop, like_for_like  # noqa: E402

GROUPS = ("interpreter", "OpenSSL", "kernel", "libc", "uvloop", "other")
_LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)")


def _group(dso: str) -> str:
    if dso.startswith("libpython") or re.fullmatch(r"python3[\d.]*", dso):
        return "interpreter"
    if dso.startswith(("libcrypto", "libssl")):
        return "OpenSSL"
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith(("libc.", "libc-")):
        return "libc"
    if dso.startswith("loop.cpython"):
        return "uvloop"
    return "other"


def _profile(data: Path) -> collections.Counter[tuple[str, str]]:
    """Microseconds of CPU per (library, symbol) in one perf recording."""
    cmd = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = float(re.search(r"Event count \(approx\.\): (\d+)", out).group(1))  # type: ignore[union-attr]
    spent: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in out.splitlines():
        if (m := _LINE.match(line)) is not None:
            symbol = "?" if m.group(3).startswith("0x") else m.group(3).strip()
            spent[(m.group(2), symbol)] += float(m.group(1)) / 100 * total / 1000  # ns -> us
    return spent


def _recorded(
    cmd: list[str], stdin: Path | None, tmp: Path
) -> collections.Counter[tuple[str, str]]:
    data = tmp / "perf.data"
    record = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", str(data), "--"]
    with open(stdin, "rb") if stdin else open("/dev/null", "rb") as inp:
        p = subprocess.run(
            [*record, *cmd], stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    if p.returncode != 0:  # perf_event_paranoid, say, or a client that failed
        sys.exit(f"cpu.py: {' '.join(cmd[:4])} ... under perf failed: {p.stderr.strip()[-300:]}")
    return _profile(data)


def _per_session(
    cmds: dict[int, tuple[list[str], Path | None]], tmp: Path
) -> dict[tuple[str, str], float]:
    """Per-session CPU: the bigger run less the smaller, over the sessions between them."""
    (a, (cmd_a, in_a)), (b, (cmd_b, in_b)) = sorted(cmds.items())
    small, big = _recorded(cmd_a, in_a, tmp), _recorded(cmd_b, in_b, tmp)
    return {k: (big[k] - small[k]) / (b - a) for k in big.keys() | small.keys()}


def _by_group(per: dict[tuple[str, str], float]) -> dict[str, float]:
    out = dict.fromkeys(GROUPS, 0.0)
    for (dso, _symbol), us in per.items():
        out[_group(dso)] += us
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="500,4000", help="the two session counts, a,b")
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--top", type=int, default=0, help="symbols that differ most")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("cpu.py: needs perf on PATH (Debian package linux-perf)")
    a, b = (int(x) for x in args.sessions.split(","))
    c = args.concurrency
    farm, info = _farm(5, 10, pin=True)
    turns: dict[str, list[dict[tuple[str, str], float]]] = {"raw": [], "batch": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            pairs = {n: like_for_like(info, n, c, t / f"{n}.txt") for n in (a, b)}
            raw = {n: ([*_pinned(1), *pairs[n][0]], None) for n in (a, b)}
            batch = {n: ([*_pinned(1), *pairs[n][1]], t / f"{n}.txt") for n in (a, b)}
            for _ in range(args.turns):
                turns["raw"].append(_per_session(raw, t))
                turns["batch"].append(_per_session(batch, t))
    finally:
        _stop(farm)
    _report(turns, a, b, c, args.top)


def _report(
    turns: dict[str, list[dict[tuple[str, str], float]]], a: int, b: int, c: int, top: int
) -> None:
    groups = {k: [_by_group(p) for p in v] for k, v in turns.items()}
    med = {k: {g: statistics.median(x[g] for x in v) for g in GROUPS} for k, v in groups.items()}
    print(
        f"CPU per session, microseconds ({b} sessions less {a}, concurrency {c}; "
        f"medians of {len(turns['raw'])} turns):"
    )
    print(f"  {'':<12} {'raw client':>10} {'batch':>8} {'batch adds':>11}")
    for g in GROUPS:
        raw, bat = med["raw"][g], med["batch"][g]
        print(f"  {g:<12} {raw:10.0f} {bat:8.0f} {bat - raw:+11.0f}")
    totals = {k: [sum(x.values()) for x in v] for k, v in groups.items()}
    raw_t, bat_t = statistics.median(totals["raw"]), statistics.median(totals["batch"])
    print(f"  {'total':<12} {raw_t:10.0f} {bat_t:8.0f} {bat_t - raw_t:+11.0f}")
    if top:
        keys = {k for v in turns.values() for p in v for k in p}
        diff = {
            k: statistics.median(p.get(k, 0.0) for p in turns["batch"])
            - statistics.median(p.get(k, 0.0) for p in turns["raw"])
            for k in keys
        }
        print(f"Symbols whose time differs most (batch less raw, us per session; top {top}):")
        for (dso, symbol), us in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
            print(f"  {us:+7.1f}  {dso}  {symbol[:70]}")


if __name__ == "__main__":
    main()
