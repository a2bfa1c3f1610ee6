"""Which shard a target belongs to (`batch --shard K/N`): pure, so every machine agrees.

The key is the MX provider: the registrable domain of the target's best MX host (lowest
preference; among equals, the first name in sorted order). Every domain of one provider then
lands on one shard, and the per-host and per-provider limits of that shard are exact without
any coordination between machines.

The registrable domain comes from a small built-in rule, not the Public Suffix List (which
would have to be downloaded): the last two labels, or three when the last two are a known
second-level public suffix (co.uk, com.au, ...). A provider under a suffix missing from the
list is keyed one label too short, which only makes shards coarser, never splits a provider.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Sequence

from probe.messages import msg
from probe.target import parse_int

# Second-level suffixes under which names are registered, as in the PSL: the common ones of
# the country domains that register at the third level.
SECOND_LEVEL = frozenset(
    f"{sld}.{tld}"
    for tld, slds in (
        ("uk", "co ac gov org ltd plc me net nhs sch"),
        ("au", "com net org edu gov asn id"),
        ("nz", "co net org ac govt school"),
        ("jp", "co ne or ac ad ed go gr lg"),
        ("kr", "co ne or re go ac"),
        ("br", "com net org gov edu art"),
        ("za", "co net org gov ac web"),
        ("in", "co net org gov ac firm gen ind res"),
        ("cn", "com net org gov edu ac"),
        ("tw", "com net org gov edu idv"),
        ("hk", "com net org gov edu idv"),
        ("sg", "com net org gov edu per"),
        ("mx", "com net org gob edu"),
        ("ar", "com net org gob edu int"),
        ("tr", "com net org gov edu gen biz"),
        ("il", "co net org ac gov muni"),
        ("th", "co in or ac go net"),
        ("id", "co or ac go net web my"),
        ("my", "com net org gov edu"),
        ("ph", "com net org gov edu"),
        ("ua", "com net org gov edu in"),
        ("ru", "com net org msk spb"),
        ("pl", "com net org gov edu waw"),
        ("es", "com nom org gob edu"),
        ("it", "gov edu"),
        ("fr", "gouv asso com nom"),
    )
    for sld in slds.split()
)


class ShardError(ValueError):
    """A --shard value that is not K/N with 1 <= K <= N."""


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' as (K, N), K counted from 1."""
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        kk, nn = parse_int(k, 1, 100000), parse_int(n, 1, 100000)
    except ValueError:
        raise ShardError(msg("input.shard_form", value=repr(text))) from None
    if kk > nn:
        raise ShardError(msg("input.shard_order", value=text))
    return kk, nn


def registrable(name: str) -> str:
    """The registrable domain of a host name by the built-in rule; an address stays whole."""
    name = name.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    labels = name.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def best_mx(hosts: Sequence[tuple[int, str]]) -> str | None:
    """The host a sender tries first (lowest preference), chosen the same way everywhere."""
    if not hosts:
        return None
    return min(hosts, key=lambda h: (h[0], h[1].lower()))[1]


def shard_of(provider: str, n: int) -> int:
    """The shard (from 1) of a provider key: a stable hash, the same in every process."""
    return zlib.crc32(provider.encode("utf-8", "replace")) % n + 1
