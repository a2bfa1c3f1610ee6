from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def pytest_collection_modifyitems(config: object, items: list[pytest.Item]) -> None:
    """Tests under tests/interop/ carry the `interop` marker."""
    for item in items:
        if "interop" in item.path.parts:
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under CI=true a skipped interop test is a failure: CI must really run them."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and item.get_closest_marker("interop"):
        report.outcome = "failed"
        report.longrepr = f"interop test skipped under CI=true: {report.longrepr}"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on both loops the network commands may use (probe/aio.py)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not build on: the standard loop only
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


SCHEMAS = ROOT / "probe" / "schemas"


@functools.cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _schema_name(doc: object) -> str:
    """The shipped schema a document claims: its `schema` field names it."""
    assert isinstance(doc, dict) and isinstance(doc.get("schema"), str), doc
    kind = doc["schema"].split("/")[1]
    if kind == "batch" and "error" in doc:
        return "batch-error"
    return str(kind)


def valid(doc: Any, name: str | None = None) -> Any:
    """`doc` (parsed JSON output) after checking it against its schema in probe/schemas/:
    every test that reads JSON the tool printed passes it through here. An `explain` item
    on its own (`--format jsonl`) is checked as an array of one."""
    name = name or _schema_name(doc)
    whole = [doc] if name == "explain" and isinstance(doc, dict) else doc
    errors = sorted(_validator(name).iter_errors(whole), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return doc


def valid_lines(text: str, name: str | None = None) -> list[Any]:
    """Every JSON line of `text`, each checked by `valid`."""
    return [valid(json.loads(line), name) for line in text.splitlines() if line.strip()]
