"""`smtp-probe batch`: one record per input line, per-host limits, resume, errors as records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from probe.batch import Stats, run_batch
from probe.batchinput import read_targets, recorded_lines
from probe.catalog import locale
from probe.cli import cli
from probe.config import BatchLimits, ProbeRequest, SessionOptions, StartTls
from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.farm import client_args
from probe.lab.smtp import GreetingSMTP, Scripted
from probe.result import Target
from probe.workers import WorkerConfig, plan, share
from tests.conftest import valid, valid_lines

HOSTS = [f"127.0.0.{i}" for i in range(2, 7)]
N = 1000


class Counter:
    def __init__(self) -> None:
        self.active: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.total = 0


def counting_smtp(counter: Counter, listener: str, loop: asyncio.AbstractEventLoop) -> Any:
    class Counting(GreetingSMTP):
        def connection_made(self, transport: Any) -> None:
            counter.active[listener] += 1
            counter.total += 1
            counter.peak[listener] = max(counter.peak[listener], counter.active[listener])
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            counter.active[listener] -= 1
            super().connection_lost(exc)

    return lambda: Counting(
        Scripted(rcpt={"nobody": "550 5.1.1 no such user"}), hostname=f"mx-{listener}", loop=loop
    )


@dataclass
class Farm:
    dns_port: int
    port: int
    counter: Counter
    lt: LoopThread


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    zone = (
        "\n".join(f"d{i}.test. 60 IN MX 10 mx{i % len(HOSTS)}.farm.test." for i in range(N))
        + "\n"
        + "\n".join(f"mx{j}.farm.test. 60 IN A {h}" for j, h in enumerate(HOSTS))
    )
    lt = LoopThread()
    dns = ZoneDNS(zone)
    counter = Counter()
    servers: list[Any] = []
    try:
        dns_port = lt.run(dns.start())
        port = 0
        for h in HOSTS:
            srv = lt.run(lt.loop.create_server(counting_smtp(counter, h, lt.loop), h, port))
            port = srv.sockets[0].getsockname()[1]
            servers.append(srv)
        yield Farm(dns_port, port, counter, lt)
    finally:
        for s in servers:
            lt.loop.call_soon_threadsafe(s.close)
        lt.run(dns.stop())
        lt.close()


def write_inputs(path: Path, n: int = N) -> None:
    lines = ["# a comment line", ""]
    lines += [f"{'nobody' if i % 10 == 0 else 'user'}{i}@d{i}.test" for i in range(n)]
    lines.append("not a valid target!")
    path.write_text("\n".join(lines) + "\n")


def base_args(farm: Farm) -> list[str]:
    return [
        "--nameserver",
        f"127.0.0.1:{farm.dns_port}",
        "--port",
        str(farm.port),
        "--timeout",
        "5",
        "--helo",
        "batch.test",
        "--starttls",
        "never",
    ]


def batch_cmd(inputs: Path, farm: Farm, *extra: str) -> list[str]:
    """`smtp-probe batch` as a separate process, for signals, killed workers and closed pipes."""
    return [sys.executable, "-m", "probe", "batch", str(inputs), *base_args(farm), *extra]


def test_thousand_inputs_give_thousand_records_within_per_host_limits(
    farm: Farm, tmp_path: Path
) -> None:
    inputs = tmp_path / "targets.txt"
    write_inputs(inputs)
    farm.counter.peak.clear()
    before = farm.counter.total
    r = CliRunner().invoke(
        cli, ["batch", str(inputs), *base_args(farm), "--concurrency", "50", "--per-host", "2"]
    )
    assert r.exit_code == 0, r.output[-2000:]
    records = valid_lines(r.stdout)
    # Connections are kept between targets: the server saw one for each session not reused,
    # and the summary says how many were.
    sessions = [s for rec in records for s in rec.get("sessions", ())]
    reused = sum(s["reused"] for s in sessions)
    assert farm.counter.total - before == len(sessions) - reused
    assert reused > len(sessions) // 2
    assert f"{reused} of {len(sessions)} sessions on kept connections" in r.stderr
    assert len(records) == N + 1
    lines = [rec["line"] for rec in records]
    assert sorted(lines) == list(range(3, N + 4))  # the comment and the blank line are skipped
    by_line = {rec["line"]: rec for rec in records}
    assert by_line[3]["verdict"] == "permanent" and by_line[4]["verdict"] == "accepted"
    assert by_line[N + 3]["error"]["kind"] == "bad_target"
    assert all(rec["schema"] == "smtp-probe/batch/2" for rec in records)
    assert max(farm.counter.peak.values()) == 2  # the limit held, and was used
    assert "1001 records" in r.stderr
    assert " done, " not in r.stderr  # no progress bar when stderr is not a terminal


def test_domains_sharing_an_mx_share_one_session(farm: Farm, tmp_path: Path) -> None:
    inputs = tmp_path / "domains.txt"
    inputs.write_text("\n".join(f"d{i}.test" for i in range(200)) + "\n")
    before = farm.counter.total
    r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), "--quit-after", "ehlo"])
    assert r.exit_code == 0
    assert len(r.stdout.splitlines()) == 200
    assert farm.counter.total - before == len(HOSTS)


def test_workers_give_one_record_per_line_within_overall_limits(farm: Farm, tmp_path: Path) -> None:
    inputs = tmp_path / "targets.txt"
    write_inputs(inputs)
    farm.counter.peak.clear()
    r = CliRunner().invoke(
        cli,
        [
            "batch",
            str(inputs),
            *base_args(farm),
            "--concurrency",
            "50",
            "--per-host",
            "2",
            "--workers",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output[-2000:]
    records = valid_lines(r.stdout)
    assert sorted(rec["line"] for rec in records) == list(range(3, N + 4))
    by_line = {rec["line"]: rec for rec in records}
    assert by_line[3]["verdict"] == "permanent" and by_line[4]["verdict"] == "accepted"
    assert by_line[N + 3]["error"]["kind"] == "bad_target"
    # Each worker holds one slot per address, so two processes together stay within 2.
    assert 1 <= max(farm.counter.peak.values()) <= 2
    assert "1001 records" in r.stderr and "accepted" in r.stderr


@pytest.mark.parametrize(
    ("workers", "concurrency", "per_host", "rate"),
    [(2, 50, 2, None), (4, 3, 10, 90.0), (8, 100, 3, 10.0), (3, 10, 10, None)],
)
def test_workers_share_the_limits_without_exceeding_them(
    workers: int, concurrency: int, per_host: int, rate: float | None
) -> None:
    cfg = WorkerConfig(
        ProbeRequest(Target("", "domain", None, None, None)),
        "en",
        BatchLimits(concurrency, per_host, rate),
    )
    n = plan(workers, concurrency, per_host)
    part = share(cfg, n)
    assert 1 <= n <= workers
    assert n * part.concurrency <= concurrency and n * part.per_host <= per_host
    assert part.per_host >= 1 and part.concurrency >= 1
    if rate:
        assert part.rate is not None and n * part.rate == pytest.approx(rate)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_worker_that_dies_leaves_error_records_not_lost_lines(
    farm: Farm, tmp_path: Path, sig: int
) -> None:
    """Killed, or given Ctrl-C's signal alone: its targets are reported, never dropped."""
    inputs = tmp_path / "targets.txt"
    write_inputs(inputs, 300)
    out = tmp_path / "out.jsonl"
    cmd = batch_cmd(inputs, farm, "--output", str(out), "--rate", "60", "--workers", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 20):
        time.sleep(0.05)
    os.kill(_children(proc.pid)[0], sig)
    at_kill = out.read_text().count("\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    records = valid_lines(out.read_text())
    assert sorted(rec["line"] for rec in records) == list(range(3, 304))
    lost = [r for r in records if r.get("error", {}).get("kind") == "internal"]
    assert lost, "the dead worker had targets in hand"
    assert all("worker process ended" in r["error"]["detail"] for r in lost)
    assert all(r["exit_status"] == 70 for r in lost)
    # The run went on with the other worker long after the death.
    assert sum("verdict" in r for r in records) > at_kill + 50


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_interruption(farm: Farm, tmp_path: Path, workers: int) -> None:
    inputs = tmp_path / "targets.txt"
    write_inputs(inputs)
    out = tmp_path / "out.jsonl"
    cmd = batch_cmd(inputs, farm, "--workers", str(workers), "--concurrency", "4")
    cmd += ["--output", str(out), "--rate", "200"]  # resumed below without --rate
    # Its own process group, signalled as a whole: what Ctrl-C on a terminal does.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 100):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"rerun with --resume" in err
    first = out.read_text().splitlines()
    assert 100 <= len(first) < N + 1
    with out.open("a") as f:
        f.write('{"schema": "smtp-probe/batch/1", "line": 77')  # a torn last line
    r = subprocess.run([*cmd[:-2], "--resume"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = valid_lines(out.read_text())
    lines = [rec["line"] for rec in records]
    assert len(lines) == len(set(lines)) == N + 1
    assert recorded_lines(str(out)) == set(range(3, N + 4))
    # Nothing was written off as lost by the interruption: --resume probed it all for real.
    assert not any(rec.get("error", {}).get("kind") == "internal" for rec in records)


async def test_a_probe_that_raises_becomes_an_error_record() -> None:
    async def targets() -> AsyncIterator[tuple[int, str]]:
        for item in read_targets(["ok.test", "boom.test", "", "also.test"]):
            yield item

    async def fake_probe(req: ProbeRequest) -> Any:
        if req.target.domain == "boom.test":
            raise RuntimeError("kaboom")
        raise ValueError("no network here")

    got: list[dict[str, Any]] = []
    template = ProbeRequest(Target("", "domain", None, None, None), SessionOptions())
    stats = await run_batch(
        targets(),
        template,
        got.append,
        locale("en"),
        probe_fn=fake_probe,
        limits=BatchLimits(concurrency=2),
    )
    assert sorted(r["line"] for r in got) == [1, 2, 4]
    boom = next(r for r in got if r["line"] == 2)
    assert boom["error"] == {"kind": "internal", "detail": "RuntimeError: kaboom"}
    assert stats.errors == 3 and stats.done == 3


async def test_a_cancel_that_a_probe_swallows_does_not_hang_the_run() -> None:
    # Python 3.11's asyncio.wait_for (aiosmtplib awaits every reply with it) returns the reply
    # and drops the cancel when both arrive together: Ctrl-C once hung a run this way.
    probing = asyncio.Event()

    async def targets() -> AsyncIterator[tuple[int, str]]:
        yield 1, "swallow.test"
        await asyncio.Event().wait()  # an input that stays open, like a pipe

    async def swallowing_probe(req: ProbeRequest) -> Any:
        probing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        raise ValueError("carried on after the cancel")

    template = ProbeRequest(Target("", "domain", None, None, None), SessionOptions())
    got: list[dict[str, Any]] = []
    run = asyncio.create_task(
        run_batch(targets(), template, got.append, locale("en"), probe_fn=swallowing_probe)
    )
    await probing.wait()
    run.cancel()
    await asyncio.wait([run], timeout=10)  # a guard against the hang, not a speed check
    assert run.done(), "the run hung after its cancel"
    run.cancel()  # a second cancel (a second Ctrl-C) ends the hung run; a finished one stays
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [r["error"]["kind"] for r in got] == ["internal"]


def test_no_file_descriptor_leaks(farm: Farm, tmp_path: Path) -> None:
    inputs = tmp_path / "few.txt"
    inputs.write_text("".join(f"user{i}@d{i}.test\n" for i in range(50)))
    fd_dir = Path("/proc/self/fd")
    CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm)])  # warm up imports and caches
    before = len(list(fd_dir.iterdir()))
    for _ in range(3):
        r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), "--concurrency", "10"])
        assert r.exit_code == 0
    # The farm serves from a thread of this process: its side of the last connections may
    # take a moment to close after the client's.
    for _ in range(40):
        if len(list(fd_dir.iterdir())) <= before:
            break
        time.sleep(0.05)
    assert len(list(fd_dir.iterdir())) <= before


