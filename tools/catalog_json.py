"""Write the parsed copies of the catalog's TOML files (probe/catalog/parsed/*.json).

    python tools/catalog_json.py

Run it after editing any TOML file under probe/catalog/ and commit what it writes; the
test `test_parsed_copies_are_current` fails until then. Until then the package still gives
the edited text: a copy made from other bytes than the TOML file's is never used.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.catalog.files import copy_path, parsed_copy  # noqa: E402

CATALOG = ROOT / "probe" / "catalog"


def main() -> None:
    wanted = set()
    for toml in sorted(CATALOG.glob("*/**/*.toml")):
        parts = toml.relative_to(CATALOG).parts
        if parts[0] == "parsed":
            continue
        target = CATALOG.joinpath(*copy_path(*parts))
        wanted.add(target)
        text = parsed_copy(parts, toml.read_bytes())
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    for stale in sorted(set((CATALOG / "parsed").rglob("*.json")) - wanted):
        stale.unlink()
        print(f"removed {stale.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
