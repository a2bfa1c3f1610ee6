"""`smtp-probe schema NAME`: print one of the JSON Schema documents shipped in the package
(probe/schemas/), offline."""

from __future__ import annotations

from importlib import resources

import click

from probe.cli.common import echo, refuse
from probe.cli.helptext import Command


def schema_names() -> list[str]:
    """The names `schema` knows: one per document in probe/schemas/."""
    folder = resources.files("probe") / "schemas"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def schema_text(name: str) -> str:
    return (resources.files("probe") / "schemas" / f"{name}.json").read_text(encoding="utf-8")


@click.command(cls=Command)
@click.argument("name", required=False)
def schema(name: str | None) -> None:
    """Print the JSON Schema (draft 2020-12) of an output: probe, batch, batch-error, mx,
    explain, explain-summary or compare. Without NAME, list the names."""
    names = schema_names()
    if name is None:
        echo("\n".join(names))
        return
    if name not in names:
        refuse("usage.no_schema", name=repr(name), names=", ".join(names))
    echo(schema_text(name).rstrip("\n"))
