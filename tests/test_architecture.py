"""Layering and start-up: the pure core does no I/O; offline commands load no network stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "probe"
NETWORK = {"asyncio", "ssl", "socket", "dns", "aiosmtplib", "aiosmtpd", "selectors"}
CORE = [
    "model.py",
    "reply.py",
    "interpret.py",
    "catalog/__init__.py",
    "catalog/files.py",
    "catalog/needles.py",
    "catalog/texts.py",
    "text.py",
    "mx.py",
    "verdict.py",
    "target.py",
    "result.py",
    "exitcodes.py",
    "render/__init__.py",
    "render/explain.py",
    "render/compare.py",
    "render/codes.py",
    "render/probe.py",
]


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_modules_do_no_io(module: str) -> None:
    names = imported(PKG / module)
    assert not names & (NETWORK | {"click", "rich"}), f"{module} imports {names & NETWORK}"


def test_only_cli_imports_click() -> None:
    for path in PKG.rglob("*.py"):
        if path.name != "cli.py":
            assert "click" not in imported(path), path


SNIPPET = """
import sys
sys.argv = ["smtp-probe", *{args!r}]
try:
    from probe.cli import main
    main()
except SystemExit:
    pass
loaded = sorted(m for m in {network!r} if m in sys.modules)
sys.stderr.write("LOADED:" + ",".join(loaded))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["explain", "550 5.1.1 User unknown"],
        ["explain", "--format", "json", "421", "5.7.26"],
        ["compare", "421", "521"],
        ["codes", "--kind", "all"],
    ],
)
def test_offline_commands_import_no_network_stack(args: list[str]) -> None:
    code = SNIPPET.format(args=args, network=sorted(NETWORK))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED:" in p.stderr, p.stderr
    assert p.stderr.rsplit("LOADED:", 1)[1] == "", f"{args} loaded {p.stderr}"
    assert p.stdout.strip()