def test_benchmark_farm_speaks_starttls_and_answers_recipients(tmp_path: Path) -> None:
    farm = subprocess.Popen(
        [sys.executable, "-m", "probe.lab.farm", "3", "12"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert farm.stdout is not None
        info = json.loads(farm.stdout.readline())
        inputs = tmp_path / "t.txt"
        inputs.write_text(
            "".join(f"{'nobody' if i % 4 == 0 else 'user'}{i}@d{i}.test\n" for i in range(12))
        )
        common = [
            *client_args(info),
            "--starttls",
            "require",
            "--timeout",
            "5",
        ]
        r = CliRunner().invoke(cli, ["batch", str(inputs), *common, "--workers", "2"])
        assert r.exit_code == 0, r.output[-2000:]
        records = {rec["line"]: rec for rec in valid_lines(r.stdout)}
        assert len(records) == 12
        for line, rec in records.items():
            assert rec["verdict"] == ("permanent" if (line - 1) % 4 == 0 else "accepted"), rec
            tls = rec["sessions"][0]["tls"]
            assert tls["ok"] and tls["trusted"] and tls["name_matches"]
            commands = [st["command"] for st in rec["sessions"][0]["steps"]]
            assert commands[:4] == ["CONNECT", "EHLO", "STARTTLS", "EHLO"]
        # One session at a time and a new connection for each: each MX host's first handshake
        # is a full one, and every later one resumes (the farm gives TLS 1.3 tickets, as
        # OpenSSL servers do).
        again = CliRunner().invoke(
            cli, ["batch", str(inputs), *common, "--concurrency", "1", "--reuse", "1"]
        )
        assert again.exit_code == 0, again.output[-2000:]
        sessions = [valid(json.loads(line))["sessions"][0] for line in again.stdout.splitlines()]
        resumed = [s["tls"]["resumed"] for s in sessions]
        assert resumed.count(False) == 3 and resumed.count(True) == 9
        assert not any(s["reused"] for s in sessions)
        # With connections kept, each host's first target opens one and the others reuse it,
        # reporting the TLS facts of its handshake.
        kept = CliRunner().invoke(cli, ["batch", str(inputs), *common, "--concurrency", "1"])
        sessions = [valid(json.loads(line))["sessions"][0] for line in kept.stdout.splitlines()]
        assert [s["reused"] for s in sessions] == [False] * 3 + [True] * 9
        assert all(s["tls"]["ok"] and s["tls"]["trusted"] for s in sessions)
        # TLS sessions belong to a run, not the process: a probe after the batch starts afresh.
        text = CliRunner().invoke(cli, ["probe", "user1@d1.test", *common])
        assert "=== TLS" in text.stdout and "resumed" not in text.stdout, text.stdout
        fresh = CliRunner().invoke(cli, ["probe", "user1@d1.test", *common, "--no-tls-resume"])
        assert "=== TLS" in fresh.stdout and "resumed" not in fresh.stdout
    finally:
        assert farm.stdin is not None
        farm.stdin.close()
        farm.wait(timeout=10)
        if farm.stdout is not None:
            farm.stdout.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reader_that_goes_away_ends_the_run_quietly(
    farm: Farm, tmp_path: Path, workers: int
) -> None:
    inputs = tmp_path / "targets.txt"
    write_inputs(inputs)  # at --rate 50, a whole run would take 20 s
    cmd = batch_cmd(inputs, farm, "--rate", "50", "--workers", str(workers))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=8) == 0, err  # it stopped, rather than probing on for nobody
    assert valid(json.loads(first))["schema"] == "smtp-probe/batch/2"
    assert b"Traceback" not in err and b"Error" not in err


@pytest.mark.parametrize("workers", [1, 2])
def test_each_input_line_is_probed_as_soon_as_it_arrives(farm: Farm, workers: int) -> None:
    """A slow producer (`tail -f ... |`) gets each record without waiting for more input."""
    import select

    cmd = [sys.executable, "-m", "probe", "batch", "-", *base_args(farm), "--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for i in (5, 6):
            proc.stdin.write(f"user{i}@d{i}.test\n".encode())
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready, "no record while the input stays open"
            rec = valid(json.loads(proc.stdout.readline()))
            assert rec["input"] == f"user{i}@d{i}.test" and rec["verdict"] == "accepted"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == b""  # nothing more: every record was already out
        proc.stdout.close()
        assert proc.stderr is not None
        assert b"2 records" in proc.stderr.read()
        proc.stderr.close()


def test_progress_on_a_terminal_shows_counts_and_rate(farm: Farm, tmp_path: Path) -> None:
    import pty

    inputs = tmp_path / "targets.txt"
    write_inputs(inputs, 100)
    out = tmp_path / "out.jsonl"
    master, slave = pty.openpty()
    cmd = batch_cmd(inputs, farm, "--output", str(out), "--rate", "50")
    proc = subprocess.Popen(
        cmd, stderr=slave, stdout=subprocess.DEVNULL, env={**os.environ, "TERM": "xterm"}
    )
    os.close(slave)
    import select

    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    text = seen.decode("utf-8", "replace")
    assert re.search(r"\d+ done, 0 errors, \d+\.\d/s", text), text[-500:]
    assert "101 records" in text  # the summary after the bar
    assert len(out.read_text().splitlines()) == 101


@pytest.mark.parametrize("workers", [1, 2])
def test_input_that_is_not_utf8_gets_records_not_a_traceback(
    farm: Farm, tmp_path: Path, workers: int
) -> None:
    inputs = tmp_path / "mixed.txt"
    inputs.write_bytes(b"user1@d1.test\n\xff\xfe@d2.test\nuser3@d3.test\n")
    r = CliRunner().invoke(cli, ["batch", str(inputs), *base_args(farm), "--workers", str(workers)])
    assert r.exit_code == 0, r.output[-2000:]
    records = {rec["line"]: rec for rec in valid_lines(r.stdout)}
    assert sorted(records) == [1, 2, 3]
    assert records[1]["verdict"] == records[3]["verdict"] == "accepted"
    # The bad bytes are shown replaced; whatever the probe made of that address is recorded.
    assert records[2]["input"] == "\ufffd\ufffd@d2.test"
    assert "verdict" in records[2] or "error" in records[2]


def test_a_directory_as_input_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["batch", str(tmp_path)])
    assert r.exit_code == 64
    assert "it is a directory" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_records_come_in_the_encoding_of_standard_output(encoding: str) -> None:
    """Plain JSON Lines into UTF-8 go out as bytes; any other encoding of stdout still gets
    whole records in that encoding (the text path), never a mix of the two."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONIOENCODING": encoding}
    cmd = [sys.executable, "-m", "probe", "batch", "-"]
    # Lines that name no target: a record each at once, nothing sent, the input echoed.
    given = "".join(f"nö ziel € {i}\n# {i}\n" for i in range(3))
    p = subprocess.run(cmd, input=given.encode(), capture_output=True, env=env, timeout=60)
    records = [json.loads(line) for line in p.stdout.decode(encoding).splitlines()]
    assert [r["line"] for r in records] == [1, 3, 5], p.stderr[-500:]
    assert [r["input"] for r in records] == [f"nö ziel € {i}" for i in range(3)]
    assert all(r["error"]["kind"] == "bad_target" for r in records)


async def test_the_run_counts_each_probe_as_its_record_says(farm: Farm) -> None:
    """Batch counts its own probes from the typed results; a record read back (a worker's) is
    counted from its dicts. Both ways must agree on every count."""
    lines = [f"{'nobody' if i % 3 == 0 else 'user'}{i}@d{i}.test" for i in range(12)]
    lines += [f"d{i}.test" for i in range(12)]  # no recipient: shared sessions, cache hits
    lines += ["not a valid target!"]

    async def targets() -> AsyncIterator[tuple[int, str | Any]]:
        for item in read_targets(lines):
            yield item

    opts = SessionOptions(helo="batch.test", starttls=StartTls.NEVER)
    nameservers = (("127.0.0.1", farm.dns_port),)
    template = ProbeRequest(
        Target("", "domain", None, None, None), opts, port=farm.port, nameservers=nameservers
    )
    got: list[dict[str, Any]] = []
    limits = BatchLimits(concurrency=4, reuse=10)
    stats = await run_batch(targets(), template, got.append, locale("en"), limits=limits)
    again = Stats()
    for rec in got:
        again.add(json.loads(json.dumps(rec)))  # as a worker's record comes back
    counts = ("done", "errors", "sessions", "reused", "unmet", "cached")
    assert [getattr(stats, k) for k in counts] == [getattr(again, k) for k in counts]
    assert stats.by_verdict == again.by_verdict and stats.by_category == again.by_category
    # Every kind of count was exercised: refusals, kept connections, shared sessions, errors.
    assert stats.by_verdict["permanent"] == 4 and stats.errors == 1
    assert stats.by_category and stats.reused and stats.cached
