"""The run's one cache type: bounded, the oldest entry out first, looked up as a mapping."""

from __future__ import annotations

import copy
import pickle

from hypothesis import given
from hypothesis import strategies as st

from probe.cache import Bounded


def test_the_oldest_entry_goes_first_and_a_look_up_does_not_keep_it() -> None:
    cache: Bounded[str, int] = Bounded(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # read, but still the oldest
    cache.put("c", 3)
    assert cache.get("a") is None
    assert (cache.get("b"), cache.get("c")) == (2, 3)
    assert len(cache) == 2


def test_an_empty_cache_is_falsy_and_absence_is_none() -> None:
    cache: Bounded[str, int] = Bounded(4)
    assert not cache and cache.get("x") is None
    assert cache.pop("x", None) is None


@given(st.integers(1, 20), st.lists(st.integers(0, 40), max_size=200))
def test_never_more_than_its_size_and_the_last_puts_stay(size: int, keys: list[int]) -> None:
    cache: Bounded[int, int] = Bounded(size)
    for i, key in enumerate(keys):
        cache.put(key, i)
        assert len(cache) <= size
        assert cache.get(key) == i  # what was just put is there
    # The latest value of each key that is still held is the one put last.
    for key, value in cache.items():
        assert value == max(i for i, k in enumerate(keys) if k == key)


def test_putting_a_key_again_makes_it_the_newest() -> None:
    cache: Bounded[str, int] = Bounded(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)
    cache.put("c", 4)
    assert dict(cache) == {"a": 3, "c": 4}


def test_a_copy_and_a_pickle_keep_the_size_and_the_order() -> None:
    cache: Bounded[str, int] = Bounded(2)
    cache.put("a", 1)
    cache.put("b", 2)
    for other in (copy.copy(cache), copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert (
            type(other) is Bounded
            and other.size == 2
            and list(other.items())
            == [
                ("a", 1),
                ("b", 2),
            ]
        )
        other.put("c", 3)
        assert list(other) == ["b", "c"]
