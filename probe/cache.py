"""A bounded mapping that forgets its oldest entries: the one cache type of a run."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(OrderedDict[K, V]):
    """At most `size` entries; putting one more drops the oldest.

    Every cache of a run (TLS sessions, certificate verdicts, parsed and interpreted replies,
    DNS answers) is one of these, owned by the run or the resolver, so memory stays flat
    however many targets a batch reads. A look-up is the mapping's own `get`, with no Python
    call of ours (a batch session makes some thirty); the price is that the oldest entry goes
    first rather than the least recently used, so a busy one is made again once in `size`
    puts (putting a key again makes it the newest). Test for absence with `is None`: an
    empty cache is falsy, as any mapping.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)

    def __reduce__(
        self,
    ) -> tuple[type[Bounded[K, V]], tuple[int], None, None, Iterator[tuple[K, V]]]:
        # Copied or pickled with its size (OrderedDict's own way would call Bounded()).
        return type(self), (self.size,), None, None, iter(self.items())
