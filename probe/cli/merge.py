"""`smtp-probe merge`: the outputs of `batch --shard K/N` joined into one stream.

Every target line of the input appears once in the result: a line recorded by two shards
keeps its first record, and lines no shard recorded (a shard not run yet, or one whose DNS
answered differently) are reported, so a rerun can fill them in.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import click

from probe import exitcodes
from probe.batchinput import MAX_RECORD, input_lines, raw_lines, read_targets
from probe.cli.common import io_failed, refuse, say
from probe.cli.helptext import Command
from probe.cli.usage import notice, os_reason
from probe.messages import Message, msg


@dataclass
class _Merge:
    expected: set[int]
    out: IO[bytes]
    seen: set[int] = field(default_factory=set)
    duplicated: list[int] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)  # line numbers the input has no target on
    unreadable: int = 0

    def add(self, raw: bytes) -> None:
        if not raw.endswith(b"\n"):
            self.unreadable += 1  # a torn last line: its shard was interrupted
            return
        try:
            line = int(json.loads(raw)["line"])
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1
            return
        if line not in self.expected:
            self.foreign.append(line)
        elif line in self.seen:
            self.duplicated.append(line)
        else:
            self.seen.add(line)
            self.out.write(raw)

    def report(self, files: int) -> int:
        missing = sorted(self.expected - self.seen)
        problems = [
            _listed("merge.missing", missing),
            _listed("merge.twice", sorted(set(self.duplicated))),
            _listed("merge.foreign", sorted(set(self.foreign))),
        ]
        if self.unreadable:
            problems.append(msg("merge.unreadable", count=self.unreadable))
        merged = msg("merge.summary", merged=len(self.seen), expected=len(self.expected))
        line = msg("merge.files", summary=merged, files=files)
        for problem in filter(None, problems):
            line = msg("join.two", first=line, second=problem)
        say(notice(line))
        return exitcodes.DATAERR if any(problems) else exitcodes.OK


def _listed(id: str, lines: list[int]) -> Message | None:
    if not lines:
        return None
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    return msg(id, count=len(lines), lines=shown)


def _expected(path: str) -> set[int]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        refuse("usage.cannot_read", path=path, reason=os_reason(e))
    try:
        return {n for n, _ in read_targets(input_lines(fd))}
    finally:
        os.close(fd)


def _records(path: str) -> Iterable[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        refuse("usage.cannot_read", path=path, reason=os_reason(e))
    try:
        yield from raw_lines(fd, MAX_RECORD)
    finally:
        os.close(fd)


@click.command(cls=Command)
@click.argument("source")
@click.argument("shards", nargs=-1, required=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file, not stdout.")
def merge(source: str, shards: tuple[str, ...], output: str | None) -> None:
    """Join the outputs of `batch --shard K/N` (SHARDS) run over SOURCE: each input line once.

    Exits 65 when a line is missing, recorded twice or unreadable (the summary says which).
    """
    expected = _expected(source)
    sink: IO[bytes] = sys.stdout.buffer
    try:
        if output:
            sink = open(output, "wb")  # noqa: SIM115 - closed below, inside the guard
        job = _Merge(expected, sink)
        for path in shards:
            for raw in _records(path):
                job.add(raw)
        sink.flush()
        if sink is not sys.stdout.buffer:
            sink.close()
    except BrokenPipeError:
        raise
    except OSError as e:
        io_failed(e)
    finally:
        if sink is not sys.stdout.buffer:
            with contextlib.suppress(OSError):
                sink.close()
    raise SystemExit(job.report(len(shards)))
