"""Output that cannot be written, for every command: a full disk, a standard output closed at
start or an unwritable --output file is one line on stderr and exit 74, never a traceback; a
reader that goes away (`| head`) ends the run quietly. Workers end with their parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.lab.dns import LoopThread
from probe.lab.smtp import port_of, start_raw
from probe.workers import _shard

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
OFFLINE = ["--nameserver", "127.0.0.1:1", "--timeout", "0.5"]
COMMANDS = {
    "explain": ["explain", "550 5.1.1 User unknown"],
    "explain-json": ["explain", "--format", "json", "421", "5.7.26"],
    "codes": ["codes"],
    "compare": ["compare", "421", "521"],
    "help": ["--help"],
    "version": ["--version"],
    "demo": ["demo"],
    "probe": ["probe", "[127.0.0.1]:1", *OFFLINE],
    "probe-json": ["probe", "[127.0.0.1]:1", "--format", "json", *OFFLINE],
    "mx": ["mx", "example.test", "--no-connect", *OFFLINE],
    "batch": ["batch", "{inputs}", "--timeout", "0.5"],
    "batch-workers": ["batch", "{inputs}", "--timeout", "0.5", "--workers", "2"],
}


def smtp_probe(args: list[str], tmp: Path) -> list[str]:
    inputs = tmp / "in.txt"
    inputs.write_text("[127.0.0.1]:1\nx.test:0\n" * 3)
    return [sys.executable, "-m", "probe", *(a.format(inputs=inputs) for a in args)]


def assert_one_io_error(p: subprocess.CompletedProcess[bytes], reason: str) -> None:
    err = p.stderr.decode()
    assert p.returncode == 74, (p.returncode, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines() == [f"smtp-probe: error: I/O error: {reason}"], err


@pytest.mark.parametrize("name", COMMANDS)
def test_a_full_disk_is_exit_74_with_one_line(name: str, tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            smtp_probe(COMMANDS[name], tmp_path),
            stdout=full,
            stderr=subprocess.PIPE,
            env=ENV,
            timeout=60,
        )
    assert_one_io_error(p, "No space left on device")


@pytest.mark.parametrize("name", COMMANDS)
def test_a_closed_standard_output_is_exit_74_with_one_line(name: str, tmp_path: Path) -> None:
    cmd = ["sh", "-c", 'exec "$@" >&-', "sh", *smtp_probe(COMMANDS[name], tmp_path)]
    p = subprocess.run(cmd, stderr=subprocess.PIPE, env=ENV, timeout=60)
    assert_one_io_error(p, "standard output is closed")


@pytest.mark.parametrize("name", COMMANDS)
def test_a_reader_gone_before_the_first_write_ends_quietly(name: str, tmp_path: Path) -> None:
    """`smtp-probe ... | head -c0`: stop at once with 0, as `| head` does (README)."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run(
            smtp_probe(COMMANDS[name], tmp_path),
            stdout=w,
            stderr=subprocess.PIPE,
            env=ENV,
            timeout=60,
        )
    finally:
        os.close(w)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b"", p.stderr


def test_a_failing_stderr_too_still_exits_74(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            smtp_probe(COMMANDS["explain"], tmp_path), stdout=full, stderr=full, env=ENV
        )
    assert p.returncode == 74


