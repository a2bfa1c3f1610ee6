"""Benchmarks: prints a table of figures and ratios and writes docs/benchmarks-latest.md.

docs/benchmarks.md is the curated record: each day's runs with what they showed. A run writes
its tables to their own file, so that it never overwrites that record.

    python benchmarks/run.py            # everything (a one-million-line log)
    python benchmarks/run.py --quick    # smaller inputs, for a smoke run

Everything runs on 127.0.0.1. swaks (Debian package `swaks`) is used when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import platform
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.lab.dns import LoopThread  # noqa: E402
from probe.lab.farm import client_args  # noqa: E402
from probe.lab.smtp import Scripted, port_of, start_smtp  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from explain_log import bench_big, bench_ratio  # noqa: E402
from raw_client import session as raw_session  # noqa: E402

CLI = [sys.executable, "-m", "probe"]
# What a user runs: the console script pip installed beside this Python (start-up rows).
_SCRIPT = Path(sys.executable).parent / "smtp-probe"
USER_CLI = [str(_SCRIPT)] if _SCRIPT.exists() else CLI

LOG_TEMPLATES = [
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/smtpd[{pid}]: connect from unknown[198.51.100.{o}]",
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[198.51.100.{o}]: "
    "450 4.7.25 Client host rejected: cannot find your hostname, [198.51.100.{o}]; from=<a{n}@example.com> "
    "to=<b@example.net> proto=ESMTP helo=<box{n}>",
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/smtp[{pid}]: 4Bc{n:06X}: to=<u{n}@example.org>, relay=mx.example.org"
    "[192.0.2.10]:25, delay=0.4, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.10] said: 550 5.1.1 "
    "<u{n}@example.org>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO "
    "command))",
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/smtp[{pid}]: 4Bc{n:06X}: to=<v{n}@example.com>, relay=mx.example.com"
    "[192.0.2.20]:25, delay=301, dsn=4.2.0, status=deferred (host mx.example.com[192.0.2.20] said: 450 4.2.0 "
    "<v{n}@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/"
    "example.com.html (in reply to RCPT TO command))",
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/qmgr[{pid}]: 4Bc{n:06X}: removed",
    "Nov 22 09:{m:02d}:{s:02d} mx postfix/smtp[{pid}]: 4Bc{n:06X}: to=<w{n}@example.net>, relay=mx.example.net"
    "[192.0.2.30]:25, delay=1, dsn=5.7.1, status=bounced (host mx.example.net[192.0.2.30] said: 554 5.7.1 "
    "Service unavailable; Client host [203.0.113.{o}] blocked using zen.spamhaus.org (in reply to RCPT TO command))",
]


def make_log(path: Path, lines: int) -> None:
    rng = random.Random(1)
    with path.open("w") as f:
        for n in range(lines):
            t = LOG_TEMPLATES[rng.randrange(len(LOG_TEMPLATES))]
            f.write(t.format(m=n // 60 % 60, s=n % 60, pid=1000 + n % 900, o=n % 250, n=n) + "\n")


def timed(cmd: list[str], stdin: Path | None = None) -> float:
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
        subprocess.run(
            cmd, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
    return time.perf_counter() - start


def median_time(cmd: list[str], runs: int) -> float:
    timed(cmd)  # warm the file cache
    return statistics.median(timed(cmd) for _ in range(runs))


def in_turns(cmds: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Seconds of each run of each command, the commands taking turns."""
    for cmd in cmds.values():
        timed(cmd)  # warm the file cache
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):
        for k, cmd in cmds.items():
            times[k].append(timed(cmd))
    return times


def bench_explain(lines: int) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        make_log(log, lines)
        bare = timed(
            [sys.executable, "-c", f"import sys\nfor line in open({str(log)!r}, 'rb'): pass"]
        )
        jsonl = timed([*CLI, "explain", "--format", "jsonl", "-"], stdin=log)
        summary = timed([*CLI, "explain", "--summary", "-"], stdin=log)
    return [
        (
            f"explain --format jsonl, {lines:,} log lines",
            f"{jsonl:.1f} s, {lines / jsonl:,.0f} lines/s",
        ),
        (
            f"explain --summary, {lines:,} log lines",
            f"{summary:.1f} s, {lines / summary:,.0f} lines/s",
        ),
        ("bare Python loop over the same file", f"{bare:.2f} s, {lines / bare:,.0f} lines/s"),
        ("ratio jsonl / bare loop", f"{jsonl / bare:.0f}x"),
        ("ratio summary / bare loop", f"{summary / bare:.0f}x"),
    ]


