"""The reply reader: RFC 5321 §4.2's grammar, the limits, and bytes kept exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.wire import MAX_LINE, MAX_LINES, Failure, _Bad, parse_lines, parse_reply


@pytest.mark.parametrize(
    "line",
    [
        b"2500 x",
        b"220x",
        b"+22 x",
        b" 220 x",
        b"2_2 x",
        b"-22 x",
        b"620 x",
        b"160 x",
        b"260 x",
        b"22 ok",
        b"ehlo",
    ],
)
def test_lines_outside_the_grammar_are_not_replies(line: bytes) -> None:
    with pytest.raises(_Bad) as e:
        parse_reply(line + b"\r\n")
    assert isinstance(e.value.failure, Failure) and "not an SMTP reply" in e.value.failure.detail


codes = st.integers(200, 559).filter(lambda c: c // 10 % 10 <= 5)
texts = st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b)


@given(
    st.lists(st.tuples(codes, texts), min_size=1, max_size=20), st.sampled_from([b"\r\n", b"\n"])
)
def test_every_reply_in_the_grammar_is_read_whole_and_exactly(
    lines: list[tuple[int, bytes]], end: bytes
) -> None:
    data = b"".join(
        f"{code}".encode() + (b" " if n == len(lines) - 1 else b"-") + text + end
        for n, (code, text) in enumerate(lines)
    )
    got = parse_reply(data + b"250 next\r\n")
    assert got is not None
    raw, used = got
    assert raw.data == data and used == len(data)
    assert raw.code == lines[-1][0]
    # A reply cut anywhere is not yet a reply.
    assert parse_reply(data[: len(data) - 1]) is None


def test_the_limits_end_a_reply() -> None:
    with pytest.raises(_Bad) as e:
        parse_reply(b"220 " + b"x" * MAX_LINE + b"\r\n")
    assert e.value.failure.detail == "reply too long"
    with pytest.raises(_Bad):
        parse_reply(b"220-x\r\n" * MAX_LINES)
    with pytest.raises(_Bad):
        parse_reply(b"220 " + b"x" * (MAX_LINE + 1))  # no end of line yet, but already too long


# Pieces of what servers send, good and bad: parse_reply's fast path must decide every
# buffer made of them as the line-by-line reader does (the reply, None, or the same error).
_PIECES = st.sampled_from(
    [
        b"250-",
        b"250 ",
        b"250",
        b"220-mx.example ESMTP",
        b"554 5.7.1 no",
        b"421",
        b"2500",
        b"25",
        b"650 x",
        b" 250 x",
        b"x" * 100,
        b"\xff\xfe",
        b"\t",
        b"\r",
        b"\n",
        b"\r\n",
        b"-",
        b" ",
    ]
)


def _same(buffer: bytes) -> None:
    def outcome(fn: object) -> object:
        try:
            return fn(buffer)  # type: ignore[operator]
        except _Bad as e:
            return ("bad", e.failure)

    assert outcome(parse_reply) == outcome(parse_lines), buffer


@given(st.lists(_PIECES, max_size=30))
def test_the_fast_path_reads_as_the_line_reader(pieces: list[bytes]) -> None:
    _same(b"".join(pieces))


def test_the_fast_path_keeps_the_limits() -> None:
    for buffer in (
        b"250-x\n" * (MAX_LINES - 1) + b"250 x\n",
        b"250-x\n" * MAX_LINES + b"250 x\n",
        b"250 " + b"x" * (MAX_LINE - 5) + b"\n",
        b"250 " + b"x" * (MAX_LINE - 4) + b"\n",
        b"250-" + b"x" * (MAX_LINE - 4) + b"\n250 x\n",
    ):
        _same(buffer)
