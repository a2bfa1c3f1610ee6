"""README's examples are what the current code prints: every offline `$ smtp-probe ...` example
is run and compared line by line, and the demo excerpt is found in `smtp-probe demo`'s output.

Examples that probe real domains (example.org) cannot run here (loopback only); they are
checked for form by the tests of their commands, not here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
OFFLINE = ("explain", "compare", "codes", "schema")
# `explain --summary - < mail.log` reads this log.
FIXTURES = ROOT / "fixtures" / "readme"


def console_examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ smtp-probe <offline command>` example."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S):
        command, lines = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    found.append((command, lines))
                command, lines = line[2:], []
            else:
                lines.append(line)
        if command is not None:
            found.append((command, lines))
    return [(c, out) for c, out in found if c.split()[1] in OFFLINE]


EXAMPLES = console_examples()


def run(command: str) -> str:
    if "| jq" in command and shutil.which("jq") is None:
        pytest.fail("jq is needed for README's JSON example (.ci/run installs it)")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "NO_COLOR": "1"}
    env.pop("LANG", None), env.pop("LC_ALL", None)
    p = subprocess.run(
        command, shell=True, cwd=FIXTURES, env=env, capture_output=True, text=True, timeout=60
    )
    return p.stdout


def test_the_readme_has_offline_examples() -> None:
    assert len(EXAMPLES) >= 5, [c for c, _ in EXAMPLES]


@pytest.mark.parametrize("command,expected", EXAMPLES, ids=[c[:60] for c, _ in EXAMPLES])
def test_each_offline_example_prints_what_the_readme_shows(
    command: str, expected: list[str]
) -> None:
    got = run(command).rstrip("\n").splitlines()
    assert got == expected


def test_the_demo_excerpt_is_in_the_demo_output() -> None:
    excerpt = README.split("`smtp-probe demo` probes servers", 1)[1].split("```\n", 2)[1]
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("LANG", None), env.pop("LC_ALL", None)
    p = subprocess.run(
        [str(Path(sys.executable).parent / "smtp-probe"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    timing = re.compile(r"\(\d+ ms\)")
    out = timing.sub("(N ms)", p.stdout)
    for line in excerpt.splitlines():
        assert timing.sub("(N ms)", line) in out, line
