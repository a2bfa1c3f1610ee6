"""What users type and feed: numbers in ASCII digits only, batch lines read in bounded pieces
(an over-long or undecodable line is a record, the run goes on), a byte-order mark ignored,
--resume reading back only a regular file of records, a torn last line never glued to."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.batchinput import (
    MAX_LINE,
    MAX_RECORD,
    OutputFileError,
    Refused,
    input_lines,
    raw_lines,
    read_targets,
    recorded_lines,
)
from probe.cli import cli
from probe.target import TargetError, parse_decimal, parse_int, parse_target
from tests.conftest import valid, valid_lines

# Forms int() or float() would take, or choke on with ValueError, that are no number a user
# means: superscripts, other scripts' digits, signs, spaces, underscores, 5,000 digits.
ODD = ["²", "³", "٣", "+25", " 25", "25 ", "2_5", "-1", "", "0x19", "1e3", "9" * 5000]
PORTS = [*ODD, "0", "65536", "99999999999999999999999"]
DECIMALS = [*ODD, "nan", "inf", "-inf", "0", "1,5", "٣.5"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_usage_line(r: Result) -> None:
    """Exit 64 with one short line on stderr: no traceback, no 5,000-digit echo."""
    assert r.exit_code == 64, (r.exit_code, r.output[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("smtp-probe: error: ") and len(lines[0]) < 300, lines[0]
    assert r.stdout == ""


# Should a value slip through, the lookup goes to a closed loopback port, not the network.
OFFLINE = ["--nameserver", "127.0.0.1:1", "--timeout", "0.5"]


@pytest.mark.parametrize("value", PORTS)
@pytest.mark.parametrize(
    "form",
    [
        ["probe", "x.test", "--port", "{}", *OFFLINE],
        ["probe", "x.test", "--nameserver", "127.0.0.1:{}"],
        ["probe", "x.test", "--nameserver", "[::1]:{}"],
        ["mx", "x.test", "--port", "{}", *OFFLINE],
        ["batch", "-", "--port", "{}"],
    ],
)
def test_a_port_option_is_ascii_digits_from_1_to_65535(form: list[str], value: str) -> None:
    assert_usage_line(run(*(a.format(value) for a in form)))


@pytest.mark.parametrize("value", [v for v in PORTS if v == v.rstrip()])  # a target is trimmed
@pytest.mark.parametrize("form", ["host.test:{}", "[127.0.0.1]:{}", "127.0.0.1:{}"])
def test_a_target_port_is_ascii_digits_from_1_to_65535(form: str, value: str) -> None:
    assert_usage_line(run("probe", form.format(value), *OFFLINE))


@pytest.mark.parametrize("value", [*ODD, "0"])
@pytest.mark.parametrize("option", ["--concurrency", "--per-host", "--workers", "--reuse"])
def test_batch_counts_are_ascii_digits(option: str, value: str) -> None:
    assert_usage_line(run("batch", "-", option, value))


@pytest.mark.parametrize("value", ODD)
def test_a_seed_is_ascii_digits(value: str) -> None:
    assert_usage_line(run("probe", "x.test", "--seed", value, *OFFLINE))


@pytest.mark.parametrize("value", DECIMALS)
@pytest.mark.parametrize(
    "form",
    [
        ["probe", "x.test", "--nameserver", "127.0.0.1:1", "--timeout"],
        ["probe", "x.test", *OFFLINE, "--connect-timeout"],
        ["probe", "x.test", *OFFLINE, "--budget"],
        ["mx", "x.test", "--nameserver", "127.0.0.1:1", "--timeout"],
        ["batch", "-", "--rate"],
    ],
)
def test_seconds_and_rates_are_plain_decimals(form: list[str], value: str) -> None:
    assert_usage_line(run(*form, value))


def test_plain_numbers_still_count() -> None:
    assert parse_int("25", 1, 65535) == 25 and parse_int("0025", 1, 65535) == 25
    assert parse_int("0" * 5000 + "7", 1, 9) == 7  # long, but a small number: linear work
    assert parse_decimal("0.5", 0.1, 10) == 0.5 and parse_decimal(".5", 0.1, 10) == 0.5
    assert parse_decimal("5.", 0.1, 10) == 5.0 and parse_decimal("3600", 0.1, 3600) == 3600
    t = parse_target("127.0.0.1:2525")
    assert (t.kind, t.host, t.port) == ("literal", "127.0.0.1", 2525)  # an address, no DNS
    t = parse_target("mx.example:0025")
    assert (t.kind, t.host, t.port) == ("host", "mx.example", 25)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=30), st.from_regex(r"[0-9]{1,30}", fullmatch=True)))
def test_number_parsers_accept_exactly_ascii_digits(text: str) -> None:
    try:
        n = parse_int(text, 1, 65535)
    except TargetError:
        assert not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535
    else:
        assert text.isascii() and text.isdigit() and n == int(text)
    try:
        f = parse_decimal(text, 0.1, 3600)
    except TargetError:
        pass
    else:
        assert set(text) <= set("0123456789.") and 0.1 <= f <= 3600


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"\n")),
    limit=st.one_of(st.none(), st.integers(0, 20)),
    size=st.integers(1, 16),
)
def test_raw_lines_split_like_bytes_split_and_cut_long_lines(
    data: bytes, limit: int | None, size: int
) -> None:
    expected = []
    parts = data.split(b"\n")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and not part:
            break
        if limit is not None and len(part) > limit:
            expected.append(part[: limit + 1])
        else:
            expected.append(part if last else part + b"\n")
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        assert list(raw_lines(r, limit, size)) == expected
    finally:
        os.close(r)


@pytest.fixture
def sparse(tmp_path: Path) -> Iterator[Path]:
    """A 200 MB file of NUL bytes without a newline, taking no disk space."""
    path = tmp_path / "sparse"
    with path.open("wb") as f:
        f.truncate(200 * 2**20)
    yield path


def _rchar() -> int:
    """Bytes this process has read so far (counting work, not time)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_an_endless_line_is_one_record_read_in_bounded_memory(sparse: Path) -> None:
    fd = os.open(sparse, os.O_RDONLY)
    tracemalloc.start()
    try:
        items = list(read_targets(input_lines(fd)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        os.close(fd)
    assert len(items) == 1
    n, item = items[0]
    assert n == 1 and isinstance(item, Refused)
    assert item.detail == f"the line is longer than {MAX_LINE} bytes"
    assert len(item.text) <= MAX_LINE
    assert peak < 2 * 2**20, peak  # 200 MB went by; a few chunks were ever held


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_lines_are_records_and_the_run_goes_on(tmp_path: Path, workers: str) -> None:
    inputs = tmp_path / "in.txt"
    lines = [
        "\ufeff[127.0.0.1]:1".encode(),  # a byte-order mark before the first target
        "host.test:²".encode(),
        b"host.test:" + b"9" * 5000,  # over the line limit too
        b"[127.0.0.1]:0",
        b"x" * (MAX_LINE + 1),
        b"\xff\xfe@d2.test",
        b"# " + b"c" * (3 * MAX_LINE),  # a comment, however long, is skipped
        b"host.test:+25",
        b"host.test:2_5",
        b"[127.0.0.1]:1",
    ]
    inputs.write_bytes(b"\n".join(lines) + b"\n")
    r = run("batch", str(inputs), "--timeout", "2", "--workers", workers)
    assert r.exit_code == 0, r.output[-2000:]
    records = {rec["line"]: rec for rec in valid_lines(r.stdout)}
    assert sorted(records) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    # The first and the last line were probed (nothing listens on port 1 of loopback).
    for n in (1, 10):
        assert records[n]["input"] == "[127.0.0.1]:1" and "verdict" in records[n], records[n]
    kinds = {n: rec["error"]["kind"] for n, rec in records.items() if "error" in rec}
    assert kinds == {
        2: "bad_target",
        3: "bad_input",
        4: "bad_target",
        5: "bad_input",
        6: "bad_input",
        8: "bad_target",
        9: "bad_target",
    }
    assert "'²' is not a port number" in records[2]["error"]["detail"]
    assert "longer than 4096 bytes" in records[3]["error"]["detail"]
    assert records[6]["error"]["detail"].startswith("the line is not UTF-8")
    assert records[6]["input"] == "\ufffd\ufffd@d2.test"
    assert all(records[n]["exit_status"] == 64 for n in kinds)


def test_a_byte_order_mark_before_a_comment_is_ignored(tmp_path: Path) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_bytes("\ufeff# targets\nx.test:0\n".encode())
    r = run("batch", str(inputs))
    assert [valid(json.loads(x))["line"] for x in r.stdout.splitlines()] == [2]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_resume_refuses_a_device(tmp_path: Path, device: str) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_text("x.test:0\n")
    r = run("batch", str(inputs), "--output", device, "--resume")
    assert_usage_line(r)
    assert "not a regular file" in r.stderr


def test_resume_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    inputs = tmp_path / "in.txt"
    inputs.write_text("x.test:0\n")
    r = run("batch", str(inputs), "--output", str(fifo), "--resume")  # opening it would block
    assert_usage_line(r)
    assert "not a regular file" in r.stderr


def test_resume_refuses_a_huge_line_after_reading_a_bounded_part(sparse: Path) -> None:
    before = _rchar()
    with pytest.raises(OutputFileError, match="longer than 16 MB"):
        recorded_lines(str(sparse))
    assert _rchar() - before < MAX_RECORD + 2**20  # not the other 184 MB
    r = run("batch", "-", "--output", str(sparse), "--resume")
    assert_usage_line(r)


def test_appending_after_a_torn_line_starts_a_new_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    torn = '{"schema": "smtp-probe/batch/1", "line": 7'
    out.write_text('{"line": 1}\n' + torn)
    inputs = tmp_path / "in.txt"
    inputs.write_text("x.test:0\n")
    r = run("batch", str(inputs), "--output", str(out))
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[:2] == ['{"line": 1}', torn]  # the user's data is kept as it was
    assert valid(json.loads(lines[2]))["input"] == "x.test:0" and len(lines) == 3
    notes = [x for x in r.stderr.splitlines() if "incomplete line" in x]
    assert len(notes) == 1 and str(out) in notes[0]
    # A file that ends cleanly is appended to without a word.
    again = run("batch", str(inputs), "--output", str(out))
    assert "incomplete line" not in again.stderr and len(out.read_text().splitlines()) == 4


def test_resume_cuts_a_torn_line_in_a_large_file_reading_only_its_end(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    record = json.dumps({"schema": "smtp-probe/batch/1", "line": 1, "input": "x.test:0"})
    with out.open("w") as f:
        f.write(record + "\n" + "#" * (5 * 2**20))  # a torn tail of 5 MB after one record
    inputs = tmp_path / "in.txt"
    inputs.write_text("x.test:0\nx.test:0\n")
    r = run("batch", str(inputs), "--output", str(out), "--resume")
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [rec["line"] for rec in recs] == [1, 2]