@pytest.mark.parametrize(
    ("output", "reason"),
    [("/dev/full", "No space left on device"), ("{inputs}/x.jsonl", "Not a directory")],
)
def test_an_unwritable_output_file_is_exit_74(tmp_path: Path, output: str, reason: str) -> None:
    cmd = smtp_probe(["batch", "{inputs}", "--timeout", "0.5", "--output", output], tmp_path)
    p = subprocess.run(cmd, capture_output=True, env=ENV, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 74 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("smtp-probe: error: I/O error")
    assert reason in err


# Workers end with their parent.


@dataclass
class Silent:
    port: int
    connections: int = 0


@pytest.fixture
def silent_server() -> Iterator[Silent]:
    """Loopback servers on 127.0.0.1-16, one port, that accept and never greet."""
    lt = LoopThread()
    state = Silent(0)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        await reader.read()

    servers = []
    try:
        for i in range(1, 17):
            servers.append(lt.run(start_raw(silent, f"127.0.0.{i}", state.port)))
            state.port = port_of(servers[0])
        yield state
        for server in servers:
            lt.loop.call_soon_threadsafe(server.close)
    finally:
        lt.close()


def one_target_per_worker(port: int) -> list[str]:
    """Targets go to workers by domain: one for each of two workers."""
    by_worker = {}
    for i in range(1, 17):
        target = f"[127.0.0.{i}]:{port}"
        by_worker.setdefault(_shard(target, 2), target)
    assert len(by_worker) == 2
    return list(by_worker.values())


def _children(pid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"{pid} has not started {n} workers")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# With another thread running, the parent cannot fork its workers and starts them anew.
THREADED = """
import sys, threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
sys.argv = ["smtp-probe", *sys.argv[1:]]
from probe.cli import main
main()
"""


@pytest.mark.parametrize("started", ["forked", "started anew"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_stop_within_a_second_of_their_parent(
    silent_server: Silent, sig: int, started: str
) -> None:
    """Busy workers whose parent is gone would otherwise finish every target they hold (here
    two minutes of waiting for a greeting) for nobody."""
    args = ["batch", "-", "--workers", "2", "--greeting-timeout", "120", "--budget", "600"]
    head = ["-m", "probe"] if started == "forked" else ["-c", THREADED]
    proc = subprocess.Popen(
        [sys.executable, *head, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert proc.stdin is not None
    try:
        for target in one_target_per_worker(silent_server.port):
            proc.stdin.write(f"{target}\n".encode() * 3)
        proc.stdin.flush()
        workers = _children(proc.pid, 2)
        deadline = time.monotonic() + 30
        while silent_server.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # until each worker has a session under way
        assert silent_server.connections == 2 and all(_running(w) for w in workers)
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        assert _gone_within(workers, 1.0), [w for w in workers if _running(w)]
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


# A worker that clears the kernel's parent-death signal, leaving only the watching thread.
WATCH_ONLY = """
import ctypes, sys
from probe import workers

real = workers._die_with

def watching_only(parent):
    real(parent)
    ctypes.CDLL(None).prctl(workers._PR_SET_PDEATHSIG, 0, 0, 0, 0)

workers._die_with = watching_only
workers._child(int(sys.argv[1]))
"""
MIDDLE = """
import os, subprocess, sys
worker = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], str(os.getpid())],
    stdin=int(sys.argv[2]),
    stdout=subprocess.DEVNULL,
)
print(worker.pid, flush=True)
sys.stdin.read()
"""


def test_without_the_kernel_signal_a_worker_still_sees_its_parent_go() -> None:
    """The portable part: a thread notices that the worker was orphaned. The worker's input
    is held open by this test, so the end of its input cannot be what stops it."""
    r, w = os.pipe()
    parent = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, WATCH_ONLY, str(r)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
        text=True,
        pass_fds=(r,),
    )
    os.close(r)
    assert parent.stdout is not None and parent.stdin is not None
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1)  # the worker has started, cleared the signal, and waits for input
        assert _running(worker)
        parent.kill()
        parent.wait()
        assert _gone_within([worker], 1.0)
    finally:
        os.close(w)
        parent.stdin.close()
        parent.stdout.close()


# A one-shot command ends by os._exit once its output is flushed (probe.cli.console); this
# stands in for the teardown work it skips (the interpreter runs atexit handlers first).
TEARDOWN = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("teardown ran\\n"))
sys.argv = ["smtp-probe", *sys.argv[1:]]
from probe.cli import console
console()
"""


@pytest.mark.parametrize(
    ("args", "status", "teardown"),
    [
        (["codes", "--format", "json"], 0, False),
        (["explain", "--format", "json", "550 5.1.1 User unknown"], 0, False),
        (["explain", "--email", "/nonexistent/bounce.eml"], 66, False),
        (["probe", "[127.0.0.1]:1", "--format", "json", *OFFLINE], 75, False),
        (["batch", "-", "--timeout", "0.5"], 0, True),
    ],
)
def test_a_one_shot_command_skips_the_teardown_yet_writes_all_and_its_status(
    args: list[str], status: int, teardown: bool
) -> None:
    from click.testing import CliRunner

    from probe.cli import cli

    p = subprocess.run(
        [sys.executable, "-c", TEARDOWN, *args], input=b"", capture_output=True, env=ENV, timeout=60
    )
    err = p.stderr.decode()
    assert p.returncode == status, err
    assert ("teardown ran" in err) is teardown, err
    if status == 0 and args[0] != "batch":
        expected = CliRunner().invoke(cli, args, env={"NO_COLOR": "1"}).stdout
        assert p.stdout.decode() == expected  # every byte, though the process ended at once


def test_what_a_one_shot_command_left_in_a_buffer_is_written_before_it_ends() -> None:
    # stderr fully buffered, and a warning written to it without a flush (click's own
    # writes flush): the process ends at once, yet the warning must come out.
    code = """
import io, sys, warnings
sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False), 65536))
warnings.warn("left in the buffer")
sys.argv = ["smtp-probe", "codes"]
from probe.cli import console
console()
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ENV, timeout=60)
    assert p.returncode == 0
    assert "left in the buffer" in p.stderr.decode(), p.stderr
    assert p.stdout.decode().startswith("211")


def test_a_thread_still_running_keeps_the_teardown() -> None:
    code = """
import sys, threading, time
def late():
    time.sleep(0.3)
    sys.stderr.write("thread finished\\n")
threading.Thread(target=late).start()
sys.argv = ["smtp-probe", "codes"]
from probe.cli import console
console()
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ENV, timeout=60)
    assert p.returncode == 0
    assert "thread finished" in p.stderr.decode(), p.stderr


def test_a_profiler_still_gets_to_write_its_findings(tmp_path: Path) -> None:
    out = tmp_path / "explain.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "probe", "explain", "550"]
    p = subprocess.run(cmd, capture_output=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 0
