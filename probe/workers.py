"""`batch --workers N`: the targets spread over N processes, their records merged into one stream.

One Python process tops out at a few hundred TLS sessions a second, all of it CPU; on a machine
with more cores, more processes go further. The parent only reads input, hands each line to a
worker (by domain, so repeats of a domain meet the same DNS cache), and writes the records that
come back; the workers run `run_batch` as a single process would.

Limits stay overall limits: each worker gets an equal share of --concurrency, --per-host and
--rate. Sharing is per worker: a worker's DNS cache and shared sessions serve its own targets.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from probe.batch import SCHEMA
from probe.runner import ProbeRequest


@dataclass(frozen=True)
class WorkerConfig:
    template: ProbeRequest
    lang: str
    concurrency: int
    per_host: int
    rate: float | None


def plan(workers: int, concurrency: int, per_host: int) -> int:
    """How many workers can split the limits so that each gets at least one slot."""
    return max(1, min(workers, concurrency, per_host))


def share(cfg: WorkerConfig, n: int) -> WorkerConfig:
    """One worker's part of the overall limits (rounded down, so the sums never exceed them)."""
    return WorkerConfig(
        cfg.template,
        cfg.lang,
        max(1, cfg.concurrency // n),
        max(1, cfg.per_host // n),
        cfg.rate / n if cfg.rate else None,
    )


def _shard(text: str, n: int) -> int:
    domain = text.rpartition("@")[2].strip().lower().rstrip(".")
    return zlib.crc32(domain.encode("utf-8", "replace")) % n


def lost_record(n: int, text: str, status: int | None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "line": n,
        "input": text,
        "error": {
            "kind": "internal",
            "detail": f"the worker process ended (exit status {status}) before this target finished",
        },
        "exit_status": 70,
    }


class Worker:
    """A worker process, started before the parent's own slow imports so both run at once."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probe.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A worker has nothing to say on stderr; whatever it might print (a crash) must not
            # reach the user raw. Its end is reported as error records instead.
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.pending: dict[int, str] = {}
        self.alive = True

    def close(self) -> None:
        _close(self.stdin)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def spawn(n: int) -> list[Worker]:
    return [Worker() for _ in range(n)]


def run_workers(
    items: Iterable[tuple[int, str]],
    cfg: WorkerConfig,
    pool: list[Worker],
    on_record: Callable[[str, dict[str, Any]], None],
) -> None:
    """Feed every item to a worker; `on_record(line, record)` gets exactly one call per item."""
    n = len(pool)
    header = base64.b64encode(pickle.dumps(share(cfg, n))) + b"\n"
    lock = threading.Lock()
    stopping = threading.Event()
    for w in pool:
        try:
            w.stdin.write(header)
            w.stdin.flush()
        except OSError:
            w.alive = False

    failure: list[BaseException] = []

    def record(raw: str, rec: dict[str, Any]) -> None:
        """Under the lock. A failing sink (`| head` gone) stops the run; the caller sees why."""
        if failure:
            return
        try:
            on_record(raw, rec)
        except Exception as e:
            failure.append(e)
            stopping.set()

    def deliver(raw: str, rec: dict[str, Any]) -> None:
        with lock:
            record(raw, rec)

    def read(w: Worker) -> None:
        for raw in w.stdout:
            if not raw.endswith(b"\n"):
                break  # a torn line: the worker died mid-write
            text = raw.decode("utf-8")
            rec = json.loads(text)
            with lock:
                w.pending.pop(rec["line"], None)
                record(text, rec)
        w.stdout.close()
        status = w.proc.wait()
        with lock:
            w.alive = False
            left = sorted(w.pending.items())
            w.pending.clear()
        if stopping.is_set() or status in (130, -signal.SIGINT):
            return  # interrupted (Ctrl-C reaches the workers too): the rest is for --resume
        for line, text in left:
            rec = lost_record(line, text, status)
            deliver(json.dumps(rec, ensure_ascii=False) + "\n", rec)

    readers = [threading.Thread(target=read, args=(w,), daemon=True) for w in pool]
    for t in readers:
        t.start()
    try:
        for line, text in items:
            if stopping.is_set():
                break
            first = _shard(text, n)
            for k in range(n):
                w = pool[(first + k) % n]
                with lock:
                    if not w.alive:
                        continue
                    w.pending[line] = text
                try:
                    w.stdin.write(f"{line}\t{text}\n".encode())
                    w.stdin.flush()
                except OSError:
                    with lock:
                        taken = w.pending.pop(line, None) is None
                    if taken:
                        break  # the worker's reader already recorded it as lost
                    continue  # never reached the worker: try the next one
                break
            else:
                rec = lost_record(line, text, None)
                deliver(json.dumps(rec, ensure_ascii=False) + "\n", rec)
        if failure:
            raise failure[0]
        for w in pool:
            _close(w.stdin)
        for t in readers:
            t.join()
        if failure:
            raise failure[0]
    except BaseException:
        stopping.set()
        for w in pool:
            _close(w.stdin)
            if w.proc.poll() is None:
                w.proc.terminate()
        for t in readers:
            t.join(timeout=10)
        raise


def _close(f: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # a dead worker's pipe
        f.close()


def _child() -> int:
    """A worker: the config on the first line of stdin, then "LINE<TAB>TARGET" lines."""
    import asyncio

    from probe import catalog
    from probe.batch import run_batch, stream_targets
    from probe.catalog import locale

    catalog.load()  # while the parent is still starting up
    stdin = sys.stdin.buffer
    header = stdin.readline()
    if not header:
        return 0  # the parent stopped before it had work (a bad option, say)
    cfg: WorkerConfig = pickle.loads(base64.b64decode(header))
    out = sys.stdout.buffer

    def items() -> Iterable[tuple[int, str]]:
        for raw in stdin:
            line, _, text = raw.decode("utf-8", "replace").rstrip("\n").partition("\t")
            yield int(line), text

    def emit(rec: dict[str, Any]) -> None:
        out.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        out.flush()

    try:
        asyncio.run(
            run_batch(
                stream_targets(iter(items())),
                cfg.template,
                emit,
                locale(cfg.lang),
                concurrency=cfg.concurrency,
                per_host=cfg.per_host,
                rate=cfg.rate,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
