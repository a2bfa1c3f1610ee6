"""`batch --workers N`: the targets spread over N processes, their records merged into one stream.

One Python process tops out at a few hundred TLS sessions a second, all of it CPU; on a machine
with more cores, more processes go further. The parent only reads input, hands each line to a
worker (by domain, so repeats of a domain meet the same DNS cache), and writes the records that
come back; the workers run `run_batch` as a single process would.

Limits stay overall limits: each worker gets an equal share of --concurrency, --per-host,
--per-provider and the rates. Sharing is per worker: a worker's DNS cache and shared sessions serve its own targets.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from probe import exitcodes
from probe.batch import Record, Scale, error_record, refused_record
from probe.batchinput import Item, Refused
from probe.config import BatchLimits, ProbeRequest
from probe.messages import msg
from probe.text import to_json, to_json_bytes

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class WorkerConfig:
    template: ProbeRequest
    lang: str
    limits: BatchLimits
    scale: Scale = field(default_factory=Scale)

    @property
    def concurrency(self) -> int:
        return self.limits.concurrency

    @property
    def per_host(self) -> int:
        return self.limits.per_host

    @property
    def rate(self) -> float | None:
        return self.limits.rate


def plan(workers: int, concurrency: int, per_host: int, per_provider: int | None = None) -> int:
    """How many workers can split the limits so that each gets at least one slot."""
    return max(1, min(workers, concurrency, per_host, per_provider or workers))


def share(cfg: WorkerConfig, n: int) -> WorkerConfig:
    """One worker's part of the overall limits (rounded down, so the sums never exceed them)."""
    return WorkerConfig(cfg.template, cfg.lang, cfg.limits.share(n), cfg.scale)


def _shard(text: str, n: int) -> int:
    domain = text.rpartition("@")[2].strip().lower().rstrip(".")
    return zlib.crc32(domain.encode("utf-8", "replace")) % n


def lost_record(n: int, text: str, status: int | None) -> dict[str, object]:
    detail = msg("batch.worker_lost", status="?" if status is None else status)
    return error_record(n, text, "internal", detail, exitcodes.SOFTWARE)


class _Forked:
    """The part of Popen's interface the pool uses, for a forked worker."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    self.returncode = -1
                else:
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.01)
        return code

    def _signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class Worker:
    """A worker process: forked when this process has no other thread, else started anew."""

    def __init__(self, fork: bool, inherited: list[int]) -> None:
        self.proc: subprocess.Popen[bytes] | _Forked
        if fork:
            # Forked after the network stack and the catalog are loaded: the worker starts
            # with all of it, instead of spending a fifth of a second importing it again.
            to_child, from_parent = os.pipe()
            to_parent, from_child = os.pipe()
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child; checked by the CLI tests
                try:
                    os.dup2(to_child, 0)
                    os.dup2(from_child, 1)
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 2)
                    for fd in (to_child, from_parent, to_parent, from_child, devnull, *inherited):
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    _child(parent)
                finally:
                    os._exit(exitcodes.SOFTWARE)
            os.close(to_child)
            os.close(from_child)
            self.proc = _Forked(pid)
            self.stdin: IO[bytes] = os.fdopen(from_parent, "wb")
            self.stdout: IO[bytes] = os.fdopen(to_parent, "rb")
        else:
            # The same `probe` as ours, whatever the current directory holds (-P: neither the
            # script's nor the working directory on sys.path).
            home = str(Path(__file__).resolve().parent.parent)
            boot = (
                f"import sys; sys.path.insert(0, {home!r}); "
                f"from probe.workers import _child; _child({os.getpid()})"
            )
            popen = subprocess.Popen(
                [sys.executable, "-P", "-c", boot],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # A worker has nothing to say on stderr; whatever it might print (a crash)
                # must not reach the user raw. Its end is reported as error records instead.
                stderr=subprocess.DEVNULL,
            )
            assert popen.stdin is not None and popen.stdout is not None
            self.proc = popen
            self.stdin = popen.stdin
            self.stdout = popen.stdout
        self.pending: dict[int, str] = {}
        self.alive = True

    def stop(self) -> None:
        """End the process now (the run is over early); its pipes close with it."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def close(self) -> None:
        _close(self.stdin)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _close(self.stdout)


def spawn(n: int) -> list[Worker]:
    """N workers; fork only when no other thread could hold a lock the child would need."""
    fork = hasattr(os, "fork") and threading.active_count() == 1
    pool: list[Worker] = []
    for _ in range(n):
        ours = [fd for w in pool for fd in (w.stdin.fileno(), w.stdout.fileno())]
        pool.append(Worker(fork, ours))
    return pool


def run_workers(
    items: Iterable[Item],
    cfg: WorkerConfig,
    pool: list[Worker],
    on_record: Callable[[str, Record], None],
) -> None:
    """Feed every item to a worker; `on_record(line, record)` gets exactly one call per item.

    Targets a worker held when it died are recorded as lost at the end; when this process is
    interrupted (KeyboardInterrupt) they get no record, so that --resume probes them again.
    """
    _Run(cfg, pool, on_record).run(items)


