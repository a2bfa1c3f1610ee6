"""`batch --ray`: the batch engine on a real local Ray (loopback only, 2 CPUs, no dashboard).

Skipped only where Ray cannot be imported (CI installs the `ray` extra)."""

# The farm fixture of test_batch is imported, and tests name it as a parameter.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Ray is imported: nothing sent anywhere, and its servers listen on loopback only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed on this platform")

from probe.batch import Record  # noqa: E402
from probe.batchinput import Item, read_targets  # noqa: E402
from probe.cluster import RayConfig, RayRun, run_on_ray  # noqa: E402
from probe.config import BatchLimits, ProbeRequest, SessionOptions, StartTls, Timeouts  # noqa: E402
from probe.result import Target  # noqa: E402
from tests.test_batch import HOSTS, Farm, base_args, farm  # noqa: E402, F401
from tests.test_provider import ProviderFarm, provider_farm, targets  # noqa: E402, F401

ROOT = Path(__file__).resolve().parent.parent
LINES = 2000


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def template(farm: Farm) -> ProbeRequest:
    opts = SessionOptions(helo="ray.test", starttls=StartTls.NEVER, timeouts=Timeouts(5.0))
    return ProbeRequest(
        Target("", "domain", None, None, None),
        session=opts,
        port=farm.port,
        nameservers=(("127.0.0.1", farm.dns_port),),
    )


def items(n: int = LINES) -> list[Item]:
    # Every domain twice over: 2,000 lines on the farm's 1,000 domains and 5 addresses.
    lines = [f"{'nobody' if i % 10 == 0 else 'user'}{i}@d{i % 1000}.test" for i in range(n)]
    return list(read_targets(lines))


def collect(job_records: list[Record]) -> Any:
    def on_record(line: str, rec: Record) -> None:
        assert line.endswith("\n") and json.loads(line) == rec
        job_records.append(rec)

    return on_record


def check_each_line_once(records: list[Record], n: int = LINES) -> None:
    counts = Counter(int(str(r["line"])) for r in records)
    assert sorted(counts) == list(range(1, n + 1))
    assert max(counts.values()) == 1


def test_two_thousand_inputs_through_two_actors_within_the_per_host_limit(
    farm: Farm, local_ray: None
) -> None:
    records: list[Record] = []
    farm.counter.peak.clear()
    limits = BatchLimits(concurrency=40, per_host=2)
    cfg = RayConfig(template(farm), "en", limits, actors=2)
    job = RayRun(cfg, collect(records))
    job.run(items())
    check_each_line_once(records)
    assert all("error" not in r for r in records), [r for r in records if "error" in r][:3]
    by_line = {r["line"]: r for r in records}
    assert by_line[1]["verdict"] == "permanent" and by_line[2]["verdict"] == "accepted"
    # Both actors worked, each in its own process, and the limit held across them: the
    # servers never saw more than 2 sessions at once from the whole cluster.
    assert len(job.chunks) == 2 and min(job.chunks) > 0
    assert max(farm.counter.peak[h] for h in HOSTS) == 2


def test_the_per_provider_limit_holds_across_actors(
    provider_farm: ProviderFarm, local_ray: None
) -> None:
    records: list[Record] = []
    opts = SessionOptions(helo="ray.test", starttls=StartTls.NEVER, timeouts=Timeouts(10.0))
    req = ProbeRequest(
        Target("", "domain", None, None, None),
        session=opts,
        port=provider_farm.port,
        nameservers=(("127.0.0.1", provider_farm.dns_port),),
    )
    provider_farm.tally.clear()
    limits = BatchLimits(concurrency=40, per_host=2, per_provider=3)
    job = RayRun(RayConfig(req, "en", limits, actors=2), collect(records))
    job.run(list(read_targets(targets(160))))
    check_each_line_once(records, 160)
    assert all(r.get("verdict") == "accepted" for r in records), records[:2]
    assert len(job.chunks) == 2 and min(job.chunks) > 0
    # Four MX addresses at 2 each would allow 8 at once; the governor held the provider to 3.
    assert provider_farm.tally.peak["p1.test"] == 3


def test_a_killed_actor_loses_nothing(farm: Farm, local_ray: None) -> None:
    records: list[Record] = []
    box: dict[str, Any] = {}

    def on_record(line: str, rec: Record) -> None:
        records.append(rec)
        if len(records) == 300:
            ray.kill(box["job"].actors[0])  # as a node failing would

    cfg = RayConfig(template(farm), "en", BatchLimits(concurrency=40, per_host=2), actors=2)
    job = box["job"] = RayRun(cfg, on_record)
    job.run(items())
    check_each_line_once(records)
    assert job.alive == [False, True]
    assert job.chunks[1] > sum(job.chunks) // 2
    # The dead actor's chunks were probed again on the other one, not given up.
    assert all("error" not in r for r in records)


