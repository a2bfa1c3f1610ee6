"""Python bytecodes per batch session, layer by layer: where batch's extra interpreter work is.

    python benchmarks/opcodes.py [--sessions 100,300] [--top 25]
    python benchmarks/opcodes.py --timed 12 [--sessions 1000]

Each layer runs the like-for-like session of run.py (EHLO, STARTTLS with a full handshake,
EHLO, MAIL, RCPT, RSET, QUIT) at concurrency 50 against the loopback farm, in a child process
that counts every bytecode it executes (sys.settrace with opcode events):

- raw: the raw asyncio client of raw_client.py;
- session: `probe.session.run_session`;
- probe: `probe.runner.probe` for an address literal (the target's walk, verdict, result);
- batch: `probe.batch.run_batch`, each record written as JSON Lines (what `smtp-probe batch`
  does, without the command line).

Two session counts, and the difference divided by the difference in sessions: imports and
warm-up drop out. The counts are the same from run to run (a few opcodes apart where the
kernel splits a read), so a change's effect shows here when timed runs on a shared VM cannot
tell it from noise. They count bytecodes, not time: one opcode of a dict lookup costs less than
one that calls a function, and work in C (OpenSSL, uvloop, orjson) counts nothing.

With --timed ROUNDS the same layers are timed instead: one process, untraced, runs each layer
for the larger session count in every round (the order reversed every other round) and adds
up the process's CPU time per layer. The batch layer here writes to /dev/null and has no
command line around it. Side by side in one process the layers still move as much from run
to run as run.py's whole processes do (batch 0.79x to 0.96x the raw client on the seventh
day); what held in every run was the shape: `run_session` costs what the raw client does, and
the probe and batch layers add the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import _farm, _pinned, _stop  # noqa: E402

LAYERS = ("raw", "session", "probe", "batch")
CONCURRENCY = 50


def _counting() -> collections.Counter[str]:
    """Start counting this thread's bytecodes by function ("file:function")."""
    counts: collections.Counter[str] = collections.Counter()

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        key = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"

        def on_opcode(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                counts[key] += 1
            return on_opcode

        return on_opcode

    sys.settrace(on_call)
    return counts


async def _layer(layer: str, n: int, port: int, cafile: str, hosts: list[str]) -> None:
    """`n` sessions through `layer`, CONCURRENCY at a time."""
    from raw_client import session as raw_session

    from probe.batch import run_batch
    from probe.catalog import locale
    from probe.config import BatchLimits, ProbeRequest, SessionOptions
    from probe.context import RunContext
    from probe.runner import probe
    from probe.session import run_session
    from probe.target import parse_target
    from probe.text import to_json_bytes

    rcpts = ("user@d1.test",)
    opts = SessionOptions(helo="bench.test", rcpts=rcpts, cafile=cafile, resume_tls=False)
    run = RunContext()
    reqs = [ProbeRequest(target=parse_target(f"[{h}]"), session=opts, port=port) for h in hosts]
    if layer == "batch":
        with open(os.devnull, "wb") as out:

            async def items() -> AsyncIterator[tuple[int, str]]:
                for i in range(n):
                    yield (i + 1, f"[{hosts[i % len(hosts)]}]")

            limits = BatchLimits(concurrency=CONCURRENCY, per_host=50, reuse=1)
            emit = lambda rec: out.write(to_json_bytes(rec) + b"\n")  # noqa: E731
            await run_batch(items(), reqs[0], emit, locale("en"), limits=limits)
        return
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False

    async def one(i: int) -> None:
        host = hosts[i % len(hosts)]
        if layer == "raw":
            await raw_session(host, port, ctx, "user@d1.test", rset=True)
        elif layer == "session":
            await run_session(host, host, port, opts, run)
        else:
            await probe(reqs[i % len(hosts)], run=run)

    todo = list(range(n))

    async def worker() -> None:
        while todo:
            await one(todo.pop())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop smtp-probe runs on: uvloop's where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _child(layer: str, n: int, port: int, cafile: str, hosts: list[str]) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        counts = _counting()
        runner.run(_layer(layer, n, port, cafile, hosts))
        sys.settrace(None)
    print(json.dumps(counts))


def _timed_child(rounds: int, n: int, port: int, cafile: str, hosts: list[str]) -> None:
    spent: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        for layer in LAYERS:  # warm: lazy imports, the catalog, the trust store
            runner.run(_layer(layer, CONCURRENCY, port, cafile, hosts))
        for r in range(rounds):
            for layer in LAYERS if r % 2 == 0 else LAYERS[::-1]:
                start = time.process_time()
                runner.run(_layer(layer, n, port, cafile, hosts))
                spent[layer].append(time.process_time() - start)
    print(json.dumps(spent))


def _timed(rounds: int, n: int, info: dict[str, Any]) -> None:
    cmd = [*_pinned(1), sys.executable, __file__, "--timed-child", str(rounds), str(n)]
    cmd += [str(info["smtp_port"]), info["cafile"], *info["hosts"]]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    spent = json.loads(p.stdout.splitlines()[-1])
    raw = spent["raw"]
    print(f"CPU per session, {rounds} rounds of {n} sessions a layer (concurrency {CONCURRENCY}):")
    for layer in LAYERS:
        us = 1e6 * sum(spent[layer]) / (n * rounds)
        pairs = statistics.median(r / t for r, t in zip(raw, spent[layer], strict=True))
        print(f"  {layer:<8} {us:6.0f} us  ({pairs:.2f}x the raw client's sessions per CPU second)")


def _count(layer: str, n: int, info: dict[str, Any]) -> collections.Counter[str]:
    cmd = [*_pinned(1), sys.executable, __file__, "--child", layer, str(n)]
    cmd += [str(info["smtp_port"]), info["cafile"], *info["hosts"]]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return collections.Counter(json.loads(p.stdout.splitlines()[-1]))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        layer, n, port, cafile, *hosts = sys.argv[2:]
        _child(layer, int(n), int(port), cafile, hosts)
        return
    if sys.argv[1:2] == ["--timed-child"]:
        rounds, n, port, cafile, *hosts = sys.argv[2:]
        _timed_child(int(rounds), int(n), int(port), cafile, hosts)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="100,300", help="the two session counts, a,b")
    ap.add_argument("--top", type=int, default=25, help="functions of the batch layer shown")
    ap.add_argument("--timed", type=int, default=0, metavar="ROUNDS", help="time, not count")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sessions.split(",")]
    farm, info = _farm(5, 10, pin=True)
    if args.timed:  # one size: the larger, when two are given
        try:
            _timed(args.timed, sizes[-1], info)
        finally:
            _stop(farm)
        return
    a, b = sizes
    per: dict[str, dict[str, float]] = {}
    try:
        for layer in LAYERS:
            small, big = _count(layer, a, info), _count(layer, b, info)
            per[layer] = {k: (big[k] - small[k]) / (b - a) for k in big.keys() | small.keys()}
    finally:
        _stop(farm)
    raw = sum(per["raw"].values())
    print(f"Python bytecodes per session ({b} sessions less {a}, concurrency {CONCURRENCY}):")
    for layer in LAYERS:
        total = sum(per[layer].values())
        print(f"  {layer:<8} {total:8.0f}  ({total / raw:.2f}x the raw client)")
    print(f"The batch layer's functions, most bytecodes first (top {args.top}):")
    ranked = sorted(per["batch"].items(), key=lambda kv: -kv[1])
    for name, count in ranked[: args.top]:
        print(f"  {count:7.0f}  {name}")


if __name__ == "__main__":
    main()
