"""Reading the catalog's TOML files out of the package."""

from __future__ import annotations

import os
from typing import Any


class CatalogError(Exception):
    """The shipped catalog data is inconsistent (a packaging bug, caught by the tests)."""


def load_toml(*parts: str) -> dict[str, Any]:
    """One file under `probe/catalog/` ("data", "basic.toml"), parsed."""
    import tomllib  # here, not at the top: commands that show no catalog text parse nothing

    # Read by the package's own loader, as importlib.resources would do (a plain file, or a
    # member of a zip archive), without importing importlib.resources: 7 ms of start-up.
    loader: Any = __spec__.loader
    path = os.path.join(os.path.dirname(__file__), *parts)
    try:
        data: bytes = loader.get_data(path)
        return tomllib.loads(data.decode())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CatalogError(f"cannot read catalog file {'/'.join(parts)}: {e}") from e
