"""Reading the catalog's TOML files out of the package.

The TOML files are the catalog. Beside them, `parsed/` holds each one already parsed, as
JSON (`python -m probe.catalog` writes them; a test checks that they are current): json reads
in under a millisecond the files that tomllib takes 15 ms to parse for `explain 550`.
A copy is used only when it was made from the very bytes of the TOML file now in the package
(size and CRC-32 match); a TOML file without such a copy (edited since) is parsed with tomllib.
"""

from __future__ import annotations

import os
from typing import Any

_HERE = os.path.dirname(__file__)


class CatalogError(Exception):
    """The shipped catalog data is inconsistent (a packaging bug, caught by the tests)."""


def _read(path: str) -> bytes:
    # Read by the package's own loader, as importlib.resources would do (a plain file, or a
    # member of a zip archive), without importing importlib.resources: 7 ms of start-up.
    loader: Any = __spec__.loader
    data: bytes = loader.get_data(path)
    return data


def copy_path(*parts: str) -> tuple[str, ...]:
    """Where the parsed copy of a TOML file is: ("data", "basic.toml") -> parsed/data/basic.json."""
    *dirs, name = parts
    return ("parsed", *dirs, name.removesuffix(".toml") + ".json")


def parsed_copy(parts: tuple[str, ...], source: bytes) -> str:
    """The text of the parsed copy of the TOML file `parts` whose content is `source`."""
    import binascii
    import json
    import tomllib

    doc = {
        "generated": f"from {'/'.join(parts)} by python -m probe.catalog: edit the TOML, not this",
        "size": len(source),
        "crc32": binascii.crc32(source),
        "data": tomllib.loads(source.decode()),
    }
    # One value a line: a change to the TOML shows as a change of a few lines here too.
    return json.dumps(doc, ensure_ascii=False, indent=0) + "\n"


def _from_copy(parts: tuple[str, ...], source: bytes) -> dict[str, Any] | None:
    """The parsed copy of `source`, if the package has one made from exactly these bytes."""
    import binascii
    import json

    try:
        copy = _read(os.path.join(_HERE, *copy_path(*parts)))
    except OSError:
        return None
    try:
        doc = json.loads(copy)
        if doc["size"] != len(source) or doc["crc32"] != binascii.crc32(source):
            return None
        data: dict[str, Any] = doc["data"]
    except (ValueError, KeyError, TypeError):  # not a copy that this module wrote
        return None
    return data


def load_toml(*parts: str) -> dict[str, Any]:
    """One file under `probe/catalog/` ("data", "basic.toml"), parsed."""
    try:
        source = _read(os.path.join(_HERE, *parts))
    except OSError as e:
        raise CatalogError(f"cannot read catalog file {'/'.join(parts)}: {e}") from e
    data = _from_copy(parts, source)
    if data is not None:
        return data
    import tomllib  # here, not at the top: with current copies it is never needed

    try:
        return tomllib.loads(source.decode())
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"cannot read catalog file {'/'.join(parts)}: {e}") from e


def write_copies() -> None:
    """Write the parsed copies of every TOML file under probe/catalog/ (a developer's tool:
    run it after editing the TOML and commit what it writes)."""
    from pathlib import Path

    catalog = Path(_HERE)
    wanted = set()
    for toml in sorted(catalog.glob("*/**/*.toml")):
        parts = toml.relative_to(catalog).parts
        if parts[0] == "parsed":
            continue
        target = catalog.joinpath(*copy_path(*parts))
        wanted.add(target)
        text = parsed_copy(parts, toml.read_bytes())
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(catalog)}")
    for stale in sorted(set((catalog / "parsed").rglob("*.json")) - wanted):
        stale.unlink()
        print(f"removed {stale.relative_to(catalog)}")
