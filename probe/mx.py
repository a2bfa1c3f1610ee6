"""Pure MX logic (RFC 5321 §5.1, RFC 7505): ordering and null MX."""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import groupby


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Lowest preference first; hosts of equal preference in random order (RFC 5321 §5.1)."""
    out: list[tuple[int, str]] = []
    for _pref, group in groupby(sorted(records, key=lambda r: r[0]), key=lambda r: r[0]):
        same = sorted(group, key=lambda r: r[1])
        rng.shuffle(same)
        out.extend(same)
    return out


def is_null_target(host: str) -> bool:
    return host in ("", ".")


def is_null_mx(records: list[tuple[int, str]]) -> bool:
    """A single MX of preference 0 whose target is the root: the domain takes no mail."""
    return len(records) == 1 and records[0][0] == 0 and is_null_target(records[0][1])


def has_null_target(records: list[tuple[int, str]]) -> bool:
    """Any MX pointing at the root, valid null MX or not (RFC 7505 §3 forbids mixing)."""
    return any(is_null_target(h) for _, h in records)
