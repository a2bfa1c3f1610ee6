"""Output that cannot be written, for every command: a full disk, a standard output closed at
start or an unwritable --output file is one line on stderr and exit 74, never a traceback; a
reader that goes away (`| head`) ends the run quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