class _Run:
    """One run over worker processes: a reader thread per worker, a dispatcher thread for the
    input, and this thread waiting for the end. Shared state changes under `lock`."""

    def __init__(
        self,
        cfg: WorkerConfig,
        pool: list[Worker],
        on_record: Callable[[str, Record], None],
    ) -> None:
        self.pool, self.on_record = pool, on_record
        self.n = len(pool)
        self.header = base64.b64encode(pickle.dumps(share(cfg, self.n))) + b"\n"
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.failure: list[BaseException] = []
        self.lost: list[tuple[int, str, int | None]] = []
        self.running = self.n

    def run(self, items: Iterable[Item]) -> None:
        for w in self.pool:
            try:
                w.stdin.write(self.header)
                w.stdin.flush()
            except OSError:
                w.alive = False
        threads = [threading.Thread(target=self.read, args=(w,), daemon=True) for w in self.pool]
        # The input is read on a daemon thread: a pipe that never ends (tail -f) must not
        # keep a stopped run alive.
        threads.append(threading.Thread(target=self.dispatch, args=(items,), daemon=True))
        for t in threads:
            t.start()
        try:
            self.wait()
        except BaseException:
            self.stopping.set()
            for w in self.pool:
                w.stop()
            for t in threads[:-1]:
                t.join(timeout=10)
            raise

    def wait(self) -> None:
        """Until every worker is done; then the lost targets get their records."""
        while not self.finished.wait(0.2):
            if self.stopping.is_set():
                break
        with self.lock:
            if self.failure:
                raise self.failure[0]
            left = sorted(self.lost)
        for line, text, status in left:
            rec = lost_record(line, text, status)
            self.on_record(to_json(rec) + "\n", rec)

    def fail(self, e: BaseException) -> None:
        """Under the lock: the first failure (the sink, the input) stops the run."""
        if not self.failure:
            self.failure.append(e)
        self.stopping.set()

    def record(self, raw: str, rec: Record) -> None:
        """Under the lock."""
        if self.failure:
            return
        try:
            self.on_record(raw, rec)
        except Exception as e:
            self.fail(e)

    def read(self, w: Worker) -> None:
        try:
            for raw in w.stdout:
                if not raw.endswith(b"\n"):
                    break  # a torn line: the worker died mid-write
                try:
                    text = raw.decode("utf-8")
                    rec = json.loads(text)
                    line = int(rec["line"])
                except (ValueError, KeyError, TypeError):
                    continue  # not a record; its target stays pending and is reported lost
                with self.lock:
                    # A line of another shard comes back as a bare marker: no record.
                    if w.pending.pop(line, None) is not None and not rec.get("skipped"):
                        self.record(text, rec)
        except OSError:
            pass
        finally:
            self._ended(w, w.proc.wait())

    def _ended(self, w: Worker, status: int) -> None:
        with self.lock:
            w.alive = False
            self.lost.extend((line, text, status) for line, text in sorted(w.pending.items()))
            w.pending.clear()
            self.running -= 1
            if self.running == 0:
                self.finished.set()

    def dispatch(self, items: Iterable[Item]) -> None:
        try:
            for line, text in items:
                if self.stopping.is_set():
                    return
                if isinstance(text, Refused):  # nothing for a worker to do: recorded here
                    rec = refused_record(line, text)
                    with self.lock:
                        self.record(to_json(rec) + "\n", rec)
                else:
                    self.send(line, text)
        except Exception as e:  # the input failed (a read error)
            with self.lock:
                self.fail(e)
        finally:
            for w in self.pool:
                _close(w.stdin)  # end of input: each worker finishes what it holds

    def send(self, line: int, text: str) -> None:
        first = _shard(text, self.n)
        for k in range(self.n):
            w = self.pool[(first + k) % self.n]
            with self.lock:
                if not w.alive:
                    continue
                w.pending[line] = text
            try:
                w.stdin.write(f"{line}\t{text}\n".encode())
                w.stdin.flush()
            except (OSError, ValueError):
                with self.lock:
                    taken = w.pending.pop(line, None) is None
                if taken:
                    return  # the worker's reader already counted it as lost
                continue  # never reached the worker: try the next one
            return
        with self.lock:
            self.lost.append((line, text, None))


def _close(f: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):  # a dead worker's pipe
        f.close()


def _die_with(parent: int) -> None:
    """End this worker within a second of its parent, however the parent ends (SIGKILL
    included): a worker without a parent only probes for nobody, holding connections.

    On Linux the kernel sends SIGKILL the moment the parent exits (PR_SET_PDEATHSIG).
    Everywhere, a thread checks that the parent is still ours: an orphan is adopted by
    another process, and its parent id changes.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(exitcodes.IOERR)

    # Checked once here too: the parent may have gone before the request above was made.
    if os.getppid() != parent:
        os._exit(exitcodes.IOERR)
    threading.Thread(target=watch, name="smtp-probe-parent", daemon=True).start()


def _child(parent: int) -> None:
    """A worker: the config on the first line of stdin, then "LINE<TAB>TARGET" lines."""
    _die_with(parent)
    from probe import aio
    from probe.batch import run_batch
    from probe.batchinput import fd_lines, stream_targets
    from probe.catalog import locale

    lines = fd_lines(0)
    header = next(lines, "")
    code = 0
    if header:
        cfg: WorkerConfig = pickle.loads(base64.b64decode(header))

        def items() -> Iterator[tuple[int, str]]:
            for raw in lines:
                line, _, text = raw.partition("\t")
                yield int(line), text

        def emit(rec: Record) -> None:
            data = to_json_bytes(rec, newline=True)
            while data:  # one record, whole, straight to the pipe (nothing buffered at exit)
                data = data[os.write(1, data) :]

        def skip(line: int) -> None:
            emit({"line": line, "skipped": True})

        try:
            aio.run(
                run_batch(
                    stream_targets(items()),
                    cfg.template,
                    emit,
                    locale(cfg.lang),
                    limits=cfg.limits,
                    scale=cfg.scale,
                    on_skip=skip,
                )
            )
        except KeyboardInterrupt:
            code = exitcodes.INTERRUPTED
        except OSError:  # the parent went away
            code = exitcodes.IOERR
    # No interpreter shutdown: the input thread may sit in a read that never returns.
    os._exit(code)
