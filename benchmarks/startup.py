"""Start-up of whole `smtp-probe` processes against `python -c "import click"`, in one run.

    python benchmarks/startup.py               # median of 15 runs each, after one warm-up each
    python benchmarks/startup.py --runs 31
    python benchmarks/startup.py --module      # `python -m probe` instead of the console script

What is timed is what a user waits for: a new process from exec to exit, output discarded.
By default the command is the `smtp-probe` console script installed next to this Python
(`pip install -e .` in a venv puts it in the venv's bin/); it runs under the same
interpreter, so the difference to `import click` is our own imports and work. Without that
script, or with --module, it is `sys.executable -m probe`, which imports the same modules.

Bytecode of the package is compiled first (`compileall`), as pip does on install: the
environment may set PYTHONDONTWRITEBYTECODE=1, and compiling on every run is not start-up.

The goal of the issue: `explain 550` within 1.5 times `import click`. On a shared VM whole
runs differ by a tenth or more, so compare the ratios of one run, not figures across runs.
Every command's exit status is checked, so a broken command cannot look fast.

Columns: median wall-clock ms and its ratio to `import click` (the issue's measure), then the
median CPU ms (user + system, from the children's rusage) and its ratio: CPU time varies less
when other work shares the machine, wall time is what a user waits.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES: list[tuple[list[str], int]] = [
    (["explain", "550"], 0),
    (["explain", "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown"], 0),
    (["compare", "421", "521"], 0),
    (["--help"], 0),
]


def command(module: bool) -> list[str]:
    script = Path(sys.executable).parent / "smtp-probe"
    if not module and script.exists():
        return [str(script)]
    if not module and (found := shutil.which("smtp-probe")):
        return [found]
    return [sys.executable, "-m", "probe"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], status: int) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of `cmd`."""
    cpu = _cpu()
    start = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if p.returncode != status:
        raise SystemExit(f"{' '.join(cmd)}: exit status {p.returncode}, expected {status}")
    return elapsed, _cpu() - cpu


def medians_ms(cmds: list[tuple[list[str], int]], runs: int) -> list[tuple[float, float]]:
    """Median wall and CPU ms of each command; the runs take turns (in a new order each
    round), so that a busy spell on the machine hits every command alike."""
    for cmd, status in cmds:
        timed(cmd, status)  # warm-up: file cache, and any first-run work
    times: list[list[tuple[float, float]]] = [[] for _ in cmds]
    order = list(range(len(cmds)))
    rng = random.Random(1)
    for _ in range(runs):
        rng.shuffle(order)
        for i in order:
            times[i].append(timed(*cmds[i]))
    return [
        (statistics.median(w for w, _ in t) * 1000, statistics.median(c for _, c in t) * 1000)
        for t in times
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="timed runs per command (default 15)")
    ap.add_argument("--module", action="store_true", help="run `python -m probe`")
    args = ap.parse_args()

    compileall.compile_dir(ROOT / "probe", quiet=1)
    env_lang = {k: os.environ[k] for k in ("LC_ALL", "LC_MESSAGES", "LANG") if k in os.environ}
    cli = command(args.module)
    cmds = [([sys.executable, "-c", "import click"], 0)]
    cmds += [([*cli, *extra], status) for extra, status in CASES]
    labels = ["python -c 'import click'"]
    labels += [f"smtp-probe {' '.join(_quote(a) for a in extra)}" for extra, _ in CASES]
    rows = list(zip(labels, medians_ms(cmds, args.runs), strict=True))
    click_ms, click_cpu = rows[0][1]

    print(f"command: {' '.join(cli)}")
    print(
        f"runs: median of {args.runs}, taking turns in shuffled order, after one warm-up each; locale env: {env_lang or 'unset'}"
    )
    label_w = max(len(label) for label, _ in rows)
    print(f"{'measure':<{label_w}}  {'ms':>6}  {'x click':>7}  {'cpu ms':>6}  {'x click':>7}")
    for label, (ms, cpu) in rows:
        print(
            f"{label:<{label_w}}  {ms:>6.1f}  {ms / click_ms:>6.2f}x  "
            f"{cpu:>6.1f}  {cpu / click_cpu:>6.2f}x"
        )


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


if __name__ == "__main__":
    main()
