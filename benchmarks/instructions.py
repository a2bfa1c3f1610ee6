"""Work per batch session, counted by valgrind: steady where wall-clock ratios are not.

    python benchmarks/instructions.py [--sessions 100,400] [--concurrency 50] [--layers]
                                      [--ll BYTES]

The raw asyncio client and `smtp-probe batch --reuse 1 --no-tls-resume` (the like-for-like
pair of run.py) each run twice under cachegrind, with two numbers of sessions, against the
loopback farm (not traced). The difference, divided by the difference in sessions, is per
session: start-up drops out. Printed per session: CPython's instructions, branch
mispredictions and L1 instruction misses, then the rest of the process (OpenSSL, uvloop,
libc). On a shared VM two timed runs of the same program can differ by a quarter; these
counts move by well under 1%. Interpreter instructions cost more cycles each than OpenSSL's,
so compare CPython's figures between versions, not the totals between programs. Fewer
instructions need not mean less time: a mypyc build that cut batch's interpreter instructions
by a quarter ran no faster (docs/benchmarks.md, sixth day).

With --layers it counts instead the four in-process layers of opcodes.py (the raw client, a
session, a probe, a batch writing its records), each in a process of its own: what each layer
adds to the interpreter's work, in instructions rather than bytecodes.

With --ll BYTES, cachegrind simulates a last-level cache of that size (16-way, 64-byte lines)
instead of the host's, and each row adds the data misses per session: in the first level, and
in that last level. Its default, the host's whole L3 as the VM reports it, is no guide on a
shared machine; a core's own L2 (1 MB on this VM) or a 2 MB share of the L3 is a fairer model.
Misses cost time that instructions do not show: on the seventh day, at 2 MB, batch missed
the last level 3.2 k times a session against the raw client's 2.5 k, and the part outside the
interpreter missed it 2.32 k times against 2.04 k while running fewer instructions.

Needs valgrind (Debian package `valgrind`); a traced run is some fifty times slower.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import _farm, _pinned, _stop, like_for_like  # noqa: E402

EVENTS = ("Ir", "I1mr", "Bcm", "Bim", "D1mr", "D1mw", "DLmr", "DLmw")
# Source paths of CPython's own C code as its debug information names them.
CPYTHON = ("Python/", "Objects/", "Modules/", "Include/", "Parser/", "libpython")
Counts = dict[str, dict[str, int]]  # part ("cpython" or "other") -> event -> count


def _counts(out: Path) -> Counts:
    """Events of one cachegrind output file, summed per part: cpython or other."""
    events: list[str] = []
    part = "other"
    sums: dict[str, dict[str, int]] = collections.defaultdict(lambda: dict.fromkeys(EVENTS, 0))
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("fl="):
            part = "cpython" if any(k in line for k in CPYTHON) else "other"
        elif line[:1].isdigit():
            for name, value in zip(events, line.split()[1:], strict=False):
                if name in EVENTS:
                    sums[part][name] += int(value)
    return sums


def _traced(cmd: list[str], stdin: Path | None, tmp: Path, tag: str, ll: int) -> Counts:
    """Run `cmd` under cachegrind; the counts of its busiest process (python -m spawns none,
    but env and taskset exec)."""
    outs = tmp / f"cg-{tag}"
    outs.mkdir()
    vg = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--branch-sim=yes",
        "--trace-children=yes",
        f"--cachegrind-out-file={outs}/%p",
        *([f"--LL={ll},16,64"] if ll else []),
    ]
    with open(stdin or "/dev/null", "rb") as inp:
        subprocess.run([*_pinned(1), *vg, *cmd], stdin=inp, capture_output=True, check=False)
    found = [_counts(p) for p in outs.iterdir()]
    if not found:
        raise SystemExit("instructions.py: valgrind wrote nothing (is it installed?)")
    return max(found, key=lambda c: sum(v["Ir"] for v in c.values()))


def _row(name: str, small: Counts, big: Counts, n: int, ll: int) -> str:
    def per(part: str, event: str) -> float:
        return (big[part][event] - small[part][event]) / n

    cpython = per("cpython", "Ir")
    if cpython == 0:
        return f"{name}: no CPython source paths in the debug information; cannot split"
    row = (
        f"{name:<8} CPython {cpython / 1e6:5.2f} M instructions, "
        f"{(per('cpython', 'Bcm') + per('cpython', 'Bim')) / 1e3:5.1f} k mispredictions, "
        f"{per('cpython', 'I1mr') / 1e3:5.1f} k I1 misses | "
        f"the rest {per('other', 'Ir') / 1e6:5.2f} M instructions"
    )
    if not ll:
        return row

    def missed(part: str) -> str:
        first = (per(part, "D1mr") + per(part, "D1mw")) / 1e3
        last = (per(part, "DLmr") + per(part, "DLmw")) / 1e3
        return f"{first:4.1f} k D1, {last:4.2f} k LL"

    return f"{row}\n{'':<10}data misses: CPython {missed('cpython')}; the rest {missed('other')}"


def _child(layer: str, n: int, port: int, cafile: str, hosts: list[str]) -> None:
    """One of opcodes.py's layers, untraced by Python (valgrind counts it from outside)."""
    import asyncio

    from opcodes import _layer, loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_layer(layer, n, port, cafile, hosts))


def _layers(a: int, b: int, info: dict[str, Any], tmp: Path, ll: int) -> None:
    """Instructions per session of each in-process layer, and what each adds to the last."""
    from opcodes import CONCURRENCY, LAYERS

    rows, last = [], None
    for layer in LAYERS:
        counts = []
        for n in (a, b):
            cmd = [sys.executable, __file__, "--child", layer, str(n), str(info["smtp_port"])]
            counts.append(
                _traced([*cmd, info["cafile"], *info["hosts"]], None, tmp, f"{layer}-{n}", ll)
            )
        cpython = (counts[1]["cpython"]["Ir"] - counts[0]["cpython"]["Ir"]) / (b - a)
        added = "" if last is None else f" (CPython {cpython - last:+,.0f} on the layer before)"
        rows.append(f"  {_row(layer, counts[0], counts[1], b - a, ll)}{added}")
        last = cpython
    print(f"per session ({b} sessions less {a}, concurrency {CONCURRENCY}, in-process layers):")
    print("\n".join(rows))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        layer, n, port, cafile, *hosts = sys.argv[2:]
        _child(layer, int(n), int(port), cafile, hosts)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="100,400", help="the two session counts, a,b")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--layers", action="store_true", help="count opcodes.py's layers instead")
    ap.add_argument("--ll", type=int, default=0, metavar="BYTES", help="simulated LL cache size")
    args = ap.parse_args()
    a, b = (int(x) for x in args.sessions.split(","))
    c = args.concurrency
    farm, info = _farm(5, 10, pin=True)
    if args.layers:
        try:
            with tempfile.TemporaryDirectory() as d:
                _layers(a, b, info, Path(d), args.ll)
        finally:
            _stop(farm)
        return
    runs: dict[tuple[str, int], Counts] = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for n in (a, b):
                inp = tmp / f"targets-{n}.txt"
                raw, batch = like_for_like(info, n, c, inp)
                runs[("raw", n)] = _traced(raw, None, tmp, f"raw-{n}", args.ll)
                runs[("batch", n)] = _traced(batch, inp, tmp, f"batch-{n}", args.ll)
    finally:
        _stop(farm)
    print(f"per session ({b} sessions less {a}, concurrency {c}):")
    for name in ("raw", "batch"):
        print(" ", _row(name, runs[(name, a)], runs[(name, b)], b - a, args.ll))


if __name__ == "__main__":
    main()
