"""I/O: the lines a batch reads (a file, a pipe, a worker's input) and the output file it
appends to (--resume reads back which lines it recorded; a torn last line is set aside).

Nothing here probes anything: each input line becomes a target text or a `Refused`, in
bounded memory and time linear in the input, however long or strange its lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from probe.aio import Handoff
from probe.messages import msg

# Bytes in one input line, its newline not counted. The longest target the grammar allows (a
# 64-byte local part, "@", a 253-character domain written in UTF-8, a port) is well under it.
MAX_LINE = 4096
# Bytes in one line of --output read back by --resume: far more than any record we write
# (a reply is at most 32 KB, a session has a few steps, a target a few sessions), so a
# longer line means the file is not batch output (a sparse file of zeros, say).
MAX_RECORD = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Refused:
    """An input line that cannot name a target (too long, not UTF-8); its record says why."""

    text: str  # as much of the line as was kept, bad bytes replaced
    detail: str


Item = tuple[int, "str | Refused"]  # (line number, target text or why there is none)


class OutputFileError(ValueError):
    """--resume cannot read back the output file; the message is one line for the user."""


async def stream_targets(items: Iterator[Item], room: int = 1024) -> AsyncIterator[Item]:
    """Targets from a blocking iterator (a file, a pipe), each as soon as it is read.

    A thread reads, so a slow pipe never stalls the loop, and at most `room` lines wait in
    memory, so a file of millions of lines is never held. The thread is a daemon: a run that
    ends early (Ctrl-C, the output closed) must not wait for a read that may never return.
    """
    handoff: Handoff[Item] = Handoff(asyncio.get_running_loop(), room)
    threading.Thread(
        target=handoff.fill, args=(items,), name="smtp-probe-input", daemon=True
    ).start()
    try:
        while (item := await handoff.get()) is not None:
            yield item
    finally:
        handoff.close()  # a reader waiting for room wakes up, sees it closed and stops


def raw_lines(fd: int, limit: int | None = None, size: int = 65536) -> Iterator[bytes]:
    """The lines of a file descriptor, each with its newline (the last may have none).

    Time linear in the input, however long its lines. A line over `limit` bytes comes as its
    first limit + 1 bytes, as soon as they are read (an endless line must not wait for its
    end); the rest is skipped on the way to its newline, never held. Plain os.read, not a
    buffered file: a daemon thread blocked here holds no lock the interpreter needs at exit.
    """
    keep = sys.maxsize if limit is None else limit + 1
    line = bytearray()
    skipping = False  # the line in hand passed the limit and went out: drop to its newline
    while chunk := os.read(fd, size):
        view, start = memoryview(chunk), 0
        while True:
            end = chunk.find(b"\n", start)
            if not skipping:
                stop = len(chunk) if end < 0 else end
                line += view[start : min(stop, start + keep - len(line))]
                if len(line) == keep:
                    skipping = True
                    yield bytes(line)
                    line.clear()
            if end < 0:
                break
            if not skipping:
                line += b"\n"
                yield bytes(line)
                line.clear()
            skipping = False
            start = end + 1
    if line:
        yield bytes(line)


def fd_lines(fd: int) -> Iterator[str]:
    """Lines of a trusted descriptor (a worker's input from its parent), without a newline."""
    for raw in raw_lines(fd):
        yield raw.removesuffix(b"\n").decode("utf-8", "replace")


def input_lines(fd: int, limit: int = MAX_LINE) -> Iterator[str | Refused]:
    """The lines of a batch input: each line's text, or why it cannot be a target."""
    for raw in raw_lines(fd, limit):
        data = raw.removesuffix(b"\n")
        if len(data) > limit:
            shown = data[:limit].decode("utf-8", "replace")
            yield Refused(shown, msg("input.line_too_long", limit=limit))
            continue
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as e:
            shown = data.decode("utf-8", "replace")
            yield Refused(shown, msg("input.not_utf8", byte=e.start + 1, size=len(data)))


def read_targets(lines: Iterable[str | Refused]) -> Iterator[Item]:
    """(line number, text) for every line that names a target; blanks and # comments skipped,
    and so is a UTF-8 byte-order mark at the start (editors on Windows write one)."""
    for n, raw in enumerate(lines, 1):
        text = raw.text if isinstance(raw, Refused) else raw
        if n == 1:
            text = text.removeprefix("\ufeff")
        text = text.strip()
        if isinstance(raw, Refused):
            if not text.startswith("#"):
                yield n, Refused(text, raw.detail)
        elif text and not text.startswith("#"):
            yield n, text


def recorded_lines(path: str) -> set[int]:
    """Line numbers already in an output file; a torn last line (no newline) is ignored.

    Only a regular file is read, in bounded pieces: a device (/dev/zero), a FIFO or a file
    with a line no record could make would otherwise block or fill memory.
    """
    fd = _open_regular(path)
    if fd is None:
        return set()
    done: set[int] = set()
    try:
        for raw in raw_lines(fd, MAX_RECORD):
            if len(raw.removesuffix(b"\n")) > MAX_RECORD:
                raise OutputFileError(
                    msg("input.record_too_long", path=path, mb=MAX_RECORD // 2**20)
                )
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(int(json.loads(raw)["line"]))
            except (ValueError, KeyError, TypeError):
                continue
    finally:
        os.close(fd)
    return done


def _open_regular(path: str) -> int | None:
    """A read descriptor for an existing regular file; None when there is no file."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputFileError(msg("input.not_regular", path=path))
    os.set_blocking(fd, True)
    return fd


def torn_tail(path: str) -> int | None:
    """The size of an output file that ends in a torn line (no newline), else None.

    Reads only the last byte, so a file of any size costs nothing; a missing file, or one that
    is not a regular file (/dev/stdout, a FIFO), has no tail to tear.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        return st.st_size if os.pread(fd, 1, st.st_size - 1) != b"\n" else None
    finally:
        os.close(fd)


def drop_torn_tail(path: str) -> None:
    """Cut a torn last line (what an interrupted write leaves) so that --resume probes its
    target again; reads backwards from the end in pieces, never the whole file."""
    size = torn_tail(path)
    if size is None:
        return
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)
