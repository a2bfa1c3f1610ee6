"""Layering and start-up: the pure core does no I/O; each room imports only what its job
needs; nothing keeps process-wide state; functions stay short; offline commands load no
network stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "probe"
NETWORK = {"asyncio", "ssl", "socket", "dns", "aiosmtplib", "aiosmtpd", "selectors", "httpx"}
# The pure core: models, configuration, catalog, parsing, interpretation, checks, verdicts and
# renderers. No I/O, no network library, no click or rich.
CORE_MODULES = {
    "model",
    "messages",
    "reply",
    "interpret",
    "catalog",
    "text",
    "mx",
    "verdict",
    "target",
    "result",
    "exitcodes",
    "config",
    "cache",
    "certs",
    "checks",
    "dane",
    "mtasts",
    "sender",
    "tlsfacts",
    "render",
    "serveconf",
    "metrics",
    "nagios",
    "redact",
    "shard",
    "bounce",
    "pasted",
}
# Every other room, and the rooms of this package it may import besides the core.
# Anything not listed is forbidden; a new module must be placed here to exist.
ROOMS: dict[str, set[str]] = {
    "aio": set(),
    "wire": set(),
    "tls": set(),
    "context": {"tls", "wire"},
    "session": {"context", "wire", "tls"},
    "limits": {"context", "session"},
    "pool": {"aio", "context", "limits", "session"},
    "resolve": set(),
    "runner": {"context", "resolve", "session"},
    # Reading a batch's input and its output file: lines, never probes.
    "batchinput": {"aio"},
    "batch": {
        "aio",
        "batchinput",
        "context",
        "limits",
        "mxcache",
        "pool",
        "resolve",
        "runner",
        "session",
    },
    "mxcache": {"context", "wire"},
    # The Ray adapter: at the edge like the CLI, but only the batch engine and its limits.
    "cluster": {"batch", "batchinput", "limits"},
    "workers": {"aio", "batch", "batchinput"},
    "mxscan": {"context", "resolve", "session", "stsfetch", "tls", "tlsscan"},
    "tlsscan": {"wire"},
    "stsfetch": {"resolve", "tls"},
    "demo": {"lab", "resolve", "runner"},
    "serve": {"context", "limits", "resolve", "runner", "serve"},
    "lab": {"lab"},
    "__init__": set(),
    "__main__": {"cli"},
    "cli": set(),  # the edge: may import anything
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (without the leading `probe.`)."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def room(module: str) -> str:
    return module.split(".")[0]


CORE = sorted(str(p.relative_to(PKG)) for m, p in modules().items() if room(m) in CORE_MODULES)


def probe_imports(path: Path) -> set[str]:
    """The rooms of this package that `path` imports, function-local imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "probe":
                out.update(a.name for a in node.names)
            elif node.module.startswith("probe."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("probe."))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import")
    return out


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
        if "cli" not in path.relative_to(PKG).parts:
            assert "click" not in imported(path), path


def test_every_module_is_placed_in_a_room() -> None:
    unplaced = {m for m in modules() if room(m) not in CORE_MODULES | set(ROOMS)}
    assert not unplaced, f"add these to CORE_MODULES or ROOMS: {sorted(unplaced)}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_each_room_imports_only_what_its_job_needs(module: str) -> None:
    here = room(module)
    if here == "cli":
        return  # the edge
    allowed = CORE_MODULES if here in CORE_MODULES else CORE_MODULES | ROOMS[here]
    used = probe_imports(modules()[module]) - {here}
    assert used <= allowed, f"{module} imports {sorted(used - allowed)}"


def test_the_rules_that_matter_most() -> None:
    """Nothing imports the CLI; wire and TLS never import the session; the session never
    imports the pool, the limits or the batch."""
    for module, path in modules().items():
        used = probe_imports(path)
        if room(module) not in ("cli", "__main__"):
            assert "cli" not in used, module
        if room(module) in ("wire", "tls", "context"):
            assert "session" not in used, module
        if room(module) == "session":
            assert not used & {"pool", "limits", "batch", "runner", "workers"}, module


# Calls whose result cannot change: the only ones a module may bind at its top level.
IMMUTABLE_FACTORIES = {
    "TypeVar",
    "re.compile",
    "frozenset",
    "tuple",
    "bytes",
    "click.option",
    "click.FloatRange",
    "click.IntRange",
    "TlsInfo",  # frozen dataclasses
    "Failure",
    "msg",  # a probe.messages.Message: a str that cannot be changed
}


def _module_state(path: Path) -> list[str]:
    """Module-level bindings that could change while the process runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if ast.unparse(target).split(".")[-1] in ("lru_cache", "cache"):
                    found.append(f"@{ast.unparse(target)} {node.name}")
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("__")]
        value = node.value
        if isinstance(value, ast.Call) and ast.unparse(value.func) not in IMMUTABLE_FACTORIES:
            found += [f"{n} = {ast.unparse(value.func)}(...)" for n in names]
        displayed = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp))
        # An UPPER_CASE display is a constant by convention, unless it starts empty (a cache).
        empty = isinstance(value, (ast.List, ast.Dict)) and not getattr(
            value, "elts", getattr(value, "keys", None)
        )
        found += [n for n in names if displayed and (empty or not n.isupper())]
    return found


def test_no_module_level_mutable_state() -> None:
    """Caches belong to a run or a resolver. The catalog's loaders may cache: package data
    never changes while the process runs."""
    for module, path in modules().items():
        if room(module) == "catalog":
            continue
        assert not _module_state(path), f"{module}: {_module_state(path)}"


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (n.name, (n.end_lineno or n.lineno) - n.lineno + 1)
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_functions_stay_short() -> None:
    """No function over 60 lines (complexity over 15 is ruff's C901, run in .ci/run)."""
    long = [
        f"{module}.{name} ({n} lines)"
        for module, path in modules().items()
        for name, n in _functions(path)
        if n > 60
    ]
    assert not long, long


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
        ["schema", "probe"],
    ],
)
def test_offline_commands_import_no_network_stack(args: list[str]) -> None:
    code = SNIPPET.format(args=args, network=sorted(NETWORK))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED:" in p.stderr, p.stderr
    assert p.stderr.rsplit("LOADED:", 1)[1] == "", f"{args} loaded {p.stderr}"
    assert p.stdout.strip()
