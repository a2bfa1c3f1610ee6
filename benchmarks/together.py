"""Two clients at once on one CPU: a steadier ratio than whole runs taken in turns.

    python benchmarks/together.py [--rounds 6] [--window 6] [--concurrency 50] A B

A and B are each `raw` (raw_client.py) or the path of a checkout whose `probe` package then
runs `smtp-probe batch` like for like (run.py's LIKE_FOR_LIKE); `.` is this one. Both start
together, pinned to CPU 1 with the loopback farm on CPU 0, each with more sessions to do than
the window holds. After a warm-up the lines each writes (a record, or the raw client's mark
per session) are counted over the window, and both are stopped. Printed: each round's rates
and B's rate over A's, the median over the rounds (which one starts first alternates).

Why: on this shared VM whole runs taken in turns differ by up to a quarter, so a change worth
a few percent cannot be seen in run.py's rows. Two processes sharing one core meet the same
machine at the same moment: one checkout against itself gave 1.002 to 1.010 over four rounds.
What this measures is CPU per session when both want the CPU, with the caches shared by two
working sets; that is not sessions per second alone (a larger working set costs a little
more here), so run.py's rows stay the measure of the aims. This tells whether a change helps.
Compare within one sitting: when others load the machine, the farm's CPU limits both clients
and the ratio moves toward 1 (the rates printed show it: a quiet machine gives each client
some 300 to 400 sessions a second at concurrency 50).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import (  # noqa: E402
    LIKE_FOR_LIKE,
    _farm,
    _pinned,
    _stop,
    batch_command,
    raw_command,
    write_literals,
)

SESSIONS = 200_000  # more than any window holds: neither client runs out of work
WARM_UP = 3.0  # seconds: imports, the trust store, the first handshakes


def _command(kind: str, info: dict, c: int, targets: Path) -> tuple[list[str], Path | None, str]:  # type: ignore[type-arg]
    """The command, its standard input and its working directory (whose `probe` it runs)."""
    if kind == "raw":
        return [*raw_command(info, SESSIONS, c), "--mark"], None, str(ROOT)
    return [*batch_command(info, c), *LIKE_FOR_LIKE], targets, str(Path(kind).resolve())


def _round(kinds: list[str], info: dict, c: int, window: float, targets: Path) -> list[float]:  # type: ignore[type-arg]
    """Each client's lines per second over the window, both running at once."""
    running = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, kind in enumerate(kinds):
            cmd, stdin, cwd = _command(kind, info, c, targets)
            out = Path(tmp) / f"{i}.out"
            env = {**os.environ, "PYTHONPATH": cwd}
            with open(out, "wb") as sink, open(stdin or os.devnull, "rb") as inp:
                p = subprocess.Popen(
                    [*_pinned(1), *cmd], stdin=inp, stdout=sink, stderr=subprocess.DEVNULL,
                    cwd=cwd, env=env,
                )  # fmt: skip
            running.append((kind, p, out))
        try:
            time.sleep(WARM_UP)
            before = [out.read_bytes().count(b"\n") for _, _, out in running]
            start = time.monotonic()
            time.sleep(window)
            after = [out.read_bytes().count(b"\n") for _, _, out in running]
            spent = time.monotonic() - start
        finally:
            for _, p, _ in running:
                p.kill()
                p.wait()
    return [(b - a) / spent for a, b in zip(before, after, strict=True)]


def ratios(
    info: dict,  # type: ignore[type-arg]
    a: str,
    b: str,
    concurrency: int,
    rounds: int,
    window: float,
    show: bool = False,
) -> list[float]:
    """B's rate over A's in each round, against a farm already running (`info`)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.txt"  # written once: every batch client reads it
        write_literals(targets, info["hosts"], SESSIONS)
        for r in range(rounds):
            kinds = [a, b] if r % 2 == 0 else [b, a]
            rates = _round(kinds, info, concurrency, window, targets)
            rate_a, rate_b = rates if r % 2 == 0 else rates[::-1]
            out.append(rate_b / rate_a)
            if show:
                print(f"round {r + 1}: A {rate_a:.0f}/s, B {rate_b:.0f}/s, B/A {out[-1]:.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="raw, or a checkout's path (. for this one)")
    ap.add_argument("b", help="raw, or a checkout's path")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--window", type=float, default=6.0, help="seconds counted per round")
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    if args.a == args.b and args.a == "raw":
        ap.error("compare two different clients (or one checkout with itself)")
    if not _pinned(1):
        print("note: no taskset or one CPU: the two clients are not pinned together")
    farm, info = _farm(5, 10, pin=True)
    try:
        got = ratios(info, args.a, args.b, args.concurrency, args.rounds, args.window, show=True)
    finally:
        _stop(farm)
    print(f"B/A, median of {args.rounds} rounds: {statistics.median(got):.3f}")


if __name__ == "__main__":
    main()