def test_resume_and_the_cli_on_a_local_ray(farm: Farm, tmp_path: Path) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_text("".join(f"user{i}@d{i}.test\n" for i in range(200)) + "bad target!\n")
    out = tmp_path / "out.jsonl"
    # An earlier run wrote the first 50 records, and was cut in the middle of the 51st.
    earlier = [{"schema": "smtp-probe/batch/1", "line": n, "input": "x"} for n in range(1, 51)]
    out.write_text("".join(json.dumps(r) + "\n" for r in earlier) + '{"line": 51, "inp')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "probe", "batch", str(inputs), *base_args(farm)]
    cmd += ["--output", str(out), "--resume", "--ray", "--workers", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    check_each_line_once(recs, 201)
    new = [r for r in recs if r["line"] > 50]
    assert len(new) == 151 and all(r.get("input") != "x" for r in new)
    assert next(r for r in new if r["line"] == 201)["error"]["kind"] == "bad_target"
    assert "151 records" in p.stderr
    assert "Token authentication" not in p.stderr  # Ray's notice of its default, unsaid


def test_without_ray_the_option_says_so_in_one_line(tmp_path: Path) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_text("d1.test\n")
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as on a machine without Ray
        f"sys.argv = ['smtp-probe', 'batch', {str(inputs)!r}, '--ray']\n"
        "from probe.cli import main; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 64
    assert p.stderr.strip().splitlines() == [
        "smtp-probe: error: --ray needs Ray, which is not installed here: "
        "pip install 'smtp-probe[ray]'"
    ]


def test_the_engine_runs_without_ray() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import probe.batch, probe.workers, probe.cli.bulk, probe.cluster\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.stdout.strip() == "ok", p.stderr


def test_run_on_ray_is_the_library_entry(farm: Farm, local_ray: None) -> None:
    records: list[Record] = []
    cfg = RayConfig(template(farm), "en", BatchLimits(concurrency=4, per_host=1), actors=1)
    run_on_ray(items(20), cfg, collect(records))
    check_each_line_once(records, 20)


def test_ctrl_c_ends_a_ray_run_with_status_130_and_whole_records(farm: Farm) -> None:
    # The input stays open, so only the interrupt can end this run; 300 lines keep the actors
    # busy when it comes.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "probe", "batch", "-", *base_args(farm), "--ray"]
    # Unbuffered: communicate() below reads the descriptor, not a reader's buffer.
    pipe = subprocess.PIPE
    p = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, env=env, bufsize=0)
    assert p.stdin is not None and p.stdout is not None
    try:
        p.stdin.write(b"".join(b"user%d@d%d.test\n" % (i, i) for i in range(300)))
        p.stdin.flush()
        first = p.stdout.readline()  # Ray is up and records flow
        assert json.loads(first)["line"] >= 1
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err.decode(errors="replace")[-2000:]
    assert b"Traceback" not in err
    # Every line that ended is a whole record (a write cut by the signal could only leave an
    # unended tail, which --resume reports and sets aside).
    for line in out.split(b"\n")[:-1]:
        assert "line" in json.loads(line)


def test_records_flow_while_the_input_is_still_open(farm: Farm) -> None:
    """A slow feed (a pipe that gives a line now and then) gets each record as it is done:
    the driver reads its input in a thread of its own, and sends what has come instead of
    waiting for a whole chunk."""
    import threading

    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "probe", "batch", "-", *base_args(farm), "--ray"]
    pipe = subprocess.PIPE
    p = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, env=env, bufsize=0)
    assert p.stdin is not None and p.stdout is not None
    watchdog = threading.Timer(180, p.kill)  # a driver that waits for more input hangs here
    watchdog.start()
    try:
        p.stdin.write(b"user1@d1.test\nuser2@d2.test\nnot a target\n")
        p.stdin.flush()
        lines = [p.stdout.readline() for _ in range(3)]  # the input is still open
        assert all(lines), "no record came while the input was open"
        got = [json.loads(line) for line in lines]
        assert sorted(int(r["line"]) for r in got) == [1, 2, 3]
        assert {r.get("verdict") for r in got if r["line"] != 3} == {"accepted"}
        out, err = p.communicate(b"user4@d4.test\n", timeout=120)
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    rest = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in rest] == [4]
    assert b"Traceback" not in err