def bench_startup(runs: int) -> list[tuple[str, str]]:
    click_t = median_time([sys.executable, "-c", "import click"], runs)
    rows = [("python -c 'import click'", f"{click_t * 1000:.0f} ms")]
    for args in (["--help"], ["explain", "550"], ["compare", "421", "521"], ["codes"]):
        t = median_time([*USER_CLI, *args], runs)
        rows.append(
            (f"smtp-probe {' '.join(args)}", f"{t * 1000:.0f} ms ({t / click_t:.1f}x import click)")
        )
    if shutil.which("swaks"):
        t = median_time(["swaks", "--version"], runs)
        rows.append(("swaks --version", f"{t * 1000:.0f} ms"))
    return rows


def bench_session(runs: int) -> list[tuple[str, str]]:
    import trustme

    from probe.config import SessionOptions
    from probe.context import RunContext
    from probe.session import run_session

    ca = trustme.CA()
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.bench.test").configure_cert(sctx)
    lt = LoopThread()
    srv = lt.run(start_smtp(Scripted(), tls_context=sctx, hostname="mx.bench.test"))
    port = port_of(srv)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cafile = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        cctx = ssl.create_default_context(cafile=str(cafile))
        cctx.check_hostname = False
        # Like for like: one run (one context and trust store, as the raw client keeps one
        # SSLContext), and a full handshake every time, as the raw client does.
        opts = SessionOptions(
            helo="bench.test", rcpts=("user@bench.test",), cafile=str(cafile), resume_tls=False
        )
        run = RunContext()

        async def ours() -> None:
            await run_session("mx.bench.test", "127.0.0.1", port, opts, run)

        async def measure() -> tuple[float, float]:
            # Interleaved, so that load from elsewhere on the machine hits both alike.
            await ours()
            await raw_session("127.0.0.1", port, cctx, "user@bench.test", "mx.bench.test", True)
            a, b = [], []
            for _ in range(runs):
                t = time.perf_counter()
                await ours()
                a.append(time.perf_counter() - t)
                t = time.perf_counter()
                await raw_session("127.0.0.1", port, cctx, "user@bench.test", "mx.bench.test", True)
                b.append(time.perf_counter() - t)
            return statistics.median(a), statistics.median(b)

        ours_t, raw_t = asyncio.run(measure())
        rows.append(
            (
                "in-process session (EHLO STARTTLS EHLO MAIL RCPT RSET QUIT)",
                f"{ours_t * 1000:.1f} ms",
            )
        )
        rows.append(("raw asyncio client, same exchange", f"{raw_t * 1000:.1f} ms"))
        rows.append(
            ("ratio smtp-probe session / raw client (aim <= 1.2)", f"{ours_t / raw_t:.2f}x")
        )
        proc = [
            *USER_CLI,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--helo",
            "bench.test",
            "--rcpt",
            "user@bench.test",
            "--cafile",
            str(cafile),
            "--format",
            "json",
        ]
        if shutil.which("swaks"):
            sw = [
                "swaks",
                "--server",
                "127.0.0.1",
                "--port",
                str(port),
                "--tls",
                "--quit-after",
                "RCPT",
                "--to",
                "user@bench.test",
                "--from",
                "",
                "--helo",
                "bench.test",
            ]
            # In turns, as many runs of each: a VM's load moved either one's median by a
            # tenth between invocations when they ran one after the other.
            times = in_turns({"ours": proc, "swaks": sw}, max(5, runs // 5))
            proc_t, sw_t = (statistics.median(times[k]) for k in ("ours", "swaks"))
            best = min(times["ours"]) / min(times["swaks"])
            rows += [
                ("smtp-probe as a whole process", f"{proc_t * 1000:.0f} ms"),
                ("swaks, same exchange, whole process", f"{sw_t * 1000:.0f} ms"),
                (
                    "ratio smtp-probe process / swaks process (aim <= 2)",
                    f"{proc_t / sw_t:.2f}x (fastest runs {best:.2f}x)",
                ),
            ]
        else:
            proc_t = median_time(proc, max(5, runs // 5))
            rows.append(("smtp-probe as a whole process", f"{proc_t * 1000:.0f} ms"))
            rows.append(("swaks", "not installed (apt-get install swaks)"))
    lt.loop.call_soon_threadsafe(srv.close)
    lt.close()
    return rows


def _pinned(cpu: int) -> list[str]:
    """A command prefix that keeps a process on one CPU, where the machine has two or more:
    the farm on one and the client measured on the other, so that neither steals the
    other's core and runs compare like for like (the raw client is pinned the same way)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def _farm(
    listeners: int, domains: int, error_limit: int = 0, pin: bool = False
) -> tuple[subprocess.Popen[str], dict]:  # type: ignore[type-arg]
    import json

    farm = subprocess.Popen(
        [
            *(_pinned(0) if pin else []),
            sys.executable,
            "-m",
            "probe.lab.farm",
            str(listeners),
            str(domains),
            str(error_limit),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert farm.stdout is not None
    return farm, json.loads(farm.stdout.readline())


def _stop(farm: subprocess.Popen[str]) -> None:
    assert farm.stdin is not None
    farm.stdin.close()
    farm.wait(timeout=30)


def _run_seconds(cmd: list[str], stdin: Path | None = None) -> float:
    """Seconds of session work: batch's own count ("N records in X s"), or what the raw
    client prints; the start-up of either process is left out. Standard output goes to a
    file, as a run's records would: through a pipe, this process would have to read some
    10 KB per record, on the farm's CPU, and batch would wait on it."""
    with (
        open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp,
        tempfile.TemporaryFile("w+") as out,
    ):
        p = subprocess.run(
            cmd, stdin=inp, stdout=out, stderr=subprocess.PIPE, text=True, check=False
        )
        if "records in" in p.stderr:
            return float(p.stderr.split("records in", 1)[1].split(" s", 1)[0])
        out.seek(0)
        return float(out.read().strip())


def _against_raw(n: int, times: dict[str, list[float]], k: str) -> str:
    """Sessions per second of the fastest run, its ratio to the raw client's fastest, the
    ratio of the medians, and the median of each run's ratio to the raw run of the same turn
    (a turn shares the machine's mood of the moment, which drifts over a few minutes)."""
    best = min(times["raw"]) / min(times[k])
    medians = statistics.median(times["raw"]) / statistics.median(times[k])
    pairs = statistics.median(r / t for r, t in zip(times["raw"], times[k], strict=True))
    return f"{n / min(times[k]):.0f}/s ({best:.2f}x; medians {medians:.2f}x; pairs {pairs:.2f}x)"


# What makes batch do what the raw client does: a connection and a full handshake per target.
LIKE_FOR_LIKE = ["--reuse", "1", "--no-tls-resume"]


def write_literals(path: Path, hosts: list[str], n: int) -> None:
    """`n` targets for batch, an address literal of each farm listener in turn."""
    path.write_text("".join(f"[{hosts[i % len(hosts)]}]\n" for i in range(n)))


def batch_command(info: dict, c: int) -> list[str]:  # type: ignore[type-arg]
    """`smtp-probe batch` at concurrency `c`, its targets on standard input, each session the
    raw client's exchange; with batch's defaults until LIKE_FOR_LIKE is added."""
    return [
        *CLI,
        "batch",
        "-",
        "--port",
        str(info["smtp_port"]),
        "--cafile",
        info["cafile"],
        "--helo",
        "bench.test",
        "--rcpt",
        "user@d1.test",
        "--per-host",
        "50",
        "--concurrency",
        str(c),
    ]


def raw_command(info: dict, n: int, c: int) -> list[str]:  # type: ignore[type-arg]
    """The raw client, `n` sessions at concurrency `c`. --rset: batch ends each transaction
    with RSET before QUIT, so the raw client does."""
    client = [sys.executable, str(ROOT / "benchmarks" / "raw_client.py"), str(n), str(c)]
    return [*client, str(info["smtp_port"]), info["cafile"], *info["hosts"], "--rset"]


def like_for_like(info: dict, n: int, c: int, targets: Path) -> tuple[list[str], list[str]]:  # type: ignore[type-arg]
    """The pair compared like for like: the raw client's command and batch's, `n` sessions at
    concurrency `c`; batch's `n` targets are written to `targets`, its standard input."""
    write_literals(targets, info["hosts"], n)
    return raw_command(info, n, c), [*batch_command(info, c), *LIKE_FOR_LIKE]


def bench_like_for_like(quick: bool) -> list[tuple[str, str]]:
    """batch against a minimal asyncio client doing the same sessions (start-up left out of
    both, taking turns); then kept connections against a server that slows down after 10
    errors."""
    # 5,000 sessions: batch reports its time to a tenth of a second, about 1.5% of a run
    # (with 2,000 it was 4%, as much as the margins being measured).
    n = 300 if quick else 5000
    # Five runs of each, in turns; the fastest of each decides, as timeit's best-of does:
    # load from elsewhere only ever slows a run, and on a shared VM it moved medians of three
    # by a tenth between two invocations. The ratio of the medians is printed beside it.
    runs = 1 if quick else 5
    farm, info = _farm(5, 10, pin=True)
    rows: list[tuple[str, str]] = []
    if _pinned(1):
        rows.append(("pinning", "farm on CPU 0; the raw client and batch on CPU 1"))
    with tempfile.TemporaryDirectory() as tmp:
        literals = Path(tmp) / "literals.txt"
        for c in (10, 50):
            raw, batch = like_for_like(info, n, c, literals)
            like, client = [*_pinned(1), *batch], [*_pinned(1), *raw]
            usual = [*_pinned(1), *batch_command(info, c)]
            times: dict[str, list[float]] = {"raw": [], "like": [], "usual": []}
            for _ in range(runs):  # in turns, so that load from elsewhere hits all alike
                times["raw"].append(_run_seconds(client))
                times["like"].append(_run_seconds(like, stdin=literals))
                times["usual"].append(_run_seconds(usual, stdin=literals))
            raw_med = n / statistics.median(times["raw"])
            rows += [
                (
                    f"raw asyncio client, {n} sessions, concurrency {c}",
                    f"{n / min(times['raw']):.0f}/s (median {raw_med:.0f}/s)",
                ),
                (
                    f"batch --reuse 1 --no-tls-resume, concurrency {c} (aim >= 0.8x raw)",
                    _against_raw(n, times, "like"),
                ),
                (f"batch with its defaults, concurrency {c}", _against_raw(n, times, "usual")),
            ]
        rows += _together(info, quick)
    _stop(farm)
    return rows + _bench_error_limit(quick)


def _together(info: dict, quick: bool) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    """The same pair at once on one CPU (together.py): within one sitting its rounds agree to
    a percent or two, where the rows above, runs in turns, can move by a quarter. (On a loaded
    machine the farm limits both clients and the ratio moves toward 1: see the rates.)"""
    from together import ratios

    rows = []
    for c in (10, 50):
        got = ratios(info, "raw", str(ROOT), c, rounds=1 if quick else 4, window=2 if quick else 6)
        each = ", ".join(f"{r:.3f}" for r in got)
        rows.append(
            (
                f"raw client and batch like for like at once on one CPU, concurrency {c}",
                f"{statistics.median(got):.2f}x (rounds: {each})",
            )
        )
    return rows


def _bench_error_limit(quick: bool) -> list[tuple[str, str]]:
    """Unknown recipients against a farm that applies Postfix's smtpd_soft_error_limit (10):
    kept connections must retire before it, so reuse is never slower than none."""
    n = 100 if quick else 300
    farm, info = _farm(1, n, error_limit=10)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "unknown.txt"
        targets.write_text("".join(f"nobody{i}@d{i}.test\n" for i in range(n)))
        common = [*CLI, "batch", "-", *client_args(info), "--helo", "bench.test", "--timeout", "20"]
        reuse, fresh = [], []
        for _ in range(1 if quick else 3):  # in turns, so that load from elsewhere hits both
            reuse.append(timed([*common, "--reuse", "10"], stdin=targets))
            fresh.append(timed([*common, "--reuse", "1"], stdin=targets))
        t_reuse, t_fresh = statistics.median(reuse), statistics.median(fresh)
    _stop(farm)
    rows.append((f"{n} unknown recipients, error limit 10, --reuse 10", f"{t_reuse:.2f} s"))
    rows.append((f"{n} unknown recipients, error limit 10, --reuse 1", f"{t_fresh:.2f} s"))
    rows.append(("reuse / a connection per target (aim <= 1)", f"{t_reuse / t_fresh:.2f}x"))
    return rows


def _child_peak_rss_mb(cmd: list[str], stdin: Path) -> tuple[float, float]:
    """Run cmd in a fresh wrapper process; return (seconds, peak RSS of the child in MB)."""
    code = (
        "import resource, subprocess, sys, time\n"
        f"t = time.perf_counter()\n"
        f"subprocess.run({cmd!r}, stdin=open({str(stdin)!r}, 'rb'), stdout=subprocess.DEVNULL,"
        " stderr=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1]) / 1024


def bench_batch(quick: bool) -> list[tuple[str, str]]:
    n = 200 if quick else 1000
    sizes = (1_000, 5_000) if quick else (1_000, 10_000, 100_000)
    listeners = 20
    farm, info = _farm(listeners, max(sizes))
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.txt"
        targets.write_text("".join(f"user{i}@d{i}.test\n" for i in range(n)))
        common = [
            *client_args(info),
            "--helo",
            "bench.test",
            "--timeout",
            "20",
        ]
        rates: dict[str, float] = {}
        fresh: dict[str, float] = {}
        runs = 1 if quick else 3
        configs = [(c, w, 10) for c, w in ((1, 1), (10, 1), (50, 1), (200, 1), (50, 2), (200, 2))]
        # The same with a new connection (connect, EHLO, STARTTLS) for every target, as swaks.
        configs += [(50, 1, 1), (200, 2, 1)]
        for c, w, reuse in configs:
            # Median of whole-process runs: start-up is part of what a user waits for.
            t = statistics.median(
                timed(
                    [
                        *CLI,
                        "batch",
                        "-",
                        *common,
                        "--concurrency",
                        str(c),
                        "--per-host",
                        "10",
                        "--workers",
                        str(w),
                        "--reuse",
                        str(reuse),
                    ],
                    stdin=targets,
                )
                for _ in range(runs)
            )
            label = f"concurrency {c}" + (f", {w} workers" if w > 1 else "")
            if reuse == 1:
                fresh[label] = n / t
                label += ", --reuse 1"
            else:
                rates[label] = n / t
            rows.append((f"smtp-probe batch, {n} targets, {label}", f"{n / t:.0f} targets/s"))
        if shutil.which("swaks"):
            hosts = info["hosts"]

            def swaks(i: int) -> list[str]:
                return [
                    "swaks",
                    "--server",
                    hosts[i % listeners],
                    "--port",
                    str(info["smtp_port"]),
                    "--to",
                    f"user{i}@d{i}.test",
                    "--from",
                    "",
                    "--helo",
                    "bench.test",
                    "--tls",
                    "--quit-after",
                    "RCPT",
                ]

            k = 30 if quick else 100
            t0 = time.perf_counter()
            for i in range(k):
                subprocess.run(swaks(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seq = k / (time.perf_counter() - t0)
            cmds = Path(tmp) / "swaks.txt"
            cmds.write_text(
                "".join(
                    " ".join(swaks(i)).replace(" --from  ", " --from '' ") + "\n" for i in range(n)
                )
            )
            t0 = time.perf_counter()
            subprocess.run(
                f"xargs -P 50 -I CMD sh -c CMD < {cmds}",
                shell=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            par = n / (time.perf_counter() - t0)
            best_label = max(rates, key=lambda k: rates[k])
            best = rates[best_label]
            one = max(v for k, v in rates.items() if "workers" not in k)
            fresh_label = max(fresh, key=lambda k: fresh[k])
            rows += [
                (f"swaks sequential ({k} targets)", f"{seq:.1f} targets/s"),
                (f"xargs -P 50 swaks ({n} targets)", f"{par:.0f} targets/s"),
                (
                    f"best batch ({best_label}) / sequential swaks (aim >= 50)",
                    f"{best / seq:.0f}x",
                ),
                ("best one-process batch / sequential swaks", f"{one / seq:.0f}x"),
                (
                    f"best batch with a connection per target ({fresh_label}, --reuse 1) "
                    "/ sequential swaks",
                    f"{fresh[fresh_label] / seq:.0f}x",
                ),
                ("best batch / 50 parallel swaks (aim > 1)", f"{best / par:.1f}x"),
            ]
        peaks = {}
        for size in sizes:
            # Distinct domains, each a whole session with STARTTLS (and resumption, as by
            # default): every cache of the run is exercised.
            doms = Path(tmp) / f"domains{size}.txt"
            doms.write_text("".join(f"d{i}.test\n" for i in range(size)))
            secs, peak = _child_peak_rss_mb(
                [*CLI, "batch", "-", *common, "--quit-after", "tls", "--concurrency", "50"], doms
            )
            peaks[size] = peak
            rows.append(
                (f"batch peak memory, {size:,} domain inputs", f"{peak:.0f} MB ({secs:.1f} s)")
            )
        rows.append(
            (
                f"peak memory {max(sizes):,} / {min(sizes):,} inputs (aim <= 1.2)",
                f"{peaks[max(sizes)] / peaks[min(sizes)]:.2f}x",
            )
        )
    _stop(farm)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small inputs for a smoke run")
    ap.add_argument("--lines", type=int, default=None)
    args = ap.parse_args()
    # Measure the package as pip installs it, with its bytecode compiled (an editable install
    # under PYTHONDONTWRITEBYTECODE would compile every module at every start instead).
    compileall.compile_dir(ROOT / "probe", quiet=1)
    lines = args.lines or (20_000 if args.quick else 1_000_000)
    runs = 5 if args.quick else 20
    sections = [
        ("Start-up (median of whole processes)", bench_startup(runs)),
        ("Explain throughput", bench_explain(lines)),
        ("Explaining a realistic mail log (benchmarks/explain_log.py)", bench_ratio(lines)),
        ("explain on a big log: time and peak memory", bench_big(20 if args.quick else 200)),
        ("One live session on loopback", bench_session(runs * 5)),
        ("Batch against a farm of loopback MX servers", bench_batch(args.quick)),
        ("Batch like for like, and kept connections that retire", bench_like_for_like(args.quick)),
    ]
    machine = f"{platform.node()}: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    out = [
        f"# Benchmarks\n\nMachine: {machine}. Date: {time.strftime('%Y-%m-%d')}.\n",
        "Made by `python benchmarks/run.py`" + (" --quick" if args.quick else "") + ".\n",
        "The farm, the clients and swaks share the machine. On a shared VM whole runs differ by "
        "up to a quarter, so compare figures from one run, not across runs.\n",
        "Batch figures are targets (RCPT checks) a second, each target a domain of its own whose "
        "MX is one of 20 listeners; every target is one SMTP session (one per swaks run), so "
        "targets/s are sessions/s. By default batch keeps connections between targets for the "
        "same MX (`--reuse 10`, as an MTA's connection cache); the `--reuse 1` rows open a new "
        "connection (greeting, EHLO, STARTTLS, EHLO) for every target, as swaks does. Bytecode "
        "is compiled first, as pip does on install.\n",
    ]
    for title, rows in sections:
        print(f"\n{title}")
        out.append(f"\n## {title}\n\n| measure | result |\n|---|---|")
        for name, value in rows:
            print(f"  {name:<62} {value}")
            out.append(f"| {name} | {value} |")
    latest = ROOT / "docs" / "benchmarks-latest.md"
    latest.write_text("\n".join(out) + "\n")
    print(f"\nwritten to {latest}")


if __name__ == "__main__":
    main()
