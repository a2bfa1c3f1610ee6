"""Where the time of a like-for-like session goes: the raw client against `smtp-probe batch`.

    python benchmarks/breakdown.py [--sessions 3000] [--concurrency 50]

Both clients run the like-for-like sessions of run.py against the loopback farm (farm on CPU
0, client on CPU 1), each under py-spy (`pip install py-spy`), which samples the client's
Python stacks a thousand times a second without slowing it. Every sample is put in one
phase by the frames it holds, and each phase is printed as microseconds per session:

- handshake: `SSLObject.do_handshake`, that is OpenSSL's work for the TLS handshake;
- TLS records: the other calls into the SSL object (read, write, the peer's certificate);
- event loop: samples with no Python frame but the loop's, uvloop's own C code (sockets,
  transports, callbacks);
- connect: the call that opens the connection;
- record: batch's record of each target, made and written (the raw client makes none);
- verdict, TLS facts: batch's judgement of each target and of its certificate chain;
- other Python: everything else the session runs (the dialogue, the runner, the limits);
- start-up and exit: imports and the interpreter's end (batch leaves these out of its own
  time, and the raw client out of what it prints).

Counts of bytecodes (opcodes.py) do not move from run to run; this shows time, where an
interpreter instruction and an OpenSSL one cost differently. Timings move with the machine:
on a shared VM one client's run can take a third longer than the other's next to it. So the
two take turns (five by default, the order switched each turn), and each figure is the median
of its phase over the turns; compare the two columns of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import _farm, _pinned, _stop, like_for_like  # noqa: E402

# (phase, any of these in a sample's stack); the first that matches takes the sample.
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("handshake", ("SSLObject.do_handshake",)),
    ("TLS records", ("SSLObject.", "SSLContext.wrap_bio")),
    ("record", ("run_batch.<locals>.record", "emit (", "to_json_bytes", "Stats.add")),
    ("verdict", ("decide (", "evaluate (")),
    ("TLS facts", ("tls_facts (",)),
    ("connect", ("Connection.open (probe/wire.py:36", "open_connection (asyncio/streams.py")),
]
ORDER = [p for p, _ in PHASES[:2]] + ["event loop"] + [p for p, _ in PHASES[2:]]
ORDER += ["other Python", "start-up and exit"]


def phase(frames: list[str]) -> str:
    """The phase of one sample, by the frames of its stack (outermost first)."""
    stack = ";".join(frames)
    # A coroutine resumed by the loop shows only its own chain; a sample of the main
    # thread outside the loop is start-up or exit.
    if "Runner.run" not in stack and frames[0].startswith(("_run_module_as_main", "<module>")):
        return "start-up and exit"
    if frames[-1].startswith("Runner.run"):
        return "event loop"
    for name, keys in PHASES:
        if any(k in stack for k in keys):
            return name
    return "other Python"


def tally(path: Path) -> collections.Counter[str]:
    """Samples per phase in a py-spy raw file (each line: frames;... count)."""
    found: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            found[phase(stack.split(";"))] += int(count)
    return found


def sampled(cmd: list[str], out: Path, stdin: Path | None) -> collections.Counter[str]:
    spy = ["py-spy", "record", "--rate", "1000", "--format", "raw", "--nonblocking"]
    with open(stdin or "/dev/null", "rb") as inp, tempfile.TemporaryFile() as sink:
        subprocess.run(
            [*spy, "-o", str(out), "--", *_pinned(1), *cmd],
            stdin=inp,
            stdout=sink,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    return tally(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--turns", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("breakdown.py: needs py-spy on PATH (pip install py-spy)")
    n, c = args.sessions, args.concurrency
    farm, info = _farm(5, 10, pin=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            targets = Path(tmp) / "targets.txt"
            raw, batch = like_for_like(info, n, c, targets)
            cmds = {"raw client": (raw, None), "batch": (batch, targets)}
            got: dict[str, list[collections.Counter[str]]] = {k: [] for k in cmds}
            for turn in range(args.turns):
                for name in list(cmds)[:: -1 if turn % 2 else 1]:
                    cmd, stdin = cmds[name]
                    got[name].append(sampled(cmd, Path(tmp) / "samples.txt", stdin))
    finally:
        _stop(farm)
    print(
        f"Microseconds per session ({n} sessions, concurrency {c}; py-spy samples; "
        f"medians of {args.turns} turns):"
    )
    print(f"  {'phase':<18} {'raw client':>10} {'batch':>10}")
    for name in [*ORDER, "total"]:
        a, b = (_median(runs, name) * 1000 / n for runs in got.values())
        print(f"  {name:<18} {a:10.0f} {b:10.0f}")


def _median(runs: list[collections.Counter[str]], name: str) -> float:
    return statistics.median(sum(r.values()) if name == "total" else r[name] for r in runs)


if __name__ == "__main__":
    main()
